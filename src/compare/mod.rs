//! Comparison of models: `diff` (two models, tensor by tensor and key by key) and `verify`
//! (which parent each tensor and expert of a child came from, and, given a recipe, whether
//! the child is exactly what the recipe makes) compare bytes, without dequantizing or
//! hashing; `diff --values` ([`diff_values`]) compares dequantized values.
//! The reports are data; [`render`](crate::render) turns them into text and JSON.
//!
//! - [`engine`]: chunked, parallel, positional-read comparison of byte ranges;
//! - [`diff`]: two models;
//! - [`verify`]: a child against its parents (and its recipe);
//! - `values`: `diff --values`, two models' dequantized values (needs the `ggml` feature).

mod diff;
mod engine;
mod mixed;
mod values;
mod verify;

use std::ops::Range;
use std::path::PathBuf;

use serde_json::Value;

use crate::gguf::{GgufError, Model, ValueRef, ValueType};
use crate::plan::PlanError;

pub use diff::{
    DiffReport, ExpertDiff, GroupSummary, KeyDiff, KeyStatus, TensorDiff, TensorStatus, ValueDiff,
    diff,
};
pub use values::{
    NotCompared, Pooled, TensorValues, ValueOptions, ValueStatus, ValuesReport, diff_values,
};
pub use verify::{ExpertRun, Mismatch, RecipeCheck, Sources, TensorSources, VerifyReport, verify};

/// Why a comparison could not be made.
#[allow(missing_docs)]
#[derive(Debug, thiserror::Error)]
pub enum CompareError {
    #[error(transparent)]
    Gguf(#[from] GgufError),
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error("{path}: cannot open for reading: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{path}: reading {len} bytes of tensor '{tensor}' at byte {offset}: {source} (did the file change since it was opened?)"
    )]
    Read {
        path: PathBuf,
        tensor: String,
        offset: u64,
        len: u64,
        #[source]
        source: std::io::Error,
    },
    /// Recomputing a mixed tensor failed.
    #[error("recomputing a mixed tensor: {0}")]
    Mix(crate::mix::MixError),
    /// `diff --values` in a build without ggml's dequantizers.
    #[error(
        "--values compares dequantized values, which needs ggml's dequantizers: {}",
        crate::ggml::HOW_TO_ENABLE
    )]
    ValuesUnavailable,
    /// ggml refused to dequantize a tensor's rows.
    #[error("tensor '{tensor}': dequantizing: {source}")]
    Dequantize {
        tensor: String,
        #[source]
        source: crate::ggml::GgmlError,
    },
    #[error("{path}: tensor '{tensor}': byte range past {offset} overflows")]
    Overflow {
        path: PathBuf,
        tensor: String,
        offset: u64,
    },
}

/// Bytes compared per read.
pub const DEFAULT_CHUNK_BYTES: usize = 1 << 20;

/// How comparisons read.
#[derive(Clone, Copy, Debug)]
pub struct CompareOptions {
    /// Bytes read and compared at once, per file, per worker.
    pub chunk_bytes: usize,
}

impl Default for CompareOptions {
    fn default() -> Self {
        CompareOptions {
            chunk_bytes: DEFAULT_CHUNK_BYTES,
        }
    }
}

/// A metadata value as reports show it: type, short text, JSON (arrays summarised).
#[derive(Clone, Debug, PartialEq)]
pub struct Shown {
    pub ty: ValueType,
    pub summary: String,
    pub json: Value,
}

impl Shown {
    /// How reports show `v`.
    pub fn of(v: ValueRef<'_>) -> Shown {
        Shown {
            ty: v.ty,
            summary: v.summary(4),
            json: v.to_json(false),
        }
    }
}
/// Sorted indices -> half-open ranges of consecutive ones.
pub(crate) fn to_ranges(indices: impl IntoIterator<Item = u64>) -> Vec<Range<u64>> {
    let mut out: Vec<Range<u64>> = Vec::new();
    for i in indices {
        match out.last_mut() {
            Some(r) if r.end == i => r.end = i + 1,
            _ => out.push(i..i + 1),
        }
    }
    out
}

/// Model files and counts, for report headers.
#[derive(Clone, Debug)]
pub struct ModelSummary {
    pub paths: Vec<PathBuf>,
    pub tensors: usize,
    pub keys: usize,
}

impl ModelSummary {
    pub(crate) fn of(model: &Model) -> ModelSummary {
        ModelSummary {
            paths: model.shards().iter().map(|s| s.path.clone()).collect(),
            tensors: model.tensor_count(),
            keys: model.first().kvs().len(),
        }
    }
}
/// Keys that say how a model is sharded (and which run wrote the shards), not what it is.
pub(crate) fn is_split_key(key: &str) -> bool {
    key.starts_with("split.") || key == crate::gguf::model::KEY_SET_ID
}
