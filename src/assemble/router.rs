//! The router rows of an MoE assembled from dense parents: one F32 vector of `n_embd` per
//! expert and layer, written as the layer's `ffn_gate_inp` (`[n_embd, n_expert]`, row e scores
//! expert e). The rows decide only which experts a token goes to: llama.cpp normalises the
//! chosen experts' weights to sum to 1, so N copies of one FFN compute that FFN whatever the
//! router.
//!
//! - `uniform`: every row zero; every expert scores the same.
//! - `random:SEED`: element i of row e of layer l is drawn from its own SplitMix64 stream, so
//!   a row does not depend on how many experts or layers there are:
//!   `state = SEED ^ (0x9E3779B97F4A7C15 * (1 + (l << 20) + e))` (wrapping), then for each
//!   element `state += 0x9E3779B97F4A7C15; z = state; z = (z ^ z >> 30) * 0xBF58476D1CE4E5B9;
//!   z = (z ^ z >> 27) * 0x94D049BB133111EB; z ^= z >> 31`, and the value is
//!   `((z >> 40) / 2^24 * 2 - 1) / sqrt(n_embd)`: uniform in `[-1, 1) / sqrt(n_embd)`.
//! - a file: `.npy` (NumPy's format, little-endian `f4`, `f8` or `f2`, C order) of shape
//!   `[layers, experts, n_embd]`, or `[experts, n_embd]` for the same rows in every layer; or
//!   `.safetensors` holding either one such tensor, or one `[experts, n_embd]` tensor per layer
//!   named `blk.L.ffn_gate_inp.weight`, `model.layers.L.block_sparse_moe.gate.weight`
//!   (Mixtral, mergekit-moe's output) or `model.layers.L.mlp.gate.weight` (Qwen MoE), in F32,
//!   F16, BF16 or F64. `layers` counts the output's MoE layers in order (for dense parents,
//!   every block). This is how mergekit-moe's `hidden` and `cheap_embed` gates are brought in.

use std::collections::BTreeMap;
use std::path::Path;

use super::AssembleError;
use super::spec::RouterSpec;

const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// The rows of the routers of `layers` (block numbers, in output order), each `experts` rows
/// of `n_embd` values, as little-endian F32 bytes: one `ffn_gate_inp` per layer.
pub fn router_bytes(
    spec: &RouterSpec,
    layers: &[u64],
    experts: u64,
    n_embd: u64,
) -> Result<Vec<Vec<u8>>, AssembleError> {
    let per_layer = experts * n_embd;
    let rows: Vec<Vec<f32>> = match spec {
        RouterSpec::Uniform => vec![vec![0.0; per_layer as usize]; layers.len()],
        RouterSpec::Random(seed) => layers
            .iter()
            .map(|&l| {
                (0..experts)
                    .flat_map(|e| random_row(*seed, l, e, n_embd))
                    .collect()
            })
            .collect(),
        RouterSpec::File(path) => from_file(path, layers, experts, n_embd)?,
    };
    Ok(rows
        .into_iter()
        .map(|r| r.into_iter().flat_map(f32::to_le_bytes).collect())
        .collect())
}

/// Row `expert` of layer `layer`'s router for `random:SEED` (see the module comment).
pub fn random_row(seed: u64, layer: u64, expert: u64, n_embd: u64) -> Vec<f32> {
    let mut state = seed ^ GOLDEN.wrapping_mul(1 + (layer << 20) + expert);
    let scale = 1.0 / (n_embd as f64).sqrt();
    (0..n_embd)
        .map(|_| {
            state = state.wrapping_add(GOLDEN);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            let u = (z >> 40) as f64 / (1u64 << 24) as f64;
            ((u * 2.0 - 1.0) * scale) as f32
        })
        .collect()
}

