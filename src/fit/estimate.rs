//! The estimate `fit` chooses by: for each unit of the model and each parent that has it,
//! how much taking it from that parent changes what the model computes, per token.
//!
//! For a matrix W (rows of `ne0` values, multiplied with an input x of `ne0` values), a
//! candidate W' instead of the reference W changes each output by `Σ_j (W'_ij − W_ij) x_j`.
//! With inputs whose coordinates are uncorrelated with mean squares `w_j` (what an importance
//! matrix holds: llama-imatrix's per-column mean of x_j², the weights llama-quantize's own
//! error is measured with), the expected squared change of the output is
//!
//! ```text
//!     E = Σ_i Σ_j w_j (W'_ij − W_ij)²
//! ```
//!
//! and without an importance matrix `w_j = 1`. E is taken on sampled rows and scaled up to
//! all rows, then multiplied by how often the tensor runs per token: routed experts
//! `expert_used_count / expert_count`, the token embeddings (one row read per token)
//! `1 / rows` (`1 + 1 / rows` when the output head is tied to them), everything else 1. A unit's error is the sum over its tensors (a weight and
//! its companions; a layer's routed-expert matrices, which the planner keeps together).
//!
//! Sampling: rows are read in bands of [`BAND_ROWS`] consecutive rows (one read per band and
//! parent, so a remote parent costs a range request per band); one band in every
//! `round(1 / fraction)` is taken, at a fixed pseudo-random position within its stride, and
//! at least [`MIN_BANDS`] bands (or all) per tensor. The same rows of every parent are
//! compared: the estimate is deterministic and its bytes read are reported.
//!
//! Values come from ggml's own dequantizers ([`crate::ggml_lib::dequantize`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use rayon::prelude::*;

use super::FitError;
use super::constraint::Constraint;
use crate::ggml_lib;
use crate::gguf::Model;
use crate::layout::{self, DEFAULT_ALIGNMENT};
use crate::mix::Imatrix;
use crate::plan::Parent;
use crate::roles::cut::is_stacked_experts;
use crate::roles::unit::{self, Units};
use crate::roles::{self, Role};
use crate::source::Source;

/// Rows read together.
pub const BAND_ROWS: u64 = 8;
/// The fewest bands sampled per tensor (all when it has fewer).
pub const MIN_BANDS: u64 = 4;
/// The default fraction of rows sampled.
pub const DEFAULT_SAMPLE: f64 = 0.02;

/// What the estimate needs besides the parents.
#[derive(Clone, Copy, Debug)]
pub struct EstimateOptions<'a> {
    /// The parent errors are measured against (`None`: per unit, the parent with the most
    /// bytes for it).
    pub reference: Option<&'a str>,
    /// Per-column weights.
    pub imatrix: Option<&'a Imatrix>,
    /// Fraction of rows sampled, in (0, 1].
    pub sample: f64,
    /// `--recipe`: the parents each unit may come from.
    pub constraint: Option<&'a Constraint>,
}

/// One parent's version of a unit.
#[derive(Clone, Debug, PartialEq)]
pub struct Candidate {
    /// The parent's index.
    pub parent: usize,
    /// Bytes of the unit's tensors in that parent, each padded to the alignment.
    pub bytes: u64,
    /// The estimated error (0 for the reference).
    pub error: f64,
    /// The type of the unit's largest tensor in that parent.
    pub ty: crate::ggml_type::GgmlType,
}

/// What `fit` chooses among: tensors that go together.
#[derive(Clone, Debug, PartialEq)]
pub struct FitUnit {
    /// How reports name it: its weight's name, or `blk.N routed experts`.
    pub label: String,
    /// Its block.
    pub layer: Option<u64>,
    /// Its role.
    pub role: Role,
    /// Its tensors, in the base's order.
    pub tensors: Vec<String>,
    /// How often it runs per token (1, `used / count` for routed experts, `1 / rows` for
    /// the token embeddings).
    pub runs: f64,
    /// The parent errors were measured against.
    pub reference: usize,
    /// The parents that have it, in parent order.
    pub candidates: Vec<Candidate>,
}

