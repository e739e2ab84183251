//! The planner's side of [`roles::unit`](crate::roles::unit): a weight and its companions go together.
//!
//! - Rules are matched against a companion's weight ([`Units::selector`]), so a rule that
//!   takes the weight takes its companions, whole or by the same experts.
//! - A rule whose regex takes a companion without its weight is refused
//!   ([`PlanError::CompanionWithoutWeight`]): no program can use such a child, so
//!   `allow_partial_experts` does not override it.
//! - A companion that cannot be cut like its weight (`{1}` beside experts taken one by one),
//!   and a parent whose companions of a weight the child would drop are refused, each naming
//!   both tensors. A mix applies a weight's `.scale` to the values it mixes
//!   ([`mixed_scales`](super::mixed_scales)).

use crate::plan::owners::Owners;
use crate::plan::{Parent, PlanError};
use crate::recipe::Rule;
use crate::roles::cut::expert_cut;
use crate::roles::unit::{self, Units};
use crate::roles::views;

/// The units of every parent, and what the planner asks of them.
pub(crate) struct UnitRules<'p> {
    parents: &'p [Parent],
    base: usize,
    units: Vec<Units>,
}

impl<'p> UnitRules<'p> {
    /// The units of each parent.
    pub(crate) fn new(parents: &'p [Parent], base: usize) -> Self {
        UnitRules {
            parents,
            base,
            units: parents.iter().map(|p| Units::of(&p.model)).collect(),
        }
    }

    /// The base's units (the child has the base's tensors).
    pub(crate) fn base(&self) -> &Units {
        &self.units[self.base]
    }

    /// Refuse the first of `rules` that takes companion `name` but not its weight.
    pub(crate) fn check_selection(&self, name: &str, rules: &[Rule]) -> Result<(), PlanError> {
        let Some(weight) = self.base().head(name) else {
            return Ok(());
        };
        match rules.iter().find(|r| r.selects(name) && !r.selects(weight)) {
            Some(r) => Err(PlanError::CompanionWithoutWeight {
                origin: r.origin.clone(),
                companion: name.to_string(),
                weight: weight.to_string(),
            }),
            None => Ok(()),
        }
    }

    /// The expert count the owner walk uses for tensor `name`: its weight's for a
    /// companion (so both get the same owners), its own otherwise.
    pub(crate) fn walk_count(&self, name: &str, own: Option<u64>) -> Option<u64> {
        let Some(weight) = self.base().head(name) else {
            return own;
        };
        let base = &self.parents[self.base].model;
        match base.tensor(weight).map(|w| expert_cut(w.info)) {
            Some(Ok(Some(c))) => Some(c.count()),
            _ => None,
        }
    }

    /// A companion whose weight is taken expert by expert must be cut into as many
    /// experts.
    pub(crate) fn check_follows(
        &self,
        info: &crate::gguf::TensorInfo,
        owners: &Owners,
    ) -> Result<(), PlanError> {
        let (Some(weight), Owners::Experts(per_expert)) = (self.base().head(&info.name), owners)
        else {
            return Ok(());
        };
        let reason = match expert_cut(info) {
            Ok(Some(c)) if c.count() == per_expert.len() as u64 => return Ok(()),
            Ok(Some(c)) => format!(
                "it holds {} values along its last dimension, the weight {} experts",
                c.count(),
                per_expert.len()
            ),
            Ok(None) => "it is not cut by expert".to_string(),
            Err(e) => e,
        };
        Err(PlanError::CompanionCannotFollow {
            companion: info.name.clone(),
            weight: weight.to_string(),
            shape: info.dims.clone(),
            reason,
        })
    }

    /// Every parent that gives bytes of weight `name` gives its companions too: a parent
    /// whose weight has a companion the child (the base's tensor list) lacks would lose it,
    /// and with it, for a `.scale`, the values. Converted layouts are checked through the
    /// tensors the parent's bytes come from. A mix rule's parents (`mixed(owner)`, for an
    /// owner past the parents) are checked too, but for `.scale`, which the mix applies to
    /// their values (see [`mixed_scales`](super::mixed_scales)).
    pub(crate) fn check_none_dropped(
        &self,
        info: &crate::gguf::TensorInfo,
        owners: &Owners,
        mixed: &dyn Fn(usize) -> Vec<usize>,
    ) -> Result<(), PlanError> {
        // Only a weight has companions: `STEM.weight`.
        if unit::companion_name(&info.name, "").is_none() {
            return Ok(());
        }
        let base = &self.parents[self.base].model;
        let mut givers: Vec<(usize, bool)> = Vec::new();
        for p in owners.parents() {
            if p < self.parents.len() {
                givers.push((p, false));
            } else {
                givers.extend(mixed(p).into_iter().map(|q| (q, true)));
            }
        }
        for (p, in_mix) in givers {
            let parent = &self.parents[p];
            let sources: Vec<String> = match views::view(info, &parent.model) {
                Ok(v) => v
                    .parts()
                    .iter()
                    .map(|x| x.source.info.name.clone())
                    .collect(),
                Err(_) => continue, // the tensor planner reports it
            };
            for source in &sources {
                for c in self.units[p].companions(source) {
                    // The child's name for the companion: the same suffix on the child's
                    // weight.
                    let suffix = unit::suffix(c).unwrap_or_default();
                    if in_mix && suffix == "scale" {
                        continue;
                    }
                    let wanted = unit::companion_name(&info.name, suffix).expect("a weight");
                    if base.tensor(&wanted).is_none() || source != &info.name {
                        return Err(PlanError::CompanionDropped {
                            parent: parent.name.clone(),
                            weight: info.name.clone(),
                            companion: c.clone(),
                            base: self.parents[self.base].name.clone(),
                        });
                    }
                }
            }
        }
        Ok(())
    }
}
