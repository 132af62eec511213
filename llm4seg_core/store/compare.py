"""Two model versions side by side: metrics, spec, LLM layer, and how much each tensor moved."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch

from llm4seg_core.store.checkpoint import spec_differences

if TYPE_CHECKING:
    from llm4seg_core.store.versions import VersionInfo


def compare_versions(va: VersionInfo, vb: VersionInfo) -> dict[str, Any]:
    """``va`` and ``vb`` side by side (both usable; :meth:`ModelStore.compare` checks that).

    ``weights`` summarises the per-tensor relative change ``|b - a| / |a|``
    over the tensors both store (``top`` lists the largest changes).
    """
    from safetensors.torch import load_file

    keys = list(dict.fromkeys([*va.metrics, *vb.metrics]))
    metrics = {k: (va.metrics.get(k), vb.metrics.get(k)) for k in keys}
    spec_diff = spec_differences(va.spec, vb.spec) if va.spec and vb.spec else {}
    ta, tb = load_file(str(va.path)), load_file(str(vb.path))
    common = sorted(ta.keys() & tb.keys())
    rel: dict[str, float] = {}
    shape_differs: list[str] = []
    other_changed: list[str] = []  # integer tensors (e.g. batch-norm counters)
    other_same: list[str] = []
    num = den = 0.0
    for k in common:
        x, y = ta[k], tb[k]
        if x.shape != y.shape:
            shape_differs.append(k)
            continue
        if not (x.is_floating_point() and y.is_floating_point()):
            (other_changed if not torch.equal(x, y) else other_same).append(k)
            continue
        x, y = x.double(), y.double()
        d, n = float(torch.linalg.vector_norm(y - x)), float(torch.linalg.vector_norm(x))
        num += d * d
        den += n * n
        rel[k] = d / n if n > 0 else (0.0 if d == 0 else math.inf)
    changed = {k: r for k, r in rel.items() if r > 0}
    top = sorted(changed.items(), key=lambda kv: kv[1], reverse=True)[:10]
    values = list(rel.values())
    return {
        "a": va.name,
        "b": vb.name,
        "created": (va.created, vb.created),
        "parent": (va.parent, vb.parent),
        "metrics": metrics,
        "spec": spec_diff,
        "llm": {"a": va.llm, "b": vb.llm, "same": va.llm_sha256 == vb.llm_sha256 and va.llm == vb.llm},
        "weights": {
            "common": len(common),
            "only_a": sorted(ta.keys() - tb.keys()),
            "only_b": sorted(tb.keys() - ta.keys()),
            "shape_differs": shape_differs,
            "changed": len(changed) + len(other_changed),
            "unchanged": len(rel) - len(changed) + len(other_same),
            "mean_rel_change": (sum(values) / len(values)) if values else 0.0,
            "max_rel_change": max(values) if values else 0.0,
            "overall_rel_change": math.sqrt(num / den) if den > 0 else 0.0,
            "top": top,
        },
    }
