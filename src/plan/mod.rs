//! The planner: recipe x parents -> a plan that says, for every byte range of every output
//! tensor, which parent file and offset it comes from, and where it lands in which output
//! shard. Every check happens here, before any output file is opened; the writer then only
//! executes the plan.

//!
//! Passes: parents and hyperparameters checked; each base tensor's owners walked from the
//! rules ([`owners`], pure); each tensor's pieces found in its owners, converting layouts
//! where a parent stores routed experts fused and the base separate or back (`tensors`);
//! routed-expert matrices of one layer checked to come from the same parents; metadata
//! (`metadata`); output shards and offsets (`shards`).

mod assembly;
mod compat;
mod error;
mod loaders;
pub(crate) mod metadata;
pub mod mixed;
mod mixed_scales;
mod needs_ggml;
pub mod owners;
mod piece;
pub mod record;
mod shards;
mod tensors;
mod units;

use std::collections::{BTreeMap, HashSet};
use std::ops::Range;
use std::path::{Path, PathBuf};

use crate::gguf::{Model, OwnedValue, ValueRef};
use crate::recipe::{Recipe, short_pattern};
use crate::roles::cut::{expert_cut, is_stacked_experts};
use crate::roles::{self, Role};
pub use assembly::{AssemblyReport, ExpertSource, LayerExperts};
pub(crate) use compat::{STRUCTURAL_KEYS, same_value, show_value};
pub use error::PlanError;
pub use loaders::{GGML_MAX_NAME, IK_LLAMA_MAX_EXPERTS, LLAMA_MAX_EXPERTS, Loaders, OverLimit};
pub use metadata::shard_kvs;
pub use mixed::{MixReport, SliceDecision};
pub use needs_ggml::require_ggml;
use owners::{Candidate, OwnerError};
pub use piece::{Made, ParentBytes, Piece, PlannedTensor, RunSource, Source, SourceRun};
pub use shards::{MAX_SHARDS, parse_size};

/// A parent model and the name the recipe calls it by.
pub struct Parent {
    /// The name rules use (`--parent NAME=PATH`).
    pub name: String,
    /// The opened model (one file or a shard set).
    pub model: Model,
}

/// A metadata value of the child: borrowed raw from a parent, or made here.
#[derive(Clone, Debug)]
pub enum PlanValue<'p> {
    /// A parent's value, raw.
    Parent(ValueRef<'p>),
    /// A value made by the planner or the recipe.
    Owned(OwnedValue),
}

impl PlanValue<'_> {
    /// The value's type and raw bytes.
    pub fn as_ref(&self) -> ValueRef<'_> {
        match self {
            PlanValue::Parent(v) => *v,
            PlanValue::Owned(v) => v.as_ref(),
        }
    }
}

/// One output file.
#[derive(Clone, Debug)]
pub struct OutShard {
    /// Where it goes.
    pub path: PathBuf,
    /// Its tensors, as a range of [`Plan::tensors`].
    pub tensors: Range<usize>,
    /// Its data alignment.
    pub alignment: u64,
    /// Bytes of its header, padding included.
    pub header_len: u64,
    /// Bytes of its data section.
    pub data_len: u64,
}

impl OutShard {
    /// Bytes of the whole file.
    pub fn file_len(&self) -> u64 {
        self.header_len + self.data_len
    }
}

/// How a rule fared: how many base tensors it selected.
#[derive(Clone, Debug)]
pub struct RuleReport {
    /// Where it was written (`--take #1`, `recipe.toml rule #2`).
    pub origin: String,
    /// What it selects (`role routed_experts /regex/ layers 3-60`).
    pub pattern: String,
    /// The parent it takes from.
    pub from: String,
    /// Its expert filter, as written.
    pub experts: Option<String>,
    /// Base tensors it selected.
    pub matched: usize,
}

/// How the child is cut into files.
#[derive(Clone, Copy, Debug, Default)]
pub struct SplitOptions {
    /// `--split-max-size`: a soft limit on tensor bytes per shard, as llama-gguf-split.
    pub max_bytes: Option<u64>,
    /// `--split-max-tensors`.
    pub max_tensors: Option<usize>,
}

impl SplitOptions {
    /// Whether the child is a shard set.
    pub fn is_split(&self) -> bool {
        self.max_bytes.is_some() || self.max_tensors.is_some()
    }
}

