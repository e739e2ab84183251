#!/usr/bin/env python3
"""Independent reference splicer (oracle) for ik_llama.cpp files, on gguf-py.

usage: assemble_ik.py --types TYPES --base PATH --out OUT [--take 'REGEX=PATH']...
                      [--take-experts 'REGEX=PATH:FIRST-LAST']...

Same rules as assemble.py (see there). The difference: PyPI gguf-py knows no ik_llama.cpp
type (and ik's own gguf-py sizes IQ4_KS without its row scale), so tensor sizes come from
TYPES, the output of `ik-splice-types` (tests/oracle/ik_types.c: ik's own C type table):
a tensor of type t and shape [ne0, ...] is rows x (row_meta(t) + ne0 / blck(t) * type_size(t))
bytes, rows being the product of the outer dimensions. Key/values are read by gguf-py's
GGUFReader and written by its GGUFWriter; tensor infos and data go through GGUFWriter's
add_tensor_info / write_tensor_data with the raw type id. Nothing from the Rust project is
used.
"""
import argparse
import re
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from assemble import parse_take, parse_take_experts, writer_like  # noqa: E402
from ggufio import shard_paths  # noqa: E402

from gguf import GGUFReader  # noqa: E402


def read_types(path):
    """id -> (name, blck, type_size, row_meta) from ik-splice-types' output."""
    table = {}
    for line in Path(path).read_text().splitlines():
        tid, name, blck, ts, meta, _row4, _nbytes = line.split()
        table[int(tid)] = (name, int(blck), int(ts), int(meta))
    return table


class IkTensor:
    def __init__(self, name, type_id, shape, n_bytes, data_offset):
        self.name, self.type_id, self.shape = name, type_id, shape
        self.n_bytes, self.data_offset = n_bytes, data_offset


def ik_reader(types):
    class IkReader(GGUFReader):
        """GGUFReader whose tensors are sized by ik's table instead of gguf-py's."""

        def _build_tensors(self, start_offs, fields):
            self.tensors = []
            for field in fields:
                _nl, name_data, _nd, dims, raw_dtype, offset_tensor = field.parts
                tid = int(raw_dtype[0])
                if tid not in types:
                    raise SystemExit(f"type id {tid} is not in ik's table")
                tname, blck, ts, meta = types[tid]
                if tname == "i2_s":
                    raise SystemExit("I2_S is not supported by this oracle")
                shape = [int(d) for d in dims]
                rows = int(np.prod(shape[1:])) if len(shape) > 1 else 1
                if shape[0] % blck:
                    raise SystemExit(f"ne0 {shape[0]} is not a multiple of {blck}")
                n_bytes = rows * (meta + shape[0] // blck * ts)
                self.tensors.append(IkTensor(str(bytes(name_data), "utf-8"), tid, shape, n_bytes,
                                             int(start_offs + offset_tensor[0])))
    return IkReader


class Model:
    def __init__(self, path, reader_cls):
        self.path = path
        self.readers = [reader_cls(p, "r") for p in shard_paths(path)]
        self.tensors, self.order = {}, []
        for r in self.readers:
            for t in r.tensors:
                if t.name in self.tensors:
                    raise SystemExit(f"{path}: duplicate tensor {t.name}")
                if t.data_offset + t.n_bytes > len(r.data):
                    raise SystemExit(f"{path}: tensor {t.name} runs past the end of the file")
                self.tensors[t.name] = (r, t)
                self.order.append(t.name)

    def raw(self, name):
        r, t = self.tensors[name]
        return r.data[t.data_offset: t.data_offset + t.n_bytes]

    def info(self, name):
        _, t = self.tensors[name]
        return t.type_id, t.shape, t.n_bytes


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--types", required=True)
    ap.add_argument("--base", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--take", action="append", default=[], type=parse_take)
    ap.add_argument("--take-experts", action="append", default=[], type=parse_take_experts)
    a = ap.parse_args()
    reader_cls = ik_reader(read_types(a.types))
    models = {}

    def model(path):
        if path not in models:
            models[path] = Model(path, reader_cls)
        return models[path]

    base = model(a.base)
    w = writer_like(base, a.out)

    datas = []
    for name in base.order:
        src = base
        for rx, path in a.take:
            if rx.search(name):
                src = model(path)
                break
        if name not in src.tensors:
            raise SystemExit(f"{src.path}: has no tensor {name}")
        tid, shape, n_bytes = src.info(name)
        data = np.array(src.raw(name), dtype=np.uint8, copy=True)
        for rx, path, e0, e1 in a.take_experts:
            if not rx.search(name) or "_exps" not in name or len(shape) != 3:
                continue
            donor = model(path)
            if donor.info(name) != (tid, shape, n_bytes):
                raise SystemExit(f"{name}: type/shape differ between the child and {path}")
            if e1 >= shape[2]:
                raise SystemExit(f"{name}: expert {e1} out of range (n_expert {shape[2]})")
            s = n_bytes // shape[2]
            data[e0 * s:(e1 + 1) * s] = donor.raw(name)[e0 * s:(e1 + 1) * s]
        # A non-uint8 dtype makes GGUFWriter keep the shape as given (numpy order).
        w.add_tensor_info(name, list(reversed(shape)), np.dtype(np.int8), n_bytes, raw_dtype=tid)
        datas.append(data)

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    for data in datas:
        w.write_tensor_data(data)
    w.close()


if __name__ == "__main__":
    main()
