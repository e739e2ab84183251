//! The planner: recipe x parents -> a plan that says, for every byte range of every output
//! tensor, which parent file and offset it comes from, and where it lands in which output
//! shard. Every check happens here, before any output file is opened; the writer then only
//! executes the plan.

//!
//! Passes: parents and hyperparameters checked; each base tensor's owners walked from the
//! rules ([`owners`], pure); each tensor's pieces found in its owners, converting layouts
//! where a parent stores routed experts fused and the base separate or back ([`tensors`]);
//! routed-expert matrices of one layer checked to come from the same parents; metadata
//! ([`metadata`]); output shards and offsets ([`shards`]). Tensors a mix rule selects are
//! planned by [`mixed`]: their pieces are jobs for [`crate::mix`], not byte ranges to copy.

mod data;
mod metadata;
pub mod mixed;
pub mod owners;
mod shards;
mod tensors;

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use crate::ggml_type::GgmlType;
use crate::gguf::{Model, ValueRef};
use crate::mix::{ImatrixError, MixError};
use crate::recipe::Recipe;
use crate::roles::cut::{expert_cut, is_stacked_experts};
use crate::roles::{self, Role};
pub use data::{
    Maker, OutShard, Piece, Plan, PlanValue, PlannedTensor, RuleReport, Source, SplitOptions,
};
pub use metadata::shard_kvs;
pub use mixed::{MixReport, SliceDecision};
use owners::{Candidate, OwnerError};
pub use shards::MAX_SHARDS;

/// A parent model and the name the recipe calls it by.
pub struct Parent {
    /// The name rules use (`--parent NAME=PATH`).
    pub name: String,
    /// The opened model (one file or a shard set).
    pub model: Model,
}

/// Why a plan cannot be made. Every variant names what the user can change.
#[allow(missing_docs)]
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
        "{origin}: '{pattern}' takes no tensor of the base (no name matches, or earlier rules took them all){note}; fix the regex or mark the rule `optional = true`"
    )]
    RuleMatchedNothing {
        origin: String,
        pattern: String,
        note: String,
    },
    #[error("chat template: {0}")]
    ChatTemplate(String),
    #[error("{origin}: tensor '{tensor}' cannot be split by expert: {reason}")]
    CannotSplit {
        origin: String,
        tensor: String,
        reason: String,
    },
    #[error("the split options make {count} shards; at most {max} can be named")]
    TooManyShards { count: usize, max: usize },
    #[error("tensor '{tensor}': size overflows")]
    Overflow { tensor: String },
    #[error(
        "{origin}: tensor '{tensor}' cannot be taken from parent '{parent}' ({path}): {reason}"
    )]
    LayoutNotConvertible {
        origin: String,
        tensor: String,
        parent: String,
        path: PathBuf,
        reason: String,
    },
    /// The recipe mixes, and this build has no quantizers.
    #[error(
        "{origin}: a mix rule needs ggml's quantizers: {}",
        crate::ggml::HOW_TO_ENABLE
    )]
    MixUnavailable { origin: String },
    /// A mix parent stores the tensor in a type ggml cannot dequantize.
    #[error(
        "{origin}: tensor '{tensor}': parent '{parent}' stores it as {ty}, which ggml cannot dequantize; leave '{parent}' out of the mix for this tensor (narrow the rule)"
    )]
    MixInputType {
        origin: String,
        tensor: String,
        parent: String,
        ty: GgmlType,
    },
    /// The mix's output type cannot be made for this tensor.
    #[error("{origin}: tensor '{tensor}': cannot write {ty}: {reason}")]
    MixOutputType {
        origin: String,
        tensor: String,
        ty: GgmlType,
        reason: String,
    },
    /// The output type needs an importance matrix and none (or no entry) was given.
    #[error(
        "{origin}: tensor '{tensor}': ggml quantizes {ty} only with an importance matrix{found}; add `imatrix = \"FILE\"` (llama-imatrix's output) to the rule, or choose another `type`"
    )]
    MixNeedsImatrix {
        origin: String,
        tensor: String,
        ty: GgmlType,
        /// Why the given one does not serve, if one was given.
        found: String,
    },
    /// An imatrix entry whose size does not fit the tensor.
    #[error(
        "{origin}: tensor '{tensor}': importance matrix {path} has {found} weights for it, expected {expected} (ne0 {ne0} x {matrices} matrices); was it made for another model?"
    )]
    MixImatrixSize {
        origin: String,
        tensor: String,
        path: PathBuf,
        expected: u64,
        found: u64,
        ne0: u64,
        matrices: u64,
    },
    /// Tensors of one tensor would be written in two types.
    #[error(
        "tensor '{tensor}': its experts would be written as {first_type} ({first}) and {second_type} ({second}); one tensor has one type: give the mix rule `type = \"{second_type}\"` or select the whole tensor with one rule"
    )]
    MixTypeMismatch {
        tensor: String,
        first: String,
        first_type: GgmlType,
        second: String,
        second_type: GgmlType,
    },
    /// The importance matrix file cannot be read.
    #[error("{origin}: {source}")]
    Imatrix {
        origin: String,
        #[source]
        source: ImatrixError,
    },
    /// Measuring distances for a threshold failed.
    #[error("{origin}: measuring distances for the threshold: {source}")]
    Measure {
        origin: String,
        #[source]
        source: MixError,
    },
    #[error(
        "blk.{layer}: the routed experts would be assembled from different parents ({detail}): every expert would be part one model, part another. Select all of a layer's expert matrices with one rule, e.g. `role = \"routed_experts\"`, which covers separate and fused (ffn_gate_up_exps) layouts"
    )]
    ExpertsTornApart { layer: u64, detail: String },
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
/// The key that records how the child was made (parents and recipe text).
pub const KEY_SPLICE_RECIPE: &str = "splice.recipe";

