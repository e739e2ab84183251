//! Byte-level comparison of models: `diff` (two models, tensor by tensor and key by key) and
//! `verify` (which parent each tensor and expert of a child came from, and, given a recipe,
//! whether the child is exactly what the recipe makes). Owns the comparison engine and the
//! text and JSON renderings of its reports.
//!
//! Nothing is dequantized or hashed: tensor bytes are compared directly, in fixed-size chunks
//! read with positional reads from handles opened once per shard, in parallel across
//! tensors and experts, so memory stays at two chunk buffers per worker whatever the model
//! size. Stacked expert tensors and the router are cut by expert (expert e is the outer slice
//! e, as in the planner), so a report can say which experts differ or where they came from.

use std::collections::HashMap;
use std::fmt::{self, Write as _};
use std::fs::File;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use rayon::prelude::*;
use serde_json::{Value, json};

use crate::ggml_type::GgmlType;
use crate::gguf::{GgufError, Model, TensorInfo, ValueRef, ValueType};
use crate::layout;
use crate::plan::{self, KEY_SPLICE_RECIPE, Parent, PlanError, SplitOptions};
use crate::recipe::{Recipe, layer_of};
use crate::report::{shape, tensor_group};

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
    #[error("{path}: tensor '{tensor}': byte range past {offset} overflows")]
    Overflow {
        path: PathBuf,
        tensor: String,
        offset: u64,
    },
}

/// Bytes compared per read.
pub const DEFAULT_CHUNK_BYTES: usize = 1 << 20;
/// About this many bytes of one tensor make one unit of parallel work.
const JOB_BYTES: u64 = 16 << 20;
/// Tensors with more outer slices than this are compared whole unless a plan cuts them, so
/// the per-expert results of a hostile file stay small.
const MAX_SLICES: u64 = 1 << 16;
/// Expert runs shown per tensor in a text label.
const SHOWN_RANGES: usize = 8;
/// Mismatches shown in a text report; the JSON has them all.
const SHOWN_MISMATCHES: usize = 20;

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

// --- the engine ------------------------------------------------------------------------------

/// Read-only handles on every shard of the models compared, opened once and shared by all
/// workers (positional reads need no seek, so no locking).
#[derive(Default)]
struct FileSet {
    files: Vec<File>,
    paths: Vec<PathBuf>,
}

impl FileSet {
    /// Open every shard of `model`; returns the index of its first shard.
    fn add(&mut self, model: &Model) -> Result<usize, CompareError> {
        let base = self.files.len();
        for shard in model.shards() {
            let f = File::open(&shard.path).map_err(|source| CompareError::Open {
                path: shard.path.clone(),
                source,
            })?;
            self.files.push(f);
            self.paths.push(shard.path.clone());
        }
        Ok(base)
    }

    fn read(&self, src: Src, at: u64, buf: &mut [u8], tensor: &str) -> Result<(), CompareError> {
        let path = &self.paths[src.file];
        let offset = src
            .offset
            .checked_add(at)
            .ok_or_else(|| CompareError::Overflow {
                path: path.clone(),
                tensor: tensor.to_string(),
                offset: src.offset,
            })?;
        self.files[src.file]
            .read_exact_at(buf, offset)
            .map_err(|source| CompareError::Read {
                path: path.clone(),
                tensor: tensor.to_string(),
                offset,
                len: buf.len() as u64,
                source,
            })
    }
}

/// Where byte 0 of a tensor (or of a byte range under comparison) is.
#[derive(Clone, Copy, Debug)]
struct Src {
    file: usize,
    offset: u64,
}

/// How a tensor is cut for comparison.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Slicing {
    bytes: u64,
    count: u64,
    /// Cut by expert (stacked experts, router rows, router bias elements).
    by_expert: bool,
}

/// Stacked experts and the router are cut by expert, as the planner cuts them; everything
/// else is one slice. `planned`: a plan cuts this tensor, so the slice count is already one
/// the planner accepted and allocated for.
fn slicing(info: &TensorInfo, planned: bool) -> Slicing {
    let sliceable = plan::is_stacked_experts(&info.name, &info.dims)
        || (plan::is_router(&info.name) && !info.dims.is_empty());
    if sliceable
        && let (Some(bytes), Some(&count)) = (
            layout::outer_slice_bytes(info.ty, &info.dims),
            info.dims.last(),
        )
        && bytes > 0
        && count > 0
        && (count <= MAX_SLICES || planned)
        && bytes.checked_mul(count) == Some(info.n_bytes)
    {
        return Slicing {
            bytes,
            count,
            by_expert: true,
        };
    }
    Slicing {
        bytes: info.n_bytes,
        count: 1,
        by_expert: false,
    }
}

/// One byte range of the "child" side, cut into equal slices, to compare with the same
/// range of each candidate.
struct Work {
    tensor: String,
    slice_bytes: u64,
    n_slices: u64,
    child: Src,
    candidates: Vec<Src>,
}

/// Per candidate, per slice: the first differing byte (from the start of the range), or
/// `None` when the slice is equal.
type FirstDiffs = Vec<Vec<Option<u64>>>;

/// Compare every work item; results in the order of `work`, whatever the thread count.
fn compare_all(
    work: &[Work],
    files: &FileSet,
    chunk: usize,
) -> Result<Vec<FirstDiffs>, CompareError> {
    let chunk = chunk.max(1);
    let mut jobs: Vec<(usize, Range<u64>)> = Vec::new();
    for (i, w) in work.iter().enumerate() {
        if w.candidates.is_empty() || w.slice_bytes == 0 {
            continue;
        }
        let per_job = (JOB_BYTES / w.slice_bytes).max(1);
        let mut s = 0;
        while s < w.n_slices {
            let e = s.saturating_add(per_job).min(w.n_slices);
            jobs.push((i, s..e));
            s = e;
        }
    }
    let done: Vec<(usize, u64, FirstDiffs)> = jobs
        .into_par_iter()
        .map_init(
            || (vec![0u8; chunk], vec![0u8; chunk]),
            |bufs, (i, slices)| {
                let start = slices.start;
                compare_job(&work[i], slices, files, bufs).map(|r| (i, start, r))
            },
        )
        .collect::<Result<_, _>>()?;
    let mut out: Vec<FirstDiffs> = work
        .iter()
        .map(|w| vec![vec![None; w.n_slices as usize]; w.candidates.len()])
        .collect();
    for (i, start, r) in done {
        for (c, firsts) in r.into_iter().enumerate() {
            let s = start as usize;
            out[i][c][s..s + firsts.len()].copy_from_slice(&firsts);
        }
    }
    Ok(out)
}

/// Compare slices `slices` of one work item, a chunk at a time: the child's chunk is read
/// once and compared with each candidate that still has an equal slice in it. A candidate
/// stops being read as soon as every slice it overlaps is known to differ.
fn compare_job(
    w: &Work,
    slices: Range<u64>,
    files: &FileSet,
    (a, b): &mut (Vec<u8>, Vec<u8>),
) -> Result<FirstDiffs, CompareError> {
    let s = w.slice_bytes;
    let n = (slices.end - slices.start) as usize;
    let mut first: FirstDiffs = vec![vec![None; n]; w.candidates.len()];
    let overflow = || CompareError::Overflow {
        path: files.paths[w.child.file].clone(),
        tensor: w.tensor.clone(),
        offset: w.child.offset,
    };
    let end = slices.end.checked_mul(s).ok_or_else(overflow)?;
    let mut pos = slices.start.checked_mul(s).ok_or_else(overflow)?;
    let chunk = a.len() as u64;
    while pos < end {
        // Jump to the first slice that some candidate may still equal.
        let here = (pos / s - slices.start) as usize;
        let Some(next) = (here..n).find(|&i| first.iter().any(|f| f[i].is_none())) else {
            break;
        };
        if next > here {
            pos = (slices.start + next as u64) * s;
        }
        let len = (end - pos).min(chunk);
        let lo = (pos / s - slices.start) as usize;
        let hi = ((pos + len - 1) / s - slices.start) as usize;
        let a = &mut a[..len as usize];
        files.read(w.child, pos, a, &w.tensor)?;
        for (c, &src) in w.candidates.iter().enumerate() {
            if !first[c][lo..=hi].iter().any(Option::is_none) {
                continue;
            }
            let b = &mut b[..len as usize];
            files.read(src, pos, b, &w.tensor)?;
            for (i, slot) in first[c].iter_mut().enumerate().take(hi + 1).skip(lo) {
                if slot.is_some() {
                    continue;
                }
                let slice_start = (slices.start + i as u64) * s;
                let from = slice_start.max(pos);
                let to = (slice_start + s).min(pos + len);
                let r = (from - pos) as usize..(to - pos) as usize;
                let (x, y) = (&a[r.clone()], &b[r]);
                if x != y {
                    let k = x.iter().zip(y).position(|(p, q)| p != q).unwrap_or(0);
                    *slot = Some(from + k as u64);
                }
            }
        }
        pos += len;
    }
    Ok(first)
}

