//! The planner: recipe x parents -> a plan that says, for every byte range of every output
//! tensor, which parent file and offset it comes from, and where it lands in which output
//! shard. Every check happens here, before any output file is opened; the writer then only
//! executes the plan.

use std::collections::{BTreeMap, HashSet};
use std::ops::Range;
use std::path::{Path, PathBuf};

use crate::ggml_type::GgmlType;
use crate::gguf::model::{KEY_SPLIT_COUNT, KEY_SPLIT_NO, KEY_SPLIT_TENSORS_COUNT, shard_path};
use crate::gguf::read::MAX_HEADER_BYTES;
use crate::gguf::write::{assign_offsets, declared_alignment, encoded_header_len};
use crate::gguf::{Model, OwnedValue, TensorInfo, ValueRef, ValueType};
use crate::layout::{self, DEFAULT_ALIGNMENT};
use crate::recipe::{ChatTemplate, Recipe, layer_of};

/// A parent model and the name the recipe calls it by.
pub struct Parent {
    pub name: String,
    pub model: Model,
}

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("{origin}: no parent named '{name}' (parents given: {known})")]
    UnknownParent {
        origin: String,
        name: String,
        known: String,
    },
    #[error("the recipe expects a parent named '{name}'; give it with --parent {name}=PATH")]
    MissingParent { name: String },
    #[error("no parents given; use --parent NAME=PATH (at least one)")]
    NoParents,
    #[error("parent name '{name}' is given twice")]
    DuplicateParent { name: String },
    #[error(
        "architectures differ: base '{base}' ({base_path}) is '{base_arch}', parent '{parent}' ({path}) is '{arch}'"
    )]
    ArchitectureMismatch {
        base: String,
        base_path: PathBuf,
        base_arch: String,
        parent: String,
        path: PathBuf,
        arch: String,
    },
    #[error(
        "hyperparameter '{key}' differs: base '{base}' has {base_value}, parent '{parent}' has {value}; tensors of different models cannot be combined"
    )]
    HyperparameterMismatch {
        key: String,
        base: String,
        base_value: String,
        parent: String,
        value: String,
    },
    #[error("{origin}: tensor '{tensor}' is not in parent '{parent}' ({path}){hint}")]
    TensorMissing {
        origin: String,
        tensor: String,
        parent: String,
        path: PathBuf,
        hint: String,
    },
    #[error(
        "tensor '{tensor}': shape {shape:?} in parent '{parent}' differs from {base_shape:?} in base '{base}'{hint}"
    )]
    ShapeMismatch {
        tensor: String,
        base: String,
        base_shape: Vec<u64>,
        parent: String,
        shape: Vec<u64>,
        hint: String,
    },
    #[error(
        "tensor '{tensor}': experts cannot be mixed across types: '{first}' has {first_type}, '{second}' has {second_type}; take the whole tensor from one parent instead (a rule without `experts`)"
    )]
    ExpertTypeMismatch {
        tensor: String,
        first: String,
        first_type: String,
        second: String,
        second_type: String,
    },
    #[error("{origin}: experts {experts} out of range for '{tensor}', which has {count}")]
    ExpertsOutOfRange {
        origin: String,
        tensor: String,
        experts: String,
        count: u64,
    },
    #[error(
        "{origin}: a rule with `experts` matched '{tensor}', which is not a stacked expert tensor (ffn_*_exps) or a router; narrow the regex, e.g. to '_exps'"
    )]
    ExpertsOnPlainTensor { origin: String, tensor: String },
    #[error(
        "{origin}: '{pattern}' takes no tensor of the base (no name matches, or earlier rules took them all); fix the regex or mark the rule `optional = true`"
    )]
    RuleMatchedNothing { origin: String, pattern: String },
    /// A rule took nothing and its `layers` name blocks the base does not have.
    #[error(
        "{origin}: layers {layers} are past the model's last block (it has {block_count} blocks, blk.0 to blk.{}); fix `layers`",
        block_count.saturating_sub(1)
    )]
    LayersBeyondModel {
        origin: String,
        layers: String,
        block_count: u64,
    },
    #[error("chat template: {0}")]
    ChatTemplate(String),
    /// The recipe's chat template file could not be read, or is too large or not UTF-8.
    #[error("chat template: {0}")]
    ChatTemplateFile(#[source] crate::input::InputError),
    #[error("{origin}: tensor '{tensor}' cannot be split by expert: {reason}")]
    CannotSplit {
        origin: String,
        tensor: String,
        reason: String,
    },
    #[error("the split options make {count} shards; at most {max} can be named")]
    TooManyShards { count: usize, max: usize },
    /// The child's header would be larger than the reader accepts.
    #[error(
        "{path}: the header (metadata and tensor infos) would be {len} bytes, over the {} MiB ({max} bytes) that gguf-splice reads back; drop large keys with metadata.remove",
        max >> 20
    )]
    HeaderTooLarge { path: PathBuf, len: u64, max: u64 },
    #[error("tensor '{tensor}': size overflows")]
    Overflow { tensor: String },
}

