//! What a tensor is. The one place that reads meaning into tensor names: which block (layer)
//! a tensor belongs to, its [`Role`] (embeddings, attention, router, routed experts, ...),
//! how it is cut into experts ([`cut`]), and how a tensor of one converter layout is found in a
//! parent of another ([`views`]: fused `ffn_gate_up_exps` against separate gate and up).
//!
//! A weight and its companions are one unit ([`unit`]): `STEM.SUFFIX` beside `STEM.weight`
//! (`.bias`, `.scale`, `.input_scale`, and whatever suffix llama.cpp adds next) has the
//! weight's role, layer and expert cut, and goes wherever the weight goes.
//!
//! The planner, `diff`, `verify`, `inspect` and the plan printer ask this module and nothing
//! else, so they cannot disagree about a name. Names follow llama.cpp's `llama-arch.cpp`
//! (`LLM_TENSOR_NAMES`): `token_embd`, `output`, `output_norm`, and per block `blk.N.*`.

pub mod cut;
pub mod unit;
pub mod views;

use crate::gguf::Model;

/// The part a tensor plays in the model. Every tensor has exactly one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// `token_embd`, `pos_embd`, `token_types`: the input embeddings.
    Embeddings,
    /// Attention matrices of a block: `attn_q`, `attn_k`, `attn_v`, fused `attn_qkv`,
    /// `attn_output`, and both MLA layouts (`attn_kv_b`, or `attn_k_b` + `attn_v_b`).
    Attention,
    /// Normalisation weights and biases (`attn_norm`, `ffn_norm`, `attn_q_a_norm`,
    /// `output_norm`, ...): tiny, and kept apart so the other totals are about matrices.
    Norms,
    /// The FFN of a dense block: `ffn_gate`, `ffn_up`, `ffn_down`.
    DenseFfn,
    /// The MoE router: `ffn_gate_inp` (row e scores expert e) and its bias `exp_probs_b`.
    Router,
    /// Shared experts: `ffn_*_shexp` and the shared expert gate `ffn_gate_inp_shexp`.
    SharedExperts,
    /// Routed experts: stacked `ffn_{gate,up,down}_exps`, fused `ffn_gate_up_exps`, or the
    /// old per-expert Mixtral layout `ffn_{gate,up,down}.E`.
    RoutedExperts,
    /// The output head `output` (absent when tied to `token_embd`, see [`output_is_tied`]).
    Output,
    /// Anything else (`rope_freqs`, DeepSeek's `nextn` prediction layers, ...).
    Other,
}

impl Role {
    /// Every role, in the order reports list them.
    pub const ALL: [Role; 9] = [
        Role::Embeddings,
        Role::Attention,
        Role::Norms,
        Role::DenseFfn,
        Role::Router,
        Role::SharedExperts,
        Role::RoutedExperts,
        Role::Output,
        Role::Other,
    ];

    /// The name recipes use (`role = "routed_experts"`) and JSON reports print.
    pub fn key(self) -> &'static str {
        match self {
            Role::Embeddings => "embeddings",
            Role::Attention => "attention",
            Role::Norms => "norms",
            Role::DenseFfn => "dense_ffn",
            Role::Router => "router",
            Role::SharedExperts => "shared_experts",
            Role::RoutedExperts => "routed_experts",
            Role::Output => "output",
            Role::Other => "other",
        }
    }

    /// The name text reports print ("routed experts").
    pub fn label(self) -> &'static str {
        match self {
            Role::Embeddings => "embeddings",
            Role::Attention => "attention",
            Role::Norms => "norms",
            Role::DenseFfn => "dense FFN",
            Role::Router => "router",
            Role::SharedExperts => "shared experts",
            Role::RoutedExperts => "routed experts",
            Role::Output => "output",
            Role::Other => "other",
        }
    }

    /// The role a recipe names, by [`Role::key`].
    pub fn from_key(key: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.key() == key)
    }

    /// The valid recipe names, for error messages.
    pub fn keys() -> String {
        Role::ALL.map(Role::key).join(", ")
    }

    /// Position in [`Role::ALL`], for sorting reports.
    pub fn order(self) -> usize {
        Role::ALL.iter().position(|r| *r == self).unwrap_or(0)
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // `pad`, not `write_str`: report tables align roles with `{:<16}`.
        f.pad(self.label())
    }
}

/// Which matrix of the routed experts a stacked tensor holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ExpertMatrix {
    /// `ffn_gate_exps`
    Gate,
    /// `ffn_up_exps`
    Up,
    /// `ffn_down_exps`
    Down,
    /// `ffn_gate_up_exps` (`convert_hf_to_gguf.py --fuse-gate-up-exps`): within expert e, its
    /// `n_ff_exp` gate rows, then its `n_ff_exp` up rows.
    GateUp,
}

