"""`gleam explain`: text and JSON output, evidence image, Chinese, clear errors."""

from __future__ import annotations

import json

import cv2
import numpy as np

from gleam_ros.cli import main

cv2.setNumThreads(1)


def _texture(seed=0, h=300, w=360):
    rng = np.random.default_rng(seed)
    img = cv2.resize(rng.integers(60, 200, (h // 12, w // 12, 3), dtype=np.uint8), (w, h), interpolation=cv2.INTER_CUBIC)
    for _ in range(300):
        c = tuple(int(x) for x in rng.integers(0, 256, 3))
        x, y = int(rng.integers(0, w)), int(rng.integers(0, h))
        cv2.circle(img, (x, y), int(rng.integers(3, 12)), c, -1)
        cv2.line(img, (x, y), (x + int(rng.integers(-40, 40)), y + int(rng.integers(-40, 40))), c, 2)
    return img


def _pair(tmp_path):
    ref = _texture(0)
    rot = cv2.getRotationMatrix2D((180, 150), 25.0, 1.25)
    query = cv2.warpAffine(ref, rot, (360, 300))[40:260, 40:320]
    qp, rp = tmp_path / "q.jpg", tmp_path / "ref.png"
    cv2.imwrite(str(qp), query)
    cv2.imwrite(str(rp), ref)
    return qp, rp


def test_explain_json_and_evidence_image(tmp_path, capsys):
    qp, rp = _pair(tmp_path)
    out = tmp_path / "sub" / "evidence.png"
    assert main(["explain", "--query", str(qp), "--reference", str(rp), "--lang", "zh", "--json", "--out", str(out),
                 "--heading", "30", "--similarity", "0.8", "--next-best", "0.7"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["language"] == "zh" and d["verdict_label"] == "match" and d["backend"] == "evidence"
    assert d["evidence"][-1]["kind"] == "match_probability" and "结论" not in d["text"] and "匹配" in d["text"]
    assert d["evidence_image"] == str(out)
    img = cv2.imread(str(out))
    assert img is not None and img.shape[1] > 360
    kinds = [e["kind"] for e in d["evidence"]]
    assert "rotation" in kinds and "embedding_margin" in kinds


def test_explain_text_output_no_match(tmp_path, capsys):
    qp, _ = _pair(tmp_path)
    other = tmp_path / "other.png"
    cv2.imwrite(str(other), _texture(7))
    assert main(["explain", "--query", str(qp), "--reference", str(other)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("no match (confidence") and "so they do not match." in out


def test_explain_errors(tmp_path, capsys):
    qp, rp = _pair(tmp_path)
    assert main(["explain", "--query", str(tmp_path / "missing.jpg"), "--reference", str(rp)]) == 2
    assert "image not found" in capsys.readouterr().err
    assert main(["explain", "--query", str(qp), "--reference", str(rp), "--explainer", "mllm"]) == 2
    assert "--mllm-dir" in capsys.readouterr().err
    assert main(["explain", "--query", str(qp), "--reference", str(rp), "--explainer", "mllm",
                 "--mllm-dir", str(tmp_path / "nope")]) == 2
    assert "model directory not found" in capsys.readouterr().err
