"""Tests of gleam_ros.core.bench_index (the index scale benchmark) on tiny synthetic sets, single-threaded."""

from __future__ import annotations

import json

import numpy as np
import pytest

from gleam_ros.core.bench_index import (SynthSpec, SyntheticVectors, combine_results, make_variants, markdown_table,
                                        run_benchmark)
from gleam_ros.core.errors import ConfigError

SPEC = SynthSpec(dim=32, latent_rank=16, n_clusters=16)


def _quiet(*_a, **_k):
    pass


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    d = tmp_path_factory.mktemp("bench")
    res = run_benchmark(d / "out", sizes=[1200, 1500], spec=SPEC, nq=60, threads=1, single_queries=30, quick=True,
                        variants=["flat", "hnsw32", "ivfpq-tileindex", "opq64-ivfpq64", "opq64-ivfpq64-rflat",
                                  "opq64-ivfpq128fs"],
                        workdir=d, log=_quiet, command="test",
                        only_up_to={"hnsw32": 1200, "opq64-ivfpq64-rflat": 1200, "opq64-ivfpq128fs": 1200})
    return d, res


def test_rows_have_every_measurement(result):
    d, res = result
    rows = {r["variant"]: r for r in res["rows"] if r["n"] == 1200}
    assert list(rows) == ["flat", "hnsw32", "ivfpq-tileindex", "opq64-ivfpq64", "opq64-ivfpq64-rflat", "opq64-ivfpq128fs"]
    assert [r["variant"] for r in res["rows"] if r["n"] == 1500] == ["flat", "ivfpq-tileindex", "opq64-ivfpq64"]
    for r in rows.values():
        assert r["n"] == 1200 and "skipped" not in r
        for key in ("build_s", "train_s", "add_s", "query_p50_ms", "query_p90_ms", "batch_ms_per_query", "recall_at_1",
                    "recall_at_10", "source_at_1", "bytes_per_tile", "ram_delta_mb", "index_file_bytes"):
            assert np.isfinite(r[key]), key
        assert r["query_p50_ms"] > 0 and r["single_queries"] == 30 and r["threads"] == 1
        assert 0.0 <= r["recall_at_1"] <= 1.0 and 0.0 <= r["recall_at_10"] <= 1.0
    flat = rows["flat"]
    assert flat["recall_at_1"] == 1.0 and flat["recall_at_10"] == 1.0  # flat is the exact search
    assert 32 * 4 <= flat["bytes_per_tile"] < 32 * 4 + 1  # 128 bytes of float32 per tile + a small header
    assert rows["hnsw32"]["recall_at_10"] >= 0.9
    for name in ("ivfpq-tileindex", "opq64-ivfpq64"):
        assert rows[name]["bytes_per_tile"] < flat["bytes_per_tile"] and "train_size" in rows[name]
    assert rows["opq64-ivfpq64"]["factory"].startswith("OPQ")
    rf, base = rows["opq64-ivfpq64-rflat"], rows["opq64-ivfpq64"]
    assert rf["train_shared_with"] == "opq64-ivfpq64" and rf["train_s"] == base["train_s"]  # trained once
    assert rf["factory"] == base["factory"] + ",RFlat" and rf["bytes_per_tile"] > flat["bytes_per_tile"]
    assert rf["recall_at_10"] >= base["recall_at_10"]  # exact re-ranking of the shortlist
    # fast scan: twice the sub-quantizers at 4 bits = the same code bytes as the 8-bit PQ, not trained with it
    fs = rows["opq64-ivfpq128fs"]
    assert fs["factory"] == base["factory"].replace(",PQ8", ",PQ16x4fs") and "train_shared_with" not in fs
    assert fs["bytes_per_tile"] < 2 * base["bytes_per_tile"] and fs["search"]["nprobe"] == 256
    assert fs["sweep"][-1]["recall_at_1"] >= fs["sweep"][0]["recall_at_1"]
    # operating points of each built index: nprobe up to nlist (all lists), efSearch for HNSW; none for flat
    assert "sweep" not in flat or not flat["sweep"]
    assert [p["efSearch"] for p in rows["hnsw32"]["sweep"]] == [16, 32, 64, 128, 256, 512]
    sw = rows["opq64-ivfpq64"]["sweep"]
    nlist = int(rows["opq64-ivfpq64"]["factory"].split(",IVF")[1].split(",")[0])
    assert sw[-1]["nprobe"] == nlist and sw[-1]["recall_at_10"] >= sw[0]["recall_at_10"]
    assert all(np.isfinite(p["query_p50_ms"]) and 0 <= p["recall_at_1"] <= 1 for p in sw)
    assert res["sizes"][0]["n"] == 1200 and res["sizes"][0]["exact_source_at_1"] > 0.5
    assert not list(d.glob("gleam-bench-index-*"))  # the database file and its folder are gone


