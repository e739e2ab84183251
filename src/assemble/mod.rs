//! Assembling an MoE from the quantized bytes of parents (`gguf-splice assemble`): a plan
//! like a splice's, whose experts come, in the order given, from the parents.
//!
//! - Dense parents: each becomes one expert per layer; its `ffn_{gate,up,down}` are stacked
//!   as stored into `ffn_*_exps` (no requantization), its attention is ignored, everything else
//!   comes from the base, in the base's architecture turned MoE ([`arch`]). The router rows are
//!   made ([`router`]).
//! - MoE parents: experts stacked as the experts list says (union, reorder, subset, or the most
//!   used by an importance matrix, [`imatrix`]); router rows and `exp_probs_b` elements follow
//!   their experts; shared experts, attention and the rest come from the base.
//!
//! Parents that cannot share one MoE are refused before anything is planned, every reason
//! named ([`compat`]). The result is a [`Plan`]: executed, printed and verified like a
//! splice's.

pub mod arch;
pub mod compat;
pub mod imatrix;
mod recorded;
pub mod router;
mod select;
pub mod spec;
mod tensors;

use std::path::{Path, PathBuf};

use crate::ggml_type::GgmlType;
use crate::plan::{
    self, AssemblyReport, LayerExperts, OverLimit, Parent, Plan, PlanError, PlanParts, SplitOptions,
};
use crate::roles;
use compat::Incompatibility;
use spec::{ExpertList, RouterSpec};

/// What the parents are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Dense FFNs (`ffn_gate`, `ffn_up`, `ffn_down`) and no routed experts.
    Dense,
    /// Stacked routed experts (`ffn_*_exps`).
    Moe,
}

/// Which experts the output has, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Selection {
    /// Every expert of every parent, parents in the order given (a dense parent: one).
    All,
    /// `--experts`: the list, in order (union, reorder, subset, repeats).
    List(ExpertList),
    /// `--keep`: prune one parent to the experts listed.
    Keep(ExpertList),
    /// `--keep-top N --imatrix FILE`: each layer keeps its N most used experts of one parent.
    Top {
        /// Experts kept per layer.
        n: u64,
        /// A GGUF importance matrix made by llama-imatrix.
        imatrix: PathBuf,
    },
}

/// How to assemble.
#[derive(Clone, Debug)]
pub struct AssembleOptions {
    /// The parent whose everything-else the output has (`None`: the first).
    pub base: Option<String>,
    /// Which experts.
    pub selection: Selection,
    /// For dense parents, where the router comes from (`None`: uniform, with a warning).
    pub router: Option<RouterSpec>,
    /// `expert_used_count` (`None`: the base's for MoE parents, min(2, experts) for dense).
    pub experts_used: Option<u64>,
    /// Warn instead of refusing when the output has more experts per layer than the
    /// programs that would load it accept (`--force-expert-count`).
    pub force_expert_count: bool,
}

