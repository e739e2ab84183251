//! `diff --values`: how far apart two models' *values* are, tensor by tensor and expert by
//! expert, whatever their quant types. Each tensor of A is read with B's
//! [`View`](crate::roles::views::View) of it (so a parent of another converter layout is
//! compared in A's layout), both sides are dequantized with ggml's own `to_float`
//! ([`crate::ggml_lib::dequantize`]) and the [`Sums`] of [`crate::distance`] are taken row by
//! row: the relative distance `‖A − B‖ / ‖B‖` and the cosine similarity follow.
//!
//! Rows are read in chunks of about [`ValueOptions::chunk_elements`] values with positional
//! reads, a bounded number of chunks a round in parallel (rayon, each thread reusing its
//! buffers), and their sums are added in row order: memory does not grow with the model, and the numbers do not depend on the
//! chunk size or the number of threads. They equal, to the bit, the distances a mix rule's
//! `threshold` is compared with (B being the rule's base).

#![warn(missing_docs)]

use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};

use rayon::prelude::*;

use super::engine::FileSet;
use super::scales;
use super::{CompareError, ModelSummary};
use crate::distance::Sums;
use crate::ggml_lib::{self, GgmlError};
use crate::ggml_type::GgmlType;
use crate::gguf::{Model, TensorInfo};
use crate::roles::cut::{expert_cut, is_stacked_experts};
use crate::roles::unit::Units;
use crate::roles::views::{self, Unavailable, View};
use crate::roles::{self, Class, Role};

/// How `diff --values` reads.
#[derive(Clone, Copy, Debug)]
pub struct ValueOptions {
    /// Values of one chunk, per side (rounded to whole rows; at least one row).
    pub chunk_elements: u64,
    /// Chunks in flight at once (at most four per thread).
    pub chunks_in_flight: usize,
}

impl Default for ValueOptions {
    /// 1 Mi values a chunk, at most 16 chunks a round. Each thread keeps one chunk's
    /// buffers (8 MB of f32 for both sides, plus the quantized bytes), whatever the model.
    fn default() -> Self {
        ValueOptions {
            chunk_elements: 1 << 20,
            chunks_in_flight: 16,
        }
    }
}

/// Why a tensor's values were not compared.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NotCompared {
    /// A has it, B has neither it nor a layout it converts from.
    OnlyInA,
    /// B has it, A does not (and no tensor of A was read from it).
    OnlyInB,
    /// The two shapes differ.
    Shape {
        /// A's shape.
        a: Vec<u64>,
        /// B's shape.
        b: Vec<u64>,
    },
    /// ggml has no `to_float` for this type.
    Type {
        /// The type.
        ty: GgmlType,
    },
    /// B stores the tensor in a layout that cannot be read as A's (the reason).
    Layout(String),
}

/// What the comparison of one tensor found.
#[derive(Clone, Debug, PartialEq)]
pub enum ValueStatus {
    /// The values were compared.
    Compared {
        /// The sums over the whole tensor.
        whole: Sums,
        /// For stacked routed-expert tensors: the sums of each expert, in order.
        experts: Option<Vec<Sums>>,
    },
    /// They were not, and why.
    NotCompared(NotCompared),
}

/// One tensor of `diff --values`.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorValues {
    /// Its name (A's; B's for a tensor only in B).
    pub name: String,
    /// What the name says: layer, role, expert matrix.
    pub class: Class,
    /// A's type (`None`: only in B).
    pub a_type: Option<GgmlType>,
    /// The type B's values are read from (`None`: B lacks them).
    pub b_type: Option<GgmlType>,
    /// The shape (A's; B's for a tensor only in B).
    pub dims: Vec<u64>,
    /// The result.
    pub status: ValueStatus,
}

impl TensorValues {
    /// The whole tensor's sums, if compared.
    pub fn whole(&self) -> Option<&Sums> {
        match &self.status {
            ValueStatus::Compared { whole, .. } => Some(whole),
            ValueStatus::NotCompared(_) => None,
        }
    }

    /// Each expert's sums, for a compared stacked expert tensor.
    pub fn experts(&self) -> Option<&[Sums]> {
        match &self.status {
            ValueStatus::Compared { experts, .. } => experts.as_deref(),
            ValueStatus::NotCompared(_) => None,
        }
    }
}

/// Several tensors' sums added together (in model order): the distance of their
/// concatenation, `sqrt(Σ‖A − B‖²) / sqrt(Σ‖B‖²)`, so a large tensor weighs more than a
/// norm vector.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Pooled {
    /// Tensors compared.
    pub tensors: usize,
    /// Their sums, added.
    pub sums: Sums,
}

impl Pooled {
    fn add(&mut self, s: &Sums) {
        self.tensors += 1;
        self.sums.add(s);
    }
}

