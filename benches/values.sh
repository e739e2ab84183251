#!/usr/bin/env bash
# diff --values throughput, against a dequantize-only pass over the same bytes, same run.
#
#   bash benches/values.sh [WORKDIR] [N_EXPERT] [TENSORS] [ROUNDS]
#
# Two parents (benches/mix_parents.py), each holding TENSORS (default 2) routed-expert
# tensors of DeepSeek-V3's shape [7168, 2048, N_EXPERT] (default 64) with random blocks:
# a in Q5_K, b in Q4_K (other quant types, as two real quants). Then, alternating over
# ROUNDS (default 3) rounds, with the files warm in the page cache:
#   1. examples/dequantize.rs: read both parents' tensors and dequantize them with ggml's
#      to_float, in the same chunks, the same parallelism, and nothing else (the baseline);
#   2. gguf-splice diff a b --values --json: the same, plus the distance sums, per expert.
# Reported: median seconds, weights/s, peak RSS (GNU time), and the ratio of the medians.
# Needs GNU time, the gguf-py venv and llama.cpp's libggml-base (fixtures/*.sh).
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WORK="${1:-$(mktemp -d)}"
N_EXPERT="${2:-64}"
N_TENSORS="${3:-2}"
ROUNDS="${4:-3}"
mkdir -p "$WORK"
cd "$REPO"
TIME=/usr/bin/time
[[ -x $TIME ]] || { echo "install GNU time (apt-get install time)" >&2; exit 1; }
PY="$(bash fixtures/setup-python.sh | tail -n 1)"
LLAMA_OUT="$(bash fixtures/build-llama.sh | tail -n 2)"
LLAMA_BIN="$(tail -n 1 <<<"$LLAMA_OUT")"
# The ggml both load: the shared libggml-base of that llama.cpp.
export GGUF_SPLICE_GGML="$(head -n 1 <<<"$LLAMA_OUT")"
cargo build --release --quiet --bin gguf-splice --example dequantize
BIN="$REPO/target/release/gguf-splice"
DEQ="$REPO/target/release/examples/dequantize"

names=()
for i in $(seq 1 "$N_TENSORS"); do names+=("blk.$i.ffn_up_exps.weight"); done
echo "== parents: ${#names[@]} tensor(s) [7168, 2048, $N_EXPERT], a Q5_K, b Q4_K, in $WORK"
"$PY" benches/mix_parents.py fixtures/v3-q3mix.gguf "$WORK/a.gguf" Q5_K 1 "$N_EXPERT" "${names[@]}"
"$PY" benches/mix_parents.py fixtures/v3-q3mix.gguf "$WORK/b.gguf" Q4_K 2 "$N_EXPERT" "${names[@]}"
weights=$(( 7168 * 2048 * N_EXPERT * N_TENSORS ))
cat "$WORK/a.gguf" "$WORK/b.gguf" > /dev/null   # warm the page cache

# run NAME CMD... -> appends "seconds maxrss_kb" to $WORK/NAME.times
run() {
    local name=$1; shift
    $TIME -f "%e %M" -o "$WORK/$name.time" "$@" >"$WORK/$name.out" 2>"$WORK/$name.log" \
        || { cat "$WORK/$name.log" >&2; exit 1; }
    tail -n 1 "$WORK/$name.time" >> "$WORK/$name.times"
}
rm -f "$WORK"/*.times
for r in $(seq 1 "$ROUNDS"); do
    # Alternate the order: whichever runs second was seen to run slower on this machine.
    if (( r % 2 )); then
        run deq "$DEQ" "$WORK/a.gguf" "$WORK/b.gguf"
        run values "$BIN" diff "$WORK/a.gguf" "$WORK/b.gguf" --values --json
    else
        run values "$BIN" diff "$WORK/a.gguf" "$WORK/b.gguf" --values --json
        run deq "$DEQ" "$WORK/a.gguf" "$WORK/b.gguf"
    fi
done
median() { sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
maxrss() { awk '{ if ($2 > m) m = $2 } END { print m }'; }
d=$(cut -d' ' -f1 < "$WORK/deq.times" | median)
v=$(cut -d' ' -f1 < "$WORK/values.times" | median)
rate() { awk -v n="$1" -v s="$2" 'BEGIN { if (s <= 0) s = 0.01; printf "%.0f M", n / s / 1e6 }'; }
"$PY" -c '
import json, sys
r = json.load(open(sys.argv[1]))
t = r["tensors"][0]
print("check: %s distance %.4f over %d experts" % (t["name"], t["distance"], len(t["experts"]["distance"])))
' "$WORK/values.out"
echo "weights per parent: $weights; $(nproc) threads; $ROUNDS rounds (times: $(tr '\n' ' ' < "$WORK/values.times"| cut -c1-60)...)"
echo "dequantize only (examples/dequantize): median $d s, $(rate $(( 2 * weights )) "$d") weights/s, $(maxrss < "$WORK/deq.times") KB max RSS"
echo "diff --values:                         median $v s, $(rate $(( 2 * weights )) "$v") weights/s, $(maxrss < "$WORK/values.times") KB max RSS"
echo "ratio time (diff --values / dequantize only): $(awk -v a="$v" -v b="$d" 'BEGIN { printf "%.2f", a / b }')"
rm -f "$WORK"/a.gguf "$WORK"/b.gguf
