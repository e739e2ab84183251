//! [`build`]: a recipe's plan, in named steps. The parents and what each rule takes from
//! ([`resolve`]); the parents' compatibility; the tensor walk ([`Walk`]: each base tensor's
//! owners from the rules, a companion following its weight, its pieces found in its owners
//! or computed by a mix); gate, up and down of each expert kept together; the rules'
//! reports and the rules that matched nothing; which parents contribute; the metadata; then
//! [`finish`] lays out the shards.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use super::owners::{self, Candidate, OwnerError};
use super::units::UnitRules;
use super::{
    KEY_CHAT_TEMPLATE, Parent, Plan, PlanError, PlanParts, PlannedTensor, RuleReport, SplitOptions,
    compat, finish, metadata, mixed, mixed_scales, needs_ggml, parents, record, tensors,
};
use crate::gguf::{Model, TensorLoc};
use crate::recipe::{Recipe, Rule, short_pattern};
use crate::roles::cut::{expert_cut, is_stacked_experts};
use crate::roles::{self, Role};

/// Plan the child of `parents` by `recipe`, written to `output` (the first shard's path when
/// split).
pub fn build<'p>(
    parents: &'p [Parent],
    recipe: &Recipe,
    output: &Path,
    split: SplitOptions,
) -> Result<Plan<'p>, PlanError> {
    let (base, rule_parents) = resolve(parents, recipe)?;
    let mut warnings = Vec::new();
    compat::check_compatible(parents, base, sets_template(recipe), &mut warnings)?;
    let mut mixer = mixed::Mixer::new(parents, base, recipe)?;
    let mut walk = Walk {
        parents,
        base,
        recipe,
        rule_parents: &rule_parents,
        units: UnitRules::new(parents, base),
        matched: vec![0; recipe.rules.len()],
        took_experts: vec![HashSet::new(); recipe.rules.len()],
        expert_owners: BTreeMap::new(),
        planned: vec![None; parents[base].model.tensor_count()],
        scales_of_mixes: Vec::new(),
    };
    walk.run(&mut mixer)?;
    // Owners are parents, or mix rules past them (see `resolve`).
    let owner_name = |id: usize| match parents.get(id) {
        Some(p) => p.name.clone(),
        None => recipe.rules[id - parents.len()].source_label(),
    };
    if let Err(e) = check_experts_together(&owner_name, &walk.expert_owners) {
        if !recipe.allow_partial_experts {
            return Err(e);
        }
        warnings.push(format!("allowed by allow_partial_experts: {e}"));
    }
    let tensors: Vec<PlannedTensor> = walk.planned.into_iter().flatten().collect();
    let rules = rule_reports(recipe, &walk.matched, &parents[base].model, &mut warnings)?;
    let contributes = contributions(parents, &tensors, &mut warnings);

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

/// The parents' names checked (non-empty, unique, every one the recipe expects given), the
/// base's index, and what each rule takes from: a parent's index, or, for a mix rule, an id
/// past the parents' (`parents.len()` + rule index) that the owner walk treats like any
/// other.
fn resolve(parents: &[Parent], recipe: &Recipe) -> Result<(usize, Vec<usize>), PlanError> {
    parents::check(parents)?;
    parents::check_expected(parents, &recipe.parents)?;
    let find = |origin: &str, name: &str, hint: String| {
        parents::index_or_hint(parents, name, origin, hint)
    };
    let base = match &recipe.base {
        Some(b) => find("recipe base", b, String::new())?,
        None => 0,
    };
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
    Ok((base, rule_parents))
}

/// Whether the recipe decides the chat template itself (picks one, sets the key or removes
/// it): then differing templates are not worth a warning.
fn sets_template(recipe: &Recipe) -> bool {
    recipe.metadata.chat_template.is_some()
        || recipe
            .metadata
            .set
            .iter()
            .any(|(k, _)| k == KEY_CHAT_TEMPLATE)
        || recipe
            .metadata
            .remove
            .iter()
            .any(|k| k == KEY_CHAT_TEMPLATE)
}

