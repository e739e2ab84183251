//! Expert usage from an importance matrix, for `--keep-top N --imatrix FILE`. llama-imatrix
//! writes GGUF: for each weight `NAME.in_sum2` and `NAME.counts`; for a stacked expert tensor
//! `counts` is F32 `[1, n_expert]`, the number of tokens routed to each expert. A layer's usage
//! is the sum of the counts of its stacked expert tensors (gate, up and down see the same
//! tokens, so the sum ranks as each does).

use std::collections::HashMap;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::AssembleError;
use crate::ggml_type::GgmlType;
use crate::gguf::{GgufError, GgufFile};

/// Per-expert token counts of the stacked expert tensors in an importance matrix.
#[derive(Debug)]
pub struct ExpertCounts {
    /// The file read.
    pub path: PathBuf,
    /// By weight name (`blk.3.ffn_up_exps.weight`): one count per expert.
    pub counts: HashMap<String, Vec<f64>>,
}

const SUFFIX: &str = ".counts";

fn bad(path: &Path, reason: impl Into<String>) -> AssembleError {
    AssembleError::Imatrix {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

impl ExpertCounts {
    /// Read every `*.counts` tensor of more than one element (the stacked expert tensors').
    pub fn read(path: &Path) -> Result<ExpertCounts, AssembleError> {
        let file = GgufFile::open(path).map_err(|e| match e {
            // Not getting at the file is not a matter of its format.
            GgufError::Input(e) => AssembleError::Input(e),
            GgufError::Io { path, source } => AssembleError::Io { path, source },
            e @ GgufError::BadMagic { .. } => bad(
                path,
                format!(
                    "{e}; only GGUF importance matrices carry per-expert counts (a legacy .dat one can be converted: llama-imatrix --in-file OLD.dat -o NEW.gguf)"
                ),
            ),
            e => bad(path, e.to_string()),
        })?;
        let handle = std::fs::File::open(path).map_err(|source| AssembleError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let mut counts = HashMap::new();
        for t in file.tensors() {
            let Some(weight) = t.name.strip_suffix(SUFFIX) else {
                continue;
            };
            if t.ty != GgmlType::F32 {
                return Err(bad(path, format!("'{}' is {}, not F32", t.name, t.ty)));
            }
            let n = (t.n_bytes / 4) as usize;
            if n <= 1 {
                continue;
            }
            let mut raw = vec![0u8; t.n_bytes as usize];
            handle
                .read_exact_at(&mut raw, file.tensor_file_offset(t))
                .map_err(|source| AssembleError::Io {
                    path: path.to_path_buf(),
                    source,
                })?;
            let v: Vec<f64> = raw
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")) as f64)
                .collect();
            // A NaN would rank its expert first; a negative count is no count of tokens.
            if let Some(expert) = v.iter().position(|c| !c.is_finite() || *c < 0.0) {
                return Err(AssembleError::ImatrixCount {
                    path: path.to_path_buf(),
                    tensor: t.name.clone(),
                    expert: expert as u64,
                    found: (v[expert] as f32).to_string(),
                });
            }
            counts.insert(weight.to_string(), v);
        }
        Ok(ExpertCounts {
            path: path.to_path_buf(),
            counts,
        })
    }

    /// The usage of each of `n_expert` experts of a layer: the sum of the counts of `tensors`
    /// (its stacked expert tensors) found in the matrix. `None` when none is there.
    pub fn layer_usage(
        &self,
        tensors: &[&str],
        n_expert: u64,
    ) -> Result<Option<Vec<f64>>, AssembleError> {
        let mut sum: Option<Vec<f64>> = None;
        for name in tensors {
            let Some(c) = self.counts.get(*name) else {
                continue;
            };
            if c.len() as u64 != n_expert {
                return Err(bad(
                    &self.path,
                    format!(
                        "'{name}{SUFFIX}' has {} counts, the model has {n_expert} experts: the matrix is of another model",
                        c.len()
                    ),
                ));
            }
            let s = sum.get_or_insert_with(|| vec![0.0; c.len()]);
            s.iter_mut().zip(c).for_each(|(a, b)| *a += b);
        }
        Ok(sum)
    }
}

/// The `n` most used experts by `usage`, most used first, ties to the lower index, then put
/// back in ascending index order (kept experts keep their relative order).
pub fn top(usage: &[f64], n: usize) -> Vec<u64> {
    let mut idx: Vec<usize> = (0..usage.len()).collect();
    idx.sort_by(|&a, &b| usage[b].total_cmp(&usage[a]).then(a.cmp(&b)));
    let mut kept: Vec<u64> = idx.into_iter().take(n).map(|i| i as u64).collect();
    kept.sort_unstable();
    kept
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::GgufBuilder;

    fn f32s(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    #[test]
    fn top_experts_by_usage_ties_to_the_lower_index() {
        assert_eq!(top(&[5.0, 9.0, 1.0, 9.0], 2), vec![1, 3]);
        assert_eq!(top(&[5.0, 9.0, 5.0, 0.0], 2), vec![0, 1]);
        assert_eq!(top(&[1.0, 2.0], 5), vec![0, 1]);
    }

    #[test]
    fn counts_of_stacked_experts_are_read_and_summed_per_layer() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("imatrix.gguf");
        let b = GgufBuilder::new()
            .kv_str("general.type", "imatrix")
            .tensor_raw(
                "blk.1.ffn_up_exps.weight.in_sum2",
                &[2, 4],
                0,
                f32s(&[0.0; 8]),
            )
            .tensor_raw(
                "blk.1.ffn_up_exps.weight.counts",
                &[1, 4],
                0,
                f32s(&[3.0, 0.0, 7.0, 1.0]),
            )
            .tensor_raw(
                "blk.1.ffn_down_exps.weight.counts",
                &[1, 4],
                0,
                f32s(&[3.0, 0.0, 7.0, 1.0]),
            )
            .tensor_raw("blk.0.attn_q.weight.counts", &[1, 1], 0, f32s(&[12.0]));
        std::fs::write(&p, b.build()).unwrap();
        let c = ExpertCounts::read(&p).unwrap();
        assert_eq!(c.counts.len(), 2, "dense counts are left out");
        let u = c
            .layer_usage(
                &[
                    "blk.1.ffn_up_exps.weight",
                    "blk.1.ffn_down_exps.weight",
                    "x",
                ],
                4,
            )
            .unwrap()
            .unwrap();
        assert_eq!(u, vec![6.0, 0.0, 14.0, 2.0]);
        assert_eq!(top(&u, 2), vec![0, 2]);
        assert!(
            c.layer_usage(&["blk.2.ffn_up_exps.weight"], 4)
                .unwrap()
                .is_none()
        );
        let e = c.layer_usage(&["blk.1.ffn_up_exps.weight"], 8).unwrap_err();
        assert!(e.to_string().contains("another model"), "{e}");
        // Not a GGUF imatrix.
        std::fs::write(&p, b"legacy").unwrap();
        let e = ExpertCounts::read(&p).unwrap_err();
        assert!(e.to_string().contains("--in-file"), "{e}");
    }

    /// An imatrix whose one stacked counts tensor holds `counts`, written as F32 bytes.
    fn with_counts(dir: &Path, counts: &[f32]) -> PathBuf {
        let p = dir.join("imatrix.gguf");
        let b = GgufBuilder::new()
            .kv_str("general.type", "imatrix")
            .tensor_raw(
                "blk.1.ffn_up_exps.weight.counts",
                &[1, counts.len() as u64],
                0,
                f32s(counts),
            );
        std::fs::write(&p, b.build()).unwrap();
        p
    }

    #[test]
    fn counts_that_are_not_counts_are_refused_by_tensor_and_expert() {
        let dir = tempfile::tempdir().unwrap();
        for (counts, expert, found) in [
            (&[3.0, f32::NAN, 1.0, 0.0][..], 1, "NaN"),
            (&[3.0, 0.0, -1.0, 5.0], 2, "-1"),
            (&[3.0, 0.0, 1.0, f32::INFINITY], 3, "inf"),
        ] {
            let e = ExpertCounts::read(&with_counts(dir.path(), counts)).unwrap_err();
            match e {
                AssembleError::ImatrixCount {
                    tensor,
                    expert: x,
                    found: f,
                    ..
                } => {
                    assert_eq!(tensor, "blk.1.ffn_up_exps.weight.counts");
                    assert_eq!((x, f.as_str()), (expert, found));
                }
                e => panic!("{e:?}"),
            }
        }
        // Zero counts are counts.
        let ok = ExpertCounts::read(&with_counts(dir.path(), &[3.0, 0.0, 1.0, 0.0])).unwrap();
        assert_eq!(ok.counts.len(), 1);
    }

    #[test]
    fn a_missing_or_non_regular_matrix_is_an_input_error_not_a_format_one() {
        let dir = tempfile::tempdir().unwrap();
        let e = ExpertCounts::read(&dir.path().join("missing.gguf")).unwrap_err();
        assert!(
            matches!(e, AssembleError::Input(crate::input::InputError::Io { .. })),
            "{e:?}"
        );
        let e = ExpertCounts::read(Path::new("/dev/zero")).unwrap_err();
        assert!(
            matches!(
                e,
                AssembleError::Input(crate::input::InputError::NotRegular { .. })
            ),
            "{e:?}"
        );
    }
}