/// Every byte of the child: where it comes from and where it goes. Built and checked whole
/// before any output is opened.
pub struct Plan<'p> {
    /// The parents, as given.
    pub parents: &'p [Parent],
    /// Index of the base parent (tensor order, shapes, default metadata).
    pub base: usize,
    /// The child's metadata (shard 0), without split keys.
    pub kvs: Vec<(String, PlanValue<'p>)>,
    /// The child's tensors, in the base's order.
    pub tensors: Vec<PlannedTensor>,
    /// The output files.
    pub shards: Vec<OutShard>,
    /// The set identity written as `splice.set_id` into every shard of a sharded output: a
    /// hash of everything the plan says, so the same plan gives the same bytes and shards
    /// of different plans never pass as one set.
    pub set_id: String,
    /// Each rule and what it matched.
    pub rules: Vec<RuleReport>,
    /// Things the user should know that do not stop the run.
    pub warnings: Vec<String>,
    /// Which programs load the child (from its tensor types).
    pub loaders: Loaders,
    /// For an assembled MoE: its experts, their sources and the router's origin.
    pub assembly: Option<AssemblyReport>,
    /// The importance matrices mix pieces quantize with (indexed by their jobs).
    pub imatrices: Vec<crate::mix::Imatrix>,
}

/// Everything a plan says before its output files are laid out: what [`finish`] turns into a
/// [`Plan`]. Planners other than [`build`] (such as [`assemble`](crate::assemble)) make one.
pub struct PlanParts<'p> {
    /// The parents, as given.
    pub parents: &'p [Parent],
    /// Index of the base parent.
    pub base: usize,
    /// The child's metadata, without split keys.
    pub kvs: Vec<(String, PlanValue<'p>)>,
    /// The child's tensors, in output order (offsets are assigned by [`finish`]).
    pub tensors: Vec<PlannedTensor>,
    /// Rules and what they matched (none for an assembly).
    pub rules: Vec<RuleReport>,
    /// Things the user should know.
    pub warnings: Vec<String>,
    /// For an assembled MoE, its summary.
    pub assembly: Option<AssemblyReport>,
    /// The importance matrices mix pieces quantize with (indexed by their jobs).
    pub imatrices: Vec<crate::mix::Imatrix>,
    /// How the child was made, recorded in it with its parents (see [`record`]).
    pub made: record::Made,
}

/// Lay out `parts` as the output `output` (the first shard's path when split): the set
/// identity, the shards and every tensor's offset. A child with more experts than its
/// loaders accept gets a warning (see [`finish_with`]).
pub fn finish<'p>(
    parts: PlanParts<'p>,
    output: &Path,
    split: SplitOptions,
) -> Result<Plan<'p>, PlanError> {
    finish_with(parts, output, split, OverLimit::Warn)
}

/// [`finish`], saying what to do when the child has more experts per layer than every
/// program that would load it accepts.
pub fn finish_with<'p>(
    parts: PlanParts<'p>,
    output: &Path,
    split: SplitOptions,
    experts: OverLimit,
) -> Result<Plan<'p>, PlanError> {
    let PlanParts {
        parents,
        base,
        kvs,
        mut tensors,
        rules,
        mut warnings,
        assembly,
        imatrices,
        made,
    } = parts;
    let mut kvs = kvs;
    record::set(&mut kvs, parents, &made, split);
    let loaders = loaders::loaders(&tensors, &mut warnings)?;
    loaders::check_limits(&loaders, &tensors, &kvs, experts, &mut warnings)?;
    let set_id = metadata::set_id(parents, &kvs, &tensors, &imatrices, split);
    let shards = shards::assign_shards(&mut tensors, &kvs, &set_id, output, split)?;
    loaders::check_shards(&loaders, shards.len(), &mut warnings);
    Ok(Plan {
        parents,
        base,
        kvs,
        tensors,
        shards,
        set_id,
        rules,
        warnings,
        loaders,
        assembly,
        imatrices,
    })
}

const KEY_CHAT_TEMPLATE: &str = "tokenizer.chat_template";
/// The key that records how the child was made (parents and recipe text).
pub const KEY_SPLICE_RECIPE: &str = "splice.recipe";