/// Why an MoE cannot be assembled. Each names the parent, tensor or option, and what to do.
#[derive(Debug, thiserror::Error)]
pub enum AssembleError {
    /// No parent at all.
    #[error("no parents given; use --parent NAME=PATH (at least one)")]
    NoParents,
    /// Two parents share a name.
    #[error("parent name '{name}' is given twice")]
    DuplicateParent {
        /// The repeated name.
        name: String,
    },
    /// An option names a parent that was not given.
    #[error("{what}: no parent named '{name}' (parents given: {known})")]
    UnknownParent {
        /// The option that named it (`--base`, `--experts`, `--keep`).
        what: &'static str,
        /// The name it used.
        name: String,
        /// The parent names that were given, comma-separated.
        known: String,
    },
    /// A parent has neither stacked routed experts nor a dense FFN.
    #[error(
        "parent '{parent}' has neither stacked routed experts (ffn_*_exps) nor a dense FFN (ffn_gate/ffn_up/ffn_down): nothing to assemble experts from"
    )]
    NoFfn {
        /// The parent's name.
        parent: String,
    },
    /// Some parents are dense and others MoE.
    #[error(
        "dense parents ({dense}) and MoE parents ({moe}) cannot be mixed: assemble an MoE from dense models, or from MoE models"
    )]
    MixedKinds {
        /// The dense parents' names, comma-separated.
        dense: String,
        /// The MoE parents' names, comma-separated.
        moe: String,
    },
    /// The dense base's architecture has no MoE counterpart that gguf-splice knows.
    #[error(
        "parent '{parent}' is '{arch}', which gguf-splice cannot turn into an MoE; supported: {supported}"
    )]
    UnsupportedArchitecture {
        /// The base parent's name.
        parent: String,
        /// Its `general.architecture` (empty when it has none).
        arch: String,
        /// The architectures that can be, as `dense -> moe` pairs, comma-separated.
        supported: String,
    },
    /// The parents differ in ways that make one MoE of them meaningless.
    #[error("the parents cannot be assembled into one MoE:\n{}", .reasons.iter().map(|r| format!("  - {r}")).collect::<Vec<_>>().join("\n"))]
    Incompatible {
        /// Every difference found.
        reasons: Vec<Incompatibility>,
    },
    /// An option's value cannot be parsed.
    #[error("{option} '{text}': {reason}")]
    BadOption {
        /// The option (`--experts`, `--keep`, `--router`).
        option: &'static str,
        /// Its value as given.
        text: String,
        /// What is wrong with it.
        reason: String,
    },
    /// An experts list names an expert past a parent's expert count in some layer.
    #[error(
        "{option}: parent '{parent}' has {count} expert{} in blk.{layer}; expert {expert} does not exist", if *.count == 1 { "" } else { "s" }
    )]
    ExpertOutOfRange {
        /// The option with the list (`--experts`, `--keep`).
        option: &'static str,
        /// The parent's name.
        parent: String,
        /// The block number.
        layer: u64,
        /// The expert asked for (0-based).
        expert: u64,
        /// Experts the parent has in that block.
        count: u64,
    },
    /// The selection leaves no expert in the output.
    #[error("the experts list selects no expert")]
    NoExperts,
    /// `--keep` or `--keep-top` was given with other than one parent.
    #[error(
        "{option} prunes one MoE parent: give exactly one --parent (parents given: {given}); to take experts from several, use --experts"
    )]
    PruneNeedsOneParent {
        /// The option (`--keep`, `--keep-top`).
        option: &'static str,
        /// The parent names that were given, comma-separated.
        given: String,
    },
    /// `--keep-top` asks for more experts than the parent has in a block.
    #[error(
        "--keep-top {n}: blk.{layer} of parent '{parent}' has only {count} experts; keep at most {count}"
    )]
    KeepTooMany {
        /// Experts to keep per block, as given.
        n: u64,
        /// The parent's name.
        parent: String,
        /// The block number.
        layer: u64,
        /// Experts the parent has in that block.
        count: u64,
    },
    /// A pruning option (the one named) was given with a dense parent.
    #[error(
        "{0} needs MoE parents: dense parents have one expert each, so there is nothing to rank or pick among"
    )]
    NeedsMoe(&'static str),
    /// `--router` was given with MoE parents, whose routers are taken, not made.
    #[error(
        "--router is for dense parents, whose routers are made; MoE parents' router rows follow their experts"
    )]
    RouterForMoe,
    /// The experts used per token is 0, or more than the experts a token can reach.
    #[error(
        "expert_used_count {used} does not fit {count} experts per layer: it must be 1 to {max}{why}; set --experts-used"
    )]
    ExpertsUsed {
        /// Experts used per token: `--experts-used`, else the base's, else 2 (at most `count`).
        used: u64,
        /// Experts per layer in the output.
        count: u64,
        /// The most experts a token can use.
        max: u64,
        /// With grouped routing, how `max` follows from the groups; otherwise empty.
        why: String,
    },
    /// The base routes by groups of experts, and the output's expert count does not divide
    /// into more than one group each.
    #[error(
        "grouped routing: the base routes in {groups} groups of experts (expert_group_count), {group_used} used (expert_group_used_count); {count} experts per layer {reason}. Keep a number of experts that is a multiple of {groups} and more than {groups}"
    )]
    ExpertGroups {
        /// Experts per layer in the output.
        count: u64,
        /// The base's `expert_group_count`.
        groups: u64,
        /// The base's `expert_group_used_count` (0 when absent).
        group_used: u64,
        /// What is wrong with `count`.
        reason: String,
    },
    /// The importance matrix file for `--keep-top` is not one llama-imatrix writes.
    #[error("importance matrix {path}: {reason}")]
    Imatrix {
        /// The importance matrix file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The importance matrix has no per-expert counts for a block of the parent.
    #[error(
        "importance matrix {path} has no per-expert counts for blk.{layer}'s experts: it was made for another model, or that layer saw no tokens"
    )]
    ImatrixMissing {
        /// The importance matrix file.
        path: PathBuf,
        /// The block number.
        layer: u64,
    },
    /// An expert count in the importance matrix is not a count (NaN, infinite, negative):
    /// ranked as it is, a NaN would put its expert first.
    #[error(
        "importance matrix {path}: '{tensor}' gives expert {expert} a count of {found}; counts are token counts (finite, 0 or more): the file is damaged, remake it with llama-imatrix"
    )]
    ImatrixCount {
        /// The importance matrix file.
        path: PathBuf,
        /// The `*.counts` tensor.
        tensor: String,
        /// The expert (0-based).
        expert: u64,
        /// The value found.
        found: String,
    },
    /// The importance matrix or router file could not be opened, or is not a regular file.
    #[error(transparent)]
    Input(#[from] crate::input::InputError),
    /// A router file holds a value that is not a finite F32 (NaN, infinity, or an F64 beyond
    /// F32's range): llama.cpp's softmax over the router's scores would give NaN.
    #[error(
        "router file {path}: '{tensor}' element {element} (index {index:?}) is {found}; router rows must be finite F32 values"
    )]
    RouterValue {
        /// The router file.
        path: PathBuf,
        /// The tensor in it (`array` for a `.npy` file).
        tensor: String,
        /// The element's position in the tensor's data (0-based).
        element: u64,
        /// The same position by dimension, outermost first.
        index: Vec<u64>,
        /// The value found (for an F64 value beyond F32's range, that value).
        found: String,
    },
    /// A router file names its tensors by layer, and some output layers have none.
    #[error(
        "router file {path}: no router for blk {missing:?} (the file has blk {found:?}); give every MoE layer its tensor (blk.L.ffn_gate_inp.weight), or one tensor with no layer in its name for all layers"
    )]
    RouterLayersMissing {
        /// The router file.
        path: PathBuf,
        /// The output's layers that have no tensor in the file.
        missing: Vec<u64>,
        /// The layers that have one.
        found: Vec<u64>,
    },
    /// The `--router` file cannot be used (its format, names or shapes).
    #[error("router file {path}: {reason}")]
    RouterFile {
        /// The router file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A layer's router (made, or read from the `--router` file) does not have the size the
    /// layer needs (F32 `[n_embd, experts]`).
    #[error("{tensor}: the router is {found} bytes, the layer needs {expected}")]
    RouterSize {
        /// The router tensor's name.
        tensor: String,
        /// Bytes the layer needs.
        expected: u64,
        /// Bytes the router has.
        found: u64,
    },
    /// A dense base has FFN biases (or other companions than `{1}` scales), which an MoE
    /// llama.cpp loads cannot hold.
    #[error(
        "parent '{parent}' has {tensor}: a dense FFN weight's bias or companion other than a {{1}} .scale/.input_scale has no place in the MoE llama.cpp loads (its experts have no biases); assemble from parents without it"
    )]
    DenseFfnBias {
        /// The base parent's name.
        parent: String,
        /// The bias tensor.
        tensor: String,
    },
    /// An MoE base stores each expert in its own tensor (the old Mixtral layout).
    #[error(
        "parent '{parent}' stores experts one tensor each ({tensor}, the old Mixtral layout), which llama.cpp no longer loads; reconvert it to stacked ffn_*_exps"
    )]
    PerExpertLayout {
        /// The base parent's name.
        parent: String,
        /// The first per-expert tensor found.
        tensor: String,
    },
    /// A dense parent lacks an FFN tensor the base has.
    #[error("tensor '{tensor}' is not in parent '{parent}'")]
    TensorMissing {
        /// The parent's name.
        parent: String,
        /// The tensor, as the base names it.
        tensor: String,
    },
    /// An MoE parent's expert tensor cannot be read in the base's layout.
    #[error("tensor '{tensor}' cannot be read from parent '{parent}': {reason}")]
    Unavailable {
        /// The parent's name.
        parent: String,
        /// The tensor, as the base names it.
        tensor: String,
        /// Why its layout cannot be read as the base's.
        reason: String,
    },
    /// Experts stacked into one tensor come from parents that store it in different types.
    #[error(
        "tensor '{tensor}': experts of '{first}' are {first_type}, of '{second}' {second_type}; one tensor has one type: requantize one parent to the other's type with llama-quantize"
    )]
    TypesDiffer {
        /// The tensor's name.
        tensor: String,
        /// One contributing parent.
        first: String,
        /// Its type for the tensor.
        first_type: GgmlType,
        /// Another contributing parent.
        second: String,
        /// Its type, which differs.
        second_type: GgmlType,
    },
    /// A size or offset does not fit in 64 bits.
    #[error("tensor '{tensor}': size overflows")]
    Overflow {
        /// The tensor.
        tensor: String,
    },
    /// Reading the importance matrix or router file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file being read.
        path: PathBuf,
        /// The system's error.
        #[source]
        source: std::io::Error,
    },
    /// The assembled plan failed the checks every plan gets before writing.
    #[error(transparent)]
    Plan(#[from] PlanError),
}

