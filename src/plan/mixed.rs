//! Tensors a mix rule selects. Each run of the tensor (the whole tensor, or runs of experts)
//! is, in order: copied from a picked parent; kept from the base (a `threshold` found the
//! parents too close); copied from the one parent of a mix whose weight is 1 (no
//! requantization); or computed by a [`Job`](crate::mix::Job) for [`crate::mix`]: the
//! parents' rows with their weights, the output type, and the importance matrix entry (built
//! in `mixed/job.rs`). A weight's `.scale` goes into each parent's input as factors, and its
//! scale companions follow the weight's pieces (`plan::mixed_scales`).
//!
//! `Mixer::plan_tensor` plans one tensor in steps: what makes each run of one owner
//! (`actions`, with the threshold decisions of `decide`), the output type (`out_type`), then
//! the pieces (`pieces`).
//!
//! A threshold needs the distances between the parents' dequantized values, so the planner
//! reads and dequantizes every parent's rows of such tensors here, before the plan exists
//! (and `--dry-run` shows the distances): a pass over those bytes of each compared parent.

use std::collections::HashMap;
use std::ops::Range;

use super::owners::Owners;
use super::tensors::{copy_pieces, parent_view};
use super::{Parent, Piece, PlanError, PlannedTensor, Source};
use crate::ggml_lib;
use crate::ggml_type::GgmlType;
use crate::gguf::TensorInfo;
use crate::layout;
use crate::mix::{self, Ctx, Imatrix, Input, Limits, Measure};
use crate::recipe::{MixSpec, Recipe};
use crate::roles::cut::expert_cut;
use crate::roles::views::{Conversion, View};
use crate::source::Source as ByteSource;

mod job;

/// What happened to one slice (the whole tensor, or one expert or run of experts) that a
/// mix rule selected.
#[derive(Clone, Debug, PartialEq)]
pub struct SliceDecision {
    /// The experts; `None`: the whole tensor.
    pub experts: Option<Range<u64>>,
    /// The mix rule (index in the recipe's rules).
    pub rule: usize,
    /// `‖P − B‖ / ‖B‖`, the largest over the mixed parents, if the rule has a threshold.
    pub distance: Option<f64>,
    /// The rule's threshold.
    pub threshold: Option<f64>,
    /// Mixed (true), or the base's bytes kept because the distance is below the threshold.
    pub mixed: bool,
}

/// How a tensor that a mix rule selected is made, for reports.
#[derive(Clone, Debug, PartialEq)]
pub struct MixReport {
    /// The type written.
    pub out_type: GgmlType,
    /// The base's type of the tensor: kept slices of another output type are requantized.
    pub base_type: GgmlType,
    /// Each slice a mix rule selected, in order.
    pub slices: Vec<SliceDecision>,
    /// The importance matrix used: its path, or why none is.
    pub imatrix: Option<String>,
}

/// What makes one run of a tensor.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Action {
    /// Copied from a parent a pick rule names.
    Copy(usize),
    /// The base's values (a threshold decided it).
    Keep(usize),
    /// Mixed by this rule.
    Mix(usize),
}

/// The parents' shard files, open for reading: by parent, then shard.
type OpenParents = Vec<Vec<ByteSource>>;

/// Experts of a run; `None`: the whole tensor.
type Experts = Option<Range<u64>>;

/// What makes a run of experts.
type Run = (Action, Experts);

/// Each parent's view of the tensor being planned, by parent index.
type Views<'p> = HashMap<usize, View<'p>>;

/// Runs of one owner: (owner, experts).
fn runs(owners: &Owners) -> Vec<(usize, Experts)> {
    match owners {
        Owners::Whole(o) => vec![(*o, None)],
        Owners::Experts(v) => {
            let mut runs: Vec<(usize, Experts)> = Vec::new();
            for (e, &o) in v.iter().enumerate() {
                match runs.last_mut() {
                    Some((q, Some(r))) if *q == o => r.end = e as u64 + 1,
                    _ => runs.push((o, Some(e as u64..e as u64 + 1))),
                }
            }
            runs
        }
    }
}

/// Plans mixed tensors for one plan: holds the importance matrices and the files the
/// threshold measurements read.
pub(super) struct Mixer<'p, 'r> {
    parents: &'p [Parent],
    base: usize,
    recipe: &'r Recipe,
    /// Per rule: its importance matrix, as an index into `imatrices`.
    imatrix_of: Vec<Option<usize>>,
    imatrices: Vec<Imatrix>,
    /// Opened on the first measurement.
    files: Option<OpenParents>,
    names: Vec<String>,
    warnings: Vec<String>,
}

