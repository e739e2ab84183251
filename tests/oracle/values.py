#!/usr/bin/env python3
"""Reference for `diff --values` (oracle; gguf-py + numpy + stdlib only).

usage: values.py A.gguf B.gguf

Prints JSON {name: {"distance", "cosine", "experts": {"distance": [...], "cosine": [...]}}}
for every tensor that A and B both have with the same shape: each dequantized by gguf-py
(`gguf.quants.dequantize`), then in float64 the relative distance |A - B| / |B| and the
cosine <A, B> / (|A| |B|), of the whole tensor and, for stacked routed-expert tensors
(`*_exps.*`), of each expert (the outermost dimension). Non-finite numbers are null.

A weight `STEM.weight` with a companion `STEM.scale` is compared as llama.cpp b11434 computes
with it: its dequantized values times the scale (one value for the whole tensor, or one per
expert, the outermost dimension).
"""
import json
import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from assemble import Model  # noqa: E402

from gguf import GGMLQuantizationType  # noqa: E402
from gguf.quants import dequantize  # noqa: E402


def values(model, name):
    _, t = model.tensors[name]
    x = dequantize(t.data, GGMLQuantizationType(int(t.tensor_type)))
    dims = [int(d) for d in t.shape]  # ne0 first
    x = np.asarray(x, dtype=np.float64).reshape(list(reversed(dims)))
    scale = name[: -len(".weight")] + ".scale" if name.endswith(".weight") else None
    if scale in model.tensors:
        s = np.asarray(values(model, scale), dtype=np.float64).ravel()
        x = x * (s[0] if s.size == 1 else s.reshape([-1] + [1] * (x.ndim - 1)))
    return x


def finite(x):
    return x if math.isfinite(x) else None


def stats(a, b):
    a, b = a.ravel(), b.ravel()
    d = math.sqrt(float(np.sum((a - b) ** 2)))
    nb = math.sqrt(float(np.sum(b * b)))
    na = math.sqrt(float(np.sum(a * a)))
    dist = 0.0 if d == 0 else (math.inf if nb == 0 else d / nb)
    if na * nb == 0:
        cos = 1.0 if na == 0 and nb == 0 else 0.0
    else:
        cos = max(-1.0, min(1.0, float(np.sum(a * b)) / (na * nb)))
    return finite(dist), finite(cos)


def main():
    ma, mb = Model(sys.argv[1]), Model(sys.argv[2])
    out = {}
    for name in ma.order:
        if name not in mb.tensors:
            continue
        a, b = values(ma, name), values(mb, name)
        if a.shape != b.shape:
            continue
        dist, cos = stats(a, b)
        entry = {"distance": dist, "cosine": cos}
        if "_exps." in name:
            per = [stats(a[e], b[e]) for e in range(a.shape[0])]
            entry["experts"] = {"distance": [p[0] for p in per], "cosine": [p[1] for p in per]}
        out[name] = entry
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