/// How a `--take` rule whose regex holds a `:` was split, for an unknown parent: tensor
/// names hold no `:`, so `:experts=0..2` or `exps=r1 :experts=0-1` most likely put the
/// options where the parent should be.
fn take_split_hint(rule: &Rule) -> String {
    match &rule.pattern {
        Some(p) if rule.origin.starts_with("--take") && p.as_str().contains(':') => format!(
            "; it was read as regex '{}' taking from '{}': write REGEX=PARENT, then the options (REGEX=PARENT:experts=RANGES)",
            short_pattern(p.as_str()),
            short_pattern(&rule.from)
        ),
        _ => String::new(),
    }
}

/// The walk over the base's tensors, and what it has found so far.
struct Walk<'p, 'r> {
    parents: &'p [Parent],
    base: usize,
    recipe: &'r Recipe,
    rule_parents: &'r [usize],
    units: UnitRules<'p>,
    /// Per rule: the base tensors it selected.
    matched: Vec<usize>,
    /// Per rule with `router`: the layers in which it took experts.
    took_experts: Vec<HashSet<u64>>,
    /// Per layer: (tensor, owner of each expert) of its stacked routed-expert tensors.
    expert_owners: BTreeMap<u64, Vec<(String, Vec<usize>)>>,
    /// Per base tensor: its plan.
    planned: Vec<Option<PlannedTensor>>,
    /// Scale companions of mixed weights, planned from their weight's pieces once every
    /// weight is: (index, the weight's index, the origin of each parent, the mix rule's).
    scales_of_mixes: Vec<(usize, usize, Vec<String>, String)>,
}

impl Walk<'_, '_> {
    /// Plan every base tensor, routers last: with `router`, a rule's router rows follow the
    /// experts it actually took in that layer, which is known only once the stacked expert
    /// tensors are planned. The scale companions of mixed weights come after their weights
    /// (see [`mixed_scales`]).
    fn run(&mut self, mixer: &mut mixed::Mixer) -> Result<(), PlanError> {
        let base_model = &self.parents[self.base].model;
        for routers in [false, true] {
            for (i, t) in base_model.tensors().enumerate() {
                if (roles::classify(&t.info.name).role == Role::Router) == routers {
                    self.planned[i] = self.plan_one(i, t, mixer)?;
                }
            }
        }
        for (i, w, origins, rule) in std::mem::take(&mut self.scales_of_mixes) {
            let info = base_model.tensors().nth(i).expect("a base tensor").info;
            let weight = self.planned[w].as_ref().expect("every weight is planned");
            self.planned[i] = Some(mixed_scales::plan_companion(
                self.parents,
                self.base,
                info,
                weight,
                &|p| origins[p].clone(),
                &rule,
            )?);
        }
        Ok(())
    }