/// What a tensor name says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Class {
    /// The block `N` of `blk.N.*`; `None` for tensors outside blocks.
    pub layer: Option<u64>,
    /// The tensor's role.
    pub role: Role,
    /// For stacked routed-expert weights: which matrix.
    pub matrix: Option<ExpertMatrix>,
}

/// The block number of a tensor name `blk.N.…`.
pub fn layer_of(name: &str) -> Option<u64> {
    name.strip_prefix("blk.")?.split('.').next()?.parse().ok()
}

/// `blk.N.rest` -> (Some(N), rest); other names -> (None, name).
pub fn split_block(name: &str) -> (Option<u64>, &str) {
    if let Some(rest) = name.strip_prefix("blk.")
        && let Some((n, tail)) = rest.split_once('.')
        && !n.is_empty()
        && n.bytes().all(|b| b.is_ascii_digit())
        && let Ok(n) = n.parse()
    {
        return (Some(n), tail);
    }
    (None, name)
}

/// A name cut at its last `.` into what it names and its suffix: `blk.0.attn_q.scale` ->
/// (`blk.0.attn_q`, `Some("scale")`). A suffix is a word that is not all digits (the expert
/// number of the old per-expert layout, `ffn_gate.5`, is part of what the name names); a
/// name without one gives `(name, None)`. By rule, not by list: whatever suffix a converter
/// adds next is a suffix too.
pub fn split_suffix(name: &str) -> (&str, Option<&str>) {
    match name.rsplit_once('.') {
        Some((stem, suffix))
            if !stem.is_empty()
                && !suffix.is_empty()
                && !suffix.bytes().all(|b| b.is_ascii_digit())
                && suffix
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_') =>
        {
            (stem, Some(suffix))
        }
        _ => (name, None),
    }
}

/// The name with its block prefix and its suffix (`.weight`, `.bias`, `.scale`, ...) cut
/// off: `ffn_up_exps`. A weight and its companions have the same stem, and so the same role.
fn stem(name: &str) -> &str {
    let (_, rest) = split_block(name);
    split_suffix(rest).0
}

/// Classify a tensor name.
pub fn classify(name: &str) -> Class {
    let layer = split_block(name).0;
    let stem = stem(name);
    let (role, matrix) = role_of_stem(stem, layer.is_some());
    Class {
        layer,
        role,
        matrix,
    }
}

/// The role of a tensor name (see [`classify`]).
pub fn role_of(name: &str) -> Role {
    classify(name).role
}

fn role_of_stem(stem: &str, in_block: bool) -> (Role, Option<ExpertMatrix>) {
    let matrix = match stem {
        "ffn_gate_exps" => Some(ExpertMatrix::Gate),
        "ffn_up_exps" => Some(ExpertMatrix::Up),
        "ffn_down_exps" => Some(ExpertMatrix::Down),
        "ffn_gate_up_exps" => Some(ExpertMatrix::GateUp),
        _ => None,
    };
    if matrix.is_some() {
        return (Role::RoutedExperts, matrix);
    }
    // Norms first: `token_embd_norm` and `output_norm` are norms, not embeddings or output.
    if stem.contains("norm") {
        return (Role::Norms, None);
    }
    if !in_block {
        let role = match stem {
            "token_embd" | "pos_embd" | "token_types" => Role::Embeddings,
            "output" => Role::Output,
            _ => Role::Other,
        };
        return (role, None);
    }
    let role = if stem == "ffn_gate_inp" || stem == "exp_probs_b" {
        Role::Router
    } else if stem.ends_with("_shexp") {
        Role::SharedExperts
    } else if stem.ends_with("_exps")
        // GroveMoE's chunk experts, and the latent projections routed experts of latent
        // MoEs compute in: they belong to the routed experts (whole; not cut by expert).
        || stem.ends_with("_chexps")
        || stem.starts_with("ffn_latent_")
        || is_per_expert_ffn(stem)
    {
        Role::RoutedExperts
    } else if stem.starts_with("attn_") || stem.starts_with("indexer.") {
        // DeepSeek V3.2's lightning indexer picks the keys attention reads: attention.
        Role::Attention
    } else if matches!(stem, "ffn_gate" | "ffn_up" | "ffn_down") {
        Role::DenseFfn
    } else {
        Role::Other
    };
    (role, None)
}

/// The old Mixtral layout, one tensor per expert: `ffn_gate.3`, `ffn_down.12`.
fn is_per_expert_ffn(stem: &str) -> bool {
    stem.split_once('.').is_some_and(|(m, e)| {
        matches!(m, "ffn_gate" | "ffn_up" | "ffn_down") && e.bytes().all(|b| b.is_ascii_digit())
    })
}