/// The estimate of every unit.
#[derive(Clone, Debug)]
pub struct Estimate {
    /// The units, in the base's order of their first tensor.
    pub units: Vec<FitUnit>,
    /// Tensor data bytes read from each parent.
    pub bytes_read: Vec<u64>,
    /// The fraction of rows sampled.
    pub sample: f64,
    /// Tensors the importance matrix has no entry for (weighed with 1).
    pub unweighted: Vec<String>,
}

/// The tensors of the base grouped into units (see the module comment), in base order.
pub fn group(base: &Model) -> Vec<(String, Vec<String>)> {
    let units = Units::of(base);
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    for t in base.tensors() {
        let name = &t.info.name;
        let head = units.selector(name);
        let class = roles::classify(head);
        let key = match class.layer {
            Some(l) if is_stacked_experts(head) => format!("blk.{l} routed experts"),
            _ => head.to_string(),
        };
        match index.get(&key) {
            Some(&i) => out[i].1.push(name.clone()),
            None => {
                index.insert(key.clone(), out.len());
                out.push((key, vec![name.clone()]));
            }
        }
    }
    out
}

/// How often a tensor runs per token (see the module comment).
fn runs(base: &Model, name: &str, rows: u64) -> f64 {
    let class = roles::classify(name);
    match class.role {
        Role::RoutedExperts => {
            let arch = base.architecture().unwrap_or("");
            let get = |k: &str| {
                base.get(&format!("{arch}.{k}"))
                    .and_then(|v| v.as_u64())
                    .filter(|&n| n > 0)
            };
            match (get("expert_used_count"), get("expert_count")) {
                (Some(u), Some(c)) => u as f64 / c as f64,
                _ => 1.0,
            }
        }
        // One row per token; a head tied to the embeddings also runs whole every token.
        Role::Embeddings if roles::output_is_tied(base) && name.starts_with("token_embd.") => {
            1.0 + 1.0 / rows.max(1) as f64
        }
        Role::Embeddings => 1.0 / rows.max(1) as f64,
        _ => 1.0,
    }
}

/// Rows and values per row of a shape: `ne0`, and the product of the others.
fn rows_of(dims: &[u64]) -> (u64, u64) {
    let n = dims.first().copied().unwrap_or(1).max(1);
    (n, dims.iter().skip(1).product::<u64>().max(1))
}

/// The first row of each sampled band of a tensor of `rows` rows.
pub fn sampled_bands(rows: u64, sample: f64) -> Vec<u64> {
    let bands = rows.div_ceil(BAND_ROWS);
    let mut stride = ((1.0 / sample).round() as u64).max(1);
    stride = stride.min((bands / MIN_BANDS).max(1));
    (0..bands.div_ceil(stride))
        .map(|k| k * stride + (k.wrapping_mul(2_654_435_761) >> 7) % stride)
        .filter(|&b| b < bands)
        .map(|b| b * BAND_ROWS)
        .collect()
}

/// Opened shards of every parent, read by position from any thread.
struct Readers {
    sources: Vec<Vec<Source>>,
    read: Vec<AtomicU64>,
    /// Each parent's units (weights and their companions).
    units: Vec<Units>,
}

impl Readers {
    fn open(parents: &[Parent]) -> Result<Readers, FitError> {
        let mut sources = Vec::new();
        for p in parents {
            let mut s = Vec::new();
            for shard in p.model.shards() {
                s.push(shard.open_source().map_err(|source| FitError::Read {
                    parent: p.name.clone(),
                    tensor: String::new(),
                    source,
                })?);
            }
            sources.push(s);
        }
        let read = parents.iter().map(|_| AtomicU64::new(0)).collect();
        let units = parents.iter().map(|p| Units::of(&p.model)).collect();
        Ok(Readers {
            sources,
            read,
            units,
        })
    }

