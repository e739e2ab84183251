//! gguf-splice: build a child GGUF model whose tensors (or single experts) come from two or
//! more quantized parents, without dequantizing anything.
//!
//! Layers, each depending only on those above it:
//! - [`ggml_type`], [`layout`]: the type table and all size arithmetic;
//! - [`input`]: opening the files a user names (regular files only, text up to a cap);
//! - [`gguf`]: the container (reader, writer, shard sets);
//! - [`recipe`]: rules and metadata edits, parsed from TOML or the command line;
//! - [`plan`]: recipe x parents -> a fully checked plan of every output byte;
//! - [`execute`]: writes a plan to disk, deciding nothing;
//! - [`report`]: `inspect` and `--dry-run` output;
//! - [`compare`]: `diff` and `verify`: byte-level comparison of models, and its reports;

// Errors carry the file, tensor, expected and found values so messages can be acted on; they
// are built once per failed run, so their size on the stack does not matter.
#![allow(clippy::result_large_err)]

pub mod compare;
pub mod execute;
pub mod ggml_type;
pub mod gguf;
pub mod input;
pub mod layout;
pub mod plan;
pub mod recipe;
pub mod report;
#[doc(hidden)]
pub mod testkit;
