#!/usr/bin/env bash
# Does `fit` choose well? KL divergence of children at one size budget, measured by real
# llama.cpp (llama-perplexity --kl-divergence), on text other than the imatrix's.
#
#   bash benches/fit.sh [WORKDIR]
#
# The model: the fixtures' tiny random-weight deepseek2 "R1" (fixtures/make_tiny_deepseek2.py,
# seed 11), F32, with an imatrix from fixtures/imatrix-text.txt. llama-quantize (with that
# imatrix) makes the parents Q8_0 (the reference), Q4_K_M, Q3_K_S and Q2_K, and Q3_K_M, whose
# file size is the budget. Children at that budget: fit (with and without --imatrix), and hand
# mixes by role (three of them over the budget, for scale). Each model's KLD is against the reference's logits, on the README's and docs/'s text
# (256-token chunks). Prints a Markdown table (bytes, KLD mean, same-top-token %).
#
# Needs the gguf-py venv (fixtures/setup-python.sh, or GGUF_SPLICE_PYTHON) and llama.cpp
# (fixtures/build-llama.sh); builds llama-perplexity as one more target of that cached build.
# GGUF_SPLICE_BIN: a gguf-splice (default: builds the release one); it loads the shared
# libggml-base build-llama.sh makes (GGUF_SPLICE_GGML).
# llama.cpp tools run with --no-repack: on AMX machines, repacked buffer types abort the graph.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WORK="${1:-$(mktemp -d)}"
mkdir -p "$WORK"
cd "$REPO"
PY="${GGUF_SPLICE_PYTHON:-$(bash fixtures/setup-python.sh | tail -n 1)}"
LLAMA_OUT="$(bash fixtures/build-llama.sh | tail -n 2)"
LLAMA_BIN="$(tail -n 1 <<<"$LLAMA_OUT")"
export GGUF_SPLICE_GGML="${GGUF_SPLICE_GGML:-$(head -n 1 <<<"$LLAMA_OUT")}"
BUILD="$(dirname "$LLAMA_BIN")"
if [[ ! -x "$LLAMA_BIN/llama-perplexity" ]]; then
    # The cache's tools venv has cmake and ninja; the build is configured with tools on.
    PATH="$BUILD/../tools-venv/bin:$PATH" cmake --build "$BUILD" -j 2 --target llama-perplexity >&2
fi
if [[ -z "${GGUF_SPLICE_BIN:-}" ]]; then
    cargo build --release --quiet --bin gguf-splice
    GGUF_SPLICE_BIN="$REPO/target/release/gguf-splice"
fi
BIN="$GGUF_SPLICE_BIN"
T=2
log() { echo "fit.sh: $*" >&2; }

log "model and imatrix in $WORK"
"$PY" fixtures/make_tiny_deepseek2.py --out "$WORK/f32.gguf" --seed 11 --name Tiny-DeepSeek-R1 --flavor r1
(cd fixtures && "$LLAMA_BIN/llama-imatrix" -m "$WORK/f32.gguf" -f imatrix-text.txt -o "$WORK/imatrix.gguf" \
    -c 128 -b 128 --chunks 4 -t $T --no-ppl --seed 1 --no-repack) >"$WORK/imatrix.log" 2>&1 \
    || { cat "$WORK/imatrix.log" >&2; exit 1; }
for q in Q8_0 Q4_K_M Q3_K_M Q3_K_S Q2_K; do
    "$LLAMA_BIN/llama-quantize" --imatrix "$WORK/imatrix.gguf" "$WORK/f32.gguf" "$WORK/$q.gguf" $q $T \
        >"$WORK/quant-$q.log" 2>&1 || { cat "$WORK/quant-$q.log" >&2; exit 1; }
done
size() { stat -c %s "$1"; }
BUDGET=$(size "$WORK/Q3_K_M.gguf")
P=(--parent "q8=$WORK/Q8_0.gguf" --parent "q4=$WORK/Q4_K_M.gguf" --parent "q3s=$WORK/Q3_K_S.gguf" --parent "q2=$WORK/Q2_K.gguf")

