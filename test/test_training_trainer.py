"""GLEAM-C trainer in one process: two phases (phase 2 starts from phase 1's weights), exact resume after an
interruption, checkpoints readable by the core (load_checkpoint, gleam export onnx), evaluation CLI."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from gleam_ros.core.encoder import fingerprint, load_checkpoint
from gleam_ros.core.errors import ConfigError
from training import evaluate as tev
from training import gleam_c
from training.config import config_from_dict, load_config
from training.synthetic import tiny_config, write_pairs_folder


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("data")
    a = write_pairs_folder(root / "maps", n_train=16, n_test=6, query_dir="map", seed=0)
    b = write_pairs_folder(root / "uav", n_train=16, n_test=6, query_dir="uav", seed=1)
    return {"maps": {"type": "pairs_folder", "root": str(a)},
            "uav": {"type": "pairs_folder", "root": str(b), "query_dir": "uav", "query_modality": "uav"}}


PHASES = [
    {"name": "anchor", "datasets": ["uav"], "epochs": 2, "batch_size": 4, "lr": 1e-3,
     "hard_negatives": {"neighbours": 2, "pool": 4}, "eval_every_epochs": 2},
    {"name": "joint", "datasets": ["uav", "maps"], "epochs": 2, "batch_size": 4, "lr": 1e-3, "accumulate": 2,
     "hard_negatives": {"neighbours": 2, "pool": 4}, "freeze_bn": False},  # batch-norm statistics train (and resume)
]


def _cfg(tmp: Path, data: dict, name: str):
    torch.set_num_threads(1)
    return config_from_dict(tiny_config(tmp / name, data, PHASES))


def _log(run: Path) -> list[dict]:
    return list(csv.DictReader((run / "log.csv").open()))


def _weights(ckpt: Path) -> dict:
    return load_file(str(ckpt / "model.safetensors"))


@pytest.fixture(scope="module")
def full_run(tmp_path_factory, data) -> Path:
    tmp = tmp_path_factory.mktemp("runs")
    res = gleam_c.run_training(_cfg(tmp, data, "full"))
    assert res["status"] == "done"
    return tmp / "full"


def test_two_phases_and_phase2_starts_from_phase1(full_run):
    rows = _log(full_run)
    # anchor: 16 uav pairs / global batch 4 = 4 steps x 2 epochs; joint: 32 pairs / 4 = 8 batches / accumulate 2 = 4 x 2
    assert [r["phase"] for r in rows] == ["anchor"] * 8 + ["joint"] * 8
    assert [int(r["global_step"]) for r in rows] == list(range(1, 17))
    p1 = json.loads((full_run / "anchor" / "phase_done.json").read_text())
    p2 = json.loads((full_run / "joint" / "phase_done.json").read_text())
    m1, c1 = load_checkpoint(full_run / "anchor" / "final")
    assert p2["init_fingerprint"] == p1["fingerprint"] == fingerprint(m1, c1)
    assert p2["init_from"].endswith("anchor/final")
    assert p2["init_fingerprint"] != p2["fingerprint"]  # phase 2 trained on
    assert abs(float(rows[8]["logit_scale"]) - p1["logit_scale"]) < 0.05  # the temperature carries over too
    m, card = load_checkpoint(full_run / "final")
    assert fingerprint(m, card) == p2["fingerprint"]
    assert card.training["phases"] == ["anchor", "joint"] and card.backbone == "test_efficientnet"
    (ev,) = [json.loads(line) for line in (full_run / "eval.jsonl").read_text().splitlines()]
    assert (ev["phase"], ev["epoch"], ev["global_step"]) == ("anchor", 2, 8)
    assert set(ev["results"]) == {"uav/uav->satellite", "uav/satellite->uav"}
    # nothing pickled: the resumable state is safetensors + JSON
    assert sorted(p.name for p in (full_run / "joint" / "last").iterdir()) == [
        "model.json", "model.safetensors", "train_state.json", "train_state.safetensors"]


def test_resume_after_interruption_is_exact(tmp_path, data, full_run):
    cfg = _cfg(tmp_path, data, "resumed")
    res = gleam_c.run_training(cfg, stop_after=11)  # 8 anchor steps + 3 joint steps (mid-epoch, mid-plan)
    assert res == {"status": "stopped", "phase": "joint", "step": 3, "checkpoint": str(tmp_path / "resumed/joint/last")}
    assert len(_log(tmp_path / "resumed")) == 11
    st = json.loads((tmp_path / "resumed/joint/last/train_state.json").read_text())
    assert (st["epoch"], st["pos"], st["step"]) == (0, 6, 3)
    res = gleam_c.run_training(_cfg(tmp_path, data, "resumed"))  # same command again: resumes
    assert res["status"] == "done"
    a, b = _log(full_run), _log(tmp_path / "resumed")
    keys = ("phase", "epoch", "step", "loss", "lr", "logit_scale", "grad_norm")
    assert [[r[k] for k in keys] for r in a] == [[r[k] for k in keys] for r in b]  # same next step and all after it
    wa, wb = _weights(full_run / "final"), _weights(tmp_path / "resumed" / "final")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_spawned_loader_workers_train_the_same_run(tmp_path, data, full_run):
    """runtime.num_workers > 0: workers are spawned (a forked one hung after an evaluation had run OpenCV /
    torch threads in the parent); the batches, and so every logged step, are those of the in-process loader."""
    torch.set_num_threads(1)
    d = tiny_config(tmp_path / "workers", data, PHASES)
    d["runtime"]["num_workers"] = 1
    res = gleam_c.run_training(config_from_dict(d))
    assert res["status"] == "done"
    keys = ("phase", "epoch", "step", "loss", "lr", "logit_scale", "grad_norm")
    a, b = _log(full_run), _log(tmp_path / "workers")
    assert [[r[k] for k in keys] for r in a] == [[r[k] for k in keys] for r in b]


def test_resume_refuses_another_world_size(tmp_path, data):
    cfg = _cfg(tmp_path, data, "r")
    gleam_c.run_training(cfg, stop_after=2)
    st = tmp_path / "r/anchor/last/train_state.json"
    meta = json.loads(st.read_text())
    meta["world_size"] = 2
    st.write_text(json.dumps(meta))
    with pytest.raises(ConfigError, match="same layout"):
        gleam_c.run_training(cfg)


def test_cli_stop_resume_and_export_onnx(tmp_path, data, capsys):
    pytest.importorskip("onnx")
    cfg = tiny_config(tmp_path / "cli", data, [dict(PHASES[0], epochs=1)])
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    assert gleam_c.main(["--config", str(tmp_path / "c.yaml"), "--stop-after-steps", "2"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["status"] == "stopped"
    assert gleam_c.main(["--config", str(tmp_path / "c.yaml"), "--set", "runtime.log_every=2"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["status"] == "done"
    from gleam_ros import cli

    onnx = tmp_path / "enc.onnx"
    assert cli.main(["export", "onnx", "--model", str(tmp_path / "cli" / "final"), "--out", str(onnx)]) == 0
    assert onnx.is_file() and json.loads((tmp_path / "enc.onnx.json").read_text())["card"]["name"] == "tiny"
    assert gleam_c.main(["--config", str(tmp_path / "missing.yaml")]) == 2


def test_evaluate_cli(tmp_path, data, full_run, capsys):
    cfg = tiny_config(tmp_path / "x", data, PHASES)
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    out = tmp_path / "m.json"
    assert tev.main(["--config", str(tmp_path / "c.yaml"), "--checkpoint", str(full_run / "final"), "--out", str(out),
                     "--no-progress", "--threads", "1"]) == 0
    res = json.loads(out.read_text())["results"]
    assert set(res) == {"uav/uav->satellite", "uav/satellite->uav", "maps/map->satellite", "maps/satellite->map"}
    for m in res.values():
        assert m["queries"] == 6 and m["gallery"] == 6
        assert 0.0 <= m["R@1"] <= m["R@5"] <= m["R@10"] == 1.0 and 0.0 < m["AP"] <= 1.0
    assert res["uav/uav->satellite"]["n_rot"] == [8, 1]  # default yaw hypotheses for uav queries
    assert "R@1%" in capsys.readouterr().out


def test_config_errors(tmp_path, data):
    base = tiny_config(tmp_path / "e", data, PHASES)
    with pytest.raises(ConfigError, match="unknown keys"):
        config_from_dict({**base, "phasess": []})
    with pytest.raises(ConfigError, match="not defined under datasets"):
        config_from_dict({**base, "phases": [{"name": "x", "datasets": ["nope"]}]})
    with pytest.raises(ConfigError, match="distinct places"):
        gleam_c.run_training(config_from_dict({**base, "phases": [dict(PHASES[0], batch_size=64)]}))
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(base))
    cfg = load_config(p, ["phases.1.epochs=5", "runtime.device=cpu", "model.embed_dim=8"])
    assert cfg.phases[1].epochs == 5 and cfg.model.embed_dim == 8
    with pytest.raises(ConfigError):
        load_config(p, ["phases.7.epochs=5"])


def _fake_results(gain: float) -> dict:
    base = {"R@1": 0.5, "R@5": 0.8, "R@10": 0.9, "R@1%": 0.6, "AP": 0.4, "queries": 10, "gallery": 20}
    res = {}
    for name, g in (("imagenet", 0.0), ("ck", gain)):
        res[name] = {"name": name, "results": {
            "bench/w/uav->satellite": {**base, "R@1": 0.5 + g, "AP": 0.4 + g},
            "bench/w/satellite->uav": {**base, "R@1": 0.4},
            "bench/m/uav->satellite": {**base, "R@1": 0.3 + g, "AP": 0.4 + g}}}
    return res


def test_make_default_ships_only_if_better(tmp_path, data, full_run, monkeypatch):
    from training import bench_recall, make_default

    table, verdict = bench_recall.compare(_fake_results(0.1))
    assert verdict["ck"]["better_everywhere"] and verdict["ck"]["mean_gain"] == pytest.approx(0.1)
    assert "| bench/w/uav->satellite | 50.0 | 60.0 |" in table
    assert not bench_recall.compare(_fake_results(-0.01))[1]["ck"]["better_everywhere"]
    r = _fake_results(0.1)
    r["ck"]["results"]["bench/m/uav->satellite"]["AP"] = 0.39  # R@1 up but AP down: not better
    assert not bench_recall.compare(r)[1]["ck"]["better_everywhere"]
    cfg = tiny_config(full_run.parent / "full", data, PHASES)  # the finished run: training resumes to "done" at once
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    kinds = {"bench/w/uav->satellite": "ground", "bench/m/uav->satellite": "uav-real"}
    monkeypatch.setattr(make_default, "bench_sets", lambda *a, **k: ([], kinds))
    kinds_p = {**kinds, "bench/w/uav->satellite": "panorama"}
    for gain, shipped in ((-0.05, False), (0.05, True)):
        def fake_bench(cks, sets, device, g=gain, **kw):
            r = _fake_results(g)
            r[cks[0]] = r.pop("ck")
            return r
        monkeypatch.setattr(make_default, "run_bench", fake_bench)
        ship = tmp_path / f"ship{gain}"
        assert make_default.main(["--config", str(tmp_path / "c.yaml"), "--ship", str(ship)]) == 0
        dec = json.loads((full_run / "decision.json").read_text())
        assert dec["gate"]["passed"] is False  # no panorama set benchmarked: the gate never passes on missing evidence
        assert dec["shipped_to"] is None and not ship.exists()
        monkeypatch.setattr(make_default, "bench_sets", lambda *a, **k: ([], {**kinds_p, "bench/x/uav->satellite": "ground"}))

        def fake_bench2(cks, sets, device, g=gain, **kw):
            r = fake_bench(cks, sets, device, g)
            for m in r.values():
                m["results"]["bench/x/uav->satellite"] = dict(m["results"]["bench/w/uav->satellite"])
            return r
        monkeypatch.setattr(make_default, "run_bench", fake_bench2)
        assert make_default.main(["--config", str(tmp_path / "c.yaml"), "--ship", str(ship)]) == 0
        dec = json.loads((full_run / "decision.json").read_text())
        assert dec["gate"]["passed"] is shipped
        assert (dec["shipped_to"] == str(ship)) is shipped and ship.exists() is shipped
        monkeypatch.setattr(make_default, "bench_sets", lambda *a, **k: ([], kinds))
    load_checkpoint(tmp_path / "ship0.05")
    assert json.loads((tmp_path / "ship0.05" / "decision.json").read_text())["gate"]["passed"] is True
    assert "fingerprint" in (tmp_path / "ship0.05" / "card.md").read_text()
