use std::fs::File;
use std::sync::atomic::AtomicBool;

use super::*;

/// Parents as F32 files: one file per parent holding `rows * n` floats.
struct Parents {
    _dir: tempfile::TempDir,
    files: Vec<Vec<crate::source::Source>>,
    names: Vec<String>,
}

fn parents(data: &[Vec<f32>]) -> Parents {
    let dir = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    for (i, d) in data.iter().enumerate() {
        let p = dir.path().join(format!("p{i}.bin"));
        // 8 bytes of something else first: spans use absolute offsets.
        let mut bytes = vec![0xAAu8; 8];
        bytes.extend(d.iter().flat_map(|x| x.to_le_bytes()));
        std::fs::write(&p, bytes).unwrap();
        files.push(vec![crate::source::Source::Local {
            file: File::open(&p).unwrap(),
            path: p.clone(),
        }]);
    }
    Parents {
        _dir: dir,
        files,
        names: (0..data.len()).map(|i| format!("p{i}")).collect(),
    }
}

fn input(parent: usize, weight: f32, floats: u64) -> Input {
    // Two spans, to cross a span boundary mid-chunk.
    let half = floats / 2 * 4;
    Input {
        parent,
        weight,
        ty: GgmlType::F32,
        spans: vec![
            Span {
                shard: 0,
                offset: 8,
                len: half,
            },
            Span {
                shard: 0,
                offset: 8 + half,
                len: floats * 4 - half,
            },
        ],
        converted: false,
        scales: None,
    }
}

fn ctx<'a>(p: &'a Parents, limits: Limits) -> Ctx<'a> {
    Ctx {
        files: &p.files,
        names: &p.names,
        imatrices: &[],
        limits,
    }
}

fn data(seed: u32, n: usize) -> Vec<f32> {
    let mut x = seed.wrapping_mul(2654435761).max(1);
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x as f32 / u32::MAX as f32) - 0.5
        })
        .collect()
}

#[test]
fn distances_are_relative_frobenius_norms() {
    let (n, rows) = (4u64, 6u64);
    let b: Vec<f32> = vec![1.0; 24];
    let mut p = b.clone();
    // slice 1 (rows 2-3) differs by 0.5 in every element: ‖P−B‖/‖B‖ = 0.5
    for x in &mut p[8..16] {
        *x += 0.5;
    }
    let ps = parents(&[b, p, vec![0.0; 24]]);
    let c = ctx(&ps, Limits::default());
    let base = input(0, 1.0, n * rows);
    let others = [input(1, 1.0, n * rows)];
    let m = Measure {
        tensor: "t",
        base: &base,
        others: &others,
        n_per_row: n,
        rows,
        slices: 3,
        rows_per_matrix: 2,
    };
    assert_eq!(distances(&m, &c).unwrap(), vec![0.0, 0.5, 0.0]);
    // Chunks of one row give the same sums.
    let small = ctx(
        &ps,
        Limits {
            chunk_elements: 1,
            chunks_in_flight: 2,
        },
    );
    assert_eq!(distances(&m, &small).unwrap(), vec![0.0, 0.5, 0.0]);
    // An all-zero base: infinitely far from anything else, 0 from itself.
    let zero = input(2, 1.0, n * rows);
    let m = Measure {
        base: &zero,
        others: &others,
        slices: 1,
        ..m
    };
    assert_eq!(distances(&m, &c).unwrap(), vec![f64::INFINITY]);
}

fn job(inputs: Vec<Input>, out_type: GgmlType, n: u64, rows: u64) -> Job {
    Job {
        tensor: "t".into(),
        inputs,
        out_type,
        n_per_row: n,
        rows,
        first_row: 0,
        rows_per_matrix: rows,
        imatrix: None,
    }
}

fn run_to_vec(job: &Job, c: &Ctx) -> Vec<u8> {
    let mut out = Vec::new();
    let mut last = 0;
    run(
        job,
        c,
        &AtomicBool::new(false),
        &mut |b| {
            out.extend_from_slice(b);
            Ok(())
        },
        &mut |done| last = done,
    )
    .unwrap();
    assert_eq!(last, job.out_bytes());
    out
}

