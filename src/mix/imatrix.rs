//! Importance matrices, read as `llama-quantize` reads them (llama.cpp 11434,
//! `common/imatrix-loader.cpp` and `tools/quantize/quantize.cpp`), so that a mixed tensor
//! quantized with one gets the weights llama-quantize would pass to ggml, bit for bit.
//!
//! - GGUF (`llama-imatrix`'s default): per weight `NAME.in_sum2` (F32, `[ne0, n_mat]`) and
//!   `NAME.counts` (F32, `[1, n_mat]`). Matrix j's weights are `in_sum2[j*ne0 + i] / c` in
//!   f32, with `c = (f32) lround(counts[j])`; a matrix with `c == 0` gets weights 1. The file
//!   must carry `imatrix.datasets`, `imatrix.chunk_count` and `imatrix.chunk_size`, as
//!   llama-quantize demands.
//! - Legacy `.dat`: `i32 n_entries`, then per entry `i32 len`, the name, `i32 ncall`,
//!   `i32 nval`, `f32[nval]`; weights are `value / (f32) ncall` when `ncall > 0`, else the
//!   values as stored.
//!
//! Only the header (names and where each entry's numbers are) is held; weights are read
//! when a tensor is mixed, for the matrices (experts) it needs.

use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::ggml_type::GgmlType;
use crate::gguf::{GgufError, GgufFile};

/// Why an importance matrix cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ImatrixError {
    /// Reading failed.
    #[error("importance matrix {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// A GGUF imatrix that our reader refuses.
    #[error("importance matrix: {0}")]
    Gguf(#[from] GgufError),
    /// A legacy `.dat` file that is cut short or holds impossible counts.
    #[error(
        "importance matrix {path}: not a GGUF and not a legacy .dat imatrix: {what} at byte {offset}; make it with llama-imatrix"
    )]
    BadLegacy {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        what: String,
        /// Where.
        offset: u64,
    },
    /// A GGUF imatrix without the keys llama-quantize requires.
    #[error(
        "importance matrix {path}: no {key}; llama-quantize refuses such a file too (\"missing imatrix metadata\"); make it with a current llama-imatrix"
    )]
    NoMetadata {
        /// The file.
        path: PathBuf,
        /// The missing key.
        key: &'static str,
    },
    /// An entry's sums or counts are missing, not F32, or of sizes that do not fit.
    #[error("importance matrix {path}: entry '{entry}': {what}")]
    BadEntry {
        /// The file.
        path: PathBuf,
        /// The weight's name.
        entry: String,
        /// What is wrong, with the numbers.
        what: String,
    },
    /// Weights that are NaN or infinite, which llama-quantize refuses.
    #[error(
        "importance matrix {path}: entry '{entry}' has a non-finite weight ({value}) at index {index}; llama-quantize refuses it too"
    )]
    NonFinite {
        /// The file.
        path: PathBuf,
        /// The weight's name.
        entry: String,
        /// Index of the weight.
        index: u64,
        /// Its value.
        value: f32,
    },
}

/// Where one entry's numbers are.
#[derive(Clone, Debug)]
enum Entry {
    Gguf {
        /// File offset and count of the `in_sum2` floats.
        sums: (u64, u64),
        /// File offset and count of the `counts` floats (one per matrix).
        counts: (u64, u64),
    },
    Legacy {
        /// File offset and count of the values.
        values: (u64, u64),
        ncall: i32,
    },
}

/// An importance matrix file, its entries indexed by weight name.
#[derive(Debug)]
pub struct Imatrix {
    path: PathBuf,
    entries: HashMap<String, Entry>,
}

/// The largest legacy name length accepted (GGUF tensor names are under 64 bytes).
const MAX_NAME: i32 = 4096;

