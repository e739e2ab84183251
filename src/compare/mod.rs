//! Comparison of models: `diff` (two models, tensor by tensor and key by key) and `verify`
//! (which parent each tensor and expert of a child came from, and, given a recipe, whether
//! the child is exactly what the recipe makes) compare bytes, without dequantizing or
//! hashing; `diff --values` ([`diff_values`]) compares dequantized values.
//! The reports are data; [`render`](crate::render) turns them into text and JSON.
//!
//! - `engine`: chunked, parallel, positional-read comparison of byte ranges;
//! - [`diff`]: two models;
//! - [`verify`]: a child against its parents (and its recipe);
//! - `values`: `diff --values`, two models' dequantized values (needs a ggml at run time).

mod diff;
mod engine;
mod mixed;
mod pieces;
mod remap;
mod report;
mod scales;
mod units;
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
pub use report::{
    Basis, ExpertRun, Mismatch, RecipeCheck, Sources, TensorSources, TornUnit, VerifyReport,
};
pub use values::{
    NotCompared, Pooled, TensorValues, ValueOptions, ValueStatus, ValuesReport, diff_values,
};
pub use verify::{verify, verify_plan};

/// Why a comparison could not be made (as opposed to a comparison that found differences,
/// which is a report).
#[derive(Debug, thiserror::Error)]
pub enum CompareError {
    /// A model could not be read or is not a valid GGUF.
    #[error(transparent)]
    Gguf(#[from] GgufError),
    /// With a recipe: the plan to check the child against cannot be made.
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// A model file could not be opened for the byte comparison.
    #[error("{path}: cannot open for reading: {source}")]
    Open {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Reading tensor bytes failed, typically because the file shrank since it was opened.
    #[error(
        "{path}: reading {len} bytes of tensor '{tensor}' at byte {offset}: {source} (did the file change since it was opened?)"
    )]
    Read {
        /// The file.
        path: PathBuf,
        /// The tensor being compared.
        tensor: String,
        /// Absolute file offset of the read.
        offset: u64,
        /// Bytes asked for.
        len: u64,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Recomputing a mixed tensor failed.
    #[error("recomputing a mixed tensor: {0}")]
    Mix(crate::mix::MixError),
    /// Reading a tensor from a remote file failed.
    #[error("tensor '{tensor}': {source}")]
    Remote {
        /// The tensor.
        tensor: String,
        /// What went wrong.
        #[source]
        source: crate::source::SourceError,
    },
    /// `diff --values` without a usable ggml (none found, or one refused).
    #[error("--values compares dequantized values, which needs ggml's dequantizers: {0}")]
    ValuesUnavailable(crate::ggml_lib::GgmlError),
    /// ggml refused to dequantize a tensor's rows.
    #[error("tensor '{tensor}': dequantizing: {source}")]
    Dequantize {
        /// The tensor whose rows were refused.
        tensor: String,
        /// ggml's refusal.
        #[source]
        source: crate::ggml_lib::GgmlError,
    },
    /// A byte range of a tensor does not fit in 64 bits.
    #[error("{path}: tensor '{tensor}': byte range past {offset} overflows")]
    Overflow {
        /// The file.
        path: PathBuf,
        /// The tensor.
        tensor: String,
        /// Where the range starts.
        offset: u64,
    },
}

/// Bytes compared per read.
pub const DEFAULT_CHUNK_BYTES: usize = 1 << 20;

/// Called from worker threads with (bytes of the child side compared so far, total).
pub type Progress = std::sync::Arc<dyn Fn(u64, u64) + Send + Sync>;

/// How comparisons read.
#[derive(Clone)]
pub struct CompareOptions {
    /// Bytes read and compared at once, per file, per worker.
    pub chunk_bytes: usize,
    /// Told as work completes, for a progress bar; `None`: nobody is listening.
    pub progress: Option<Progress>,
}

impl Default for CompareOptions {
    fn default() -> Self {
        CompareOptions {
            chunk_bytes: DEFAULT_CHUNK_BYTES,
            progress: None,
        }
    }
}

impl std::fmt::Debug for CompareOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompareOptions")
            .field("chunk_bytes", &self.chunk_bytes)
            .field("progress", &self.progress.is_some())
            .finish()
    }
}

/// A metadata value as reports show it: type, short text, JSON (arrays summarised).
/// Decoded once, while the model is open, so a report outlives the models it compares.
#[derive(Clone, Debug, PartialEq)]
pub struct Shown {
    /// The value's type.
    pub ty: ValueType,
    /// Short text: scalars in full, arrays as type, length and first items.
    pub summary: String,
    /// The value as JSON, arrays cut to their first items.
    pub json: Value,
}

impl Shown {
    /// How reports show `v`.
    pub fn of(v: ValueRef<'_>) -> Shown {
        Shown {
            ty: v.ty(),
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
    /// Its files: one, or every shard in order.
    pub paths: Vec<PathBuf>,
    /// Tensors, over all shards.
    pub tensors: usize,
    /// Key/values of the first shard (the model's metadata).
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
