#!/usr/bin/env python3
"""Independent reference splicer (oracle) built on gguf-py's GGUFReader and GGUFWriter.

usage: assemble.py --base PATH --out OUT [--take 'REGEX=PATH']... [--take-experts 'REGEX=PATH:FIRST-LAST']...

The child has the base's tensors, in the base's order, and the base's key/values in the
base's order (minus split.* keys; GGUF.* are gguf-py's pseudo-fields for the header;
general.architecture is written first by GGUFWriter; general.alignment, if the base has one,
sets the writer's alignment). Each tensor is copied raw (never dequantized) from the first
--take parent whose REGEX re.search-matches its name, else from the base. Then each
--take-experts (in the order given) replaces experts FIRST..LAST (inclusive, 0-based) of
every matching tensor whose name contains "_exps" (3-D stacked weights, and their {n_expert}
scales and [n, n_expert] biases: experts are slices along the last dimension) with those
experts' bytes from PATH
(type and shape must equal the child's tensor). Any PATH may be the first shard
`X-00001-of-0000N.gguf` of a split set. The child is one file.

Gate and up experts in the other layout: a parent converted with `--fuse-gate-up-exps` has
`blk.N.ffn_gate_up_exps.weight` ([n_embd, 2*n_ff, n_expert]; within expert e, its n_ff gate
rows, then its n_ff up rows) where others have `blk.N.ffn_gate_exps.weight` and
`blk.N.ffn_up_exps.weight` ([n_embd, n_ff, n_expert] each). The child keeps the base's
layout. When a parent (for --take or --take-experts) lacks a child tensor of one layout but
has the other layout's, the child's tensor is cut from, or joined out of, the parent's:
  child ffn_gate_exps expert e = the first half of the parent's fused expert e,
  child ffn_up_exps expert e   = its second half,
  child ffn_gate_up_exps expert e = the parent's gate expert e, then its up expert e
(gate and up must have the same type and shape). The result must have the base's shape.

Only gguf-py (PyPI `gguf`), numpy and the standard library are used.
"""
import argparse
import re
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ggufio import is_pseudo_key, open_model  # noqa: E402

from gguf import GGMLQuantizationType, GGUFValueType, GGUFWriter  # noqa: E402


class Model:
    """All tensors of a (possibly split) GGUF by name -> (reader, ReaderTensor)."""

    def __init__(self, path):
        self.path = path
        self.readers = open_model(path)
        self.tensors = {}
        self.order = []
        for r in self.readers:
            for t in r.tensors:
                if t.name in self.tensors:
                    raise SystemExit(f"{path}: duplicate tensor {t.name}")
                self.tensors[t.name] = (r, t)
                self.order.append(t.name)

    def raw(self, name):
        r, t = self.tensors[name]
        return r.data[t.data_offset: t.data_offset + t.n_bytes]

    def info(self, name):
        _, t = self.tensors[name]
        return int(t.tensor_type), [int(x) for x in t.shape], int(t.n_bytes)


FUSED_RE = re.compile(r"^(?P<blk>blk\.\d+\.)ffn_gate_up_exps\.weight$")
SEPARATE_RE = re.compile(r"^(?P<blk>blk\.\d+\.)ffn_(?P<half>gate|up)_exps\.weight$")


