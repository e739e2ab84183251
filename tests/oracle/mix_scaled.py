#!/usr/bin/env python3
"""Reference for mixing weights that a `.scale` companion scales (oracle; gguf-py + numpy +
stdlib only).

usage: mix_scaled.py --base PATH --out OUT.gguf --mix 'REGEX=PATH:WEIGHT,PATH:WEIGHT,...'

OUT is the base with its key/values and every tensor copied raw, in the base's order, except:
- each weight `STEM.weight` whose name REGEX finds (re.search) becomes F32: numpy's weighted
  sum of the listed parents' values as llama.cpp b11434 computes with them, gguf-py's
  dequantized blocks times the parent's `STEM.scale` (per expert for an `{n_expert}` scale,
  the one value for `{1}`, 1 without a scale), in float32, in this order:
  acc = w1 * (deq(P1) * s1); acc = acc + w2 * (deq(P2) * s2); ... (weights rounded to f32);
- its `STEM.scale` becomes 1.0 everywhere (the mixed values hold the parents' scales);
- its `STEM.input_scale` is the base's (the test's parents agree on it).
"""
import argparse
import re
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from assemble import Model, writer_like  # noqa: E402

from gguf import GGMLQuantizationType  # noqa: E402
from gguf.quants import dequantize  # noqa: E402


def parse_mix(s):
    rx, rest = s.rsplit("=", 1)
    parts = []
    for item in rest.split(","):
        path, w = item.rsplit(":", 1)
        parts.append((path, np.float32(float(w))))
    return re.compile(rx), parts


def scaled(model, name):
    """The values of weight `name` in `model` as llama.cpp computes with them, float32, in
    numpy's shape (n_expert, ne1, ne0) or (ne1, ne0)."""
    _, t = model.tensors[name]
    x = dequantize(t.data, GGMLQuantizationType(int(t.tensor_type))).astype(np.float32, copy=False)
    scale = name[: -len(".weight")] + ".scale"
    if scale not in model.tensors:
        return x
    _, s = model.tensors[scale]
    s = np.asarray(s.data, dtype=np.float32).reshape(-1)
    if s.size == 1:
        return x * s[0]
    assert x.ndim == 3 and x.shape[0] == s.size, (name, x.shape, s.shape)
    return x * s[:, None, None]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--mix", required=True, type=parse_mix)
    a = ap.parse_args()
    rx, parts = a.mix
    models = {}

    def model(path):
        if path not in models:
            models[path] = Model(path)
        return models[path]

    base = model(a.base)
    w = writer_like(base, a.out)

    mixed = {n for n in base.order if n.endswith(".weight") and rx.search(n)}
    mixed_scales = {n[: -len(".weight")] + ".scale" for n in mixed}
    for name in base.order:
        if name in mixed:
            data = None
            for path, weight in parts:
                x = scaled(model(path), name)
                data = weight * x if data is None else data + weight * x
            assert data.dtype == np.float32, (name, data.dtype)
            w.add_tensor(name, data)
            continue
        ttype, shape, n_bytes = base.info(name)
        if name in mixed_scales:
            w.add_tensor(name, np.ones(list(reversed(shape)), dtype=np.float32))
            continue
        data = np.array(base.raw(name), dtype=np.uint8, copy=True)
        rows = list(reversed(shape[1:]))
        w.add_tensor(name, data.reshape(rows + [n_bytes // int(np.prod(shape[1:]))]),
                     raw_dtype=GGMLQuantizationType(ttype))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


if __name__ == "__main__":
    main()
