//! End to end with real llama.cpp: chimeras spliced by gguf-splice from the real quantized
//! fixtures load in llama.cpp, and their greedy tokens and logits equal those of a child
//! assembled independently with gguf-py (tests/oracle/assemble.py). Every tensor is checked
//! byte for byte, by gguf-py, against the parent the plan names.
//!
//! Needs llama.cpp built by fixtures/build-llama.sh (cached) and the gguf-py venv
//! (fixtures/setup-python.sh); scripts/test.sh provides both.

mod common;

use std::collections::HashMap;
use std::path::Path;
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

fn python(script: &str, args: &[String]) -> Vec<u8> {
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
    out.stdout
}

/// gguf-py's per-tensor (type, shape, sha256), and per-expert sha256 for expert tensors.
fn dump(model: &Path) -> HashMap<String, Value> {
    let v: Value = serde_json::from_slice(&python(
        "dump.py",
        &["--experts".into(), model.display().to_string()],
    ))
    .unwrap();
    v["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["name"].as_str().unwrap().to_string(), t.clone()))
        .collect()
}

fn fixture(name: &str) -> String {
    repo().join("fixtures").join(name).display().to_string()
}

fn splice(args: &[&str]) {
    let mut full = vec!["splice"];
    full.extend_from_slice(args);
    full.push("-q");
    let o = run(&full);
    assert_ok(&o);
}

const EXPERTS: &str = r"ffn_(gate|up|down)_exps\.weight$";

/// The child must equal, tensor for tensor, `expect(name)`'s copy of that tensor.
fn assert_tensors_from(child: &Path, expect: impl Fn(&str) -> Value) {
    let c = dump(child);
    assert!(!c.is_empty());
    for (name, t) in &c {
        let want = expect(name);
        for field in ["type", "shape", "sha256"] {
            assert_eq!(
                t[field],
                want[field],
                "{}: {field} of {name}",
                child.display()
            );
        }
    }
}

#[test]
fn chimera_of_differently_quantized_parents_runs_like_the_gguf_py_reference() {
    if !have(
        "chimera_of_differently_quantized_parents_runs_like_the_gguf_py_reference",
        &[Oracle::GgufPy, Oracle::Llama],
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let v3 = dump(Path::new(&fixture("v3-q3mix.gguf")));
    let r1 = dump(Path::new(&fixture("r1-iq2mix.gguf")));
    let reference = dir.path().join("reference.gguf");
    python(
        "assemble.py",
        &[
            "--base".into(),
            fixture("v3-q3mix.gguf"),
            "--out".into(),
            reference.display().to_string(),
            "--take".into(),
            format!("{EXPERTS}={}", fixture("r1-iq2mix.gguf")),
        ],
    );
    let want = probe(&reference);
    assert_ne!(
        want["logits"],
        probe(Path::new(&fixture("v3-q3mix.gguf")))["logits"],
        "the experts matter"
    );

    let recipe = repo()
        .join("mappings/deepseek-r1t-chimera.toml")
        .display()
        .to_string();
    let v3_arg = format!("v3={}", fixture("v3-q3mix.gguf"));
    // Single parents, single child.
    let child = dir.path().join("chimera.gguf");
    let r1_arg = format!("r1={}", fixture("r1-iq2mix.gguf"));
    splice(&[
        "--parent",
        &v3_arg,
        "--parent",
        &r1_arg,
        "--recipe",
        &recipe,
        "-o",
        child.to_str().unwrap(),
    ]);
    // Sharded parent (given by its second shard), sharded child.
    let r1_split = format!("r1={}", fixture("r1-iq2mix-split-00002-of-00003.gguf"));
    let sharded = dir.path().join("chimera-split.gguf");
    splice(&[
        "--parent",
        &v3_arg,
        "--parent",
        &r1_split,
        "--recipe",
        &recipe,
        "-o",
        sharded.to_str().unwrap(),
        "--split-max-tensors",
        "16",
    ]);
    let sharded_first = first_shard(dir.path(), "chimera-split");

    for c in [child.as_path(), sharded_first.as_path()] {
        assert_tensors_from(c, |n| {
            if n.contains("_exps.") {
                r1[n].clone()
            } else {
                v3[n].clone()
            }
        });
        let got = probe(c);
        assert_eq!(got["tokens"], want["tokens"], "{}", c.display());
        assert_eq!(got["logits"], want["logits"], "{}", c.display());
    }
    // The routed experts really changed type: IQ2_XXS (16) from r1, not v3's Q3_K (11).
    assert_eq!(r1["blk.1.ffn_up_exps.weight"]["type"], 16);
    assert_eq!(v3["blk.1.ffn_up_exps.weight"]["type"], 11);
}

#[test]
fn expert_level_child_of_same_type_parents_runs_like_the_reference() {
    if !have(
        "expert_level_child_of_same_type_parents_runs_like_the_reference",
        &[Oracle::GgufPy, Oracle::Llama],
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let v3 = dump(Path::new(&fixture("v3-q3mix.gguf")));
    let r1 = dump(Path::new(&fixture("r1-q3mix.gguf")));
    let rule = r"blk\.[12]\.ffn_(gate|up|down)_exps";
    let reference = dir.path().join("reference.gguf");
    python(
        "assemble.py",
        &[
            "--base".into(),
            fixture("v3-q3mix.gguf"),
            "--out".into(),
            reference.display().to_string(),
            "--take-experts".into(),
            format!("{rule}={}:1-2", fixture("r1-q3mix.gguf")),
        ],
    );
    let child = dir.path().join("experts.gguf");
    splice(&[
        "--parent",
        &format!("v3={}", fixture("v3-q3mix.gguf")),
        "--parent",
        &format!("r1={}", fixture("r1-q3mix.gguf")),
        "--take",
        &format!("{rule}=r1:experts=1-2"),
        "-o",
        child.to_str().unwrap(),
    ]);
    let c = dump(&child);
    for (name, t) in &c {
        if name.contains("_exps.") {
            let (v, r) = (&v3[name]["experts"], &r1[name]["experts"]);
            let want: Vec<&Value> = (0..4)
                .map(|e| if (1..=2).contains(&e) { &r[e] } else { &v[e] })
                .collect();
            let got: Vec<&Value> = t["experts"].as_array().unwrap().iter().collect();
            assert_eq!(got, want, "{name}");
            assert_ne!(v, r, "{name}: the parents' experts differ");
        } else {
            assert_eq!(t["sha256"], v3[name]["sha256"], "{name}");
        }
    }
    let (got, want) = (probe(&child), probe(&reference));
    assert_eq!(got["tokens"], want["tokens"]);
    assert_eq!(got["logits"], want["logits"]);
}
