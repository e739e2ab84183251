//! Which expert of A each expert of B is, byte for byte: how `diff` reads a child whose
//! experts were moved (an assembled MoE: pruned, united, reordered), where expert e of B may be
//! expert e' of A. Candidates are A's experts whose first bytes equal B's expert's (the same
//! index first), then compared whole; no hashing, and only a few candidates per expert.

use super::CompareError;
use super::engine::{FileSet, Src, Work, compare_all};

/// Bytes of each expert read to find candidates.
const PREFIX: u64 = 256;
/// Candidates compared whole per expert of B (identical experts all share a prefix).
const MAX_CANDIDATES: usize = 16;

/// Where a stacked tensor's experts are: file, offset of expert 0, bytes per expert, count.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Experts {
    pub(crate) file: usize,
    pub(crate) offset: u64,
    pub(crate) slice: u64,
    pub(crate) count: u64,
}

impl Experts {
    /// The absolute offset of expert `e`.
    fn at(&self, e: u64, files: &FileSet, tensor: &str) -> Result<u64, CompareError> {
        e.checked_mul(self.slice)
            .and_then(|x| x.checked_add(self.offset))
            .ok_or_else(|| CompareError::Overflow {
                path: files.paths[self.file].clone(),
                tensor: tensor.to_string(),
                offset: self.offset,
            })
    }
}

/// For each expert of `b`, the first expert of `a` (the same index first) with the same bytes.
pub(crate) fn match_experts(
    files: &FileSet,
    tensor: &str,
    a: Experts,
    b: Experts,
    chunk: usize,
) -> Result<Vec<Option<u64>>, CompareError> {
    let p = PREFIX.min(a.slice) as usize;
    let prefixes = |x: &Experts| -> Result<Vec<Vec<u8>>, CompareError> {
        (0..x.count)
            .map(|e| {
                let mut buf = vec![0u8; p];
                files.read(x.file, x.at(e, files, tensor)?, &mut buf, tensor)?;
                Ok(buf)
            })
            .collect()
    };
    let (pa, pb) = (prefixes(&a)?, prefixes(&b)?);
    let mut work = Vec::new();
    let mut cands: Vec<Vec<u64>> = Vec::new();
    for (j, pj) in pb.iter().enumerate() {
        let j = j as u64;
        let mut c: Vec<u64> = (0..a.count).filter(|&i| pa[i as usize] == *pj).collect();
        c.sort_by_key(|&i| (i != j, i));
        c.truncate(MAX_CANDIDATES);
        work.push(Work {
            tensor: tensor.to_string(),
            slice_bytes: a.slice,
            n_slices: 1,
            child: Src {
                file: b.file,
                offset: b.at(j, files, tensor)?,
                stride: a.slice,
            },
            candidates: c
                .iter()
                .map(|&i| {
                    Ok(Src {
                        file: a.file,
                        offset: a.at(i, files, tensor)?,
                        stride: a.slice,
                    })
                })
                .collect::<Result<_, CompareError>>()?,
        });
        cands.push(c);
    }
    let results = compare_all(&work, files, chunk, None)?;
    Ok(results
        .iter()
        .zip(&cands)
        .map(|(r, c)| {
            c.iter()
                .zip(r)
                .find(|(_, f)| f[0].is_none())
                .map(|(&i, _)| i)
        })
        .collect())
}