/// The result of `diff --values`.
#[derive(Clone, Debug)]
pub struct ValuesReport {
    /// Model A.
    pub a: ModelSummary,
    /// Model B, the reference: distances are relative to B's norm.
    pub b: ModelSummary,
    /// A's tensors in A's order, then those only in B.
    pub tensors: Vec<TensorValues>,
}

impl ValuesReport {
    /// The tensor named `name`.
    pub fn tensor(&self, name: &str) -> Option<&TensorValues> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// Compared tensors pooled by role, in [`Role::ALL`] order; roles without one left out.
    pub fn by_role(&self) -> Vec<(Role, Pooled)> {
        let mut out = vec![Pooled::default(); Role::ALL.len()];
        for t in &self.tensors {
            if let Some(s) = t.whole() {
                out[t.class.role.order()].add(s);
            }
        }
        Role::ALL
            .into_iter()
            .zip(out)
            .filter(|(_, p)| p.tensors > 0)
            .collect()
    }

    /// Compared tensors pooled by layer and role: layers in order (tensors outside blocks,
    /// `None`, first), roles in [`Role::ALL`] order within a layer.
    pub fn by_layer_role(&self) -> Vec<(Option<u64>, Role, Pooled)> {
        let mut out: Vec<(Option<u64>, Role, Pooled)> = Vec::new();
        for t in &self.tensors {
            let Some(s) = t.whole() else { continue };
            let key = (t.class.layer, t.class.role);
            match out.iter_mut().find(|(l, r, _)| (*l, *r) == key) {
                Some(e) => e.2.add(s),
                None => {
                    let mut p = Pooled::default();
                    p.add(s);
                    out.push((key.0, key.1, p));
                }
            }
        }
        // Stable: equal keys cannot occur, so this is a plain order by (layer, role).
        out.sort_by_key(|(l, r, _)| (*l, r.order()));
        out
    }

    /// Tensors whose values were not compared.
    pub fn not_compared(&self) -> impl Iterator<Item = (&TensorValues, &NotCompared)> {
        self.tensors.iter().filter_map(|t| match &t.status {
            ValueStatus::NotCompared(n) => Some((t, n)),
            ValueStatus::Compared { .. } => None,
        })
    }
}

/// One side of a compared tensor: its type, its row size and, per slice, its byte runs
/// (file index in the [`FileSet`], absolute offset, length), each a whole number of rows.
struct Side {
    ty: GgmlType,
    row_bytes: u64,
    slices: Vec<Vec<(usize, u64, u64)>>,
    /// Where the weight's `.scale` is, if it has one ([`scales`]).
    scale_at: Option<scales::ScaleLoc>,
    /// Its factor per slice, read before the values.
    scale: Option<Vec<f32>>,
}

/// A tensor whose values are compared: `slices` slices of `rows` rows of `n_per_row` values.
struct Work {
    index: usize,
    by_expert: bool,
    name: String,
    n_per_row: u64,
    rows: u64,
    a: Side,
    b: Side,
}

/// Rows `rows` of slice `slice` of work item `work`.
struct Job {
    work: usize,
    slice: usize,
    rows: Range<u64>,
}

/// `side`'s runs for each slice: experts one by one, or the whole tensor as one slice.
fn side(view: &View, first_file: usize, by_expert: bool, n_per_row: u64) -> Result<Side, String> {
    let ty = view.ty();
    let row_bytes = n_per_row / ty.block_size() * ty.type_size();
    let ranges: Vec<Range<u64>> = if by_expert {
        (0..view.count()).map(|e| e..e + 1).collect()
    } else {
        std::iter::once(0..view.count()).collect()
    };
    let slices: Vec<Vec<(usize, u64, u64)>> = ranges
        .into_iter()
        .map(|r| {
            view.parts_of(r)
                .into_iter()
                .map(|(_, shard, off, len)| (first_file + shard, off, len))
                .collect()
        })
        .collect();
    let whole_rows = slices
        .iter()
        .flatten()
        .all(|&(_, _, len)| row_bytes > 0 && len % row_bytes == 0);
    if !whole_rows {
        return Err(format!(
            "its {ty} runs are not whole rows of {n_per_row} values"
        ));
    }
    Ok(Side {
        ty,
        row_bytes,
        slices,
        scale_at: None,
        scale: None,
    })
}

