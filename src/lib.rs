//! gguf-splice: build a child GGUF model whose tensors (or single experts) come from two or
//! more quantized parents, without dequantizing anything.
//!
//! Layers, each depending only on those above it:
//! - [`ggml_type`], [`layout`]: the type table and all size arithmetic;
//! - [`gguf`]: the container (reader, writer, shard sets);
//! - [`recipe`]: rules and metadata edits, parsed from TOML or the command line;
//! - [`plan`]: recipe x parents -> a fully checked plan of every output byte;
//! - [`execute`]: writes a plan to disk, deciding nothing;
//! - [`report`], [`compare`]: `inspect`, `diff` and `verify`.

pub mod ggml_type;
pub mod gguf;
pub mod layout;
#[doc(hidden)]
pub mod testkit;
