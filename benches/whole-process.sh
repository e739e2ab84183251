#!/usr/bin/env bash
# Whole-process measurements, reported as ratios to baselines measured in the same run
# (these machines are shared and noisy; absolute numbers mean little).
#
#   bash benches/whole-process.sh [WORKDIR] [SMALL_LAYERS]
#
# 1. Header: `gguf-splice inspect --json` of a DeepSeek-V3-size header (1 086 tensors, full
#    129 280-token vocabulary with merges, sparse data) against llama.cpp's own C reader
#    (gguf_init_from_file, no_alloc), built from the cached llama.cpp of fixtures/build-llama.sh.
# 2. Plan: `splice --dry-run` of the R1T recipe on two such parents (target <= 50 ms).
# 3. Copy: a real splice of two filled synthetic parents (SMALL_LAYERS layers of a scaled-down
#    deepseek2, default 12: about 2 GB each) against `cp` of a file of the output's size.
#    Peak RSS must stay in tens of MB whatever the size.
# 4. diff (base vs child) and verify (child against both parents, with the recipe) against
#    `cat` of the files each one reads.
# Files are warm in the page cache for both sides (this runs without root privileges to drop
# caches), so the copy ratio compares the cost of the copy paths, not the disk.
# Needs GNU time (Debian package `time`).
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WORK="${1:-$(mktemp -d)}"
LAYERS="${2:-12}"
mkdir -p "$WORK"
cd "$REPO"
cargo build --release --quiet --bin gguf-splice --example synth
BIN="$REPO/target/release/gguf-splice"
SYNTH="$REPO/target/release/examples/synth"
TIME=/usr/bin/time
[[ -x $TIME ]] || { echo "install GNU time (apt-get install time)" >&2; exit 1; }

