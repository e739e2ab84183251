//! The comparison engine: tensor bytes compared directly, in fixed-size chunks read with
//! positional reads from handles opened once per shard, in parallel across tensors and
//! experts, so memory stays at two chunk buffers per worker whatever the model size.
//!
//! A tensor is cut as [`roles`](crate::roles) cuts it (expert e of a stacked expert tensor,
//! row e of the router), and each candidate parent is read through its
//! [`View`](crate::roles::views::View), so a parent of another converter layout (fused
//! gate/up experts) is compared expert by expert with the child's layout.

use std::fs::File;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use rayon::prelude::*;

use super::CompareError;
use crate::gguf::{Model, TensorInfo};
use crate::roles::cut::{ExpertCut, expert_cut};
use crate::roles::views::View;

/// About this many bytes of one tensor make one unit of parallel work.
const JOB_BYTES: u64 = 16 << 20;

/// Read-only handles on every shard of the models compared, opened once and shared by all
/// workers (positional reads need no seek, so no locking).
#[derive(Default)]
pub(crate) struct FileSet {
    pub(crate) files: Vec<File>,
    pub(crate) paths: Vec<PathBuf>,
}

impl FileSet {
    /// Open every shard of `model`; returns the index of its first shard.
    pub(crate) fn add(&mut self, model: &Model) -> Result<usize, CompareError> {
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

    pub(crate) fn read(
        &self,
        file: usize,
        offset: u64,
        buf: &mut [u8],
        tensor: &str,
    ) -> Result<(), CompareError> {
        self.files[file]
            .read_exact_at(buf, offset)
            .map_err(|source| CompareError::Read {
                path: self.paths[file].clone(),
                tensor: tensor.to_string(),
                offset,
                len: buf.len() as u64,
                source,
            })
    }
}

/// Where slice 0 of some bytes under comparison starts, and how far apart slices are.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Src {
    pub(crate) file: usize,
    pub(crate) offset: u64,
    pub(crate) stride: u64,
}

/// `n_slices` slices of `slice_bytes` of the "child" side, each compared with the same slice
/// of each candidate.
pub(crate) struct Work {
    pub(crate) tensor: String,
    pub(crate) slice_bytes: u64,
    pub(crate) n_slices: u64,
    pub(crate) child: Src,
    pub(crate) candidates: Vec<Src>,
}

/// Per candidate, per slice: the first differing byte (counted as if the slices were laid
/// end to end from 0), or `None` when the slice is equal.
pub(crate) type FirstDiffs = Vec<Vec<Option<u64>>>;

/// How a tensor is cut for comparison: by expert, or one slice.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Slicing {
    pub(crate) bytes: u64,
    pub(crate) count: u64,
    pub(crate) by_expert: bool,
}

/// Cut by expert where [`expert_cut`] says so (bounded by its expert limit); else whole.
pub(crate) fn slicing(info: &TensorInfo) -> Slicing {
    match expert_cut(info) {
        Ok(Some(ExpertCut { count, slice_bytes })) => Slicing {
            bytes: slice_bytes,
            count,
            by_expert: true,
        },
        _ => Slicing {
            bytes: info.n_bytes,
            count: 1,
            by_expert: false,
        },
    }
}

/// One tensor of the child side and the views of it in each candidate.
pub(crate) struct Target<'m> {
    pub(crate) tensor: String,
    pub(crate) slicing: Slicing,
    /// File index and absolute offset of the child tensor's first byte.
    pub(crate) child_file: usize,
    pub(crate) child_offset: u64,
    /// (index of the candidate's first file in the [`FileSet`], its view). Views must have
    /// the child's slicing (`count`, `slice_bytes`).
    pub(crate) candidates: Vec<(usize, View<'m>)>,
}

