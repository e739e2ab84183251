#!/usr/bin/env python3
"""Reference for weight mixing (oracle; gguf-py + numpy + stdlib only).

usage: mix.py --base PATH --out OUT.gguf [--mix 'REGEX=PATH:WEIGHT,PATH:WEIGHT,...']...

Writes an all-F32 GGUF with the base's key/values (as assemble.py copies them) and every
tensor of the base dequantized to F32 by gguf-py (`gguf.quants.dequantize`), in the base's
order, except the tensors whose name the first matching --mix REGEX finds (re.search): those
are numpy's weighted sum of the listed parents' dequantized tensors, in float32, in the
order given: acc = w1*P1; acc = acc + w2*P2; ... (each weight rounded to float32 first).

That file is the float input llama-quantize gets in the tests: `llama-quantize --pure
--tensor-type REGEX=TYPE [--imatrix F] OUT.gguf Q.gguf Q8_0` then quantizes the mixed
tensors with ggml's own quantizer, and its bytes are what gguf-splice must write.
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
    if "=" not in s:
        raise SystemExit(f"--mix wants REGEX=PATH:WEIGHT,..., got {s!r}")
    rx, rest = s.rsplit("=", 1)
    parts = []
    for item in rest.split(","):
        path, w = item.rsplit(":", 1)
        parts.append((path, np.float32(float(w))))
    return re.compile(rx), parts


def f32(model, name):
    r, t = model.tensors[name]
    return dequantize(t.data, GGMLQuantizationType(int(t.tensor_type))).astype(np.float32, copy=False)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--mix", action="append", default=[], type=parse_mix)
    a = ap.parse_args()

    models = {}

    def model(path):
        if path not in models:
            models[path] = Model(path)
        return models[path]

    base = model(a.base)
    w = writer_like(base, a.out)

    for name in base.order:
        data = None
        for rx, parts in a.mix:
            if rx.search(name):
                for path, weight in parts:
                    x = f32(model(path), name)
                    data = weight * x if data is None else data + weight * x
                break
        if data is None:
            data = f32(base, name)
        assert data.dtype == np.float32, (name, data.dtype)
        w.add_tensor(name, data)

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


if __name__ == "__main__":
    main()
