#!/usr/bin/env bash
# `gguf-splice assemble` against `cp` of the same bytes, as ratios measured in one run (these
# machines are shared and noisy; absolute numbers mean little).
#
#   bash benches/assemble.sh [WORKDIR] [SMALL_LAYERS]
#
# Two filled synthetic deepseek2 parents (examples/synth --small SMALL_LAYERS --fill, default
# 12 layers: about 2 GB each, 64 experts per layer), then two assemblies:
#   prune: --keep 'v3:0-31' (half the experts of one parent)
#   union: v3 + r1, 128 experts per layer
# Baseline for each: `cp` of that assembly's own output file to a new file, followed by a sync
# of the copy (assemble fsyncs its output): the same bytes, file to file. Each pair runs
# 6 rounds in alternating order (whichever runs second was seen to be slower), each after a
# global sync with the previous output removed; medians are compared. Files are warm in the
# page cache for both sides. Peak RSS of assemble is reported too (it must not grow with size).
# Needs GNU time (Debian package `time`).
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WORK="${1:-$(mktemp -d)}"
LAYERS="${2:-12}"
ROUNDS=6
mkdir -p "$WORK"
cd "$REPO"
cargo build --release --quiet --bin gguf-splice --example synth
BIN="$REPO/target/release/gguf-splice"
SYNTH="$REPO/target/release/examples/synth"
TIME=/usr/bin/time
[[ -x $TIME ]] || { echo "install GNU time (apt-get install time)" >&2; exit 1; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{ if (b <= 0) b = 0.01; printf "%.2f", a / b }'; }
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

echo "== filled synthetic parents, $LAYERS layers, in $WORK"
"$SYNTH" "$WORK/sv3.gguf" --seed 1 --small "$LAYERS" --fill
"$SYNTH" "$WORK/sr1.gguf" --seed 2 --small "$LAYERS" --fill

bench() { # name, assemble args...
    local name=$1; shift
    local out="$WORK/$name.gguf" copy="$WORK/$name-cp.bin"
    "$BIN" assemble "$@" -o "$out" -q --force
    "$BIN" verify "$out" --assembled "$@" >/dev/null
    local size; size=$(stat -c %s "$out")
    cp "$out" "$WORK/$name-src.bin"
    local cp_times=() as_times=() as_rss=()
    run_cp() {
        rm -f "$copy"; sync
        cp_times+=("$($TIME -f "%e" sh -c "cp '$WORK/$name-src.bin' '$copy' && sync '$copy'" 2>&1 | tail -n 1)")
    }
    run_assemble() {
        rm -f "$out"; sync
        local line
        line=$($TIME -f "%e %M" "$BIN" assemble "$@" -o "$out" -q 2>&1 | tail -n 1)
        as_times+=("${line% *}"); as_rss+=("${line#* }")
    }
    for round in $(seq 1 $ROUNDS); do
        if (( round % 2 )); then run_cp; run_assemble "$@"; else run_assemble "$@"; run_cp; fi
    done
    local c a rss
    c=$(median "${cp_times[@]}"); a=$(median "${as_times[@]}")
    rss=$(printf '%s\n' "${as_rss[@]}" | sort -g | tail -n 1)
    echo "$name: output $size bytes"
    echo "  cp (+sync) of the output: $c s (median of $ROUNDS: ${cp_times[*]})"
    echo "  gguf-splice assemble:     $a s (median of $ROUNDS: ${as_times[*]}), $rss KB max RSS at most"
    echo "  ratio (assemble / cp):    $(ratio "$a" "$c")"
    rm -f "$out" "$copy" "$WORK/$name-src.bin"
}

bench prune --parent "v3=$WORK/sv3.gguf" --keep 'v3:0-31'
bench union --parent "v3=$WORK/sv3.gguf" --parent "r1=$WORK/sr1.gguf"
rm -f "$WORK"/sv3.gguf "$WORK"/sr1.gguf