/// How a tensor of A is compared with B: the work, or why not.
fn plan_tensor(
    info: &TensorInfo,
    b: &Model,
    files: (usize, usize),
    a_model: &Model,
    units: &(Units, Units),
) -> Result<(Work, GgmlType), NotCompared> {
    let b_view = views::view(info, b).map_err(|e| match e {
        Unavailable::Missing => NotCompared::OnlyInA,
        Unavailable::Shape { found } => NotCompared::Shape {
            a: info.dims.clone(),
            b: found,
        },
        other => NotCompared::Layout(other.to_string()),
    })?;
    let a_view = views::view(info, a_model).expect("a tensor is its own view");
    for ty in [info.ty, b_view.ty()] {
        if !ggml_lib::can_dequantize(ty) {
            return Err(NotCompared::Type { ty });
        }
    }
    let elements: u64 = info.dims.iter().product();
    let by_expert = is_stacked_experts(&info.name) && matches!(expert_cut(info), Ok(Some(_)));
    // A per-expert vector (a `{n_expert}` scale) is read a value a row.
    let n_per_row = match info.dims.as_slice() {
        [_] if by_expert => 1,
        d => d.first().copied().unwrap_or(1).max(1),
    };
    let slices = if by_expert { a_view.count() } else { 1 };
    if by_expert && b_view.count() != slices {
        return Err(NotCompared::Layout(format!(
            "it has {} experts, A {slices}",
            b_view.count()
        )));
    }
    let rows = elements / n_per_row / slices.max(1);
    let mut a_side = side(&a_view, files.0, by_expert, n_per_row).map_err(NotCompared::Layout)?;
    let mut b_side = side(&b_view, files.1, by_expert, n_per_row).map_err(NotCompared::Layout)?;
    // Values are the blocks times the weight's `.scale`, where it has one. B's scale is read
    // by name: a weight read from the other gate/up layout has no scale of its own name.
    let n = a_side.slices.len() as u64;
    a_side.scale_at =
        scales::locate(a_model, &info.name, files.0, n).map_err(NotCompared::Layout)?;
    b_side.scale_at = scales::locate(b, &info.name, files.1, n).map_err(NotCompared::Layout)?;
    if b_view.conversion() != views::Conversion::Same
        && b_view
            .parts()
            .iter()
            .any(|p| !units.1.companions(&p.source.info.name).is_empty())
    {
        return Err(NotCompared::Layout(
            "B stores it in the other gate/up layout with companions (scales), which cannot be converted".into(),
        ));
    }
    Ok((
        Work {
            index: 0,
            by_expert,
            name: info.name.clone(),
            n_per_row,
            rows,
            a: a_side,
            b: b_side,
        },
        b_view.ty(),
    ))
}