impl Imatrix {
    /// Open an importance matrix (GGUF, else legacy `.dat`) and index its entries.
    pub fn open(path: &Path) -> Result<Imatrix, ImatrixError> {
        let io = |source| ImatrixError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut magic = [0u8; 4];
        let mut f = File::open(path).map_err(io)?;
        let n = f.read(&mut magic).map_err(io)?;
        if n == 4 && &magic == b"GGUF" {
            Self::open_gguf(path)
        } else {
            Self::open_legacy(path, f)
        }
    }

    fn open_gguf(path: &Path) -> Result<Imatrix, ImatrixError> {
        let g = GgufFile::open(path)?;
        for key in [
            "imatrix.datasets",
            "imatrix.chunk_count",
            "imatrix.chunk_size",
        ] {
            if g.get(key).is_none() {
                return Err(ImatrixError::NoMetadata {
                    path: path.to_path_buf(),
                    key,
                });
            }
        }
        let mut entries = HashMap::new();
        for t in g.tensors() {
            let Some(name) = t.name.strip_suffix(".in_sum2") else {
                continue;
            };
            let bad = |what: String| ImatrixError::BadEntry {
                path: path.to_path_buf(),
                entry: name.to_string(),
                what,
            };
            let counts = g
                .tensor(&format!("{name}.counts"))
                .ok_or_else(|| bad("has in_sum2 but no counts".into()))?;
            for x in [t, counts] {
                if x.ty != GgmlType::F32 {
                    return Err(bad(format!("{} is {}, not F32", x.name, x.ty)));
                }
            }
            let (n_sums, n_counts) = (t.n_bytes / 4, counts.n_bytes / 4);
            if n_counts == 0 || !n_sums.is_multiple_of(n_counts) {
                return Err(bad(format!(
                    "{n_sums} sums do not split into {n_counts} matrices"
                )));
            }
            entries.insert(
                name.to_string(),
                Entry::Gguf {
                    sums: (g.tensor_file_offset(t), n_sums),
                    counts: (g.tensor_file_offset(counts), n_counts),
                },
            );
        }
        Ok(Imatrix {
            path: path.to_path_buf(),
            entries,
        })
    }

