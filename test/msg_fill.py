"""Fill any ROS message with distinct non-default values and compare messages field by field."""

from __future__ import annotations

import array
import importlib

import numpy as np
from rosidl_parser.definition import (
    AbstractGenericString,
    AbstractNestedType,
    Array,
    BasicType,
    BoundedSequence,
    NamespacedType,
)


def message_class(type_name: str):
    """Import a message/service class from 'pkg/msg/Name'."""
    pkg, kind, name = type_name.split("/")
    return getattr(importlib.import_module(f"{pkg}.{kind}"), name)


def _value(t, seed: int):
    if isinstance(t, BasicType):
        tn = t.typename
        if tn == "boolean":
            return True  # the default is False
        if tn in ("float", "double"):
            return float(seed) + 0.25
        if tn in ("char", "octet"):
            return bytes([seed % 256]) if tn == "octet" else chr(65 + seed % 26)
        if tn.startswith("uint") or tn.startswith("int"):
            bits = int("".join(c for c in tn if c.isdigit()))
            return (seed * 37 + 11) % (2 ** (bits - 1))
        raise TypeError(tn)
    if isinstance(t, AbstractGenericString):
        return f"value-{seed}-\u5730\u70b9" if t.__class__.__name__.startswith("UnboundedW") else f"value-{seed}"
    if isinstance(t, NamespacedType):
        cls = message_class("/".join(t.namespaces + [t.name]))
        return fill(cls(), seed)
    raise TypeError(t)


def fill(msg, seed: int = 1):
    """Set every field of ``msg`` (recursively) to a value derived from ``seed``; returns msg."""
    for i, (name, t) in enumerate(zip(msg.get_fields_and_field_types().keys(), msg.SLOT_TYPES)):
        s = seed * 13 + i
        if isinstance(t, AbstractNestedType):
            n = t.size if isinstance(t, Array) else (min(3, t.maximum_size) if isinstance(t, BoundedSequence) else 3)
            vals = [_value(t.value_type, s + j) for j in range(n)]
            if isinstance(t.value_type, BasicType) and t.value_type.typename == "octet":
                vals = bytes(v[0] for v in vals)
            setattr(msg, name, vals)
        else:
            setattr(msg, name, _value(t, s))
    return msg


def diff(a, b, path: str = "") -> list[str]:
    """Field paths where two messages differ (empty when equal)."""
    if hasattr(a, "get_fields_and_field_types"):
        out = []
        for name in a.get_fields_and_field_types():
            out += diff(getattr(a, name), getattr(b, name), f"{path}.{name}")
        return out
    if isinstance(a, (list, tuple, np.ndarray, array.array)) and not isinstance(a, (str, bytes)):
        if len(a) != len(b):
            return [f"{path}: length {len(a)} != {len(b)}"]
        out = []
        for i, (x, y) in enumerate(zip(a, b)):
            out += diff(x, y, f"{path}[{i}]")
        return out
    if isinstance(a, float) or isinstance(b, float):
        return [] if float(a) == float(b) else [f"{path}: {a!r} != {b!r}"]
    return [] if a == b else [f"{path}: {a!r} != {b!r}"]
