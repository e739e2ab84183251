//! The inputs and jobs of mixed runs: each parent's rows of the run (with its `.scale`
//! factors, see [`mixed_scales`](crate::plan::mixed_scales)) as a mix input, the input and
//! output types ggml must handle, and the importance matrix entry a job uses.

use std::ops::Range;

use super::{Mixer, Views};
use crate::ggml_lib;
use crate::ggml_type::GgmlType;
use crate::gguf::TensorInfo;
use crate::mix::{ImatrixUse, Input, Job, Span};
use crate::plan::PlanError;
use crate::roles::views::{Conversion, View};

impl<'p> Mixer<'p, '_> {
    /// The rows of `experts` (all: `None`) of a tensor of `count` slices.
    pub(super) fn rows(
        info: &TensorInfo,
        experts: &Option<Range<u64>>,
        count: u64,
    ) -> (u64, u64, u64) {
        let total: u64 = info.dims.iter().skip(1).product();
        let per = total / count;
        match experts {
            None => (0, total, per),
            Some(e) => (e.start * per, (e.end - e.start) * per, per),
        }
    }

    /// `p`'s rows of `experts` of `info`, as a mix input of rule `rule`, with the parent's
    /// `.scale` factors (see [`mixed_scales`](crate::plan::mixed_scales)).
    pub(super) fn input(
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
        let scales = crate::plan::mixed_scales::factors(
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

    pub(super) fn check_input(
        &self,
        info: &TensorInfo,
        rule: usize,
        p: usize,
        ty: GgmlType,
    ) -> Result<(), PlanError> {
        // Without a ggml nothing is measured, and the plan can be shown but not written
        // (see `needs_ggml`); with one, the type must be one it dequantizes.
        if !ggml_lib::available() || ggml_lib::can_dequantize(ty) {
            return Ok(());
        }
        Err(PlanError::MixInputType {
            origin: self.origin(rule),
            tensor: info.name.clone(),
            parent: self.names[p].clone(),
            ty,
        })
    }

    /// The job that computes `experts` of `info` from `inputs` (parent, weight).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn job(
        &self,
        info: &TensorInfo,
        rule: usize,
        inputs: &[(usize, f32)],
        out_ty: GgmlType,
        experts: Option<Range<u64>>,
        count: u64,
        views: &Views<'p>,
    ) -> Result<Job, PlanError> {
        let ne0 = info.dims[0];
        let origin = self.origin(rule);
        let bad_out = |reason: String| PlanError::MixOutputType {
            origin: origin.clone(),
            tensor: info.name.clone(),
            ty: out_ty,
            reason,
        };
        if !ggml_lib::can_quantize(out_ty) {
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
        if imatrix.is_none() && ggml_lib::requires_imatrix(out_ty) {
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
