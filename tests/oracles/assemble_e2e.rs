//! `assemble` end to end with real llama.cpp and gguf-py, on the real fixtures:
//! - an MoE of N copies of a tiny dense llama (and qwen3 -> qwen3moe) generates the dense
//!   model's greedy tokens for any router, logits within float noise;
//! - MoEs of two different fine-tunes load and generate, each expert the bytes of its parent;
//! - pruning the deepseek2 fixture (all experts: byte-identical tensors; half: loads, shapes
//!   checked by gguf-py; the most used by a llama-imatrix matrix, checked against gguf-py's
//!   reading of the counts) and uniting two deepseek2 fixtures (summed expert count);
//! - heterogeneous real parents refused with the reason, nothing written.
//!
//! Needs llama.cpp built by fixtures/build-llama.sh and the gguf-py venv (scripts/test.sh).

use std::collections::HashMap;
use std::io::Write as _;
use std::path::Path;
use std::process::Command;

use crate::common::*;
use serde_json::Value;

fn python(script: &str, args: &[&str]) -> Value {
    serde_json::from_slice(&oracle_script(script, args)).unwrap()
}

/// gguf-py's view: keys by name, tensors by name (type, shape, sha256, per-expert sha256).
struct Dump {
    kv: HashMap<String, Value>,
    tensors: Vec<Value>,
}

impl Dump {
    fn of(model: &Path) -> Dump {
        let v = python("dump.py", &["--experts", model.to_str().unwrap()]);
        Dump {
            kv: v["kv"]
                .as_array()
                .unwrap()
                .iter()
                .map(|k| (k["key"].as_str().unwrap().to_string(), k["value"].clone()))
                .collect(),
            tensors: v["tensors"].as_array().unwrap().clone(),
        }
    }

    fn tensor(&self, name: &str) -> &Value {
        self.tensors
            .iter()
            .find(|t| t["name"] == name)
            .unwrap_or_else(|| panic!("no {name}"))
    }
}

fn assemble(args: &[&str]) {
    let mut all = vec!["assemble", "-q"];
    all.extend_from_slice(args);
    assert_ok(&run(&all));
}

/// The largest difference between two probes' logits, step by step.
fn max_logit_diff(a: &Value, b: &Value) -> f64 {
    let la = a["logits"].as_array().unwrap();
    let lb = b["logits"].as_array().unwrap();
    la.iter()
        .zip(lb)
        .flat_map(|(x, y)| {
            x.as_array()
                .unwrap()
                .iter()
                .zip(y.as_array().unwrap())
                .map(|(p, q)| (p.as_f64().unwrap() - q.as_f64().unwrap()).abs())
        })
        .fold(0.0, f64::max)
}

/// A NumPy `.npy` of F32 `[layers, experts, n_embd]`, values from a little LCG.
fn npy_router(path: &Path, layers: u64, experts: u64, n_embd: u64) {
    let mut h = format!(
        "{{'descr': '<f4', 'fortran_order': False, 'shape': ({layers}, {experts}, {n_embd}), }}"
    );
    while (10 + h.len() + 1) % 64 != 0 {
        h.push(' ');
    }
    h.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend((h.len() as u16).to_le_bytes());
    out.extend(h.as_bytes());
    let mut x = 12345u32;
    for _ in 0..layers * experts * n_embd {
        x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        out.extend(((x >> 8) as f32 / (1 << 24) as f32 - 0.5).to_le_bytes());
    }
    std::fs::write(path, out).unwrap();
}

fn note(text: String) {
    // Written to the real stderr: the figures go into the report.
    let _ = writeln!(std::io::stderr(), "{text}");
}