/// Compare every target with its candidates; per target, per candidate, per slice, the first
/// differing byte from the start of the child tensor. Deterministic whatever the threads.
pub(crate) fn compare_targets(
    targets: &[Target],
    files: &FileSet,
    chunk: usize,
) -> Result<Vec<FirstDiffs>, CompareError> {
    // Work items: the candidates read as they are share one item (the child's bytes are
    // read once for all of them); each part of a converted view is an item of its own.
    // (target, candidate indices, child offset of the part within a slice)
    let mut origin: Vec<(usize, Vec<usize>, u64)> = Vec::new();
    let mut work: Vec<Work> = Vec::new();
    for (ti, t) in targets.iter().enumerate() {
        let sl = t.slicing;
        let child = |off: u64| Src {
            file: t.child_file,
            offset: t.child_offset + off,
            stride: sl.bytes,
        };
        let plain: Vec<usize> = (0..t.candidates.len())
            .filter(|&c| {
                t.candidates[c].1.parts.len() == 1 && t.candidates[c].1.parts[0].bytes == sl.bytes
            })
            .collect();
        if !plain.is_empty() {
            work.push(Work {
                tensor: t.tensor.clone(),
                slice_bytes: sl.bytes,
                n_slices: sl.count,
                child: child(0),
                candidates: plain
                    .iter()
                    .map(|&c| part_src(&t.candidates[c], 0))
                    .collect(),
            });
            origin.push((ti, plain.clone(), 0));
        }
        for (c, (_, v)) in t.candidates.iter().enumerate() {
            if plain.contains(&c) {
                continue;
            }
            for (k, p) in v.parts.iter().enumerate() {
                work.push(Work {
                    tensor: t.tensor.clone(),
                    slice_bytes: p.bytes,
                    n_slices: sl.count,
                    child: child(p.child_offset),
                    candidates: vec![part_src(&t.candidates[c], k)],
                });
                origin.push((ti, vec![c], p.child_offset));
            }
        }
    }
    let results = compare_all(&work, files, chunk)?;
    let mut out: Vec<FirstDiffs> = targets
        .iter()
        .map(|t| vec![vec![None; t.slicing.count as usize]; t.candidates.len()])
        .collect();
    for ((w, (ti, cands, part_offset)), r) in work.iter().zip(&origin).zip(results) {
        let s = targets[*ti].slicing.bytes;
        for (&c, firsts) in cands.iter().zip(r) {
            for (i, f) in firsts.into_iter().enumerate() {
                let Some(f) = f else { continue };
                // From the work's own coordinates to the child tensor's.
                let (slice, within) = (f / w.slice_bytes, f % w.slice_bytes);
                let at = slice * s + part_offset + within;
                let slot = &mut out[*ti][c][i];
                *slot = Some(slot.map_or(at, |x: u64| x.min(at)));
            }
        }
    }
    Ok(out)
}

fn part_src(cand: &(usize, View), k: usize) -> Src {
    let (first_file, v) = cand;
    let p = &v.parts[k];
    Src {
        file: first_file + p.source.shard,
        offset: p.source.file_offset + p.source_offset,
        stride: p.source_stride,
    }
}