// --- shared report pieces ----------------------------------------------------------------------

/// A metadata value as reports show it: type, short text, JSON (arrays summarised).
#[derive(Clone, Debug, PartialEq)]
pub struct Shown {
    pub ty: ValueType,
    pub summary: String,
    pub json: Value,
}

impl Shown {
    fn of(v: ValueRef<'_>) -> Shown {
        Shown {
            ty: v.ty,
            summary: v.summary(4),
            json: v.to_json(false),
        }
    }

    fn to_json(&self) -> Value {
        json!({"type": self.ty.name(), "value": self.json})
    }
}

impl fmt::Display for Shown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.summary, self.ty)
    }
}

/// Sorted indices -> half-open ranges of consecutive ones.
fn to_ranges(indices: impl IntoIterator<Item = u64>) -> Vec<Range<u64>> {
    let mut out: Vec<Range<u64>> = Vec::new();
    for i in indices {
        match out.last_mut() {
            Some(r) if r.end == i => r.end = i + 1,
            _ => out.push(i..i + 1),
        }
    }
    out
}

/// `0-3,7` for half-open ranges.
pub fn ranges_text(ranges: &[Range<u64>]) -> String {
    let parts: Vec<String> = ranges
        .iter()
        .map(|r| {
            if r.end - r.start == 1 {
                r.start.to_string()
            } else {
                format!("{}-{}", r.start, r.end - 1)
            }
        })
        .collect();
    parts.join(",")
}

/// As [`ranges_text`], cut after a few ranges (for one-line labels).
fn short_ranges_text(ranges: &[Range<u64>]) -> String {
    if ranges.len() <= SHOWN_RANGES {
        return ranges_text(ranges);
    }
    format!(
        "{},... {} more",
        ranges_text(&ranges[..SHOWN_RANGES]),
        ranges.len() - SHOWN_RANGES
    )
}

/// Half-open ranges as inclusive `[first, last]` pairs, as `plan_json` shows experts.
fn ranges_json(ranges: &[Range<u64>]) -> Value {
    json!(
        ranges
            .iter()
            .map(|r| [r.start, r.end - 1])
            .collect::<Vec<_>>()
    )
}

/// `blk.N.rest` -> (Some(N), rest); other names -> (None, name).
fn split_block(name: &str) -> (Option<u64>, &str) {
    match layer_of(name) {
        Some(n) => {
            let prefix_len = "blk.".len() + n.to_string().len() + 1;
            match name.get(prefix_len..) {
                Some(rest) if name[..prefix_len].ends_with('.') => (Some(n), rest),
                _ => (None, name),
            }
        }
        None => (None, name),
    }
}

/// Several names as one: `ffn_{gate,up,down}_exps.weight`. The shared prefix and suffix are
/// cut at `_` or `.` so the braces hold whole name parts.
fn merge_names(names: &[&str]) -> String {
    if names.len() == 1 {
        return names[0].to_string();
    }
    let common_prefix = names[1..].iter().fold(names[0].len(), |n, s| {
        names[0]
            .bytes()
            .zip(s.bytes())
            .take(n)
            .take_while(|(x, y)| x == y)
            .count()
    });
    let head = &names[0][..common_prefix];
    let prefix_len = head.rfind(['_', '.']).map_or(0, |i| i + 1);
    let rests: Vec<&str> = names.iter().map(|n| &n[prefix_len..]).collect();
    let common_suffix = rests[1..].iter().fold(rests[0].len(), |n, s| {
        rests[0]
            .bytes()
            .rev()
            .zip(s.bytes().rev())
            .take(n)
            .take_while(|(x, y)| x == y)
            .count()
    });
    let tail = &rests[0][rests[0].len() - common_suffix..];
    let suffix_len = tail.find(['_', '.']).map_or(0, |i| tail.len() - i);
    let middles: Vec<&str> = rests.iter().map(|r| &r[..r.len() - suffix_len]).collect();
    if middles.iter().any(|m| m.is_empty()) || !names.iter().all(|n| n.is_ascii()) {
        return names.join(", ");
    }
    format!(
        "{}{{{}}}{}",
        &names[0][..prefix_len],
        middles.join(","),
        &rests[0][rests[0].len() - suffix_len..]
    )
}

/// One line of a compact report: tensors and what is said of them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompactLine {
    /// `blk.1-2 ffn_{gate,up,down}_exps.weight`, or plain names.
    pub tensors: String,
    pub count: usize,
    pub label: String,
}

/// Group (name, label) pairs, given in model order, into lines: first by name without its
/// block number, then names whose block sets and labels agree share a line.
pub fn compact(entries: &[(&str, String)]) -> Vec<CompactLine> {
    // (rest, label) -> blocks, in order of first appearance.
    let mut by_rest: Vec<(&str, &str, Option<Vec<u64>>)> = Vec::new();
    let mut rest_index: HashMap<(bool, &str, &str), usize> = HashMap::new();
    for (name, label) in entries {
        let (block, rest) = split_block(name);
        let key = (block.is_some(), rest, label.as_str());
        match rest_index.get(&key) {
            Some(&i) => {
                if let (Some(b), Some(blocks)) = (block, by_rest[i].2.as_mut()) {
                    blocks.push(b);
                }
            }
            None => {
                rest_index.insert(key, by_rest.len());
                by_rest.push((rest, label.as_str(), block.map(|b| vec![b])));
            }
        }
    }
    // (blocks, label) -> rests and tensor count.
    type Line<'a> = (Option<Vec<u64>>, &'a str, Vec<&'a str>, usize);
    let mut lines: Vec<Line> = Vec::new();
    for (rest, label, blocks) in by_rest {
        let mut blocks = blocks;
        if let Some(b) = blocks.as_mut() {
            b.sort_unstable();
            b.dedup();
        }
        let n = blocks.as_ref().map_or(1, Vec::len);
        match lines
            .iter_mut()
            .find(|(b, l, _, _)| *b == blocks && *l == label)
        {
            Some(line) => {
                line.2.push(rest);
                line.3 += n;
            }
            None => lines.push((blocks, label, vec![rest], n)),
        }
    }
    lines
        .into_iter()
        .map(|(blocks, label, rests, count)| CompactLine {
            tensors: match blocks {
                Some(b) => format!("blk.{} {}", ranges_text(&to_ranges(b)), merge_names(&rests)),
                None => merge_names(&rests),
            },
            count,
            label: label.to_string(),
        })
        .collect()
}

