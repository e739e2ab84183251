//! Weight mixing (Assembly of Experts): a tensor computed from several parents instead of
//! copied from one. The planner describes each mixed byte range as a [`Job`]; this module
//! carries it out, for `execute` (writing), `verify` (recomputing) and the planner itself
//! (the distances a `threshold` needs, [`distances`]).
//!
//! The arithmetic, chosen so anyone can reproduce it bit for bit (docs/mixing.md):
//! 1. each parent's rows are dequantized to f32 by ggml's `to_float` (F32 is read as is);
//! 2. a weight with a `.scale` companion (NVFP4's second-level scale): each dequantized value
//!    is multiplied, in f32, by that parent's scale of its matrix (`scale[e]` for expert e of
//!    a `{n_expert}` scale, `scale[0]` for a `{1}` one), as llama.cpp b11434 multiplies it
//!    into the matmul result ([`Input::scales`]); `.input_scale` is not applied (b11434's
//!    graph does not);
//! 3. each value is multiplied by its parent's weight (the recipe's number rounded to f32),
//!    in f32: `w * (x * s)`;
//! 4. the products are summed in f32, in the order the parents are written in the rule:
//!    `((w1*x1) + (w2*x2)) + (w3*x3)`, no fused multiply-add, parents of weight 0 left out;
//! 5. the sums are quantized by `ggml_quantize_chunk` to the output type, one call per run of
//!    rows of one matrix (expert), with that matrix's importance weights if an imatrix is
//!    given, exactly as `llama-quantize` passes them; then `ggml_validate_row_data`. The
//!    output has no second-level scale (the child's `.scale` of a mixed expert is 1.0), so a
//!    value NVFP4 cannot hold without one (beyond 448 × 6, its largest UE4M3 scale times its
//!    largest E2M1 value) is refused ([`MixError::OutOfRange`]) instead of saturated.
//!
//! Every output row depends only on the same row of each parent, so rows are processed in
//! chunks, several chunks in parallel (rayon), and written in order: the bytes are the same
//! whatever the number of threads or the chunk size. Memory is bounded by the chunk size
//! times the chunks in flight ([`Limits`]), not by the tensor.

pub mod imatrix;
mod kernel;

use std::fs::File;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

use rayon::prelude::*;

use crate::ggml_lib::GgmlError;
use crate::ggml_type::GgmlType;
pub use imatrix::{Imatrix, ImatrixError};

/// Why mixing failed.
#[derive(Debug, thiserror::Error)]
pub enum MixError {
    /// Reading a parent failed (or it ended early).
    #[error("tensor '{tensor}': reading parent '{parent}' ({path}) at byte {offset}: {source}")]
    Read {
        /// The tensor being mixed.
        tensor: String,
        /// The parent's name.
        parent: String,
        /// The shard read.
        path: PathBuf,
        /// The file offset.
        offset: u64,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// Reading the child (verify) failed.
    #[error("tensor '{tensor}': reading the child {path} at byte {offset}: {source}")]
    ReadChild {
        /// The tensor being checked.
        tensor: String,
        /// The child's shard.
        path: PathBuf,
        /// The file offset.
        offset: u64,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// ggml refused (or this build has no ggml).
    #[error("tensor '{tensor}': {source}")]
    Ggml {
        /// The tensor being mixed.
        tensor: String,
        /// What ggml said.
        #[source]
        source: GgmlError,
    },
    /// The importance matrix could not be read.
    #[error("tensor '{tensor}': {source}")]
    Imatrix {
        /// The tensor being mixed.
        tensor: String,
        /// The error.
        #[source]
        source: ImatrixError,
    },
    /// Writing the result failed.
    #[error("tensor '{tensor}': writing: {source}")]
    Write {
        /// The tensor being mixed.
        tensor: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// A mixed value is beyond what the output type holds without a second-level scale
    /// (NVFP4: 448 × 6), which ggml's quantizers do not make.
    #[error(
        "tensor '{tensor}': mixed value {value} (row {row} of the tensor) is beyond {max}, the largest {ty} holds without a second-level scale (448 x 6), and ggml's quantizers make no such scale; choose another output type (`type = \"Q8_0\"`, F16, F32)"
    )]
    OutOfRange {
        /// The tensor being mixed.
        tensor: String,
        /// The row of the tensor that holds it.
        row: u64,
        /// The value.
        value: f32,
        /// The output type.
        ty: GgmlType,
        /// The largest magnitude it holds.
        max: f32,
    },
    /// Ctrl-C.
    #[error("interrupted")]
    Interrupted,
}

/// The largest magnitude NVFP4 holds: its largest UE4M3 sub-block scale (448) times its
/// largest E2M1 value (6); ggml's quantizer saturates anything beyond.
pub const NVFP4_MAX: f32 = 448.0 * 6.0;

/// A byte range of a parent's shard file.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Span {
    /// The shard of the parent.
    pub shard: usize,
    /// Absolute offset in that file.
    pub offset: u64,
    /// Bytes.
    pub len: u64,
}