log "children at budget $BUDGET"
"$BIN" fit "${P[@]}" --budget "$BUDGET" --imatrix "$WORK/imatrix.gguf" -o "$WORK/fit-imatrix.gguf" \
    --write-recipe "$WORK/fit-imatrix.toml" --force -q
"$BIN" fit "${P[@]}" --budget "$BUDGET" -o "$WORK/fit-plain.gguf" --force -q
"$BIN" fit "${P[@]}" --budget "$BUDGET" --imatrix "$WORK/imatrix.gguf" -o "$WORK/fit-imatrix.gguf" \
    --dry-run > "$WORK/fit-imatrix.txt"
# Hand mixes by role: routed experts from one quant, everything else from another.
printf '[[rules]]\nrole = "routed_experts"\nfrom = "q3s"\n[[rules]]\nmatch = "."\nfrom = "q4"\n' > "$WORK/hand-a.toml"
printf '[[rules]]\nrole = "routed_experts"\nfrom = "q2"\n[[rules]]\nmatch = "."\nfrom = "q8"\n' > "$WORK/hand-b.toml"
printf '[[rules]]\nrole = "routed_experts"\nfrom = "q2"\n[[rules]]\nmatch = "."\nfrom = "q4"\n' > "$WORK/hand-c.toml"
printf '[[rules]]\nrole = "routed_experts"\nfrom = "q2"\n[[rules]]\nmatch = %s\nfrom = "q3s"\n[[rules]]\nmatch = "."\nfrom = "q4"\n' "'token_embd|blk\\.0\\.ffn_'" > "$WORK/hand-d.toml"
for h in a b c d; do
    "$BIN" splice "${P[@]}" --recipe "$WORK/hand-$h.toml" -o "$WORK/hand-$h.gguf" --force -q
done

# The reference's logits, then each model's KLD against them.
EVAL="$WORK/eval.txt"
# The project's own prose (text other than the imatrix's): the README and the guides.
cat README.md docs/*.md > "$EVAL"
PPL=(-f "$EVAL" -c 256 -b 256 --chunks 12 -t $T --no-repack --seed 1)
"$LLAMA_BIN/llama-perplexity" -m "$WORK/Q8_0.gguf" "${PPL[@]}" --kl-divergence-base "$WORK/base.kld" \
    >"$WORK/base.log" 2>&1 || { cat "$WORK/base.log" >&2; exit 1; }
kld() { # model -> "mean_kld same_top"
    "$LLAMA_BIN/llama-perplexity" -m "$1" "${PPL[@]}" --kl-divergence-base "$WORK/base.kld" --kl-divergence \
        >"$1.kld.log" 2>&1 || { cat "$1.kld.log" >&2; exit 1; }
    local mean top
    mean=$(grep -E '^Mean +KLD:' "$1.kld.log" | awk '{print $3}')
    top=$(grep -E '^Same top p:' "$1.kld.log" | awk '{print $4}')
    echo "$mean $top"
}
echo "| model | bytes | within budget | KLD vs Q8_0 (mean) | same top token % |"
echo "|---|---:|---|---:|---:|"
for m in Q3_K_M fit-imatrix fit-plain Q4_K_M Q3_K_S Q2_K hand-a hand-b hand-c hand-d; do
    f="$WORK/$m.gguf"
    s=$(size "$f")
    read -r mean top < <(kld "$f")
    fits=yes; (( s <= BUDGET )) || fits=no
    echo "| $m | $s | $fits | $mean | $top |"
done
echo
echo "budget = Q3_K_M's $BUDGET bytes; hand-a: experts Q3_K_S + rest Q4_K_M; hand-b: experts Q2_K + rest Q8_0;"
echo "hand-c: experts Q2_K + rest Q4_K_M; hand-d: hand-c with token_embd and blk.0's dense FFN from Q3_K_S."
echo "fit's choice: $WORK/fit-imatrix.txt"
