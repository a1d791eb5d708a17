"""The vehicle bench's fine-tuned rows (``gleam bench run --vehicle --finetuned DIR``): a tiny random GLEAM-C
checkpoint written with the project's checkpoint writer runs next to ImageNet on the same drives."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from gleam_ros.cli import main
from gleam_ros.core import encoder as E
from gleam_ros.core.bench import NOT_RUN_FINETUNED
from gleam_ros.core.bench_vehicle import (
    DEFAULT_LOGIT_SCALE,
    EmbedProbe,
    FINETUNED_METHODS,
    METHODS,
    VehicleBenchConfig,
    finetuned_embed_weight,
    load_finetuned,
    markdown_report,
    run_vehicle_bench,
)
from gleam_ros.core.errors import ConfigError
from gleam_ros.core.geo import WGS84, LocalFrame, transform
from gleam_ros.core.index import TileIndex
from gleam_ros.core.sim.drive import DriveFrame
from gleam_ros.core.sim.world import WorldConfig, make_world
from gleam_ros.core.tiles import TileSpec, iter_tiles
from gleam_ros.core.vehicle import RoadLayer

LOGIT_SCALE = 11.5  # what the tiny card records as its learned InfoNCE logit scale


def _tiny_checkpoint(path: Path, training: dict | None = None) -> Path:
    torch.manual_seed(0)
    card = E.ModelCard(backbone="test_efficientnet", input_size=32, name="tiny-vehicle-ft",
                       training={"modalities": ["uav", "ground", "panorama", "map"], "logit_scale": LOGIT_SCALE}
                       if training is None else training)
    return E.save_checkpoint(E.build_encoder(card, pretrained=False), card, path)


def _tiny_cfg(**kw) -> VehicleBenchConfig:
    """The smallest drives the bench tests use: one 200 m world, 1 s with GPS, 1 s without."""
    return VehicleBenchConfig(**{"world_seeds": (4242,), "world_size_m": 200.0, "world_gsd_m": 0.5, "gps_s": 1.0,
                                 "lost_s": 1.0, "image_width": 96, "image_height": 72, "pano_width": 128,
                                 "pano_height": 64, "n_particles": 100, "n_particles_global": 200, **kw})


def test_finetuned_rows_run_next_to_imagenet_on_the_same_frames(tmp_path):
    ckpt = _tiny_checkpoint(tmp_path / "ckpt")
    res = run_vehicle_bench(_tiny_cfg(finetuned=str(ckpt)), tmp_path / "out", command="test", log=lambda *a: None)
    rows = res["rows"]
    assert set(rows) == {f"{m}/{s}/{meth}" for m in ("ground", "panorama") for s in ("gps_lost", "cold_start")
                         for meth in METHODS}
    for mod in ("ground", "panorama"):
        for sc in ("gps_lost", "cold_start"):
            r = {meth: rows[f"{mod}/{sc}/{meth}"] for meth in METHODS}
            assert all(v["run"] is True for v in r.values())
            # the same drive and frames for every method
            assert len({v["frames"] for v in r.values()}) == 1 and r["particle_filter"]["frames"] > 0
            # the embedding path ran in the fine-tuned filter only, with the card's logit scale as its weight
            assert "embed" in r["particle_filter_finetuned"]["stage_p50_ms"]
            assert r["particle_filter_finetuned"]["stage_p50_ms"]["embed"] > 0
            assert "embed" not in r["particle_filter"]["stage_p50_ms"]
            assert r["particle_filter_finetuned"]["embed_weight"] == pytest.approx(LOGIT_SCALE)
            assert r["particle_filter"]["embed_weight"] == 0.0
            # both retrieval rows carry the embedding evidence of their encoder on the same frames
            for meth in ("retrieval_imagenet", "retrieval_finetuned"):
                assert 0.0 <= r[meth]["recall_at_1"] <= r[meth]["recall_at_5"] <= 1.0
                assert r[meth]["true_crop_frames"] > 0 and 0.0 <= r[meth]["true_crop_percentile_median"] <= 1.0
                assert -2.0 <= r[meth]["true_crop_cos_margin_median"] <= 2.0
                # panoramas also north-aligned with the true heading (how GLEAM-C was trained); ground photos not
                assert ("recall_at_5_north" in r[meth]) == (mod == "panorama")
    ft = res["finetuned"]
    assert ft["run"] and ft["checkpoint"] == str(ckpt) and "tiny-vehicle-ft" in ft["encoder"]
    assert ft["embed_weight"] == pytest.approx(LOGIT_SCALE) and "logit scale" in ft["embed_weight_source"]
    assert ft["fingerprint"] == E.load_backend("torch", ckpt).fingerprint
    saved = json.loads((tmp_path / "out" / "vehicle_bench.json").read_text())
    assert saved["finetuned"]["embed_weight"] == pytest.approx(LOGIT_SCALE)
    assert saved["rows"]["ground/gps_lost/retrieval_finetuned"]["frames"] == rows["ground/gps_lost/retrieval_finetuned"]["frames"]
    md = (tmp_path / "out" / "vehicle_bench.md").read_text()
    assert md == markdown_report(res)
    assert "| ground | gps_lost | particle_filter_finetuned |" in md and "| panorama | cold_start | retrieval_finetuned |" in md
    assert "tiny-vehicle-ft" in md and res["encoder"] in md and "embed_weight 11.50" in md
    assert (tmp_path / "out" / "vehicle_ground_finetuned.png").exists()
    assert res["plots"]["finetuned"] == "vehicle_finetuned.png" and (tmp_path / "out" / "vehicle_finetuned.png").exists()
    ev = rows["ground/gps_lost/retrieval_finetuned"]
    line = next(x for x in md.splitlines() if x.startswith("| easy | ground | gps_lost | finetuned |"))
    assert f"{LOGIT_SCALE * ev['true_crop_cos_margin_median']:+.2f} |" in line  # the margin in nats at embed_weight
    assert "| easy | panorama | gps_lost | finetuned, north-aligned (true heading) |" in md


def test_without_a_checkpoint_the_finetuned_rows_say_not_run():
    res = {"command": "c", "date": "d", "machine": {}, "wall_s": 1.0, "encoder": "torch on cpu, imagenet",
           "config": {**vars(_tiny_cfg())}, "finetuned": {"run": False, "note": NOT_RUN_FINETUNED},
           "rows": {"ground/gps_lost/particle_filter": {"frames": 3, "run": True},
                    **{f"ground/gps_lost/{m}": {"run": False, "note": NOT_RUN_FINETUNED} for m in FINETUNED_METHODS}}}
    md = markdown_report(res)
    for m in FINETUNED_METHODS:
        line = next(x for x in md.splitlines() if f"| {m} |" in x)
        header = next(x for x in md.splitlines() if x.startswith("| camera |"))
        assert NOT_RUN_FINETUNED in line and line.count("|") == header.count("|")  # as many cells as the header
    assert f"{NOT_RUN_FINETUNED} (`--finetuned CHECKPOINT_DIR`)" in md
    assert load_finetuned(_tiny_cfg()) is None


def test_embed_weight_is_the_cards_logit_scale_or_the_initial_temperature(tmp_path):
    card = E.ModelCard(backbone="test_efficientnet", training={"logit_scale": 14.28})
    w, why = finetuned_embed_weight(card)
    assert w == pytest.approx(14.28) and "learned InfoNCE logit scale" in why
    w, why = finetuned_embed_weight(E.ModelCard(backbone="test_efficientnet", training={"steps": 3}))
    assert w == pytest.approx(1 / 0.07) == DEFAULT_LOGIT_SCALE and "1/0.07" in why
    ft = load_finetuned(_tiny_cfg(finetuned=str(_tiny_checkpoint(tmp_path / "c", training={})),
                                  finetuned_embed_weight=3.0))
    assert ft.embed_weight == 3.0 and "config" in ft.embed_weight_source
    with pytest.raises(ConfigError, match="finetuned_embed_weight"):
        _tiny_cfg(finetuned_embed_weight=-1.0)


def test_a_bad_checkpoint_path_is_a_config_error_naming_the_flag_and_path(tmp_path, capsys):
    missing = tmp_path / "no_such_ckpt"
    with pytest.raises(ConfigError, match="--finetuned") as ei:
        run_vehicle_bench(_tiny_cfg(finetuned=str(missing)), tmp_path / "out", log=lambda *a: None)
    assert str(missing) in str(ei.value)
    assert not (tmp_path / "out").exists()  # failed before any work
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ConfigError, match=r"--finetuned .*empty.*not a usable checkpoint"):
        load_finetuned(_tiny_cfg(finetuned=str(empty)))
    assert main(["bench", "run", "--vehicle", "--quick", "--finetuned", str(missing), "--out",
                 str(tmp_path / "cli")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("gleam: error:") and "--finetuned" in err and str(missing) in err


def test_embed_probe_scores_the_true_crop_and_the_tile_footprints(tmp_path):
    world = make_world(WorldConfig(seed=4242, size_m=200.0, gsd_m=0.5, season="summer"))
    b = E.load_backend("torch", _tiny_checkpoint(tmp_path / "ckpt"))
    index = TileIndex.build(iter_tiles(world.satellite_map(), TileSpec(size_m=100.0, overlap=0.5, gsd_m=0.5)), b)
    probe = EmbedProbe(b, index, RoadLayer.from_world(world), seed=0)
    assert probe.null.shape == (64, b.dim)
    # the frame's place is the centre of a corner tile; a query embedding equal to the crop there must beat
    # every random road crop, by a positive cosine margin
    lat, lon = (float(v) for v in index.centers_latlon[0])
    frame = DriveFrame(t=0.0, image=None, pose=None, lat=lat, lon=lon, kidnapped=False)
    e, n, _ = LocalFrame(lat, lon).to_enu(index.centers_latlon[:, 0], index.centers_latlon[:, 1])
    here = int((e**2 + n**2).argmin())
    far = int((e**2 + n**2).argmax())  # the opposite corner: its footprint (100 m) cannot hold the place
    assert min(abs(e[far]), abs(n[far])) > 75.0
    x, y = (float(v) for v in transform(lon, lat, WGS84, probe.mosaic.crs))
    q = b.embed([probe.mosaic.crop(x, y, probe.side_m)], "satellite")[0]
    hits = {h.tile_idx: h for h in index.search(q, k=len(index))[0]}
    ev = probe.frame(frame, q, [hits[here], hits[far]])
    assert ev["r1"] and ev["r5"] and ev["percentile"] == 1.0 and ev["margin"] > 0
    assert not probe.frame(frame, q, [hits[far], hits[here]])["r1"] and probe.frame(frame, q, [hits[far], hits[here]])["r5"]
    assert not probe.frame(frame, q, [hits[far]])["r5"]
