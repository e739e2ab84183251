//! Mixing with ggmls found at run time: a second ggml (PyPI's libggml-python 0.20.2, in the
//! gguf-py venv) against the first (the shared libggml-base of the llama.cpp the tests
//! build, GGUF_SPLICE_GGML); the Python route of the search; the record a child keeps of its
//! ggml and what `verify` makes of a child another ggml mixed.
//!
//! Needs both ggmls and the gguf-py venv (scripts/test.sh sets GGUF_SPLICE_GGML and
//! GGUF_SPLICE_GGML_PYPI); `have` skips the tests without them, or fails them under
//! GGUF_SPLICE_REQUIRE_ORACLES=1.

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::common::*;
use gguf_splice::gguf::Model;
use serde_json::Value;

/// The second ggml: libggml-python's libggml-base.so, from GGUF_SPLICE_GGML_PYPI or found
/// beside the gguf-py venv's python.
fn pypi_ggml() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("GGUF_SPLICE_GGML_PYPI") {
        return Some(PathBuf::from(p));
    }
    let out = Command::new(oracle_python())
        .args([
            "-c",
            "import importlib.util as u; print(list(u.find_spec('libggml').submodule_search_locations)[0])",
        ])
        .output()
        .ok()?;
    let dir = String::from_utf8(out.stdout).ok()?;
    let lib = Path::new(dir.trim()).join("lib64/libggml-base.so");
    lib.is_file().then_some(lib)
}

/// Both ggmls, or None (skipped, or a failure under GGUF_SPLICE_REQUIRE_ORACLES=1).
fn two_ggmls(test: &str) -> Option<(PathBuf, PathBuf)> {
    if !have(test, &[Oracle::GgufPy, Oracle::Ggml]) {
        return None;
    }
    let first = gguf_splice::ggml_lib::library()
        .unwrap()
        .path()
        .to_path_buf();
    match pypi_ggml() {
        Some(second) => Some((first, second)),
        None => {
            assert!(
                std::env::var("GGUF_SPLICE_REQUIRE_ORACLES").as_deref() != Ok("1"),
                "{test}: no libggml-python in the gguf-py venv (bash fixtures/setup-python.sh)"
            );
            eprintln!("SKIPPED {test}: needs libggml-python in the gguf-py venv");
            None
        }
    }
}

/// `gguf-splice ARGS --ggml GGML`.
fn run_with(ggml: &Path, args: &[&str]) -> Output {
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--ggml", ggml.to_str().unwrap()]);
    run(&all)
}

/// Splice the 75/25 routed-experts mix of the fixtures to `ty` with `ggml`.
fn mix(dir: &Path, ty: &str, ggml: &Path, out: &str) -> PathBuf {
    let r = dir.join(format!("{out}.toml"));
    std::fs::write(
        &r,
        format!(
            "[[rules]]\nrole = 'routed_experts'\nmix = {{ r1 = 0.75, v3 = 0.25 }}\ntype = '{ty}'\n"
        ),
    )
    .unwrap();
    let out = dir.join(out);
    let o = run_with(
        ggml,
        &[
            "splice",
            "--parent",
            &format!("v3={}", fixture("v3-q3mix.gguf").display()),
            "--parent",
            &format!("r1={}", fixture("r1-q3mix.gguf").display()),
            "--recipe",
            r.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "-q",
        ],
    );
    assert_ok(&o);
    out
}

fn experts_of(model: &Path) -> Vec<(String, Vec<u8>)> {
    let m = Model::open(model).unwrap();
    m.tensors()
        .filter(|t| is_routed_expert(&t.info.name))
        .map(|t| (t.info.name.clone(), tensor_bytes(&m, &t.info.name)))
        .collect()
}

fn record(model: &Path) -> String {
    let m = Model::open(model).unwrap();
    m.get(gguf_splice::ggml_lib::RECORD_KEY)
        .and_then(|v| v.as_str())
        .expect("the child records its ggml")
        .to_string()
}