/// Plan the child of `parents` by `recipe`, written to `output` (the first shard's path when
/// split).
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
    // What each rule takes from: a parent's index, or, for a mix rule, an id past the
    // parents' (parents.len() + rule index) that the owner walk treats like any other.
    let mut rule_parents: Vec<usize> = Vec::with_capacity(recipe.rules.len());
    for (r, rule) in recipe.rules.iter().enumerate() {
        rule_parents.push(match &rule.mix {
            None => find(&rule.origin, &rule.from)?,
            Some(m) => {
                if !crate::ggml::AVAILABLE {
                    return Err(PlanError::MixUnavailable {
                        origin: rule.origin.clone(),
                    });
                }
                for (p, _) in &m.weights {
                    find(&rule.origin, p)?;
                }
                parents.len() + r
            }
        });
    }

    let mut warnings = Vec::new();
    check_compatible(parents, base, &mut warnings)?;
    let mut mixer = mixed::Mixer::new(parents, base, recipe)?;

    // Routers last: with `router`, a rule's router rows follow the experts it actually took
    // in that layer, which is known only once the stacked expert tensors are planned.
    let base_model = &parents[base].model;
    let mut matched = vec![0usize; recipe.rules.len()];
    let mut took_experts: Vec<HashSet<u64>> = vec![HashSet::new(); recipe.rules.len()];
    let mut planned: Vec<Option<PlannedTensor>> = vec![None; base_model.tensor_count()];
    // Per layer: (tensor, owner of each expert) of its stacked routed-expert tensors.
    let mut expert_owners: BTreeMap<u64, Vec<(String, Vec<usize>)>> = BTreeMap::new();
    for routers in [false, true] {
        for (i, t) in base_model.tensors().enumerate() {
            let name = &t.info.name;
            let class = roles::classify(name);
            if (class.role == Role::Router) != routers {
                continue;
            }
            let candidates: Vec<Candidate> = recipe
                .rules
                .iter()
                .enumerate()
                .filter(|(r, rule)| {
                    rule.selects(name)
                        || (rule.router
                            && class.role == Role::Router
                            && class.layer.is_some_and(|l| took_experts[*r].contains(&l)))
                })
                .map(|(r, rule)| Candidate {
                    rule: r,
                    parent: rule_parents[r],
                    experts: rule.experts.as_ref(),
                })
                .collect();
            let cut = expert_cut(t.info);
            let wants_experts = candidates.iter().find(|c| c.experts.is_some());
            let n_experts = match (&cut, wants_experts) {
                (Ok(c), _) => c.map(|c| c.count),
                (Err(reason), Some(c)) => {
                    return Err(PlanError::CannotSplit {
                        origin: recipe.rules[c.rule].origin.clone(),
                        tensor: name.clone(),
                        reason: reason.clone(),
                    });
                }
                (Err(_), None) => None,
            };
            let a = owners::assign(&candidates, n_experts, base).map_err(|e| match e {
                OwnerError::NotExpertIndexed { rule } => PlanError::ExpertsOnPlainTensor {
                    origin: recipe.rules[rule].origin.clone(),
                    tensor: name.clone(),
                },
                OwnerError::OutOfRange { rule, count } => PlanError::ExpertsOutOfRange {
                    origin: recipe.rules[rule].origin.clone(),
                    tensor: name.clone(),
                    experts: recipe.rules[rule]
                        .experts
                        .as_ref()
                        .map(|e| e.text.clone())
                        .unwrap_or_default(),
                    count,
                },
            })?;
            for &r in &a.matched {
                matched[r] += 1;
            }
            if is_stacked_experts(name)
                && let Some(l) = class.layer
            {
                for &r in &a.took_experts {
                    if recipe.rules[r].router {
                        took_experts[r].insert(l);
                    }
                }
                if let Ok(Some(c)) = &cut {
                    expert_owners
                        .entry(l)
                        .or_default()
                        .push((name.clone(), a.owners.per_expert(c.count)));
                }
            }
            let origin = |p: usize| {
                a.matched
                    .iter()
                    .find(|&&r| rule_parents[r] == p)
                    .map(|&r| recipe.rules[r].origin.clone())
                    .unwrap_or_else(|| format!("base '{}'", parents[p].name))
            };
            let mixes = a.owners.parents().iter().any(|&p| p >= parents.len());
            planned[i] = Some(if mixes {
                mixer.plan_tensor(t.info, &a.owners, &origin)?
            } else {
                tensors::plan_tensor(parents, base, t.info, &a.owners, &origin)?
            });
        }
    }
    // Owners are parents, or mix rules past them (see rule_parents).
    let owner_name = |id: usize| match parents.get(id) {
        Some(p) => p.name.clone(),
        None => recipe.rules[id - parents.len()].source_label(),
    };
    if let Err(e) = check_experts_together(&owner_name, &expert_owners) {
        if !recipe.allow_partial_experts {
            return Err(e);
        }
        warnings.push(format!("allowed by allow_partial_experts: {e}"));
    }
    let mut tensors: Vec<PlannedTensor> = planned.into_iter().flatten().collect();

    let rules: Vec<RuleReport> = recipe
        .rules
        .iter()
        .zip(&matched)
        .map(|(r, &matched)| RuleReport {
            origin: r.origin.clone(),
            pattern: r.describe(),
            from: r.source_label(),
            experts: r.experts.as_ref().map(|e| e.text.clone()),
            matched,
        })
        .collect();
    for (rule, report) in recipe.rules.iter().zip(&rules) {
        if report.matched > 0 {
            continue;
        }
        // A rule for the output head of a model whose head is tied to token_embd.
        let tied = rule
            .selects("output.weight")
            .then(|| roles::tied_output_note(base_model))
            .flatten();
        if !rule.optional {
            return Err(PlanError::RuleMatchedNothing {
                origin: rule.origin.clone(),
                pattern: report.pattern.clone(),
                note: tied.map(|n| format!(": {n}")).unwrap_or_default(),
            });
        }
        if let Some(n) = tied {
            warnings.push(format!("{}: matched nothing: {n}", rule.origin));
        }
    }
    for (i, p) in parents.iter().enumerate() {
        if !tensors
            .iter()
            .any(|t| t.pieces.iter().any(|pc| pc.reads().contains(&i)))
        {
            warnings.push(format!("parent '{}' contributes no tensor", p.name));
        }
    }

    let imatrices = mixer.finish(&mut warnings);
    let kvs = metadata::plan_metadata(parents, base, recipe, &mut warnings)?;
    let set_id = metadata::set_id(parents, &kvs, &tensors, &imatrices, split);
    let shards = shards::assign_shards(&mut tensors, &kvs, &set_id, output, split)?;
    Ok(Plan {
        parents,
        base,
        kvs,
        tensors,
        shards,
        set_id,
        rules,
        imatrices,
        warnings,
    })
}

/// Gate, up and down of one expert belong together: within a layer, every stacked
/// routed-expert tensor must take each expert from the same parent. A regex that matches
/// `ffn_down_exps` but not a fused `ffn_gate_up_exps` would otherwise make chimeric experts.
fn check_experts_together(
    owner_name: &dyn Fn(usize) -> String,
    by_layer: &BTreeMap<u64, Vec<(String, Vec<usize>)>>,
) -> Result<(), PlanError> {
    for (&layer, tensors) in by_layer {
        let Some((_, first)) = tensors.first() else {
            continue;
        };
        if tensors.iter().all(|(_, o)| o == first) {
            continue;
        }
        let describe = |owners: &[usize]| {
            let mut names: Vec<String> = owners.iter().map(|&p| owner_name(p)).collect();
            names.dedup();
            if names.len() == 1 {
                names[0].clone()
            } else {
                format!("experts of {}", names.join("/"))
            }
        };
        let detail: Vec<String> = tensors
            .iter()
            .map(|(n, o)| {
                let (_, rest) = roles::split_block(n);
                format!("{rest} from {}", describe(o))
            })
            .collect();
        return Err(PlanError::ExpertsTornApart {
            layer,
            detail: detail.join(", "),
        });
    }
    Ok(())
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
