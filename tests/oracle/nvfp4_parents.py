#!/usr/bin/env python3
"""Make a parent whose routed experts are NVFP4 with per-expert second-level scales
(oracle; gguf-py + numpy + stdlib only). llama-quantize cannot make NVFP4, so the blocks are
written here, as values llama.cpp will compute with.

usage: nvfp4_parents.py IN OUT SEED [SCALE_SEED]

OUT is IN with every `blk.N.ffn_{gate,up,down}_exps.weight` ([ne0, ne1, n_expert], ne0 a
multiple of 64) replaced by NVFP4 blocks drawn from SEED: each block of 64 values is four
UE4M3 sub-block scales (exponent 1-2, any mantissa: 0.008 to 0.03 with NVFP4's halving)
and 32 bytes of random E2M1 nibbles. Right after each such weight come
`blk.N.ffn_X_exps.scale` (F32 {n_expert}, values in [0.5, 2) from SCALE_SEED, default
SEED), which llama.cpp
b11434 multiplies into each expert's matmul result, and `blk.N.ffn_X_exps.input_scale`
(F32 {n_expert}, 1.0), which it loads. Everything else is copied raw, keys in order.
"""
import re
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from assemble import Model, writer_like  # noqa: E402

from gguf import GGMLQuantizationType  # noqa: E402

EXPS = re.compile(r"^blk\.\d+\.ffn_(gate|up|down)_exps\.weight$")
BLOCK_VALUES, BLOCK_BYTES = 64, 36


def main():
    src, out, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
    rng = np.random.default_rng(seed)
    scale_rng = np.random.default_rng(int(sys.argv[4]) if len(sys.argv) > 4 else seed + 1000)
    m = Model(src)
    w = writer_like(m, out)
    for name in m.order:
        ttype, shape, n_bytes = m.info(name)
        if not EXPS.match(name):
            data = np.array(m.raw(name), dtype=np.uint8, copy=True)
            rows = list(reversed(shape[1:]))
            w.add_tensor(name, data.reshape(rows + [n_bytes // int(np.prod(shape[1:]))]),
                         raw_dtype=GGMLQuantizationType(ttype))
            continue
        ne0, ne1, n_exp = shape
        assert ne0 % BLOCK_VALUES == 0, f"{name}: ne0 {ne0} is not a multiple of 64"
        n_blocks = ne0 // BLOCK_VALUES * ne1 * n_exp
        scales = ((rng.integers(1, 3, (n_blocks, 4)) << 3) | rng.integers(0, 8, (n_blocks, 4)))
        nibbles = rng.integers(0, 256, (n_blocks, 32))
        blocks = np.concatenate([scales, nibbles], axis=1).astype(np.uint8)
        w.add_tensor(name, blocks.reshape(n_exp, ne1, ne0 // BLOCK_VALUES * BLOCK_BYTES),
                     raw_dtype=GGMLQuantizationType.NVFP4)
        stem = name[: -len(".weight")]
        w.add_tensor(f"{stem}.scale", scale_rng.uniform(0.5, 2.0, n_exp).astype(np.float32))
        w.add_tensor(f"{stem}.input_scale", np.ones(n_exp, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


if __name__ == "__main__":
    main()