/// A metadata value of the child: borrowed raw from a parent, or made here.
#[derive(Clone, Debug)]
pub enum PlanValue<'p> {
    Parent(ValueRef<'p>),
    Owned(OwnedValue),
}

impl PlanValue<'_> {
    pub fn as_ref(&self) -> ValueRef<'_> {
        match self {
            PlanValue::Parent(v) => *v,
            PlanValue::Owned(v) => v.as_ref(),
        }
    }
}

/// A byte range of one output tensor and where it comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Piece {
    pub parent: usize,
    /// Shard of the parent that holds the bytes.
    pub shard: usize,
    /// Absolute offset of the first byte in that shard file.
    pub src_offset: u64,
    pub len: u64,
    /// The experts (outer slices) this piece covers, when the tensor is mixed per expert.
    pub slices: Option<Range<u64>>,
}

#[derive(Clone, Debug)]
pub struct PlannedTensor {
    /// Name, shape, type, size, and offset within its output shard's data section.
    pub info: TensorInfo,
    pub out_shard: usize,
    /// In output order; they cover the tensor exactly.
    pub pieces: Vec<Piece>,
}

#[derive(Clone, Debug)]
pub struct OutShard {
    pub path: PathBuf,
    pub tensors: Range<usize>,
    pub alignment: u64,
    pub header_len: u64,
    pub data_len: u64,
}

impl OutShard {
    pub fn file_len(&self) -> u64 {
        self.header_len + self.data_len
    }
}

/// How a rule fared: how many base tensors it selected.
#[derive(Clone, Debug)]
pub struct RuleReport {
    pub origin: String,
    pub pattern: String,
    pub from: String,
    pub experts: Option<String>,
    pub matched: usize,
}

#[derive(Clone, Copy, Debug, Default)]
pub struct SplitOptions {
    /// `--split-max-size`: a soft limit on tensor bytes per shard, as llama-gguf-split.
    pub max_bytes: Option<u64>,
    /// `--split-max-tensors`.
    pub max_tensors: Option<usize>,
}

impl SplitOptions {
    pub fn is_split(&self) -> bool {
        self.max_bytes.is_some() || self.max_tensors.is_some()
    }
}

pub struct Plan<'p> {
    pub parents: &'p [Parent],
    pub base: usize,
    /// The child's metadata (shard 0), without split keys.
    pub kvs: Vec<(String, PlanValue<'p>)>,
    pub tensors: Vec<PlannedTensor>,
    pub shards: Vec<OutShard>,
    pub rules: Vec<RuleReport>,
    pub warnings: Vec<String>,
}