fn bad(path: &Path, reason: impl Into<String>) -> AssembleError {
    AssembleError::RouterFile {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// A tensor read from a file: shape (outermost first, as NumPy writes it) and values.
struct Array {
    shape: Vec<u64>,
    values: Vec<f32>,
}

fn from_file(
    path: &Path,
    layers: &[u64],
    experts: u64,
    n_embd: u64,
) -> Result<Vec<Vec<f32>>, AssembleError> {
    let bytes = std::fs::read(path).map_err(|source| AssembleError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let name = path.to_string_lossy();
    let arrays: Vec<(String, Array)> = if name.ends_with(".npy") {
        vec![("array".into(), read_npy(&bytes).map_err(|r| bad(path, r))?)]
    } else if name.ends_with(".safetensors") {
        read_safetensors(&bytes).map_err(|r| bad(path, r))?
    } else {
        return Err(bad(
            path,
            "not a .npy or .safetensors file (give random:SEED or uniform for a made router)",
        ));
    };
    let per_layer = (experts * n_embd) as usize;
    let want = |lead: &[u64]| {
        let mut s = lead.to_vec();
        s.extend([experts, n_embd]);
        format!("{s:?}")
    };
    // One tensor for every layer, or the same rows for all layers.
    if let [(tname, a)] = arrays.as_slice() {
        if a.shape == [layers.len() as u64, experts, n_embd] {
            return Ok(a.values.chunks(per_layer).map(<[f32]>::to_vec).collect());
        }
        if a.shape == [experts, n_embd] {
            return Ok(vec![a.values.clone(); layers.len()]);
        }
        if layer_of(tname).is_none() {
            return Err(bad(
                path,
                format!(
                    "'{tname}' has shape {:?}; the output needs {} (layers, experts, n_embd) or {}",
                    a.shape,
                    want(&[layers.len() as u64]),
                    want(&[])
                ),
            ));
        }
    }
    // One tensor per layer, named by its layer.
    let mut by_layer: BTreeMap<u64, &(String, Array)> = BTreeMap::new();
    for t in &arrays {
        if let Some(l) = layer_of(&t.0)
            && by_layer.insert(l, t).is_some()
        {
            return Err(bad(path, format!("two router tensors for layer {l}")));
        }
    }
    layers
        .iter()
        .map(|l| {
            let (tname, a) = by_layer.get(l).ok_or_else(|| {
                bad(
                    path,
                    format!(
                        "no router for layer {l}: name it blk.{l}.ffn_gate_inp.weight or model.layers.{l}.block_sparse_moe.gate.weight, shape {}",
                        want(&[])
                    ),
                )
            })?;
            if a.shape != [experts, n_embd] {
                return Err(bad(
                    path,
                    format!("'{tname}' has shape {:?}, the output needs {}", a.shape, want(&[])),
                ));
            }
            Ok(a.values.clone())
        })
        .collect()
}

/// The layer a router tensor's name gives, in the naming conventions accepted.
fn layer_of(name: &str) -> Option<u64> {
    let n = name
        .strip_prefix("blk.")
        .and_then(|r| r.strip_suffix(".ffn_gate_inp.weight"))
        .or_else(|| {
            let r = name.strip_prefix("model.layers.")?;
            r.strip_suffix(".block_sparse_moe.gate.weight")
                .or_else(|| r.strip_suffix(".mlp.gate.weight"))
        })?;
    n.parse().ok()
}

/// Element count of a shape, bounded by the bytes available (`None`: too many).
fn count(shape: &[u64], width: usize, available: usize) -> Option<usize> {
    let n = shape.iter().try_fold(1u64, |a, &d| a.checked_mul(d))?;
    let bytes = n.checked_mul(width as u64)?;
    (bytes <= available as u64).then_some(n as usize)
}

fn decode(dtype: &str, data: &[u8]) -> Result<Vec<f32>, String> {
    Ok(match dtype {
        "f4" | "F32" => data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
            .collect(),
        "f8" | "F64" => data
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")) as f32)
            .collect(),
        "f2" | "F16" => data
            .chunks_exact(2)
            .map(|c| f16_to_f32(u16::from_le_bytes([c[0], c[1]])))
            .collect(),
        "BF16" => data
            .chunks_exact(2)
            .map(|c| f32::from_bits((u16::from_le_bytes([c[0], c[1]]) as u32) << 16))
            .collect(),
        other => {
            return Err(format!(
                "values of type {other} (use F32, F16, BF16 or F64)"
            ));
        }
    })
}

fn width(dtype: &str) -> usize {
    match dtype {
        "f8" | "F64" => 8,
        "f2" | "F16" | "BF16" => 2,
        _ => 4,
    }
}

/// IEEE half to single precision (exact).
fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h >> 15) as u32) << 31;
    let exp = ((h >> 10) & 0x1f) as u32;
    let frac = (h & 0x3ff) as u32;
    let bits = match (exp, frac) {
        (0, 0) => sign,
        (0, f) => {
            // Subnormal: normalise.
            let shift = f.leading_zeros() - 21;
            let f = (f << shift) & 0x3ff;
            sign | ((113 - shift) << 23) | (f << 13)
        }
        (0x1f, f) => sign | 0x7f80_0000 | (f << 13),
        (e, f) => sign | ((e + 112) << 23) | (f << 13),
    };
    f32::from_bits(bits)
}