/// One parent's part in a mix: its weight and where its rows are.
#[derive(Clone, Debug, PartialEq)]
pub struct Input {
    /// Index of the parent (in the plan's parents).
    pub parent: usize,
    /// Its weight, as multiplied in f32.
    pub weight: f32,
    /// The type its rows are stored in.
    pub ty: GgmlType,
    /// Its rows for the job, in the job's row order: whole rows, concatenated.
    pub spans: Vec<Span>,
    /// The rows come from a tensor of another layout (fused gate/up experts).
    pub converted: bool,
    /// The parent's second-level scale of the rows (its `.scale` companion), multiplied into
    /// each dequantized value before the weight: one factor for all rows, or one per matrix
    /// (expert) of the rows, in order. `None`: the weight has no scale.
    pub scales: Option<Vec<f32>>,
}

impl Input {
    /// The factor of the rows of matrix `m` (counted from the input's first matrix).
    fn scale(&self, m: u64) -> Option<f32> {
        let s = self.scales.as_ref()?;
        Some(if s.len() == 1 { s[0] } else { s[m as usize] })
    }
}

/// Which importance weights a job quantizes with.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ImatrixUse {
    /// Index of the file in the plan's importance matrices.
    pub file: usize,
    /// The entry: the tensor's name.
    pub entry: String,
}

/// A run of output rows computed from parents. Rows `first_row..first_row + rows` of a
/// tensor whose rows are `n_per_row` elements and whose matrices (experts) are
/// `rows_per_matrix` rows each.
#[derive(Clone, Debug, PartialEq)]
pub struct Job {
    /// The tensor, for messages.
    pub tensor: String,
    /// The parents with a non-zero weight, in the rule's order.
    pub inputs: Vec<Input>,
    /// The type written.
    pub out_type: GgmlType,
    /// Elements per row (`ne0`).
    pub n_per_row: u64,
    /// Rows of the job.
    pub rows: u64,
    /// Index of the job's first row in the tensor.
    pub first_row: u64,
    /// Rows per matrix (`ne1` of a stacked tensor; all rows of a 2-D one): the importance
    /// weights change from one matrix to the next.
    pub rows_per_matrix: u64,
    /// The importance matrix, if the rule gives one and it has an entry for the tensor.
    pub imatrix: Option<ImatrixUse>,
}

impl Job {
    /// Bytes of one output row.
    pub fn out_row_bytes(&self) -> u64 {
        self.n_per_row / self.out_type.block_size() * self.out_type.type_size()
    }

    /// Bytes the job writes.
    pub fn out_bytes(&self) -> u64 {
        self.rows * self.out_row_bytes()
    }

    /// `mix r1 0.75 + v3 0.25 -> Q4_K`, or `v3 requantized to Q4_K`, for reports; inputs
    /// multiplied by their `.scale` say so.
    pub fn label(&self, names: &[String]) -> String {
        let scaled = if self.inputs.iter().any(|i| i.scales.is_some()) {
            " (values times each parent's .scale)"
        } else {
            ""
        };
        match self.inputs.as_slice() {
            [i] if i.weight == 1.0 => {
                format!(
                    "{}{scaled} requantized to {}",
                    names[i.parent], self.out_type
                )
            }
            inputs => {
                let parts: Vec<String> = inputs
                    .iter()
                    .map(|i| format!("{} {}", names[i.parent], i.weight))
                    .collect();
                format!("mix {}{scaled} -> {}", parts.join(" + "), self.out_type)
            }
        }
    }