/// Keys whose values decide tensor shapes; parents that differ in them are different models.
const STRUCTURAL_KEYS: &[&str] = &[
    "block_count",
    "embedding_length",
    "feed_forward_length",
    "expert_feed_forward_length",
    "expert_shared_feed_forward_length",
    "expert_count",
    "expert_shared_count",
    "leading_dense_block_count",
    "attention.head_count",
    "attention.head_count_kv",
    "attention.key_length",
    "attention.value_length",
    "attention.key_length_mla",
    "attention.value_length_mla",
    "attention.q_lora_rank",
    "attention.kv_lora_rank",
    "rope.dimension_count",
    "vocab_size",
];

const KEY_CHAT_TEMPLATE: &str = "tokenizer.chat_template";
pub const KEY_SPLICE_RECIPE: &str = "splice.recipe";

/// Stacked routed-expert tensors: `blk.N.ffn_{gate,up,down}_exps.weight`, `[ne0, ne1, n_expert]`.
pub fn is_stacked_experts(name: &str, dims: &[u64]) -> bool {
    dims.len() == 3 && name.contains("_exps.")
}

/// The router and its bias, whose row / element e belongs to expert e.
pub fn is_router(name: &str) -> bool {
    name.ends_with(".ffn_gate_inp.weight") || name.ends_with(".exp_probs_b.bias")
}

/// The most experts a tensor may be split into (DeepSeek V3 has 256); bounds the per-expert
/// table, whose size otherwise comes from a file's header.
pub const MAX_EXPERTS: u64 = 1 << 16;

/// Where each outer slice (expert) of one tensor comes from: a parent, or unassigned.
type SliceOwners = Vec<Option<usize>>;

pub fn build<'p>(
    parents: &'p [Parent],
    recipe: &Recipe,
    output: &Path,
    split: SplitOptions,
) -> Result<Plan<'p>, PlanError> {
    if parents.is_empty() {
        return Err(PlanError::NoParents);
    }
    let names: Vec<&str> = parents.iter().map(|p| p.name.as_str()).collect();
    for (i, n) in names.iter().enumerate() {
        if names[..i].contains(n) {
            return Err(PlanError::DuplicateParent {
                name: n.to_string(),
            });
        }
    }
    for expected in &recipe.parents {
        if !names.contains(&expected.as_str()) {
            return Err(PlanError::MissingParent {
                name: expected.clone(),
            });
        }
    }
    let find = |origin: &str, name: &str| {
        names
            .iter()
            .position(|n| *n == name)
            .ok_or_else(|| PlanError::UnknownParent {
                origin: origin.to_string(),
                name: name.to_string(),
                known: names.join(", "),
            })
    };
    let base = match &recipe.base {
        Some(b) => find("recipe base", b)?,
        None => 0,
    };
    let rule_parents: Vec<usize> = recipe
        .rules
        .iter()
        .map(|r| find(&r.origin, &r.from))
        .collect::<Result<_, _>>()?;

    let mut warnings = Vec::new();
    check_compatible(parents, base, &mut warnings)?;

    // Routers last: with `router`, a rule's router rows follow the experts it actually took
    // in that layer, which is known only once the stacked expert tensors are planned.
    let base_model = &parents[base].model;
    let mut matched = vec![0usize; recipe.rules.len()];
    let mut took_experts: Vec<HashSet<u64>> = vec![HashSet::new(); recipe.rules.len()];
    let mut planned: Vec<Option<PlannedTensor>> = vec![None; base_model.tensor_count()];
    for routers in [false, true] {
        for (i, t) in base_model.tensors().enumerate() {
            if is_router(&t.info.name) != routers {
                continue;
            }
            planned[i] = Some(plan_tensor(
                parents,
                base,
                recipe,
                &rule_parents,
                &mut took_experts,
                t.info,
                &mut matched,
            )?);
        }
    }
    let mut tensors: Vec<PlannedTensor> = planned.into_iter().flatten().collect();

    let rules: Vec<RuleReport> = recipe
        .rules
        .iter()
        .zip(&matched)
        .map(|(r, &matched)| RuleReport {
            origin: r.origin.clone(),
            pattern: r.pattern.as_str().to_string(),
            from: r.from.clone(),
            experts: r.experts.as_ref().map(|e| e.text.clone()),
            matched,
        })
        .collect();
    for (rule, report) in recipe.rules.iter().zip(&rules) {
        if report.matched == 0 && !rule.optional {
            let blocks = base_model
                .tensors()
                .filter_map(|t| layer_of(&t.info.name))
                .max()
                .map_or(0, |l| l + 1);
            if let Some(layers) = rule.layers_beyond(blocks) {
                return Err(PlanError::LayersBeyondModel {
                    origin: rule.origin.clone(),
                    layers,
                    block_count: blocks,
                });
            }
            return Err(PlanError::RuleMatchedNothing {
                origin: rule.origin.clone(),
                pattern: report.pattern.clone(),
            });
        }
    }
    for (i, p) in parents.iter().enumerate() {
        if !tensors
            .iter()
            .any(|t| t.pieces.iter().any(|pc| pc.parent == i))
        {
            warnings.push(format!("parent '{}' contributes no tensor", p.name));
        }
    }

    let kvs = plan_metadata(parents, base, recipe, &mut warnings)?;
    let shards = assign_shards(&mut tensors, &kvs, output, split)?;
    Ok(Plan {
        parents,
        base,
        kvs,
        tensors,
        shards,
        rules,
        warnings,
    })
}

