#!/usr/bin/env python3
"""Describe GGUF files as JSON (oracle; gguf-py + numpy + stdlib only).

usage: dump.py [--experts] FILE [FILE...]

One FILE -> one JSON object on stdout; several -> a JSON list. A first shard
`X-00001-of-0000N.gguf` stands for the whole split set: keys come from the first shard,
tensors from all shards in shard order ("shard" = 0-based shard index).

{"path", "shards":[paths], "version", "alignment",
 "kv":[{"key","type":<GGUFValueType int>,"value", "elem_type" (arrays only)}...] in file order,
 "tensors":[{"name","type":<ggml type int>,"type_name","shape":[ne0,ne1,..],"n_bytes",
             "sha256","shard", "experts":[sha256 per expert] (--experts, 3-D *_exps* only)}]}
"""
import argparse
import hashlib
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ggufio import field_value, is_pseudo_key, open_model, shard_paths, tensor_bytes  # noqa: E402

from gguf import GGMLQuantizationType  # noqa: E402


def describe(path, experts=False):
    readers = open_model(path)
    first = readers[0]
    kv = []
    for name, field in first.fields.items():
        if is_pseudo_key(name):
            continue
        vtype, value, elem = field_value(field)
        e = {"key": name, "type": vtype, "value": value}
        if elem is not None:
            e["elem_type"] = elem
        kv.append(e)
    tensors = []
    for si, r in enumerate(readers):
        for t in r.tensors:
            data = tensor_bytes(r, t)
            ttype = int(t.tensor_type)
            shape = [int(x) for x in t.shape]
            d = {
                "name": t.name,
                "type": ttype,
                "type_name": GGMLQuantizationType(ttype).name,
                "shape": shape,
                "n_bytes": int(t.n_bytes),
                "sha256": hashlib.sha256(data).hexdigest(),
                "shard": si,
            }
            if experts and "_exps" in t.name and len(shape) == 3:
                n_exp = shape[2]
                assert t.n_bytes % n_exp == 0
                s = t.n_bytes // n_exp
                d["experts"] = [hashlib.sha256(data[e * s:(e + 1) * s]).hexdigest() for e in range(n_exp)]
            tensors.append(d)
    version = int(first.fields["GGUF.version"].parts[-1][0])
    return {
        "path": str(path),
        "shards": shard_paths(path),
        "version": version,
        "alignment": int(first.alignment),
        "kv": kv,
        "tensors": tensors,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--experts", action="store_true", help="add per-expert sha256 for 3-D *_exps* tensors")
    ap.add_argument("files", nargs="+")
    a = ap.parse_args()
    out = [describe(f, a.experts) for f in a.files]
    json.dump(out[0] if len(out) == 1 else out, sys.stdout, ensure_ascii=False)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