#[test]
fn copies_of_one_dense_model_generate_its_tokens_for_any_router() {
    if !have(
        "copies_of_one_dense_model_generate_its_tokens_for_any_router",
        &[Oracle::GgufPy, Oracle::Llama],
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let npy = dir.path().join("gates.npy");
    npy_router(&npy, 2, 4, 256);
    for (arch, moe) in [("llama", "llama"), ("qwen3", "qwen3moe")] {
        let dense = fixture(&format!("{arch}-ft-a-q4km.gguf"));
        let want = llama_probe(&dense);
        let parent = format!("a={}", dense.display());
        // (Three copies too: llama.cpp takes expert counts that are not powers of two.)
        for (router, used, copies) in [
            ("uniform", "2", "a,a,a,a"),
            ("random:7", "2", "a,a,a,a"),
            ("random:123", "1", "a,a,a"),
            ("random:9", "3", "a,a,a"),
            (npy.to_str().unwrap(), "3", "a,a,a,a"),
        ] {
            let out = dir.path().join(format!("{arch}-moe.gguf"));
            let o = out.to_str().unwrap();
            assemble(&[
                "--parent",
                &parent,
                "--experts",
                copies,
                "--router",
                router,
                "--experts-used",
                used,
                "-o",
                o,
                "--force",
            ]);
            let got = llama_probe(&out);
            assert_eq!(
                got["tokens"], want["tokens"],
                "{arch} router {router}, {used} used"
            );
            let diff = max_logit_diff(&got, &want);
            let n = copies.split(',').count();
            note(format!(
                "assemble e2e: {arch} -> {moe}, {n} copies, router {router}, {used} used: same greedy tokens, max |logit diff| {diff:.3e}"
            ));
            assert!(
                diff < 1e-3,
                "{arch} router {router}: logits differ by {diff}"
            );
        }
        // gguf-py reads the MoE as llama.cpp expects it.
        let out = dir.path().join(format!("{arch}-moe.gguf"));
        let d = Dump::of(&out);
        assert_eq!(d.kv["general.architecture"], moe);
        assert_eq!(d.kv[&format!("{moe}.expert_count")], 4);
        assert_eq!(d.kv[&format!("{moe}.expert_used_count")], 3);
        if moe == "qwen3moe" {
            assert_eq!(d.kv["qwen3moe.expert_feed_forward_length"], 256);
        }
        assert_eq!(
            d.tensor("blk.1.ffn_gate_inp.weight")["shape"],
            serde_json::json!([256, 4])
        );
        assert_eq!(
            d.tensor("blk.1.ffn_down_exps.weight")["shape"],
            serde_json::json!([256, 256, 4])
        );
        let p = Dump::of(&dense);
        for w in ["gate", "up", "down"] {
            let t = d.tensor(&format!("blk.0.ffn_{w}_exps.weight"));
            let src = &p.tensor(&format!("blk.0.ffn_{w}.weight"))["sha256"];
            assert!(
                t["experts"].as_array().unwrap().iter().all(|e| e == src),
                "{arch} {w}"
            );
        }
    }
}

#[test]
fn moes_of_two_fine_tunes_load_and_generate() {
    if !have(
        "moes_of_two_fine_tunes_load_and_generate",
        &[Oracle::GgufPy, Oracle::Llama],
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for arch in ["llama", "qwen3"] {
        let (a, b) = (
            fixture(&format!("{arch}-ft-a-q4km.gguf")),
            fixture(&format!("{arch}-ft-b-q4km.gguf")),
        );
        let (pa, pb) = (llama_probe(&a), llama_probe(&b));
        let out = dir.path().join(format!("{arch}-ab.gguf"));
        let o = out.to_str().unwrap();
        let parents = [format!("a={}", a.display()), format!("b={}", b.display())];
        for used in ["1", "2"] {
            assemble(&[
                "--parent",
                &parents[0],
                "--parent",
                &parents[1],
                "--router",
                "random:7",
                "--experts-used",
                used,
                "-o",
                o,
                "--force",
            ]);
            let got = llama_probe(&out);
            assert_eq!(got["tokens"].as_array().unwrap().len(), 8, "{arch}");
            assert!(
                got["logits"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .flat_map(|l| l.as_array().unwrap())
                    .all(|x| x.is_f64()),
                "{arch}: non-finite logits"
            );
            if used == "2" {
                assert_ne!(got["logits"], pa["logits"], "{arch}: b's expert matters");
                assert_ne!(got["logits"], pb["logits"], "{arch}: a's expert matters");
            }
            note(format!(
                "assemble e2e: {arch} fine-tunes a+b, {used} used: tokens {} (a alone {}, b alone {})",
                got["tokens"], pa["tokens"], pb["tokens"]
            ));
        }
        let d = Dump::of(&out);
        let (da, db) = (Dump::of(&a), Dump::of(&b));
        for l in 0..2 {
            for w in ["gate", "up", "down"] {
                let e = &d.tensor(&format!("blk.{l}.ffn_{w}_exps.weight"))["experts"];
                let dense = format!("blk.{l}.ffn_{w}.weight");
                assert_eq!(e[0], da.tensor(&dense)["sha256"]);
                assert_eq!(e[1], db.tensor(&dense)["sha256"]);
                assert_ne!(e[0], e[1]);
            }
        }
        let v = run(&[
            "verify",
            o,
            "--assembled",
            "--parent",
            &parents[0],
            "--parent",
            &parents[1],
            "--router",
            "random:7",
            "--experts-used",
            "2",
        ]);
        assert_ok(&v);
    }
}

/// Per expert of each `*_exps` tensor: its sha256, by tensor name.
fn experts(d: &Dump) -> HashMap<String, Vec<Value>> {
    d.tensors
        .iter()
        .filter_map(|t| {
            Some((
                t["name"].as_str()?.to_string(),
                t["experts"].as_array()?.clone(),
            ))
        })
        .collect()
}

#[test]
fn pruned_deepseek2_keeps_its_bytes_and_runs() {
    if !have(
        "pruned_deepseek2_keeps_its_bytes_and_runs",
        &[Oracle::GgufPy, Oracle::Llama],
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let v3 = fixture("v3-q3mix.gguf");
    let parent = format!("v3={}", v3.display());
    let pd = Dump::of(&v3);
    // Every expert kept: every tensor byte-identical, in the same order.
    let same = dir.path().join("same.gguf");
    assemble(&[
        "--parent",
        &parent,
        "--keep",
        "v3:0-3",
        "-o",
        same.to_str().unwrap(),
    ]);
    let d = Dump::of(&same);
    let key = |t: &Value| {
        (
            t["name"].clone(),
            t["type"].clone(),
            t["shape"].clone(),
            t["sha256"].clone(),
        )
    };
    assert_eq!(
        d.tensors.iter().map(key).collect::<Vec<_>>(),
        pd.tensors.iter().map(key).collect::<Vec<_>>()
    );
    assert_eq!(
        llama_probe(&same),
        llama_probe(&v3),
        "the same tensors generate the same"
    );
    // Half the experts: 1 and 3.
    let half = dir.path().join("half.gguf");
    assemble(&[
        "--parent",
        &parent,
        "--keep",
        "v3:1,3",
        "-o",
        half.to_str().unwrap(),
    ]);
    let d = Dump::of(&half);
    assert_eq!(d.kv["deepseek2.expert_count"], 2);
    for l in 1..3 {
        assert_eq!(
            d.tensor(&format!("blk.{l}.ffn_gate_inp.weight"))["shape"],
            serde_json::json!([256, 2])
        );
        assert_eq!(
            d.tensor(&format!("blk.{l}.exp_probs_b.bias"))["shape"],
            serde_json::json!([2])
        );
        assert_eq!(
            d.tensor(&format!("blk.{l}.ffn_up_exps.weight"))["shape"],
            serde_json::json!([256, 256, 2])
        );
    }
    let (pe, he) = (experts(&pd), experts(&d));
    for (name, e) in &he {
        assert_eq!(e, &vec![pe[name][1].clone(), pe[name][3].clone()], "{name}");
    }
    let p = llama_probe(&half);
    assert_eq!(p["tokens"].as_array().unwrap().len(), 8);
    note(format!(
        "assemble e2e: deepseek2 pruned to experts 1,3: tokens {}",
        p["tokens"]
    ));
}

#[test]
fn keep_top_keeps_the_experts_the_imatrix_counts_most() {
    if !have(
        "keep_top_keeps_the_experts_the_imatrix_counts_most",
        &[Oracle::GgufPy, Oracle::Llama],
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let v3 = fixture("v3-q3mix.gguf");
    let imatrix = dir.path().join("v3.imatrix.gguf");
    let o = Command::new(llama_bin().join("llama-imatrix"))
        .current_dir(repo().join("fixtures"))
        .args([
            "-m",
            v3.to_str().unwrap(),
            "-f",
            "imatrix-text.txt",
            "-o",
            imatrix.to_str().unwrap(),
        ])
        .args([
            "-c",
            "128",
            "-b",
            "128",
            "--chunks",
            "4",
            "-t",
            "2",
            "--no-ppl",
            "--seed",
            "1",
            // No repacking: on a CPU with AMX its buffer type aborts the graph (see probe.cpp).
            "--no-repack",
        ])
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "llama-imatrix: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    // gguf-py's reading of the counts; the expected experts by the documented rule.
    let counts = python("imatrix_counts.py", &[imatrix.to_str().unwrap()]);
    let out = dir.path().join("top.gguf");
    assemble(&[
        "--parent",
        &format!("v3={}", v3.display()),
        "--keep-top",
        "2",
        "--imatrix",
        imatrix.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    let (pe, ce) = (experts(&Dump::of(&v3)), experts(&Dump::of(&out)));
    for l in 1..3u64 {
        let mut usage = [0f64; 4];
        for (name, c) in counts.as_object().unwrap() {
            if name.starts_with(&format!("blk.{l}.")) && name.contains("_exps.") {
                for (u, x) in usage.iter_mut().zip(c.as_array().unwrap()) {
                    *u += x.as_f64().unwrap();
                }
            }
        }
        assert!(
            usage.iter().sum::<f64>() > 0.0,
            "blk.{l} saw tokens: {counts}"
        );
        let mut idx: Vec<usize> = (0..4).collect();
        idx.sort_by(|&a, &b| usage[b].total_cmp(&usage[a]).then(a.cmp(&b)));
        let mut kept = idx[..2].to_vec();
        kept.sort_unstable();
        note(format!(
            "assemble e2e: blk.{l} expert usage {usage:?} -> kept {kept:?}"
        ));
        for (name, e) in &ce {
            if name.starts_with(&format!("blk.{l}.")) {
                let want: Vec<Value> = kept.iter().map(|&k| pe[name][k].clone()).collect();
                assert_eq!(e, &want, "{name}");
            }
        }
    }
    assert_eq!(llama_probe(&out)["tokens"].as_array().unwrap().len(), 8);
}

#[test]
fn union_of_two_deepseek2_models_loads_with_the_summed_expert_count() {
    if !have(
        "union_of_two_deepseek2_models_loads_with_the_summed_expert_count",
        &[Oracle::GgufPy, Oracle::Llama],
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (v3, r1) = (fixture("v3-q3mix.gguf"), fixture("r1-q3mix.gguf"));
    let out = dir.path().join("union.gguf");
    assemble(&[
        "--parent",
        &format!("v3={}", v3.display()),
        "--parent",
        &format!("r1={}", r1.display()),
        "-o",
        out.to_str().unwrap(),
    ]);
    let d = Dump::of(&out);
    assert_eq!(d.kv["deepseek2.expert_count"], 8);
    assert_eq!(
        d.tensor("blk.2.ffn_gate_inp.weight")["shape"],
        serde_json::json!([256, 8])
    );
    let (ve, re, ue) = (
        experts(&Dump::of(&v3)),
        experts(&Dump::of(&r1)),
        experts(&d),
    );
    for (name, e) in &ue {
        let want: Vec<Value> = ve[name].iter().chain(&re[name]).cloned().collect();
        assert_eq!(e, &want, "{name}");
    }
    let p = llama_probe(&out);
    assert_eq!(p["tokens"].as_array().unwrap().len(), 8);
    assert_ne!(p["logits"], llama_probe(&v3)["logits"]);
    note(format!(
        "assemble e2e: deepseek2 v3 + r1, 8 experts: tokens {}",
        p["tokens"]
    ));
}

#[test]
fn real_heterogeneous_parents_are_refused_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "v3-q3mix.gguf",
            "r1-iq2mix.gguf",
            "quant types: ffn_down_exps.weight is IQ2_XXS",
        ),
        (
            "llama-ft-a-q4km.gguf",
            "qwen3-ft-a-q4km.gguf",
            "architecture: parent 'b' is 'qwen3'",
        ),
    ];
    for (a, b, says) in cases {
        let out = dir.path().join("out.gguf");
        let o = run(&[
            "assemble",
            "--parent",
            &format!("a={}", fixture(a).display()),
            "--parent",
            &format!("b={}", fixture(b).display()),
            "-o",
            out.to_str().unwrap(),
        ]);
        assert_exit(&o, 3);
        assert!(stderr(&o).contains(says), "{a} + {b}: {}", stderr(&o));
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "nothing written"
        );
    }
}
