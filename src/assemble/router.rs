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

mod files;

use std::collections::BTreeMap;
use std::path::Path;

use super::AssembleError;
use super::spec::RouterSpec;
use files::{Array, read_npy, read_safetensors};

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

/// The rows of every layer from a router file. A tensor whose name gives a layer is that
/// layer's, never every layer's; every value used must be a finite F32.
fn from_file(
    path: &Path,
    layers: &[u64],
    experts: u64,
    n_embd: u64,
) -> Result<Vec<Vec<f32>>, AssembleError> {
    let bytes = files::read_bytes(path)?;
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
    if let [(tname, a)] = arrays.as_slice()
        && layer_of(tname).is_none()
    {
        if a.shape == [layers.len() as u64, experts, n_embd] {
            finite(path, tname, a)?;
            return Ok(a.values.chunks(per_layer).map(<[f32]>::to_vec).collect());
        }
        if a.shape == [experts, n_embd] {
            finite(path, tname, a)?;
            return Ok(vec![a.values.clone(); layers.len()]);
        }
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
    // One tensor per layer, named by its layer.
    let mut by_layer: BTreeMap<u64, &(String, Array)> = BTreeMap::new();
    for t in &arrays {
        if let Some(l) = layer_of(&t.0)
            && by_layer.insert(l, t).is_some()
        {
            return Err(bad(path, format!("two router tensors for layer {l}")));
        }
    }
    let missing: Vec<u64> = layers
        .iter()
        .copied()
        .filter(|l| !by_layer.contains_key(l))
        .collect();
    if !missing.is_empty() {
        return Err(AssembleError::RouterLayersMissing {
            path: path.to_path_buf(),
            missing,
            found: by_layer.keys().copied().collect(),
        });
    }
    layers
        .iter()
        .map(|l| {
            let (tname, a) = by_layer[l];
            if a.shape != [experts, n_embd] {
                return Err(bad(
                    path,
                    format!(
                        "'{tname}' has shape {:?}, the output needs {}",
                        a.shape,
                        want(&[])
                    ),
                ));
            }
            finite(path, tname, a)?;
            Ok(a.values.clone())
        })
        .collect()
}

/// Refuse a tensor holding a value that is not a finite F32, naming the element.
fn finite(path: &Path, tensor: &str, a: &Array) -> Result<(), AssembleError> {
    let Some((element, found)) = &a.bad else {
        return Ok(());
    };
    let mut index = vec![0; a.shape.len()];
    let mut rest = *element;
    for (i, d) in a.shape.iter().enumerate().rev() {
        index[i] = rest % d.max(&1);
        rest /= d.max(&1);
    }
    Err(AssembleError::RouterValue {
        path: path.to_path_buf(),
        tensor: tensor.to_string(),
        element: *element,
        index,
        found: found.clone(),
    })
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

#[cfg(test)]
mod tests;
