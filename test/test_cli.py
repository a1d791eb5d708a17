"""The `gleam` CLI: happy paths on a tiny world, and bad input → one clear line, exit code 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from gleam_ros.cli import main

GLEAM = str(Path(sys.executable).parent / "gleam")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A procedural world, its index and a 6-frame flight, all made through the CLI."""
    d = tmp_path_factory.mktemp("cli")
    assert main(["world", "--out", str(d / "world"), "--seed", "5", "--size", "360", "--variant-season", ""]) == 0
    assert main(["index", "build", "--map", str(d / "world" / "satellite.tif"), "--out", str(d / "index"),
                 "--tile-size", "100", "--gsd", "0.3"]) == 0
    assert main(["simulate", "--map", str(d / "world" / "satellite.tif"), "--out", str(d / "flight"),
                 "--frames", "6", "--speed", "8", "--photometric", "0.5"]) == 0
    return d


def test_index_and_flight_layout(built):
    manifest = json.loads((built / "index" / "manifest.json").read_text())
    assert manifest["n_tiles"] > 4 and manifest["kind"] == "flat"
    assert len(list((built / "flight" / "images").glob("*.jpg"))) == 6
    assert (built / "flight" / "ground_truth.csv").read_text().count("\n") == 7


def test_localize_prints_json(built, capsys):
    img = built / "flight" / "images" / "000003.jpg"
    assert main(["localize", "--index", str(built / "index"), "--image", str(img), "--hfov", "60", "--alt", "120"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["hypotheses"], out
    assert {"tile_id", "similarity", "status"} <= set(out["hypotheses"][0])


def test_eval_writes_metrics_table_and_plot(built, capsys):
    out = built / "eval"
    assert main(["eval", "--index", str(built / "index"), "--flight", str(built / "flight"), "--out", str(out),
                 "--map", str(built / "world" / "satellite.tif")]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["frames"] == 6
    assert metrics["false_fixes"] == 0
    assert (out / "flight.png").stat().st_size > 10_000
    assert "within 5 m" in (out / "metrics.md").read_text()
    assert len((out / "frames.jsonl").read_text().splitlines()) == 6


def test_eval_attitude_priors_reach_the_oblique_search(built, capsys):
    """--attitude-priors: while tracking, the frames' tile search is centred on the view centre the attitude gives
    (the per-frame search note says where); without it there is no note (the search stays around the vehicle); with
    --no-alt-prior it is a clear error."""
    notes = {}
    for flag in ([], ["--attitude-priors"]):
        out = built / f"eval_att{len(flag)}"
        assert main(["eval", "--index", str(built / "index"), "--flight", str(built / "flight"), "--out", str(out),
                     *flag]) == 0
        metrics = json.loads((out / "metrics.json").read_text())
        assert ("pitch / roll" in metrics["priors"]) == bool(flag), metrics["priors"]
        notes[bool(flag)] = [json.loads(line)["search_note"] for line in (out / "frames.jsonl").read_text().splitlines()]
    assert not any(notes[False]), notes[False]  # no attitude: the search stays around the vehicle, as before
    assert any("view centre" in n for n in notes[True]), notes[True]
    capsys.readouterr()
    assert main(["eval", "--index", str(built / "index"), "--flight", str(built / "flight"), "--out",
                 str(built / "eval_bad"), "--attitude-priors", "--no-alt-prior"]) == 2
    assert "--attitude-priors needs the altitude prior" in _err(capsys)


def _err(capsys) -> str:
    return capsys.readouterr().err


def test_missing_map_names_the_path(tmp_path, capsys):
    missing = tmp_path / "nope.tif"
    assert main(["index", "build", "--map", str(missing), "--out", str(tmp_path / "i")]) == 2
    err = _err(capsys)
    assert err.startswith("gleam: error:") and str(missing) in err and "Traceback" not in err


def test_map_without_georeferencing(tmp_path, capsys):
    p = tmp_path / "plain.png"
    cv2.imwrite(str(p), np.zeros((64, 64, 3), np.uint8))
    assert main(["simulate", "--map", str(p), "--out", str(tmp_path / "f")]) == 2
    assert "plain.png" in _err(capsys)


def test_corrupt_and_empty_images(built, tmp_path, capsys):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    for p in (bad, empty, tmp_path / "missing.jpg"):
        assert main(["localize", "--index", str(built / "index"), "--image", str(p)]) == 2
        assert p.name in _err(capsys)


def test_index_from_another_encoder_is_refused(built, tmp_path, capsys):
    from gleam_ros.core.encoder import ModelCard, build_encoder, save_checkpoint

    card = ModelCard(backbone="resnet10t", input_size=64, embed_dim=16, name="tiny", pretrained="none")
    ckpt = save_checkpoint(build_encoder(card, pretrained=False), card, tmp_path / "tiny")
    img = built / "flight" / "images" / "000000.jpg"
    assert main(["localize", "--index", str(built / "index"), "--image", str(img), "--model", str(ckpt)]) == 2
    err = _err(capsys)
    assert "fingerprint" in err.lower() and "gleam index build" in err


def test_missing_or_truncated_index(built, tmp_path, capsys):
    img = built / "flight" / "images" / "000000.jpg"
    assert main(["localize", "--index", str(tmp_path / "noindex"), "--image", str(img)]) == 2
    assert "noindex" in _err(capsys)
    broken = tmp_path / "broken"
    import shutil

    shutil.copytree(built / "index", broken)
    data = (broken / "vectors.faiss").read_bytes()
    (broken / "vectors.faiss").write_bytes(data[: len(data) // 2])
    assert main(["localize", "--index", str(broken), "--image", str(img)]) == 2
    assert "vectors.faiss" in _err(capsys)


def test_bad_prior_and_flight_folder(built, tmp_path, capsys):
    img = built / "flight" / "images" / "000000.jpg"
    assert main(["localize", "--index", str(built / "index"), "--image", str(img), "--prior", "60.4,22"]) == 2
    assert "--prior" in _err(capsys)
    assert main(["eval", "--index", str(built / "index"), "--flight", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "camera.json" in _err(capsys)


def test_export_onnx_then_eval_with_onnx_backend(built, tmp_path, capsys):
    onnx = tmp_path / "enc.onnx"
    assert main(["export", "onnx", "--out", str(onnx)]) == 0
    assert onnx.is_file() and Path(str(onnx) + ".json").is_file()
    img = built / "flight" / "images" / "000002.jpg"
    capsys.readouterr()
    # an index built with torch is accepted by the ONNX backend of the same weights
    assert main(["localize", "--index", str(built / "index"), "--image", str(img), "--backend", "onnx",
                 "--model", str(onnx)]) == 0
    assert json.loads(capsys.readouterr().out)["hypotheses"]


def test_process_exit_code_and_no_traceback(tmp_path):
    out = subprocess.run([GLEAM, "index", "build", "--map", str(tmp_path / "x"), "--out", str(tmp_path / "i")],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert "Traceback" not in out.stderr and "gleam: error:" in out.stderr