    fn open_legacy(path: &Path, f: File) -> Result<Imatrix, ImatrixError> {
        let len = f
            .metadata()
            .map_err(|source| ImatrixError::Io {
                path: path.to_path_buf(),
                source,
            })?
            .len();
        let bad = |what: &str, offset: u64| ImatrixError::BadLegacy {
            path: path.to_path_buf(),
            what: what.to_string(),
            offset,
        };
        let read_i32 = |at: u64| -> Result<i32, ImatrixError> {
            let mut b = [0u8; 4];
            if at + 4 > len {
                return Err(bad("file ends", at));
            }
            f.read_exact_at(&mut b, at)
                .map_err(|source| ImatrixError::Io {
                    path: path.to_path_buf(),
                    source,
                })?;
            Ok(i32::from_le_bytes(b))
        };
        let n_entries = read_i32(0)?;
        if n_entries < 1 || n_entries as u64 > len / 16 {
            return Err(bad(&format!("{n_entries} entries in {len} bytes"), 0));
        }
        let mut at = 4u64;
        let mut entries = HashMap::new();
        for _ in 0..n_entries {
            let name_len = read_i32(at)?;
            if !(1..=MAX_NAME).contains(&name_len) || at + 4 + name_len as u64 > len {
                return Err(bad(&format!("name length {name_len}"), at));
            }
            let mut name = vec![0u8; name_len as usize];
            f.read_exact_at(&mut name, at + 4)
                .map_err(|source| ImatrixError::Io {
                    path: path.to_path_buf(),
                    source,
                })?;
            at += 4 + name_len as u64;
            // llama.cpp reads the name as a C string: up to the first NUL.
            let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
            let name = String::from_utf8_lossy(&name[..end]).into_owned();
            let ncall = read_i32(at)?;
            let nval = read_i32(at + 4)?;
            at += 8;
            if nval < 1 || at + 4 * nval as u64 > len {
                return Err(bad(&format!("{nval} values for '{name}'"), at - 4));
            }
            entries.insert(
                name,
                Entry::Legacy {
                    values: (at, nval as u64),
                    ncall,
                },
            );
            at += 4 * nval as u64;
        }
        Ok(Imatrix {
            path: path.to_path_buf(),
            entries,
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The number of weights the entry for `name` holds (`ne0` times the number of
    /// matrices), or `None` when the file has no entry for it.
    pub fn values(&self, name: &str) -> Option<u64> {
        self.entries.get(name).map(|e| match e {
            Entry::Gguf { sums, .. } => sums.1,
            Entry::Legacy { values, .. } => values.1,
        })
    }

    fn floats(&self, f: &File, at: u64, n: u64) -> Result<Vec<f32>, ImatrixError> {
        let mut buf = vec![0u8; n as usize * 4];
        f.read_exact_at(&mut buf, at)
            .map_err(|source| ImatrixError::Io {
                path: self.path.clone(),
                source,
            })?;
        Ok(buf
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    }

    /// The weights llama-quantize passes to ggml for matrices `mats` of the entry `name`,
    /// each matrix's `ne0` weights in turn. `None`: no such entry.
    pub fn weights(
        &self,
        name: &str,
        ne0: u64,
        mats: Range<u64>,
    ) -> Result<Option<Vec<f32>>, ImatrixError> {
        let Some(entry) = self.entries.get(name) else {
            return Ok(None);
        };
        let bad = |what: String| ImatrixError::BadEntry {
            path: self.path.clone(),
            entry: name.to_string(),
            what,
        };
        let total = self.values(name).unwrap_or(0);
        if ne0 == 0 || mats.end.checked_mul(ne0).is_none_or(|n| n > total) {
            return Err(bad(format!(
                "{total} weights; matrices {}..{} of {ne0} need {}",
                mats.start,
                mats.end,
                mats.end.saturating_mul(ne0)
            )));
        }
        let f = File::open(&self.path).map_err(|source| ImatrixError::Io {
            path: self.path.clone(),
            source,
        })?;
        let n = (mats.end - mats.start) * ne0;
        let out = match entry {
            Entry::Gguf { sums, counts } => {
                if counts.1 * ne0 != sums.1 {
                    return Err(bad(format!(
                        "{} sums in {} matrices, not {ne0} per matrix",
                        sums.1, counts.1
                    )));
                }
                let mut w = self.floats(&f, sums.0 + 4 * mats.start * ne0, n)?;
                let c = self.floats(&f, counts.0 + 4 * mats.start, mats.end - mats.start)?;
                for (j, chunk) in w.chunks_exact_mut(ne0 as usize).enumerate() {
                    // common_imatrix_load: std::lround; quantize.cpp: (float) count.
                    let count = c[j].round() as i64 as f32;
                    if count > 0.0 {
                        chunk.iter_mut().for_each(|x| *x /= count);
                    } else {
                        chunk.iter_mut().for_each(|x| *x = 1.0);
                    }
                }
                w
            }
            Entry::Legacy { values, ncall } => {
                let mut w = self.floats(&f, values.0 + 4 * mats.start * ne0, n)?;
                if *ncall > 0 {
                    let d = *ncall as i64 as f32;
                    w.iter_mut().for_each(|x| *x /= d);
                }
                w
            }
        };
        if let Some((i, v)) = out.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(ImatrixError::NonFinite {
                path: self.path.clone(),
                entry: name.to_string(),
                index: mats.start * ne0 + i as u64,
                value: *v,
            });
        }
        Ok(Some(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn legacy(entries: &[(&str, i32, &[f32])]) -> Vec<u8> {
        let mut v = (entries.len() as i32).to_le_bytes().to_vec();
        for (name, ncall, vals) in entries {
            v.extend_from_slice(&(name.len() as i32).to_le_bytes());
            v.extend_from_slice(name.as_bytes());
            v.extend_from_slice(&ncall.to_le_bytes());
            v.extend_from_slice(&(vals.len() as i32).to_le_bytes());
            for x in *vals {
                v.extend_from_slice(&x.to_le_bytes());
            }
        }
        // the optional trailer: chunk count and dataset name
        v.extend_from_slice(&3i32.to_le_bytes());
        v.extend_from_slice(&4i32.to_le_bytes());
        v.extend_from_slice(b"text");
        v
    }

    #[test]
    fn legacy_weights_are_divided_by_ncall() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.dat");
        let bytes = legacy(&[
            ("a.weight", 3, &[3.0, 6.0, 1.0, 2.0]),
            ("b.weight", 0, &[5.0, 7.0]),
        ]);
        std::fs::write(&p, bytes).unwrap();
        let m = Imatrix::open(&p).unwrap();
        assert_eq!(m.values("a.weight"), Some(4));
        assert_eq!(
            m.weights("a.weight", 2, 1..2).unwrap(),
            Some(vec![1.0 / 3.0, 2.0 / 3.0])
        );
        assert_eq!(
            m.weights("b.weight", 2, 0..1).unwrap(),
            Some(vec![5.0, 7.0])
        );
        assert_eq!(m.weights("c.weight", 2, 0..1).unwrap(), None);
        assert!(matches!(
            m.weights("a.weight", 2, 1..3),
            Err(ImatrixError::BadEntry { .. })
        ));
    }

    #[test]
    fn damaged_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.dat");
        let mut bytes = legacy(&[("a.weight", 1, &[1.0, 2.0])]);
        bytes.truncate(20);
        std::fs::write(&p, &bytes).unwrap();
        assert!(matches!(
            Imatrix::open(&p),
            Err(ImatrixError::BadLegacy { .. })
        ));
        std::fs::write(&p, b"").unwrap();
        assert!(matches!(
            Imatrix::open(&p),
            Err(ImatrixError::BadLegacy { .. })
        ));
        let nan = legacy(&[("a.weight", 1, &[1.0, f32::NAN])]);
        std::fs::write(&p, nan).unwrap();
        let m = Imatrix::open(&p).unwrap();
        assert!(matches!(
            m.weights("a.weight", 2, 0..1),
            Err(ImatrixError::NonFinite { index: 1, .. })
        ));
    }

    #[test]
    fn gguf_weights_follow_counts() {
        use crate::testkit::GgufBuilder;
        let f32s = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
        let bytes = GgufBuilder::new()
            .kv_str("general.type", "imatrix")
            .kv_str_array("imatrix.datasets", &["t.txt"])
            .kv_u32("imatrix.chunk_count", 2)
            .kv_u32("imatrix.chunk_size", 512)
            .tensor_raw(
                "x.weight.in_sum2",
                &[2, 3],
                0,
                f32s(&[2.0, 4.0, 9.0, 9.0, 6.0, 3.0]),
            )
            .tensor_raw("x.weight.counts", &[1, 3], 0, f32s(&[2.0, 0.0, 2.6]))
            .build();
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.gguf");
        std::fs::write(&p, &bytes).unwrap();
        let m = Imatrix::open(&p).unwrap();
        assert_eq!(m.values("x.weight"), Some(6));
        // counts 2, 0 (weights 1), lround(2.6) = 3
        assert_eq!(
            m.weights("x.weight", 2, 0..3).unwrap(),
            Some(vec![1.0, 2.0, 1.0, 1.0, 2.0, 1.0])
        );
        let no_meta = GgufBuilder::new()
            .tensor_raw("x.weight.in_sum2", &[2, 1], 0, f32s(&[1.0, 1.0]))
            .tensor_raw("x.weight.counts", &[1, 1], 0, f32s(&[1.0]))
            .build();
        std::fs::write(&p, &no_meta).unwrap();
        assert!(matches!(
            Imatrix::open(&p),
            Err(ImatrixError::NoMetadata { .. })
        ));
    }
}