fn check_compatible(
    parents: &[Parent],
    base: usize,
    warnings: &mut Vec<String>,
) -> Result<(), PlanError> {
    let b = &parents[base];
    let base_arch = b.model.architecture().unwrap_or("").to_string();
    for p in parents.iter().filter(|p| p.name != b.name) {
        let arch = p.model.architecture().unwrap_or("").to_string();
        if arch != base_arch {
            return Err(PlanError::ArchitectureMismatch {
                base: b.name.clone(),
                base_path: b.model.path().to_path_buf(),
                base_arch,
                parent: p.name.clone(),
                path: p.model.path().to_path_buf(),
                arch,
            });
        }
        for suffix in STRUCTURAL_KEYS {
            let key = format!("{base_arch}.{suffix}");
            let (bv, pv) = (b.model.get(&key), p.model.get(&key));
            let same = match (bv, pv) {
                (None, None) => true,
                (Some(x), Some(y)) => match (x.as_u64(), y.as_u64()) {
                    (Some(a), Some(c)) => a == c,
                    _ => x == y,
                },
                _ => false,
            };
            if !same {
                let show = |v: Option<ValueRef>| v.map_or("no such key".into(), |v| v.summary(4));
                return Err(PlanError::HyperparameterMismatch {
                    key,
                    base: b.name.clone(),
                    base_value: show(bv),
                    parent: p.name.clone(),
                    value: show(pv),
                });
            }
        }
        let differing: Vec<&str> = b
            .model
            .first()
            .kvs()
            .iter()
            .filter(|kv| kv.key.starts_with("tokenizer.ggml."))
            .filter(|kv| p.model.get(&kv.key) != Some(b.model.first().value(kv)))
            .map(|kv| kv.key.as_str())
            .collect();
        if !differing.is_empty() {
            warnings.push(format!(
                "tokenizer differs between '{}' and '{}': {}",
                b.name,
                p.name,
                differing.join(", ")
            ));
        }
        if b.model.get(KEY_CHAT_TEMPLATE) != p.model.get(KEY_CHAT_TEMPLATE) {
            warnings.push(format!(
                "chat template differs between '{}' and '{}'; the child keeps the metadata parent's unless the recipe says otherwise",
                b.name, p.name
            ));
        }
    }
    Ok(())
}