impl<'p, 'r> Mixer<'p, 'r> {
    /// Open every mix rule's importance matrix (each file once) and note weights that do not
    /// sum to 1.
    pub(super) fn new(
        parents: &'p [Parent],
        base: usize,
        recipe: &'r Recipe,
    ) -> Result<Self, PlanError> {
        let mut m = Mixer {
            parents,
            base,
            recipe,
            imatrix_of: vec![None; recipe.rules.len()],
            imatrices: Vec::new(),
            files: None,
            names: parents.iter().map(|p| p.name.clone()).collect(),
            warnings: Vec::new(),
        };
        for (r, rule) in recipe.rules.iter().enumerate() {
            let Some(spec) = &rule.mix else { continue };
            let sum: f64 = spec.weights.iter().map(|(_, w)| w).sum();
            if (sum - 1.0).abs() > 1e-6 {
                m.warnings.push(format!(
                    "{}: the weights sum to {sum}; they are used as given, not normalized, so the mixed values are scaled by about {sum}",
                    rule.origin
                ));
            }
            if let Some(path) = &spec.imatrix {
                let i = match m.imatrices.iter().position(|x| x.path() == path) {
                    Some(i) => i,
                    None => {
                        let x = Imatrix::open(path).map_err(|source| PlanError::Imatrix {
                            origin: rule.origin.clone(),
                            source,
                        })?;
                        m.imatrices.push(x);
                        m.imatrices.len() - 1
                    }
                };
                m.imatrix_of[r] = Some(i);
            }
        }
        Ok(m)
    }

    /// The importance matrices, and the warnings gathered.
    pub(super) fn finish(self, warnings: &mut Vec<String>) -> Vec<Imatrix> {
        warnings.extend(self.warnings);
        self.imatrices
    }

