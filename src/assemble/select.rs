//! Which experts each MoE layer of the output has, in order, from the selection (all, a list,
//! a prune, or the most used by an importance matrix), and whether `expert_used_count` and the
//! base's grouped routing fit the new expert count.

use std::path::Path;

use super::spec::ExpertList;
use super::{AssembleError, Kind, Selection, arch, compat, imatrix};
use crate::plan::{ExpertSource, LayerExperts, Parent};
use crate::roles::{self, Role};

/// The output's MoE layers and, for each, where every output expert comes from.
pub(super) fn select(
    parents: &[Parent],
    base: usize,
    kind: Kind,
    selection: &Selection,
    find: &dyn Fn(&'static str, &str) -> Result<usize, AssembleError>,
    warnings: &mut Vec<String>,
) -> Result<Vec<LayerExperts>, AssembleError> {
    let layer_ids = layer_ids(&parents[base], kind);
    let s = Selector {
        parents,
        kind,
        find,
    };
    let counts = match selection {
        Selection::Top { imatrix, .. } => {
            s.one_parent("--keep-top")?;
            Some(imatrix::ExpertCounts::read(imatrix)?)
        }
        _ => None,
    };
    let mut layers = Vec::with_capacity(layer_ids.len());
    for &layer in &layer_ids {
        let experts = match selection {
            Selection::All => (0..parents.len()).flat_map(|p| s.all(p, layer)).collect(),
            Selection::List(list) => s.listed(list, "--experts", layer)?,
            Selection::Keep(list) => {
                s.one_parent("--keep")?;
                s.listed(list, "--keep", layer)?
            }
            Selection::Top { n, imatrix } => {
                let counts = counts.as_ref().expect("read above");
                s.top(counts, *n, imatrix, layer)?
            }
        };
        layers.push(LayerExperts { layer, experts });
    }
    warn_repeated(&layers, parents, warnings);
    Ok(layers)
}

/// The layers of the base that the output's experts go into. Dense: every block with an
/// FFN; MoE: every block with a router.
fn layer_ids(base: &Parent, kind: Kind) -> Vec<u64> {
    let mut layer_ids: Vec<u64> = base
        .model
        .tensors()
        .filter_map(|t| {
            let c = roles::classify(&t.info.name);
            let moe_layer = c.role == Role::Router && t.info.name.contains("ffn_gate_inp.");
            match kind {
                Kind::Dense => roles::dense_ffn_matrix(&t.info.name).and(c.layer),
                Kind::Moe => c.layer.filter(|_| moe_layer),
            }
        })
        .collect();
    layer_ids.sort_unstable();
    layer_ids.dedup();
    layer_ids
}

/// The experts a selection names, layer by layer.
struct Selector<'a> {
    parents: &'a [Parent],
    kind: Kind,
    find: &'a dyn Fn(&'static str, &str) -> Result<usize, AssembleError>,
}

