"""The MLLM backend of GLEAM-X: a Qwen2.5-VL-style multimodal LLM through transformers, parsed into the schema.

The model (e.g. a GLEAM-X fine-tune of Qwen2.5-VL-3B-Instruct, or any image-text-to-text model
whose processor takes two images and has a chat template) is loaded **only** from a local directory
(``local_files_only=True``; nothing is ever downloaded), optionally with a LoRA adapter directory
(peft) and 4/8-bit quantisation (bitsandbytes, when importable).

Prompt (GLEAM-X format): one user turn with the query image, the satellite image and an instruction
(:data:`INSTRUCTIONS`, English or Chinese) asking to compare landmarks, road layout and land use and
to end with ``Verdict: match`` / ``Verdict: no match`` (``结论：匹配`` / ``结论：不匹配``).

The answer is parsed by :func:`parse_answer`, robust to malformed output: an explicit verdict tag
wins; else a closing phrase ("so they do not match", "不是同一地点", ...) is used and flagged
``verdict_inferred``; with neither the verdict is "no match" with confidence at most 0.5 and the flag
``verdict_missing``. The confidence is measured, not asked for: both verdict lines are scored by the
model (teacher forcing after its own answer) and normalised. Free text can name landmarks that are
not there: with an evidence ``checker`` (:class:`~.evidence.EvidenceExplainer`) every sentence is
checked against measurements (:func:`~.text.sentence_source`), ``faithfulness`` is the backed share
and unbacked sentences are flagged.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, InputError, ModelError
from . import text as T
from .schema import (
    VERDICT_MATCH,
    VERDICT_NO_MATCH,
    ExplainContext,
    Explanation,
    Sentence,
    check_language,
    check_rgb,
)

LOG = logging.getLogger(__name__)

QUERY_DESCRIPTIONS = {
    "uav": ("drone (UAV) image", "无人机航拍图像"),
    "ground": ("ground-level photo", "地面照片"),
    "panorama": ("street-view panorama", "街景全景图"),
    "map": ("street map", "街道地图"),
}

INSTRUCTIONS = {
    "en": ("The first image is a {query}; the second is a satellite image. Do they show the same place? "
           "Compare their landmarks, road layout and land use, and state only what you can see. "
           "End with one line: 'Verdict: match' or 'Verdict: no match'."),
    "zh": ("第一幅图像是{query}，第二幅是卫星图像。它们是否显示同一地点？请比较两者的地标、道路布局和土地利用，"
           "只陈述能看到的内容。最后单独一行写出“结论：匹配”或“结论：不匹配”。"),
}

VERDICT_LINES = {
    "en": {VERDICT_MATCH: "Verdict: match", VERDICT_NO_MATCH: "Verdict: no match"},
    "zh": {VERDICT_MATCH: "结论：匹配", VERDICT_NO_MATCH: "结论：不匹配"},
}

# The Qwen2-VL / Qwen2.5-VL chat template (images as <|vision_start|><|image_pad|><|vision_end|>), used
# when a processor comes without one.
QWEN_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}{% if content['type'] == 'image' %}"
    "<|vision_start|><|image_pad|><|vision_end|>{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}"
    "{% endfor %}<|im_end|>\n{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

QUANTIZATIONS = (None, "4bit", "8bit")
DTYPES = ("auto", "float32", "bfloat16", "float16")

# ------------------------------------------------------------------------------------------ answer parsing

_TAG_EN = re.compile(
    r"verdict\s*[:：]\s*[*_\"'“`]*\s*(no[\s_-]*match|not\s+(?:a\s+)?match|mismatch|different\s+places?|match|"
    r"same\s+place|yes|no)\b", re.IGNORECASE)
_TAG_ZH = re.compile(r"(?:结论|判定|答案)\s*[:：]\s*[*“\"]*\s*(不匹配|不是同一地点|不同地点|匹配|是同一地点|同一地点|是|否)")
_NEG_WORDS = ("no", "not", "mismatch", "different", "不", "否")
_CLOSING = [
    (re.compile(r"\bso they (?:do not|don't) match\b", re.IGNORECASE), VERDICT_NO_MATCH),
    (re.compile(r"\b(?:do not|don't|does not|doesn't|not) (?:show|depict) the same (?:place|location|area)\b",
                re.IGNORECASE), VERDICT_NO_MATCH),
    (re.compile(r"\bso they match\b", re.IGNORECASE), VERDICT_MATCH),
    (re.compile(r"\b(?:show|depict) the same (?:place|location|area)\b", re.IGNORECASE), VERDICT_MATCH),
    (re.compile(r"两者不匹配|不是同一(?:地点|位置|地方)|并非同一(?:地点|位置|地方)"), VERDICT_NO_MATCH),
    (re.compile(r"两者匹配|是同一(?:地点|位置|地方)"), VERDICT_MATCH),
]


@dataclass(frozen=True)
class ParsedAnswer:
    """An MLLM answer taken apart: ``verdict`` (None when absent), whether it was an explicit tag,
    ``body`` (the answer without the verdict tag) and ``flags``."""

    verdict: int | None
    explicit: bool
    body: str
    flags: tuple[str, ...]


def parse_answer(answer: str) -> ParsedAnswer:
    """Find the verdict of a free-text answer (English or Chinese); see the module docstring for the rules."""
    if not isinstance(answer, str):
        raise InputError(f"answer must be a string, got {type(answer).__name__}")
    text = answer.strip()
    if not text:
        return ParsedAnswer(None, False, "", ("empty_answer", "verdict_missing"))
    tags = [(m.start(), m.end(), m.group(1)) for rx in (_TAG_EN, _TAG_ZH) for m in rx.finditer(text)]
    if tags:
        start, end, word = max(tags)
        w = word.lower()
        neg = any(w.startswith(n) for n in _NEG_WORDS) or "不" in w or w == "否"
        body = (text[:start] + text[end:]).strip()
        flags = ("multiple_verdicts",) if len({_tag_polarity(t[2]) for t in tags}) > 1 else ()
        return ParsedAnswer(VERDICT_NO_MATCH if neg else VERDICT_MATCH, True, body, flags)
    found = [(m.end(), v == VERDICT_NO_MATCH, v) for rx, v in _CLOSING for m in rx.finditer(text)]
    if found:
        # the last statement wins; of two ending together ("not show the same place" / "show the same place")
        # the negative one, which contains the other
        return ParsedAnswer(max(found)[2], False, text, ("verdict_inferred",))
    return ParsedAnswer(None, False, text, ("verdict_missing",))


def _tag_polarity(word: str) -> bool:
    w = word.lower()
    return not (any(w.startswith(n) for n in _NEG_WORDS) or "不" in w or w == "否")


# --------------------------------------------------------------------------------------------- prompts


def instruction(modality: str = "uav", language: str = "en") -> str:
    """The GLEAM-X instruction for a query of ``modality`` in ``language``."""
    check_language(language)
    if modality not in QUERY_DESCRIPTIONS:
        raise InputError(f"modality must be one of {tuple(QUERY_DESCRIPTIONS)}, got {modality!r}")
    en, zh = QUERY_DESCRIPTIONS[modality]
    return INSTRUCTIONS[language].format(query=en if language == "en" else zh)


def build_messages(modality: str = "uav", language: str = "en") -> list[dict[str, Any]]:
    """Chat messages of one GLEAM-X request: one user turn with two images and the instruction."""
    return [{"role": "user", "content": [{"type": "image"}, {"type": "image"},
                                         {"type": "text", "text": instruction(modality, language)}]}]


def build_prompt(processor: Any, modality: str = "uav", language: str = "en") -> str:
    """The prompt string (chat template applied, generation prompt added) for ``processor``."""
    msgs = build_messages(modality, language)
    template = getattr(processor, "chat_template", None) or QWEN_CHAT_TEMPLATE
    return processor.apply_chat_template(msgs, chat_template=template, tokenize=False, add_generation_prompt=True)


def encode_example(processor: Any, query: np.ndarray, reference: np.ndarray, prompt: str, target: str | None = None,
                   end_token: str = "<|im_end|>") -> dict[str, Any]:
    """Model inputs for one (query, reference, prompt[, target]) example as batch-of-one tensors.

    With ``target`` the target tokens (plus ``end_token``) are appended to the prompt's and ``labels``
    are added: -100 over the prompt (images included), the token ids over the target, so a
    language-modelling loss trains only the answer. Prompt and target are tokenised separately, so the
    boundary is exact.
    """
    import torch

    enc = processor(text=[prompt], images=[query, reference], return_tensors="pt")
    out = dict(enc)
    if target is None:
        return out
    tok = processor.tokenizer
    end = end_token if end_token in tok.get_vocab() else (tok.eos_token or "")
    ids = tok(target + end, add_special_tokens=False, return_tensors="pt")["input_ids"]
    n = ids.shape[1]
    out["input_ids"] = torch.cat([enc["input_ids"], ids], dim=1)
    out["attention_mask"] = torch.cat([enc["attention_mask"], torch.ones((1, n), dtype=enc["attention_mask"].dtype)], 1)
    for k in ("mm_token_type_ids", "token_type_ids"):
        if k in enc:
            out[k] = torch.cat([enc[k], torch.zeros((1, n), dtype=enc[k].dtype)], dim=1)
    labels = torch.full_like(out["input_ids"], -100)
    labels[:, -n:] = ids
    out["labels"] = labels
    return out


# ---------------------------------------------------------------------------------------------- loading


def _torch_dtype(dtype: str, device: str):
    import torch

    if dtype not in DTYPES:
        raise ConfigError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    if dtype == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    return getattr(torch, dtype)


def _check_device(device: str) -> str:
    import torch

    try:
        d = torch.device(device)
    except (RuntimeError, TypeError):
        raise ConfigError(f"device {device!r} not understood (use 'cpu', 'cuda' or 'cuda:N')") from None
    if d.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} requested but CUDA is not available to torch")
    if d.type not in ("cpu", "cuda"):
        raise ConfigError(f"device {device!r} not supported (use 'cpu', 'cuda' or 'cuda:N')")
    return str(d)


def quantization_config(quantization: str | None, dtype: Any = None) -> Any:
    """A transformers ``BitsAndBytesConfig`` for "4bit" / "8bit" (None for None).

    Raises :class:`ConfigError` with a clear message when bitsandbytes is not importable.
    """
    if quantization not in QUANTIZATIONS:
        raise ConfigError(f"quantization must be one of {QUANTIZATIONS}, got {quantization!r}")
    if quantization is None:
        return None
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ConfigError(
            f"quantization={quantization!r} needs the 'bitsandbytes' package (and a CUDA GPU), which is not "
            "importable here; install it (pip install bitsandbytes) or load the model without quantization"
        )
    from transformers import BitsAndBytesConfig

    if quantization == "4bit":
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=dtype)
    return BitsAndBytesConfig(load_in_8bit=True)


def check_model_dir(model_dir: str | os.PathLike) -> Path:
    """``model_dir`` as a Path if it is a local directory holding a ``config.json``, else :class:`ModelError`."""
    p = Path(model_dir).expanduser()
    if not p.is_dir():
        raise ModelError(f"{p}: MLLM model directory not found (models are loaded from local directories only)")
    if not (p / "config.json").is_file():
        raise ModelError(f"{p}: not a transformers model directory (no config.json)")
    return p


def load_mllm(model_dir: str | os.PathLike, device: str = "cpu", dtype: str = "auto", quantization: str | None = None,
              adapter_dir: str | os.PathLike | None = None) -> tuple[Any, Any]:
    """(processor, model) from local directories only; the model in eval mode on ``device``."""
    from .._torchvision_compat import ensure_torchvision

    ensure_torchvision()  # transformers' image utilities import torchvision
    path = check_model_dir(model_dir)
    device = _check_device(device)
    tdtype = _torch_dtype(dtype, device)
    qcfg = quantization_config(quantization, tdtype)
    from transformers import AutoModelForImageTextToText, AutoProcessor

    try:
        processor = AutoProcessor.from_pretrained(str(path), local_files_only=True)
        kwargs: dict[str, Any] = {"local_files_only": True, "dtype": tdtype}
        if qcfg is not None:
            kwargs.update(quantization_config=qcfg, device_map={"": device})
        model = AutoModelForImageTextToText.from_pretrained(str(path), **kwargs)
    except (OSError, ValueError, KeyError) as exc:
        raise ModelError(f"{path}: cannot load the MLLM: {str(exc).splitlines()[0]}") from None
    if adapter_dir is not None:
        from peft import PeftModel

        apath = Path(adapter_dir)
        if not (apath / "adapter_config.json").is_file():
            raise ModelError(f"{apath}: not a LoRA adapter directory (no adapter_config.json)")
        model = PeftModel.from_pretrained(model, str(apath), is_trainable=False)
    if qcfg is None:
        model = model.to(device)
    return processor, model.eval()


# --------------------------------------------------------------------------------------------- explainer


class MLLMExplainer:
    """GLEAM-X through a local multimodal LLM; returns the same :class:`Explanation` as the evidence backend.

    Args:
        model_dir: local directory of the model (config, weights, processor files).
        device / dtype: "cpu" / "cuda[:N]" and "auto" / "float32" / "bfloat16" / "float16".
        quantization: None, "4bit" or "8bit" (needs bitsandbytes).
        adapter_dir: optional LoRA adapter directory (from :mod:`training.gleam_x.lora`).
        max_new_tokens: answer length limit.
        score_verdict: measure the confidence by scoring both verdict lines (one extra forward pass each).
        checker: optional :class:`~.evidence.EvidenceExplainer` whose measurements the answer is checked
            against (evidence items, faithfulness, flags).
        name: the ``backend`` string (default ``mllm:<directory name>``).
    """

    def __init__(self, model_dir: str | os.PathLike, device: str = "cpu", dtype: str = "auto",
                 quantization: str | None = None, adapter_dir: str | os.PathLike | None = None,
                 max_new_tokens: int = 256, score_verdict: bool = True, checker: Any = None,
                 name: str | None = None) -> None:
        if int(max_new_tokens) < 1:
            raise ConfigError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        self.processor, self.model = load_mllm(model_dir, device, dtype, quantization, adapter_dir)
        self.device = _check_device(device)
        self.max_new_tokens = int(max_new_tokens)
        self.score_verdict = bool(score_verdict)
        self.checker = checker
        self.name = name or f"mllm:{Path(model_dir).name}"

    def _inputs(self, enc: dict[str, Any]) -> dict[str, Any]:
        import torch

        dt = next(self.model.parameters()).dtype
        out = {}
        for k, v in enc.items():
            if isinstance(v, torch.Tensor):
                v = v.to(self.device)
                if k == "pixel_values" and v.is_floating_point():
                    v = v.to(dt)
            out[k] = v
        return out

    def generate(self, query: np.ndarray, reference: np.ndarray, modality: str = "uav",
                 language: str = "en") -> tuple[str, bool, dict[str, Any]]:
        """(answer text, whether it was cut at ``max_new_tokens``, the prompt's model inputs)."""
        import torch

        prompt = build_prompt(self.processor, modality, language)
        enc = self._inputs(encode_example(self.processor, query, reference, prompt))
        tok = self.processor.tokenizer
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        with torch.inference_mode():
            out = self.model.generate(**enc, max_new_tokens=self.max_new_tokens, do_sample=False, pad_token_id=pad)
        new = out[0, enc["input_ids"].shape[1]:]
        eos = self.model.generation_config.eos_token_id
        eos = set(eos if isinstance(eos, (list, tuple)) else [eos]) - {None}
        truncated = len(new) >= self.max_new_tokens and not any(int(t) in eos for t in new)
        answer = tok.decode(new, skip_special_tokens=True).strip()
        return answer, truncated, enc

    def score_verdicts(self, enc: dict[str, Any], body: str, language: str) -> float:
        """Probability of "match" from the model's own scores of both verdict lines after ``body``."""
        import torch

        tok = self.processor.tokenizer
        prefix = (body.strip() + "\n") if body.strip() else ""
        pre_ids = tok(prefix, add_special_tokens=False, return_tensors="pt")["input_ids"].to(self.device)
        logps = []
        for v in (VERDICT_MATCH, VERDICT_NO_MATCH):
            cand = tok(VERDICT_LINES[language][v], add_special_tokens=False, return_tensors="pt")["input_ids"]
            cand = cand.to(self.device)
            ids = torch.cat([enc["input_ids"], pre_ids, cand], dim=1)
            extra = ids.shape[1] - enc["input_ids"].shape[1]
            feed = dict(enc)
            feed["input_ids"] = ids
            feed["attention_mask"] = torch.ones_like(ids)
            for k in ("mm_token_type_ids", "token_type_ids"):
                if k in enc:
                    feed[k] = torch.cat([enc[k], torch.zeros((1, extra), dtype=enc[k].dtype, device=ids.device)], 1)
            with torch.inference_mode():
                logits = self.model(**feed).logits[0].float()
            n = cand.shape[1]
            lp = torch.log_softmax(logits[-n - 1:-1], dim=-1).gather(1, cand[0][:, None]).sum()
            logps.append(float(lp))
        m = max(logps)
        e = [math.exp(x - m) for x in logps]
        return e[0] / (e[0] + e[1])

    def explain(self, query_rgb: np.ndarray, reference_rgb: np.ndarray, context: ExplainContext | None = None,
                language: str = "en") -> Explanation:
        """Ask the model, parse its answer into an :class:`Explanation` (see the module docstring)."""
        check_language(language)
        q = check_rgb(query_rgb, "query image")
        r = check_rgb(reference_rgb, "reference image")
        ctx = context or ExplainContext()
        answer, truncated, enc = self.generate(q, r, ctx.modality, language)
        parsed = parse_answer(answer)
        flags = list(parsed.flags) + (["truncated"] if truncated else [])
        p_match = self.score_verdicts(enc, parsed.body, language) if self.score_verdict else math.nan
        if parsed.verdict is None:
            verdict = VERDICT_NO_MATCH
            conf = min(0.5, 1.0 - p_match) if math.isfinite(p_match) else 0.5
        else:
            verdict = parsed.verdict
            if math.isfinite(p_match):
                conf = p_match if verdict == VERDICT_MATCH else 1.0 - p_match
                if conf < 0.5:
                    flags.append("verdict_unsure")
            else:
                conf = 0.5
                flags.append("confidence_unscored")
        exp = Explanation(verdict=verdict, confidence=float(conf), language=language, text=answer, evidence=[],
                          tile_id=ctx.reference_id, query_stamp=ctx.query_stamp, backend=self.name,
                          p_match=float(p_match), flags=flags, raw_answer=answer)
        pts = (None, None)
        if self.checker is not None:
            m = self.checker.measure(q, r, ctx)
            ev = self.checker.explain_measurements(m, language, ctx)
            exp.evidence = ev.evidence  # the measurements, ending with the evidence backend's own verdict
            if ev.verdict != verdict:
                flags.append("disagrees_with_evidence")
            if len(m.pts_query):
                pts = (m.pts_query, m.pts_reference)
        sents = T.split_sentences(answer, language)
        exp.sentences = [Sentence(s, T.sentence_source(s, exp.evidence, language)) for s in sents]
        if self.checker is not None:
            backed = sum(s.item_id is not None for s in exp.sentences)
            exp.faithfulness = backed / len(sents) if sents else math.nan
            if sents and backed < len(sents):
                flags.append(f"unsupported_sentences:{len(sents) - backed}")
        from .draw import draw_evidence

        exp.evidence_image = draw_evidence(q, r, exp, *pts)
        return exp

