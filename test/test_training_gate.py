"""GLEAM-C ship gate and default checkpoint: the gate's two outcomes, shipping, default loading by the backends,
the CLI's ONNX export, and clear errors for corrupt or mismatched default checkpoints (tiny random models)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from gleam_ros.core import encoder as E
from gleam_ros.core.errors import GleamError, ModelError
from training import make_default

KINDS = {"b/w/ground->satellite": "ground", "b/w/panorama->satellite": "panorama", "b/w/uav->satellite": "uav-world",
         "b/turku/uav->satellite": "uav-real", "b/w/map->satellite": "map"}


def _results(r1: dict[str, float]) -> dict:
    """ImageNet at R@1 0.3 everywhere; the checkpoint at 0.3 + r1[kind] (0 for kinds not given)."""
    def m(v: float) -> dict:
        return {"R@1": v, "R@5": min(1.0, v + 0.2), "R@10": 1.0, "R@1%": v, "AP": v, "queries": 10, "gallery": 40}
    return {"imagenet": {"name": "imagenet", "results": {k: m(0.3) for k in KINDS}},
            "ck": {"name": "ck", "results": {k: m(0.3 + r1.get(kind, 0.0)) for k, kind in KINDS.items()}}}


def test_gate_passes_only_with_better_street_views_and_no_loss_on_real_uav():
    ok = make_default.gate(_results({"ground": 0.2, "panorama": 0.1}), KINDS, "ck")
    assert ok["passed"] and all(c["ok"] for c in ok["checks"])
    assert {c["kind"] for c in ok["checks"]} == {"ground", "panorama", "uav-real"}  # uav-world and map do not gate
    # equal on ground is not better; one point lower on real UAV is a loss; equal on real UAV is fine
    for r1, bad in (({"ground": 0.0, "panorama": 0.1}, "b/w/ground->satellite"),
                    ({"ground": 0.2, "panorama": 0.1, "uav-real": -0.01}, "b/turku/uav->satellite"),
                    ({"ground": 0.2, "panorama": -0.1}, "b/w/panorama->satellite")):
        d = make_default.gate(_results(r1), KINDS, "ck")
        assert not d["passed"]
        assert any(bad in reason for reason in d["reasons"]), d["reasons"]
        assert [c["set"] for c in d["checks"] if not c["ok"]] == [bad]
    # no real-map set measured: no pass on missing evidence
    kinds = {k: v for k, v in KINDS.items() if v != "uav-real"}
    d = make_default.gate(_results({"ground": 0.2, "panorama": 0.1}), kinds, "ck")
    assert not d["passed"] and d["reasons"] == ["no uav-real set was benchmarked"]


def _tiny_checkpoint(path: Path, modalities=("uav", "ground", "panorama", "map"), seed: int = 0) -> Path:
    torch.manual_seed(seed)
    card = E.ModelCard(backbone="test_efficientnet", input_size=32, name="tiny-gleam-c",
                       training={"modalities": list(modalities)})
    model = E.build_encoder(card, pretrained=False)
    return E.save_checkpoint(model, card, path)


def test_ship_copies_only_a_passed_checkpoint(tmp_path):
    final = _tiny_checkpoint(tmp_path / "run" / "final")
    dst = tmp_path / "models" / "gleam-c"
    refused = {"gate": make_default.gate(_results({"ground": 0.2}), KINDS, "ck")}
    with pytest.raises(GleamError, match="gate did not pass"):
        make_default.ship(final, dst, "table", refused)
    assert not dst.exists()
    passed = {"gate": make_default.gate(_results({"ground": 0.2, "panorama": 0.1}), KINDS, "ck")}
    make_default.ship(final, dst, "| table |", passed)
    model, card = E.load_checkpoint(dst)
    m0, c0 = E.load_checkpoint(final)
    fp = E.fingerprint(m0, c0)
    assert E.fingerprint(model, card) == fp
    assert fp in (dst / "card.md").read_text() and json.loads((dst / "decision.json").read_text())["gate"]["passed"]
    with pytest.raises(GleamError, match="exists"):  # never replaced silently
        make_default.ship(final, dst, "t", passed)
    make_default.ship(final, dst, "t", passed, force=True)


@pytest.fixture
def no_env(monkeypatch, tmp_path):
    monkeypatch.delenv(E.DEFAULT_MODEL_ENV, raising=False)
    monkeypatch.setattr(E, "DEFAULT_CHECKPOINT_DIR", tmp_path / "models" / "gleam-c")
    return tmp_path / "models" / "gleam-c"


def test_default_is_imagenet_without_a_shipped_checkpoint(no_env, monkeypatch):
    assert E.default_checkpoint() is None
    no_env.mkdir(parents=True)
    assert E.default_checkpoint() is None  # an empty folder is no checkpoint
    monkeypatch.setenv(E.DEFAULT_MODEL_ENV, "imagenet")
    assert E.default_checkpoint() is None


def test_shipped_checkpoint_is_the_default_of_backends_and_onnx_export(no_env, tmp_path, monkeypatch):
    from gleam_ros import cli

    _tiny_checkpoint(no_env)
    assert E.default_checkpoint() == no_env
    m, c = E.load_checkpoint(no_env)
    fp = E.fingerprint(m, c)
    b = E.TorchBackend()
    assert b.fingerprint == fp and b.card.name == "tiny-gleam-c"
    assert E.load_backend("torch").fingerprint == fp
    img = np.random.default_rng(0).integers(0, 255, (48, 48, 3), dtype=np.uint8)
    assert np.allclose(b.embed([img], "uav"), E.TorchBackend(m, c).embed([img], "uav"), atol=1e-6)
    out = tmp_path / "x.onnx"
    assert cli.main(["export", "onnx", "--out", str(out)]) == 0
    assert json.loads((tmp_path / "x.onnx.json").read_text())["fingerprint"] == fp
    monkeypatch.setenv("GLEAM_CACHE_DIR", str(tmp_path / "cache"))
    assert E.load_backend("onnx").fingerprint == fp
    # the environment override names another checkpoint
    other = _tiny_checkpoint(tmp_path / "other", seed=1)
    monkeypatch.setenv(E.DEFAULT_MODEL_ENV, str(other))
    assert E.TorchBackend().fingerprint != fp


def test_bad_default_checkpoints_raise_errors_naming_the_file(no_env, tmp_path, monkeypatch):
    _tiny_checkpoint(no_env, modalities=("uav", "map"))
    with pytest.raises(ModelError, match=r"model\.json.*missing \['ground', 'panorama'\]"):
        E.TorchBackend()
    # a fingerprint that is not the weights'
    _tiny_checkpoint(no_env)
    card = json.loads((no_env / "model.json").read_text())
    (no_env / "model.json").write_text(json.dumps({**card, "fingerprint": "0" * 16}))
    with pytest.raises(ModelError, match=r"model\.safetensors.*fingerprint"):
        E.load_default()
    # truncated weights
    _tiny_checkpoint(no_env)
    w = no_env / "model.safetensors"
    w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])
    with pytest.raises(ModelError, match=r"model\.safetensors.*corrupt"):
        E.load_backend("torch")
    # weights of another architecture under the card
    _tiny_checkpoint(no_env)
    card = json.loads((no_env / "model.json").read_text())
    (no_env / "model.json").write_text(json.dumps({**card, "embed_dim": 8}))
    with pytest.raises(ModelError, match=r"model\.safetensors.*do not fit"):
        E.load_default()
    monkeypatch.setenv(E.DEFAULT_MODEL_ENV, str(tmp_path / "nowhere"))
    with pytest.raises(ModelError, match="nowhere"):
        E.default_checkpoint()


def test_embedding_store_is_reused_per_fingerprint(tmp_path):
    import cv2

    from training.evaluate import EmbeddingCache

    paths = []
    for i in range(3):
        p = tmp_path / f"{i}.png"
        cv2.imwrite(str(p), np.random.default_rng(i).integers(0, 255, (40, 40, 3), dtype=np.uint8))
        paths.append(str(p))
    m, c = E.load_checkpoint(_tiny_checkpoint(tmp_path / "ck"))
    a = EmbeddingCache(E.TorchBackend(m, c), {"uav": 2}, store=tmp_path / "emb")
    ea = a.get(paths, "uav")
    a.save()
    b = EmbeddingCache(E.TorchBackend(m, c), {"uav": 2}, store=tmp_path / "emb")
    b.backend.embed = None  # nothing may be embedded again
    assert np.array_equal(b.get(paths, "uav"), ea) and ea.shape[:2] == (3, 2)
    other = EmbeddingCache(E.TorchBackend(*E.load_checkpoint(_tiny_checkpoint(tmp_path / "ck2", seed=1))), {"uav": 2},
                           store=tmp_path / "emb")
    assert not np.allclose(other.get(paths, "uav"), ea)  # another model's fingerprint: its own embeddings
    assert not EmbeddingCache(E.TorchBackend(m, c), {"uav": 4}, store=tmp_path / "emb")._cache  # other n_rot: unused