fn plan_tensor(
    parents: &[Parent],
    base: usize,
    recipe: &Recipe,
    rule_parents: &[usize],
    // Per rule with `experts` and `router`: the layers where it took experts of a stacked
    // expert tensor (filled while planning those, read while planning routers).
    took_experts: &mut [HashSet<u64>],
    base_info: &TensorInfo,
    matched: &mut [usize],
) -> Result<PlannedTensor, PlanError> {
    let name = &base_info.name;
    let sliceable = is_stacked_experts(name, &base_info.dims)
        || (is_router(name) && !base_info.dims.is_empty());
    let n_slices = base_info.dims.last().copied().unwrap_or(1);

    // Walk the rules in order: a whole-tensor rule takes everything still unassigned and
    // ends the walk; an expert rule takes its experts and lets the rest fall through.
    let mut owners: Option<SliceOwners> = None;
    let mut whole: Option<usize> = None;
    for (r, rule) in recipe.rules.iter().enumerate() {
        let follows_router = rule.router
            && is_router(name)
            && layer_of(name).is_some_and(|l| took_experts[r].contains(&l));
        if !(rule.selects(name) || follows_router) {
            continue;
        }
        matched[r] += 1;
        let parent = rule_parents[r];
        match &rule.experts {
            None => {
                match owners.as_mut() {
                    Some(o) => o
                        .iter_mut()
                        .filter(|s| s.is_none())
                        .for_each(|s| *s = Some(parent)),
                    None => whole = Some(parent),
                }
                break;
            }
            Some(experts) => {
                if !sliceable {
                    return Err(PlanError::ExpertsOnPlainTensor {
                        origin: rule.origin.clone(),
                        tensor: name.clone(),
                    });
                }
                // Each expert must be a non-empty, whole-block byte range; this also bounds
                // the per-expert table below by the tensor's real size.
                match layout::outer_slice_bytes(base_info.ty, &base_info.dims) {
                    Some(b) if b > 0 => {}
                    _ => {
                        return Err(PlanError::CannotSplit {
                            origin: rule.origin.clone(),
                            tensor: name.clone(),
                            reason: format!(
                                "shape {:?} of type {} has no whole-block, non-empty slice per expert",
                                base_info.dims, base_info.ty
                            ),
                        });
                    }
                }
                if n_slices > MAX_EXPERTS {
                    return Err(PlanError::CannotSplit {
                        origin: rule.origin.clone(),
                        tensor: name.clone(),
                        reason: format!("{n_slices} experts; at most {MAX_EXPERTS} are supported"),
                    });
                }
                if experts.max() >= n_slices {
                    return Err(PlanError::ExpertsOutOfRange {
                        origin: rule.origin.clone(),
                        tensor: name.clone(),
                        experts: experts.text.clone(),
                        count: n_slices,
                    });
                }
                let o = owners.get_or_insert_with(|| vec![None; n_slices as usize]);
                let mut took = false;
                for (e, slot) in o.iter_mut().enumerate() {
                    if slot.is_none() && experts.contains(e as u64) {
                        *slot = Some(parent);
                        took = true;
                    }
                }
                if took
                    && rule.router
                    && is_stacked_experts(name, &base_info.dims)
                    && let Some(l) = layer_of(name)
                {
                    took_experts[r].insert(l);
                }
            }
        }
    }
    let owners: SliceOwners = match owners {
        Some(mut o) => {
            o.iter_mut()
                .filter(|s| s.is_none())
                .for_each(|s| *s = Some(base));
            o
        }
        None => vec![Some(whole.unwrap_or(base))],
    };

    // Check every contributing parent's copy of the tensor against the base's shape.
    let mut contributors: Vec<usize> = owners.iter().flatten().copied().collect();
    contributors.sort_unstable();
    contributors.dedup();
    let mut sources = BTreeMap::new();
    for &p in &contributors {
        let parent = &parents[p];
        let loc = parent
            .model
            .tensor(name)
            .ok_or_else(|| PlanError::TensorMissing {
                origin: format!("parent '{}'", parent.name),
                tensor: name.clone(),
                parent: parent.name.clone(),
                path: parent.model.path().to_path_buf(),
                hint: layout_hint(name),
            })?;
        if loc.info.dims != base_info.dims {
            return Err(PlanError::ShapeMismatch {
                tensor: name.clone(),
                base: parents[base].name.clone(),
                base_shape: base_info.dims.clone(),
                parent: parent.name.clone(),
                shape: loc.info.dims.clone(),
                hint: layout_hint(name),
            });
        }
        sources.insert(p, loc);
    }

    let ty: GgmlType = sources[&contributors[0]].info.ty;
    if contributors.len() > 1 {
        for &p in &contributors[1..] {
            let other = sources[&p].info.ty;
            if other != ty {
                return Err(PlanError::ExpertTypeMismatch {
                    tensor: name.clone(),
                    first: parents[contributors[0]].name.clone(),
                    first_type: ty.to_string(),
                    second: parents[p].name.clone(),
                    second_type: other.to_string(),
                });
            }
        }
    }
    let n_bytes = sources[&contributors[0]].info.n_bytes;
    let overflow = || PlanError::Overflow {
        tensor: name.clone(),
    };

    let pieces = if contributors.len() == 1 {
        let loc = sources[&contributors[0]];
        vec![Piece {
            parent: contributors[0],
            shard: loc.shard,
            src_offset: loc.file_offset,
            len: n_bytes,
            slices: None,
        }]
    } else {
        let slice_bytes = layout::outer_slice_bytes(ty, &base_info.dims).ok_or_else(overflow)?;
        let mut pieces: Vec<Piece> = Vec::new();
        for (e, owner) in owners.iter().enumerate() {
            let p = owner.expect("every slice assigned");
            let e = e as u64;
            match pieces.last_mut() {
                Some(last) if last.parent == p => {
                    last.len += slice_bytes;
                    last.slices = last.slices.clone().map(|s| s.start..e + 1);
                }
                _ => {
                    let loc = sources[&p];
                    pieces.push(Piece {
                        parent: p,
                        shard: loc.shard,
                        src_offset: loc.file_offset + e * slice_bytes,
                        len: slice_bytes,
                        slices: Some(e..e + 1),
                    });
                }
            }
        }
        pieces
    };
    Ok(PlannedTensor {
        info: TensorInfo {
            name: name.clone(),
            dims: base_info.dims.clone(),
            ty,
            offset: 0,
            n_bytes,
        },
        out_shard: 0,
        pieces,
    })
}