    /// Rows `first..first + n` of tensor `name` of parent `p`, dequantized.
    fn rows(
        &self,
        parents: &[Parent],
        p: usize,
        name: &str,
        first: u64,
        n: u64,
    ) -> Result<Vec<f32>, FitError> {
        let loc = parents[p]
            .model
            .tensor(name)
            .expect("candidates have the tensor");
        let (ne0, _) = rows_of(&loc.info.dims);
        let ty = loc.info.ty;
        let row_bytes = layout::row_bytes(ty, ne0).expect("a valid tensor's rows fit");
        let mut buf = vec![0u8; (row_bytes * n) as usize];
        self.sources[p][loc.shard]
            .read_exact_at(&mut buf, loc.file_offset + first * row_bytes)
            .map_err(|source| FitError::Read {
                parent: parents[p].name.clone(),
                tensor: name.to_string(),
                source,
            })?;
        self.read[p].fetch_add(buf.len() as u64, Ordering::Relaxed);
        let mut out = vec![0f32; (ne0 * n) as usize];
        ggml_lib::dequantize(ty, ne0, &buf, &mut out).map_err(|source| FitError::Ggml {
            parent: parents[p].name.clone(),
            tensor: name.to_string(),
            source,
        })?;
        // The values llama.cpp computes with: the blocks times the weight's `.scale` (one
        // value, or one per expert: rows of expert e are its `ne1` rows).
        let (rows_per, experts) = match loc.info.dims.as_slice() {
            [_, ne1, e, ..] => (*ne1, *e),
            _ => (u64::MAX, 1),
        };
        if let Some(scale) = self.scale(parents, p, name, experts)? {
            for (r, row) in out.chunks_exact_mut(ne0 as usize).enumerate() {
                let f = scale[((first + r as u64) / rows_per) as usize];
                row.iter_mut().for_each(|v| *v *= f);
            }
        }
        Ok(out)
    }

    /// The factors of weight `name`'s `.scale` in parent `p` for each of its `experts`
    /// ([`unit::scale_of`]), if it has one llama.cpp would apply.
    fn scale(
        &self,
        parents: &[Parent],
        p: usize,
        name: &str,
        experts: u64,
    ) -> Result<Option<Vec<f32>>, FitError> {
        // A scale llama.cpp would not load as such (not F32, another count) is not applied,
        // as before the planner refuses a child that would need it.
        let Ok(Some(loc)) = unit::scale_of(&parents[p].model, name, experts) else {
            return Ok(None);
        };
        let mut buf = vec![0u8; loc.info.n_bytes as usize];
        self.sources[p][loc.shard]
            .read_exact_at(&mut buf, loc.file_offset)
            .map_err(|source| FitError::Read {
                parent: parents[p].name.clone(),
                tensor: loc.info.name.clone(),
                source,
            })?;
        self.read[p].fetch_add(buf.len() as u64, Ordering::Relaxed);
        Ok(Some(unit::scale_factors(&buf, experts as usize)))
    }
}

/// Whether parent `p` can stand in for the base's tensor `name`: same name and shape, a
/// type ggml dequantizes with whole rows.
fn usable(base: &Model, p: &Model, name: &str) -> bool {
    let (Some(b), Some(t)) = (base.tensor(name), p.tensor(name)) else {
        return false;
    };
    let ne0 = rows_of(&t.info.dims).0;
    b.info.dims == t.info.dims
        && ggml_lib::can_dequantize(t.info.ty)
        && t.info.ty.row_meta_bytes() == 0
        && t.info.ty.interleaved_rows() <= 1
        && ne0.is_multiple_of(t.info.ty.block_size())
}

/// Whether the estimate weighs `name` (of shape `dims`) by `im` (see [`column_weights`]).
fn weighted(im: &Imatrix, name: &str, dims: &[u64]) -> bool {
    let (ne0, _) = rows_of(dims);
    let mats = if is_stacked_experts(name) && dims.len() > 2 {
        dims[2..].iter().product()
    } else {
        1
    };
    matches!(column_weights(Some(im), name, ne0, mats), Ok(Some(_)))
}

/// Per-column weights of `name` for each of its matrices (`None`: weigh with 1).
fn column_weights(
    imatrix: Option<&Imatrix>,
    name: &str,
    ne0: u64,
    mats: u64,
) -> Result<Option<Vec<f32>>, FitError> {
    let Some(im) = imatrix else { return Ok(None) };
    if im.values(name) != Some(ne0 * mats) {
        return Ok(None);
    }
    match im.weights(name, ne0, 0..mats) {
        // An entry of another shape than llama-quantize would use here (a batched 3-D
        // matrix such as MLA's attn_k_b): weighed with 1, and reported.
        Err(crate::mix::ImatrixError::BadEntry { .. }) => Ok(None),
        other => Ok(other?),
    }
}

