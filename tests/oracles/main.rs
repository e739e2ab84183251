//! Tests against outside oracles: gguf-py (the scripts in `tests/oracle/`), real llama.cpp
//! and its probe, real ik_llama.cpp, and a second ggml (libggml-python). `have` skips a test
//! whose oracle is missing, or fails it under GGUF_SPLICE_REQUIRE_ORACLES=1
//! (`scripts/test.sh` installs them all).
//!
//! One test binary (`cargo test --test oracles`), one module per theme.

#[path = "../common/mod.rs"]
mod common;

mod architectures;
mod assemble_e2e;
mod gguf_py;
mod ik_llama;
mod inspect;
mod llama_e2e;
mod mix_ggml;
mod mix_oracle;
mod nvfp4_e2e;
mod values;
