"""`gleam bench run`: every method on a tiny procedural world, in process (no --map)."""

from __future__ import annotations

import json
import math

import pytest

from gleam_ros.cli import COMMANDS, build_parser
from gleam_ros.core.bench import METHODS, NOT_RUN_FINETUNED, BenchConfig, config_from_args, run_bench
from gleam_ros.core.errors import ConfigError

RADIUS = 75.0


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    cfg = BenchConfig(world_size_m=400.0, frames=6, image_width=480, image_height=360, radius_m=RADIUS)
    res = run_bench(cfg, out, command="test", log=lambda *a: None)
    return out, res


def test_outputs_and_all_methods(bench):
    out, _ = bench
    for name in ("bench.json", "bench.md", "bench.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    res = json.loads((out / "bench.json").read_text())
    assert res["machine"]["cpu_count"] >= 1
    (scene,) = res["scenes"].values()
    assert set(scene["methods"]) == set(METHODS)
    assert scene["methods"]["retrieval_finetuned"] == {"run": False, "note": NOT_RUN_FINETUNED}
    md = (out / "bench.md").read_text()
    assert NOT_RUN_FINETUNED in md and "full pipeline" in md and "ONNX Runtime / torch" in md


def test_accuracy_metrics(bench):
    _, res = bench
    (scene,) = res["scenes"].values()
    m = scene["methods"]
    full = m["full_pipeline"]
    assert full["frames"] == 6 and full["false_fixes"] == 0
    assert full["trusted_fixes"] >= 1 and full["median_error_m"] < 5.0
    lf = m["local_features"]
    assert 1 <= lf["candidates_max"] and lf["candidate_max_distance_m"] <= RADIUS
    ret = m["retrieval_imagenet"]
    assert ret["trusted_fixes"] == 6  # retrieval only "fixes" every frame at the top tile centre
    assert 0.0 <= ret["recall_at_1"] <= ret["recall_at_5"] <= 1.0
    for meth in ("local_features", "retrieval_imagenet", "full_pipeline"):
        for key in ("within_5m", "within_10m", "within_25m", "false_fixes", "cov_consistency_95"):
            assert key in m[meth], (meth, key)


def test_latency_and_onnx_ratio(bench):
    _, res = bench
    (scene,) = res["scenes"].values()
    r = scene["embed_ratio_onnx_over_torch"]
    assert r["frames"] == 6 and math.isfinite(r["ratio"]) and r["ratio"] > 0
    lat = scene["latency"]
    for stage in ("decode", "embed_torch", "embed_onnx", "search", "local_features_verify", "pipeline_verify",
                  "pipeline_filter", "pipeline_total"):
        assert lat[stage]["n"] >= 1 and 0 <= lat[stage]["p50_ms"] <= lat[stage]["p95_ms"], stage


def test_cli_options():
    a = build_parser().parse_args(["bench", "run", "--quick", "--map", "m.tif", "--radius", "120"])
    assert COMMANDS[("bench", a.bench_command)].__name__ == "cmd_bench_run"
    cfg = config_from_args(a)
    assert (cfg.frames, cfg.world_size_m, cfg.map_path, cfg.radius_m, cfg.finetuned) == (20, 500.0, "m.tif", 120.0, None)
    full = config_from_args(build_parser().parse_args(["bench", "run"]))
    assert (full.frames, full.world_size_m, full.map_path) == (120, 800.0, None)
    with pytest.raises(ConfigError):
        BenchConfig(world=False)