/// Compact lines with the most common label (among those `may_default` allows) folded into
/// one closing "everything else" line.
fn compact_text(out: &mut String, entries: &[(&str, String)], may_default: impl Fn(&str) -> bool) {
    let mut counts: Vec<(&str, usize)> = Vec::new();
    for (_, label) in entries {
        match counts.iter_mut().find(|(l, _)| *l == label) {
            Some(c) => c.1 += 1,
            None => counts.push((label, 1)),
        }
    }
    let default = counts
        .iter()
        .filter(|(l, _)| may_default(l))
        .max_by_key(|(_, n)| *n)
        .map(|(l, n)| (l.to_string(), *n));
    let rest: Vec<(&str, String)> = entries
        .iter()
        .filter(|(_, l)| default.as_ref().is_none_or(|(d, _)| l != d))
        .cloned()
        .collect();
    for line in compact(&rest) {
        let _ = writeln!(out, "  {}: {}", line.tensors, line.label);
    }
    if let Some((label, n)) = default {
        let tensors = if n == 1 { "tensor" } else { "tensors" };
        if rest.is_empty() {
            let _ = writeln!(out, "  all {n} {tensors}: {label}");
        } else {
            let _ = writeln!(out, "  everything else ({n} {tensors}): {label}");
        }
    }
}

/// Model files and counts, for report headers.
#[derive(Clone, Debug)]
pub struct ModelSummary {
    pub paths: Vec<PathBuf>,
    pub tensors: usize,
    pub keys: usize,
}

impl ModelSummary {
    fn of(model: &Model) -> ModelSummary {
        ModelSummary {
            paths: model.shards().iter().map(|s| s.path.clone()).collect(),
            tensors: model.tensor_count(),
            keys: model.first().kvs().len(),
        }
    }

    fn text(&self) -> String {
        let files = if self.paths.len() == 1 {
            String::new()
        } else {
            format!(" + {} more shards", self.paths.len() - 1)
        };
        format!(
            "{}{files} ({} tensors, {} keys)",
            self.paths[0].display(),
            self.tensors,
            self.keys
        )
    }

    fn to_json(&self) -> Value {
        json!({"files": self.paths, "tensors": self.tensors, "keys": self.keys})
    }
}

/// Keys that say how a model is sharded (and which run wrote the shards), not what it is.
fn is_split_key(key: &str) -> bool {
    key.starts_with("split.") || key == crate::gguf::model::KEY_SET_ID
}

// --- diff --------------------------------------------------------------------------------------

/// How a tensor of A compares with the tensor of the same name in B.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TensorStatus {
    Identical,
    /// Same type and shape, different bytes. `first_offset` is the first differing byte from
    /// the tensor's start; `experts` says which experts differ, for tensors cut by expert.
    BytesDiffer {
        first_offset: u64,
        experts: Option<ExpertDiff>,
    },
    /// Different types (and maybe shapes): the bytes are not comparable.
    TypeDiffers {
        a: GgmlType,
        b: GgmlType,
        a_dims: Vec<u64>,
        b_dims: Vec<u64>,
    },
    ShapeDiffers {
        a: Vec<u64>,
        b: Vec<u64>,
    },
    OnlyInA,
    OnlyInB,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExpertDiff {
    /// Experts in the tensor.
    pub count: u64,
    /// Experts whose bytes differ.
    pub differ: Vec<Range<u64>>,
}