/// Which matrix of a dense FFN a tensor is (`ffn_gate`, `ffn_up`, `ffn_down` weights of a
/// block); `None` for anything else, biases included. Assembling an MoE from dense models
/// stacks each of these into the routed-expert tensor of the same matrix.
pub fn dense_ffn_matrix(name: &str) -> Option<ExpertMatrix> {
    let (layer, rest) = split_block(name);
    layer?;
    match rest {
        "ffn_gate.weight" => Some(ExpertMatrix::Gate),
        "ffn_up.weight" => Some(ExpertMatrix::Up),
        "ffn_down.weight" => Some(ExpertMatrix::Down),
        _ => None,
    }
}

/// The name of block `layer`'s stacked routed-expert tensor of `matrix`:
/// `blk.3.ffn_up_exps.weight`.
pub fn stacked_experts_name(layer: u64, matrix: ExpertMatrix) -> String {
    let stem = match matrix {
        ExpertMatrix::Gate => "ffn_gate_exps",
        ExpertMatrix::Up => "ffn_up_exps",
        ExpertMatrix::Down => "ffn_down_exps",
        ExpertMatrix::GateUp => "ffn_gate_up_exps",
    };
    format!("blk.{layer}.{stem}.weight")
}

/// The name of block `layer`'s router (`ffn_gate_inp`, `[n_embd, n_expert]`).
pub fn router_name(layer: u64) -> String {
    format!("blk.{layer}.ffn_gate_inp.weight")
}

/// Whether a model has routed experts stored stacked (`ffn_*_exps`): an MoE whose experts an
/// assembly can take expert by expert.
pub fn has_stacked_experts(model: &Model) -> bool {
    model
        .tensors()
        .any(|t| cut::is_stacked_experts(&t.info.name))
}

/// The output head is tied to the input embeddings: the model has `token_embd.weight` and no
/// `output.weight` (Gemma and many small models); llama.cpp then uses `token_embd` as the head.
pub fn output_is_tied(model: &Model) -> bool {
    model.tensor("token_embd.weight").is_some() && model.tensor("output.weight").is_none()
}

