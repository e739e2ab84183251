#!/usr/bin/env python3
"""Per-expert token counts of a GGUF importance matrix (oracle; gguf-py + numpy + stdlib only).

usage: imatrix_counts.py IMATRIX.gguf

Prints JSON {weight name: [count per expert]} for every `NAME.counts` tensor of more than one
element (stacked expert tensors; llama-imatrix writes F32 [1, n_expert]).
"""
import json
import sys

from gguf import GGUFReader


def main():
    r = GGUFReader(sys.argv[1], "r")
    out = {}
    for t in r.tensors:
        if not t.name.endswith(".counts"):
            continue
        values = [float(x) for x in t.data.reshape(-1).tolist()]
        if len(values) > 1:
            out[t.name[: -len(".counts")]] = values
    json.dump(out, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
