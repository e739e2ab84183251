//! End to end with real llama.cpp on NVFP4 parents whose routed experts carry per-expert
//! second-level scales (`ffn_*_exps.scale`, which llama.cpp multiplies into each expert's
//! matmul result). A chimera taking experts 2-3 from the donor must give the logits of a
//! child assembled independently with gguf-py (tests/oracle/assemble.py), experts and their
//! scales moved together; a child that moves the blocks but not the scales (what the planner
//! did before companions were a unit) computes something else.
//!
//! The parents are the qwen3moe fixture with NVFP4 experts written by
//! tests/oracle/nvfp4_parents.py (llama-quantize cannot make NVFP4).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use serde_json::Value;

fn probe(model: &Path) -> Value {
    let out = Command::new(llama_bin().join("llama-splice-probe"))
        .arg(model)
        .output()
        .expect("probe runs");
    assert!(
        out.status.success(),
        "llama.cpp failed to load/run {}: {}",
        model.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn python(script: &str, args: &[&str]) {
    let out = Command::new(oracle_python())
        .arg(repo().join("tests/oracle").join(script))
        .args(args)
        .output()
        .expect("python runs");
    assert!(
        out.status.success(),
        "{script} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn nvfp4_parent(dir: &Path, name: &str, seed: &str) -> PathBuf {
    let p = dir.join(format!("{name}.gguf"));
    let src = repo().join("fixtures/qwen3moe-a-mainline.gguf");
    python(
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
        "--flavour",
        "mainline",
        "-q",
        "-o",
        child.to_str().unwrap(),
    ]));

    // The reference: gguf-py moves experts 2-3 of every `_exps` tensor, scales included.
    let reference = d.path().join("reference.gguf");
    let take = format!("_exps={}:2-3", b.display());
    python(
        "assemble.py",
        &[
            "--base",
            a.to_str().unwrap(),
            "--out",
            reference.to_str().unwrap(),
            "--take-experts",
            &take,
        ],
    );
    // The old planner's child: the blocks of experts 2-3, the scales of the base.
    let torn = d.path().join("torn.gguf");
    let take = format!(r"_exps\.weight={}:2-3", b.display());
    python(
        "assemble.py",
        &[
            "--base",
            a.to_str().unwrap(),
            "--out",
            torn.to_str().unwrap(),
            "--take-experts",
            &take,
        ],
    );

    let (got, want, wrong) = (probe(&child), probe(&reference), probe(&torn));
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
        "--flavour",
        "mainline",
    ]));
    let o = run(&[
        "verify",
        torn.to_str().unwrap(),
        "--parent",
        &pa,
        "--parent",
        &pb,
        "--json",
        "--flavour",
        "mainline",
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
