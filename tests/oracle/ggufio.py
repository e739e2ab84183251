"""Shared helpers for the oracles: open a GGUF or a whole split set with gguf-py only.

Only gguf-py (PyPI `gguf`), numpy and the standard library are used; nothing from the Rust
project is imported.
"""
import re
from pathlib import Path

from gguf import GGUFReader, GGUFValueType

SPLIT_RE = re.compile(r"^(?P<prefix>.*)-(?P<no>\d{5})-of-(?P<count>\d{5})\.gguf$")


def shard_paths(path):
    """[path] for a single file; all shards (1-based names) when given the first shard."""
    p = str(path)
    m = SPLIT_RE.match(p)
    if not m or int(m.group("no")) != 1:
        return [p]
    n = int(m.group("count"))
    paths = [f"{m.group('prefix')}-{i:05d}-of-{n:05d}.gguf" for i in range(1, n + 1)]
    for q in paths:
        if not Path(q).is_file():
            raise FileNotFoundError(f"missing shard {q}")
    return paths


def open_model(path):
    """-> list of GGUFReader, one per shard (first shard first)."""
    return [GGUFReader(p, "r") for p in shard_paths(path)]


def is_pseudo_key(name):
    # gguf-py presents the header counts as fields named GGUF.*
    return name.startswith("GGUF.")


def _decode_str(raw):
    b = bytes(raw)
    try:
        return b.decode("utf-8")
    except UnicodeDecodeError:
        return {"hex": b.hex()}


def field_value(field):
    """(type int, decoded value, elem type int or None) for a ReaderField."""
    vtype = int(field.types[0])
    if vtype == GGUFValueType.ARRAY:
        # parts: key len, key, value type, elem type, count, items...
        elem = int(field.parts[3][0])
        if elem == GGUFValueType.STRING:
            vals = [_decode_str(field.parts[i]) for i in field.data]
        elif elem == GGUFValueType.ARRAY:
            raise ValueError(f"{field.name}: arrays of arrays are not supported")
        else:
            vals = [v for i in field.data for v in field.parts[i].tolist()]
            if elem == GGUFValueType.BOOL:
                vals = [bool(v) for v in vals]
        return vtype, vals, elem
    if vtype == GGUFValueType.STRING:
        return vtype, _decode_str(field.parts[-1]), None
    v = field.parts[-1].tolist()[0]
    if vtype == GGUFValueType.BOOL:
        v = bool(v)
    return vtype, v, None


def tensor_bytes(reader, t):
    """Raw data bytes of ReaderTensor t (a memoryview into the file's memmap)."""
    return memoryview(reader.data[t.data_offset: t.data_offset + t.n_bytes])