/// Compare every work item; results in the order of `work`, whatever the thread count.
pub(crate) fn compare_all(
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

/// Compare slices `slices` of one work item, slice by slice and a chunk at a time: the
/// child's chunk is read once and compared with each candidate still equal in that slice.
fn compare_job(
    w: &Work,
    slices: Range<u64>,
    files: &FileSet,
    (a, b): &mut (Vec<u8>, Vec<u8>),
) -> Result<FirstDiffs, CompareError> {
    let s = w.slice_bytes;
    let n = (slices.end - slices.start) as usize;
    let mut first: FirstDiffs = vec![vec![None; n]; w.candidates.len()];
    let overflow = |src: &Src| CompareError::Overflow {
        path: files.paths[src.file].clone(),
        tensor: w.tensor.clone(),
        offset: src.offset,
    };
    let at = |src: &Src, slice: u64, pos: u64| {
        slice
            .checked_mul(src.stride)
            .and_then(|x| x.checked_add(src.offset))
            .and_then(|x| x.checked_add(pos))
            .ok_or_else(|| overflow(src))
    };
    let chunk = a.len() as u64;
    for (k, slice) in slices.enumerate() {
        let mut pos = 0u64;
        while pos < s {
            if first.iter().all(|f| f[k].is_some()) {
                break;
            }
            let len = (s - pos).min(chunk);
            let a = &mut a[..len as usize];
            files.read(w.child.file, at(&w.child, slice, pos)?, a, &w.tensor)?;
            for (c, src) in w.candidates.iter().enumerate() {
                if first[c][k].is_some() {
                    continue;
                }
                let b = &mut b[..len as usize];
                files.read(src.file, at(src, slice, pos)?, b, &w.tensor)?;
                if a != b {
                    let i = a
                        .iter()
                        .zip(b.iter())
                        .position(|(p, q)| p != q)
                        .unwrap_or(0);
                    first[c][k] = Some(slice * s + pos + i as u64);
                }
            }
            pos += len;
        }
    }
    Ok(first)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ggml_type::GgmlType;
    use proptest::prelude::*;

    fn info(name: &str, dims: &[u64], ty: GgmlType) -> TensorInfo {
        TensorInfo {
            name: name.into(),
            dims: dims.to_vec(),
            ty,
            offset: 0,
            n_bytes: crate::layout::tensor_bytes(ty, dims).unwrap(),
        }
    }

    #[test]
    fn routers_and_stacked_experts_are_cut_by_expert() {
        let s = slicing(&info(
            "blk.3.ffn_up_exps.weight",
            &[256, 2, 4],
            GgmlType::Q3_K,
        ));
        assert_eq!((s.bytes, s.count, s.by_expert), (220, 4, true));
        let s = slicing(&info("blk.3.ffn_gate_inp.weight", &[256, 4], GgmlType::F32));
        assert_eq!((s.bytes, s.count, s.by_expert), (1024, 4, true));
        let s = slicing(&info("blk.3.exp_probs_b.bias", &[4], GgmlType::F32));
        assert_eq!((s.bytes, s.count, s.by_expert), (4, 4, true));
        let s = slicing(&info("blk.3.attn_q_a.weight", &[256, 4], GgmlType::Q4_K));
        assert_eq!((s.bytes, s.count, s.by_expert), (576, 1, false));
        // Too many experts: compared whole; the per-expert tables stay bounded.
        let huge = info(
            "blk.3.exp_probs_b.bias",
            &[crate::roles::cut::MAX_EXPERTS + 1],
            GgmlType::F32,
        );
        assert!(!slicing(&huge).by_expert);
        // No experts at all: one (empty) slice, so every result has a slice 0.
        let empty = slicing(&info("blk.3.exp_probs_b.bias", &[0], GgmlType::F32));
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
        /// Chunk and slice bounds in any relation, candidates equal, partly equal or not;
        /// the second candidate's slices are interleaved with filler (a stride of 2 slices),
        /// as the halves of a fused tensor are.
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
            let mut bs = [a.clone(), a.clone()];
            for (c, at) in &flips {
                let i = at.index(n);
                bs[*c][i] ^= 0x5a;
            }
            let strided: Vec<u8> = bs[1]
                .chunks(slice)
                .flat_map(|c| c.iter().copied().chain(std::iter::repeat_n(0xcc, slice)))
                .collect();
            let dir = tempfile::tempdir().unwrap();
            let mut files = FileSet::default();
            for (i, bytes) in [&a, &bs[0], &strided].into_iter().enumerate() {
                // A little header before the data, so offsets are not zero.
                let p = dir.path().join(format!("{i}.bin"));
                let mut data = vec![0xee; 7 + i];
                data.extend_from_slice(bytes);
                std::fs::write(&p, data).unwrap();
                files.files.push(File::open(&p).unwrap());
                files.paths.push(p);
            }
            let s = slice as u64;
            let work = vec![Work {
                tensor: "t".into(),
                slice_bytes: s,
                n_slices: n_slices as u64,
                child: Src { file: 0, offset: 7, stride: s },
                candidates: vec![
                    Src { file: 1, offset: 8, stride: s },
                    Src { file: 2, offset: 9, stride: 2 * s },
                ],
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
            child: Src {
                file: 0,
                offset: 0,
                stride: 8,
            },
            candidates: vec![Src {
                file: 1,
                offset: 4,
                stride: 8,
            }],
        }];
        let e = compare_all(&work, &files, 1 << 10).unwrap_err();
        assert!(
            matches!(&e, CompareError::Read { path, tensor, offset: 4, len: 8, .. } if *path == p && tensor == "blk.0.x"),
            "{e}"
        );
    }
}
