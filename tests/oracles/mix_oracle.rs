//! Mixed tensors against oracles that share no code with gguf-splice:
//! - F32 parents: every mixed tensor equals numpy's `w1*A + w2*B` (float32, in order), and
//!   every other tensor the base's (tests/oracle/mix.py, gguf-py + numpy);
//! - quantized outputs (Q8_0, Q4_0, Q4_K, Q5_K, Q6_K; IQ2_XXS and Q4_K with a GGUF imatrix,
//!   IQ4_XS with a legacy .dat one): byte-equal to what real `llama-quantize` makes of the
//!   numpy mix of gguf-py's dequantized parents, with the same imatrix;
//! - real llama.cpp loads mixed children of the tiny deepseek2 fixtures (two and three
//!   parents) and generates the same tokens and logits as a reference child assembled by
//!   gguf-py from llama-quantize's tensors.
//!
//! Needs a ggml (GGUF_SPLICE_GGML), the gguf-py venv and llama.cpp (scripts/test.sh provides all;
//! `have` skips the tests without them, or fails them under GGUF_SPLICE_REQUIRE_ORACLES=1).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::*;
use serde_json::Value;

const EXPERTS: &str = r"ffn_(gate|up|down)_exps\.weight";

fn check(out: std::process::Output, what: &str) -> Vec<u8> {
    assert!(
        out.status.success(),
        "{what}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Run a llama.cpp tool, in `cwd`.
fn llama(tool: &str, args: &[&str], cwd: &Path) -> Vec<u8> {
    let out = Command::new(llama_bin().join(tool))
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("llama.cpp tool runs");
    check(out, &format!("{tool} {args:?}"))
}

/// gguf-py's (type name, sha256) of each tensor.
fn dump(model: &Path) -> HashMap<String, (String, String)> {
    let v: Value =
        serde_json::from_slice(&oracle_script("dump.py", &[model.to_str().unwrap()])).unwrap();
    v["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["name"].as_str().unwrap().to_string(),
                (
                    t["type_name"].as_str().unwrap().to_string(),
                    t["sha256"].as_str().unwrap().to_string(),
                ),
            )
        })
        .collect()
}

fn splice(dir: &Path, parents: &[(&str, &Path)], recipe: &str, out: &str) -> PathBuf {
    let r = dir.join(format!("{out}.toml"));
    std::fs::write(&r, recipe).unwrap();
    let out = dir.join(out);
    SpliceCmd::new("splice")
        .parents(parents)
        .arg("--recipe")
        .arg(&r)
        .arg("-o")
        .arg(&out)
        .quiet()
        .ok();
    out
}

/// The numpy mix (tests/oracle/mix.py) of `parents` (path, weight) for the routed experts,
/// everything else the base's, dequantized: an all-F32 model.
fn numpy_mix(dir: &Path, base: &Path, parents: &[(&Path, f32)], out: &str) -> PathBuf {
    let list: Vec<String> = parents
        .iter()
        .map(|(p, w)| format!("{}:{w}", p.display()))
        .collect();
    let out = dir.join(out);
    oracle_script(
        "mix.py",
        &[
            "--base",
            base.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--mix",
            &format!("{EXPERTS}={}", list.join(",")),
        ],
    );
    out
}

/// llama-quantize of an F32 model: the routed experts to `ty` (with `imatrix`), the rest to
/// Q8_0 (`--pure`).
fn llama_quantize(
    dir: &Path,
    f32_model: &Path,
    ty: &str,
    imatrix: Option<&Path>,
    out: &str,
) -> PathBuf {
    let out = dir.join(out);
    let tt = format!("{EXPERTS}={}", ty.to_lowercase());
    let mut args = vec!["--pure", "--tensor-type", &tt];
    if let Some(m) = imatrix {
        args.extend(["--imatrix", m.to_str().unwrap()]);
    }
    args.extend([
        f32_model.to_str().unwrap(),
        out.to_str().unwrap(),
        "Q8_0",
        "2",
    ]);
    llama("llama-quantize", &args, dir);
    out
}