impl TensorStatus {
    /// The name used in JSON and group totals.
    pub fn kind(&self) -> &'static str {
        match self {
            TensorStatus::Identical => "identical",
            TensorStatus::BytesDiffer { .. } => "bytes_differ",
            TensorStatus::TypeDiffers { .. } => "type_differs",
            TensorStatus::ShapeDiffers { .. } => "shape_differs",
            TensorStatus::OnlyInA => "only_in_a",
            TensorStatus::OnlyInB => "only_in_b",
        }
    }

    fn label(&self) -> String {
        match self {
            TensorStatus::Identical => "identical".into(),
            TensorStatus::BytesDiffer { experts: None, .. } => "bytes differ".into(),
            TensorStatus::BytesDiffer {
                experts: Some(e), ..
            } => format!(
                "bytes differ in experts {} of {}",
                ranges_text(&e.differ),
                e.count
            ),
            TensorStatus::TypeDiffers {
                a,
                b,
                a_dims,
                b_dims,
            } => {
                let shapes = if a_dims != b_dims {
                    format!(", shape {} vs {}", shape(a_dims), shape(b_dims))
                } else {
                    String::new()
                };
                format!("type {a} vs {b}{shapes}")
            }
            TensorStatus::ShapeDiffers { a, b } => format!("shape {} vs {}", shape(a), shape(b)),
            TensorStatus::OnlyInA => "only in A".into(),
            TensorStatus::OnlyInB => "only in B".into(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorDiff {
    pub name: String,
    pub group: &'static str,
    pub status: TensorStatus,
}

#[derive(Clone, Debug, PartialEq)]
pub enum KeyStatus {
    OnlyInA(Shown),
    OnlyInB(Shown),
    /// Different type or bytes.
    Differs {
        a: Shown,
        b: Shown,
    },
}

#[derive(Clone, Debug, PartialEq)]
pub struct KeyDiff {
    pub key: String,
    pub status: KeyStatus,
}

/// Totals of one tensor group.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GroupSummary {
    pub group: &'static str,
    pub tensors: usize,
    pub identical: usize,
    pub bytes_differ: usize,
    pub type_differs: usize,
    pub shape_differs: usize,
    pub only_in_a: usize,
    pub only_in_b: usize,
}

/// The order groups are listed in.
const GROUP_ORDER: &[&str] = &[
    "embeddings",
    "attention",
    "norms",
    "dense FFN",
    "router",
    "shared experts",
    "routed experts",
    "output",
    "other",
];

#[derive(Clone, Debug)]
pub struct DiffReport {
    pub a: ModelSummary,
    pub b: ModelSummary,
    /// A's tensors in A's order, then those only in B in B's order.
    pub tensors: Vec<TensorDiff>,
    /// Keys that differ (`split.*` ignored): A's order, then those only in B.
    pub keys: Vec<KeyDiff>,
}

impl DiffReport {
    /// No tensor and no key differs.
    pub fn identical(&self) -> bool {
        self.keys.is_empty()
            && self
                .tensors
                .iter()
                .all(|t| t.status == TensorStatus::Identical)
    }

    pub fn tensor(&self, name: &str) -> Option<&TensorDiff> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// Totals by tensor group, in a fixed order; groups without tensors left out.
    pub fn groups(&self) -> Vec<GroupSummary> {
        let mut out: Vec<GroupSummary> = GROUP_ORDER
            .iter()
            .map(|g| GroupSummary {
                group: g,
                ..Default::default()
            })
            .collect();
        for t in &self.tensors {
            let i = GROUP_ORDER
                .iter()
                .position(|g| *g == t.group)
                .unwrap_or(GROUP_ORDER.len() - 1);
            let g = &mut out[i];
            g.tensors += 1;
            match t.status {
                TensorStatus::Identical => g.identical += 1,
                TensorStatus::BytesDiffer { .. } => g.bytes_differ += 1,
                TensorStatus::TypeDiffers { .. } => g.type_differs += 1,
                TensorStatus::ShapeDiffers { .. } => g.shape_differs += 1,
                TensorStatus::OnlyInA => g.only_in_a += 1,
                TensorStatus::OnlyInB => g.only_in_b += 1,
            }
        }
        out.retain(|g| g.tensors > 0);
        out
    }

    fn count(&self, kind: &str) -> usize {
        self.tensors
            .iter()
            .filter(|t| t.status.kind() == kind)
            .count()
    }
}

/// Compare two models (each one file or a shard set) tensor by tensor and key by key.
pub fn diff(a: &Model, b: &Model, opts: &CompareOptions) -> Result<DiffReport, CompareError> {
    let mut files = FileSet::default();
    let fa = files.add(a)?;
    let fb = files.add(b)?;

    let mut tensors: Vec<TensorDiff> = Vec::with_capacity(a.tensor_count());
    // (index in `tensors`, slicing) of each tensor whose bytes are to be compared.
    let mut pending: Vec<(usize, Slicing)> = Vec::new();
    let mut work: Vec<Work> = Vec::new();
    for t in a.tensors() {
        let name = &t.info.name;
        let status = match b.tensor(name) {
            None => TensorStatus::OnlyInA,
            Some(u) if u.info.ty != t.info.ty => TensorStatus::TypeDiffers {
                a: t.info.ty,
                b: u.info.ty,
                a_dims: t.info.dims.clone(),
                b_dims: u.info.dims.clone(),
            },
            Some(u) if u.info.dims != t.info.dims => TensorStatus::ShapeDiffers {
                a: t.info.dims.clone(),
                b: u.info.dims.clone(),
            },
            Some(u) => {
                let sl = slicing(t.info, false);
                pending.push((tensors.len(), sl));
                work.push(Work {
                    tensor: name.clone(),
                    slice_bytes: sl.bytes,
                    n_slices: sl.count,
                    child: Src {
                        file: fa + t.shard,
                        offset: t.file_offset,
                    },
                    candidates: vec![Src {
                        file: fb + u.shard,
                        offset: u.file_offset,
                    }],
                });
                TensorStatus::Identical
            }
        };
        tensors.push(TensorDiff {
            name: name.clone(),
            group: tensor_group(name),
            status,
        });
    }
    for u in b.tensors() {
        if a.tensor(&u.info.name).is_none() {
            tensors.push(TensorDiff {
                name: u.info.name.clone(),
                group: tensor_group(&u.info.name),
                status: TensorStatus::OnlyInB,
            });
        }
    }

    let results = compare_all(&work, &files, opts.chunk_bytes)?;
    for ((i, sl), firsts) in pending.into_iter().zip(results) {
        let per_slice = &firsts[0];
        let Some(first_offset) = per_slice.iter().flatten().min().copied() else {
            continue;
        };
        let experts = sl.by_expert.then(|| ExpertDiff {
            count: sl.count,
            differ: to_ranges(
                per_slice
                    .iter()
                    .enumerate()
                    .filter(|(_, f)| f.is_some())
                    .map(|(e, _)| e as u64),
            ),
        });
        tensors[i].status = TensorStatus::BytesDiffer {
            first_offset,
            experts,
        };
    }

    Ok(DiffReport {
        a: ModelSummary::of(a),
        b: ModelSummary::of(b),
        tensors,
        keys: diff_keys(a, b),
    })
}

fn diff_keys(a: &Model, b: &Model) -> Vec<KeyDiff> {
    let (fa, fb) = (a.first(), b.first());
    let mut out = Vec::new();
    for kv in fa.kvs().iter().filter(|kv| !is_split_key(&kv.key)) {
        let va = fa.value(kv);
        let status = match fb.get(&kv.key) {
            None => KeyStatus::OnlyInA(Shown::of(va)),
            // ValueRef equality is type and raw bytes.
            Some(vb) if vb != va => KeyStatus::Differs {
                a: Shown::of(va),
                b: Shown::of(vb),
            },
            Some(_) => continue,
        };
        out.push(KeyDiff {
            key: kv.key.clone(),
            status,
        });
    }
    for kv in fb.kvs().iter().filter(|kv| !is_split_key(&kv.key)) {
        if fa.get(&kv.key).is_none() {
            out.push(KeyDiff {
                key: kv.key.clone(),
                status: KeyStatus::OnlyInB(Shown::of(fb.value(kv))),
            });
        }
    }
    out
}

pub fn diff_text(r: &DiffReport) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "A: {}", r.a.text());
    let _ = writeln!(out, "B: {}", r.b.text());
    let counts: Vec<String> = [
        ("identical", "identical"),
        ("bytes_differ", "differ in bytes"),
        ("type_differs", "differ in type"),
        ("shape_differs", "differ in shape"),
        ("only_in_a", "only in A"),
        ("only_in_b", "only in B"),
    ]
    .iter()
    .filter_map(|(kind, text)| {
        let n = r.count(kind);
        (n > 0).then(|| format!("{n} {text}"))
    })
    .collect();
    let _ = writeln!(
        out,
        "\ntensors: {}",
        if counts.is_empty() {
            "none".into()
        } else {
            counts.join(", ")
        }
    );
    let entries: Vec<(&str, String)> = r
        .tensors
        .iter()
        .map(|t| (t.name.as_str(), t.status.label()))
        .collect();
    compact_text(&mut out, &entries, |l| l == "identical");

    let _ = writeln!(
        out,
        "\n  {:<16} {:>7} {:>9} {:>6} {:>5} {:>6} {:>7} {:>7}",
        "group", "tensors", "identical", "bytes", "type", "shape", "only A", "only B"
    );
    for g in r.groups() {
        let _ = writeln!(
            out,
            "  {:<16} {:>7} {:>9} {:>6} {:>5} {:>6} {:>7} {:>7}",
            g.group,
            g.tensors,
            g.identical,
            g.bytes_differ,
            g.type_differs,
            g.shape_differs,
            g.only_in_a,
            g.only_in_b
        );
    }

    if r.keys.is_empty() {
        let _ = writeln!(out, "\nmetadata: identical (split.* keys ignored)");
    } else {
        let _ = writeln!(
            out,
            "\nmetadata: {} key{} differ (split.* keys ignored)",
            r.keys.len(),
            if r.keys.len() == 1 { "" } else { "s" }
        );
        for k in &r.keys {
            let _ = match &k.status {
                KeyStatus::OnlyInA(v) => writeln!(out, "  {}: only in A: {v}", k.key),
                KeyStatus::OnlyInB(v) => writeln!(out, "  {}: only in B: {v}", k.key),
                KeyStatus::Differs { a, b } => writeln!(out, "  {}: {a} vs {b}", k.key),
            };
        }
    }
    let _ = writeln!(
        out,
        "\n{}",
        if r.identical() {
            "the models are identical"
        } else {
            "the models differ"
        }
    );
    out
}

pub fn diff_json(r: &DiffReport) -> Value {
    let tensors: Vec<Value> = r
        .tensors
        .iter()
        .map(|t| {
            let mut v = json!({"name": t.name, "group": t.group, "status": t.status.kind()});
            let o = v.as_object_mut().expect("object");
            match &t.status {
                TensorStatus::BytesDiffer {
                    first_offset,
                    experts,
                } => {
                    o.insert("first_difference".into(), json!(first_offset));
                    if let Some(e) = experts {
                        o.insert(
                            "experts".into(),
                            json!({"count": e.count, "differ": ranges_json(&e.differ)}),
                        );
                    }
                }
                TensorStatus::TypeDiffers {
                    a,
                    b,
                    a_dims,
                    b_dims,
                } => {
                    o.insert("type".into(), json!({"a": a.name(), "b": b.name()}));
                    o.insert("shape".into(), json!({"a": a_dims, "b": b_dims}));
                }
                TensorStatus::ShapeDiffers { a, b } => {
                    o.insert("shape".into(), json!({"a": a, "b": b}));
                }
                _ => {}
            }
            v
        })
        .collect();
    let keys: Vec<Value> = r
        .keys
        .iter()
        .map(|k| match &k.status {
            KeyStatus::OnlyInA(v) => json!({"key": k.key, "status": "only_in_a", "a": v.to_json()}),
            KeyStatus::OnlyInB(v) => json!({"key": k.key, "status": "only_in_b", "b": v.to_json()}),
            KeyStatus::Differs { a, b } => {
                json!({"key": k.key, "status": "differs", "a": a.to_json(), "b": b.to_json()})
            }
        })
        .collect();
    let groups: Vec<Value> = r
        .groups()
        .iter()
        .map(|g| {
            json!({
                "group": g.group, "tensors": g.tensors, "identical": g.identical,
                "bytes_differ": g.bytes_differ, "type_differs": g.type_differs,
                "shape_differs": g.shape_differs, "only_in_a": g.only_in_a,
                "only_in_b": g.only_in_b,
            })
        })
        .collect();
    let counts: serde_json::Map<String, Value> = [
        "identical",
        "bytes_differ",
        "type_differs",
        "shape_differs",
        "only_in_a",
        "only_in_b",
    ]
    .iter()
    .map(|k| (k.to_string(), json!(r.count(k))))
    .collect();
    json!({
        "a": r.a.to_json(),
        "b": r.b.to_json(),
        "identical": r.identical(),
        "counts": counts,
        "groups": groups,
        "tensors": tensors,
        "metadata": keys,
    })
}

