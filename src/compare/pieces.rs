//! `verify` piece by piece: each planned piece of a tensor compared, range for range, with the
//! bytes the plan says it is (a parent's experts, a dense parent's FFN stacked as one expert,
//! bytes the plan made). Used for tensors whose bytes are not where a splice would find them:
//! every tensor of an assembled MoE (output expert 4 may be parent b's expert 0) and any piece
//! that moved or was made. The facts come from the plan; nothing is re-derived from names.

use std::ops::Range;

use super::engine::{FileSet, Slicing, Src, Work, compare_all};
use super::report::{ExpertRun, Mismatch, Sources};
use super::{CompareError, to_ranges};
use crate::gguf::Model;
use crate::plan::{Plan, PlannedTensor, Source};

/// How one piece compared.
#[derive(Clone, Debug)]
pub(crate) struct PieceCheck {
    /// Index of the piece in its planned tensor.
    pub(crate) piece: usize,
    /// Index of its source among the sources verify names: the parents, then each distinct
    /// origin of made bytes.
    pub(crate) source: usize,
    /// The child tensor's slices (experts) the piece belongs to.
    pub(crate) slices: Range<u64>,
    /// Per slice of `slices`: the first byte (from the tensor's start) that differs from the
    /// source, or `None`.
    pub(crate) firsts: Vec<Option<u64>>,
}

/// Whether `verify` checks planned tensor `t` piece by piece.
pub(crate) fn is_direct(plan: &Plan, t: &PlannedTensor) -> bool {
    plan.assembly.is_some()
        || t.pieces
            .iter()
            .any(|p| p.is_relocated(&t.info.name) || p.parent().is_none())
}

/// The label of made bytes among verify's sources.
pub(crate) fn made_label(origin: &str) -> String {
    format!("made: {origin}")
}

/// Compare every piece of planned tensor `t` with its source. The child's tensor of that name
/// must have the planned type and shape. `names` are the sources (parents first); labels of
/// made bytes are added to it. `fc` and `fp` are the first files of the child and of each
/// parent in `files`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn check_tensor(
    child: &Model,
    t: &PlannedTensor,
    slicing: Slicing,
    files: &FileSet,
    (fc, fp): (usize, &[usize]),
    names: &mut Vec<String>,
    chunk: usize,
) -> Result<Vec<PieceCheck>, CompareError> {
    let loc = child.tensor(&t.info.name).expect("the caller found it");
    let mut out = Vec::with_capacity(t.pieces.len());
    let mut work = Vec::new();
    let mut work_of = Vec::new();
    let mut pos = 0u64;
    for (i, p) in t.pieces.iter().enumerate() {
        let slices = match &p.experts {
            Some(r) if slicing.by_expert => r.clone(),
            _ => 0..slicing.count,
        };
        let n = slices.end - slices.start;
        // A piece of whole experts is compared expert by expert; part of one expert (a
        // converted layout) or an uncut tensor as one run.
        let (slice_bytes, n_slices) = if n > 0 && p.len == n * slicing.bytes {
            (slicing.bytes, n)
        } else {
            (p.len, 1)
        };
        let child_src = Src {
            file: fc + loc.shard,
            offset: loc.file_offset + pos,
            stride: slice_bytes,
        };
        match &p.source {
            // A mixed piece has no parent bytes to compare with: `compare::mixed` recomputes
            // the mix and compares the child's bytes with that.
            Source::Mix(_) => {}
            Source::Parent(b) => {
                work.push(Work {
                    tensor: t.info.name.clone(),
                    slice_bytes,
                    n_slices,
                    child: child_src,
                    candidates: vec![Src {
                        file: fp[b.parent] + b.shard,
                        offset: b.offset,
                        stride: slice_bytes,
                    }],
                });
                work_of.push((out.len(), pos));
                out.push(PieceCheck {
                    piece: i,
                    source: b.parent,
                    slices: fit(slices, n_slices),
                    firsts: Vec::new(),
                });
            }
            Source::Made(m) => {
                let label = made_label(&m.origin);
                let source = match names.iter().position(|n| *n == label) {
                    Some(s) => s,
                    None => {
                        names.push(label);
                        names.len() - 1
                    }
                };
                let mut firsts = vec![None; n_slices as usize];
                let mut buf = vec![0u8; chunk.max(1).min(p.len as usize)];
                let mut done = 0u64;
                while done < p.len {
                    let len = (p.len - done).min(buf.len() as u64) as usize;
                    let buf = &mut buf[..len];
                    files.read(child_src.file, child_src.offset + done, buf, &t.info.name)?;
                    let want = &m.bytes[done as usize..done as usize + len];
                    for (k, (a, b)) in buf.iter().zip(want).enumerate() {
                        if a != b {
                            let at = done + k as u64;
                            let slot = &mut firsts[(at / slice_bytes) as usize];
                            slot.get_or_insert(pos + at);
                        }
                    }
                    done += len as u64;
                }
                out.push(PieceCheck {
                    piece: i,
                    source,
                    slices: fit(slices, n_slices),
                    firsts,
                });
            }
        }
        pos += p.len;
    }
    let results = compare_all(&work, files, chunk, None)?;
    for ((check, piece_pos), r) in work_of.into_iter().zip(results) {
        out[check].firsts = r[0].iter().map(|f| f.map(|f| piece_pos + f)).collect();
    }
    Ok(out)
}

