//! Whether parents can be assembled into one MoE, checked before anything is planned or
//! written, every reason named: the architecture, the hyperparameters that decide shapes
//! (`embedding_length`, `feed_forward_length`, head counts, ...), the tokenizer, the attention
//! layout, and the types of the FFN tensors that would be stacked into one tensor (a tensor has
//! one type, so experts of different types cannot share it).

use std::collections::BTreeMap;
use std::fmt;

use super::Kind;
use crate::ggml_type::GgmlType;
use crate::gguf::{Model, TensorInfo};
use crate::plan::{Parent, STRUCTURAL_KEYS, same_value, show_value};
use crate::roles::unit::Units;
use crate::roles::{self, Role, cut};

/// One reason parents cannot be assembled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Incompatibility {
    /// Another architecture (model family).
    Architecture {
        /// The parent's name.
        parent: String,
        /// Its `general.architecture`.
        arch: String,
        /// The base parent's name.
        base: String,
        /// The base's `general.architecture`.
        base_arch: String,
    },
    /// A hyperparameter that decides tensor shapes or routing differs.
    Hyperparameter {
        /// The parent's name.
        parent: String,
        /// The key, with its architecture prefix.
        key: String,
        /// The parent's value, as shown in reports (or `no such key`).
        value: String,
        /// The base parent's name.
        base: String,
        /// The base's value, as shown in reports (or `no such key`).
        base_value: String,
    },
    /// Tokenizer keys differ: token ids would mean different things in different experts.
    Tokenizer {
        /// The parent's name.
        parent: String,
        /// The tokenizer keys whose values differ from the base's.
        keys: Vec<String>,
    },
    /// The attention tensors differ in name or shape.
    AttentionLayout {
        /// The parent's name.
        parent: String,
        /// The first attention tensor that differs.
        tensor: String,
        /// Its shape in the parent, or `missing`.
        found: String,
        /// The base parent's name.
        base: String,
        /// Its shape in the base, or `missing`.
        expected: String,
    },
    /// A tensor that is stacked into the MoE is missing, or has another shape.
    FfnTensor {
        /// The parent's name.
        parent: String,
        /// The tensor, as the base names it.
        tensor: String,
        /// Its shape in the parent, or `missing`.
        found: String,
        /// The base parent's name.
        base: String,
        /// The shape the base calls for (for an MoE parent, with the parent's expert
        /// count).
        expected: String,
    },
    /// A parent's FFN, expert or router weight has a companion (`.scale`, `.bias`, ...) the
    /// base lacks: the assembly has the base's tensors, so that parent's experts would lose
    /// it, and with a `.scale` the values its blocks mean.
    CompanionDropped {
        /// The parent's name.
        parent: String,
        /// Its companion.
        companion: String,
        /// The weight it belongs to.
        weight: String,
        /// The base parent's name.
        base: String,
    },
    /// FFN (or router) tensors of another type: they cannot be stacked into one tensor.
    FfnType {
        /// The parent's name.
        parent: String,
        /// The tensor without its block: `ffn_down.weight`.
        tensor: String,
        /// The blocks where the types differ, as runs (`0-3,7`).
        layers: String,
        /// The tensor's type in the parent.
        found: GgmlType,
        /// The base parent's name.
        base: String,
        /// Its type in the base.
        expected: GgmlType,
    },
}

