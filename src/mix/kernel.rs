//! One chunk of rows: read each parent's rows, dequantize, scale, weight, sum, quantize (or
//! sum the squares a distance needs). Pure functions of the rows, so chunks can run in any order.

use std::ops::Range;

use super::{Ctx, Input, Job, Measure, MixError};
use crate::{distance, ggml_lib};

/// Read rows `rows` of `input` (whole rows of `row_bytes` bytes, concatenated across its
/// spans) into `buf`.
fn read_rows(
    tensor: &str,
    input: &Input,
    ctx: &Ctx,
    row_bytes: u64,
    rows: &Range<u64>,
    buf: &mut Vec<u8>,
) -> Result<(), MixError> {
    let (mut want, end) = (rows.start * row_bytes, rows.end * row_bytes);
    buf.clear();
    buf.resize((end - want) as usize, 0);
    let mut filled = 0usize;
    let mut span_start = 0u64;
    for span in &input.spans {
        let span_end = span_start + span.len;
        if want < span_end && want < end {
            let take = (span_end.min(end) - want) as usize;
            let offset = span.offset + (want - span_start);
            let file = &ctx.files[input.parent][span.shard];
            file.read_exact_at(&mut buf[filled..filled + take], offset)
                .map_err(|e| MixError::Read {
                    tensor: tensor.to_string(),
                    parent: ctx.names[input.parent].clone(),
                    path: file.path(),
                    offset,
                    source: std::io::Error::other(e.to_string()),
                })?;
            filled += take;
            want += take as u64;
        }
        span_start = span_end;
    }
    debug_assert_eq!(filled, buf.len(), "spans cover the rows");
    Ok(())
}

/// Dequantize rows `rows` of `input` into `out` (`rows.len() * n_per_row` floats).
fn dequantize_rows(
    tensor: &str,
    input: &Input,
    ctx: &Ctx,
    n_per_row: u64,
    rows: &Range<u64>,
    raw: &mut Vec<u8>,
    out: &mut [f32],
) -> Result<(), MixError> {
    let row_bytes = n_per_row / input.ty.block_size() * input.ty.type_size();
    read_rows(tensor, input, ctx, row_bytes, rows, raw)?;
    ggml_lib::dequantize(input.ty, n_per_row, raw, out).map_err(|source| MixError::Ggml {
        tensor: tensor.to_string(),
        source,
    })
}

/// Multiply each row of `out` (rows `rows` of `input`, counted from its first row, which
/// starts a matrix) by its matrix's scale, in f32; nothing without a scale.
fn apply_scales(
    input: &Input,
    n_per_row: u64,
    rows_per_matrix: u64,
    rows: &Range<u64>,
    out: &mut [f32],
) {
    if input.scales.is_none() {
        return;
    }
    for (i, row) in out.chunks_exact_mut(n_per_row as usize).enumerate() {
        let m = (rows.start + i as u64) / rows_per_matrix.max(1);
        let s = input.scale(m).expect("scaled");
        row.iter_mut().for_each(|x| *x *= s);
    }
}

/// Rows `rows` (relative to the job's first row) of the job, quantized.
pub(super) fn mix_rows(
    job: &Job,
    ctx: &Ctx,
    weights: Option<&[f32]>,
    rows: Range<u64>,
) -> Result<Vec<u8>, MixError> {
    let n = job.n_per_row as usize;
    let len = (rows.end - rows.start) as usize * n;
    let mut acc = vec![0f32; len];
    let mut tmp = vec![0f32; len];
    let mut raw = Vec::new();
    for (k, input) in job.inputs.iter().enumerate() {
        let target: &mut [f32] = if k == 0 { &mut acc } else { &mut tmp };
        dequantize_rows(
            &job.tensor,
            input,
            ctx,
            job.n_per_row,
            &rows,
            &mut raw,
            target,
        )?;
        // The job's first row starts a matrix: its rows count from there.
        apply_scales(input, job.n_per_row, job.rows_per_matrix, &rows, target);
        let w = input.weight;
        if k == 0 {
            // The first product starts the sum (not 0 + product: -0.0 stays -0.0).
            acc.iter_mut().for_each(|a| *a *= w);
        } else {
            // Two roundings, as written: Rust never contracts a * b + c into an FMA.
            acc.iter_mut().zip(&tmp).for_each(|(a, x)| *a += w * *x);
        }
    }
    drop(tmp);
    if job.out_type.name() == "NVFP4"
        && let Some((i, &v)) = acc
            .iter()
            .enumerate()
            // NaN is out of range too (it would be written as zeros).
            .find(|(_, v)| v.is_nan() || v.abs() > super::NVFP4_MAX)
    {
        return Err(MixError::OutOfRange {
            tensor: job.tensor.clone(),
            row: job.first_row + rows.start + (i / n) as u64,
            value: v,
            ty: job.out_type,
            max: super::NVFP4_MAX,
        });
    }

    let row_bytes = job.out_row_bytes() as usize;
    let mut out = vec![0u8; (rows.end - rows.start) as usize * row_bytes];
    let m0 = job.matrices().start;
    let mut r = rows.start;
    while r < rows.end {
        // One call per run of rows of one matrix: each matrix has its own weights.
        let global = job.first_row + r;
        let m = global / job.rows_per_matrix;
        let end = ((m + 1) * job.rows_per_matrix - job.first_row).min(rows.end);
        let (a, b) = ((r - rows.start) as usize, (end - rows.start) as usize);
        let w = weights.map(|w| &w[(m - m0) as usize * n..(m - m0 + 1) as usize * n]);
        ggml_lib::quantize(
            job.out_type,
            job.n_per_row,
            &acc[a * n..b * n],
            w,
            &mut out[a * row_bytes..b * row_bytes],
        )
        .map_err(|source| MixError::Ggml {
            tensor: job.tensor.clone(),
            source,
        })?;
        r = end;
    }
    Ok(out)
}

/// Per row of `rows`: the sum of the base's squares, then for each other parent the sum of
/// its squared differences from the base, in f64, as [`distance::Sums::row`] sums them (the
/// definition `diff --values` and the maps use too).
pub(super) fn row_sums(
    m: &Measure,
    ctx: &Ctx,
    rows: Range<u64>,
) -> Result<Vec<Vec<f64>>, MixError> {
    let n = m.n_per_row as usize;
    let count = (rows.end - rows.start) as usize;
    let mut base = vec![0f32; count * n];
    let mut other = vec![0f32; count * n];
    let mut raw = Vec::new();
    dequantize_rows(
        m.tensor,
        m.base,
        ctx,
        m.n_per_row,
        &rows,
        &mut raw,
        &mut base,
    )?;
    apply_scales(m.base, m.n_per_row, m.rows_per_matrix, &rows, &mut base);
    let mut out: Vec<Vec<f64>> = base
        .chunks_exact(n)
        .map(|row| {
            let mut v = vec![0f64; m.others.len() + 1];
            v[0] = distance::Sums::row(row, row).b2;
            v
        })
        .collect();
    for (k, input) in m.others.iter().enumerate() {
        dequantize_rows(
            m.tensor,
            input,
            ctx,
            m.n_per_row,
            &rows,
            &mut raw,
            &mut other,
        )?;
        apply_scales(input, m.n_per_row, m.rows_per_matrix, &rows, &mut other);
        for (i, (b, p)) in base.chunks_exact(n).zip(other.chunks_exact(n)).enumerate() {
            out[i][k + 1] = distance::Sums::row(p, b).d2;
        }
    }
    Ok(out)
}
