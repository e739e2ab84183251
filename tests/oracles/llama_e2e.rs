//! End to end with real llama.cpp: chimeras spliced by gguf-splice from the real quantized
//! fixtures load in llama.cpp, and their greedy tokens and logits equal those of a child
//! assembled independently with gguf-py (tests/oracle/assemble.py). Every tensor is checked
//! byte for byte, by gguf-py, against the parent the plan names.
//!
//! Needs llama.cpp built by fixtures/build-llama.sh (cached) and the gguf-py venv
//! (fixtures/setup-python.sh); scripts/test.sh provides both.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::common::*;
use serde_json::Value;

/// gguf-py's tensors in file order: name, type, shape, sha256, and per-expert sha256 for
/// expert tensors.
fn dump_list(model: &Path) -> Vec<Value> {
    let v: Value = serde_json::from_slice(&oracle_script(
        "dump.py",
        &["--experts".into(), model.display().to_string()],
    ))
    .unwrap();
    v["tensors"].as_array().unwrap().clone()
}

/// `dump_list` by tensor name.
fn dump(model: &Path) -> HashMap<String, Value> {
    dump_list(model)
        .into_iter()
        .map(|t| (t["name"].as_str().unwrap().to_string(), t))
        .collect()
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
    let v3 = dump(Path::new(&fixture_arg("v3-q3mix.gguf")));
    let r1 = dump(Path::new(&fixture_arg("r1-iq2mix.gguf")));
    let reference = dir.path().join("reference.gguf");
    assemble_reference(
        &fixture("v3-q3mix.gguf"),
        &reference,
        &[(
            "--take",
            format!("{EXPERTS}={}", fixture_arg("r1-iq2mix.gguf")),
        )],
    );
    let want = llama_probe(&reference);
    assert_ne!(
        want["logits"],
        llama_probe(Path::new(&fixture_arg("v3-q3mix.gguf")))["logits"],
        "the experts matter"
    );

    let recipe = repo()
        .join("mappings/deepseek-r1t-chimera.toml")
        .display()
        .to_string();
    let v3_arg = format!("v3={}", fixture_arg("v3-q3mix.gguf"));
    // Single parents, single child.
    let child = dir.path().join("chimera.gguf");
    let r1_arg = format!("r1={}", fixture_arg("r1-iq2mix.gguf"));
    SpliceCmd::new("splice")
        .args(&[
            "--parent",
            &v3_arg,
            "--parent",
            &r1_arg,
            "--recipe",
            &recipe,
            "-o",
            child.to_str().unwrap(),
        ])
        .quiet()
        .ok();
    // Sharded parent (given by its second shard), sharded child.
    let r1_split = format!("r1={}", fixture_arg("r1-iq2mix-split-00002-of-00003.gguf"));
    let sharded = dir.path().join("chimera-split.gguf");
    SpliceCmd::new("splice")
        .args(&[
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
        ])
        .quiet()
        .ok();
    let sharded_first = first_shard(dir.path(), "chimera-split");

    for c in [child.as_path(), sharded_first.as_path()] {
        assert_tensors_from(c, |n| {
            if n.contains("_exps.") {
                r1[n].clone()
            } else {
                v3[n].clone()
            }
        });
        let got = llama_probe(c);
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
    let v3 = dump(Path::new(&fixture_arg("v3-q3mix.gguf")));
    let r1 = dump(Path::new(&fixture_arg("r1-q3mix.gguf")));
    let rule = r"blk\.[12]\.ffn_(gate|up|down)_exps";
    let reference = dir.path().join("reference.gguf");
    assemble_reference(
        &fixture("v3-q3mix.gguf"),
        &reference,
        &[(
            "--take-experts",
            format!("{rule}={}:1-2", fixture_arg("r1-q3mix.gguf")),
        )],
    );
    let child = dir.path().join("experts.gguf");
    SpliceCmd::new("splice")
        .args(&[
            "--parent",
            &format!("v3={}", fixture_arg("v3-q3mix.gguf")),
            "--parent",
            &format!("r1={}", fixture_arg("r1-q3mix.gguf")),
            "--take",
            &format!("{rule}=r1:experts=1-2"),
            "-o",
            child.to_str().unwrap(),
        ])
        .quiet()
        .ok();
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
    let (got, want) = (llama_probe(&child), llama_probe(&reference));
    assert_eq!(got["tokens"], want["tokens"]);
    assert_eq!(got["logits"], want["logits"]);
}

// ---- parents converted with --fuse-gate-up-exps -------------------------------------------
//
// `*-fused-q3mix.gguf` hold the same weights as `*-q3mix.gguf` with each MoE block's gate and
// up experts in one `ffn_gate_up_exps` tensor (see fixtures/README.md). A child keeps its
// base's layout; routed experts taken from a parent of the other layout are cut from, or
// joined out of, that parent's expert bytes.

/// The routed experts in both layouts, for the gguf-py oracle (which matches child names).
const ROUTED_ORACLE: &str = r"ffn_(gate|up|gate_up|down)_exps\.weight$";

/// A child assembled by tests/oracle/assemble.py (`extra`: its --take / --take-experts).
fn assemble(dir: &Path, name: &str, base: &str, extra: &[String]) -> PathBuf {
    let takes: Vec<(&str, String)> = extra
        .chunks(2)
        .map(|c| (c[0].as_str(), c[1].clone()))
        .collect();
    assemble_reference(Path::new(base), &dir.join(name), &takes)
}

/// Which of `parents` holds exactly the bytes of `t` under its name, for messages.
fn whose(t: &Value, parents: &[(&str, HashMap<String, Value>)]) -> String {
    let name = t["name"].as_str().unwrap();
    let from: Vec<&str> = parents
        .iter()
        .filter(|(_, d)| d.get(name).is_some_and(|p| p["sha256"] == t["sha256"]))
        .map(|(n, _)| *n)
        .collect();
    if from.is_empty() {
        "no parent's whole tensor".into()
    } else {
        format!("{}'s", from.join("/"))
    }
}

/// `child` has `reference`'s tensors, in its order, with equal type, shape and bytes. A
/// mismatch names the parent whose copy each side holds.
fn assert_same_tensors(child: &Path, reference: &Path, parents: &[(&str, &str)]) {
    let (c, r) = (dump_list(child), dump_list(reference));
    let names = |d: &[Value]| -> Vec<String> {
        d.iter()
            .map(|t| t["name"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        names(&c),
        names(&r),
        "{}: tensor names/order",
        child.display()
    );
    let parents: Vec<(&str, HashMap<String, Value>)> = parents
        .iter()
        .map(|(n, p)| (*n, dump(Path::new(p))))
        .collect();
    let mut wrong = Vec::new();
    for (ct, rt) in c.iter().zip(&r) {
        for field in ["type", "shape", "sha256"] {
            if ct[field] != rt[field] {
                wrong.push(format!(
                    "{}: {field} {} (child: {} bytes), want {} ({} bytes)",
                    ct["name"],
                    ct[field],
                    whose(ct, &parents),
                    rt[field],
                    whose(rt, &parents)
                ));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "{} differs from the oracle's child:\n{}",
        child.display(),
        wrong.join("\n")
    );
}

/// (name, shape) of every tensor, in file order.
fn names_and_shapes(model: &Path) -> Vec<(String, Value)> {
    dump_list(model)
        .into_iter()
        .map(|t| (t["name"].as_str().unwrap().to_string(), t["shape"].clone()))
        .collect()
}

fn assert_verify_ok(child: &Path, parents: &[String], recipe: &Path) {
    let mut args = vec!["verify".to_string(), child.display().to_string()];
    for p in parents {
        args.extend(["--parent".to_string(), p.clone()]);
    }
    args.extend(["--recipe".to_string(), recipe.display().to_string()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = run(&args);
    assert_eq!(
        o.status.code(),
        Some(0),
        "verify {}: {}{}",
        child.display(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn r1t_preset_on_fused_parents_takes_every_routed_expert() {
    if !have(
        "r1t_preset_on_fused_parents_takes_every_routed_expert",
        &[Oracle::GgufPy, Oracle::Llama],
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (v3, r1) = (
        fixture_arg("v3-fused-q3mix.gguf"),
        fixture_arg("r1-fused-q3mix.gguf"),
    );
    let (dv3, dr1) = (dump(Path::new(&v3)), dump(Path::new(&r1)));
    for n in [
        "blk.1.ffn_gate_up_exps.weight",
        "blk.1.ffn_down_exps.weight",
    ] {
        assert_ne!(
            dv3[n]["sha256"], dr1[n]["sha256"],
            "{n}: the parents differ"
        );
    }
    assert!(
        !dv3.contains_key("blk.1.ffn_gate_exps.weight"),
        "fused layout"
    );
    let reference = assemble(
        dir.path(),
        "reference.gguf",
        &v3,
        &["--take".into(), format!("{ROUTED_ORACLE}={r1}")],
    );
    let recipe = repo().join("mappings/deepseek-r1t-chimera.toml");
    let parents = [format!("v3={v3}"), format!("r1={r1}")];
    let child = dir.path().join("chimera.gguf");
    SpliceCmd::new("splice")
        .args(&[
            "--parent",
            &parents[0],
            "--parent",
            &parents[1],
            "--recipe",
            recipe.to_str().unwrap(),
            "-o",
            child.to_str().unwrap(),
        ])
        .quiet()
        .ok();
    // Before routed-expert roles, the preset's `ffn_(gate|up|down)_exps` missed
    // ffn_gate_up_exps: the child had v3's gate/up experts with r1's down experts, exit 0.
    assert_same_tensors(&child, &reference, &[("v3", &v3), ("r1", &r1)]);
    assert_verify_ok(&child, &parents, &recipe);
    let (got, want) = (llama_probe(&child), llama_probe(&reference));
    assert_eq!(got["tokens"], want["tokens"]);
    assert_eq!(got["logits"], want["logits"]);
    assert_ne!(
        want["logits"],
        llama_probe(Path::new(&v3))["logits"],
        "the experts matter"
    );
}

/// Splices `base` + `donor` with a recipe whose one rule takes the routed experts (all, or
/// `experts`) from the donor by role, where the donor's gate/up layout differs from the base's,
/// and checks the child against the gguf-py oracle, `verify` and llama.cpp. `twin`: the same
/// chimera's (base, donor) in the separate layout, whose llama.cpp output the child must match.
fn cross_layout_chimera(base: &str, donor: &str, experts: Option<&str>, twin: (&str, &str)) {
    let dir = tempfile::tempdir().unwrap();
    let (base, donor) = (fixture_arg(base), fixture_arg(donor));
    let (twin_base, twin_donor) = (fixture_arg(twin.0), fixture_arg(twin.1));
    let recipe = dir.path().join("routed.toml");
    let mut text = String::from(
        "[recipe]\nparents = [\"v3\", \"r1\"]\nbase = \"v3\"\n\n\
         [[rules]]\nrole = \"routed_experts\"\nfrom = \"r1\"\n",
    );
    if let Some(e) = experts {
        text.push_str(&format!("experts = \"{e}\"\n"));
    }
    std::fs::write(&recipe, text).unwrap();
    let parents = [format!("v3={base}"), format!("r1={donor}")];
    let child = dir.path().join("child.gguf");
    SpliceCmd::new("splice")
        .args(&[
            "--parent",
            &parents[0],
            "--parent",
            &parents[1],
            "--recipe",
            recipe.to_str().unwrap(),
            "-o",
            child.to_str().unwrap(),
        ])
        .quiet()
        .ok();

    // The base's layout: its tensor names and shapes, in its order.
    assert_eq!(
        names_and_shapes(&child),
        names_and_shapes(Path::new(&base)),
        "the child keeps the base's layout"
    );
    assert_verify_ok(&child, &parents, &recipe);
    let take = |donor: &str| match experts {
        None => vec!["--take".to_string(), format!("{ROUTED_ORACLE}={donor}")],
        Some(e) => vec![
            "--take-experts".to_string(),
            format!("{ROUTED_ORACLE}={donor}:{e}"),
        ],
    };
    let reference = assemble(dir.path(), "reference.gguf", &base, &take(&donor));
    assert_same_tensors(&child, &reference, &[("v3", &base), ("r1", &donor)]);
    let (got, want) = (llama_probe(&child), llama_probe(&reference));
    assert_eq!(got["tokens"], want["tokens"]);
    assert_eq!(got["logits"], want["logits"]);

    // The same chimera from parents that share the separate layout.
    let twin = assemble(dir.path(), "twin.gguf", &twin_base, &take(&twin_donor));
    let twin_out = llama_probe(&twin);
    assert_eq!(
        got["tokens"], twin_out["tokens"],
        "greedy tokens of the twin"
    );
    // Q3_K quantizes row by row, so the fused fixtures' gate and up halves are byte-identical
    // to the separate ones (fixtures/README.md): the logits are bit-identical too.
    assert_eq!(got["logits"], twin_out["logits"], "logits of the twin");
    assert_ne!(
        got["logits"],
        llama_probe(Path::new(&base))["logits"],
        "the experts matter"
    );
}

#[test]
fn fused_donor_gives_all_routed_experts_to_a_separate_base() {
    if !have(
        "fused_donor_gives_all_routed_experts_to_a_separate_base",
        &[Oracle::GgufPy, Oracle::Llama],
    ) {
        return;
    }
    cross_layout_chimera(
        "v3-q3mix.gguf",
        "r1-fused-q3mix.gguf",
        None,
        ("v3-q3mix.gguf", "r1-q3mix.gguf"),
    );
}

#[test]
fn fused_donor_gives_experts_0_1_to_a_separate_base() {
    if !have(
        "fused_donor_gives_experts_0_1_to_a_separate_base",
        &[Oracle::GgufPy, Oracle::Llama],
    ) {
        return;
    }
    cross_layout_chimera(
        "v3-q3mix.gguf",
        "r1-fused-q3mix.gguf",
        Some("0-1"),
        ("v3-q3mix.gguf", "r1-q3mix.gguf"),
    );
}

#[test]
fn separate_donor_gives_all_routed_experts_to_a_fused_base() {
    if !have(
        "separate_donor_gives_all_routed_experts_to_a_fused_base",
        &[Oracle::GgufPy, Oracle::Llama],
    ) {
        return;
    }
    cross_layout_chimera(
        "v3-fused-q3mix.gguf",
        "r1-q3mix.gguf",
        None,
        ("v3-q3mix.gguf", "r1-q3mix.gguf"),
    );
}

#[test]
fn separate_donor_gives_experts_0_1_to_a_fused_base() {
    if !have(
        "separate_donor_gives_experts_0_1_to_a_fused_base",
        &[Oracle::GgufPy, Oracle::Llama],
    ) {
        return;
    }
    cross_layout_chimera(
        "v3-fused-q3mix.gguf",
        "r1-q3mix.gguf",
        Some("0-1"),
        ("v3-q3mix.gguf", "r1-q3mix.gguf"),
    );
}
