"""GLEAM-X MLLM backend and LoRA fine-tuning on a tiny randomly initialised Qwen2.5-VL built here.

No weights are downloaded: the test trains a small byte-level BPE tokenizer, builds the Qwen2.5-VL
image/video processors from parameters and a 2-layer Qwen2.5-VL from a config, saves them to a
temporary directory and loads them back through the real path (AutoProcessor / AutoModel with
local_files_only=True) -> chat template -> processor -> generate -> parse.
"""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from gleam_ros.core._torchvision_compat import ensure_torchvision  # noqa: I001

ensure_torchvision()
import torch  # noqa: E402

from gleam_ros.core.errors import ConfigError, ModelError  # noqa: E402
from gleam_ros.core.explain import VERDICT_MATCH, VERDICT_NO_MATCH, EvidenceExplainer, Explainer, ExplainContext  # noqa: E402
from gleam_ros.core.explain import mllm as M  # noqa: E402
from gleam_ros.core.explain import text as T  # noqa: E402
from gleam_ros.core.explain.calibrate import rule_model  # noqa: E402

torch.set_num_threads(1)
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>",
            "<|video_pad|>"]


def make_tiny_qwen25vl(out_dir, seed: int = 0):
    """A randomly initialised 2-layer Qwen2.5-VL with a 600-token BPE tokenizer; saved to ``out_dir``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import Qwen2VLImageProcessor
    from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

    corpus = [M.instruction(m, lang) for m in M.QUERY_DESCRIPTIONS for lang in ("en", "zh")]
    for variants in T.TEMPLATES.values():
        for _, tpl in variants.values():
            corpus += [tpl["en"], tpl["zh"]]
    corpus += [M.VERDICT_LINES[lang][v] for lang in ("en", "zh") for v in (0, 1)] + ["0123456789.%°"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(corpus * 3, trainers.BpeTrainer(vocab_size=600, special_tokens=SPECIALS,
                                                            initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    px = dict(min_pixels=28 * 28 * 4, max_pixels=56 * 56, patch_size=14, merge_size=2, temporal_patch_size=2)
    processor = Qwen2_5_VLProcessor(image_processor=Qwen2VLImageProcessor(**px), tokenizer=fast,
                                    video_processor=Qwen2VLVideoProcessor(**px), chat_template=M.QWEN_CHAT_TEMPLATE)
    ids = {t: fast.convert_tokens_to_ids(t) for t in SPECIALS}
    cfg = Qwen2_5_VLConfig(
        text_config=dict(vocab_size=len(fast), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=4096,
                         rope_parameters={"rope_type": "default", "mrope_section": [2, 3, 3], "rope_theta": 10000.0},
                         bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"],
                         pad_token_id=ids["<|endoftext|>"]),
        vision_config=dict(depth=1, hidden_size=32, intermediate_size=64, num_heads=2, patch_size=14,
                           spatial_merge_size=2, temporal_patch_size=2, out_hidden_size=32, window_size=56,
                           fullatt_block_indexes=[0]),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"])
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(cfg).eval()
    with torch.no_grad():  # a trained LM head has large weights; with the 0.02 init every answer is near uniform
        model.lm_head.weight.mul_(25.0)
    model.generation_config.eos_token_id = ids["<|im_end|>"]
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    model.save_pretrained(str(out_dir))
    processor.save_pretrained(str(out_dir))
    return out_dir


def _images(seed=0):
    rng = np.random.default_rng(seed)
    q = rng.integers(0, 255, (90, 120, 3), dtype=np.uint8)
    r = rng.integers(0, 255, (100, 100, 3), dtype=np.uint8)
    return q, r


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return make_tiny_qwen25vl(tmp_path_factory.mktemp("tiny_qwen25vl"))


@pytest.fixture(scope="module")
def tiny(tiny_dir):
    return M.MLLMExplainer(tiny_dir, max_new_tokens=12)


# ----------------------------------------------------------------------------------------------- parsing


@pytest.mark.parametrize("answer, verdict, explicit, flag", [
    ("Roads agree.\nVerdict: match", VERDICT_MATCH, True, None),
    ("Roads agree. **Verdict:** no match.", VERDICT_NO_MATCH, True, None),
    ("verdict: NOT a match", VERDICT_NO_MATCH, True, None),
    ("道路一致。\n结论：匹配", VERDICT_MATCH, True, None),
    ("道路不一致。结论：不匹配。", VERDICT_NO_MATCH, True, None),
    ("Verdict: match ... on reflection, Verdict: no match", VERDICT_NO_MATCH, True, "multiple_verdicts"),
    ("The two images do not show the same place.", VERDICT_NO_MATCH, False, "verdict_inferred"),
    ("Taken together, the model gives 97.0%, so they match.", VERDICT_MATCH, False, "verdict_inferred"),
    ("两幅图像不是同一地点。", VERDICT_NO_MATCH, False, "verdict_inferred"),
    ("A field, a road and some trees.", None, False, "verdict_missing"),
    ("", None, False, "empty_answer"),
    ("Verdict: mat", None, False, "verdict_missing"),
])
def test_parse_answer(answer, verdict, explicit, flag):
    p = M.parse_answer(answer)
    assert p.verdict == verdict and p.explicit == explicit
    if flag:
        assert flag in p.flags
    if explicit:
        assert "verdict" not in p.body.lower().split("on reflection")[-1] and "结论" not in p.body


def test_prompt_is_gleam_x_format_with_two_images(tiny):
    for lang in ("en", "zh"):
        prompt = M.build_prompt(tiny.processor, "uav", lang)
        assert prompt.count("<|image_pad|>") == 2 and prompt.index("<|image_pad|>") < prompt.index(M.instruction("uav", lang))
        assert prompt.rstrip().endswith("<|im_start|>assistant")
    assert "landmarks, road layout and land use" in M.instruction("map", "en") and "street map" in M.instruction("map", "en")
    assert "地标、道路布局和土地利用" in M.instruction("panorama", "zh")


# ------------------------------------------------------------------------------------- the real model path


def test_tiny_model_runs_processor_generate_parse(tiny):
    q, r = _images()
    assert isinstance(tiny, Explainer)
    for lang in ("en", "zh"):
        exp = tiny.explain(q, r, ExplainContext(tile_id="r0001_c0002", query_stamp=5.0), language=lang)
        assert exp.backend.startswith("mllm:") and exp.language == lang
        assert exp.tile_id == "r0001_c0002" and exp.query_stamp == 5.0
        assert exp.text == exp.raw_answer and isinstance(exp.text, str)
        assert 0.0 <= exp.p_match <= 1.0 and 0.0 <= exp.confidence <= 1.0
        # a random model does not end with a verdict line: "no match", low confidence, flagged
        assert exp.verdict == VERDICT_NO_MATCH and "verdict_missing" in exp.flags and exp.confidence <= 0.5
        assert exp.evidence == [] and math.isnan(exp.faithfulness)
        assert exp.evidence_image.dtype == np.uint8 and exp.evidence_image.shape[2] == 3
        json.dumps(exp.to_dict(), ensure_ascii=False)


def test_answer_parsed_into_schema_and_checked_against_evidence(tiny, monkeypatch):
    """A canned answer through the same explain(): verdict, scored confidence, evidence check of every sentence."""
    rng = np.random.default_rng(1)
    img = cv2_texture(rng)
    q, r = img[20:220, 30:290].copy(), img.copy()
    checker = EvidenceExplainer(model=rule_model())
    ev = checker.explain(q, r)
    backed = ev.evidence[0].description
    answer = f"{backed} A church with a red roof stands at the crossing.\nVerdict: match"
    monkeypatch.setattr(tiny, "generate", lambda *a, **k: (answer, False, _enc(tiny, q, r)))
    mx = M.MLLMExplainer.__new__(M.MLLMExplainer)
    mx.__dict__.update(tiny.__dict__)
    mx.checker = checker
    exp = mx.explain(q, r)
    assert exp.verdict == VERDICT_MATCH and "verdict_missing" not in exp.flags
    assert exp.confidence == pytest.approx(exp.p_match)  # confidence of "match" = the scored p(match)
    assert [s.item_id is not None for s in exp.sentences] == [True, False, True]
    assert exp.sentences[0].item_id == ev.evidence[0].id and exp.sentences[2].item_id is not None  # verdict tag backed
    assert exp.faithfulness == pytest.approx(2 / 3) and "unsupported_sentences:1" in exp.flags
    assert exp.evidence[-1].kind == "match_probability" and exp.evidence[-1].supports_match  # the evidence agrees
    assert "disagrees_with_evidence" not in exp.flags


def cv2_texture(rng):
    import cv2

    img = np.full((260, 320, 3), 120, np.uint8)
    for _ in range(260):
        c = tuple(int(x) for x in rng.integers(0, 256, 3))
        x, y = (int(v) for v in rng.integers(0, 320, 2))
        cv2.circle(img, (x, y % 260), int(rng.integers(3, 14)), c, -1)
    return img


def _enc(tiny, q, r):
    prompt = M.build_prompt(tiny.processor, "uav", "en")
    return tiny._inputs(M.encode_example(tiny.processor, q, r, prompt))


def test_verdict_scoring_is_a_probability(tiny):
    q, r = _images(2)
    enc = _enc(tiny, q, r)
    p1 = tiny.score_verdicts(enc, "Roads agree.", "en")
    p2 = tiny.score_verdicts(enc, "", "zh")
    assert 0.0 < p1 < 1.0 and 0.0 < p2 < 1.0


def test_local_only_and_option_errors(tmp_path, tiny_dir):
    with pytest.raises(ModelError, match="not found"):
        M.MLLMExplainer(tmp_path / "missing")
    with pytest.raises(ModelError, match="config.json"):
        M.MLLMExplainer(tmp_path)
    with pytest.raises(ConfigError, match="bitsandbytes"):
        M.MLLMExplainer(tiny_dir, quantization="4bit")
    with pytest.raises(ConfigError, match="quantization"):
        M.quantization_config("2bit")
    with pytest.raises(ConfigError, match="dtype"):
        M.MLLMExplainer(tiny_dir, dtype="float8")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA"):
            M.MLLMExplainer(tiny_dir, device="cuda")


# ------------------------------------------------------------------------------------------- LoRA


def test_lora_loss_decreases_and_adapter_saves_and_reloads(tiny_dir, tmp_path):
    import cv2

    from training.gleam_x.lora import LoraSpec, train_lora
    from training.gleam_x.records import Record, load_records

    root = tmp_path / "records"
    (root / "images").mkdir(parents=True)
    recs = []
    for i, (label, en, zh) in enumerate([(1, "Roads agree. Verdict: match", "道路一致。结论：匹配"),
                                         (0, "Fields differ. Verdict: no match", "田地不同。结论：不匹配")]):
        q, r = _images(10 + i)
        cv2.imwrite(str(root / f"images/{i}_q.jpg"), q)
        cv2.imwrite(str(root / f"images/{i}_r.jpg"), r)
        recs.append(Record(id=str(i), query=f"images/{i}_q.jpg", reference=f"images/{i}_r.jpg", modality="uav",
                           instruction={lang: M.instruction("uav", lang) for lang in ("en", "zh")},
                           target={"en": en, "zh": zh}, verdict="match" if label else "no match", label=label))
    with open(root / "records.jsonl", "w", encoding="utf-8") as fh:
        for rec in recs:
            fh.write(json.dumps(rec.__dict__, ensure_ascii=False) + "\n")
    recs, root2 = load_records(root)
    out = tmp_path / "adapter"
    # each step accumulates all four examples (2 records x English/Chinese): a deterministic full-batch descent
    info = train_lora(tiny_dir, recs, root2, out, LoraSpec(steps=12, lr=1e-2, dropout=0.0, r=4, alpha=8, grad_accum=4))
    losses = info["losses"]
    assert all(math.isfinite(x) for x in losses)
    assert losses[-1] < 0.8 * losses[0] and np.mean(losses[-3:]) < np.mean(losses[:3]), losses
    assert sum(b < a for a, b in zip(losses, losses[1:])) >= 0.8 * (len(losses) - 1), losses
    assert (out / "adapter_config.json").is_file() and (out / "gleam_x_training.json").is_file()
    assert info["trainable_parameters"] > 0

    # reload: base + saved adapter reproduces the trained model's logits, and differs from the base
    trained = info["model"]
    proc = info["processor"]
    q, r = _images(10)
    batch = M.encode_example(proc, q, r, M.build_prompt(proc, "uav", "en"), "Roads agree.")
    batch.pop("labels")
    with torch.inference_mode():
        want = trained(**batch).logits
    reloaded = M.MLLMExplainer(tiny_dir, adapter_dir=out, max_new_tokens=4)
    base = M.MLLMExplainer(tiny_dir, max_new_tokens=4)
    with torch.inference_mode():
        got = reloaded.model(**batch).logits
        plain = base.model(**batch).logits
    assert torch.allclose(want, got, atol=1e-5)
    assert not torch.allclose(plain, got, atol=1e-3)
    with pytest.raises(ModelError, match="adapter"):
        M.MLLMExplainer(tiny_dir, adapter_dir=tmp_path)