// --- verify ------------------------------------------------------------------------------------

/// Which parents some bytes match.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Sources {
    /// The whole tensor matches these parents (none: it matches no parent).
    Whole(Vec<String>),
    /// Expert by expert: runs grouped by the parents they match, in order of first expert.
    Experts(Vec<ExpertRun>),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExpertRun {
    /// The parents these experts match byte for byte; empty: none.
    pub parents: Vec<String>,
    pub experts: Vec<Range<u64>>,
}

fn parents_label(parents: &[String]) -> String {
    if parents.is_empty() {
        "no parent".into()
    } else {
        parents.join("|")
    }
}

impl Sources {
    /// Some byte range matches no parent.
    pub fn matches_no_parent(&self) -> bool {
        match self {
            Sources::Whole(p) => p.is_empty(),
            Sources::Experts(runs) => runs.iter().any(|r| r.parents.is_empty()),
        }
    }

    /// The parents of expert `e`, when the sources are by expert.
    pub fn expert(&self, e: u64) -> Option<&[String]> {
        match self {
            Sources::Whole(_) => None,
            Sources::Experts(runs) => runs
                .iter()
                .find(|r| r.experts.iter().any(|x| x.contains(&e)))
                .map(|r| r.parents.as_slice()),
        }
    }

    /// `v3`, `v3|r1` (identical in both), `no parent`, or `v3[0,3] r1[1-2]`.
    pub fn label(&self) -> String {
        match self {
            Sources::Whole(p) => parents_label(p),
            Sources::Experts(runs) => {
                let parts: Vec<String> = runs
                    .iter()
                    .map(|r| {
                        format!(
                            "{}[{}]",
                            parents_label(&r.parents),
                            short_ranges_text(&r.experts)
                        )
                    })
                    .collect();
                parts.join(" ")
            }
        }
    }

    fn to_json(&self) -> Value {
        match self {
            Sources::Whole(p) => json!({"parents": p}),
            Sources::Experts(runs) => json!({"experts": runs.iter().map(|r| json!({
                "parents": r.parents, "experts": ranges_json(&r.experts),
            })).collect::<Vec<_>>()}),
        }
    }
}

/// Group experts (in `indices`) by their match sets, in order of first expert.
fn expert_runs(
    sets: &[Vec<usize>],
    indices: impl Iterator<Item = u64>,
    names: &[String],
) -> Vec<ExpertRun> {
    let mut runs: Vec<(&Vec<usize>, Vec<u64>)> = Vec::new();
    for e in indices {
        let set = &sets[e as usize];
        match runs.iter_mut().find(|(s, _)| *s == set) {
            Some(r) => r.1.push(e),
            None => runs.push((set, vec![e])),
        }
    }
    runs.into_iter()
        .map(|(set, experts)| ExpertRun {
            parents: set.iter().map(|&p| names[p].clone()).collect(),
            experts: to_ranges(experts),
        })
        .collect()
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorSources {
    pub name: String,
    pub ty: GgmlType,
    pub dims: Vec<u64>,
    pub group: &'static str,
    /// Parents with a tensor of this name, type and shape: the ones compared.
    pub compared: Vec<String>,
    pub sources: Sources,
}

/// One way the child differs from what the recipe makes.
#[derive(Clone, Debug, PartialEq)]
pub enum Mismatch {
    /// The recipe makes this tensor (at `position`); the child lacks it.
    MissingTensor {
        tensor: String,
        position: usize,
    },
    /// The child has a tensor (at `position`) the recipe does not make.
    ExtraTensor {
        tensor: String,
        position: usize,
    },
    /// Same tensors, another order: the first position where they part.
    TensorOrder {
        position: usize,
        expected: String,
        found: String,
    },
    TypeDiffers {
        tensor: String,
        expected: GgmlType,
        found: GgmlType,
    },
    ShapeDiffers {
        tensor: String,
        expected: Vec<u64>,
        found: Vec<u64>,
    },
    /// Bytes that should be `expected`'s are not. For tensors cut by expert, `experts` are
    /// the experts that do not match; `found` says what they match instead;
    /// `first_offset` is the first byte (from the tensor's start) differing from `expected`.
    BytesDiffer {
        tensor: String,
        experts: Option<Vec<Range<u64>>>,
        expected: String,
        found: Sources,
        first_offset: Option<u64>,
    },
    MissingKey {
        key: String,
        expected: Shown,
    },
    ExtraKey {
        key: String,
        found: Shown,
    },
    KeyDiffers {
        key: String,
        expected: Shown,
        found: Shown,
    },
}

impl Mismatch {
    pub fn kind(&self) -> &'static str {
        match self {
            Mismatch::MissingTensor { .. } => "missing_tensor",
            Mismatch::ExtraTensor { .. } => "extra_tensor",
            Mismatch::TensorOrder { .. } => "tensor_order",
            Mismatch::TypeDiffers { .. } => "type_differs",
            Mismatch::ShapeDiffers { .. } => "shape_differs",
            Mismatch::BytesDiffer { .. } => "bytes_differ",
            Mismatch::MissingKey { .. } => "missing_key",
            Mismatch::ExtraKey { .. } => "extra_key",
            Mismatch::KeyDiffers { .. } => "key_differs",
        }
    }

    fn to_json(&self) -> Value {
        let mut v = match self {
            Mismatch::MissingTensor { tensor, position }
            | Mismatch::ExtraTensor { tensor, position } => {
                json!({"tensor": tensor, "position": position})
            }
            Mismatch::TensorOrder {
                position,
                expected,
                found,
            } => json!({"position": position, "expected": expected, "found": found}),
            Mismatch::TypeDiffers {
                tensor,
                expected,
                found,
            } => json!({"tensor": tensor, "expected": expected.name(), "found": found.name()}),
            Mismatch::ShapeDiffers {
                tensor,
                expected,
                found,
            } => json!({"tensor": tensor, "expected": expected, "found": found}),
            Mismatch::BytesDiffer {
                tensor,
                experts,
                expected,
                found,
                first_offset,
            } => json!({
                "tensor": tensor, "experts": experts.as_deref().map(ranges_json),
                "expected": expected, "found": found.to_json(),
                "first_difference": first_offset,
            }),
            Mismatch::MissingKey { key, expected } => {
                json!({"key": key, "expected": expected.to_json()})
            }
            Mismatch::ExtraKey { key, found } => json!({"key": key, "found": found.to_json()}),
            Mismatch::KeyDiffers {
                key,
                expected,
                found,
            } => json!({"key": key, "expected": expected.to_json(), "found": found.to_json()}),
        };
        v.as_object_mut()
            .expect("object")
            .insert("kind".into(), json!(self.kind()));
        v
    }
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Mismatch::MissingTensor { tensor, position } => write!(
                f,
                "{tensor}: the recipe makes it (tensor #{position}), the child lacks it"
            ),
            Mismatch::ExtraTensor { tensor, position } => write!(
                f,
                "{tensor}: in the child (tensor #{position}), the recipe does not make it"
            ),
            Mismatch::TensorOrder {
                position,
                expected,
                found,
            } => write!(
                f,
                "tensor order: #{position} should be {expected}, the child has {found}"
            ),
            Mismatch::TypeDiffers {
                tensor,
                expected,
                found,
            } => write!(f, "{tensor}: type {found}, the recipe makes {expected}"),
            Mismatch::ShapeDiffers {
                tensor,
                expected,
                found,
            } => write!(
                f,
                "{tensor}: shape {}, the recipe makes {}",
                shape(found),
                shape(expected)
            ),
            Mismatch::BytesDiffer {
                tensor,
                experts,
                expected,
                found,
                first_offset,
            } => {
                let experts = experts
                    .as_ref()
                    .map(|e| format!(" experts {}", ranges_text(e)))
                    .unwrap_or_default();
                let at = first_offset
                    .map(|o| format!(" (first difference at byte {o} of the tensor)"))
                    .unwrap_or_default();
                write!(
                    f,
                    "{tensor}{experts}: expected {expected}, found {}{at}",
                    found.label()
                )
            }
            Mismatch::MissingKey { key, expected } => {
                write!(f, "key {key}: missing, the recipe makes {expected}")
            }
            Mismatch::ExtraKey { key, found } => {
                write!(f, "key {key}: {found}, the recipe does not make it")
            }
            Mismatch::KeyDiffers {
                key,
                expected,
                found,
            } => write!(f, "key {key}: {found}, the recipe makes {expected}"),
        }
    }
}

