//! End to end with real llama.cpp on NVFP4 parents whose routed experts carry per-expert
//! second-level scales (`ffn_*_exps.scale`, which llama.cpp multiplies into each expert's
//! matmul result). A chimera taking experts 2-3 from the donor must give the logits of a
//! child assembled independently with gguf-py (tests/oracle/assemble.py), experts and their
//! scales moved together; a child that moves the blocks but not the scales (what the planner
//! did before companions were a unit) computes something else.
//!
//! A mix of such experts (`mix = { a = 0.75, b = 0.25 }`) computes each parent's blocks
//! times its own scale: F32 output equal to numpy's (tests/oracle/mix_scaled.py) to the bit,
//! the child's scales 1.0 for mixed experts and the base's elsewhere, verified by `verify
//! --recipe`, and the logits of a child gguf-py assembles from numpy's values.
//!
//! The parents are the qwen3moe fixture with NVFP4 experts written by
//! tests/oracle/nvfp4_parents.py (llama-quantize cannot make NVFP4).

use std::path::{Path, PathBuf};

use crate::common::*;
use serde_json::Value;

fn nvfp4_parent(dir: &Path, name: &str, seed: &str) -> PathBuf {
    let p = dir.join(format!("{name}.gguf"));
    let src = repo().join("fixtures/qwen3moe-a-mainline.gguf");
    oracle_script(
        "nvfp4_parents.py",
        &[src.to_str().unwrap(), p.to_str().unwrap(), seed],
    );
    p
}

