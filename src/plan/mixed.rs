//! Tensors a mix rule selects. Each run of the tensor (the whole tensor, or runs of experts)
//! is, in order: copied from a picked parent; kept from the base (a `threshold` found the
//! parents too close); copied from the one parent of a mix whose weight is 1 (no
//! requantization); or computed by a [`Job`] for [`crate::mix`]: the parents' rows with their
//! weights, the output type, and the importance matrix entry. A weight's `.scale` goes into
//! each parent's input as factors, and its scale companions follow the weight's pieces
//! (`plan::mixed_scales`).
//!
//! A threshold needs the distances between the parents' dequantized values, so the planner
//! reads and dequantizes every parent's rows of such tensors here, before the plan exists
//! (and `--dry-run` shows the distances): a pass over those bytes of each compared parent.

use std::collections::HashMap;
use std::ops::Range;

use super::owners::Owners;
use super::tensors::{copy_pieces, parent_view};
use super::{Parent, Piece, PlanError, PlannedTensor, Source};
use crate::ggml;
use crate::ggml_type::GgmlType;
use crate::gguf::TensorInfo;
use crate::layout;
use crate::mix::{self, Ctx, Imatrix, ImatrixUse, Input, Job, Limits, Measure, Span};
use crate::recipe::{MixSpec, Recipe};
use crate::roles::cut::expert_cut;
use crate::roles::views::{Conversion, View};
use crate::source::Source as ByteSource;

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
    /// parents).
    pub(super) fn plan_tensor(
        &mut self,
        info: &TensorInfo,
        owners: &Owners,
        origin: &dyn Fn(usize) -> String,
    ) -> Result<PlannedTensor, PlanError> {
        let n = self.parents.len();
        let count = match expert_cut(info) {
            Ok(Some(c)) => c.count(),
            _ => 1,
        };
        // Runs of one owner: (owner, experts), experts None for the whole tensor.
        let runs: Vec<(usize, Option<Range<u64>>)> = match owners {
            Owners::Whole(o) => vec![(*o, None)],
            Owners::Experts(v) => {
                let mut runs: Vec<(usize, Option<Range<u64>>)> = Vec::new();
                for (e, &o) in v.iter().enumerate() {
                    match runs.last_mut() {
                        Some((q, Some(r))) if *q == o => r.end = e as u64 + 1,
                        _ => runs.push((o, Some(e as u64..e as u64 + 1))),
                    }
                }
                runs
            }
        };
        let mut views: HashMap<usize, View<'p>> = HashMap::new();
        let (parents, base) = (self.parents, self.base);
        let view = |p: usize, views: &mut HashMap<usize, View<'p>>| -> Result<(), PlanError> {
            if let std::collections::hash_map::Entry::Vacant(e) = views.entry(p) {
                e.insert(parent_view(parents, base, info, p, origin)?);
            }
            Ok(())
        };
        view(self.base, &mut views)?;
        let mut actions: Vec<(Action, Option<Range<u64>>)> = Vec::new();
        let mut slices = Vec::new();
        for (owner, experts) in runs {
            if owner < n {
                view(owner, &mut views)?;
                actions.push((Action::Copy(owner), experts));
                continue;
            }
            let rule = owner - n;
            for (p, _) in self.spec(rule).effective() {
                let p = self.parent_index(p);
                view(p, &mut views)?;
            }
            for d in self.decide(info, rule, experts, count, &views)? {
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

        // The output type: the base's when the whole tensor is kept, else the mix rules'.
        let base_ty = views[&self.base].ty();
        let whole_kept = matches!(actions.as_slice(), [(Action::Keep(_), None)]);
        let mut out: Option<(GgmlType, String)> = None;
        for (a, _) in &actions {
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
        let (out_ty, out_label) = match (whole_kept, out) {
            (true, _) => (base_ty, String::new()),
            (false, Some(o)) => o,
            (false, None) => unreachable!("a mixed tensor has a mix rule among its owners"),
        };

        let mut pieces: Vec<Piece> = Vec::new();
        let mut imatrix = None;
        for (action, experts) in actions {
            let (rule, inputs) = match action {
                Action::Copy(p) => {
                    if views[&p].ty() != out_ty {
                        return Err(PlanError::MixTypeMismatch {
                            tensor: info.name.clone(),
                            first: out_label.clone(),
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
            let job = self.job(info, rule, &inputs, out_ty, experts.clone(), count, &views)?;
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

    fn parent_index(&self, name: &str) -> usize {
        self.names
            .iter()
            .position(|n| n == name)
            .expect("checked by build")
    }

    /// The rows of `experts` (all: `None`) of a tensor of `count` slices.
    fn rows(info: &TensorInfo, experts: &Option<Range<u64>>, count: u64) -> (u64, u64, u64) {
        let total: u64 = info.dims.iter().skip(1).product();
        let per = total / count;
        match experts {
            None => (0, total, per),
            Some(e) => (e.start * per, (e.end - e.start) * per, per),
        }
    }

    /// `p`'s rows of `experts` of `info`, as a mix input of rule `rule`, with the parent's
    /// `.scale` factors (see [`mixed_scales`](super::mixed_scales)).
    fn input(
        &self,
        (p, weight): (usize, f32),
        view: &View,
        info: &TensorInfo,
        experts: &Option<Range<u64>>,
        rule: usize,
    ) -> Result<Input, PlanError> {
        let spans = view
            .parts_of(experts.clone().unwrap_or(0..view.count()))
            .into_iter()
            .map(|(_, shard, offset, len)| Span { shard, offset, len })
            .collect();
        let scales = super::mixed_scales::factors(
            &self.parents[p],
            info,
            view,
            experts,
            &self.origin(rule),
        )?;
        Ok(Input {
            parent: p,
            weight,
            ty: view.ty(),
            spans,
            converted: view.conversion() != Conversion::Same,
            scales,
        })
    }

    fn check_input(
        &self,
        info: &TensorInfo,
        rule: usize,
        p: usize,
        ty: GgmlType,
    ) -> Result<(), PlanError> {
        // Without a ggml nothing is measured, and the plan can be shown but not written
        // (see `needs_ggml`); with one, the type must be one it dequantizes.
        if !ggml::available() || ggml::can_dequantize(ty) {
            return Ok(());
        }
        Err(PlanError::MixInputType {
            origin: self.origin(rule),
            tensor: info.name.clone(),
            parent: self.names[p].clone(),
            ty,
        })
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
        let Some(threshold) = spec.threshold.filter(|_| ggml::available()) else {
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

    /// The job that computes `experts` of `info` from `inputs` (parent, weight).
    #[allow(clippy::too_many_arguments)]
    fn job(
        &self,
        info: &TensorInfo,
        rule: usize,
        inputs: &[(usize, f32)],
        out_ty: GgmlType,
        experts: Option<Range<u64>>,
        count: u64,
        views: &HashMap<usize, View<'p>>,
    ) -> Result<Job, PlanError> {
        let ne0 = info.dims[0];
        let origin = self.origin(rule);
        let bad_out = |reason: String| PlanError::MixOutputType {
            origin: origin.clone(),
            tensor: info.name.clone(),
            ty: out_ty,
            reason,
        };
        if !ggml::can_quantize(out_ty) {
            return Err(bad_out(
                "ggml cannot quantize to it; choose e.g. Q4_K, Q6_K, Q8_0, IQ4_XS or F32".into(),
            ));
        }
        if !ne0.is_multiple_of(out_ty.block_size()) {
            return Err(bad_out(format!(
                "its rows have {ne0} elements, not a multiple of {out_ty}'s block of {}; choose a type with a smaller block (Q8_0, Q4_0: 32)",
                out_ty.block_size()
            )));
        }
        for &(p, _) in inputs {
            self.check_input(info, rule, p, views[&p].ty())?;
        }
        let (first_row, rows, _) = Self::rows(info, &experts, count);
        let rows_per_matrix = info.dims.get(1).copied().unwrap_or(1).max(1);
        let total_rows: u64 = info.dims.iter().skip(1).product();
        let matrices = total_rows / rows_per_matrix;
        let imatrix = match self.imatrix_of[rule] {
            None => None,
            Some(i) => match self.imatrices[i].values(&info.name) {
                Some(v) if v == ne0 * matrices => Some(ImatrixUse {
                    file: i,
                    entry: info.name.clone(),
                }),
                Some(found) => {
                    return Err(PlanError::MixImatrixSize {
                        origin,
                        tensor: info.name.clone(),
                        path: self.imatrices[i].path().to_path_buf(),
                        expected: ne0 * matrices,
                        found,
                        ne0,
                        matrices,
                    });
                }
                None => None,
            },
        };
        if imatrix.is_none() && ggml::requires_imatrix(out_ty) {
            return Err(PlanError::MixNeedsImatrix {
                origin,
                tensor: info.name.clone(),
                ty: out_ty,
                found: self.imatrix_of[rule]
                    .map(|i| {
                        format!(
                            " ({} has no entry for it)",
                            self.imatrices[i].path().display()
                        )
                    })
                    .unwrap_or_default(),
            });
        }
        Ok(Job {
            tensor: info.name.clone(),
            inputs: inputs
                .iter()
                .map(|&(p, w)| self.input((p, w), &views[&p], info, &experts, rule))
                .collect::<Result<_, _>>()?,
            out_type: out_ty,
            n_per_row: ne0,
            rows,
            first_row,
            rows_per_matrix,
            imatrix,
        })
    }
}