/// The result of checking a child against the plan its recipe makes.
#[derive(Clone, Debug)]
pub struct RecipeCheck {
    pub tensors: usize,
    pub keys: usize,
    pub mismatches: Vec<Mismatch>,
}

#[derive(Clone, Debug)]
pub struct VerifyReport {
    pub child: ModelSummary,
    /// (name, first file) of each parent.
    pub parents: Vec<(String, PathBuf)>,
    /// Every tensor of the child, in its order.
    pub tensors: Vec<TensorSources>,
    /// With a recipe: how the child compares with its plan.
    pub recipe: Option<RecipeCheck>,
}

impl VerifyReport {
    /// Tensors with some byte range that matches no parent.
    pub fn unmatched(&self) -> impl Iterator<Item = &TensorSources> {
        self.tensors
            .iter()
            .filter(|t| t.sources.matches_no_parent())
    }

    pub fn tensor(&self, name: &str) -> Option<&TensorSources> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// Every tensor matches some parent and, with a recipe, the child is what it makes.
    pub fn passed(&self) -> bool {
        self.unmatched().next().is_none()
            && self.recipe.as_ref().is_none_or(|r| r.mismatches.is_empty())
    }
}

/// Which parent each tensor (and each expert) of `child` matches byte for byte; with a
/// recipe, whether the child is exactly what `plan::build` makes of these parents.
pub fn verify(
    child: &Model,
    parents: &[Parent],
    recipe: Option<&Recipe>,
    opts: &CompareOptions,
) -> Result<VerifyReport, CompareError> {
    if parents.is_empty() {
        return Err(PlanError::NoParents.into());
    }
    for (i, p) in parents.iter().enumerate() {
        if parents[..i].iter().any(|q| q.name == p.name) {
            return Err(PlanError::DuplicateParent {
                name: p.name.clone(),
            }
            .into());
        }
    }
    let plan = recipe
        .map(|r| plan::build(parents, r, child.path(), SplitOptions::default()))
        .transpose()?;

    let mut files = FileSet::default();
    let fc = files.add(child)?;
    let fp: Vec<usize> = parents
        .iter()
        .map(|p| files.add(&p.model))
        .collect::<Result<_, _>>()?;
    let names: Vec<String> = parents.iter().map(|p| p.name.clone()).collect();

    // One work item per child tensor: the child's bytes against each comparable parent.
    let plan_cuts: std::collections::HashSet<&str> = plan
        .iter()
        .flat_map(|p| &p.tensors)
        .filter(|t| t.pieces.iter().any(|pc| pc.slices.is_some()))
        .map(|t| t.info.name.as_str())
        .collect();
    let mut work: Vec<Work> = Vec::with_capacity(child.tensor_count());
    let mut cands: Vec<Vec<usize>> = Vec::with_capacity(child.tensor_count());
    let mut slicings: Vec<Slicing> = Vec::with_capacity(child.tensor_count());
    for t in child.tensors() {
        let sl = slicing(t.info, plan_cuts.contains(t.info.name.as_str()));
        let mut idx = Vec::new();
        let mut srcs = Vec::new();
        for (i, p) in parents.iter().enumerate() {
            if let Some(u) = p.model.tensor(&t.info.name)
                && u.info.ty == t.info.ty
                && u.info.dims == t.info.dims
            {
                idx.push(i);
                srcs.push(Src {
                    file: fp[i] + u.shard,
                    offset: u.file_offset,
                });
            }
        }
        work.push(Work {
            tensor: t.info.name.clone(),
            slice_bytes: sl.bytes,
            n_slices: sl.count,
            child: Src {
                file: fc + t.shard,
                offset: t.file_offset,
            },
            candidates: srcs,
        });
        cands.push(idx);
        slicings.push(sl);
    }

    let results = compare_all(&work, &files, opts.chunk_bytes)?;

    // Per child tensor, per slice: the parents it matches.
    let sets: Vec<Vec<Vec<usize>>> = results
        .iter()
        .zip(&cands)
        .zip(&slicings)
        .map(|((firsts, idx), sl)| {
            (0..sl.count as usize)
                .map(|s| {
                    idx.iter()
                        .zip(firsts)
                        .filter(|(_, f)| f[s].is_none())
                        .map(|(&p, _)| p)
                        .collect()
                })
                .collect()
        })
        .collect();

    let tensors: Vec<TensorSources> = child
        .tensors()
        .enumerate()
        .map(|(i, t)| {
            let sl = slicings[i];
            let sets = &sets[i];
            let sources = if sl.by_expert && sets.iter().any(|s| *s != sets[0]) {
                Sources::Experts(expert_runs(sets, 0..sl.count, &names))
            } else {
                Sources::Whole(sets[0].iter().map(|&p| names[p].clone()).collect())
            };
            TensorSources {
                name: t.info.name.clone(),
                ty: t.info.ty,
                dims: t.info.dims.clone(),
                group: tensor_group(&t.info.name),
                compared: cands[i].iter().map(|&p| names[p].clone()).collect(),
                sources,
            }
        })
        .collect();

    let recipe = plan.as_ref().map(|plan| {
        check_plan(
            child,
            plan,
            &PlanInputs {
                names: &names,
                cands: &cands,
                slicings: &slicings,
                sets: &sets,
                firsts: &results,
            },
        )
    });

    Ok(VerifyReport {
        child: ModelSummary::of(child),
        parents: parents
            .iter()
            .map(|p| (p.name.clone(), p.model.path().to_path_buf()))
            .collect(),
        tensors,
        recipe,
    })
}

/// The slices a piece at byte `off`, `len` bytes long, covers, if it falls on slice bounds.
fn piece_slices(sl: Slicing, off: u64, len: u64) -> Option<Range<u64>> {
    if sl.bytes == 0 {
        return (off == 0 && len == 0).then_some(0..sl.count);
    }
    (off.is_multiple_of(sl.bytes) && len.is_multiple_of(sl.bytes))
        .then(|| off / sl.bytes..(off + len) / sl.bytes)
}

/// What `check_plan` needs of the comparison results.
struct PlanInputs<'a> {
    names: &'a [String],
    /// Per child tensor: the parents compared.
    cands: &'a [Vec<usize>],
    slicings: &'a [Slicing],
    /// Per child tensor, per slice: the parents matched.
    sets: &'a [Vec<Vec<usize>>],
    firsts: &'a [FirstDiffs],
}