/// How a `--take` rule whose regex holds a `:` was split, for an unknown parent: tensor
/// names hold no `:`, so `:experts=0..2` or `exps=r1 :experts=0-1` most likely put the
/// options where the parent should be.
fn take_split_hint(rule: &crate::recipe::Rule) -> String {
    match &rule.pattern {
        Some(p) if rule.origin.starts_with("--take") && p.as_str().contains(':') => format!(
            "; it was read as regex '{}' taking from '{}': write REGEX=PARENT, then the options (REGEX=PARENT:experts=RANGES)",
            short_pattern(p.as_str()),
            short_pattern(&rule.from)
        ),
        _ => String::new(),
    }
}

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
                given: names
                    .iter()
                    .find(|n| n.eq_ignore_ascii_case(expected))
                    .map(|n| n.to_string()),
            });
        }
    }
    let find = |origin: &str, name: &str, hint: String| {
        names
            .iter()
            .position(|n| *n == name)
            .ok_or_else(|| PlanError::UnknownParent {
                origin: origin.to_string(),
                name: name.to_string(),
                known: names.join(", "),
                hint,
            })
    };
    let base = match &recipe.base {
        Some(b) => find("recipe base", b, String::new())?,
        None => 0,
    };
    // What each rule takes from: a parent's index, or, for a mix rule, an id past the
    // parents' (parents.len() + rule index) that the owner walk treats like any other.
    let mut rule_parents: Vec<usize> = Vec::with_capacity(recipe.rules.len());
    for (r, rule) in recipe.rules.iter().enumerate() {
        rule_parents.push(match &rule.mix {
            None => find(&rule.origin, &rule.from, take_split_hint(rule))?,
            Some(m) => {
                for (p, _) in &m.weights {
                    find(&rule.origin, p, String::new())?;
                }
                // Mixes read local parents only (see `PlanError::RemoteMix`): said now,
                // before a measure would read a remote parent's tensors over HTTP.
                for (name, _) in m.effective() {
                    let parent = &parents[find(&rule.origin, name, String::new())?];
                    if let Some(s) = parent.model.shards().iter().find(|s| s.remote.is_some()) {
                        return Err(PlanError::RemoteMix {
                            origin: rule.origin.clone(),
                            parent: parent.name.clone(),
                            url: s.path.display().to_string(),
                        });
                    }
                }
                parents.len() + r
            }
        });
    }

    let mut warnings = Vec::new();
    // The recipe decides the chat template itself when it picks one, sets the key or
    // removes it: then differing templates are not worth a warning.
    let template_set = recipe.metadata.chat_template.is_some()
        || recipe
            .metadata
            .set
            .iter()
            .any(|(k, _)| k == KEY_CHAT_TEMPLATE)
        || recipe
            .metadata
            .remove
            .iter()
            .any(|k| k == KEY_CHAT_TEMPLATE);
    compat::check_compatible(parents, base, template_set, &mut warnings)?;
    let mut mixer = mixed::Mixer::new(parents, base, recipe)?;
    let units = units::UnitRules::new(parents, base);

    // Routers last: with `router`, a rule's router rows follow the experts it actually took
    // in that layer, which is known only once the stacked expert tensors are planned.
    let base_model = &parents[base].model;
    let mut matched = vec![0usize; recipe.rules.len()];
    let mut took_experts: Vec<HashSet<u64>> = vec![HashSet::new(); recipe.rules.len()];
    let mut planned: Vec<Option<PlannedTensor>> = vec![None; base_model.tensor_count()];
    // Per layer: (tensor, owner of each expert) of its stacked routed-expert tensors.
    let mut expert_owners: BTreeMap<u64, Vec<(String, Vec<usize>)>> = BTreeMap::new();
    // Scale companions of mixed weights, planned from their weight's pieces once every
    // weight is: (index, weight's index, origin of each parent, the mix rule's origin).
    let mut scales_of_mixes: Vec<(usize, usize, Vec<String>, String)> = Vec::new();
    for routers in [false, true] {
        for (i, t) in base_model.tensors().enumerate() {
            let name = &t.info.name;
            let class = roles::classify(name);
            if (class.role == Role::Router) != routers {
                continue;
            }
            // A companion is selected by what selects its weight (the same rules, the same
            // experts); a rule taking it without its weight is refused.
            let selector = units.base().selector(name);
            let companion = selector != name.as_str();
            units.check_selection(
                name,
                recipe
                    .rules
                    .iter()
                    .map(|r| (r.origin.clone(), r.selects(name), r.selects(selector))),
            )?;
            let candidates: Vec<Candidate> = recipe
                .rules
                .iter()
                .enumerate()
                .filter(|(r, rule)| {
                    rule.selects(selector)
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
                (Ok(c), _) => c.map(|c| c.count()),
                (Err(reason), Some(c)) => {
                    return Err(PlanError::CannotSplit {
                        origin: recipe.rules[c.rule].origin.clone(),
                        tensor: name.clone(),
                        reason: reason.clone(),
                    });
                }
                (Err(_), None) => None,
            };
            let n_experts = units.walk_count(name, n_experts);
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
            units.check_follows(t.info, &a.owners)?;
            units.check_none_dropped(t.info, &a.owners, &|id| {
                let spec = recipe.rules[id - parents.len()].mix.as_ref();
                spec.map(|m| m.effective())
                    .unwrap_or_default()
                    .iter()
                    .filter_map(|(name, _)| names.iter().position(|n| n == name))
                    .collect()
            })?;
            for &r in &a.matched {
                matched[r] += 1;
            }
            if is_stacked_experts(name)
                && !companion
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
                        .push((name.clone(), a.owners.per_expert(c.count())));
                }
            }
            let origin = |p: usize| {
                a.matched
                    .iter()
                    .find(|&&r| rule_parents[r] == p)
                    .map(|&r| recipe.rules[r].origin.clone())
                    .unwrap_or_else(|| format!("base '{}'", parents[p].name))
            };
            let mix = a.owners.parents().into_iter().find(|&p| p >= parents.len());
            if let Some(mix) = mix
                && companion
                && roles::unit::is_scale(name)
                && let Some(w) = base_model.tensors().position(|t| t.info.name == selector)
            {
                let origins = (0..parents.len()).map(origin).collect();
                scales_of_mixes.push((i, w, origins, origin(mix)));
                continue;
            }
            planned[i] = Some(if mix.is_some() {
                mixer.plan_tensor(t.info, &a.owners, &origin)?
            } else {
                tensors::plan_tensor(parents, base, t.info, &a.owners, &origin)?
            });
        }
    }
    for (i, w, origins, rule) in scales_of_mixes {
        let info = base_model.tensors().nth(i).expect("a base tensor").info;
        let weight = planned[w].as_ref().expect("every weight is planned");
        planned[i] = Some(mixed_scales::plan_companion(
            parents,
            base,
            info,
            weight,
            &|p| origins[p].clone(),
            &rule,
        )?);
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
    let tensors: Vec<PlannedTensor> = planned.into_iter().flatten().collect();

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
            let blocks = base_model
                .tensors()
                .filter_map(|t| roles::layer_of(&t.info.name))
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
                note: tied.map(|n| format!(": {n}")).unwrap_or_default(),
            });
        }
        if let Some(n) = tied {
            warnings.push(format!("{}: matched nothing: {n}", rule.origin));
        }
    }
    let contributes: Vec<bool> = (0..parents.len())
        .map(|i| {
            tensors
                .iter()
                .any(|t| t.pieces.iter().any(|pc| pc.reads().contains(&i)))
        })
        .collect();
    for (p, c) in parents.iter().zip(&contributes) {
        if !c {
            warnings.push(format!("parent '{}' contributes no tensor", p.name));
        }
    }

    let imatrices = mixer.finish(&mut warnings);
    let mut kvs = metadata::plan_metadata(parents, base, recipe, &contributes, &mut warnings)?;
    let origin = |r: usize| recipe.rules[r].origin.clone();
    needs_ggml::record(&tensors, &origin, &mut kvs, &mut warnings);
    let parts = PlanParts {
        parents,
        base,
        kvs,
        tensors,
        rules,
        warnings,
        assembly: None,
        imatrices,
        made: record::Made::splice(recipe),
    };
    finish(parts, output, split)
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

impl Plan<'_> {
    /// Total bytes of the output files.
    pub fn output_bytes(&self) -> u64 {
        self.shards.iter().map(|s| s.file_len()).sum()
    }

    /// The name of a piece's parent; for made bytes, `made`.
    pub fn parent_name(&self, piece: &Piece) -> &str {
        piece.parent().map_or("made", |p| &self.parents[p].name)
    }
}