/// What a parent is, from its tensors (see [`roles`]).
fn kind_of(p: &Parent) -> Result<Kind, AssembleError> {
    if roles::has_stacked_experts(&p.model) {
        return Ok(Kind::Moe);
    }
    if p.model
        .tensors()
        .any(|t| roles::dense_ffn_matrix(&t.info.name).is_some())
    {
        return Ok(Kind::Dense);
    }
    Err(AssembleError::NoFfn {
        parent: p.name.clone(),
    })
}

/// The planner's error about the parents' names as assemble's own (whose messages name the
/// option, `--base`, `--experts` or `--keep`, that named a parent); `what` is that option.
fn parent_error(e: PlanError, what: &'static str) -> AssembleError {
    match e {
        PlanError::NoParents => AssembleError::NoParents,
        PlanError::DuplicateParent { name } => AssembleError::DuplicateParent { name },
        PlanError::UnknownParent { name, known, .. } => {
            AssembleError::UnknownParent { what, name, known }
        }
        e => AssembleError::Plan(e),
    }
}

/// Plan the MoE assembled from `parents` by `opts`, written to `output` (the first shard's
/// path when split). Everything is checked here; nothing is opened for writing.
pub fn plan<'p>(
    parents: &'p [Parent],
    opts: &AssembleOptions,
    output: &Path,
    split: SplitOptions,
) -> Result<Plan<'p>, AssembleError> {
    plan::parents::check(parents).map_err(|e| parent_error(e, ""))?;
    let names: Vec<&str> = parents.iter().map(|p| p.name.as_str()).collect();
    let find = |what: &'static str, name: &str| {
        plan::parents::index_of(parents, name, what).map_err(|e| parent_error(e, what))
    };
    let base = match &opts.base {
        Some(b) => find("--base", b)?,
        None => 0,
    };
    let kinds: Vec<Kind> = parents.iter().map(kind_of).collect::<Result<_, _>>()?;
    let of_kind = |k: Kind| -> Vec<&str> {
        names
            .iter()
            .zip(&kinds)
            .filter(|(_, x)| **x == k)
            .map(|(n, _)| *n)
            .collect()
    };
    let kind = kinds[base];
    if kinds.iter().any(|k| *k != kind) {
        return Err(AssembleError::MixedKinds {
            dense: of_kind(Kind::Dense).join(", "),
            moe: of_kind(Kind::Moe).join(", "),
        });
    }
    let b = &parents[base];
    let arch = b.model.architecture().unwrap_or("").to_string();
    if kind == Kind::Dense && arch::moe_of(&arch).is_none() {
        return Err(AssembleError::UnsupportedArchitecture {
            parent: b.name.clone(),
            arch,
            supported: arch::supported(),
        });
    }
    if kind == Kind::Moe && opts.router.is_some() {
        return Err(AssembleError::RouterForMoe);
    }
    let reasons = compat::check(parents, base, kind);
    if !reasons.is_empty() {
        return Err(AssembleError::Incompatible { reasons });
    }

    let mut warnings = Vec::new();
    let layers = select::select(parents, base, kind, &opts.selection, &find, &mut warnings)?;
    let count = layers.first().map_or(0, |l| l.experts.len() as u64);
    if count == 0 {
        return Err(AssembleError::NoExperts);
    }
    let experts_used = select::check_counts(&parents[base], kind, count, opts.experts_used)?;

    let routers = match kind {
        Kind::Moe => None,
        Kind::Dense => {
            let spec = opts.router.clone().unwrap_or_else(|| {
                warnings.push(
                    "no --router: the router is uniform, so every token goes to the same experts (the lowest-numbered); give --router random:SEED or a file of gate vectors for routing that differs"
                        .into(),
                );
                RouterSpec::Uniform
            });
            let n_embd = arch::base_count(b, "embedding_length").unwrap_or(0);
            let ids: Vec<u64> = layers.iter().map(|l| l.layer).collect();
            let bytes = router::router_bytes(&spec, &ids, count, n_embd)?;
            Some((bytes, spec.describe()))
        }
    };
    let router_text = routers
        .as_ref()
        .map_or("rows follow their experts".to_string(), |(_, o)| o.clone());
    let tensors = tensors::plan(&tensors::Inputs {
        parents,
        base,
        kind,
        layers: &layers,
        routers,
    })?;
    for (i, p) in parents.iter().enumerate() {
        if !layers
            .iter()
            .any(|l| l.experts.iter().any(|e| e.parent == i))
        {
            warnings.push(format!("parent '{}' contributes no expert", p.name));
        }
    }
    let record = record(opts, &layers);
    let (architecture, kvs) = arch::metadata(
        parents,
        base,
        kind,
        &arch::Counts {
            expert_count: count,
            experts_used: (kind == Kind::Dense || opts.experts_used.is_some())
                .then_some(experts_used),
        },
        &record,
    );
    let parts = PlanParts {
        parents,
        base,
        kvs,
        tensors,
        rules: Vec::new(),
        warnings,
        assembly: Some(AssemblyReport {
            architecture,
            expert_count: count,
            experts_used,
            router: router_text,
            layers,
        }),
        imatrices: Vec::new(),
        made: plan::record::Made::Assemble(opts.record()),
    };
    let over_limit = if opts.force_expert_count {
        OverLimit::Warn
    } else {
        OverLimit::Refuse
    };
    Ok(plan::finish_with(parts, output, split, over_limit)?)
}

/// What `splice.recipe` records of an assembly: the options, and for `--keep-top` the experts
/// kept in each layer.
fn record(opts: &AssembleOptions, layers: &[LayerExperts]) -> String {
    let mut out = String::from("# gguf-splice assemble\n");
    if let Some(b) = &opts.base {
        out.push_str(&format!("--base {b}\n"));
    }
    match &opts.selection {
        Selection::All => {}
        Selection::List(l) => out.push_str(&format!("--experts '{}'\n", l.text)),
        Selection::Keep(l) => out.push_str(&format!("--keep '{}'\n", l.text)),
        Selection::Top { n, imatrix } => {
            let file = imatrix
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default();
            out.push_str(&format!("--keep-top {n} --imatrix {file}\n"));
            for l in layers {
                let kept: Vec<String> = l
                    .experts
                    .iter()
                    .filter_map(|e| e.expert.map(|x| x.to_string()))
                    .collect();
                out.push_str(&format!("# blk.{} kept {}\n", l.layer, kept.join(",")));
            }
        }
    }
    if let Some(r) = &opts.record().router {
        out.push_str(&format!("--router {r}\n"));
    }
    if let Some(k) = opts.experts_used {
        out.push_str(&format!("--experts-used {k}\n"));
    }
    out
}