    fn spec(&self, rule: usize) -> &'r MixSpec {
        self.recipe.rules[rule].mix.as_ref().expect("a mix rule")
    }

    fn origin(&self, rule: usize) -> String {
        self.recipe.rules[rule].origin.clone()
    }

    /// Plan `info` (the base's tensor), some of whose owners are mix rules (ids past the
    /// parents): what makes each run, the output type, then the pieces.
    pub(super) fn plan_tensor(
        &mut self,
        info: &TensorInfo,
        owners: &Owners,
        origin: &dyn Fn(usize) -> String,
    ) -> Result<PlannedTensor, PlanError> {
        let count = match expert_cut(info) {
            Ok(Some(c)) => c.count(),
            _ => 1,
        };
        let mut views: Views<'p> = HashMap::new();
        self.view(&mut views, info, self.base, origin)?;
        let (actions, slices) = self.actions(info, owners, count, &mut views, origin)?;
        let base_ty = views[&self.base].ty();
        let (out_ty, out_label) = self.out_type(info, &actions, base_ty)?;
        let (pieces, imatrix) = self.pieces(info, actions, (out_ty, &out_label), count, &views)?;
        let n_bytes =
            layout::tensor_bytes(out_ty, &info.dims).ok_or_else(|| PlanError::Overflow {
                tensor: info.name.clone(),
            })?;
        debug_assert_eq!(pieces.iter().map(|p| p.len).sum::<u64>(), n_bytes);
        let conversion = views
            .values()
            .map(|v| v.conversion())
            .find(|c| *c != Conversion::Same)
            .unwrap_or(Conversion::Same);
        Ok(PlannedTensor {
            info: TensorInfo {
                name: info.name.clone(),
                dims: info.dims.clone(),
                ty: out_ty,
                offset: 0,
                n_bytes,
            },
            out_shard: 0,
            pieces,
            conversion,
            mix: Some(MixReport {
                out_type: out_ty,
                base_type: base_ty,
                slices,
                imatrix,
            }),
        })
    }

    /// Parent `p`'s view of `info`, made once.
    fn view(
        &self,
        views: &mut Views<'p>,
        info: &TensorInfo,
        p: usize,
        origin: &dyn Fn(usize) -> String,
    ) -> Result<(), PlanError> {
        if let std::collections::hash_map::Entry::Vacant(e) = views.entry(p) {
            e.insert(parent_view(self.parents, self.base, info, p, origin)?);
        }
        Ok(())
    }

    /// What makes each run of one owner: a copy from a picked parent, or each threshold
    /// decision of a mix rule (consecutive experts with the same fate in one run). Returns
    /// the runs and the decisions; the views of every parent they read are made.
    fn actions(
        &mut self,
        info: &TensorInfo,
        owners: &Owners,
        count: u64,
        views: &mut Views<'p>,
        origin: &dyn Fn(usize) -> String,
    ) -> Result<(Vec<Run>, Vec<SliceDecision>), PlanError> {
        let n = self.parents.len();
        let mut actions: Vec<Run> = Vec::new();
        let mut slices = Vec::new();
        for (owner, experts) in runs(owners) {
            if owner < n {
                self.view(views, info, owner, origin)?;
                actions.push((Action::Copy(owner), experts));
                continue;
            }
            let rule = owner - n;
            for (p, _) in self.spec(rule).effective() {
                let p = self.parent_index(p);
                self.view(views, info, p, origin)?;
            }
            for d in self.decide(info, rule, experts, count, views)? {
                let a = if d.mixed {
                    Action::Mix(rule)
                } else {
                    Action::Keep(rule)
                };
                // Consecutive experts with the same fate make one piece.
                match (actions.last_mut(), &d.experts) {
                    (Some((b, Some(r))), Some(e)) if *b == a && r.end == e.start => r.end = e.end,
                    _ => actions.push((a, d.experts.clone())),
                }
                slices.push(d);
            }
        }
        Ok((actions, slices))
    }

    /// The output type: the base's when the whole tensor is kept, else the mix rules' (which
    /// must agree); with the label of the rule that set it.
    fn out_type(
        &self,
        info: &TensorInfo,
        actions: &[Run],
        base_ty: GgmlType,
    ) -> Result<(GgmlType, String), PlanError> {
        let whole_kept = matches!(actions, [(Action::Keep(_), None)]);
        let mut out: Option<(GgmlType, String)> = None;
        for (a, _) in actions {
            if let Action::Mix(r) | Action::Keep(r) = a {
                let ty = self.spec(*r).out_type.unwrap_or(base_ty);
                match &out {
                    None => out = Some((ty, self.recipe.rules[*r].source_label())),
                    Some((t, first)) if *t != ty => {
                        return Err(PlanError::MixTypeMismatch {
                            tensor: info.name.clone(),
                            first: first.clone(),
                            first_type: *t,
                            second: self.recipe.rules[*r].source_label(),
                            second_type: ty,
                        });
                    }
                    Some(_) => {}
                }
            }
        }
        Ok(match (whole_kept, out) {
            (true, _) => (base_ty, String::new()),
            (false, Some(o)) => o,
            (false, None) => unreachable!("a mixed tensor has a mix rule among its owners"),
        })
    }

    /// The pieces of each run: copies (a pick, or one parent at weight 1 already in the
    /// output type) or a mix job; with the importance matrix the last job uses, or why none.
    fn pieces(
        &self,
        info: &TensorInfo,
        actions: Vec<Run>,
        (out_ty, out_label): (GgmlType, &str),
        count: u64,
        views: &Views<'p>,
    ) -> Result<(Vec<Piece>, Option<String>), PlanError> {
        let mut pieces: Vec<Piece> = Vec::new();
        let mut imatrix = None;
        for (action, experts) in actions {
            let (rule, inputs) = match action {
                Action::Copy(p) => {
                    if views[&p].ty() != out_ty {
                        return Err(PlanError::MixTypeMismatch {
                            tensor: info.name.clone(),
                            first: out_label.to_string(),
                            first_type: out_ty,
                            second: self.names[p].clone(),
                            second_type: views[&p].ty(),
                        });
                    }
                    copy_pieces(p, &views[&p], experts, &mut pieces);
                    continue;
                }
                Action::Keep(rule) => (rule, vec![(self.base, 1.0f32)]),
                Action::Mix(rule) => {
                    let eff = self.spec(rule).effective();
                    (
                        rule,
                        eff.iter()
                            .map(|(p, w)| (self.parent_index(p), *w))
                            .collect(),
                    )
                }
            };
            // One parent at weight 1 already in the output type: its bytes, as a pick.
            if let [(p, w)] = inputs.as_slice()
                && *w == 1.0
                && views[p].ty() == out_ty
            {
                copy_pieces(*p, &views[p], experts, &mut pieces);
                continue;
            }
            let job = self.job(info, rule, &inputs, out_ty, experts.clone(), count, views)?;
            imatrix = match (&job.imatrix, self.imatrix_of[rule]) {
                (Some(u), _) => Some(self.imatrices[u.file].path().display().to_string()),
                (None, Some(i)) => Some(format!(
                    "none: {} has no entry for this tensor",
                    self.imatrices[i].path().display()
                )),
                (None, None) => None,
            };
            pieces.push(Piece {
                len: job.out_bytes(),
                experts,
                source: Source::Mix(Box::new(job)),
                converted: false,
            });
        }
        Ok((pieces, imatrix))
    }

    fn parent_index(&self, name: &str) -> usize {
        self.names
            .iter()
            .position(|n| n == name)
            .expect("checked by build")
    }

    /// Threshold decisions for a run that mix rule `rule` owns: per expert under an
    /// `experts` filter, else for the run as a whole.
    fn decide(
        &mut self,
        info: &TensorInfo,
        rule: usize,
        experts: Option<Range<u64>>,
        count: u64,
        views: &HashMap<usize, View<'p>>,
    ) -> Result<Vec<SliceDecision>, PlanError> {
        let spec = self.spec(rule);
        // No threshold, or no ggml to measure with: mixed (a plan without ggml cannot be
        // written, and its report says the distance needs ggml).
        let Some(threshold) = spec.threshold.filter(|_| ggml_lib::available()) else {
            return Ok(vec![SliceDecision {
                experts,
                rule,
                distance: None,
                threshold: spec.threshold,
                mixed: true,
            }]);
        };
        let per_expert = self.recipe.rules[rule].experts.is_some() && count > 1;
        let others: Vec<usize> = spec
            .effective()
            .iter()
            .map(|(p, _)| self.parent_index(p))
            .filter(|&p| p != self.base)
            .collect();
        self.check_input(info, rule, self.base, views[&self.base].ty())?;
        for &p in &others {
            self.check_input(info, rule, p, views[&p].ty())?;
        }
        let base_input = self.input((self.base, 1.0), &views[&self.base], info, &experts, rule)?;
        let other_inputs: Vec<Input> = others
            .iter()
            .map(|&p| self.input((p, 1.0), &views[&p], info, &experts, rule))
            .collect::<Result<_, _>>()?;
        let (_, rows, per) = Self::rows(info, &experts, count);
        let slices = if per_expert { rows / per } else { 1 };
        let origin = self.origin(rule);
        self.open_files(&origin)?;
        let files = self.files.as_ref().expect("opened");
        let ctx = Ctx {
            files,
            names: &self.names,
            imatrices: &[],
            limits: Limits::default(),
        };
        let measure = Measure {
            tensor: &info.name,
            base: &base_input,
            others: &other_inputs,
            n_per_row: info.dims[0],
            rows,
            slices,
            rows_per_matrix: info.dims.get(1).copied().unwrap_or(1).max(1),
        };
        let d = mix::distances(&measure, &ctx)
            .map_err(|source| PlanError::Measure { origin, source })?;
        let first = experts.as_ref().map_or(0, |e| e.start);
        Ok(d.into_iter()
            .enumerate()
            .map(|(i, d)| SliceDecision {
                experts: if per_expert {
                    Some(first + i as u64..first + i as u64 + 1)
                } else {
                    experts.clone()
                },
                rule,
                distance: Some(d),
                threshold: Some(threshold),
                // NaN (a parent holds NaN) is never "close enough".
                mixed: d.partial_cmp(&threshold) != Some(std::cmp::Ordering::Less),
            })
            .collect())
    }

    /// Open the parents' files read-only, once.
    fn open_files(&mut self, origin: &str) -> Result<(), PlanError> {
        if self.files.is_some() {
            return Ok(());
        }
        let mut files = Vec::new();
        for p in self.parents {
            let mut f = Vec::new();
            for s in p.model.shards() {
                f.push(s.open_source().map_err(|e| PlanError::Measure {
                    origin: origin.to_string(),
                    source: mix::MixError::Read {
                        tensor: String::new(),
                        parent: p.name.clone(),
                        path: s.path.clone(),
                        offset: 0,
                        source: std::io::Error::other(e.to_string()),
                    },
                })?);
            }
            files.push(f);
        }
        self.files = Some(files);
        Ok(())
    }
}