# measure CMD... -> "seconds maxrss_kb", best (lowest time) of 5 runs
measure() {
    local best="" line
    for _ in 1 2 3 4 5; do
        line=$($TIME -f "%e %M" "$@" 2>&1 >/dev/null | tail -n 1)
        if [[ -z $best ]] || awk -v a="${line%% *}" -v b="${best%% *}" 'BEGIN{exit !(a<b)}'; then best=$line; fi
    done
    echo "$best"
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{ if (b <= 0) b = 0.01; printf "%.2f", a / b }'; }

echo "== synthetic DeepSeek-V3-size parents (sparse) in $WORK"
"$SYNTH" "$WORK/v3.gguf" --seed 1 >/dev/null
"$SYNTH" "$WORK/r1.gguf" --seed 2 >/dev/null

ours=$(measure "$BIN" inspect --json "$WORK/v3.gguf")
echo "inspect --json:        ${ours% *} s, ${ours#* } KB max RSS"
LLAMA_BIN="$(bash fixtures/build-llama.sh 2>/dev/null | tail -n 1 || true)"
if [[ -n $LLAMA_BIN && -d $LLAMA_BIN ]]; then
    ROOT="$(dirname "$(dirname "$LLAMA_BIN")")"
    SRC=$(ls -d "$ROOT"/src/*/llama.cpp | head -n 1)
    cat > "$WORK/gguf_open.cpp" <<'CPP'
#include "gguf.h"
#include <cstdio>
int main(int argc, char ** argv) {
    gguf_init_params p = { /*no_alloc =*/ true, /*ctx =*/ nullptr };
    gguf_context * ctx = gguf_init_from_file(argv[1], p);
    if (!ctx) { return 1; }
    printf("%lld tensors\n", (long long) gguf_get_n_tensors(ctx));
    gguf_free(ctx);
    return 0;
}
CPP
    g++ -O2 -std=c++17 -I"$SRC/ggml/include" "$WORK/gguf_open.cpp" \
        "$ROOT/build/ggml/src/libggml-base.a" -lpthread -lm -o "$WORK/gguf_open"
    base=$(measure "$WORK/gguf_open" "$WORK/v3.gguf")
    echo "llama.cpp C reader:    ${base% *} s, ${base#* } KB max RSS"
    echo "ratio (ours / llama.cpp): time $(ratio "${ours% *}" "${base% *}"), memory $(ratio "${ours#* }" "${base#* }")"
fi

plan=$(measure "$BIN" splice --parent "v3=$WORK/v3.gguf" --parent "r1=$WORK/r1.gguf" \
    --recipe mappings/deepseek-r1t-chimera.toml -o "$WORK/never.gguf" --dry-run)
echo "plan R1T chimera (dry run, two parents): ${plan% *} s, ${plan#* } KB max RSS"
rm -f "$WORK/v3.gguf" "$WORK/r1.gguf"

echo "== filled synthetic parents, $LAYERS layers"
"$SYNTH" "$WORK/sv3.gguf" --seed 1 --small "$LAYERS" --fill
"$SYNTH" "$WORK/sr1.gguf" --seed 2 --small "$LAYERS" --fill
"$BIN" splice --parent "v3=$WORK/sv3.gguf" --parent "r1=$WORK/sr1.gguf" \
    --recipe mappings/deepseek-r1t-chimera.toml -o "$WORK/child.gguf" -q --force
size=$(stat -c %s "$WORK/child.gguf")
# Baseline: cp of the base parent (within a few KB of the output's size) followed by a sync of
# the copy, since the splice fsyncs its output. The two are interleaved, 8 rounds in alternating order, each after
# a global sync and with the previous output removed, and the medians compared.
cp_times=(); sp_times=(); sp_rss=()
run_cp() {
    rm -f "$WORK/cp-out.bin"; sync
    cp_times+=("$($TIME -f "%e" sh -c "cp '$WORK/sv3.gguf' '$WORK/cp-out.bin' && sync '$WORK/cp-out.bin'" 2>&1 | tail -n 1)")
}
run_splice() {
    rm -f "$WORK/child.gguf"; sync
    local line
    line=$($TIME -f "%e %M" "$BIN" splice --parent "v3=$WORK/sv3.gguf" --parent "r1=$WORK/sr1.gguf" \
        --recipe mappings/deepseek-r1t-chimera.toml -o "$WORK/child.gguf" -q 2>&1 | tail -n 1)
    sp_times+=("${line% *}"); sp_rss+=("${line#* }")
}
# Whichever runs second in a round was seen to be slower, so the order alternates.
for round in 1 2 3 4 5 6 7 8; do
    if (( round % 2 )); then run_cp; run_splice; else run_splice; run_cp; fi
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
cp_t="$(median "${cp_times[@]}") 0"
sp_t="$(median "${sp_times[@]}") $(printf '%s\n' "${sp_rss[@]}" | sort -g | tail -n 1)"
echo "output size:           $size bytes"
echo "cp (+sync) of parent:  ${cp_t% *} s (median of 8: ${cp_times[*]})"
echo "gguf-splice splice:    ${sp_t% *} s (median of 8: ${sp_times[*]}), ${sp_t#* } KB max RSS at most"
echo "ratio (splice / cp):   time $(ratio "${sp_t% *}" "${cp_t% *}")"
echo "== diff and verify on the same files (I/O bound: baselines read the same bytes with cat)"
cat_ab=$(measure sh -c "cat '$WORK/sv3.gguf' '$WORK/child.gguf' > /dev/null")
diff_t=$(measure "$BIN" diff "$WORK/sv3.gguf" "$WORK/child.gguf")
cat_all=$(measure sh -c "cat '$WORK/child.gguf' '$WORK/sv3.gguf' '$WORK/sr1.gguf' > /dev/null")
verify_t=$(measure "$BIN" verify "$WORK/child.gguf" --parent "v3=$WORK/sv3.gguf" --parent "r1=$WORK/sr1.gguf" \
    --recipe mappings/deepseek-r1t-chimera.toml)
echo "cat base child:        ${cat_ab% *} s"
echo "gguf-splice diff:      ${diff_t% *} s, ${diff_t#* } KB max RSS; ratio to cat $(ratio "${diff_t% *}" "${cat_ab% *}")"
echo "cat child v3 r1:       ${cat_all% *} s"
echo "gguf-splice verify:    ${verify_t% *} s, ${verify_t#* } KB max RSS; ratio to cat $(ratio "${verify_t% *}" "${cat_all% *}")"
rm -f "$WORK"/sv3.gguf "$WORK"/sr1.gguf "$WORK"/child.gguf "$WORK"/cp-out.bin