/// Compare the values of `a` and `b` (each one file or a shard set), tensor by tensor and,
/// for stacked routed-expert tensors, expert by expert. `progress` is called with the bytes
/// read so far (both sides) and the total, after each round of chunks.
pub fn diff_values(
    a: &Model,
    b: &Model,
    opts: &ValueOptions,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> Result<ValuesReport, CompareError> {
    ggml_lib::library().map_err(CompareError::ValuesUnavailable)?;
    let mut files = FileSet::default();
    let fa = files.add(a)?;
    let fb = files.add(b)?;

    let mut tensors: Vec<TensorValues> = Vec::with_capacity(a.tensor_count());
    let mut work: Vec<Work> = Vec::new();
    let mut read_from_b: Vec<String> = Vec::new();
    let units = (Units::of(a), Units::of(b));
    for t in a.tensors() {
        let info = t.info;
        let (b_type, status) = match plan_tensor(info, b, (fa, fb), a, &units) {
            Ok((mut w, b_type)) => {
                if let Ok(v) = views::view(info, b) {
                    read_from_b.extend(v.parts().iter().map(|p| p.source.info.name.clone()));
                }
                w.index = tensors.len();
                let experts = w.by_expert.then(|| vec![Sums::default(); w.a.slices.len()]);
                work.push(w);
                (
                    Some(b_type),
                    ValueStatus::Compared {
                        whole: Sums::default(),
                        experts,
                    },
                )
            }
            Err(why) => (
                b.tensor(&info.name).map(|u| u.info.ty),
                ValueStatus::NotCompared(why),
            ),
        };
        tensors.push(TensorValues {
            name: info.name.clone(),
            class: roles::classify(&info.name),
            a_type: Some(info.ty),
            b_type,
            dims: info.dims.clone(),
            status,
        });
    }
    for u in b.tensors() {
        let name = &u.info.name;
        if a.tensor(name).is_none() && !read_from_b.contains(name) {
            tensors.push(TensorValues {
                name: name.clone(),
                class: roles::classify(name),
                a_type: None,
                b_type: Some(u.info.ty),
                dims: u.info.dims.clone(),
                status: ValueStatus::NotCompared(NotCompared::OnlyInB),
            });
        }
    }

    for w in &mut work {
        for side in [&mut w.a, &mut w.b] {
            if let Some(at) = side.scale_at {
                side.scale = Some(scales::read(&files, at, side.slices.len(), &w.name)?);
            }
        }
    }
    run(&work, &files, opts, progress, &mut tensors)?;
    Ok(ValuesReport {
        a: ModelSummary::of(a),
        b: ModelSummary::of(b),
        tensors,
    })
}

/// Read, dequantize and sum every work item, a bounded number of chunks at once, adding
/// each row's sums in order into `tensors`' results.
fn run(
    work: &[Work],
    files: &FileSet,
    opts: &ValueOptions,
    progress: &(dyn Fn(u64, u64) + Sync),
    tensors: &mut [TensorValues],
) -> Result<(), CompareError> {
    let total: u64 = work
        .iter()
        .map(|w| {
            let slices = w.a.slices.len() as u64;
            (w.a.row_bytes + w.b.row_bytes) * w.rows * slices
        })
        .sum();
    let done = AtomicU64::new(0);
    let in_flight = (4 * rayon::current_num_threads())
        .min(opts.chunks_in_flight)
        .max(1);
    let mut jobs = work.iter().enumerate().flat_map(|(wi, w)| {
        let per = (opts.chunk_elements / w.n_per_row).max(1);
        (0..w.a.slices.len()).flat_map(move |slice| {
            (0..w.rows.div_ceil(per)).map(move |c| Job {
                work: wi,
                slice,
                rows: c * per..((c + 1) * per).min(w.rows),
            })
        })
    });
    loop {
        let batch: Vec<Job> = jobs.by_ref().take(in_flight).collect();
        if batch.is_empty() {
            break;
        }
        let sums: Vec<Result<Vec<Sums>, CompareError>> = batch
            .par_iter()
            .map(|j| {
                let r = BUFFERS.with_borrow_mut(|bufs| job_sums(&work[j.work], j, files, bufs));
                let w = &work[j.work];
                let bytes = (w.a.row_bytes + w.b.row_bytes) * (j.rows.end - j.rows.start);
                done.fetch_add(bytes, Ordering::Relaxed);
                r
            })
            .collect();
        for (j, rows) in batch.iter().zip(sums) {
            let w = &work[j.work];
            let ValueStatus::Compared { whole, experts } = &mut tensors[w.index].status else {
                unreachable!("work is made only for compared tensors");
            };
            for row in rows? {
                whole.add(&row);
                if let Some(e) = experts {
                    e[j.slice].add(&row);
                }
            }
        }
        progress(done.load(Ordering::Relaxed), total);
    }
    Ok(())
}

/// Read rows `rows` of one slice of `side` into `buf`.
fn read_rows(
    files: &FileSet,
    tensor: &str,
    side: &Side,
    slice: usize,
    rows: &Range<u64>,
    buf: &mut Vec<u8>,
) -> Result<(), CompareError> {
    let (mut want, end) = (rows.start * side.row_bytes, rows.end * side.row_bytes);
    buf.clear();
    buf.resize((end - want) as usize, 0);
    let mut filled = 0usize;
    let mut run_start = 0u64;
    for &(file, offset, len) in &side.slices[slice] {
        let run_end = run_start + len;
        if want < run_end && want < end {
            let take = (run_end.min(end) - want) as usize;
            let at = offset + (want - run_start);
            files.read(file, at, &mut buf[filled..filled + take], tensor)?;
            filled += take;
            want += take as u64;
        }
        run_start = run_end;
    }
    debug_assert_eq!(filled, buf.len(), "runs cover the slice");
    Ok(())
}

/// A worker's buffers, kept from one job to the next: fresh multi-megabyte buffers for
/// every chunk cost more in page faults than the arithmetic.
#[derive(Default)]
struct Buffers {
    a: Vec<f32>,
    b: Vec<f32>,
    raw: Vec<u8>,
}

thread_local! {
    /// Each (rayon) thread's [`Buffers`]: about 12 MB once a chunk has been done.
    static BUFFERS: std::cell::RefCell<Buffers> = std::cell::RefCell::default();
}

/// The sums of each row of one job.
fn job_sums(
    w: &Work,
    j: &Job,
    files: &FileSet,
    bufs: &mut Buffers,
) -> Result<Vec<Sums>, CompareError> {
    let n = w.n_per_row as usize;
    let len = (j.rows.end - j.rows.start) as usize * n;
    let Buffers { a, b, raw } = bufs;
    for (side, out) in [(&w.a, &mut *a), (&w.b, &mut *b)] {
        out.resize(len, 0.0);
        read_rows(files, &w.name, side, j.slice, &j.rows, raw)?;
        ggml_lib::dequantize(side.ty, w.n_per_row, raw, out).map_err(|source: GgmlError| {
            CompareError::Dequantize {
                tensor: w.name.clone(),
                source,
            }
        })?;
        if let Some(f) = side.scale.as_ref().map(|s| s[j.slice]) {
            out.iter_mut().for_each(|v| *v *= f);
        }
    }
    Ok(a.chunks_exact(n)
        .zip(b.chunks_exact(n))
        .map(|(a, b)| Sums::row(a, b))
        .collect())
}