/// The slices a piece is compared as: its experts, or one slice for part of an expert.
fn fit(slices: Range<u64>, n_slices: u64) -> Range<u64> {
    if slices.end - slices.start == n_slices {
        slices
    } else {
        slices.start..slices.start + 1
    }
}

/// Per slice of a tensor of `count` slices: the sources it matches (all the pieces covering
/// it matched), from the checks of its pieces.
pub(crate) fn sets(checks: &[PieceCheck], count: u64) -> Vec<Vec<usize>> {
    let mut ok = vec![true; count as usize];
    let mut srcs: Vec<Vec<usize>> = vec![Vec::new(); count as usize];
    for c in checks {
        for (k, s) in c.slices.clone().enumerate() {
            let Some(slot) = ok.get_mut(s as usize) else {
                continue;
            };
            *slot &= c.firsts.get(k).is_some_and(|f| f.is_none());
            if !srcs[s as usize].contains(&c.source) {
                srcs[s as usize].push(c.source);
            }
        }
    }
    srcs.into_iter()
        .zip(ok)
        .map(|(s, ok)| if ok { s } else { Vec::new() })
        .collect()
}

/// The mismatches of a tensor checked piece by piece: each piece whose bytes differ from its
/// source, with the output experts that differ and the source they should be.
pub(crate) fn mismatches(
    pt: &PlannedTensor,
    sl: Slicing,
    checks: &[PieceCheck],
    names: &[String],
    out: &mut Vec<Mismatch>,
) {
    for c in checks {
        let bad: Vec<u64> = c
            .slices
            .clone()
            .zip(&c.firsts)
            .filter(|(_, f)| f.is_some())
            .map(|(s, _)| s)
            .collect();
        if bad.is_empty() {
            continue;
        }
        let piece = &pt.pieces[c.piece];
        let expected = match &piece.source {
            Source::Made(_) | Source::Mix(_) => names[c.source].clone(),
            Source::Parent(b) => {
                let experts = b
                    .experts
                    .as_ref()
                    .map(|e| match e.end - e.start {
                        1 => format!(" expert {}", e.start),
                        _ => format!(" experts {}-{}", e.start, e.end - 1),
                    })
                    .unwrap_or_default();
                format!("{} ({}{experts})", names[c.source], b.tensor)
            }
        };
        let first_offset = c.firsts.iter().flatten().min().copied();
        let (experts, found) = if sl.by_expert {
            (
                Some(to_ranges(bad.iter().copied())),
                Sources::Experts(vec![ExpertRun {
                    parents: Vec::new(),
                    experts: to_ranges(bad),
                }]),
            )
        } else {
            (None, Sources::Whole(Vec::new()))
        };
        out.push(Mismatch::BytesDiffer {
            tensor: pt.info.name.clone(),
            experts,
            expected,
            found,
            first_offset,
        });
    }
}