#[test]
fn f32_mix_is_weighted_sum_in_order() {
    if crate::ggml_lib::test_library("f32_mix_is_weighted_sum_in_order").is_none() {
        return;
    }
    let (n, rows) = (64u64, 10u64);
    let (a, b, d) = (data(1, 640), data(2, 640), data(3, 640));
    let ps = parents(&[a.clone(), b.clone(), d.clone()]);
    let c = ctx(&ps, Limits::default());
    let inputs = vec![
        input(0, 0.3, n * rows),
        input(1, 0.5, n * rows),
        input(2, 0.2, n * rows),
    ];
    let got = run_to_vec(&job(inputs, GgmlType::F32, n, rows), &c);
    let want: Vec<u8> = (0..640)
        .flat_map(|i| {
            let s = 0.3f32 * a[i] + 0.5f32 * b[i];
            (s + 0.2f32 * d[i]).to_le_bytes()
        })
        .collect();
    assert_eq!(got, want);
}

#[test]
fn bytes_do_not_depend_on_chunks_or_threads() {
    if crate::ggml_lib::test_library("bytes_do_not_depend_on_chunks_or_threads").is_none() {
        return;
    }
    let (n, rows) = (256u64, 12u64);
    let ps = parents(&[data(4, 3072), data(5, 3072)]);
    let inputs = vec![input(0, 0.75, n * rows), input(1, 0.25, n * rows)];
    for ty in ["Q4_K", "Q8_0", "IQ4_XS"] {
        let mut j = job(inputs.clone(), GgmlType::from_name(ty).unwrap(), n, rows);
        j.rows_per_matrix = 4;
        let whole = run_to_vec(&j, &ctx(&ps, Limits::default()));
        assert_eq!(whole.len() as u64, j.out_bytes());
        for (chunk_elements, chunks_in_flight) in [(1, 1), (256 * 5, 3), (256 * 7, 16)] {
            let c = ctx(
                &ps,
                Limits {
                    chunk_elements,
                    chunks_in_flight,
                },
            );
            assert_eq!(run_to_vec(&j, &c), whole, "{ty} {chunk_elements}");
        }
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        let one = pool.install(|| run_to_vec(&j, &ctx(&ps, Limits::default())));
        assert_eq!(one, whole, "{ty}: one thread");
    }
}

#[test]
fn comparison_finds_the_first_differing_byte() {
    if crate::ggml_lib::test_library("comparison_finds_the_first_differing_byte").is_none() {
        return;
    }
    let (n, rows) = (32u64, 4u64);
    let ps = parents(&[data(6, 128), data(7, 128)]);
    let c = ctx(&ps, Limits::default());
    let j = job(
        vec![input(0, 0.5, n * rows), input(1, 0.5, n * rows)],
        GgmlType::from_name("Q8_0").unwrap(),
        n,
        rows,
    );
    let mut bytes = run_to_vec(&j, &c);
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("child");
    let mut with_prefix = vec![0u8; 5];
    with_prefix.extend_from_slice(&bytes);
    std::fs::write(&p, &with_prefix).unwrap();
    let f = File::open(&p).unwrap();
    assert_eq!(first_difference(&j, &c, &f, &p, 5).unwrap(), None);
    bytes[40] ^= 1;
    let mut with_prefix = vec![0u8; 5];
    with_prefix.extend_from_slice(&bytes);
    std::fs::write(&p, &with_prefix).unwrap();
    let f = File::open(&p).unwrap();
    assert_eq!(first_difference(&j, &c, &f, &p, 5).unwrap(), Some(40));
}

#[test]
fn without_ggml_a_job_is_refused() {
    // Only where the test process finds no ggml (tests/hand/mix runs the binary without one).
    if crate::ggml_lib::available() {
        return;
    }
    let ps = parents(&[data(1, 32)]);
    let j = Job {
        tensor: "t".into(),
        inputs: vec![input(0, 1.0, 32)],
        out_type: GgmlType::Q8_0,
        n_per_row: 32,
        rows: 1,
        first_row: 0,
        rows_per_matrix: 1,
        imatrix: None,
    };
    let e = run(
        &j,
        &ctx(&ps, Limits::default()),
        &AtomicBool::new(false),
        &mut |_| Ok(()),
        &mut |_| {},
    )
    .unwrap_err();
    assert!(matches!(
        e,
        MixError::Ggml {
            source: crate::ggml_lib::GgmlError::NotFound,
            ..
        }
    ));
}

/// Chunkings that split matrices and cross their boundaries.
const CHUNKINGS: [(u64, usize); 3] = [(1, 1), (64 * 3, 2), (1 << 20, 16)];