impl Selector<'_> {
    /// The experts parent `p` has in `layer` (a dense parent: one).
    fn count(&self, p: usize, layer: u64) -> u64 {
        match self.kind {
            Kind::Dense => 1,
            Kind::Moe => compat::expert_count(&self.parents[p].model, layer).unwrap_or(0),
        }
    }

    /// Every expert of parent `p` in `layer`, in order.
    fn all(&self, p: usize, layer: u64) -> Vec<ExpertSource> {
        match self.kind {
            Kind::Dense => vec![ExpertSource {
                parent: p,
                expert: None,
            }],
            Kind::Moe => (0..self.count(p, layer))
                .map(|e| ExpertSource {
                    parent: p,
                    expert: Some(e),
                })
                .collect(),
        }
    }

    /// A prune (`option`) takes one MoE parent.
    fn one_parent(&self, option: &'static str) -> Result<(), AssembleError> {
        if self.parents.len() != 1 {
            return Err(AssembleError::PruneNeedsOneParent {
                option,
                given: self
                    .parents
                    .iter()
                    .map(|p| p.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
        if self.kind != Kind::Moe {
            return Err(AssembleError::NeedsMoe(option));
        }
        Ok(())
    }

    /// The experts of `layer` a list (of `option`) names, each within its parent's count.
    fn listed(
        &self,
        list: &ExpertList,
        option: &'static str,
        layer: u64,
    ) -> Result<Vec<ExpertSource>, AssembleError> {
        let mut out = Vec::new();
        for g in &list.groups {
            let p = (self.find)(option, &g.parent)?;
            match &g.experts {
                None => out.extend(self.all(p, layer)),
                Some(es) => {
                    for &e in es {
                        let n = self.count(p, layer);
                        if e >= n {
                            return Err(AssembleError::ExpertOutOfRange {
                                option,
                                parent: self.parents[p].name.clone(),
                                layer,
                                expert: e,
                                count: n,
                            });
                        }
                        out.push(ExpertSource {
                            parent: p,
                            expert: (self.kind == Kind::Moe).then_some(e),
                        });
                    }
                }
            }
        }
        Ok(out)
    }

    /// The `n` experts of `layer` the importance matrix `path` says are most used.
    fn top(
        &self,
        counts: &imatrix::ExpertCounts,
        n: u64,
        path: &Path,
        layer: u64,
    ) -> Result<Vec<ExpertSource>, AssembleError> {
        let c = self.count(0, layer);
        if n > c {
            return Err(AssembleError::KeepTooMany {
                n,
                parent: self.parents[0].name.clone(),
                layer,
                count: c,
            });
        }
        let stacked: Vec<String> = self.parents[0]
            .model
            .tensors()
            .filter(|t| {
                roles::cut::is_stacked_experts(&t.info.name)
                    && roles::classify(&t.info.name).layer == Some(layer)
            })
            .map(|t| t.info.name.clone())
            .collect();
        let refs: Vec<&str> = stacked.iter().map(String::as_str).collect();
        let usage = counts
            .layer_usage(&refs, c)?
            .ok_or_else(|| AssembleError::ImatrixMissing {
                path: path.to_path_buf(),
                layer,
            })?;
        Ok(imatrix::top(&usage, n as usize)
            .into_iter()
            .map(|e| ExpertSource {
                parent: 0,
                expert: Some(e),
            })
            .collect())
    }
}

/// A warning when the first layer lists an expert twice: the output has identical experts.
fn warn_repeated(layers: &[LayerExperts], parents: &[Parent], warnings: &mut Vec<String>) {
    let Some(l) = layers.first() else {
        return;
    };
    let mut seen: Vec<&ExpertSource> = Vec::new();
    for e in &l.experts {
        if seen.contains(&e) {
            warnings.push(format!(
                "expert {} of '{}' is listed more than once: the output has identical experts",
                e.expert.map_or("(dense FFN)".into(), |x| x.to_string()),
                parents[e.parent].name
            ));
            break;
        }
        seen.push(e);
    }
}

/// `expert_used_count` of the output, checked against `count` experts per layer, and the
/// base's grouped routing (`expert_group_count`, `expert_group_used_count`) checked against it.
pub(super) fn check_counts(
    base: &Parent,
    kind: Kind,
    count: u64,
    experts_used: Option<u64>,
) -> Result<u64, AssembleError> {
    let used = experts_used.unwrap_or_else(|| match kind {
        Kind::Dense => count.min(2),
        Kind::Moe => arch::base_count(base, "expert_used_count").unwrap_or(count.min(2)),
    });
    let groups = arch::base_count(base, "expert_group_count").unwrap_or(0);
    let group_used = arch::base_count(base, "expert_group_used_count").unwrap_or(0);
    if groups > 1 {
        let reason = if !count.is_multiple_of(groups) {
            Some(format!("is not a multiple of {groups}"))
        } else if count <= groups {
            Some(format!("is not more than {groups} groups"))
        } else {
            None
        };
        if let Some(reason) = reason {
            return Err(AssembleError::ExpertGroups {
                count,
                groups,
                group_used,
                reason,
            });
        }
    }
    // With groups, top-k is taken among the experts of the chosen groups only.
    let (max, why) = if groups > 1 && group_used > 0 {
        let m = count / groups * group_used;
        (
            m.min(count),
            format!(
                " ({group_used} of {groups} groups of {} experts)",
                count / groups
            ),
        )
    } else {
        (count, String::new())
    };
    if used == 0 || used > max {
        return Err(AssembleError::ExpertsUsed {
            used,
            count,
            max,
            why,
        });
    }
    Ok(used)
}
