#!/usr/bin/env python3
"""Every architecture gguf-py knows that has routed experts (`*_exps` tensors), with its
tensor names (oracle; gguf-py + stdlib only).

usage: arch_tensors.py

Prints one JSON object: {"gguf_version": str, "archs": [{"name": arch name as written in
general.architecture, "tensors": [[name format ("blk.{bid}.attn_q" or "output"), the
MODEL_TENSOR enum member's name ("ATTN_Q")], ...]}, ...]}. The enum names are gguf-py's own
words for what each tensor is; the test reads the expected role from them, not from the
tensor names gguf-splice parses.
"""
import json
from importlib.metadata import version

from gguf.constants import MODEL_ARCH_NAMES, MODEL_TENSORS, TENSOR_NAMES

archs = []
for arch, tensors in MODEL_TENSORS.items():
    names = [(TENSOR_NAMES[t], t.name) for t in tensors]
    if not any("_exps" in n for n, _ in names):
        continue
    archs.append({"name": MODEL_ARCH_NAMES[arch], "tensors": names})
print(json.dumps({"gguf_version": version("gguf"), "archs": archs}))