fn assert_experts_equal(child: &Path, reference: &Path, ty: &str) {
    let (c, r) = (dump(child), dump(reference));
    let mut n = 0;
    for (name, (cty, csha)) in &c {
        if !name.contains("_exps.") {
            continue;
        }
        n += 1;
        assert_eq!(cty, ty, "{name}: type");
        assert_eq!(
            &r[name],
            &(cty.clone(), csha.clone()),
            "{name}: {ty} bytes differ from llama-quantize's"
        );
    }
    assert_eq!(n, 6);
}

/// A tiny F32 deepseek2 model as fixtures/make-fixtures.sh makes them.
fn f32_model(dir: &Path, flavor: &str, seed: &str) -> PathBuf {
    let out = dir.join(format!("{flavor}-f32.gguf"));
    python_script(
        "fixtures/make_tiny_deepseek2.py",
        &[
            "--out",
            out.to_str().unwrap(),
            "--seed",
            seed,
            "--name",
            &format!("Tiny-{flavor}"),
            "--flavor",
            flavor,
        ],
    );
    out
}

#[test]
fn f32_parents_mix_exactly_like_numpy() {
    if !have(
        "f32_parents_mix_exactly_like_numpy",
        &[Oracle::GgufPy, Oracle::Ggml],
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (v3, r1) = (
        f32_model(dir.path(), "v3", "3"),
        f32_model(dir.path(), "r1", "11"),
    );
    // 0.3 and 0.7 are not exact in binary: each is rounded to f32, as numpy's float32 does.
    let child = splice(
        dir.path(),
        &[("v3", &v3), ("r1", &r1)],
        "[[rules]]\nrole = 'routed_experts'\nmix = { r1 = 0.3, v3 = 0.7 }\n",
        "child.gguf",
    );
    let reference = numpy_mix(dir.path(), &v3, &[(&r1, 0.3), (&v3, 0.7)], "ref.gguf");
    let (c, r) = (dump(&child), dump(&reference));
    assert_eq!(c.len(), 52);
    for (name, t) in &c {
        assert_eq!(t.0, "F32", "{name}");
        assert_eq!(t, &r[name], "{name}");
    }
    let v = dump(&v3);
    assert_ne!(c["blk.1.ffn_up_exps.weight"], v["blk.1.ffn_up_exps.weight"]);
}

#[test]
fn quantized_mixes_are_llama_quantizes_bytes() {
    if !have(
        "quantized_mixes_are_llama_quantizes_bytes",
        &[Oracle::GgufPy, Oracle::Llama, Oracle::Ggml],
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (v3, r1) = (fixture("v3-q3mix.gguf"), fixture("r1-q3mix.gguf"));
    let parents = [("v3", v3.as_path()), ("r1", r1.as_path())];
    let mixed = numpy_mix(d, &v3, &[(&r1, 0.75), (&v3, 0.25)], "mix-f32.gguf");
    for ty in ["Q8_0", "Q4_0", "Q4_K", "Q5_K", "Q6_K"] {
        let recipe = format!(
            "[[rules]]\nrole = 'routed_experts'\nmix = {{ r1 = 0.75, v3 = 0.25 }}\ntype = '{ty}'\n"
        );
        let child = splice(d, &parents, &recipe, &format!("{ty}.gguf"));
        let reference = llama_quantize(d, &mixed, ty, None, &format!("ref-{ty}.gguf"));
        assert_experts_equal(&child, &reference, ty);
    }

    // Importance matrices made by llama-imatrix on the F32 "R1", in both formats.
    let r1_f32 = f32_model(d, "r1", "11");
    let text = fixture("imatrix-text.txt");
    for (file, format) in [("r1.imatrix.gguf", "gguf"), ("r1.imatrix.dat", "dat")] {
        llama(
            "llama-imatrix",
            &[
                "-m",
                r1_f32.to_str().unwrap(),
                "-f",
                text.to_str().unwrap(),
                "-o",
                d.join(file).to_str().unwrap(),
                "--no-repack", // AMX buffer types abort the graph (see probe.cpp)
                "--output-format",
                format,
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
            ],
            d,
        );
    }
    for (ty, imatrix) in [
        ("IQ2_XXS", "r1.imatrix.gguf"),
        ("Q4_K", "r1.imatrix.gguf"),
        ("IQ4_XS", "r1.imatrix.dat"),
    ] {
        let recipe = format!(
            "[[rules]]\nrole = 'routed_experts'\nmix = {{ r1 = 0.75, v3 = 0.25 }}\ntype = '{ty}'\nimatrix = '{imatrix}'\n"
        );
        let child = splice(d, &parents, &recipe, &format!("{ty}-im.gguf"));
        let reference = llama_quantize(
            d,
            &mixed,
            ty,
            Some(&d.join(imatrix)),
            &format!("ref-{ty}-im.gguf"),
        );
        assert_experts_equal(&child, &reference, ty);
        // The imatrix matters: without it the bytes differ (IQ2_XXS cannot go without).
        if ty != "IQ2_XXS" {
            let plain = llama_quantize(d, &mixed, ty, None, &format!("ref-{ty}-plain.gguf"));
            assert_ne!(
                dump(&plain)["blk.1.ffn_up_exps.weight"],
                dump(&reference)["blk.1.ffn_up_exps.weight"],
                "{ty}"
            );
        }
    }
}

/// The base with its routed experts taken from `donor` by gguf-py (assemble.py).
fn assemble(dir: &Path, base: &Path, donor: &Path, out: &str) -> PathBuf {
    assemble_reference(
        base,
        &dir.join(out),
        &[("--take", format!("{EXPERTS}={}", donor.display()))],
    )
}

#[test]
fn mixed_children_generate_in_llama_cpp_like_the_reference() {
    if !have(
        "mixed_children_generate_in_llama_cpp_like_the_reference",
        &[Oracle::GgufPy, Oracle::Llama, Oracle::Ggml],
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (v3, r1, r1iq) = (
        fixture("v3-q3mix.gguf"),
        fixture("r1-q3mix.gguf"),
        fixture("r1-iq2mix.gguf"),
    );
    let base_logits = llama_probe(&v3)["logits"].clone();
    // Two parents, requantized to Q4_K; three parents (one stored as IQ2_XXS), written in
    // the base's Q3_K.
    type Case<'a> = (&'a str, Vec<(&'a str, &'a Path, f32)>, &'a str);
    let cases: [Case; 2] = [
        ("two", vec![("r1", &r1, 0.75), ("v3", &v3, 0.25)], "Q4_K"),
        (
            "three",
            vec![("v3", &v3, 0.2), ("r1", &r1, 0.5), ("r1iq", &r1iq, 0.3)],
            "Q3_K",
        ),
    ];
    for (case, parents, ty) in cases {
        let weights: Vec<String> = parents
            .iter()
            .map(|(n, _, w)| format!("{n} = {w}"))
            .collect();
        let ty_line = if ty == "Q4_K" { "type = 'Q4_K'\n" } else { "" };
        let recipe = format!(
            "[recipe]\nbase = 'v3'\n[[rules]]\nrole = 'routed_experts'\nmix = {{ {} }}\n{ty_line}",
            weights.join(", ")
        );
        let named: Vec<(&str, &Path)> = parents.iter().map(|(n, p, _)| (*n, *p)).collect();
        let child = splice(d, &named, &recipe, &format!("{case}.gguf"));
        let paths: Vec<(&Path, f32)> = parents.iter().map(|(_, p, w)| (*p, *w)).collect();
        let mixed = numpy_mix(d, &v3, &paths, &format!("{case}-f32.gguf"));
        let quantized = llama_quantize(d, &mixed, ty, None, &format!("{case}-q.gguf"));
        assert_experts_equal(&child, &quantized, ty);
        let reference = assemble(d, &v3, &quantized, &format!("{case}-ref.gguf"));
        let (got, want) = (llama_probe(&child), llama_probe(&reference));
        assert_eq!(
            got["tokens"].as_array().unwrap().len(),
            8,
            "{case}: generates"
        );
        assert_eq!(got["tokens"], want["tokens"], "{case}");
        assert_eq!(got["logits"], want["logits"], "{case}");
        assert_ne!(
            got["logits"], base_logits,
            "{case}: the mix changes the model"
        );
    }
}