def parent_tensor(m, name):
    """(type, ne shape, raw bytes as a uint8 array) of child tensor `name` as parent m holds it,
    cut from or joined out of m's other gate/up experts layout when m lacks `name` itself
    (see the module doc). Exits with a message when m has neither."""
    if name in m.tensors:
        ttype, shape, _ = m.info(name)
        return ttype, shape, np.asarray(m.raw(name), dtype=np.uint8)
    sep = SEPARATE_RE.match(name)
    if sep:
        fused = f"{sep.group('blk')}ffn_gate_up_exps.weight"
        if fused in m.tensors:
            ttype, shape, n_bytes = m.info(fused)
            if len(shape) != 3 or shape[1] % 2:
                raise SystemExit(f"{m.path}: {fused}: shape {shape} is not [n_embd, 2*n_ff, n_expert]")
            n_exp = shape[-1]
            # (expert, gate|up, bytes of n_ff rows): rows are contiguous, gate rows first
            halves = np.asarray(m.raw(fused), dtype=np.uint8).reshape(n_exp, 2, n_bytes // n_exp // 2)
            half = halves[:, 0 if sep.group("half") == "gate" else 1, :]
            return ttype, [shape[0], shape[1] // 2, n_exp], half.reshape(-1).copy()
    fus = FUSED_RE.match(name)
    if fus:
        gate, up = (f"{fus.group('blk')}ffn_{h}_exps.weight" for h in ("gate", "up"))
        if gate in m.tensors and up in m.tensors:
            (gt, gs, gn), (ut, us, un) = m.info(gate), m.info(up)
            if (gt, gs) != (ut, us):
                raise SystemExit(f"{m.path}: {gate} ({gt} {gs}) and {up} ({ut} {us}) cannot be fused: "
                                 "type or shape differ")
            n_exp = gs[2]
            g = np.asarray(m.raw(gate), dtype=np.uint8).reshape(n_exp, gn // n_exp)
            u = np.asarray(m.raw(up), dtype=np.uint8).reshape(n_exp, un // n_exp)
            return gt, [gs[0], 2 * gs[1], n_exp], np.concatenate([g, u], axis=1).reshape(-1)
    raise SystemExit(f"{m.path}: has no tensor {name}")


def raw_field_value(field):
    """(value for GGUFWriter.add_key_value, GGUFValueType, sub_type). Strings stay bytes."""
    vtype = GGUFValueType(int(field.types[0]))
    if vtype == GGUFValueType.ARRAY:
        elem = GGUFValueType(int(field.parts[3][0]))
        if elem == GGUFValueType.STRING:
            vals = [bytes(field.parts[i]) for i in field.data]
        elif elem == GGUFValueType.ARRAY:
            raise SystemExit(f"{field.name}: arrays of arrays are not supported")
        else:
            vals = [v for i in field.data for v in field.parts[i].tolist()]
            if elem == GGUFValueType.BOOL:
                vals = [bool(v) for v in vals]
        return vals, vtype, elem
    if vtype == GGUFValueType.STRING:
        return bytes(field.parts[-1]), vtype, None
    v = field.parts[-1].tolist()[0]
    if vtype == GGUFValueType.BOOL:
        v = bool(v)
    return v, vtype, None


def writer_like(base, out):
    """A GGUFWriter for `out` holding `base`'s key/values in `base`'s order (split.* and
    gguf-py's pseudo-keys aside; general.architecture is written first by GGUFWriter;
    general.alignment sets the writer's alignment)."""
    first = base.readers[0]
    arch_field = first.fields.get("general.architecture")
    if arch_field is None:
        raise SystemExit(f"{base.path}: no general.architecture")
    w = GGUFWriter(out, bytes(arch_field.parts[-1]).decode("utf-8"))
    for name, field in first.fields.items():
        if is_pseudo_key(name) or name.startswith("split.") or name == "general.architecture":
            continue
        val, vtype, sub = raw_field_value(field)
        if name == "general.alignment":
            w.add_custom_alignment(int(val))
            continue
        w.add_key_value(name, val, vtype, sub_type=sub)
    return w


def parse_take(s):
    if "=" not in s:
        raise SystemExit(f"--take wants REGEX=PATH, got {s!r}")
    rx, path = s.rsplit("=", 1)
    return re.compile(rx), path


def parse_take_experts(s):
    m = re.match(r"^(?P<rx>.*)=(?P<path>.*):(?P<a>\d+)-(?P<b>\d+)$", s)
    if not m:
        raise SystemExit(f"--take-experts wants REGEX=PATH:FIRST-LAST, got {s!r}")
    a, b = int(m.group("a")), int(m.group("b"))
    if a > b:
        raise SystemExit(f"--take-experts: FIRST > LAST in {s!r}")
    return re.compile(m.group("rx")), m.group("path"), a, b


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--take", action="append", default=[], type=parse_take)
    ap.add_argument("--take-experts", action="append", default=[], type=parse_take_experts)
    a = ap.parse_args()

    models = {}

    def model(path):
        if path not in models:
            models[path] = Model(path)
        return models[path]

    base = model(a.base)
    w = writer_like(base, a.out)

    for name in base.order:
        src = base
        for rx, path in a.take:
            if rx.search(name):
                src = model(path)
                break
        ttype, shape, data = parent_tensor(src, name)
        data = np.array(data, dtype=np.uint8, copy=True)
        n_bytes = len(data)
        if src is not base and name not in src.tensors:
            # converted from the other gate/up layout: must fit the base's tensor
            _, base_shape, _ = base.info(name)
            if shape != base_shape:
                raise SystemExit(f"{name}: shape {base_shape} in the base, {shape} from {src.path}")

        for rx, path, e0, e1 in a.take_experts:
            # the experts of a tensor are its slices along the last dimension: 3-D stacked
            # weights, and their per-expert companions ({n_expert} scales, [n, n_expert] biases)
            if not rx.search(name) or "_exps" not in name:
                continue
            donor = model(path)
            dt, ds, ddata = parent_tensor(donor, name)
            if (dt, ds, len(ddata)) != (ttype, shape, n_bytes):
                raise SystemExit(f"{name}: type/shape differ: child {ttype} {shape}, {path} {dt} {ds}")
            n_exp = shape[-1]
            if e1 >= n_exp:
                raise SystemExit(f"{name}: expert {e1} out of range (n_expert {n_exp})")
            s = n_bytes // n_exp
            data[e0 * s:(e1 + 1) * s] = ddata[e0 * s:(e1 + 1) * s]

        qtype = GGMLQuantizationType(ttype)
        # numpy shape (outermost first) of the raw bytes: reversed ne with ne0 in bytes
        rows = list(reversed(shape[1:]))
        row_bytes = n_bytes
        for d in shape[1:]:
            row_bytes //= d
        w.add_tensor(name, data.reshape(rows + [row_bytes]), raw_dtype=qtype)

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


if __name__ == "__main__":
    main()