/// NumPy's `.npy`: magic, version, header length, a Python dict literal, then the data.
fn read_npy(bytes: &[u8]) -> Result<Array, String> {
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err("not a NumPy .npy file (no \\x93NUMPY magic)".into());
    }
    let (hlen, start): (usize, usize) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (
            u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes")) as usize,
            12,
        ),
        v => return Err(format!(".npy version {v} is not supported")),
    };
    let header = bytes
        .get(start..start.saturating_add(hlen))
        .ok_or("the .npy header runs past the end of the file")?;
    let header = std::str::from_utf8(header).map_err(|_| "the .npy header is not text")?;
    let field = |key: &str| -> Option<&str> {
        let at = header.find(&format!("'{key}'"))? + key.len() + 2;
        Some(header[at..].trim_start().strip_prefix(':')?.trim_start())
    };
    let descr = field("descr")
        .and_then(|r| r.strip_prefix('\'')?.split('\'').next())
        .ok_or("the .npy header has no 'descr'")?;
    let dtype = match descr {
        "<f4" | "<f8" | "<f2" => &descr[1..],
        other => {
            return Err(format!(
                "values of type '{other}' (use little-endian <f4, <f8 or <f2)"
            ));
        }
    };
    if field("fortran_order").is_some_and(|r| r.starts_with("True")) {
        return Err(
            "the array is in Fortran order; save it in C order (np.ascontiguousarray)".into(),
        );
    }
    let shape_text = field("shape")
        .and_then(|r| r.strip_prefix('(')?.split(')').next())
        .ok_or("the .npy header has no 'shape'")?;
    let shape: Vec<u64> = shape_text
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().map_err(|_| format!("bad shape ({shape_text})")))
        .collect::<Result<_, _>>()?;
    let data = &bytes[start + hlen..];
    let n = count(&shape, width(dtype), data.len())
        .ok_or_else(|| format!("shape {shape:?} needs more data than the file holds"))?;
    let values = decode(dtype, &data[..n * width(dtype)])?;
    Ok(Array { shape, values })
}