#[test]
fn an_nvfp4_chimera_takes_each_experts_scale_and_runs_like_the_reference() {
    let test = "an_nvfp4_chimera_takes_each_experts_scale_and_runs_like_the_reference";
    if !have(test, &[Oracle::GgufPy, Oracle::Llama]) {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let a = nvfp4_parent(d.path(), "a", "1");
    let b = nvfp4_parent(d.path(), "b", "2");
    let (pa, pb) = (format!("a={}", a.display()), format!("b={}", b.display()));

    // Read by default: NVFP4 is a mainline type, and no flag is needed.
    let child = d.path().join("child.gguf");
    assert_ok(&run(&[
        "splice",
        "--parent",
        &pa,
        "--parent",
        &pb,
        "--take",
        "_exps=b:experts=2-3",
        "-q",
        "-o",
        child.to_str().unwrap(),
    ]));

    // The reference: gguf-py moves experts 2-3 of every `_exps` tensor, scales included.
    let reference = d.path().join("reference.gguf");
    assemble_reference(
        &a,
        &reference,
        &[("--take-experts", format!("_exps={}:2-3", b.display()))],
    );
    // The old planner's child: the blocks of experts 2-3, the scales of the base.
    let torn = d.path().join("torn.gguf");
    assemble_reference(
        &a,
        &torn,
        &[(
            "--take-experts",
            format!(r"_exps\.weight={}:2-3", b.display()),
        )],
    );

    let (got, want, wrong) = (
        llama_probe(&child),
        llama_probe(&reference),
        llama_probe(&torn),
    );
    assert_eq!(got["tokens"], want["tokens"]);
    assert_eq!(got["logits"], want["logits"], "bit-identical logits");
    assert_ne!(
        want["logits"], wrong["logits"],
        "the scales matter: without them the experts compute other values"
    );

    // verify: the child passes; the torn child names each torn weight and scale.
    assert_ok(&run(&[
        "verify",
        child.to_str().unwrap(),
        "--parent",
        &pa,
        "--parent",
        &pb,
    ]));
    let o = run(&[
        "verify",
        torn.to_str().unwrap(),
        "--parent",
        &pa,
        "--parent",
        &pb,
        "--json",
    ]);
    assert!(!o.status.success());
    let j: Value = serde_json::from_slice(&o.stdout).unwrap();
    let torn_units = j["torn_units"].as_array().unwrap();
    // 2 blocks x 3 matrices; input scales are all 1.0 in both parents, so they match both.
    assert_eq!(torn_units.len(), 6, "{torn_units:?}");
    for u in torn_units {
        assert!(
            u["companion"].as_str().unwrap().ends_with("_exps.scale"),
            "{u}"
        );
        assert_eq!(u["experts"], serde_json::json!([[2, 3]]), "{u}");
        assert_eq!(u["weight_from"], serde_json::json!(["b"]), "{u}");
        assert_eq!(u["companion_from"], serde_json::json!(["a"]), "{u}");
    }
}

/// The `.scale` values of `tensor` in `model`.
fn f32s(model: &Path, tensor: &str) -> Vec<f32> {
    let m = gguf_splice::gguf::Model::open(model).unwrap();
    tensor_bytes(&m, tensor)
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

/// gguf-py's (name, type name, sha256) of each tensor, in order.
fn dump(model: &Path) -> Vec<(String, String, String)> {
    let v: Value =
        serde_json::from_slice(&oracle_script("dump.py", &[model.to_str().unwrap()])).unwrap();
    v["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            let s = |k: &str| t[k].as_str().unwrap().to_string();
            (s("name"), s("type_name"), s("sha256"))
        })
        .collect()
}

fn splice_recipe(dir: &Path, parents: [&str; 2], recipe: &str, out: &str) -> PathBuf {
    let r = dir.join(format!("{out}.toml"));
    std::fs::write(&r, recipe).unwrap();
    let child = dir.join(format!("{out}.gguf"));
    assert_ok(&run(&[
        "splice",
        "--parent",
        parents[0],
        "--parent",
        parents[1],
        "--recipe",
        r.to_str().unwrap(),
        "-q",
        "-o",
        child.to_str().unwrap(),
    ]));
    assert_ok(&run(&[
        "verify",
        child.to_str().unwrap(),
        "--parent",
        parents[0],
        "--parent",
        parents[1],
        "--recipe",
        r.to_str().unwrap(),
    ]));
    child
}

#[test]
fn a_mix_of_scaled_nvfp4_experts_computes_numpys_scaled_values_and_runs_like_the_reference() {
    let test =
        "a_mix_of_scaled_nvfp4_experts_computes_numpys_scaled_values_and_runs_like_the_reference";
    if !have(test, &[Oracle::GgufPy, Oracle::Llama, Oracle::Ggml]) {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let a = nvfp4_parent(d.path(), "a", "1");
    let b = nvfp4_parent(d.path(), "b", "2");
    let (pa, pb) = (format!("a={}", a.display()), format!("b={}", b.display()));

    // Layer 1's experts mixed to F32 (each parent's blocks times its own per-expert scale),
    // layer 0's copied from the base with the base's scales.
    let child = splice_recipe(
        d.path(),
        [&pa, &pb],
        "[[rules]]\nrole = \"routed_experts\"\nlayers = \"1\"\nmix = { a = 0.75, b = 0.25 }\ntype = \"F32\"\n",
        "child",
    );
    let reference = d.path().join("reference.gguf");
    oracle_script(
        "mix_scaled.py",
        &[
            "--base",
            a.to_str().unwrap(),
            "--out",
            reference.to_str().unwrap(),
            "--mix",
            &format!(
                r"^blk\.1\.ffn_.*_exps\.weight$={}:0.75,{}:0.25",
                a.display(),
                b.display()
            ),
        ],
    );
    // Every tensor, name, type and bytes: the mixed F32 experts are numpy's to the bit, their
    // scales 1.0, everything else the base's.
    let (got, want) = (dump(&child), dump(&reference));
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(g, w);
    }
    for m in ["gate", "up", "down"] {
        let (sa, sb) = (
            f32s(&a, &format!("blk.1.ffn_{m}_exps.scale")),
            f32s(&b, &format!("blk.1.ffn_{m}_exps.scale")),
        );
        assert_ne!(sa, sb, "the parents' scales differ");
        assert_eq!(f32s(&child, &format!("blk.1.ffn_{m}_exps.scale")), [1.0; 4]);
        let base0 = f32s(&a, &format!("blk.0.ffn_{m}_exps.scale"));
        assert_eq!(f32s(&child, &format!("blk.0.ffn_{m}_exps.scale")), base0);
    }
    // Real llama.cpp: the same logits as the reference.
    let (got, want) = (llama_probe(&child), llama_probe(&reference));
    assert_eq!(got["tokens"], want["tokens"]);
    assert_eq!(got["logits"], want["logits"], "bit-identical logits");

    // Experts 1-2 mixed to NVFP4 (the base's type): the other experts and their scales are
    // the base's, the mixed ones' scales 1.0; verify recomputes the mix and the made scales.
    let part = splice_recipe(
        d.path(),
        [&pa, &pb],
        "[[rules]]\nrole = \"routed_experts\"\nexperts = \"1-2\"\nmix = { a = 0.75, b = 0.25 }\n",
        "part",
    );
    for l in 0..2 {
        for m in ["gate", "up", "down"] {
            let name = format!("blk.{l}.ffn_{m}_exps.scale");
            let base = f32s(&a, &name);
            assert_eq!(f32s(&part, &name), [base[0], 1.0, 1.0, base[3]], "{name}");
        }
    }
    llama_probe(&part);

    // A child whose mixed experts kept a parent's scale is caught by verify: the made 1.0
    // scale pieces are checked like any other.
    let wrong = d.path().join("wrong.gguf");
    std::fs::copy(&part, &wrong).unwrap();
    let name = "blk.0.ffn_up_exps.scale";
    let at = {
        let m = gguf_splice::gguf::Model::open(&wrong).unwrap();
        m.tensor(name).unwrap().file_offset + 4
    };
    let bytes = {
        let mut f = std::fs::read(&wrong).unwrap();
        f[at as usize..at as usize + 4].copy_from_slice(&f32s(&a, name)[1].to_le_bytes());
        f
    };
    std::fs::write(&wrong, bytes).unwrap();
    let o = run(&[
        "verify",
        wrong.to_str().unwrap(),
        "--parent",
        &pa,
        "--parent",
        &pb,
        "--recipe",
        d.path().join("part.toml").to_str().unwrap(),
        "--json",
    ]);
    assert!(!o.status.success());
    let j: Value = serde_json::from_slice(&o.stdout).unwrap();
    let bad = j["recipe"]["mismatches"].as_array().unwrap();
    assert_eq!(bad.len(), 1, "{bad:?}");
    assert_eq!(bad[0]["tensor"], name);
    assert_eq!(bad[0]["experts"], serde_json::json!([[1, 1]]));
}

#[test]
fn a_threshold_measures_scaled_values_and_kept_experts_keep_their_scale() {
    let test = "a_threshold_measures_scaled_values_and_kept_experts_keep_their_scale";
    if !have(test, &[Oracle::GgufPy, Oracle::Llama, Oracle::Ggml]) {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let a = nvfp4_parent(d.path(), "a", "1");
    // The same blocks as a, other scales: the values differ by the scales alone, so expert
    // e of each matrix is |sc[e] / sa[e] - 1| from a's.
    let c = d.path().join("c.gguf");
    let src = repo().join("fixtures/qwen3moe-a-mainline.gguf");
    oracle_script(
        "nvfp4_parents.py",
        &[src.to_str().unwrap(), c.to_str().unwrap(), "1", "7"],
    );
    let names: Vec<String> = (0..2)
        .flat_map(|l| ["gate", "up", "down"].map(|m| format!("blk.{l}.ffn_{m}_exps.scale")))
        .collect();
    let distances: Vec<Vec<f64>> = names
        .iter()
        .map(|n| {
            let (sa, sc) = (f32s(&a, n), f32s(&c, n));
            sa.iter()
                .zip(&sc)
                .map(|(a, c)| (*c as f64 / *a as f64 - 1.0).abs())
                .collect()
        })
        .collect();
    let mut all: Vec<f64> = distances.iter().flatten().copied().collect();
    all.sort_by(|x, y| x.partial_cmp(y).unwrap());
    let mid = all.len() / 2;
    assert!(
        all[mid] - all[mid - 1] > 1e-3,
        "a threshold between {all:?}"
    );
    let threshold = (all[mid - 1] + all[mid]) / 2.0;
    let (pa, pc) = (format!("a={}", a.display()), format!("c={}", c.display()));
    let child = splice_recipe(
        d.path(),
        [&pa, &pc],
        &format!(
            "[[rules]]\nrole = \"routed_experts\"\nexperts = \"0-3\"\nmix = {{ a = 0.5, c = 0.5 }}\nthreshold = {threshold}\n"
        ),
        "child",
    );
    for (n, d) in names.iter().zip(&distances) {
        let sa = f32s(&a, n);
        let want: Vec<f32> = (0..4)
            .map(|e| if d[e] < threshold { sa[e] } else { 1.0 })
            .collect();
        assert_eq!(
            f32s(&child, n),
            want,
            "{n}: distances {d:?}, threshold {threshold}"
        );
    }
    llama_probe(&child);
}