/// The estimated error of every candidate of one tensor against `reference` (see the module
/// comment), before the unit's run frequency.
fn tensor_errors(
    parents: &[Parent],
    readers: &Readers,
    name: &str,
    cands: &[usize],
    reference: usize,
    weights: Option<&[f32]>,
    sample: f64,
) -> Result<Vec<f64>, FitError> {
    let info = parents[reference].model.tensor(name).expect("usable").info;
    let (ne0, rows) = rows_of(&info.dims);
    // Rows per matrix: a stacked expert tensor's matrices each have their own weights.
    let mat_rows = if is_stacked_experts(name) && info.dims.len() > 2 {
        info.dims[1]
    } else {
        rows
    };
    let bands = sampled_bands(rows, sample);
    let mut sums = vec![0f64; cands.len()];
    let mut sampled = 0u64;
    for &first in &bands {
        let n = BAND_ROWS.min(rows - first);
        sampled += n;
        let want = readers.rows(parents, reference, name, first, n)?;
        for (k, &c) in cands.iter().enumerate() {
            if c == reference {
                continue;
            }
            let got = readers.rows(parents, c, name, first, n)?;
            for r in 0..n {
                let row = (r * ne0) as usize..((r + 1) * ne0) as usize;
                let w = weights.map(|w| {
                    let m = ((first + r) / mat_rows) as usize;
                    &w[m * ne0 as usize..(m + 1) * ne0 as usize]
                });
                let mut s = 0f64;
                for (j, (&a, &b)) in got[row.clone()].iter().zip(&want[row]).enumerate() {
                    let d = a as f64 - b as f64;
                    s += w.map_or(1.0, |w| w[j] as f64) * d * d;
                }
                sums[k] += s;
            }
        }
    }
    let scale = rows as f64 / sampled.max(1) as f64;
    Ok(sums
        .into_iter()
        .map(|s| {
            let e = s * scale;
            if e.is_nan() { f64::INFINITY } else { e }
        })
        .collect())
}