impl fmt::Display for Incompatibility {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Incompatibility::Architecture {
                parent,
                arch,
                base,
                base_arch,
            } => write!(
                f,
                "architecture: parent '{parent}' is '{arch}', base '{base}' is '{base_arch}'; experts come from models of one family (mergekit-moe refuses this too)"
            ),
            Incompatibility::Hyperparameter {
                parent,
                key,
                value,
                base,
                base_value,
            } => write!(
                f,
                "hyperparameter {key}: parent '{parent}' has {value}, base '{base}' has {base_value}; experts must have the same shapes and routing"
            ),
            Incompatibility::Tokenizer { parent, keys } => write!(
                f,
                "tokenizer: parent '{parent}' differs from the base in {}; experts of one model must read the same token ids",
                keys.join(", ")
            ),
            Incompatibility::AttentionLayout {
                parent,
                tensor,
                found,
                base,
                expected,
            } => write!(
                f,
                "attention layout: {tensor} is {found} in parent '{parent}' and {expected} in base '{base}'; the parents are different models"
            ),
            Incompatibility::CompanionDropped {
                parent,
                companion,
                weight,
                base,
            } => write!(
                f,
                "companions: parent '{parent}' has {companion} beside {weight}, which base '{base}' lacks, so its experts would lose it (a .scale: the values its blocks mean); assemble with a base that has it (--base {parent}), or from parents without it"
            ),
            Incompatibility::FfnTensor {
                parent,
                tensor,
                found,
                base,
                expected,
            } => write!(
                f,
                "FFN: {tensor} is {found} in parent '{parent}' and {expected} in base '{base}'"
            ),
            Incompatibility::FfnType {
                parent,
                tensor,
                layers,
                found,
                base,
                expected,
            } => write!(
                f,
                "quant types: {tensor} is {found} in parent '{parent}' and {expected} in base '{base}' (blk.{layers}); the experts of one tensor share one type, so these cannot be stacked. Requantize one parent to the other's types with llama-quantize (e.g. --tensor-type '{stem}={lower}' on the original weights), or, once gguf-splice has mixing rules, convert with those",
                stem = tensor.trim_end_matches(".weight").trim_end_matches(".bias"),
                lower = expected.name().to_ascii_lowercase(),
            ),
        }
    }
}

/// Hyperparameters that may not differ: those that decide tensor shapes, less the expert count
/// (an assembly changes it), plus the gating function (routers of two gatings do not mix).
fn keys() -> impl Iterator<Item = &'static str> {
    STRUCTURAL_KEYS
        .iter()
        .copied()
        .filter(|k| *k != "expert_count")
        .chain(["expert_gating_func"])
}

fn shape(t: Option<&TensorInfo>) -> String {
    t.map_or("missing".into(), |t| format!("{:?}", t.dims))
}

/// The number of experts of `model`'s MoE layer `layer` (its router's outer dimension).
pub(crate) fn expert_count(model: &Model, layer: u64) -> Option<u64> {
    model
        .tensor(&roles::router_name(layer))
        .and_then(|t| t.info.dims.last().copied())
}

/// Every reason the parents cannot be assembled onto `base`'s layout (empty: they can).
pub(crate) fn check(parents: &[Parent], base: usize, kind: Kind) -> Vec<Incompatibility> {
    let b = &parents[base];
    let base_arch = b.model.architecture().unwrap_or("").to_string();
    let mut out = Vec::new();
    for p in parents.iter().filter(|p| p.name != b.name) {
        let arch = p.model.architecture().unwrap_or("").to_string();
        if arch != base_arch {
            out.push(Incompatibility::Architecture {
                parent: p.name.clone(),
                arch,
                base: b.name.clone(),
                base_arch: base_arch.clone(),
            });
            continue;
        }
        for suffix in keys() {
            let key = format!("{base_arch}.{suffix}");
            let (bv, pv) = (b.model.get(&key), p.model.get(&key));
            if !same_value(bv, pv) {
                out.push(Incompatibility::Hyperparameter {
                    parent: p.name.clone(),
                    key,
                    value: show_value(pv),
                    base: b.name.clone(),
                    base_value: show_value(bv),
                });
            }
        }
        let tokenizer = |m: &Model| -> Vec<String> {
            m.first()
                .kvs()
                .iter()
                .filter(|kv| kv.key.starts_with("tokenizer.ggml."))
                .map(|kv| kv.key.clone())
                .collect()
        };
        let mut differing: Vec<String> = tokenizer(&b.model)
            .into_iter()
            .chain(tokenizer(&p.model))
            .filter(|k| b.model.get(k) != p.model.get(k))
            .collect();
        differing.dedup();
        differing.sort();
        differing.dedup();
        if !differing.is_empty() {
            out.push(Incompatibility::Tokenizer {
                parent: p.name.clone(),
                keys: differing,
            });
        }
        // A companion of what the assembly takes from this parent (its experts, router or
        // dense FFN) that the base lacks would be lost: the child has the base's tensors.
        let units = Units::of(&p.model);
        for t in p.model.tensors() {
            let Some(weight) = units.head(&t.info.name) else {
                continue;
            };
            let role = roles::classify(weight).role;
            if matches!(role, Role::RoutedExperts | Role::Router | Role::DenseFfn)
                && b.model.tensor(&t.info.name).is_none()
            {
                out.push(Incompatibility::CompanionDropped {
                    parent: p.name.clone(),
                    companion: t.info.name.clone(),
                    weight: weight.to_string(),
                    base: b.name.clone(),
                });
            }
        }
        if let Some(r) = attention_difference(&b.model, &p.model) {
            let (tensor, expected, found) = r;
            out.push(Incompatibility::AttentionLayout {
                parent: p.name.clone(),
                tensor,
                found,
                base: b.name.clone(),
                expected,
            });
        }
    }
    out.extend(ffn_reasons(parents, base, kind));
    out
}

