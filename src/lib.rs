//! gguf-splice: build a child GGUF model whose tensors (or single experts) come from two or
//! more quantized parents, without dequantizing anything.
//!
//! Layers, each depending only on those above it:
//! - [`ggml_type`], [`layout`], [`ftype`]: the type tables and all size arithmetic;
//! - [`gguf`]: the container (reader, writer, shard sets);
//! - [`roles`]: what a tensor is (layer, role, how it is cut into experts, how one converter
//!   layout is read from another); the only module that reads meaning into tensor names;
//! - [`recipe`]: rules and metadata edits, parsed from TOML or the command line;
//! - [`presets`]: the recipes of `mappings/`, built in;
//! - [`plan`]: recipe x parents -> a fully checked plan of every output byte;
//! - [`distance`]: how far apart two tensors' values are (`diff --values`, maps, mix
//!   thresholds);
//! - [`ggml`]: ggml's own quantizers and dequantizers, linked with the `ggml` feature;
//! - [`mix`]: weight mixing: the bytes of tensors computed from several parents;
//! - [`execute`]: writes a plan to disk, deciding nothing;
//! - [`compare`]: `diff` and `verify`: byte-level comparison of models;
//! - [`render`]: every text and JSON report (inspect, plan, diff, verify).

// Errors carry the file, tensor, expected and found values so messages can be acted on; they
// are built once per failed run, so their size on the stack does not matter.
#![allow(clippy::result_large_err)]

pub mod compare;
pub mod distance;
pub mod execute;
pub mod ftype;
pub mod ggml;
pub mod ggml_type;
pub mod gguf;
pub mod layout;
pub mod mix;
pub mod plan;
pub mod presets;
pub mod recipe;
pub mod render;
pub mod roles;
#[doc(hidden)]
pub mod testkit;
