#!/usr/bin/env bash
# Mixing throughput and memory, against llama-quantize on the same tensors in the same run.
#
#   bash benches/mix.sh [WORKDIR] [N_EXPERT] [TENSORS]
#
# Two parents (benches/mix_parents.py), each holding TENSORS (default 1) routed-expert
# tensors of DeepSeek-V3's shape [7168, 2048, N_EXPERT] (default 256: 3.76 G weights and
# 2.6 GB of Q5_K per tensor) with random blocks. Then, on those tensors:
#   1. llama-quantize --allow-requantize: parent a's tensors from Q5_K to Q4_K (the baseline);
#   2. gguf-splice, mix { a = 1 } type Q4_K: the same requantization (its bytes must equal 1's);
#   3. gguf-splice, mix { a = 0.75, b = 0.25 } type Q4_K: a real two-parent mix;
#   4. the same mix cut into shard jobs (--split-max-tensors 1, `splice --shard K`), each job
#      on one thread: all jobs one after another, then JOBS (default 2) at a time, as a farm
#      runs them: how N parallel jobs scale on this machine's cores.
# Reported: seconds, MB/s of tensor data written (and read), peak RSS (GNU time). A DeepSeek
# Q4_K tensor takes minutes per tool on 2 cores; pass a smaller N_EXPERT for a quick run
# (memory does not depend on it: gguf-splice mixes in bounded chunks).
# Needs GNU time, the gguf-py venv (fixtures/setup-python.sh) and llama.cpp
# (fixtures/build-llama.sh).
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WORK="${1:-$(mktemp -d)}"
N_EXPERT="${2:-256}"
N_TENSORS="${3:-1}"
mkdir -p "$WORK"
cd "$REPO"
TIME=/usr/bin/time
[[ -x $TIME ]] || { echo "install GNU time (apt-get install time)" >&2; exit 1; }
PY="$(bash fixtures/setup-python.sh | tail -n 1)"
LLAMA_OUT="$(bash fixtures/build-llama.sh | tail -n 2)"
LLAMA_BIN="$(tail -n 1 <<<"$LLAMA_OUT")"
# The ggml gguf-splice loads: the shared libggml-base of that llama.cpp.
export GGUF_SPLICE_GGML="$(head -n 1 <<<"$LLAMA_OUT")"
cargo build --release --quiet --bin gguf-splice
BIN="$REPO/target/release/gguf-splice"

names=()
for i in $(seq 1 "$N_TENSORS"); do names+=("blk.$i.ffn_up_exps.weight"); done
pattern='ffn_up_exps'
echo "== parents: ${#names[@]} tensor(s) [7168, 2048, $N_EXPERT] Q5_K each, in $WORK"
"$PY" benches/mix_parents.py fixtures/v3-q3mix.gguf "$WORK/a.gguf" Q5_K 1 "$N_EXPERT" "${names[@]}"
"$PY" benches/mix_parents.py fixtures/v3-q3mix.gguf "$WORK/b.gguf" Q5_K 2 "$N_EXPERT" "${names[@]}"
in_bytes=$(( 7168 / 256 * 176 * 2048 * N_EXPERT * N_TENSORS ))
out_bytes=$(( 7168 / 256 * 144 * 2048 * N_EXPERT * N_TENSORS ))
printf '[[rules]]\nmatch = "%s"\nmix = { a = 1 }\ntype = "Q4_K"\n' "$pattern" > "$WORK/requant.toml"
printf '[[rules]]\nmatch = "%s"\nmix = { a = 0.75, b = 0.25 }\ntype = "Q4_K"\n' "$pattern" > "$WORK/mix.toml"

# run NAME CMD... -> "seconds maxrss_kb" (one run: each takes minutes at full size)
run() {
    local name=$1; shift
    rm -f "$WORK/out.gguf"
    sync
    $TIME -f "%e %M" -o "$WORK/$name.time" "$@" >/dev/null 2>"$WORK/$name.log" || { cat "$WORK/$name.log" >&2; exit 1; }
    cat "$WORK/$name.time" | tail -n 1
}
mbs() { awk -v b="$1" -v s="$2" 'BEGIN{ if (s <= 0) s = 0.01; printf "%.1f", b / s / 1e6 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{ if (b <= 0) b = 0.01; printf "%.2f", a / b }'; }