/// Estimate every unit of `parents` (the first is the base: its tensors and order).
pub fn estimate(parents: &[Parent], opts: &EstimateOptions) -> Result<Estimate, FitError> {
    ggml_lib::library().map_err(FitError::Unavailable)?;
    let base = &parents.first().ok_or(FitError::NoParents)?.model;
    let forced = match opts.reference {
        None => None,
        Some(r) => Some(parents.iter().position(|p| p.name == r).ok_or_else(|| {
            FitError::UnknownReference {
                name: r.to_string(),
                known: parents
                    .iter()
                    .map(|p| p.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            }
        })?),
    };
    if let Some(c) = opts.constraint {
        let names: Vec<&str> = parents.iter().map(|p| p.name.as_str()).collect();
        c.check_parents(&names)?;
    }
    let readers = Readers::open(parents)?;
    let groups = group(base);
    let base_units = Units::of(base);
    let mut unweighted = Vec::new();
    let units: Vec<Result<FitUnit, FitError>> = groups
        .par_iter()
        .map(|(label, tensors)| {
            let allowed = opts
                .constraint
                .and_then(|c| c.allowed(&base_units, tensors));
            estimate_unit(parents, &readers, label, tensors, forced, allowed, opts)
        })
        .collect();
    let mut out = Vec::with_capacity(units.len());
    for u in units {
        let u = u?;
        if let Some(im) = opts.imatrix {
            for t in &u.tensors {
                let info = base.tensor(t).expect("base tensor").info;
                if info.dims.len() >= 2
                    && !weighted(im, t, &info.dims)
                    && u.role != Role::Embeddings
                {
                    unweighted.push(t.clone());
                }
            }
        }
        out.push(u);
    }
    Ok(Estimate {
        units: out,
        bytes_read: readers
            .read
            .iter()
            .map(|r| r.load(Ordering::Relaxed))
            .collect(),
        sample: opts.sample,
        unweighted,
    })
}

fn estimate_unit(
    parents: &[Parent],
    readers: &Readers,
    label: &str,
    tensors: &[String],
    forced: Option<usize>,
    allowed: Option<Vec<String>>,
    opts: &EstimateOptions,
) -> Result<FitUnit, FitError> {
    let base = &parents[0].model;
    // Every parent that could give the unit; the reference is chosen among them all, so a
    // constraint (`from = [...]`) narrows the choice, not the yardstick.
    let usable_all: Vec<usize> = (0..parents.len())
        .filter(|&p| tensors.iter().all(|t| usable(base, &parents[p].model, t)))
        .collect();
    let cands: Vec<usize> = usable_all
        .iter()
        .copied()
        .filter(|&p| {
            allowed
                .as_ref()
                .is_none_or(|a| a.contains(&parents[p].name))
        })
        // A parent whose weight has a companion the child (the base's tensors) would not
        // carry cannot give the unit: the planner refuses it (`CompanionDropped`).
        .filter(|&p| {
            tensors.iter().all(|t| {
                readers.units[p]
                    .companions(t)
                    .iter()
                    .all(|c| base.tensor(c).is_some())
            })
        })
        .collect();
    let bytes_of = |p: usize| -> u64 {
        tensors
            .iter()
            .map(|t| {
                let n = parents[p].model.tensor(t).expect("usable").info.n_bytes;
                layout::pad_to(n, DEFAULT_ALIGNMENT).unwrap_or(n)
            })
            .sum()
    };
    if cands.is_empty() {
        return Err(FitError::NoCandidate {
            unit: label.to_string(),
        });
    }
    let reference = match forced {
        Some(r) if usable_all.contains(&r) => r,
        Some(r) => {
            return Err(FitError::ReferenceLacks {
                reference: parents[r].name.clone(),
                unit: label.to_string(),
            });
        }
        // The most bytes; among equals, the first parent.
        None => *usable_all
            .iter()
            .rev()
            .max_by_key(|&&p| bytes_of(p))
            .expect("the candidates are usable"),
    };
    let head = &tensors[0];
    let class = roles::classify(head);
    let mut errors = vec![0f64; cands.len()];
    for t in tensors {
        // A scale's effect is in its weight's values (see `Readers::rows`).
        if unit::is_scale(t) {
            continue;
        }
        let info = base.tensor(t).expect("base tensor").info;
        let (ne0, rows) = rows_of(&info.dims);
        let mats = if is_stacked_experts(t) && info.dims.len() > 2 {
            info.dims[2..].iter().product()
        } else {
            1
        };
        let w = column_weights(opts.imatrix, t, ne0, mats)?;
        let e = tensor_errors(
            parents,
            readers,
            t,
            &cands,
            reference,
            w.as_deref(),
            opts.sample,
        )?;
        let f = runs(base, t, rows);
        for (acc, e) in errors.iter_mut().zip(e) {
            *acc += e * f;
        }
    }
    let largest = tensors
        .iter()
        .max_by_key(|t| base.tensor(t).map_or(0, |l| l.info.n_bytes))
        .expect("a unit has a tensor");
    let candidates = cands
        .iter()
        .zip(errors)
        .map(|(&p, error)| Candidate {
            parent: p,
            bytes: bytes_of(p),
            error,
            ty: parents[p].model.tensor(largest).expect("usable").info.ty,
        })
        .collect();
    Ok(FitUnit {
        label: label.to_string(),
        layer: class.layer,
        role: class.role,
        tensors: tensors.to_vec(),
        runs: runs(
            base,
            head,
            rows_of(&base.tensor(head).expect("base").info.dims).1,
        ),
        reference,
        candidates,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bands_are_deterministic_spread_and_enough() {
        // 2 % of 10 000 bands: one in 50, within its stride.
        let b = sampled_bands(80_000, 0.02);
        assert_eq!(b.len(), 200);
        for (k, &row) in b.iter().enumerate() {
            let band = row / BAND_ROWS;
            assert!(band / 50 == k as u64, "band {band} in stride {k}");
        }
        assert_eq!(b, sampled_bands(80_000, 0.02));
        // A small tensor: at least MIN_BANDS bands.
        let b = sampled_bands(64, 0.02);
        assert_eq!(b.len(), 4);
        // Fewer bands than that: all of them.
        assert_eq!(sampled_bands(20, 0.02), vec![0, 8, 16]);
        assert_eq!(sampled_bands(1, 0.02), vec![0]);
    }
}