fn check_plan(child: &Model, plan: &plan::Plan, inp: &PlanInputs) -> RecipeCheck {
    let mut mismatches = Vec::new();

    // Tensor names and order.
    let child_names: Vec<&str> = child.tensors().map(|t| t.info.name.as_str()).collect();
    let plan_names: Vec<&str> = plan.tensors.iter().map(|t| t.info.name.as_str()).collect();
    let child_index: HashMap<&str, usize> = child_names
        .iter()
        .enumerate()
        .map(|(i, n)| (*n, i))
        .collect();
    let plan_index: HashMap<&str, usize> = plan_names
        .iter()
        .enumerate()
        .map(|(i, n)| (*n, i))
        .collect();
    for (i, n) in plan_names.iter().enumerate() {
        if !child_index.contains_key(n) {
            mismatches.push(Mismatch::MissingTensor {
                tensor: n.to_string(),
                position: i,
            });
        }
    }
    for (i, n) in child_names.iter().enumerate() {
        if !plan_index.contains_key(n) {
            mismatches.push(Mismatch::ExtraTensor {
                tensor: n.to_string(),
                position: i,
            });
        }
    }
    let common_plan: Vec<&str> = plan_names
        .iter()
        .filter(|n| child_index.contains_key(*n))
        .copied()
        .collect();
    let common_child: Vec<(usize, &str)> = child_names
        .iter()
        .enumerate()
        .filter(|(_, n)| plan_index.contains_key(*n))
        .map(|(i, n)| (i, *n))
        .collect();
    if let Some(((position, found), expected)) = common_child
        .iter()
        .zip(&common_plan)
        .find(|((_, f), e)| f != *e)
    {
        mismatches.push(Mismatch::TensorOrder {
            position: *position,
            expected: expected.to_string(),
            found: found.to_string(),
        });
    }

    // Each planned tensor: type, shape, and each piece's bytes.
    for pt in &plan.tensors {
        let name = pt.info.name.as_str();
        let Some(&ci) = child_index.get(name) else {
            continue;
        };
        let t = child.tensor(name).expect("indexed");
        if t.info.ty != pt.info.ty {
            mismatches.push(Mismatch::TypeDiffers {
                tensor: name.into(),
                expected: pt.info.ty,
                found: t.info.ty,
            });
            continue;
        }
        if t.info.dims != pt.info.dims {
            mismatches.push(Mismatch::ShapeDiffers {
                tensor: name.into(),
                expected: pt.info.dims.clone(),
                found: t.info.dims.clone(),
            });
            continue;
        }
        let sl = inp.slicings[ci];
        let sets = &inp.sets[ci];
        let mut off = 0u64;
        for piece in &pt.pieces {
            let expected = inp.names[piece.parent].clone();
            let range = piece_slices(sl, off, piece.len);
            off += piece.len;
            // The child is cut as the plan cuts it (same type and shape, same slice size),
            // so a piece always covers whole slices; anything else is reported, not skipped.
            let Some(range) = range else {
                mismatches.push(Mismatch::BytesDiffer {
                    tensor: name.into(),
                    experts: piece.slices.as_ref().map(|r| vec![r.clone()]),
                    expected,
                    found: Sources::Whole(Vec::new()),
                    first_offset: None,
                });
                continue;
            };
            let bad: Vec<u64> = range
                .clone()
                .filter(|&s| !sets[s as usize].contains(&piece.parent))
                .collect();
            if bad.is_empty() {
                continue;
            }
            let cand = inp.cands[ci].iter().position(|&p| p == piece.parent);
            let first_offset = cand.and_then(|c| {
                range
                    .clone()
                    .filter_map(|s| inp.firsts[ci][c][s as usize])
                    .min()
            });
            let (experts, found) = if sl.by_expert {
                (
                    Some(to_ranges(bad.iter().copied())),
                    Sources::Experts(expert_runs(sets, bad.into_iter(), inp.names)),
                )
            } else {
                (
                    None,
                    Sources::Whole(sets[0].iter().map(|&p| inp.names[p].clone()).collect()),
                )
            };
            mismatches.push(Mismatch::BytesDiffer {
                tensor: name.into(),
                experts,
                expected,
                found,
                first_offset,
            });
        }
    }

    // Metadata, raw type and bytes; the recipe record and split keys aside.
    let first = child.first();
    let skip = |k: &str| k == KEY_SPLICE_RECIPE || is_split_key(k);
    let mut keys = 0;
    for (key, value) in plan.kvs.iter().filter(|(k, _)| !skip(k)) {
        keys += 1;
        let expected = value.as_ref();
        match first.get(key) {
            None => mismatches.push(Mismatch::MissingKey {
                key: key.clone(),
                expected: Shown::of(expected),
            }),
            Some(found) if found != expected => mismatches.push(Mismatch::KeyDiffers {
                key: key.clone(),
                expected: Shown::of(expected),
                found: Shown::of(found),
            }),
            Some(_) => {}
        }
    }
    for kv in first.kvs().iter().filter(|kv| !skip(&kv.key)) {
        if !plan.kvs.iter().any(|(k, _)| *k == kv.key) {
            mismatches.push(Mismatch::ExtraKey {
                key: kv.key.clone(),
                found: Shown::of(first.value(kv)),
            });
        }
    }

    RecipeCheck {
        tensors: plan.tensors.len(),
        keys,
        mismatches,
    }
}

pub fn verify_text(r: &VerifyReport) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "child: {}", r.child.text());
    for (name, path) in &r.parents {
        let _ = writeln!(out, "parent {name}: {}", path.display());
    }
    let _ = writeln!(out, "\nsources (byte for byte; a|b: identical in both):");
    let entries: Vec<(&str, String)> = r
        .tensors
        .iter()
        .filter(|t| !t.sources.matches_no_parent())
        .map(|t| (t.name.as_str(), t.sources.label()))
        .collect();
    // Only a single, whole-tensor source may be summed up as "everything else".
    compact_text(&mut out, &entries, |l| !l.contains('['));

    let unmatched: Vec<&TensorSources> = r.unmatched().collect();
    if !unmatched.is_empty() {
        let _ = writeln!(out, "\nmatches no parent ({}):", unmatched.len());
        for t in unmatched {
            let why = if t.compared.is_empty() {
                format!("no parent has it as {} {}", t.ty, shape(&t.dims))
            } else {
                format!("compared with {}", t.compared.join(", "))
            };
            let _ = match &t.sources {
                Sources::Whole(_) => writeln!(out, "  {}: matches no parent ({why})", t.name),
                Sources::Experts(runs) => {
                    let none: Vec<Range<u64>> = runs
                        .iter()
                        .filter(|r| r.parents.is_empty())
                        .flat_map(|r| r.experts.iter().cloned())
                        .collect();
                    let mut none = none;
                    none.sort_by_key(|r| r.start);
                    writeln!(
                        out,
                        "  {}: experts {} match no parent ({}; {why})",
                        t.name,
                        ranges_text(&none),
                        t.sources.label()
                    )
                }
            };
        }
    }

    match &r.recipe {
        None => {}
        Some(c) if c.mismatches.is_empty() => {
            let _ = writeln!(
                out,
                "\nrecipe: {} tensors and {} keys checked: the child is exactly what the recipe makes (splice.recipe and split.* keys aside)",
                c.tensors, c.keys
            );
        }
        Some(c) => {
            let _ = writeln!(
                out,
                "\nrecipe: {} tensors and {} keys checked: {} difference{}:",
                c.tensors,
                c.keys,
                c.mismatches.len(),
                if c.mismatches.len() == 1 { "" } else { "s" }
            );
            for m in c.mismatches.iter().take(SHOWN_MISMATCHES) {
                let _ = writeln!(out, "  {m}");
            }
            if c.mismatches.len() > SHOWN_MISMATCHES {
                let _ = writeln!(
                    out,
                    "  ... and {} more (--json lists them all)",
                    c.mismatches.len() - SHOWN_MISMATCHES
                );
            }
        }
    }
    let _ = writeln!(
        out,
        "\nverify: {}",
        if r.passed() { "OK" } else { "MISMATCH" }
    );
    out
}