/// The first attention tensor whose name or shape differs: (tensor, base's, parent's).
fn attention_difference(b: &Model, p: &Model) -> Option<(String, String, String)> {
    let attention = |m: &Model| -> Vec<String> {
        m.tensors()
            .filter(|t| roles::role_of(&t.info.name) == Role::Attention)
            .map(|t| t.info.name.clone())
            .collect()
    };
    let names = attention(b).into_iter().chain(attention(p));
    for name in names {
        let (x, y) = (b.tensor(&name), p.tensor(&name));
        if x.map(|t| &t.info.dims) != y.map(|t| &t.info.dims) {
            return Some((name, shape(x.map(|t| t.info)), shape(y.map(|t| t.info))));
        }
    }
    None
}

/// The tensors that are stacked into the MoE, in each parent as the base has them: their
/// presence, shape and type. Type differences are grouped by tensor and types, listing layers.
fn ffn_reasons(parents: &[Parent], base: usize, kind: Kind) -> Vec<Incompatibility> {
    let b = &parents[base];
    let mut out = Vec::new();
    // (parent, tensor without block, found, expected) -> layers
    #[allow(clippy::type_complexity)]
    let mut types: BTreeMap<(usize, String, u32, u32), (GgmlType, GgmlType, Vec<u64>)> =
        BTreeMap::new();
    for (i, p) in parents.iter().enumerate() {
        if i == base || p.model.architecture() != b.model.architecture() {
            continue;
        }
        for t in b.model.tensors() {
            let name = &t.info.name;
            let class = roles::classify(name);
            let (found, want_dims) = match kind {
                Kind::Dense if roles::dense_ffn_matrix(name).is_some() => (
                    p.model
                        .tensor(name)
                        .map(|u| (u.info.ty, u.info.dims.clone())),
                    t.info.dims.clone(),
                ),
                Kind::Moe
                    if cut::is_stacked_experts(name)
                        || (class.role == Role::Router
                            && class
                                .layer
                                .is_some_and(|l| expert_count(&b.model, l).is_some())) =>
                {
                    let Some(l) = class.layer else { continue };
                    let Some(count) = expert_count(&p.model, l) else {
                        out.push(Incompatibility::FfnTensor {
                            parent: p.name.clone(),
                            tensor: roles::router_name(l),
                            found: "missing".into(),
                            base: b.name.clone(),
                            expected: shape(b.model.tensor(&roles::router_name(l)).map(|u| u.info)),
                        });
                        continue;
                    };
                    let mut dims = t.info.dims.clone();
                    if let Some(last) = dims.last_mut() {
                        *last = count;
                    }
                    let want = TensorInfo {
                        dims: dims.clone(),
                        ..t.info.clone()
                    };
                    let view = roles::views::view(&want, &p.model).ok();
                    (view.map(|v| (v.ty(), dims.clone())), dims)
                }
                _ => continue,
            };
            match found {
                None => out.push(Incompatibility::FfnTensor {
                    parent: p.name.clone(),
                    tensor: name.clone(),
                    found: shape(p.model.tensor(name).map(|u| u.info)),
                    base: b.name.clone(),
                    expected: format!("{want_dims:?}"),
                }),
                Some((_, dims)) if dims != want_dims => out.push(Incompatibility::FfnTensor {
                    parent: p.name.clone(),
                    tensor: name.clone(),
                    found: format!("{dims:?}"),
                    base: b.name.clone(),
                    expected: format!("{want_dims:?}"),
                }),
                Some((ty, _)) if ty != t.info.ty => {
                    let (_, rest) = roles::split_block(name);
                    // Keyed by id for a stable order; the types themselves are kept, since
                    // an id means different types to mainline and ik_llama.cpp.
                    types
                        .entry((i, rest.to_string(), ty.id(), t.info.ty.id()))
                        .or_insert_with(|| (ty, t.info.ty, Vec::new()))
                        .2
                        .extend(class.layer);
                }
                Some(_) => {}
            }
        }
    }
    for ((i, tensor, _, _), (found, expected, layers)) in types {
        let ranges = runs_text(layers);
        out.push(Incompatibility::FfnType {
            parent: parents[i].name.clone(),
            tensor,
            layers: ranges,
            found,
            base: b.name.clone(),
            expected,
        });
    }
    out
}

