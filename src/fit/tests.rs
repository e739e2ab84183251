//! The estimate on tiny F32 models whose differences are known: errors, companions in their
//! weight's unit, a layer's expert matrices together, runs per token, imatrix weights.

use std::path::Path;

use super::constraint;
use super::estimate::{self, EstimateOptions};
use super::*;
use crate::gguf::Model;
use crate::mix::Imatrix;
use crate::testkit::GgufBuilder;

/// Whether a ggml was found. Without one (a plain `cargo test` on a machine with none) the
/// test says it skips; under `scripts/test.sh` (`GGUF_SPLICE_REQUIRE_ORACLES=1`, a ggml
/// given in `GGUF_SPLICE_GGML`) a missing ggml is a failure.
fn have_ggml(test: &str) -> bool {
    if crate::ggml_lib::available() {
        return true;
    }
    assert!(
        std::env::var("GGUF_SPLICE_REQUIRE_ORACLES").as_deref() != Ok("1"),
        "{test}: no ggml found but GGUF_SPLICE_REQUIRE_ORACLES=1"
    );
    eprintln!("SKIPPED {test}: needs a ggml (set GGUF_SPLICE_GGML)");
    false
}

fn f32s(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Values 0, 1, 2, ... (as f32) with `diffs` (index, added) applied.
fn values(n: usize, diffs: &[(usize, f32)]) -> Vec<u8> {
    let mut v: Vec<f32> = (0..n).map(|i| i as f32 / 8.0).collect();
    for &(i, d) in diffs {
        v[i] += d;
    }
    f32s(&v)
}

/// A tiny deepseek2-like model (2 experts, 1 used per token); `b` holds the differences.
/// Its output head is tied to token_embd.
fn model(dir: &Path, name: &str, b: bool) -> Parent {
    model_with(dir, name, b, GgufBuilder::new())
}

/// [`model`] with the tensors of `first` in front.
fn model_with(dir: &Path, name: &str, b: bool, first: GgufBuilder) -> Parent {
    let d = |diffs: &'static [(usize, f32)]| if b { diffs } else { &[] };
    let bytes = first
        .kv_str("general.architecture", "deepseek2")
        .kv_u32("deepseek2.expert_count", 2)
        .kv_u32("deepseek2.expert_used_count", 1)
        // 8 rows of 4: row 3, column 0 differs by 1.
        .tensor_raw("token_embd.weight", &[4, 8], 0, values(32, d(&[(12, 1.0)])))
        // Row 0 column 0 by 1, row 1 column 3 by 2; its bias by 3.
        .tensor_raw(
            "blk.0.attn_q.weight",
            &[4, 2],
            0,
            values(8, d(&[(0, 1.0), (7, 2.0)])),
        )
        .tensor_raw("blk.0.attn_q.bias", &[2], 0, values(2, d(&[(1, 3.0)])))
        // Expert 1, row 0, column 1 by 2 (up); expert 0, row 1, column 2 by 1 (down).
        .tensor_raw(
            "blk.1.ffn_up_exps.weight",
            &[4, 2, 2],
            0,
            values(16, d(&[(9, 2.0)])),
        )
        .tensor_raw(
            "blk.1.ffn_down_exps.weight",
            &[4, 2, 2],
            0,
            values(16, d(&[(6, 1.0)])),
        )
        .build();
    let path = dir.join(format!("{name}.gguf"));
    std::fs::write(&path, bytes).unwrap();
    Parent {
        name: name.to_string(),
        model: Model::open(&path).unwrap(),
    }
}

fn opts<'a>(reference: Option<&'a str>, imatrix: Option<&'a Imatrix>) -> EstimateOptions<'a> {
    EstimateOptions {
        reference,
        imatrix,
        sample: 0.02,
        constraint: None,
    }
}

/// (label, tensors, error of each parent) of every unit.
fn errors(e: &Estimate) -> Vec<(String, usize, Vec<f64>)> {
    e.units
        .iter()
        .map(|u| {
            (
                u.label.clone(),
                u.tensors.len(),
                u.candidates.iter().map(|c| c.error).collect(),
            )
        })
        .collect()
}

#[test]
fn errors_units_and_runs_per_token() {
    if !have_ggml("errors_units_and_runs_per_token") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let parents = vec![model(dir.path(), "a", false), model(dir.path(), "b", true)];
    let e = estimate::estimate(&parents, &opts(None, None)).unwrap();
    assert_eq!(
        errors(&e),
        vec![
            // The tied head runs whole every token, and one row of 8 is read: 1 + 1 / 8.
            (
                "token_embd.weight".to_string(),
                1,
                vec![0.0, 1.0 + 1.0 / 8.0]
            ),
            // 1² + 2², and the bias's 3²: one unit.
            ("blk.0.attn_q.weight".to_string(), 2, vec![0.0, 14.0]),
            // (2² + 1²) times 1 expert of 2.
            ("blk.1 routed experts".to_string(), 2, vec![0.0, 2.5]),
        ]
    );
    // Equal bytes: the first parent is the reference; every row of these was read.
    assert!(e.units.iter().all(|u| u.reference == 0));
    assert_eq!(e.bytes_read, vec![(32 + 8 + 2 + 16 + 16) * 4; 2]);
    // Against b, a is as far.
    let e = estimate::estimate(&parents, &opts(Some("b"), None)).unwrap();
    assert_eq!(errors(&e)[1].2, vec![14.0, 0.0]);
    assert!(matches!(
        estimate::estimate(&parents, &opts(Some("c"), None)),
        Err(FitError::UnknownReference { .. })
    ));
}

#[test]
fn columns_weigh_by_the_importance_matrix() {
    if !have_ggml("columns_weigh_by_the_importance_matrix") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let parents = vec![model(dir.path(), "a", false), model(dir.path(), "b", true)];
    // A legacy .dat imatrix (ncall 1): attn_q's column 0 weighs 10; expert 1's column 1 of
    // up weighs 3; down has no entry.
    let mut dat = 2i32.to_le_bytes().to_vec();
    for (name, vals) in [
        ("blk.0.attn_q.weight", vec![10.0f32, 1.0, 1.0, 1.0]),
        (
            "blk.1.ffn_up_exps.weight",
            vec![1.0, 1.0, 1.0, 1.0, 1.0, 3.0, 1.0, 1.0],
        ),
    ] {
        dat.extend((name.len() as i32).to_le_bytes());
        dat.extend(name.as_bytes());
        dat.extend(1i32.to_le_bytes());
        dat.extend((vals.len() as i32).to_le_bytes());
        dat.extend(f32s(&vals));
    }
    let path = dir.path().join("m.dat");
    std::fs::write(&path, dat).unwrap();
    let im = Imatrix::open(&path).unwrap();
    let e = estimate::estimate(&parents, &opts(None, Some(&im))).unwrap();
    let got = errors(&e);
    // 10·1² + 1·2², plus the bias (1-D, weighed with 1): 3².
    assert_eq!(got[1].2, vec![0.0, 23.0]);
    // (3·2² + 1²) / 2.
    assert_eq!(got[2].2, vec![0.0, 6.5]);
    assert_eq!(e.unweighted, vec!["blk.1.ffn_down_exps.weight".to_string()]);
}

#[test]
fn a_budget_below_the_smallest_child_is_refused_naming_it() {
    if !have_ggml("a_budget_below_the_smallest_child_is_refused_naming_it") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let parents = vec![model(dir.path(), "a", false), model(dir.path(), "b", true)];
    let out = dir.path().join("child.gguf");
    let run = |budget| {
        fit(
            &parents,
            &FitOptions {
                budget,
                estimate: opts(None, None),
                output: &out,
                split: SplitOptions::default(),
            },
        )
    };
    // A budget of 1 byte: the child's header records the budget, so the minimum said must be
    // the size at a budget of that minimum, not at 1 (its digits are fewer).
    let Err(FitError::BudgetTooSmall { minimum, budget }) = run(1) else {
        panic!("a 1-byte budget fits no child");
    };
    assert_eq!(budget, 1);
    // That minimum is enough, and is the child's size; every unit from the reference.
    let f = run(minimum).unwrap();
    assert_eq!(f.child_bytes(), minimum);
    assert_eq!(f.error(), 0.0);
    assert!(matches!(
        run(minimum - 1),
        Err(FitError::BudgetTooSmall { .. })
    ));
}

#[test]
fn a_batched_3d_matrix_imatrix_entry_is_weighed_with_one() {
    if !have_ggml("a_batched_3d_matrix_imatrix_entry_is_weighed_with_one") {
        return;
    }
    // llama-imatrix writes MLA's attn_k_b ([64, 256, 2], not experts) as one entry of
    // 128 sums and 1 count: not per-column weights of 2 matrices. The estimate once failed
    // on it (BadEntry); it now weighs that tensor with 1 and says so.
    let dir = tempfile::tempdir().unwrap();
    let parent = |name: &str, diffs: &[(usize, f32)]| {
        let bytes = GgufBuilder::new()
            .kv_str("general.architecture", "deepseek2")
            .tensor_raw("blk.0.attn_k_b.weight", &[4, 2, 2], 0, values(16, diffs))
            .build();
        let path = dir.path().join(format!("{name}.gguf"));
        std::fs::write(&path, bytes).unwrap();
        Parent {
            name: name.to_string(),
            model: Model::open(&path).unwrap(),
        }
    };
    let parents = vec![parent("a", &[]), parent("b", &[(5, 2.0), (14, 1.0)])];
    let im = GgufBuilder::new()
        .kv_str("general.type", "imatrix")
        .kv_str_array("imatrix.datasets", &["t.txt"])
        .kv_u32("imatrix.chunk_count", 1)
        .kv_u32("imatrix.chunk_size", 512)
        .tensor_raw("blk.0.attn_k_b.weight.in_sum2", &[8], 0, f32s(&[5.0; 8]))
        .tensor_raw("blk.0.attn_k_b.weight.counts", &[1], 0, f32s(&[1.0]))
        .build();
    let path = dir.path().join("m.gguf");
    std::fs::write(&path, im).unwrap();
    let im = Imatrix::open(&path).unwrap();
    let e = estimate::estimate(&parents, &opts(None, Some(&im))).unwrap();
    assert_eq!(errors(&e)[0].2, vec![0.0, 5.0]);
    assert_eq!(e.unweighted, vec!["blk.0.attn_k_b.weight".to_string()]);
}

#[test]
fn a_constraint_limits_the_parents_of_the_units_it_selects() {
    if !have_ggml("a_constraint_limits_the_parents_of_the_units_it_selects") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let parents = vec![model(dir.path(), "a", false), model(dir.path(), "b", true)];
    let c = constraint::Constraint::from_toml(
        "[[rules]]\nmatch = 'attn_q'\nfrom = ['b']\n",
        Path::new("c.toml"),
    )
    .unwrap();
    let mut o = opts(None, None);
    o.constraint = Some(&c);
    let e = estimate::estimate(&parents, &o).unwrap();
    // attn_q (and its bias) may come from b only: b is its only candidate, but its error is
    // still measured against the reference of all parents (a: equal bytes, the first), so
    // the constraint narrows the choice, not the yardstick.
    let q = &e.units[1];
    assert_eq!(q.label, "blk.0.attn_q.weight");
    assert_eq!(
        q.candidates.iter().map(|c| c.parent).collect::<Vec<_>>(),
        vec![1]
    );
    assert_eq!(q.reference, 0);
    assert_eq!(q.candidates[0].error, 14.0);
    assert_eq!(e.units[2].candidates.len(), 2);
    // Naming a parent that is not given is refused before anything is read.
    let c = constraint::Constraint::from_toml(
        "[[rules]]\nmatch = 'attn_q'\nfrom = ['b', 'z']\n",
        Path::new("c.toml"),
    )
    .unwrap();
    o.constraint = Some(&c);
    assert!(matches!(
        estimate::estimate(&parents, &o),
        Err(FitError::BadConstraint { .. })
    ));
}

#[test]
fn untied_embeddings_run_one_row_per_token() {
    if !have_ggml("untied_embeddings_run_one_row_per_token") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let head = || GgufBuilder::new().tensor_raw("output.weight", &[4, 2], 0, values(8, &[]));
    let parents = vec![
        model_with(dir.path(), "a", false, head()),
        model_with(dir.path(), "b", true, head()),
    ];
    let e = estimate::estimate(&parents, &opts(None, None)).unwrap();
    let embd = e
        .units
        .iter()
        .find(|u| u.label == "token_embd.weight")
        .unwrap();
    assert_eq!(embd.candidates[1].error, 1.0 / 8.0);
}

#[test]
fn a_deepseek_size_choice_plans_within_the_budget() {
    if !have_ggml("a_deepseek_size_choice_plans_within_the_budget") {
        return;
    }
    // Three DeepSeek-V3-size headers (1 086 tensors, a 129 280-token vocabulary), no data:
    // the knapsack, the recipe and the planning of every round, without the estimate's reads.
    use crate::ggml_type::GgmlType;
    use crate::gguf::GgufFile;
    use crate::testkit::SynthSpec;
    let spec = |e: GgmlType, o: GgmlType| SynthSpec {
        expert_type: e,
        other_type: o,
        ..SynthSpec::deepseek_v3()
    };
    let specs = [
        ("q4", spec(GgmlType::Q4_K, GgmlType::Q8_0)),
        ("q3", spec(GgmlType::Q3_K, GgmlType::Q4_K)),
        ("q2", spec(GgmlType::IQ2_XXS, GgmlType::Q4_K)),
    ];
    let parents: Vec<Parent> = specs
        .iter()
        .map(|(name, s)| {
            let (header, data) = s.header(name);
            let path = Path::new(name).with_extension("gguf");
            let f = GgufFile::from_prefix(&path, &header, header.len() as u64 + data).unwrap();
            Parent {
                name: name.to_string(),
                model: Model::from_shards(vec![f]).unwrap(),
            }
        })
        .collect();
    let base = &parents[0].model;
    // Errors that fall with the bits per weight: (bytes of the largest) / bytes - 1.
    let units: Vec<FitUnit> = estimate::group(base)
        .into_iter()
        .map(|(label, tensors)| {
            let bytes = |p: usize| -> u64 {
                tensors
                    .iter()
                    .map(|t| {
                        parents[p]
                            .model
                            .tensor(t)
                            .unwrap()
                            .info
                            .n_bytes
                            .next_multiple_of(32)
                    })
                    .sum()
            };
            let top = (0..3).map(bytes).max().unwrap() as f64;
            let class = crate::roles::classify(&tensors[0]);
            FitUnit {
                label,
                layer: class.layer,
                role: class.role,
                runs: 1.0,
                reference: 0,
                candidates: (0..3)
                    .map(|p| Candidate {
                        parent: p,
                        bytes: bytes(p),
                        error: top / bytes(p) as f64 - 1.0,
                        ty: GgmlType::F32,
                    })
                    .collect(),
                tensors,
            }
        })
        .collect();
    let est = Estimate {
        units,
        bytes_read: vec![0; 3],
        sample: 0.02,
        unweighted: Vec::new(),
    };
    let size = |p: usize| parents[p].model.data_bytes();
    let budget = (size(1) + size(2)) / 2;
    let started = std::time::Instant::now();
    let f = choose(
        &parents,
        est,
        &FitOptions {
            budget,
            estimate: opts(None, None),
            output: Path::new("child.gguf"),
            split: SplitOptions {
                max_bytes: Some(48_000_000_000),
                max_tensors: None,
            },
        },
    )
    .unwrap();
    let secs = started.elapsed().as_secs_f64();
    assert!(f.child_bytes() <= budget && f.child_bytes() > f.minimum);
    assert!(f.plan.shards.len() > 1);
    // Stderr, for the record (libtest shows it with --nocapture).
    eprintln!(
        "DeepSeek-size choice: {} units, {} shards, {secs:.2} s",
        f.estimate.units.len(),
        f.plan.shards.len()
    );
}

#[test]
fn a_weights_scale_is_part_of_its_values() {
    if !have_ggml("a_weights_scale_is_part_of_its_values") {
        return;
    }
    // The same blocks, scales 1 and 2: the values differ by the weight itself, so the
    // error is the sum of its squared values (0 .. 7 / 8), not 0.
    let dir = tempfile::tempdir().unwrap();
    let with_scale = |name: &str, scale: f32| {
        let bytes = GgufBuilder::new()
            .kv_str("general.architecture", "deepseek2")
            .tensor_raw("blk.0.attn_q.weight", &[4, 2], 0, values(8, &[]))
            .tensor_raw("blk.0.attn_q.scale", &[1], 0, f32s(&[scale]))
            .build();
        let path = dir.path().join(format!("{name}.gguf"));
        std::fs::write(&path, bytes).unwrap();
        Parent {
            name: name.to_string(),
            model: Model::open(&path).unwrap(),
        }
    };
    let parents = vec![with_scale("a", 1.0), with_scale("b", 2.0)];
    let e = estimate::estimate(&parents, &opts(Some("a"), None)).unwrap();
    let want: f64 = (0..8).map(|i| (i as f64 / 8.0).powi(2)).sum();
    assert_eq!(
        errors(&e),
        vec![("blk.0.attn_q.weight".to_string(), 2, vec![0.0, want])]
    );
}

#[test]
fn a_parent_whose_weight_has_a_companion_the_base_lacks_is_no_candidate() {
    if !have_ggml("a_parent_whose_weight_has_a_companion_the_base_lacks_is_no_candidate") {
        return;
    }
    // b's attn_q has a `.scale` the base (a) lacks: the child, which has a's tensors, would
    // carry b's blocks without it, and the planner refuses that. fit must not choose it.
    let dir = tempfile::tempdir().unwrap();
    let build = |name: &str, scale: bool| {
        let mut b = GgufBuilder::new()
            .kv_str("general.architecture", "deepseek2")
            .tensor_raw("blk.0.attn_q.weight", &[4, 2], 0, values(8, &[]));
        if scale {
            b = b.tensor_raw("blk.0.attn_q.scale", &[1], 0, f32s(&[2.0]));
        }
        let path = dir.path().join(format!("{name}.gguf"));
        std::fs::write(&path, b.build()).unwrap();
        Parent {
            name: name.to_string(),
            model: Model::open(&path).unwrap(),
        }
    };
    let parents = vec![build("a", false), build("b", true)];
    let e = estimate::estimate(&parents, &opts(None, None)).unwrap();
    let unit = e
        .units
        .iter()
        .find(|u| u.label == "blk.0.attn_q.weight")
        .expect("the unit");
    let cands: Vec<usize> = unit.candidates.iter().map(|c| c.parent).collect();
    assert_eq!(cands, vec![0], "only the base can give it");
}