/// The tensors of a `.safetensors` file: an 8-byte header length, a JSON header, the data.
fn read_safetensors(bytes: &[u8]) -> Result<Vec<(String, Array)>, String> {
    let len = bytes
        .get(..8)
        .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
        .ok_or("not a .safetensors file (too short)")?;
    let end = 8usize
        .checked_add(usize::try_from(len).map_err(|_| "header length too large")?)
        .filter(|&e| e <= bytes.len())
        .ok_or("the .safetensors header runs past the end of the file")?;
    let header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&bytes[8..end]).map_err(|e| format!("bad header: {e}"))?;
    let data = &bytes[end..];
    let mut out = Vec::new();
    for (name, t) in header.iter().filter(|(k, _)| *k != "__metadata__") {
        let dtype = t["dtype"]
            .as_str()
            .ok_or(format!("'{name}' has no dtype"))?;
        let shape: Vec<u64> = t["shape"]
            .as_array()
            .and_then(|s| s.iter().map(|d| d.as_u64()).collect())
            .ok_or(format!("'{name}' has no shape"))?;
        let (a, b) = match t["data_offsets"].as_array().map(Vec::as_slice) {
            Some([a, b]) => (a.as_u64(), b.as_u64()),
            _ => (None, None),
        };
        let (Some(a), Some(b)) = (a, b) else {
            return Err(format!("'{name}' has no data_offsets"));
        };
        let raw = data
            .get(a as usize..b as usize)
            .filter(|_| a <= b)
            .ok_or(format!("'{name}': data_offsets past the end of the file"))?;
        let n = count(&shape, width(dtype), raw.len());
        if n.map(|n| n * width(dtype)) != Some(raw.len()) {
            return Err(format!(
                "'{name}': {} bytes do not hold shape {shape:?} of {dtype}",
                raw.len()
            ));
        }
        out.push((
            name.clone(),
            Array {
                shape,
                values: decode(dtype, raw).map_err(|e| format!("'{name}': {e}"))?,
            },
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn npy(shape: &[u64], values: &[f32]) -> Vec<u8> {
        let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
        let mut h = format!(
            "{{'descr': '<f4', 'fortran_order': False, 'shape': ({},), }}",
            dims.join(", ")
        );
        while (10 + h.len() + 1) % 64 != 0 {
            h.push(' ');
        }
        h.push('\n');
        let mut out = b"\x93NUMPY\x01\x00".to_vec();
        out.extend((h.len() as u16).to_le_bytes());
        out.extend(h.as_bytes());
        out.extend(values.iter().flat_map(|v| v.to_le_bytes()));
        out
    }

    fn floats(bytes: &[u8]) -> Vec<f32> {
        bytes
            .chunks(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect()
    }

    #[test]
    fn random_rows_are_reproducible_bounded_and_independent_of_the_expert_count() {
        let a = router_bytes(&RouterSpec::Random(7), &[0, 1], 3, 16).unwrap();
        let b = router_bytes(&RouterSpec::Random(7), &[0, 1], 4, 16).unwrap();
        assert_eq!(
            a[1],
            b[1][..a[1].len()],
            "row e of layer l does not depend on N"
        );
        assert_ne!(a[0], a[1], "layers differ");
        let c = router_bytes(&RouterSpec::Random(8), &[0, 1], 3, 16).unwrap();
        assert_ne!(a, c, "seeds differ");
        let v = floats(&a[0]);
        assert!(v.iter().all(|x| x.abs() < 0.25 && *x != 0.0));
        // Pinned values, so the documented generator cannot drift.
        let r = random_row(0, 0, 0, 4);
        // (A Python reimplementation of the module comment gives the same values.)
        let expected = [-0.06847203f32, -0.47356623, 0.47088194, -0.39365333];
        for (x, y) in r.iter().zip(expected) {
            assert!((x - y).abs() < 1e-6, "{r:?}");
        }
    }

    #[test]
    fn uniform_is_zero() {
        let u = router_bytes(&RouterSpec::Uniform, &[3], 2, 8).unwrap();
        assert_eq!(u, vec![vec![0u8; 2 * 8 * 4]]);
    }

    #[test]
    fn npy_files_per_layer_or_shared() {
        let dir = tempfile::tempdir().unwrap();
        let vals: Vec<f32> = (0..2 * 3 * 4).map(|i| i as f32).collect();
        let p = dir.path().join("g.npy");
        std::fs::write(&p, npy(&[2, 3, 4], &vals)).unwrap();
        let r = router_bytes(&RouterSpec::File(p.clone()), &[1, 2], 3, 4).unwrap();
        assert_eq!(floats(&r[1]), vals[12..]);
        std::fs::write(&p, npy(&[3, 4], &vals[..12])).unwrap();
        let r = router_bytes(&RouterSpec::File(p.clone()), &[1, 2], 3, 4).unwrap();
        assert_eq!(floats(&r[0]), floats(&r[1]));
        let e = router_bytes(&RouterSpec::File(p), &[1, 2], 2, 4).unwrap_err();
        assert!(e.to_string().contains("[2, 4]"), "{e}");
    }

    #[test]
    fn safetensors_per_layer_in_mixtral_naming_and_bf16() {
        let dir = tempfile::tempdir().unwrap();
        let mut header = serde_json::Map::new();
        let mut data = Vec::new();
        for l in [0u64, 1] {
            // BF16: the top half of the f32 bits (exact for small integers).
            let vals: Vec<u16> = (0..2 * 4)
                .map(|i| ((1.0f32 + (l * 8 + i) as f32).to_bits() >> 16) as u16)
                .collect();
            let a = data.len();
            data.extend(vals.iter().flat_map(|v| v.to_le_bytes()));
            header.insert(
                format!("model.layers.{l}.block_sparse_moe.gate.weight"),
                serde_json::json!({"dtype": "BF16", "shape": [2, 4], "data_offsets": [a, data.len()]}),
            );
        }
        let h = serde_json::to_vec(&header).unwrap();
        let mut file = (h.len() as u64).to_le_bytes().to_vec();
        file.extend(h);
        file.extend(data);
        let p = dir.path().join("g.safetensors");
        std::fs::write(&p, file).unwrap();
        let r = router_bytes(&RouterSpec::File(p.clone()), &[0, 1], 2, 4).unwrap();
        assert_eq!(floats(&r[1])[0], 9.0);
        let e = router_bytes(&RouterSpec::File(p), &[0, 1, 2], 2, 4).unwrap_err();
        assert!(e.to_string().contains("no router for layer 2"), "{e}");
    }

    #[test]
    fn half_precision_converts_exactly() {
        assert_eq!(f16_to_f32(0x3c00), 1.0);
        assert_eq!(f16_to_f32(0xc000), -2.0);
        assert_eq!(f16_to_f32(0x0001), 2f32.powi(-24));
        assert!(f16_to_f32(0x7c00).is_infinite());
    }

    #[test]
    fn broken_files_are_refused_with_a_reason() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("g.npy");
        std::fs::write(&p, b"not numpy").unwrap();
        assert!(router_bytes(&RouterSpec::File(p.clone()), &[0], 2, 4).is_err());
        let mut short = npy(&[2, 4], &[0.0; 8]);
        short.truncate(short.len() - 4);
        std::fs::write(&p, short).unwrap();
        let e = router_bytes(&RouterSpec::File(p), &[0], 2, 4).unwrap_err();
        assert!(e.to_string().contains("more data"), "{e}");
        let t = dir.path().join("g.txt");
        std::fs::write(&t, b"x").unwrap();
        assert!(router_bytes(&RouterSpec::File(t), &[0], 2, 4).is_err());
    }
}