/// `1-3,7` for ascending numbers.
fn runs_text(mut v: Vec<u64>) -> String {
    v.sort_unstable();
    v.dedup();
    let mut runs: Vec<(u64, u64)> = Vec::new();
    for x in v {
        match runs.last_mut() {
            Some((_, end)) if *end + 1 == x => *end = x,
            _ => runs.push((x, x)),
        }
    }
    let parts: Vec<String> = runs
        .into_iter()
        .map(|(a, b)| {
            if a == b {
                a.to_string()
            } else {
                format!("{a}-{b}")
            }
        })
        .collect();
    parts.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ggml_type::Flavour;
    use crate::gguf::Model;
    use crate::testkit::GgufBuilder;

    /// A one-layer qwen3moe-like model whose routed experts are of type `ty`.
    fn moe(dir: &std::path::Path, name: &str, ty: GgmlType, flavour: Flavour) -> Parent {
        let b = GgufBuilder::new()
            .kv_str("general.architecture", "qwen3moe")
            .kv_u32("qwen3moe.block_count", 1)
            .kv_u32("qwen3moe.expert_count", 4)
            .kv_u32("qwen3moe.expert_used_count", 2)
            .tensor("blk.0.ffn_gate_inp.weight", &[256, 4], GgmlType::F32, 1)
            .tensor("blk.0.ffn_up_exps.weight", &[256, 2, 4], ty, 1);
        let p = dir.join(format!("{name}.gguf"));
        std::fs::write(&p, b.build()).unwrap();
        Parent {
            name: name.into(),
            model: Model::open_as(&p, Some(flavour)).unwrap(),
        }
    }

    #[test]
    fn a_parents_scale_the_base_lacks_is_named_not_dropped() {
        // b's experts carry a per-expert scale, the base's do not: the assembly (which has
        // the base's tensors) would write b's blocks without it, as the wrong values.
        let dir = tempfile::tempdir().unwrap();
        let a = moe(dir.path(), "a", GgmlType::F32, Flavour::Mainline);
        let b_path = dir.path().join("b.gguf");
        let b = GgufBuilder::new()
            .kv_str("general.architecture", "qwen3moe")
            .kv_u32("qwen3moe.block_count", 1)
            .kv_u32("qwen3moe.expert_count", 4)
            .kv_u32("qwen3moe.expert_used_count", 2)
            .tensor("blk.0.ffn_gate_inp.weight", &[256, 4], GgmlType::F32, 2)
            .tensor("blk.0.ffn_up_exps.weight", &[256, 2, 4], GgmlType::F32, 2)
            .tensor("blk.0.ffn_up_exps.scale", &[4], GgmlType::F32, 2);
        std::fs::write(&b_path, b.build()).unwrap();
        let parents = [
            a,
            Parent {
                name: "b".into(),
                model: Model::open(&b_path).unwrap(),
            },
        ];
        let found = check(&parents, 0, Kind::Moe);
        assert!(
            found.iter().any(
                |i| matches!(i, Incompatibility::CompanionDropped { parent, companion, .. }
                if parent == "b" && companion == "blk.0.ffn_up_exps.scale")
            ),
            "{found:?}"
        );
        // With b as the base, a's experts have no scale to lose: nothing to say about it.
        let found = check(&parents, 1, Kind::Moe);
        assert!(
            !found
                .iter()
                .any(|i| matches!(i, Incompatibility::CompanionDropped { .. })),
            "{found:?}"
        );
    }

    #[test]
    fn an_ik_type_beside_a_mainline_one_is_named_not_a_panic() {
        // ik's IQ4_KS has an id that mainline's table does not hold: the report must carry
        // the types themselves, not look the id up again (that panicked).
        let dir = tempfile::tempdir().unwrap();
        let parents = [
            moe(dir.path(), "a", GgmlType::Q4_K, Flavour::Mainline),
            moe(dir.path(), "b", GgmlType::IQ4_KS, Flavour::Ik),
        ];
        let found = check(&parents, 0, Kind::Moe);
        assert!(
            found.iter().any(
                |i| matches!(i, Incompatibility::FfnType { found, expected, .. }
                if *found == GgmlType::IQ4_KS && *expected == GgmlType::Q4_K)
            ),
            "{found:?}"
        );
    }
}