pub fn verify_json(r: &VerifyReport) -> Value {
    let entries: Vec<(&str, String)> = r
        .tensors
        .iter()
        .map(|t| (t.name.as_str(), t.sources.label()))
        .collect();
    json!({
        "child": r.child.to_json(),
        "parents": r.parents.iter().map(|(n, p)| json!({"name": n, "path": p})).collect::<Vec<_>>(),
        "tensors": r.tensors.iter().map(|t| json!({
            "name": t.name, "type": t.ty.name(), "shape": t.dims, "group": t.group,
            "compared": t.compared, "sources": t.sources.to_json(),
            "matches_no_parent": t.sources.matches_no_parent(),
        })).collect::<Vec<_>>(),
        "summary": compact(&entries).iter().map(|l| json!({
            "tensors": l.tensors, "count": l.count, "sources": l.label,
        })).collect::<Vec<_>>(),
        "unmatched": r.unmatched().map(|t| t.name.as_str()).collect::<Vec<_>>(),
        "recipe": r.recipe.as_ref().map(|c| json!({
            "tensors": c.tensors, "keys": c.keys,
            "mismatches": c.mismatches.iter().map(Mismatch::to_json).collect::<Vec<_>>(),
        })),
        "passed": r.passed(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn names_merge_on_whole_parts() {
        assert_eq!(
            merge_names(&[
                "ffn_gate_exps.weight",
                "ffn_up_exps.weight",
                "ffn_down_exps.weight"
            ]),
            "ffn_{gate,up,down}_exps.weight"
        );
        assert_eq!(
            merge_names(&["output_norm.weight", "output.weight"]),
            "{output_norm,output}.weight"
        );
        assert_eq!(
            merge_names(&["ffn_up.weight", "ffn_up_shexp.weight"]),
            "ffn_{up,up_shexp}.weight"
        );
        assert_eq!(merge_names(&["a", "a.b"]), "{a,a.b}");
        // An empty alternative would read badly: plain list.
        assert_eq!(merge_names(&["a_.w", "a_b.w"]), "a_.w, a_b.w");
        assert_eq!(merge_names(&["x.weight"]), "x.weight");
    }

    #[test]
    fn compact_groups_blocks_and_names() {
        let e = |n: &'static str, l: &str| (n, l.to_string());
        let entries = [
            e("token_embd.weight", "v3"),
            e("blk.0.ffn_up.weight", "v3"),
            e("blk.1.ffn_gate_exps.weight", "r1"),
            e("blk.1.ffn_up_exps.weight", "r1"),
            e("blk.2.ffn_gate_exps.weight", "r1"),
            e("blk.2.ffn_up_exps.weight", "r1"),
            e("blk.3.ffn_up_exps.weight", "r1"),
            e("blk.5.ffn_up_exps.weight", "r1"),
        ];
        let lines = compact(&entries);
        let shown: Vec<(String, &str)> = lines
            .iter()
            .map(|l| (l.tensors.clone(), l.label.as_str()))
            .collect();
        assert_eq!(
            shown,
            vec![
                ("token_embd.weight".to_string(), "v3"),
                ("blk.0 ffn_up.weight".to_string(), "v3"),
                ("blk.1-2 ffn_gate_exps.weight".to_string(), "r1"),
                ("blk.1-3,5 ffn_up_exps.weight".to_string(), "r1"),
            ]
        );
        assert_eq!(lines[3].count, 4);
        assert_eq!(
            split_block("blk.12.attn_q_a.weight"),
            (Some(12), "attn_q_a.weight")
        );
        assert_eq!(split_block("blk.x.y"), (None, "blk.x.y"));
    }

    #[test]
    fn ranges_compact() {
        let r = to_ranges([0, 1, 2, 5, 7, 8]);
        assert_eq!(r, vec![0..3, 5..6, 7..9]);
        assert_eq!(ranges_text(&r), "0-2,5,7-8");
    }

    #[test]
    fn routers_and_stacked_experts_are_cut_by_expert() {
        let info = |name: &str, dims: &[u64], ty: GgmlType| TensorInfo {
            name: name.into(),
            dims: dims.to_vec(),
            ty,
            offset: 0,
            n_bytes: layout::tensor_bytes(ty, dims).unwrap(),
        };
        let s = slicing(
            &info("blk.3.ffn_up_exps.weight", &[256, 2, 4], GgmlType::Q3_K),
            false,
        );
        assert_eq!((s.bytes, s.count, s.by_expert), (220, 4, true));
        let s = slicing(
            &info("blk.3.ffn_gate_inp.weight", &[256, 4], GgmlType::F32),
            false,
        );
        assert_eq!((s.bytes, s.count, s.by_expert), (1024, 4, true));
        let s = slicing(&info("blk.3.exp_probs_b.bias", &[4], GgmlType::F32), false);
        assert_eq!((s.bytes, s.count, s.by_expert), (4, 4, true));
        let s = slicing(
            &info("blk.3.attn_q_a.weight", &[256, 4], GgmlType::Q4_K),
            false,
        );
        assert_eq!((s.bytes, s.count, s.by_expert), (576, 1, false));
        // Too many slices: compared whole, unless a plan cuts the tensor.
        let huge = info("blk.3.exp_probs_b.bias", &[MAX_SLICES + 1], GgmlType::F32);
        assert!(!slicing(&huge, false).by_expert);
        assert!(slicing(&huge, true).by_expert);
        // No experts at all: one (empty) slice, so every result has a slice 0.
        let empty = slicing(&info("blk.3.exp_probs_b.bias", &[0], GgmlType::F32), false);
        assert_eq!((empty.bytes, empty.count, empty.by_expert), (0, 1, false));
    }

    /// The reference: per candidate, per slice, the first differing byte.
    fn naive(a: &[u8], bs: &[&[u8]], s: usize) -> FirstDiffs {
        bs.iter()
            .map(|b| {
                (0..a.len() / s)
                    .map(|i| {
                        (i * s..(i + 1) * s)
                            .find(|&k| a[k] != b[k])
                            .map(|k| k as u64)
                    })
                    .collect()
            })
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Chunk and slice bounds in any relation, candidates equal, partly equal or not.
        #[test]
        fn engine_agrees_with_a_naive_comparison(
            slice in 1usize..40,
            n_slices in 1usize..12,
            chunk in 1usize..64,
            seed in any::<u64>(),
            flips in prop::collection::vec((0usize..2, any::<prop::sample::Index>()), 0..6),
        ) {
            let n = slice * n_slices;
            let a: Vec<u8> = (0..n).map(|i| (i as u64).wrapping_mul(seed | 1) as u8).collect();
            let mut bs = vec![a.clone(), a.clone()];
            for (c, at) in &flips {
                let i = at.index(n);
                bs[*c][i] ^= 0x5a;
            }
            let dir = tempfile::tempdir().unwrap();
            let mut files = FileSet::default();
            for (i, bytes) in std::iter::once(&a).chain(&bs).enumerate() {
                // A little header before the data, so offsets are not zero.
                let p = dir.path().join(format!("{i}.bin"));
                let mut data = vec![0xee; 7 + i];
                data.extend_from_slice(bytes);
                std::fs::write(&p, data).unwrap();
                files.files.push(File::open(&p).unwrap());
                files.paths.push(p);
            }
            let work = vec![Work {
                tensor: "t".into(),
                slice_bytes: slice as u64,
                n_slices: n_slices as u64,
                child: Src { file: 0, offset: 7 },
                candidates: vec![Src { file: 1, offset: 8 }, Src { file: 2, offset: 9 }],
            }];
            let got = compare_all(&work, &files, chunk).unwrap();
            let refs: Vec<&[u8]> = bs.iter().map(|b| b.as_slice()).collect();
            prop_assert_eq!(&got[0], &naive(&a, &refs, slice));
        }
    }

    #[test]
    fn a_short_file_is_a_read_error_naming_file_tensor_and_offset() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("short.bin");
        std::fs::write(&p, [1u8; 10]).unwrap();
        let mut files = FileSet::default();
        files.files.push(File::open(&p).unwrap());
        files.paths.push(p.clone());
        files.files.push(File::open(&p).unwrap());
        files.paths.push(p.clone());
        let work = vec![Work {
            tensor: "blk.0.x".into(),
            slice_bytes: 8,
            n_slices: 1,
            child: Src { file: 0, offset: 0 },
            candidates: vec![Src { file: 1, offset: 4 }],
        }];
        let e = compare_all(&work, &files, 1 << 10).unwrap_err();
        assert!(
            matches!(&e, CompareError::Read { path, tensor, offset: 4, len: 8, .. } if *path == p && tensor == "blk.0.x"),
            "{e}"
        );
    }
}