#[test]
fn a_second_ggml_mixes_the_k_quants_to_the_same_bytes() {
    let Some((first, second)) = two_ggmls("a_second_ggml_mixes_the_k_quants_to_the_same_bytes")
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for ty in [
        "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "Q8_0", "Q4_0", "IQ4_XS",
    ] {
        let a = mix(d, ty, &first, &format!("{ty}-a.gguf"));
        let b = mix(d, ty, &second, &format!("{ty}-b.gguf"));
        let (ea, eb) = (experts_of(&a), experts_of(&b));
        assert_eq!(ea.len(), 6);
        for ((name, x), (_, y)) in ea.iter().zip(&eb) {
            assert!(x == y, "{ty} {name}: the two ggmls quantize differently");
        }
        // Each child names its own ggml, by file name only.
        let (ra, rb) = (record(&a), record(&b));
        assert!(
            rb.starts_with("ggml 0.20.2 (commit ") && rb.ends_with(" libggml-base.so"),
            "{rb}"
        );
        assert_ne!(ra, rb);
        assert!(!ra.contains('/') && !rb.contains('/'), "{ra} {rb}");
    }
}

#[test]
fn python3_finds_libggml_python_when_nothing_else_is_there() {
    if two_ggmls("python3_finds_libggml_python_when_nothing_else_is_there").is_none() {
        return;
    }
    // PATH holds only the venv's python3: no llama.cpp tools, no GGUF_SPLICE_GGML.
    let venv_bin = oracle_python().parent().unwrap().to_path_buf();
    let o = Command::new(BIN)
        .arg("doctor")
        .env_remove("GGUF_SPLICE_GGML")
        .env_remove("LD_LIBRARY_PATH")
        .env("PATH", &venv_bin)
        .output()
        .unwrap();
    assert_ok(&o);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("found by  python3's libggml-python")
            && text.contains("version   0.20.2")
            && text.contains("agree with gguf-splice's table"),
        "{text}"
    );
}

#[test]
fn verify_with_another_ggml_names_both_and_is_not_damage() {
    let Some((first, second)) = two_ggmls("verify_with_another_ggml_names_both_and_is_not_damage")
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let child = mix(d, "Q4_K", &first, "c.gguf");
    // Stand-in for a ggml that quantizes differently: one byte of a mixed expert changed.
    let m = Model::open(&child).unwrap();
    let t = m.tensor("blk.1.ffn_up_exps.weight").unwrap();
    let at = t.file_offset + 100;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&child)
        .unwrap();
    let mut b = [0u8];
    f.read_exact_at(&mut b, at).unwrap();
    f.write_all_at(&[b[0] ^ 1], at).unwrap();
    drop(f);
    let r = d.join("c.gguf.toml");
    let verify = |ggml: &Path| {
        run_with(
            ggml,
            &[
                "verify",
                child.to_str().unwrap(),
                "--parent",
                &format!("v3={}", fixture("v3-q3mix.gguf").display()),
                "--parent",
                &format!("r1={}", fixture("r1-q3mix.gguf").display()),
                "--recipe",
                r.to_str().unwrap(),
                "--json",
            ],
        )
    };
    // With the ggml that made it: damage, exit 1.
    let o = verify(&first);
    assert_exit(&o, 1);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    let kinds: Vec<&str> = v["recipe"]["mismatches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["bytes_differ"], "{v}");
    // With another: "made by another ggml", naming both, and not a failure.
    let o = verify(&second);
    assert_exit(&o, 0);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    let ms = v["recipe"]["mismatches"].as_array().unwrap();
    assert_eq!(ms.len(), 1, "{v}");
    assert_eq!(ms[0]["kind"], "made_by_other_ggml");
    assert_eq!(ms[0]["tensor"], "blk.1.ffn_up_exps.weight");
    assert_eq!(ms[0]["made_by"], record(&child).as_str());
    assert!(
        ms[0]["checked_with"]
            .as_str()
            .unwrap()
            .starts_with("ggml 0.20.2")
    );
    // The text report warns with both names.
    let o = run_with(
        &second,
        &[
            "verify",
            child.to_str().unwrap(),
            "--parent",
            &format!("v3={}", fixture("v3-q3mix.gguf").display()),
            "--parent",
            &format!("r1={}", fixture("r1-q3mix.gguf").display()),
            "--recipe",
            r.to_str().unwrap(),
        ],
    );
    assert_exit(&o, 0);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("warning: the child's mixed tensors were made by ggml ")
            && text.contains("checked here with ggml 0.20.2")
            && text.contains("made by another ggml"),
        "{text}"
    );
}