    /// The matrices the job's rows belong to.
    pub fn matrices(&self) -> Range<u64> {
        let m0 = self.first_row / self.rows_per_matrix;
        let m1 = (self.first_row + self.rows).div_ceil(self.rows_per_matrix);
        m0..m1
    }
}

/// How much work is in flight at once.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Floats of one chunk (rounded to whole rows; at least one row).
    pub chunk_elements: u64,
    /// Chunks in flight at once (at most four per thread).
    pub chunks_in_flight: usize,
}

impl Default for Limits {
    /// 1 Mi floats a chunk (a chunk's buffers are about 16 MB), at most 16 in flight: about
    /// 256 MB of buffers at most, whatever the tensor or the number of cores.
    fn default() -> Self {
        Limits {
            chunk_elements: 1 << 20,
            chunks_in_flight: 16,
        }
    }
}

/// The files and importance matrices jobs read.
pub struct Ctx<'a> {
    /// Each parent's open shards (local files or remote sources), by parent then shard.
    pub files: &'a [Vec<crate::source::Source>],
    /// The parents' names, for messages.
    pub names: &'a [String],
    /// The importance matrices [`ImatrixUse::file`] indexes.
    pub imatrices: &'a [Imatrix],
    /// Chunking.
    pub limits: Limits,
}

impl Ctx<'_> {
    fn rows_per_chunk(&self, n_per_row: u64) -> u64 {
        (self.limits.chunk_elements / n_per_row.max(1)).max(1)
    }

    /// Chunks computed per round: a few per thread, so that a thread that finishes early
    /// takes another chunk instead of waiting for the round's slowest.
    fn in_flight(&self) -> usize {
        (4 * rayon::current_num_threads())
            .min(self.limits.chunks_in_flight)
            .max(1)
    }

    /// The importance weights of the job's matrices.
    fn weights(&self, job: &Job) -> Result<Option<Vec<f32>>, MixError> {
        let Some(u) = &job.imatrix else {
            return Ok(None);
        };
        self.imatrices[u.file]
            .weights(&u.entry, job.n_per_row, job.matrices())
            .map_err(|source| MixError::Imatrix {
                tensor: job.tensor.clone(),
                source,
            })
    }
}

/// Receives each computed chunk: its byte offset in the job, and its bytes.
type Sink<'a> = dyn FnMut(u64, &[u8]) -> Result<(), MixError> + 'a;

/// Compute the job chunk by chunk (in parallel, a bounded number at once) and hand each
/// chunk's bytes, in order, to `sink` with the chunk's byte offset in the job.
fn stream(job: &Job, ctx: &Ctx, cancel: &AtomicBool, sink: &mut Sink) -> Result<(), MixError> {
    let weights = ctx.weights(job)?;
    let per = ctx.rows_per_chunk(job.n_per_row);
    let chunks: Vec<Range<u64>> = (0..job.rows.div_ceil(per))
        .map(|c| c * per..((c + 1) * per).min(job.rows))
        .collect();
    for batch in chunks.chunks(ctx.in_flight()) {
        if cancel.load(Ordering::Relaxed) {
            return Err(MixError::Interrupted);
        }
        let done: Vec<Result<Vec<u8>, MixError>> = batch
            .par_iter()
            .map(|rows| kernel::mix_rows(job, ctx, weights.as_deref(), rows.clone()))
            .collect();
        for (rows, bytes) in batch.iter().zip(done) {
            sink(rows.start * job.out_row_bytes(), &bytes?)?;
        }
    }
    Ok(())
}

/// Compute the job and write its bytes through `write`, calling `progress` with the bytes
/// written so far after each chunk.
pub fn run(
    job: &Job,
    ctx: &Ctx,
    cancel: &AtomicBool,
    write: &mut dyn FnMut(&[u8]) -> std::io::Result<()>,
    progress: &mut dyn FnMut(u64),
) -> Result<(), MixError> {
    stream(job, ctx, cancel, &mut |at, bytes| {
        write(bytes).map_err(|source| MixError::Write {
            tensor: job.tensor.clone(),
            source,
        })?;
        progress(at + bytes.len() as u64);
        Ok(())
    })
}