fn layout_hint(name: &str) -> String {
    if name.contains("attn_kv_b") || name.contains("attn_k_b") || name.contains("attn_v_b") {
        "; the parents come from converters of different generations (attn_kv_b vs attn_k_b/attn_v_b): reconvert one so both use the same layout".into()
    } else {
        String::new()
    }
}

fn set_kv<'p>(kvs: &mut Vec<(String, PlanValue<'p>)>, key: &str, value: PlanValue<'p>) {
    match kvs.iter_mut().find(|(k, _)| k == key) {
        Some(slot) => slot.1 = value,
        None => kvs.push((key.to_string(), value)),
    }
}

fn plan_metadata<'p>(
    parents: &'p [Parent],
    base: usize,
    recipe: &Recipe,
    warnings: &mut Vec<String>,
) -> Result<Vec<(String, PlanValue<'p>)>, PlanError> {
    let names: Vec<&str> = parents.iter().map(|p| p.name.as_str()).collect();
    let meta = match &recipe.metadata.from {
        Some(m) => names
            .iter()
            .position(|n| n == m)
            .ok_or_else(|| PlanError::UnknownParent {
                origin: "metadata.from".into(),
                name: m.clone(),
                known: names.join(", "),
            })?,
        None => base,
    };
    let first = parents[meta].model.first();
    let mut kvs: Vec<(String, PlanValue<'p>)> = first
        .kvs()
        .iter()
        .filter(|kv| !kv.key.starts_with("split.") && !kv.key.starts_with("general.base_model."))
        .map(|kv| (kv.key.clone(), PlanValue::Parent(first.value(kv))))
        .collect();

    let name = recipe.metadata.name.clone().unwrap_or_else(|| {
        let base_name = parents[base]
            .model
            .get("general.name")
            .and_then(|v| v.as_str())
            .unwrap_or(&parents[base].name);
        format!("{base_name} (gguf-splice of {})", names.join(" + "))
    });
    set_kv(
        &mut kvs,
        "general.name",
        PlanValue::Owned(OwnedValue::string(&name)),
    );

    match &recipe.metadata.chat_template {
        None => {}
        Some(ChatTemplate::Parent(p)) => {
            let i = names
                .iter()
                .position(|n| n == p)
                .ok_or_else(|| PlanError::UnknownParent {
                    origin: "metadata.chat_template".into(),
                    name: p.clone(),
                    known: names.join(", "),
                })?;
            let v = parents[i].model.get(KEY_CHAT_TEMPLATE).ok_or_else(|| {
                PlanError::ChatTemplate(format!("parent '{p}' has no {KEY_CHAT_TEMPLATE}"))
            })?;
            set_kv(&mut kvs, KEY_CHAT_TEMPLATE, PlanValue::Parent(v));
        }
        Some(ChatTemplate::File(path)) => {
            let text = crate::input::read_text(
                path,
                "chat template",
                crate::recipe::MAX_CHAT_TEMPLATE_BYTES,
            )
            .map_err(PlanError::ChatTemplateFile)?;
            set_kv(
                &mut kvs,
                KEY_CHAT_TEMPLATE,
                PlanValue::Owned(OwnedValue::string(&text)),
            );
        }
    }

    // Record the parents the way merges do (gguf-py's general.base_model.*).
    set_kv(
        &mut kvs,
        "general.base_model.count",
        PlanValue::Owned(OwnedValue::u32(parents.len() as u32)),
    );
    for (i, p) in parents.iter().enumerate() {
        let own_name = p
            .model
            .get("general.name")
            .and_then(|v| v.as_str())
            .unwrap_or(&p.name);
        set_kv(
            &mut kvs,
            &format!("general.base_model.{i}.name"),
            PlanValue::Owned(OwnedValue::string(own_name)),
        );
        for (from, to) in [
            ("general.organization", "organization"),
            ("general.repo_url", "repo_url"),
            ("general.version", "version"),
        ] {
            if let Some(v) = p.model.get(from).filter(|v| v.ty == ValueType::String) {
                set_kv(
                    &mut kvs,
                    &format!("general.base_model.{i}.{to}"),
                    PlanValue::Parent(v),
                );
            }
        }
    }
    set_kv(
        &mut kvs,
        KEY_SPLICE_RECIPE,
        PlanValue::Owned(OwnedValue::string(&recipe_record(parents, recipe))),
    );

    for key in &recipe.metadata.remove {
        let before = kvs.len();
        kvs.retain(|(k, _)| k != key);
        if kvs.len() == before {
            warnings.push(format!("metadata.remove: key '{key}' is not in the child"));
        }
    }
    for (key, value) in &recipe.metadata.set {
        set_kv(&mut kvs, key, PlanValue::Owned(value.clone()));
    }
    Ok(kvs)
}

/// What `splice.recipe` records: the parents' names and file names, then the recipe text.
fn recipe_record(parents: &[Parent], recipe: &Recipe) -> String {
    let mut out = String::from("# made by gguf-splice ");
    out.push_str(env!("CARGO_PKG_VERSION"));
    out.push('\n');
    for p in parents {
        let file = p
            .model
            .path()
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        out.push_str(&format!("# --parent {}={}\n", p.name, file));
    }
    out.push_str(&recipe.text);
    out
}

/// The key/values of output shard `i` of `count`: all metadata and the split keys on the
/// first shard, only the split keys on the others (llama-gguf-split's layout).
pub fn shard_kvs<'a>(
    kvs: &'a [(String, PlanValue<'a>)],
    i: usize,
    count: usize,
    total_tensors: usize,
) -> Vec<(String, PlanValue<'a>)> {
    let mut out: Vec<(String, PlanValue<'a>)> = if i == 0 { kvs.to_vec() } else { Vec::new() };
    if count > 1 {
        out.push((
            KEY_SPLIT_NO.into(),
            PlanValue::Owned(OwnedValue::u16(i as u16)),
        ));
        out.push((
            KEY_SPLIT_COUNT.into(),
            PlanValue::Owned(OwnedValue::u16(count as u16)),
        ));
        out.push((
            KEY_SPLIT_TENSORS_COUNT.into(),
            PlanValue::Owned(OwnedValue::i32(total_tensors as i32)),
        ));
    }
    out
}

/// Cut the tensor list into shards as llama-gguf-split does (a new shard when the next
/// tensor would pass the size limit, or every N tensors), then give every tensor its offset.
fn assign_shards(
    tensors: &mut [PlannedTensor],
    kvs: &[(String, PlanValue<'_>)],
    output: &Path,
    split: SplitOptions,
) -> Result<Vec<OutShard>, PlanError> {
    let mut bounds = vec![0usize];
    let mut current = 0u64;
    for (i, t) in tensors.iter().enumerate() {
        let padded = layout::pad_to(t.info.n_bytes, DEFAULT_ALIGNMENT).ok_or_else(|| {
            PlanError::Overflow {
                tensor: t.info.name.clone(),
            }
        })?;
        let start = *bounds.last().expect("non-empty");
        let full_by_size = split.max_bytes.is_some_and(|m| current + padded > m) && i > start;
        let full_by_count = split.max_tensors.is_some_and(|m| i - start >= m.max(1));
        if full_by_size || full_by_count {
            bounds.push(i);
            current = 0;
        }
        current += padded;
    }
    bounds.push(tensors.len());
    let count = bounds.len() - 1;
    // Shard names have five digits and split.count is a u16.
    if count > 99_999 {
        return Err(PlanError::TooManyShards { count, max: 99_999 });
    }
    let prefix = output
        .to_str()
        .map(|s| s.strip_suffix(".gguf").unwrap_or(s).to_string())
        .unwrap_or_else(|| output.display().to_string());

    let mut shards = Vec::with_capacity(count);
    for i in 0..count {
        let range = bounds[i]..bounds[i + 1];
        let shard_kv = shard_kvs(kvs, i, count, tensors.len());
        let kv_refs = shard_kv.iter().map(|(k, v)| (k.as_str(), v.as_ref()));
        let alignment = declared_alignment(kv_refs.clone());
        let mut infos: Vec<TensorInfo> = tensors[range.clone()]
            .iter()
            .map(|t| t.info.clone())
            .collect();
        let data_len =
            assign_offsets(&mut infos, alignment).ok_or_else(|| PlanError::Overflow {
                tensor: "<data section>".into(),
            })?;
        for (t, info) in tensors[range.clone()].iter_mut().zip(&infos) {
            t.info.offset = info.offset;
            t.out_shard = i;
        }
        let header_len = encoded_header_len(kv_refs, &infos, alignment);
        let path = if split.is_split() {
            shard_path(&prefix, i as u64 + 1, count as u64)
        } else {
            output.to_path_buf()
        };
        if header_len > MAX_HEADER_BYTES {
            return Err(PlanError::HeaderTooLarge {
                path,
                len: header_len,
                max: MAX_HEADER_BYTES,
            });
        }
        shards.push(OutShard {
            path,
            tensors: range,
            alignment,
            header_len,
            data_len,
        });
    }
    Ok(shards)
}

impl Plan<'_> {
    /// Total bytes of the output files.
    pub fn output_bytes(&self) -> u64 {
        self.shards.iter().map(|s| s.file_len()).sum()
    }

    /// The name of a piece's parent.
    pub fn parent_name(&self, piece: &Piece) -> &str {
        &self.parents[piece.parent].name
    }
}
