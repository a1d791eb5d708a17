"""LoRA fine-tuning of a GLEAM-X multimodal LLM on GLEAM-X records (peft; local model directory only).

Each step takes one record in one language (English and Chinese alternate unless ``language`` fixes
one), encodes the GLEAM-X prompt with both images plus the target (:func:`encode_example`: the loss
covers the answer tokens only) and takes an AdamW step on the LoRA weights of the language model's
attention projections (``q_proj``, ``k_proj``, ``v_proj``, ``o_proj``; the vision tower is frozen).
The adapter is saved with ``save_pretrained`` and reloads with
``MLLMExplainer(model_dir, adapter_dir=...)``.

    python -m training.gleam_x.lora --model /models/Qwen2.5-VL-3B-Instruct --records out/records \\
        --out out/adapter --steps 2000 --device cuda --dtype bfloat16
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from gleam_ros.core.errors import ConfigError
from gleam_ros.core.explain.mllm import build_prompt, encode_example, load_mllm

from .records import Record, load_records

TRAINING_INFO = "gleam_x_training.json"


@dataclass(frozen=True)
class LoraSpec:
    """LoRA and optimisation settings."""

    r: int = 8
    alpha: int = 16
    dropout: float = 0.05
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
    lr: float = 2e-4
    weight_decay: float = 0.0
    steps: int = 100
    grad_accum: int = 1
    language: str = "both"  # "both" | "en" | "zh"
    seed: int = 0
    max_grad_norm: float = 1.0

    def __post_init__(self) -> None:
        if self.language not in ("both", "en", "zh"):
            raise ConfigError(f"LoraSpec.language must be 'both', 'en' or 'zh', got {self.language!r}")
        if self.r < 1 or self.steps < 1 or self.grad_accum < 1 or not self.lr > 0:
            raise ConfigError(f"bad LoraSpec: r={self.r}, steps={self.steps}, grad_accum={self.grad_accum}, lr={self.lr}")


def attach_lora(model: Any, spec: LoraSpec) -> Any:
    """Wrap ``model`` with trainable LoRA adapters (peft ``get_peft_model``); everything else frozen."""
    from peft import LoraConfig, get_peft_model

    cfg = LoraConfig(r=spec.r, lora_alpha=spec.alpha, lora_dropout=spec.dropout,
                     target_modules=list(spec.target_modules), bias="none", task_type="CAUSAL_LM")
    return get_peft_model(model, cfg)


def train_lora(model_dir: str | os.PathLike, records: Sequence[Record], root: str | os.PathLike,
               out_dir: str | os.PathLike, spec: LoraSpec | None = None, device: str = "cpu", dtype: str = "auto",
               log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Fine-tune LoRA adapters on ``records`` (images under ``root``) and save them to ``out_dir``.

    Returns ``{"losses": [...], "adapter": out_dir, ...}``; the same summary is written to
    ``out_dir/gleam_x_training.json``.
    """
    import torch

    spec = spec or LoraSpec()
    if not records:
        raise ConfigError("train_lora: no records")
    torch.manual_seed(spec.seed)
    processor, base = load_mllm(model_dir, device=device, dtype=dtype)
    model = attach_lora(base, spec)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=spec.lr, weight_decay=spec.weight_decay)
    langs = ["en", "zh"] if spec.language == "both" else [spec.language]
    cache: dict[str, tuple[Any, Any]] = {}
    prompts = {}
    losses: list[float] = []
    t0 = time.perf_counter()
    for step in range(spec.steps):
        opt.zero_grad(set_to_none=True)
        total = 0.0
        for k in range(spec.grad_accum):
            i = step * spec.grad_accum + k
            rec = records[i % len(records)]
            lang = langs[(i // len(records)) % len(langs)] if len(langs) > 1 else langs[0]
            if rec.id not in cache:
                cache[rec.id] = rec.images(root)
            key = (rec.modality, lang)
            if key not in prompts:
                prompts[key] = build_prompt(processor, rec.modality, lang)
            q, r = cache[rec.id]
            batch = encode_example(processor, q, r, prompts[key], rec.target[lang])
            dt = next(p for p in model.parameters()).dtype
            batch = {kk: (v.to(device).to(dt) if kk == "pixel_values" else v.to(device)) if hasattr(v, "to") else v
                     for kk, v in batch.items()}
            loss = model(**batch).loss / spec.grad_accum
            loss.backward()
            total += float(loss.detach())
        if spec.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(params, spec.max_grad_norm)
        opt.step()
        losses.append(total)
        if log is not None and (step + 1) % max(1, spec.steps // 20) == 0:
            log(f"step {step + 1}/{spec.steps} loss {total:.4f} ({time.perf_counter() - t0:.0f} s)")
    model.eval()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out))
    info = {"adapter": str(out), "base_model": str(model_dir), "spec": asdict(spec), "losses": losses,
            "records": len(records), "seconds": time.perf_counter() - t0,
            "trainable_parameters": int(sum(p.numel() for p in params))}
    (out / TRAINING_INFO).write_text(json.dumps(info, indent=1), encoding="utf-8")
    info["model"] = model
    info["processor"] = processor
    return info


def main(argv: list[str] | None = None) -> int:
    """Command line: fine-tune on a records folder."""
    ap = argparse.ArgumentParser(prog="python -m training.gleam_x.lora", description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="local model directory (e.g. Qwen2.5-VL-3B-Instruct)")
    ap.add_argument("--records", required=True, help="records folder from training.gleam_x.records")
    ap.add_argument("--out", required=True, help="adapter output directory")
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--r", type=int, default=8)
    ap.add_argument("--grad-accum", type=int, default=1)
    ap.add_argument("--language", default="both", choices=("both", "en", "zh"))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="auto")
    a = ap.parse_args(argv)
    recs, root = load_records(a.records)
    spec = LoraSpec(r=a.r, alpha=2 * a.r, lr=a.lr, steps=a.steps, grad_accum=a.grad_accum, language=a.language)
    info = train_lora(a.model, recs, root, a.out, spec, device=a.device, dtype=a.dtype,
                      log=lambda s: print(s, file=sys.stderr, flush=True))
    first, last = info["losses"][:5], info["losses"][-5:]
    print(json.dumps({"adapter": info["adapter"], "first_losses": first, "last_losses": last,
                      "mean_first": sum(first) / len(first), "mean_last": sum(last) / len(last),
                      "finite": all(math.isfinite(x) for x in info["losses"])}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