#[test]
fn scales_multiply_each_matrix_before_the_weight() {
    if crate::ggml_lib::test_library("scales_multiply_each_matrix_before_the_weight").is_none() {
        return;
    }
    // Four matrices (experts) of two rows of 64; the job computes matrices 1-3.
    let (n, rpm) = (64usize, 2usize);
    let (a, b) = (data(8, 4 * rpm * n), data(9, 4 * rpm * n));
    let ps = parents(&[a.clone(), b.clone()]);
    let (sa, sb) = ([1.75f32, 0.3, 3.1], 0.6f32);
    // Rows 2..8 of each parent: spans from the second matrix on.
    let rows_of = |p: usize, scales: Vec<f32>, w: f32| Input {
        spans: vec![Span {
            shard: 0,
            offset: 8 + (rpm * n * 4) as u64,
            len: (3 * rpm * n * 4) as u64,
        }],
        scales: Some(scales),
        ..input(p, w, 0)
    };
    let mut j = job(
        vec![rows_of(0, sa.to_vec(), 0.75), rows_of(1, vec![sb], 0.25)],
        GgmlType::F32,
        n as u64,
        (3 * rpm) as u64,
    );
    j.first_row = rpm as u64;
    j.rows_per_matrix = rpm as u64;
    let want: Vec<f32> = (0..3 * rpm * n)
        .map(|i| {
            let (k, m) = (rpm * n + i, i / (rpm * n));
            0.75f32 * (a[k] * sa[m]) + 0.25f32 * (b[k] * sb)
        })
        .collect();
    // Scaling after the weight rounds differently: the order is part of the arithmetic.
    let after: Vec<f32> = (0..3 * rpm * n)
        .map(|i| {
            let (k, m) = (rpm * n + i, i / (rpm * n));
            0.75f32 * a[k] * sa[m] + 0.25f32 * b[k] * sb
        })
        .collect();
    assert_ne!(want, after);
    let want: Vec<u8> = want.iter().flat_map(|x| x.to_le_bytes()).collect();
    for (chunk_elements, chunks_in_flight) in CHUNKINGS {
        let c = ctx(
            &ps,
            Limits {
                chunk_elements,
                chunks_in_flight,
            },
        );
        assert_eq!(run_to_vec(&j, &c), want, "chunks of {chunk_elements}");
    }
}

#[test]
fn distances_compare_scaled_values() {
    if crate::ggml_lib::test_library("distances_compare_scaled_values").is_none() {
        return;
    }
    // The parent's blocks are half the base's, its scale 2 for matrix 1 only: the values
    // llama.cpp computes with are equal there.
    let (n, rows) = (4u64, 4u64);
    let b: Vec<f32> = vec![1.0; 16];
    let p: Vec<f32> = vec![0.5; 16];
    let ps = parents(&[b, p]);
    let base = input(0, 1.0, n * rows);
    let others = [Input {
        scales: Some(vec![1.0, 2.0]),
        ..input(1, 1.0, n * rows)
    }];
    let m = Measure {
        tensor: "t",
        base: &base,
        others: &others,
        n_per_row: n,
        rows,
        slices: 2,
        rows_per_matrix: 2,
    };
    for (chunk_elements, chunks_in_flight) in CHUNKINGS {
        let c = ctx(
            &ps,
            Limits {
                chunk_elements,
                chunks_in_flight,
            },
        );
        assert_eq!(distances(&m, &c).unwrap(), vec![0.5, 0.0]);
    }
}

#[test]
fn nvfp4_refuses_values_it_cannot_hold_without_a_second_scale() {
    let test = "nvfp4_refuses_values_it_cannot_hold_without_a_second_scale";
    if crate::ggml_lib::test_library(test).is_none() {
        return;
    }
    let n = 64u64;
    let mut x = vec![0.25f32; 64];
    x[5] = -1000.0;
    let ps = parents(&[x]);
    let c = ctx(&ps, Limits::default());
    let nvfp4 = GgmlType::from_name("NVFP4").unwrap();
    // 1000 fits (448 x 6 = 2688): quantized.
    let fits = job(vec![input(0, 1.0, n)], nvfp4, n, 1);
    assert_eq!(run_to_vec(&fits, &c).len() as u64, fits.out_bytes());
    // Scaled by 3, it does not.
    let scaled = Input {
        scales: Some(vec![3.0]),
        ..input(0, 1.0, n)
    };
    let e = run(
        &job(vec![scaled], nvfp4, n, 1),
        &c,
        &AtomicBool::new(false),
        &mut |_| Ok(()),
        &mut |_| {},
    )
    .unwrap_err();
    assert!(
        matches!(e, MixError::OutOfRange { row: 0, value, .. } if value == -3000.0),
        "{e}"
    );
}
