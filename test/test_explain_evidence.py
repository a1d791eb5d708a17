"""GLEAM-X evidence backend: measurements, verdicts, and the proof that every sentence rests on one evidence item.

Data: a small procedural world the test makes, a UAV frame rendered over it, its true tile and a far tile.
"""

from __future__ import annotations

import json
import math
import re

import cv2
import numpy as np
import pytest

from gleam_ros.core.camera import CameraIntrinsics
from gleam_ros.core.errors import InputError
from gleam_ros.core.explain import (
    VERDICT_MATCH,
    VERDICT_NO_MATCH,
    EvidenceExplainer,
    EvidenceItem,
    ExplainContext,
    Explainer,
    faithfulness,
    make_explainer,
    parse_sentence,
    sentence_source,
    split_sentences,
)
from gleam_ros.core.explain import text as T
from gleam_ros.core.explain.calibrate import rule_model
from gleam_ros.core.geo import offset_latlon
from gleam_ros.core.sim.camera_sim import Pose, apply_photometric, random_photometric, render_view
from gleam_ros.core.sim.world import WorldConfig, make_world
from gleam_ros.core.tiles import TileSpec, iter_tiles
from gleam_ros.core.verify import Priors, Verifier

cv2.setNumThreads(1)
INTR = CameraIntrinsics.from_fov(480, 360, 60.0)
NUM = re.compile(r"-?\d+(?:\.\d+)?")


@pytest.fixture(scope="module")
def scene():
    world = make_world(WorldConfig(seed=3, size_m=420.0, gsd_m=0.3))
    geomap = world.satellite_map()
    tiles = list(iter_tiles(geomap, TileSpec(size_m=100.0, overlap=0.5, gsd_m=0.25)))
    lat0, lon0 = geomap.center_latlon()
    lat, lon = offset_latlon(lat0, lon0, 8.0, -5.0)
    pose = Pose(t=3.0, lat=lat, lon=lon, alt_m=95.0, heading_deg=37.0, pitch_deg=3.0, roll_deg=-2.0)
    rgb, _ = render_view(geomap, pose, INTR)
    rng = np.random.default_rng(0)
    query = apply_photometric(rgb, random_photometric(rng, 1.0), rng)
    d = [math.hypot(t.center_lat - lat, (t.center_lon - lon) * math.cos(math.radians(lat))) for t in tiles]
    order = np.argsort(d)
    return query, pose, tiles[int(order[0])], tiles[int(order[-1])]


@pytest.fixture(scope="module")
def explainer():
    return EvidenceExplainer()  # the shipped verdict model (the verifier rule if none is installed)


def _ctx(tile, pose, **kw):
    base = dict(tile=tile, intrinsics=INTR, priors=Priors(alt_m=pose.alt_m + 2.0, heading_deg=pose.heading_deg - 3.0),
                similarity=0.81, next_best_similarity=0.74, query_stamp=pose.t)
    base.update(kw)
    return ExplainContext(**base)


def _check_sentences_map_to_items(exp):
    """Every sentence comes from exactly one item, its id is recoverable, its numbers are the item's numbers."""
    sents = split_sentences(exp.text, exp.language)
    assert sents == [s.text for s in exp.sentences]
    assert len(sents) == len(exp.evidence)  # one sentence per item, one item per sentence
    ids = [it.id for it in exp.evidence]
    assert len(set(ids)) == len(ids)
    for sent, s in zip(sents, exp.sentences):
        item = exp.item(s.item_id)
        assert item.description == sent
        parsed = parse_sentence(sent, exp.language)
        assert parsed is not None, sent
        assert (parsed.kind, parsed.variant, parsed.supports_match) == (item.kind, item.variant, item.supports_match)
        assert sentence_source(sent, exp.evidence, exp.language) == item.id  # id recovered from the text alone
        numbers = [float(x) for x in NUM.findall(sent)]
        assert numbers, sent
        for x in numbers:  # each number printed is one of the item's (rounded) values
            assert x in item.numbers(), (sent, x, item.numbers())
        for name, printed in parsed.numbers.items():
            vals = {"value": item.value, **item.details}
            assert float(printed) == vals[name]
    assert faithfulness(exp.text, exp.evidence, exp.language) == 1.0