    /// The rules that select tensor `name` (through `selector`, its weight's name for a
    /// companion), in order, as the owner walk sees them.
    fn candidates(&self, name: &str, selector: &str) -> Vec<Candidate<'_>> {
        let class = roles::classify(name);
        self.recipe
            .rules
            .iter()
            .enumerate()
            .filter(|(r, rule)| {
                rule.selects(selector)
                    || (rule.router
                        && class.role == Role::Router
                        && class
                            .layer
                            .is_some_and(|l| self.took_experts[*r].contains(&l)))
            })
            .map(|(r, rule)| Candidate {
                rule: r,
                parent: self.rule_parents[r],
                experts: rule.experts.as_ref(),
            })
            .collect()
    }

    /// The owners of each expert of `t` (or of the whole), the rules that matched it and
    /// those that took experts; a rule that cannot apply is refused naming it.
    fn assign(&self, t: TensorLoc, selector: &str) -> Result<owners::Assignment, PlanError> {
        let name = &t.info.name;
        let rules = &self.recipe.rules;
        let candidates = self.candidates(name, selector);
        let wants_experts = candidates.iter().find(|c| c.experts.is_some());
        let n_experts = match (expert_cut(t.info), wants_experts) {
            (Ok(c), _) => c.map(|c| c.count()),
            (Err(reason), Some(c)) => {
                return Err(PlanError::CannotSplit {
                    origin: rules[c.rule].origin.clone(),
                    tensor: name.clone(),
                    reason,
                });
            }
            (Err(_), None) => None,
        };
        let n_experts = self.units.walk_count(name, n_experts);
        owners::assign(&candidates, n_experts, self.base).map_err(|e| match e {
            OwnerError::NotExpertIndexed { rule } => PlanError::ExpertsOnPlainTensor {
                origin: rules[rule].origin.clone(),
                tensor: name.clone(),
            },
            OwnerError::OutOfRange { rule, count } => PlanError::ExpertsOutOfRange {
                origin: rules[rule].origin.clone(),
                tensor: name.clone(),
                experts: rules[rule]
                    .experts
                    .as_ref()
                    .map(|e| e.text.clone())
                    .unwrap_or_default(),
                count,
            },
        })
    }

    /// Plan one base tensor: its owners, the checks on its unit, the bookkeeping of experts
    /// taken, then its pieces (copied, or computed by a mix); `None` for a scale companion
    /// of a mixed weight (`i`: its index), planned once its weight is.
    fn plan_one(
        &mut self,
        i: usize,
        t: TensorLoc,
        mixer: &mut mixed::Mixer,
    ) -> Result<Option<PlannedTensor>, PlanError> {
        let (parents, base) = (self.parents, self.base);
        let name = &t.info.name;
        let class = roles::classify(name);
        // A companion is selected by what selects its weight (the same rules, the same
        // experts); a rule taking it without its weight is refused.
        let selector = self.units.base().selector(name).to_string();
        let companion = selector != *name;
        self.units.check_selection(name, &self.recipe.rules)?;
        let a = self.assign(t, &selector)?;
        self.units.check_follows(t.info, &a.owners)?;
        self.units.check_none_dropped(t.info, &a.owners, &|id| {
            let spec = self.recipe.rules[id - parents.len()].mix.as_ref();
            spec.map(|m| m.effective())
                .unwrap_or_default()
                .iter()
                .filter_map(|(n, _)| parents.iter().position(|p| p.name == *n))
                .collect()
        })?;
        for &r in &a.matched {
            self.matched[r] += 1;
        }
        if is_stacked_experts(name)
            && !companion
            && let Some(l) = class.layer
        {
            for &r in &a.took_experts {
                if self.recipe.rules[r].router {
                    self.took_experts[r].insert(l);
                }
            }
            if let Ok(Some(c)) = expert_cut(t.info) {
                self.expert_owners
                    .entry(l)
                    .or_default()
                    .push((name.clone(), a.owners.per_expert(c.count())));
            }
        }
        let origin = |p: usize| {
            a.matched
                .iter()
                .find(|&&r| self.rule_parents[r] == p)
                .map(|&r| self.recipe.rules[r].origin.clone())
                .unwrap_or_else(|| format!("base '{}'", parents[p].name))
        };
        let mix = a.owners.parents().into_iter().find(|&p| p >= parents.len());
        if let Some(mix) = mix
            && companion
            && roles::unit::is_scale(name)
        {
            let base_model = &parents[base].model;
            let w = base_model
                .tensors()
                .position(|t| t.info.name == selector)
                .expect("a companion's weight is a base tensor");
            let origins = (0..parents.len()).map(origin).collect();
            self.scales_of_mixes.push((i, w, origins, origin(mix)));
            return Ok(None);
        }
        Ok(Some(match mix {
            Some(_) => mixer.plan_tensor(t.info, &a.owners, &origin)?,
            None => tensors::plan_tensor(parents, base, t.info, &a.owners, &origin)?,
        }))
    }
}

/// Each rule and how many base tensors it selected. A rule not marked `optional` that
/// selected none is refused (naming layers past the model, or a head tied to
/// `token_embd`); an optional one for a tied head is a warning.
fn rule_reports(
    recipe: &Recipe,
    matched: &[usize],
    base_model: &Model,
    warnings: &mut Vec<String>,
) -> Result<Vec<RuleReport>, PlanError> {
    let rules: Vec<RuleReport> = recipe
        .rules
        .iter()
        .zip(matched)
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
    Ok(rules)
}

/// Per parent: whether any byte of the child is read from it; a warning for each that is
/// not.
fn contributions(
    parents: &[Parent],
    tensors: &[PlannedTensor],
    warnings: &mut Vec<String>,
) -> Vec<bool> {
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
    contributes
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
