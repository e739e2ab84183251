//! Tests on hand-built parents and the repository's fixtures, with no outside oracle: the
//! expected bytes are assembled by the tests themselves from the parents' markers. A ggml
//! found at run time (GGUF_SPLICE_GGML) lets the mixing, `fit` and distance-map tests run;
//! without one `have` skips them, or fails them under GGUF_SPLICE_REQUIRE_ORACLES=1.
//!
//! One test binary (`cargo test --test hand`), one module per theme.

#[path = "../common/mod.rs"]
mod common;

mod assemble_parents;

mod assemble;
mod assemble_refusals;
mod batch;
mod cli;
mod companions;
mod compare;
mod container;
mod fit;
mod ik;
mod inputs;
mod layouts;
mod maps;
mod mix;
mod output_safety;
mod provenance;
mod splice;
