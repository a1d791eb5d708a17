"""The GLEAM-X benchmark module end to end on a tiny map the test writes, with both backends.

Smoke test only (one query); the real benchmark runs on a real map (see training/gleam_x/bench.py).
"""

from __future__ import annotations

import json

import cv2
import torch

from gleam_ros.core.sim.world import WorldConfig, make_world, write_world
from test_explain_mllm import make_tiny_qwen25vl
from training.gleam_x.bench import main, run
from training.gleam_x.pairs import PairSpec

torch.set_num_threads(1)
cv2.setNumThreads(1)


def test_bench_runs_both_backends(tmp_path):
    paths = write_world(make_world(WorldConfig(seed=9, size_m=300.0, gsd_m=0.3)), tmp_path / "world")
    tiny = make_tiny_qwen25vl(tmp_path / "tiny")
    out = tmp_path / "bench"
    m = run(str(paths["satellite"]), str(out), n_queries=1, seed=3, languages=("en", "zh"), mllm_dir=str(tiny),
            mllm_pairs=2, spec=PairSpec(alt_range=(80.0, 90.0)))
    assert m["pairs"]["total"] == 3 and m["pairs"]["positive"] == 1
    assert m["verdict"]["n"] == 3 and 0.0 <= m["verdict"]["accuracy"] <= 1.0
    assert m["faithfulness_en"]["recomputed_mean"] == 1.0 and m["faithfulness_zh"]["recomputed_mean"] == 1.0
    assert set(m["examples"]) == {"positive", "hard_embedding", "hard_spatial"}
    assert (out / "evidence_positive_en.png").is_file() and "zh" in m["examples"]["positive"]
    mm = m["mllm"]
    assert mm["verdict"]["n"] == 2 and "no_match_bias" in mm["verdict"]
    assert len(mm["sbert"]["per_item"]) == 2 and all(-1.0 <= s <= 1.0 for s in mm["sbert"]["per_item"])
    assert mm["flags"].get("verdict_missing", 0) == 2  # a random model never states a verdict
    saved = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert saved["verdict"]["n"] == 3 and (out / "metrics.md").read_text().startswith("| metric |")


def test_bench_command_line(tmp_path, capsys):
    paths = write_world(make_world(WorldConfig(seed=9, size_m=300.0, gsd_m=0.3)), tmp_path / "world")
    assert main(["--map", str(paths["satellite"]), "--out", str(tmp_path / "b"), "--queries", "1", "--languages", "en",
                 "--alt-min", "80", "--alt-max", "90", "--no-priors"]) == 0
    assert "verdict accuracy" in capsys.readouterr().out
    m = json.loads((tmp_path / "b" / "metrics.json").read_text())
    assert m["pair_spec"]["priors"] is False and "faithfulness_zh" not in m