def test_positive_pair_is_a_match_with_every_sentence_backed(scene, explainer):
    query, pose, true_tile, _ = scene
    for lang in ("en", "zh"):
        exp = explainer.explain(query, true_tile.image, _ctx(true_tile, pose), language=lang)
        assert exp.verdict == VERDICT_MATCH and exp.is_match, exp.text
        assert exp.confidence == pytest.approx(exp.p_match) and exp.confidence >= explainer.model.threshold
        assert exp.language == lang and exp.backend == "evidence"
        assert exp.tile_id == true_tile.tile_id and exp.query_stamp == pose.t
        kinds = [it.kind for it in exp.evidence]
        for k in ("embedding_similarity", "embedding_margin", "feature_inliers", "inlier_spread", "altitude",
                  "rotation", "edge_orientation", "match_probability"):
            assert k in kinds, kinds
        assert any(k.startswith("land_cover_") for k in kinds)
        assert kinds[-1] == "match_probability"  # the text ends with the verdict
        alt = exp.items_of_kind("altitude")[0]
        assert alt.supports_match and abs(alt.value - pose.alt_m) < 0.1 * pose.alt_m
        rot = exp.items_of_kind("rotation")[0]
        assert rot.supports_match and rot.details["diff"] <= 10.0
        inl = exp.items_of_kind("feature_inliers")[0]
        assert inl.supports_match and inl.value >= 50 and inl.query_regions and inl.reference_regions
        _check_sentences_map_to_items(exp)
    assert "。" in exp.text and "匹配" in exp.text


def test_wrong_tile_is_no_match_with_every_sentence_backed(scene, explainer):
    query, pose, _, far_tile = scene
    for lang in ("en", "zh"):
        exp = explainer.explain(query, far_tile.image, _ctx(far_tile, pose, similarity=0.6, next_best_similarity=0.7),
                                language=lang)
        assert exp.verdict == VERDICT_NO_MATCH, exp.text
        assert exp.confidence == pytest.approx(1.0 - exp.p_match)
        inl = exp.items_of_kind("feature_inliers")[0]
        assert not inl.supports_match
        assert not exp.items_of_kind("match_probability")[0].supports_match
        _check_sentences_map_to_items(exp)


def test_uncalibrated_modality_is_said_in_the_text_and_flagged(scene, explainer):
    """The verdict model was calibrated on UAV views: for another query modality the explanation says so."""
    query, pose, true_tile, far_tile = scene
    assert explainer.model.modalities == ("uav",)
    for lang in ("en", "zh"):
        uav = explainer.explain(query, true_tile.image, _ctx(true_tile, pose), language=lang)
        assert not any(f.startswith("uncalibrated_modality") for f in uav.flags)
        assert uav.items_of_kind("match_probability")[0].variant == "match"
        for tile, want in ((true_tile, "match_offcal"), (far_tile, "nomatch_offcal")):
            exp = explainer.explain(query, tile.image, _ctx(tile, pose, modality="map"), language=lang)
            assert "uncalibrated_modality:map" in exp.flags
            assert exp.items_of_kind("match_probability")[0].variant == want
            said = {"en": "not calibrated on this kind of query", "zh": "未针对此类查询图像校准"}[lang]
            assert said in exp.text
            _check_sentences_map_to_items(exp)
    veto = explainer.explain(query, true_tile.image, _ctx(true_tile, pose, modality="map", priors=Priors(alt_m=300.0)))
    assert veto.items_of_kind("match_probability")[0].variant == "veto_offcal" and not veto.is_match


def test_contradicting_altitude_prior_vetoes_a_match(scene, explainer):
    query, pose, true_tile, _ = scene
    exp = explainer.explain(query, true_tile.image, _ctx(true_tile, pose, priors=Priors(alt_m=300.0)))
    assert exp.verdict == VERDICT_NO_MATCH and "prior_veto" in exp.flags and exp.confidence >= 0.5
    alt = exp.items_of_kind("altitude")[0]
    assert not alt.supports_match and alt.details["prior"] == 300.0
    assert exp.items_of_kind("match_probability")[0].variant == "veto"
    _check_sentences_map_to_items(exp)


def test_given_verification_is_used_and_minimal_context_works(scene):
    query, pose, true_tile, _ = scene
    v = Verifier().verify(query, true_tile, intr=INTR)
    ex = EvidenceExplainer(model=rule_model())
    exp = ex.explain(query, true_tile.image, ExplainContext(verification=v, tile=true_tile, intrinsics=INTR))
    inl = exp.items_of_kind("feature_inliers")[0]
    assert inl.value == v.inliers and inl.details["matches"] == v.matches
    assert "uncalibrated" in exp.flags and exp.verdict == VERDICT_MATCH
    # no context at all: no similarity items, still a full geometric explanation
    bare = ex.explain(query, true_tile.image)
    kinds = [it.kind for it in bare.evidence]
    assert "embedding_similarity" not in kinds and "no_similarity" in bare.flags
    assert "scale" in kinds and "altitude" not in kinds  # no intrinsics / GSD: a scale, not a height
    assert bare.tile_id == "" and bare.verdict == VERDICT_MATCH
    _check_sentences_map_to_items(bare)


