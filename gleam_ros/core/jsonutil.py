"""JSON-friendly values: NaN/Inf become None, numpy scalars and arrays become Python values."""

from __future__ import annotations

import math

import numpy as np


def to_jsonable(obj):
    """Recursively convert ``obj`` for ``json.dumps`` (NaN/Inf -> None, numpy -> Python)."""
    if isinstance(obj, np.ndarray):
        obj = obj.tolist()
    elif isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    return obj
