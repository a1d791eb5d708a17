"""Sentences of the evidence backend: one template per (evidence kind, variant, language), and the way back.

Every sentence of an evidence-backend explanation is rendered from exactly one
:class:`~.schema.EvidenceItem` with one template of :data:`TEMPLATES`; its numbers are the item's
``value`` and ``details`` formatted with the template's format specs (the item stores them rounded
to that precision). Each template compiles to a regular expression, so any sentence can be parsed
back to (kind, variant, numbers) by :func:`parse_sentence`; :func:`sentence_source` finds the item a
sentence was generated from and :func:`faithfulness` is the share of sentences of a text that some
evidence item backs. The same check scores free text (e.g. an MLLM's answer) against measured
evidence: a sentence naming something that was not measured is not backed.

Numbers are printed with Arabic digits in both languages; a variant fixes whether the sentence
speaks for (True) or against (False) a match.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass
from typing import Iterable

from .schema import EvidenceItem, check_language

_NUM = r"-?\d+(?:\.\d+)?"

# Land-cover classes: (kind suffix, English subject with verb, Chinese subject).
LAND_COVER = (
    ("vegetation", "Vegetation covers", "植被"),
    ("water", "Open water covers", "水面"),
    ("built_up", "Built-up surfaces (roads, roofs, pavement) cover", "建成区地表（道路、屋顶、铺装）"),
)

# kind -> variant -> (supports_match, {language: template}). Fields are {name:format-spec}; "value" is the
# item's value, every other field one of its details.
TEMPLATES: dict[str, dict[str, tuple[bool, dict[str, str]]]] = {
    "embedding_similarity": {
        "for": (True, {
            "en": "The learned image encoder sees the two views as alike (cosine similarity {value:.3f}).",
            "zh": "学习到的图像编码器认为两幅图像外观相近（余弦相似度 {value:.3f}）。",
        }),
        "against": (False, {
            "en": "The learned image encoder sees the two views as different (cosine similarity {value:.3f}).",
            "zh": "学习到的图像编码器认为两幅图像外观不同（余弦相似度 {value:.3f}）。",
        }),
    },
    "embedding_margin": {
        "for": (True, {
            "en": "Retrieval clearly prefers this reference: it beats the best tile of another place "
                  "(similarity {next_best:.3f}) by {value:.3f}.",
            "zh": "检索明显偏向该参考图像：它比其他地点的最佳瓦片（相似度 {next_best:.3f}）高出 {value:.3f}。",
        }),
        "against": (False, {
            "en": "Retrieval does not single this reference out: the best tile of another place reaches a "
                  "similarity of {next_best:.3f}, a margin of only {value:.3f}.",
            "zh": "检索并未突出该参考图像：其他地点的最佳瓦片相似度达 {next_best:.3f}，差值仅为 {value:.3f}。",
        }),
    },
    "feature_inliers": {
        "for": (True, {
            "en": "Of {matches:.0f} local feature matches, {value:.0f} agree on one geometric transformation "
                  "({ratio:.1f}%), with a reprojection error of {rms:.1f} px.",
            "zh": "在 {matches:.0f} 个局部特征匹配中，有 {value:.0f} 个符合同一几何变换（{ratio:.1f}%），"
                  "重投影误差为 {rms:.1f} 像素。",
        }),
        "against": (False, {
            "en": "Of {matches:.0f} local feature matches, only {value:.0f} agree on one geometric transformation "
                  "({ratio:.1f}%), too few to tie the images together.",
            "zh": "在 {matches:.0f} 个局部特征匹配中，仅有 {value:.0f} 个符合同一几何变换（{ratio:.1f}%），"
                  "不足以将两幅图像对应起来。",
        }),
        "none": (False, {
            "en": "The local features of the two images agree on no geometric transformation "
                  "({matches:.0f} tentative matches).",
            "zh": "两幅图像的局部特征不符合任何几何变换（仅有 {matches:.0f} 个候选匹配）。",
        }),
    },
    "inlier_spread": {
        "for": (True, {
            "en": "The agreeing features are spread over the query image, covering {value:.1f}% of it and "
                  "{cells:.0f} of its {total:.0f} regions.",
            "zh": "一致的特征分布在查询图像各处，覆盖其 {value:.1f}% 的面积以及 {total:.0f} 个区域中的 {cells:.0f} 个。",
        }),
        "against": (False, {
            "en": "The agreeing features cover only {value:.1f}% of the query image and {cells:.0f} of its "
                  "{total:.0f} regions, too little to vouch for the whole view.",
            "zh": "一致的特征仅覆盖查询图像 {value:.1f}% 的面积以及 {total:.0f} 个区域中的 {cells:.0f} 个，不足以代表整幅图像。",
        }),
    },
    "altitude": {
        "prior_for": (True, {
            "en": "The fitted scale implies a camera height of {value:.1f} m, consistent with the altitude prior "
                  "of {prior:.1f} m.",
            "zh": "拟合的尺度对应 {value:.1f} 米的相机高度，与 {prior:.1f} 米的高度先验一致。",
        }),
        "prior_against": (False, {
            "en": "The fitted scale implies a camera height of {value:.1f} m, which contradicts the altitude prior "
                  "of {prior:.1f} m.",
            "zh": "拟合的尺度对应 {value:.1f} 米的相机高度，与 {prior:.1f} 米的高度先验矛盾。",
        }),
        "noprior_for": (True, {
            "en": "The fitted scale implies a plausible camera height of {value:.1f} m; no altitude prior was "
                  "given to check it.",
            "zh": "拟合的尺度对应 {value:.1f} 米的合理相机高度；没有高度先验可供核对。",
        }),
        "noprior_against": (False, {
            "en": "The fitted scale implies an implausible camera height of {value:.1f} m.",
            "zh": "拟合的尺度对应 {value:.1f} 米的相机高度，这并不合理。",
        }),
    },
    "scale": {
        "for": (True, {
            "en": "The fitted transformation maps one query pixel onto {value:.2f} reference pixels with an "
                  "anisotropy of {aniso:.2f}, as a near-nadir view would.",
            "zh": "拟合的变换把一个查询像素映射为 {value:.2f} 个参考像素，各向异性为 {aniso:.2f}，符合近似垂直下视的图像。",
        }),
        "against": (False, {
            "en": "The fitted transformation maps one query pixel onto {value:.2f} reference pixels with an "
                  "anisotropy of {aniso:.2f}, which no near-nadir view produces.",
            "zh": "拟合的变换把一个查询像素映射为 {value:.2f} 个参考像素，各向异性为 {aniso:.2f}，近似垂直下视的图像不会如此。",
        }),
    },
    "rotation": {
        "prior_for": (True, {
            "en": "The matched features put the top of the query image at {value:.1f}° clockwise from the "
                  "reference's north, within {diff:.1f}° of the heading prior of {prior:.1f}°.",
            "zh": "匹配的特征表明查询图像的上方位于参考图像北向顺时针 {value:.1f}° 处，与 {prior:.1f}° 的航向先验"
                  "仅相差 {diff:.1f}°。",
        }),
        "prior_against": (False, {
            "en": "The matched features put the top of the query image at {value:.1f}° clockwise from the "
                  "reference's north, {diff:.1f}° away from the heading prior of {prior:.1f}°.",
            "zh": "匹配的特征表明查询图像的上方位于参考图像北向顺时针 {value:.1f}° 处，与 {prior:.1f}° 的航向先验"
                  "相差 {diff:.1f}°，两者矛盾。",
        }),
        "noprior_for": (True, {
            "en": "The matched features put the top of the query image at {value:.1f}° clockwise from the "
                  "reference's north; no heading prior was given to check it.",
            "zh": "匹配的特征表明查询图像的上方位于参考图像北向顺时针 {value:.1f}° 处；没有航向先验可供核对。",
        }),
    },
    "edge_orientation": {
        "aligned_for": (True, {
            "en": "After alignment, the edge and road orientations of the two images agree (histogram "
                  "correlation {value:.2f}; dominant directions {dq:.0f}° and {dr:.0f}°).",
            "zh": "对齐后，两幅图像的边缘与道路方向一致（直方图相关系数 {value:.2f}；主方向分别为 {dq:.0f}° 和 {dr:.0f}°）。",
        }),
        "aligned_against": (False, {
            "en": "After alignment, the edge and road orientations of the two images disagree (histogram "
                  "correlation {value:.2f}; dominant directions {dq:.0f}° and {dr:.0f}°).",
            "zh": "对齐后，两幅图像的边缘与道路方向不一致（直方图相关系数 {value:.2f}；主方向分别为 {dq:.0f}° 和 {dr:.0f}°）。",
        }),
        "free_for": (True, {
            "en": "Without a reliable alignment, the edge and road orientation patterns still agree under some "
                  "rotation (best histogram correlation {value:.2f}).",
            "zh": "在没有可靠对齐的情况下，边缘与道路方向模式在某一旋转下仍然一致（最佳直方图相关系数 {value:.2f}）。",
        }),
        "free_against": (False, {
            "en": "Without a reliable alignment, the edge and road orientation patterns agree under no rotation "
                  "(best histogram correlation {value:.2f}).",
            "zh": "在没有可靠对齐的情况下，边缘与道路方向模式在任何旋转下都不一致（最佳直方图相关系数 {value:.2f}）。",
        }),
    },
    "match_probability": {
        "match": (True, {
            "en": "Taken together, the calibrated verdict model gives a {value:.1f}% probability that both images "
                  "show the same place, above the {threshold:.1f}% a match requires, so they match.",
            "zh": "综合以上证据，校准后的判定模型认为两幅图像为同一地点的概率为 {value:.1f}%，高于匹配所需的 "
                  "{threshold:.1f}%，因此两者匹配。",
        }),
        "nomatch": (False, {
            "en": "Taken together, the calibrated verdict model gives a {value:.1f}% probability that both images "
                  "show the same place, below the {threshold:.1f}% a match requires, so they do not match.",
            "zh": "综合以上证据，校准后的判定模型认为两幅图像为同一地点的概率为 {value:.1f}%，低于匹配所需的 "
                  "{threshold:.1f}%，因此两者不匹配。",
        }),
        "veto": (False, {
            "en": "The geometry contradicts a prior, so they do not match, although the calibrated verdict model "
                  "gives a {value:.1f}% probability that both images show the same place.",
            "zh": "几何结果与先验信息矛盾，因此两者不匹配，尽管校准后的判定模型给出的同一地点概率为 {value:.1f}%。",
        }),
        # the same, for a query modality the verdict model was not calibrated on (it says so)
        "match_offcal": (True, {
            "en": "Taken together, the verdict model gives a {value:.1f}% probability that both images show the "
                  "same place, above the {threshold:.1f}% a match requires, so they match; but the model was not "
                  "calibrated on this kind of query, so this probability is less certain.",
            "zh": "综合以上证据，判定模型认为两幅图像为同一地点的概率为 {value:.1f}%，高于匹配所需的 {threshold:.1f}%，"
                  "因此两者匹配；但该模型未针对此类查询图像校准，这一概率的可靠性较低。",
        }),
        "nomatch_offcal": (False, {
            "en": "Taken together, the verdict model gives a {value:.1f}% probability that both images show the "
                  "same place, below the {threshold:.1f}% a match requires, so they do not match; but the model "
                  "was not calibrated on this kind of query, so this probability is less certain.",
            "zh": "综合以上证据，判定模型认为两幅图像为同一地点的概率为 {value:.1f}%，低于匹配所需的 {threshold:.1f}%，"
                  "因此两者不匹配；但该模型未针对此类查询图像校准，这一概率的可靠性较低。",
        }),
        "veto_offcal": (False, {
            "en": "The geometry contradicts a prior, so they do not match, although the verdict model, not "
                  "calibrated on this kind of query, gives a {value:.1f}% probability that both images show "
                  "the same place.",
            "zh": "几何结果与先验信息矛盾，因此两者不匹配，"
                  "尽管未针对此类查询图像校准的判定模型给出的同一地点概率为 {value:.1f}%。",
        }),
        # answer-format tags (GLEAM-X training targets end with one); no numbers
        "tag_match": (True, {"en": "Verdict: match.", "zh": "结论：匹配。"}),
        "tag_nomatch": (False, {"en": "Verdict: no match.", "zh": "结论：不匹配。"}),
    },
}

for _suffix, _en, _zh in LAND_COVER:
    TEMPLATES[f"land_cover_{_suffix}"] = {
        "aligned_for": (True, {
            "en": f"{_en} {{q:.1f}}% of the query and {{r:.1f}}% of the corresponding reference area, a "
                  "difference of only {value:.1f} points.",
            "zh": f"{_zh}占查询图像的 {{q:.1f}}%，占参考图像对应区域的 {{r:.1f}}%，两者相近（相差 {{value:.1f}} 个百分点）。",
        }),
        "aligned_against": (False, {
            "en": f"{_en} {{q:.1f}}% of the query but {{r:.1f}}% of the corresponding reference area, a clear "
                  "difference of {value:.1f} points.",
            "zh": f"{_zh}占查询图像的 {{q:.1f}}%，却占参考图像对应区域的 {{r:.1f}}%，"
                  "两者明显不同（相差 {value:.1f} 个百分点）。",
        }),
        "free_for": (True, {
            "en": f"{_en} {{q:.1f}}% of the query and {{r:.1f}}% of the whole reference image, a difference "
                  "of only {value:.1f} points.",
            "zh": f"{_zh}占查询图像的 {{q:.1f}}%，占整幅参考图像的 {{r:.1f}}%，两者相近（相差 {{value:.1f}} 个百分点）。",
        }),
        "free_against": (False, {
            "en": f"{_en} {{q:.1f}}% of the query but {{r:.1f}}% of the whole reference image, a clear difference "
                  "of {value:.1f} points.",
            "zh": f"{_zh}占查询图像的 {{q:.1f}}%，却占整幅参考图像的 {{r:.1f}}%，两者明显不同（相差 {{value:.1f}} 个百分点）。",
        }),
    }

KINDS = tuple(TEMPLATES)


@dataclass(frozen=True)
class _Compiled:
    kind: str
    variant: str
    supports: bool
    fields: tuple[tuple[str, str], ...]  # (name, format spec) in order of appearance
    regex: re.Pattern


def _fields(template: str) -> list[tuple[str, str]]:
    return [(name, spec or "") for _, name, spec, _ in string.Formatter().parse(template) if name is not None]


def _compile(template: str) -> re.Pattern:
    parts = []
    for literal, name, _spec, _ in string.Formatter().parse(template):
        parts.append(re.escape(literal))
        if name is not None:
            parts.append(f"({_NUM})")
    return re.compile("^" + "".join(parts) + "$")


_COMPILED: dict[str, list[_Compiled]] = {
    lang: [
        _Compiled(kind, variant, supports, tuple(_fields(tpl[lang])), _compile(tpl[lang]))
        for kind, variants in TEMPLATES.items()
        for variant, (supports, tpl) in variants.items()
    ]
    for lang in ("en", "zh")
}


def _spec(kind: str, name: str) -> str:
    """The format spec of field ``name`` of ``kind`` (the same in every variant and language)."""
    for _, (_, tpl) in TEMPLATES[kind].items():
        for fname, spec in _fields(tpl["en"]):
            if fname == name:
                return spec
    raise KeyError(f"{kind} has no field {name!r}")


def fmt(kind: str, name: str, v: float) -> str:
    """``v`` formatted as field ``name`` of ``kind`` is printed in a sentence (``-0.0`` printed as ``0.0``)."""
    s = format(float(v), _spec(kind, name))
    return s[1:] if re.fullmatch(r"-0(\.0+)?", s) else s


def round_field(kind: str, name: str, v: float) -> float:
    """``v`` rounded to the precision field ``name`` of ``kind`` is printed with."""
    return float(fmt(kind, name, v))


def supports(kind: str, variant: str) -> bool:
    """Whether sentences of (kind, variant) speak for a match."""
    return TEMPLATES[kind][variant][0]


def render(item: EvidenceItem, language: str) -> str:
    """The sentence of ``item`` (its ``kind``/``variant`` template) in ``language``."""
    check_language(language)
    tpl = TEMPLATES[item.kind][item.variant][1][language]
    vals = {"value": item.value, **item.details}
    out = []
    for literal, name, _spec, _ in string.Formatter().parse(tpl):
        out.append(literal)
        if name is not None:
            if name not in vals:
                raise KeyError(f"evidence item {item.id} ({item.kind}/{item.variant}) lacks detail {name!r}")
            out.append(fmt(item.kind, name, vals[name]))
    return "".join(out)


@dataclass(frozen=True)
class ParsedSentence:
    """A sentence recognised as an instance of a template: its kind, variant, polarity and numbers (as printed)."""

    kind: str
    variant: str
    supports_match: bool
    numbers: dict[str, str]


def parse_sentence(sentence: str, language: str) -> ParsedSentence | None:
    """Recognise ``sentence`` as one template of :data:`TEMPLATES` (None when it is none of them)."""
    check_language(language)
    s = sentence.strip()
    tries = [s] if s.endswith((".", "。", "!", "?", "！", "？")) else [s, s + ("。" if language == "zh" else ".")]
    for t in tries:  # a sentence may lack its final full stop (the last line of an answer)
        for c in _COMPILED[language]:
            m = c.regex.match(t)
            if m:
                return ParsedSentence(c.kind, c.variant, c.supports, {n: g for (n, _), g in zip(c.fields, m.groups())})
    return None


def sentence_source(sentence: str, items: Iterable[EvidenceItem], language: str) -> str | None:
    """Id of the evidence item that backs ``sentence``, or None.

    Backed means: the sentence is an instance of a template of the item's kind with the item's
    polarity (``supports_match``), and every number in it equals the item's number of that field as
    printed. Which of several items of one kind backs it is decided by the numbers.
    """
    p = parse_sentence(sentence, language)
    if p is None:
        return None
    for it in items:
        if it.kind != p.kind or it.supports_match != p.supports_match:
            continue
        vals = {"value": it.value, **it.details}
        if all(k in vals and fmt(it.kind, k, vals[k]) == v for k, v in p.numbers.items()):
            return it.id
    return None


def split_sentences(text: str, language: str) -> list[str]:
    """Split a text into sentences (English on . ! ? followed by white space, Chinese after 。！？)."""
    check_language(language)
    text = text.strip()
    if not text:
        return []
    if language == "zh":
        parts = re.findall(r"[^。！？!?\n]+[。！？!?]?", text)
    else:
        parts = re.split(r"(?<=[.!?])\s+|\n+", text)
    return [p.strip() for p in parts if p and p.strip()]


def faithfulness(text: str, items: Iterable[EvidenceItem], language: str) -> float:
    """Share of the sentences of ``text`` that an evidence item backs (:func:`sentence_source`); NaN for no sentences."""
    items = list(items)
    sents = split_sentences(text, language)
    if not sents:
        return float("nan")
    return sum(sentence_source(s, items, language) is not None for s in sents) / len(sents)


def join_sentences(sentences: Iterable[str], language: str) -> str:
    """Join sentences into a paragraph (a space between English sentences, none between Chinese ones)."""
    return ("" if language == "zh" else " ").join(sentences)
