#!/usr/bin/env bash
# Self-test of the oracles on the committed fixtures (needs fixtures/build-llama.sh and
# fixtures/setup-python.sh; both are cached). Exits non-zero on any mismatch.
#   bash tests/oracle/selftest.sh
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
BIN="$(bash "$REPO/fixtures/build-llama.sh" | tail -n 1)"
PY="$(bash "$REPO/fixtures/setup-python.sh" | tail -n 1)"
T="$(mktemp -d)"
trap 'rm -rf "$T"' EXIT
FX="$REPO/fixtures"
O="$REPO/tests/oracle"

# 1. identity: base only -> byte-identical to the base (single file and split set)
"$PY" "$O/assemble.py" --base "$FX/v3-q3mix.gguf" --out "$T/id.gguf"
cmp "$T/id.gguf" "$FX/v3-q3mix.gguf"
"$PY" "$O/assemble.py" --base "$FX/r1-iq2mix-split-00001-of-00003.gguf" --out "$T/id2.gguf"
cmp "$T/id2.gguf" "$FX/r1-iq2mix.gguf"

# 1b. layout conversion: the fused fixtures hold the same bytes as the separate ones, so taking
#     every routed expert (or experts 1-2) of one layout into a base of the other gives the base
R='ffn_(gate|up|gate_up|down)_exps\.weight$'
for pair in "v3-q3mix v3-fused-q3mix" "v3-fused-q3mix v3-q3mix" "r1-q3mix r1-fused-q3mix" "r1-fused-q3mix r1-q3mix"; do
    set -- $pair
    "$PY" "$O/assemble.py" --base "$FX/$1.gguf" --out "$T/conv.gguf" --take "$R=$FX/$2.gguf"
    cmp "$T/conv.gguf" "$FX/$1.gguf"
    "$PY" "$O/assemble.py" --base "$FX/$1.gguf" --out "$T/conv.gguf" --take-experts "$R=$FX/$2.gguf:1-2"
    cmp "$T/conv.gguf" "$FX/$1.gguf"
done

# 2. chimeras on a v3 base: all routed experts from r1-q3mix; experts 1-2 of blk.1.ffn_up_exps
#    from r1-q3mix; all routed experts from the r1-iq2mix split set (other types than the base's);
#    --take-experts across types must be refused.
"$PY" "$O/assemble.py" --base "$FX/v3-q3mix.gguf" --out "$T/chim.gguf" --take "ffn_.*_exps=$FX/r1-q3mix.gguf"
# the same chimera with the routed experts cut from the fused r1, and joined into the fused v3
"$PY" "$O/assemble.py" --base "$FX/v3-q3mix.gguf" --out "$T/chim-f.gguf" --take "$R=$FX/r1-fused-q3mix.gguf"
cmp "$T/chim-f.gguf" "$T/chim.gguf"
"$PY" "$O/assemble.py" --base "$FX/v3-fused-q3mix.gguf" --out "$T/chim-f.gguf" --take "$R=$FX/r1-q3mix.gguf"
"$PY" "$O/assemble.py" --base "$FX/v3-fused-q3mix.gguf" --out "$T/chim-ff.gguf" --take "$R=$FX/r1-fused-q3mix.gguf"
cmp "$T/chim-f.gguf" "$T/chim-ff.gguf"
"$PY" "$O/assemble.py" --base "$FX/v3-q3mix.gguf" --out "$T/chim-iq2.gguf" \
    --take "ffn_.*_exps=$FX/r1-iq2mix-split-00001-of-00003.gguf" \
    --take-experts "blk\.1\.ffn_up_exps=$FX/r1-q3mix.gguf:1-2" 2>/dev/null \
    && { echo "take-experts across types must fail" >&2; exit 1; } || true
"$PY" "$O/assemble.py" --base "$FX/v3-q3mix.gguf" --out "$T/chim-e.gguf" \
    --take-experts "blk\.1\.ffn_up_exps=$FX/r1-q3mix.gguf:1-2"
"$PY" "$O/assemble.py" --base "$FX/v3-q3mix.gguf" --out "$T/chim-iq2.gguf" \
    --take "ffn_.*_exps=$FX/r1-iq2mix-split-00001-of-00003.gguf"
for f in chim chim-e chim-iq2; do "$BIN/llama-splice-probe" "$T/$f.gguf" > "$T/$f.probe.json"; done
"$BIN/llama-splice-probe" "$FX/v3-q3mix.gguf" > "$T/v3.probe.json"
for f in "$FX/v3-q3mix.gguf" "$FX/r1-q3mix.gguf" "$FX/r1-iq2mix-split-00001-of-00003.gguf" "$T/chim.gguf" "$T/chim-e.gguf" "$T/chim-iq2.gguf"; do
    "$PY" "$O/dump.py" --experts "$f" > "$T/$(basename "$f" .gguf).dump.json"
done
"$PY" - "$T" <<'PYEOF'
import json, sys
T = sys.argv[1]
L = lambda n: json.load(open(f"{T}/{n}"))
v3, r1, iq2 = L("v3-q3mix.dump.json"), L("r1-q3mix.dump.json"), L("r1-iq2mix-split-00001-of-00003.dump.json")
V, R, I = ({t["name"]: t for t in d["tensors"]} for d in (v3, r1, iq2))
def check(child, expect):
    c = L(child)
    assert c["kv"] == v3["kv"], child
    assert [t["name"] for t in c["tensors"]] == list(V), child
    for t in c["tensors"]:
        want = expect(t["name"])
        assert (t["type"], t["shape"], t["sha256"]) == (want["type"], want["shape"], want["sha256"]), (child, t["name"])
check("chim.dump.json", lambda n: R[n] if "_exps" in n else V[n])
check("chim-iq2.dump.json", lambda n: I[n] if "_exps" in n else V[n])
c = {t["name"]: t for t in L("chim-e.dump.json")["tensors"]}
for n, t in c.items():
    if n == "blk.1.ffn_up_exps.weight":
        assert t["experts"] == [V[n]["experts"][0], R[n]["experts"][1], R[n]["experts"][2], V[n]["experts"][3]]
    else:
        assert t["sha256"] == V[n]["sha256"], n
p = {n: L(f"{n}.probe.json") for n in ["v3", "chim", "chim-e", "chim-iq2"]}
for n in ["chim", "chim-e", "chim-iq2"]:
    assert len(p[n]["tokens"]) == 8 and p[n]["logits"] != p["v3"]["logits"], n
print("oracle selftest:", {n: q["tokens"] for n, q in p.items()}, file=sys.stderr)
PYEOF
echo "oracle selftest: ok" >&2