/// Why a rule naming `output.weight` can match nothing in this model, if that is the reason.
pub fn tied_output_note(model: &Model) -> Option<&'static str> {
    output_is_tied(model).then_some(
        "this model has no output.weight: its output head is tied to token_embd.weight (take that instead)",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn role(name: &str) -> Role {
        classify(name).role
    }

    #[test]
    fn embeddings_and_output() {
        assert_eq!(role("token_embd.weight"), Role::Embeddings);
        assert_eq!(role("pos_embd.weight"), Role::Embeddings);
        assert_eq!(role("output.weight"), Role::Output);
        assert_eq!(role("output_norm.weight"), Role::Norms);
        assert_eq!(role("token_embd_norm.weight"), Role::Norms);
        assert_eq!(role("rope_freqs.weight"), Role::Other);
        assert_eq!(classify("output.weight").layer, None);
    }

    #[test]
    fn attention_including_fused_and_both_mla_layouts() {
        for n in [
            "attn_q",
            "attn_k",
            "attn_v",
            "attn_qkv",
            "attn_output",
            "attn_q_a",
            "attn_q_b",
            "attn_kv_a_mqa",
            "attn_kv_b",
            "attn_k_b",
            "attn_v_b",
        ] {
            let c = classify(&format!("blk.7.{n}.weight"));
            assert_eq!((c.role, c.layer), (Role::Attention, Some(7)), "{n}");
        }
        assert_eq!(role("blk.0.attn_qkv.bias"), Role::Attention);
    }

    #[test]
    fn norms() {
        for n in [
            "attn_norm",
            "ffn_norm",
            "attn_q_a_norm",
            "attn_kv_a_norm",
            "attn_q_norm",
            "attn_k_norm",
            "post_attention_norm",
            "ffn_post_norm",
        ] {
            assert_eq!(role(&format!("blk.2.{n}.weight")), Role::Norms, "{n}");
        }
    }

    #[test]
    fn dense_ffn() {
        for n in ["ffn_gate", "ffn_up", "ffn_down"] {
            assert_eq!(role(&format!("blk.0.{n}.weight")), Role::DenseFfn, "{n}");
        }
    }

    #[test]
    fn router() {
        assert_eq!(role("blk.3.ffn_gate_inp.weight"), Role::Router);
        assert_eq!(role("blk.3.exp_probs_b.bias"), Role::Router);
    }

    #[test]
    fn shared_experts() {
        for n in [
            "ffn_gate_shexp",
            "ffn_up_shexp",
            "ffn_down_shexp",
            "ffn_gate_inp_shexp",
        ] {
            assert_eq!(
                role(&format!("blk.3.{n}.weight")),
                Role::SharedExperts,
                "{n}"
            );
        }
    }

    #[test]
    fn routed_experts_separate_fused_and_per_expert() {
        let cases = [
            ("ffn_gate_exps", Some(ExpertMatrix::Gate)),
            ("ffn_up_exps", Some(ExpertMatrix::Up)),
            ("ffn_down_exps", Some(ExpertMatrix::Down)),
            ("ffn_gate_up_exps", Some(ExpertMatrix::GateUp)),
        ];
        for (n, m) in cases {
            let c = classify(&format!("blk.60.{n}.weight"));
            assert_eq!(c.role, Role::RoutedExperts, "{n}");
            assert_eq!(c.matrix, m, "{n}");
            assert_eq!(c.layer, Some(60));
        }
        assert_eq!(role("blk.3.ffn_down_exps.bias"), Role::RoutedExperts);
        // Old Mixtral files: one tensor per expert; routed experts, but not stacked.
        let c = classify("blk.1.ffn_gate.5.weight");
        assert_eq!((c.role, c.matrix), (Role::RoutedExperts, None));
    }

    #[test]
    fn names_outside_blocks_and_odd_blocks() {
        assert_eq!(
            split_block("blk.12.attn_q.weight"),
            (Some(12), "attn_q.weight")
        );
        assert_eq!(
            split_block("blk.x.attn_q.weight"),
            (None, "blk.x.attn_q.weight")
        );
        assert_eq!(split_block("blk.12"), (None, "blk.12"));
        assert_eq!(layer_of("token_embd.weight"), None);
        assert_eq!(layer_of("blk.3.ffn_up_exps.weight"), Some(3));
    }

    #[test]
    fn tied_output_heads() {
        use crate::ggml_type::GgmlType;
        use crate::testkit::GgufBuilder;
        let dir = tempfile::tempdir().unwrap();
        let open = |b: GgufBuilder, name: &str| {
            let p = dir.path().join(name);
            std::fs::write(&p, b.build()).unwrap();
            Model::open(&p).unwrap()
        };
        let embd = |b: GgufBuilder| b.tensor("token_embd.weight", &[32, 4], GgmlType::F32, 1);
        let tied = open(embd(GgufBuilder::new()), "tied.gguf");
        assert!(output_is_tied(&tied));
        assert!(
            tied_output_note(&tied)
                .unwrap()
                .contains("tied to token_embd")
        );
        let untied = open(
            embd(GgufBuilder::new()).tensor("output.weight", &[32, 4], GgmlType::F32, 1),
            "untied.gguf",
        );
        assert!(!output_is_tied(&untied));
        assert_eq!(tied_output_note(&untied), None);
        // No embeddings at all: nothing is tied.
        let none = open(
            GgufBuilder::new().tensor("blk.0.attn_q.weight", &[32, 4], GgmlType::F32, 1),
            "none.gguf",
        );
        assert!(!output_is_tied(&none));
    }

    #[test]
    fn dense_ffn_matrices_and_the_names_an_assembly_makes() {
        assert_eq!(
            dense_ffn_matrix("blk.4.ffn_gate.weight"),
            Some(ExpertMatrix::Gate)
        );
        assert_eq!(
            dense_ffn_matrix("blk.4.ffn_up.weight"),
            Some(ExpertMatrix::Up)
        );
        assert_eq!(
            dense_ffn_matrix("blk.4.ffn_down.weight"),
            Some(ExpertMatrix::Down)
        );
        assert_eq!(dense_ffn_matrix("blk.4.ffn_down.bias"), None);
        assert_eq!(dense_ffn_matrix("blk.4.ffn_up_exps.weight"), None);
        assert_eq!(dense_ffn_matrix("ffn_up.weight"), None);
        for m in [ExpertMatrix::Gate, ExpertMatrix::Up, ExpertMatrix::Down] {
            let n = stacked_experts_name(4, m);
            let c = classify(&n);
            assert_eq!(
                (c.role, c.matrix, c.layer),
                (Role::RoutedExperts, Some(m), Some(4))
            );
        }
        let r = classify(&router_name(4));
        assert_eq!((r.role, r.layer), (Role::Router, Some(4)));
    }

    #[test]
    fn role_keys_round_trip() {
        for r in Role::ALL {
            assert_eq!(Role::from_key(r.key()), Some(r));
        }
        assert_eq!(Role::from_key("experts"), None);
        assert!(Role::keys().contains("routed_experts"));
    }
}
