//! The baseline of `benches/values.sh`: read and dequantize every tensor that two models
//! share (same name and shape), as `diff --values` does (chunks of 1 Mi values, positional
//! reads, a few chunks per thread in flight, ggml's `to_float`), and nothing else: no sums.
//! What `diff --values` costs beyond this is the distance arithmetic and its bookkeeping.
//!
//! usage: dequantize A.gguf B.gguf   (with a ggml: GGUF_SPLICE_GGML, see README "Mixing")

use std::os::unix::fs::FileExt;

use gguf_splice::ggml_lib;
use gguf_splice::gguf::{Model, TensorLoc};
use rayon::prelude::*;

const CHUNK: u64 = 1 << 20;

/// Rows `rows` of tensor `t`, dequantized; returns the first value of each row (so the
/// work cannot be optimised away).
fn rows(files: &[std::fs::File], t: &TensorLoc, rows: std::ops::Range<u64>) -> f64 {
    let ne0 = t.info.dims[0];
    let ty = t.info.ty;
    let row_bytes = ne0 / ty.block_size() * ty.type_size();
    let n = (rows.end - rows.start) as usize;
    let mut raw = vec![0u8; n * row_bytes as usize];
    files[t.shard]
        .read_exact_at(&mut raw, t.file_offset + rows.start * row_bytes)
        .expect("read");
    let mut out = vec![0f32; n * ne0 as usize];
    ggml_lib::dequantize(ty, ne0, &raw, &mut out).expect("dequantize");
    out.chunks(ne0 as usize).map(|r| r[0] as f64).sum()
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    assert!(args.len() == 2, "usage: dequantize A.gguf B.gguf");
    if let Err(e) = ggml_lib::library() {
        eprintln!("dequantize: {e}");
        std::process::exit(2);
    }
    let models: Vec<Model> = args
        .iter()
        .map(|p| Model::open(std::path::Path::new(p)).expect("open"))
        .collect();
    let files: Vec<Vec<std::fs::File>> = models
        .iter()
        .map(|m| {
            m.shards()
                .iter()
                .map(|s| std::fs::File::open(&s.path).expect("open"))
                .collect()
        })
        .collect();
    // Jobs: (tensor of A, tensor of B, rows), in model order.
    let mut jobs = Vec::new();
    for a in models[0].tensors() {
        let Some(b) = models[1].tensor(&a.info.name) else {
            continue;
        };
        if a.info.dims != b.info.dims
            || !ggml_lib::can_dequantize(a.info.ty)
            || !ggml_lib::can_dequantize(b.info.ty)
        {
            continue;
        }
        let ne0 = a.info.dims[0].max(1);
        let total: u64 = a.info.dims.iter().product::<u64>() / ne0;
        let per = (CHUNK / ne0).max(1);
        for c in 0..total.div_ceil(per) {
            jobs.push((a, b, c * per..((c + 1) * per).min(total)));
        }
    }
    let in_flight = (4 * rayon::current_num_threads()).min(16);
    let mut check = 0f64;
    for batch in jobs.chunks(in_flight) {
        check += batch
            .par_iter()
            .map(|(a, b, r)| rows(&files[0], a, r.clone()) + rows(&files[1], b, r.clone()))
            .collect::<Vec<f64>>()
            .iter()
            .sum::<f64>();
    }
    println!("{} chunks dequantized (checksum {check})", jobs.len());
}
