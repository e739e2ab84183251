#!/usr/bin/env bash
# Whole-process timings of `batch`, reported as ratios to baselines measured in the same run
# (these machines are shared and noisy; absolute numbers mean little).
#
#   bash benches/batch.sh [WORKDIR] [LAYERS] [ROUNDS]
#
# Two filled synthetic parents (LAYERS layers of a scaled-down deepseek2, default 4: about
# 0.65 GB each) and a manifest of 4 children (the R1T chimera, its reverse, a later cut-off,
# embeddings and output from the other parent), each cut by size into shards of at most half
# a parent (3 each, as tensor boundaries fall): 12 jobs.
# 1. `batch MANIFEST` (one process, headers read once) against the 4 equivalent `splice`
#    processes run one after the other.
# 2. The jobs as separate `batch --job K` processes, 2 at a time (xargs -P 2) against one
#    at a time.
# Each measurement starts from an empty output directory after a `sync`; every shard is
# fsynced by the writer. One untimed batch runs first: the first run after the parents are
# written was seen to take 2-3 times as long (their writeback), whichever command it was. Rounds alternate the order of each pair and medians are compared.
# Outputs of the two sides of each pair are checked to be identical in the first round.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WORK="${1:-$(mktemp -d)}"
LAYERS="${2:-4}"
ROUNDS="${3:-5}"
# The later cut-off child takes blk.1's experts from v3; the preset then needs a later layer.
(( LAYERS >= 3 )) || { echo "LAYERS must be 3 or more" >&2; exit 2; }
mkdir -p "$WORK"
WORK="$(cd "$WORK" && pwd)"
cd "$REPO"
cargo build --release --quiet --bin gguf-splice --example synth
BIN="$REPO/target/release/gguf-splice"
SYNTH="$REPO/target/release/examples/synth"

echo "== filled synthetic parents, $LAYERS layers, in $WORK"
"$SYNTH" "$WORK/v3.gguf" --seed 1 --small "$LAYERS" --fill
"$SYNTH" "$WORK/r1.gguf" --seed 2 --small "$LAYERS" --fill
half=$(( $(stat -c %s "$WORK/v3.gguf") / 2 + 1 ))
mkdir -p "$WORK/out/late"
cat > "$WORK/out/farm.toml" <<EOF
[parents]
v3 = "$WORK/v3.gguf"
r1 = "$WORK/r1.gguf"

[[children]]
output = "chimera.gguf"
recipe = "deepseek-r1t-chimera"
split_max_size = $half

[[children]]
output = "reverse.gguf"
recipe = "deepseek-r1t-chimera-reverse"
split_max_size = $half

[[children]]
output = "late/chimera-late.gguf"
recipe = "deepseek-r1t-chimera"
take = ['blk\.1\.ffn_(gate|up|down)_exps=v3']
split_max_size = $half

[[children]]
output = "donor.gguf"
recipe = "embeddings-output-from-donor"
parents = ["base=v3", "donor=r1"]
split_max_size = $half
EOF
M="$WORK/out/farm.toml"
JOBS=$("$BIN" batch "$M" --list-jobs --count)
echo "$JOBS jobs; output $(du -sh --apparent-size "$WORK/v3.gguf" | cut -f1) per child"

clean() { find "$WORK/out" -name '*.gguf' -delete; find "$WORK/out" -name '.*' -type f -delete; sync; }
# now -> seconds since the epoch, with microseconds
now() { echo "$EPOCHREALTIME"; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN{printf "%.3f", b - a}'; }

run_batch() { "$BIN" batch "$M" -q >/dev/null; }
run_separate() {
    local o="$WORK/out" v3="v3=$WORK/v3.gguf" r1="r1=$WORK/r1.gguf"
    "$BIN" splice --parent "$v3" --parent "$r1" --recipe mappings/deepseek-r1t-chimera.toml \
        -o "$o/chimera.gguf" --split-max-size "$half" -q
    "$BIN" splice --parent "$v3" --parent "$r1" --recipe mappings/deepseek-r1t-chimera-reverse.toml \
        -o "$o/reverse.gguf" --split-max-size "$half" -q
    "$BIN" splice --parent "$v3" --parent "$r1" --recipe mappings/deepseek-r1t-chimera.toml \
        --take 'blk\.1\.ffn_(gate|up|down)_exps=v3' -o "$o/late/chimera-late.gguf" \
        --split-max-size "$half" -q
    "$BIN" splice --parent "base=$WORK/v3.gguf" --parent "donor=$WORK/r1.gguf" \
        --recipe mappings/embeddings-output-from-donor.toml -o "$o/donor.gguf" \
        --split-max-size "$half" -q
}
run_sequential() { for ((k = 0; k < JOBS; k++)); do "$BIN" batch "$M" --job "$k" -q >/dev/null; done; }
run_parallel() { seq 0 $((JOBS - 1)) | xargs -P 2 -I{} "$BIN" batch "$M" --job {} -q >/dev/null; }

# time NAME: clean, run run_NAME, append its seconds to the array NAME_t
measure() {
    clean
    local t0; t0=$(now)
    "run_$1"
    local t; t=$(elapsed "$t0")
    eval "$1_t+=($t)"
}
checksums() { (cd "$WORK/out" && find . -name '*.gguf' -print0 | sort -z | xargs -0 sha256sum); }
clean; run_batch
batch_t=(); separate_t=(); sequential_t=(); parallel_t=()
for ((round = 1; round <= ROUNDS; round++)); do
    if (( round % 2 )); then pair1=(batch separate); pair2=(sequential parallel);
    else pair1=(separate batch); pair2=(parallel sequential); fi
    for name in "${pair1[@]}" "${pair2[@]}"; do
        measure "$name"
        if (( round == 1 )); then checksums > "$WORK/sums.$name"; fi
    done
    if (( round == 1 )); then
        cmp -s "$WORK/sums.batch" "$WORK/sums.separate" || { echo "batch and splice outputs differ" >&2; exit 1; }
        cmp -s "$WORK/sums.sequential" "$WORK/sums.parallel" || { echo "job outputs differ" >&2; exit 1; }
        cmp -s "$WORK/sums.batch" "$WORK/sums.parallel" || { echo "batch and job outputs differ" >&2; exit 1; }
    fi
done
clean

median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{ if (b <= 0) b = 0.001; printf "%.2f", a / b }'; }
b=$(median "${batch_t[@]}"); s=$(median "${separate_t[@]}")
q=$(median "${sequential_t[@]}"); p=$(median "${parallel_t[@]}")
echo "batch of 4 children:        $b s (median of $ROUNDS: ${batch_t[*]})"
echo "4 separate splice runs:     $s s (${separate_t[*]})"
echo "ratio (batch / separate):   $(ratio "$b" "$s")"
echo "$JOBS jobs one at a time:        $q s (${sequential_t[*]})"
echo "$JOBS jobs two at a time:        $p s (${parallel_t[*]})"
echo "ratio (2 at a time / 1):    $(ratio "$p" "$q")"
rm -f "$WORK/v3.gguf" "$WORK/r1.gguf" "$WORK"/sums.*