lq=$(run llama-quantize "$LLAMA_BIN/llama-quantize" --allow-requantize --pure \
    --tensor-type "$pattern=q4_k" "$WORK/a.gguf" "$WORK/lq.gguf" Q8_0 "$(nproc)")
one=$(run requant "$BIN" splice --parent "a=$WORK/a.gguf" --parent "b=$WORK/b.gguf" \
    --recipe "$WORK/requant.toml" -o "$WORK/requant.gguf" -q --force)
same=$("$PY" tests/oracle/dump.py "$WORK/lq.gguf" "$WORK/requant.gguf" | "$PY" -c '
import json, sys
a, b = json.load(sys.stdin)
h = lambda d: {t["name"]: (t["type_name"], t["sha256"]) for t in d["tensors"] if "_exps" in t["name"]}
print("byte-identical" if h(a) == h(b) else "DIFFERENT")')
two=$(run mix "$BIN" splice --parent "a=$WORK/a.gguf" --parent "b=$WORK/b.gguf" \
    --recipe "$WORK/mix.toml" -o "$WORK/mix.gguf" -q --force)

echo "tensor data: $in_bytes bytes Q5_K per parent -> $out_bytes bytes Q4_K; $(nproc) threads"
echo "llama-quantize --allow-requantize (a -> Q4_K): ${lq% *} s, $(mbs "$out_bytes" "${lq% *}") MB/s written, ${lq#* } KB max RSS"
echo "gguf-splice mix { a = 1 } -> Q4_K:           ${one% *} s, $(mbs "$out_bytes" "${one% *}") MB/s written, ${one#* } KB max RSS ($same to llama-quantize's)"
echo "gguf-splice mix { a = 0.75, b = 0.25 }:      ${two% *} s, $(mbs "$out_bytes" "${two% *}") MB/s written ($(mbs $(( 2 * in_bytes )) "${two% *}") MB/s read), ${two#* } KB max RSS"
echo "ratio time (requantize: gguf-splice / llama-quantize): $(ratio "${one% *}" "${lq% *}")"
echo "ratio time (two-parent mix / llama-quantize requantize): $(ratio "${two% *}" "${lq% *}")"
echo "ratio peak RSS (gguf-splice mix / llama-quantize): $(ratio "${two#* }" "${lq#* }")"

# 4. shard jobs: one thread each, one after another, then JOBS at a time.
JOBS="${JOBS:-2}"
split=(splice --parent "a=$WORK/a.gguf" --parent "b=$WORK/b.gguf" --recipe "$WORK/mix.toml"
    -o "$WORK/jobs.gguf" --split-max-tensors 1 -q --force)
shards=$("$BIN" "${split[@]}" --dry-run --json | "$PY" -c 'import json, sys; print(len(json.load(sys.stdin)["outputs"]))')
jobs_run() {  # PARALLEL -> seconds
    rm -f "$WORK"/jobs-*.gguf
    local t0 t1
    t0=$(date +%s.%N)
    seq 1 "$shards" | RAYON_NUM_THREADS=1 xargs -P "$1" -I K "$BIN" "${split[@]}" --shard K
    t1=$(date +%s.%N)
    awk -v a="$t0" -v b="$t1" 'BEGIN{ printf "%.1f", b - a }'
}
serial=$(jobs_run 1)
parallel=$(jobs_run "$JOBS")
echo "shard jobs ($shards shards, 1 thread each): one at a time ${serial} s, $JOBS at a time ${parallel} s: speed-up $(ratio "$serial" "$parallel") on $(nproc) cores"
rm -f "$WORK"/jobs-*.gguf
rm -f "$WORK"/a.gguf "$WORK"/b.gguf "$WORK"/lq.gguf "$WORK"/requant.gguf "$WORK"/mix.gguf