class _FakeBackend:
    """Embeds an image as its mean colour (enough to exercise the similarity path)."""

    def embed(self, images, modality, batch_size=16):
        out = np.array([np.asarray(im, np.float64).reshape(-1, 3).mean(axis=0) + 1.0 for im in images])
        return (out / np.linalg.norm(out, axis=1, keepdims=True)).astype(np.float32)


def test_similarity_computed_with_a_backend(scene):
    query, pose, true_tile, _ = scene
    ex = EvidenceExplainer(backend=_FakeBackend())
    exp = ex.explain(query, true_tile.image, ExplainContext(tile=true_tile))
    sim = exp.items_of_kind("embedding_similarity")[0]
    assert 0.9 < sim.value <= 1.0 and "no_similarity" not in exp.flags


def test_evidence_image_and_json(scene, explainer):
    query, pose, true_tile, _ = scene
    exp = explainer.explain(query, true_tile.image, _ctx(true_tile, pose), language="zh")
    img = exp.evidence_image
    assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[1] > query.shape[1] + 100
    assert img.std() > 10
    d = json.loads(json.dumps(exp.to_dict(), ensure_ascii=False))
    assert d["verdict"] == 1 and d["language"] == "zh" and len(d["evidence"]) == len(exp.evidence)
    it = exp.evidence[2]
    assert len(it.flat_query_regions()) % 4 == 0 and len(it.flat_reference_regions()) % 4 == 0
    assert EvidenceItem.from_dict(it.to_dict()) == it


def test_every_template_renders_and_parses_back_uniquely():
    rng = np.random.default_rng(0)
    for kind, variants in T.TEMPLATES.items():
        for variant, (supports, tpl) in variants.items():
            for lang in ("en", "zh"):
                fields = [n for _, n, _, _ in __import__("string").Formatter().parse(tpl[lang]) if n]
                vals = {n: T.round_field(kind, n, rng.uniform(-50, 150)) for n in fields}
                item = EvidenceItem(id="E9", kind=kind, value=vals.pop("value", 0.0), unit="", supports_match=supports,
                                    details=vals, variant=variant)
                sent = T.render(item, lang)
                matches = [c for c in T._COMPILED[lang] if c.regex.match(sent)]
                assert len(matches) == 1 and (matches[0].kind, matches[0].variant) == (kind, variant), sent
                assert sentence_source(sent, [item], lang) == "E9"
                assert split_sentences(sent, lang) == [sent]


def test_faithfulness_rejects_invented_or_altered_sentences(scene, explainer):
    query, pose, true_tile, _ = scene
    exp = explainer.explain(query, true_tile.image, _ctx(true_tile, pose))
    inl = exp.items_of_kind("feature_inliers")[0]
    altered = inl.description.replace(f"{inl.value:.0f} agree", f"{inl.value + 7:.0f} agree")
    assert sentence_source(altered, exp.evidence, "en") is None
    invented = "A church with a red roof stands at the crossing."
    flipped = inl.description.replace("Of ", "Of ", 1).replace(", with a reprojection", ", too few to tie the images "
                                                                                       "together, with a reprojection")
    assert sentence_source(flipped, exp.evidence, "en") is None
    text = " ".join([inl.description, invented, altered, exp.sentences[0].text])
    assert faithfulness(text, exp.evidence, "en") == pytest.approx(0.5)
    assert math.isnan(faithfulness("", exp.evidence, "en"))


def test_input_errors(scene, explainer):
    query, pose, true_tile, _ = scene
    with pytest.raises(InputError):
        explainer.explain(query.astype(np.float32), true_tile.image)
    with pytest.raises(InputError):
        explainer.explain(query, true_tile.image, language="fr")
    with pytest.raises(InputError):
        explainer.explain(query, true_tile.image, ExplainContext(intrinsics=CameraIntrinsics.from_fov(640, 480, 60.0)))
    with pytest.raises(InputError):
        explainer.explain(query[:10, :10], true_tile.image)
    with pytest.raises(InputError):
        ExplainContext(similarity=float("nan"))


def test_make_explainer_and_protocol():
    ex = make_explainer("evidence")
    assert isinstance(ex, Explainer) and ex.name == "evidence"
    with pytest.raises(Exception, match="unknown explainer backend"):
        make_explainer("oracle")
