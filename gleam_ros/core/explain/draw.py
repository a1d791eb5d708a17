"""The evidence image: query and reference side by side, the agreeing matches and each item's regions.

Drawn with OpenCV only (no fonts needed): labels are ASCII (item ids and kinds), whatever the
language of the text, so the image reads the same next to an English or a Chinese explanation.
Regions of items that speak for a match are green, those against red; match lines are yellow.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from .schema import Explanation
from .text import fmt

GREEN = (40, 190, 60)
RED = (225, 45, 45)
YELLOW = (250, 215, 40)
WHITE = (255, 255, 255)
DARK = (25, 25, 25)
_FONT = cv2.FONT_HERSHEY_SIMPLEX


def _fit(img: np.ndarray, height: int, max_width: int) -> tuple[np.ndarray, float]:
    f = min(height / img.shape[0], max_width / img.shape[1])
    w, h = max(1, round(img.shape[1] * f)), max(1, round(img.shape[0] * f))
    interp = cv2.INTER_AREA if f < 1 else cv2.INTER_LINEAR
    return cv2.resize(img, (w, h), interpolation=interp), f


def _label(canvas: np.ndarray, text: str, org: tuple[int, int], colour, scale: float = 0.45) -> None:
    (tw, th), base = cv2.getTextSize(text, _FONT, scale, 1)
    x, y = org
    cv2.rectangle(canvas, (x, y - th - base), (x + tw + 2, y + 1), DARK, -1)
    cv2.putText(canvas, text, (x + 1, y - base // 2), _FONT, scale, colour, 1, cv2.LINE_AA)


def draw_evidence(query: np.ndarray, reference: np.ndarray, explanation: Explanation,
                  pts_query: np.ndarray | None = None, pts_reference: np.ndarray | None = None,
                  height: int = 480, max_lines: int = 80) -> np.ndarray:
    """Render the evidence image (RGB uint8).

    ``pts_query`` / ``pts_reference`` are matched inlier pixels (N, 2) of the images as given; at most
    ``max_lines`` of them are drawn (evenly sub-sampled, deterministic). Each evidence item's regions are
    drawn as boxes labelled with the item id; the header states the verdict and the probability, the
    footer lists the items (id, kind, value, +/-).
    """
    qi, fq = _fit(np.ascontiguousarray(query[:, :, :3]), height, 2 * height)
    ri, fr = _fit(np.ascontiguousarray(reference[:, :, :3]), height, 2 * height)
    gap, header = 12, 34
    items = explanation.evidence
    footer = 8 + 18 * len(items)
    w = qi.shape[1] + gap + ri.shape[1]
    h = header + max(qi.shape[0], ri.shape[0]) + footer
    canvas = np.full((h, max(w, 520), 3), 245, np.uint8)
    ox_r = qi.shape[1] + gap
    canvas[header:header + qi.shape[0], :qi.shape[1]] = qi
    canvas[header:header + ri.shape[0], ox_r:ox_r + ri.shape[1]] = ri

    colour = GREEN if explanation.is_match else RED
    p = explanation.p_match
    ptxt = f"p(same place)={p:.3f}" if math.isfinite(p) else "p(same place)=n/a"
    head = f"GLEAM-X [{explanation.backend}]  verdict: {explanation.verdict_label.upper()}  {ptxt}"
    cv2.rectangle(canvas, (0, 0), (canvas.shape[1], header - 4), DARK, -1)
    cv2.putText(canvas, head, (8, header - 13), _FONT, 0.55, colour, 1, cv2.LINE_AA)

    if pts_query is not None and pts_reference is not None and len(pts_query):
        pq = np.asarray(pts_query, float).reshape(-1, 2)
        pr = np.asarray(pts_reference, float).reshape(-1, 2)
        idx = np.linspace(0, len(pq) - 1, min(max_lines, len(pq))).round().astype(int)
        for a, b in zip(pq[idx], pr[idx]):
            p0 = (int(round(a[0] * fq)), int(round(a[1] * fq)) + header)
            p1 = (int(round(b[0] * fr)) + ox_r, int(round(b[1] * fr)) + header)
            cv2.line(canvas, p0, p1, YELLOW, 1, cv2.LINE_AA)
            cv2.circle(canvas, p0, 2, YELLOW, -1, cv2.LINE_AA)
            cv2.circle(canvas, p1, 2, YELLOW, -1, cv2.LINE_AA)

    shapes = ((query.shape[1], query.shape[0]), (reference.shape[1], reference.shape[0]))
    for it in items:
        col = GREEN if it.supports_match else RED
        for boxes, f, ox, (iw, ih) in ((it.query_regions, fq, 0, shapes[0]), (it.reference_regions, fr, ox_r, shapes[1])):
            labelled = False
            for b in boxes:
                if (b[2] - b[0]) * (b[3] - b[1]) >= 0.9 * iw * ih:
                    continue  # the whole image: a frame around it would only clutter
                x0, y0, x1, y1 = (int(round(v * f)) for v in b)
                if x1 <= x0 or y1 <= y0:
                    continue
                cv2.rectangle(canvas, (x0 + ox, y0 + header), (x1 + ox, y1 + header), col, 1, cv2.LINE_AA)
                if not labelled:
                    _label(canvas, it.id, (x0 + ox + 2, y0 + header + 14), col, 0.4)
                    labelled = True

    y = header + max(qi.shape[0], ri.shape[0]) + 18
    for it in items:
        sign = "+" if it.supports_match else "-"
        unit = f" {it.unit}" if it.unit else ""
        try:
            val = fmt(it.kind, "value", it.value)  # as the sentence prints it
        except KeyError:
            val = f"{it.value:g}"
        txt = f"{it.id} [{sign}] {it.kind} = {val}{unit}"
        cv2.putText(canvas, txt, (8, y), _FONT, 0.45, GREEN if it.supports_match else RED, 1, cv2.LINE_AA)
        y += 18
    return canvas