def test_reports_are_written(result):
    d, res = result
    out = d / "out"
    loaded = json.loads((out / "index_bench.json").read_text())
    assert loaded["rows"] == json.loads(json.dumps(res["rows"]))
    assert loaded["machine"]["threads"] == 1 and loaded["synthetic"]["dim"] == 32 and loaded["command"] == "test"
    md = (out / "index_bench.md").read_text()
    assert md == markdown_table(res) and "recall@1" in md and "Operating points" in md
    assert md.count("| 1,200 | opq64-ivfpq64 | nprobe=") >= 3
    assert (out / "index_bench.png").stat().st_size > 1000


def test_projected_build_budget_skips_a_variant(tmp_path):
    res = run_benchmark(tmp_path / "o", sizes=[60_000], variants=["hnsw32"], spec=SPEC, nq=20, threads=1,
                        single_queries=5, max_build_s=0.0, workdir=tmp_path, log=_quiet)
    (row,) = res["rows"]
    assert "projected build time" in row["skipped"] and "recall_at_1" not in row
    assert "skipped" in (tmp_path / "o" / "index_bench.md").read_text()


def test_synthetic_vectors_are_deterministic_clustered_units():
    a, b = SyntheticVectors(SPEC), SyntheticVectors(SPEC)
    x = a.chunk(0, 500)
    assert np.array_equal(x, b.chunk(0, 500)) and not np.array_equal(x, a.chunk(1, 500))
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)
    assert np.array_equal(a.chunk(0, 100), x[:100])  # a prefix of a chunk is the same vectors
    q = a.perturb(x[:50], seed=0)
    cos = np.sum(q * x[:50], axis=1)
    assert 0.8 < cos.mean() < 0.97  # a query is close to, but not a copy of, its source
    assert (x @ x.T).mean() > 0.3  # shared mean direction + clusters: not isotropic


def test_variants_and_bad_arguments(tmp_path):
    v = {x.name: x for x in make_variants(1_000_000, 1280)}
    assert v["opq64-ivfpq64"].factory == "OPQ64_256,IVF4096,PQ64"
    assert v["ivfpq-tileindex"].factory == "IVF1000,PQ64" and v["ivfpq-tileindex"].search["nprobe"] == 250
    assert v["opq112-ivfpq112"].factory == "OPQ112_224,IVF4096,PQ112"
    assert v["opq64-ivfpq128fs"].factory == "OPQ64_256,IVF4096,PQ128x4fs" and v["opq64-ivfpq128fs"].search["nprobe"] == 256
    small = {x.name: x for x in make_variants(10_000, 1280)}
    assert small["opq64-ivfpq64"].factory == "OPQ64_256,IVF256,PQ64"  # >= 39 training points per list
    with pytest.raises(ConfigError):
        make_variants(1000, 32, ["lsh"])
    with pytest.raises(ConfigError):
        run_benchmark(tmp_path, sizes=[50], spec=SPEC, log=_quiet)


def test_cli_bench_index(tmp_path, capsys):
    from gleam_ros import cli

    out = tmp_path / "res"
    assert cli.main(["bench", "index", "--sizes", "1000", "--dim", "32", "--nq", "30", "--variants", "flat,hnsw32",
                     "--threads", "1", "--single-queries", "10", "--out", str(out), "--workdir", str(tmp_path)]) == 0
    res = json.loads((out / "index_bench.json").read_text())
    assert [r["variant"] for r in res["rows"]] == ["flat", "hnsw32"]
    assert res["command"].startswith("gleam bench index") and "--sizes 1000" in res["command"]
    assert "| 1,000 | flat |" in capsys.readouterr().out
    assert cli.main(["bench", "index", "--sizes", "1000", "--variants", "nope", "--out", str(out)]) == 2


def test_combined_reports_keep_every_run_and_row(result):
    _, res = result
    other = {**res, "created": "later", "rows": res["rows"][:2], "sizes": res["sizes"][:1]}
    both = combine_results([res, other])
    assert [r["created"] for r in both["runs"]] == [res["created"], "later"]
    assert both["rows"] == res["rows"] + res["rows"][:2] and len(both["sizes"]) == len(res["sizes"]) + 1
    again = combine_results([both, other])  # a combined report contributes the runs it lists
    assert [r["created"] for r in again["runs"]] == [res["created"], "later", "later"]
    assert "later" in markdown_table(again)
    with pytest.raises(ConfigError):
        combine_results([])
