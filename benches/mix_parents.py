#!/usr/bin/env python3
"""Write a benchmark parent for mixing (benches/mix.sh): the tiny deepseek2 fixture's
key/values and one routed-expert tensor per name given, each of DeepSeek-V3's shape
[7168, 2048, N_EXPERT] in TYPE (Q4_K or Q5_K), filled with random blocks whose scales are
finite (so they dequantize to ordinary numbers). Data is written in chunks: memory stays
small.

usage: mix_parents.py KV_SOURCE.gguf OUT.gguf TYPE SEED N_EXPERT NAME...
"""
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "oracle"))
from assemble import raw_field_value  # noqa: E402
from ggufio import is_pseudo_key  # noqa: E402

from gguf import GGMLQuantizationType, GGUFReader, GGUFWriter  # noqa: E402

NE0, NE1 = 7168, 2048
BLOCK = 256
# Q4_K and Q5_K blocks both start with f16 d and f16 dmin, then 6-bit scales and quants.
BLOCK_BYTES = {"Q4_K": 144, "Q5_K": 176}
ALIGN = 32


def main():
    src, out, ty, seed, n_expert = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
    names = sys.argv[6:]
    block_bytes = BLOCK_BYTES[ty]
    r = GGUFReader(src)
    arch = bytes(r.fields["general.architecture"].parts[-1]).decode()
    w = GGUFWriter(out, arch)
    for name, field in r.fields.items():
        if is_pseudo_key(name) or name == "general.architecture" or name.startswith("split."):
            continue
        val, vtype, sub = raw_field_value(field)
        w.add_key_value(name, val, vtype, sub_type=sub)
    row_bytes = NE0 // BLOCK * block_bytes
    n_bytes = row_bytes * NE1 * n_expert
    for name in names:
        w.add_tensor_info(name, [n_expert, NE1, row_bytes], np.dtype(np.uint8), n_bytes,
                          raw_dtype=GGMLQuantizationType[ty])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    w.fout[0].close()
    rng = np.random.default_rng(seed)
    scale = np.array([0.002, 0.001], dtype=np.float16).view(np.uint8)
    with open(out, "ab") as f:
        f.write(b"\0" * (-f.tell() % ALIGN))
        chunk_blocks = (64 << 20) // block_bytes
        for _ in names:
            left = n_bytes // block_bytes
            while left:
                k = min(left, chunk_blocks)
                blocks = rng.integers(0, 256, size=(k, block_bytes), dtype=np.uint8)
                blocks[:, 0:4] = scale
                blocks.tofile(f)
                left -= k
            f.write(b"\0" * (-f.tell() % ALIGN))


if __name__ == "__main__":
    main()