/// Recompute the job and compare it with the child's bytes at `offset` of `child`: the
/// first differing byte (from the job's start), or `None` when all are equal.
pub fn first_difference(
    job: &Job,
    ctx: &Ctx,
    child: &File,
    child_path: &std::path::Path,
    offset: u64,
) -> Result<Option<u64>, MixError> {
    use std::os::unix::fs::FileExt;
    let mut found = None;
    let never = AtomicBool::new(false);
    let mut buf = Vec::new();
    let r = stream(job, ctx, &never, &mut |at, bytes| {
        if found.is_some() {
            return Ok(());
        }
        buf.resize(bytes.len(), 0);
        child
            .read_exact_at(&mut buf, offset + at)
            .map_err(|source| MixError::ReadChild {
                tensor: job.tensor.clone(),
                path: child_path.to_path_buf(),
                offset: offset + at,
                source,
            })?;
        if let Some(i) = buf.iter().zip(bytes).position(|(a, b)| a != b) {
            found = Some(at + i as u64);
        }
        Ok(())
    });
    r.map(|()| found)
}

/// What [`distances`] compares: the base's rows and the other parents' rows of the same
/// tensor, cut into `slices` equal slices (experts, or one for the whole tensor).
pub struct Measure<'a> {
    /// The tensor, for messages.
    pub tensor: &'a str,
    /// The base's rows (its weight is ignored).
    pub base: &'a Input,
    /// The parents compared with it.
    pub others: &'a [Input],
    /// Elements per row.
    pub n_per_row: u64,
    /// Rows of the tensor.
    pub rows: u64,
    /// Slices: each is `rows / slices` rows.
    pub slices: u64,
    /// Rows per matrix (expert): the inputs' scales change from one matrix to the next.
    pub rows_per_matrix: u64,
}

/// For each slice, the largest relative distance `‖P − B‖ / ‖B‖` (Frobenius norms of the
/// dequantized values times their scales, B the base) over the other parents P, as [`crate::distance`] defines
/// it (the same numbers `diff --values` shows): sums of squares in f64, row by row in order,
/// so the result does not depend on chunking or threads. A slice where B is all zeros has
/// distance 0 if P is too, else infinity. This reads and dequantizes every compared
/// parent's rows once.
pub fn distances(m: &Measure, ctx: &Ctx) -> Result<Vec<f64>, MixError> {
    let per = ctx.rows_per_chunk(m.n_per_row);
    let chunks: Vec<Range<u64>> = (0..m.rows.div_ceil(per))
        .map(|c| c * per..((c + 1) * per).min(m.rows))
        .collect();
    // Per row: sum of B², then sum of (P − B)² for each other parent.
    let mut rows: Vec<Vec<f64>> = Vec::with_capacity(m.rows as usize);
    for batch in chunks.chunks(ctx.in_flight()) {
        let done: Vec<Result<Vec<Vec<f64>>, MixError>> = batch
            .par_iter()
            .map(|r| kernel::row_sums(m, ctx, r.clone()))
            .collect();
        for d in done {
            rows.extend(d?);
        }
    }
    let per_slice = (m.rows / m.slices.max(1)).max(1) as usize;
    Ok(rows
        .chunks(per_slice)
        .map(|slice| {
            let mut sums = vec![0f64; m.others.len() + 1];
            for row in slice {
                for (s, v) in sums.iter_mut().zip(row) {
                    *s += v;
                }
            }
            sums[1..]
                .iter()
                .map(|&d| crate::distance::relative_distance(d, sums[0]))
                // NaN (a parent holds NaN) wins: such a slice is never "close enough".
                .fold(0.0, |a: f64, b: f64| {
                    if a.is_nan() || b.is_nan() {
                        f64::NAN
                    } else {
                        a.max(b)
                    }
                })
        })
        .collect())
}

#[cfg(test)]
mod tests;
