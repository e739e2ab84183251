//! Against real ik_llama.cpp (fixtures/build-ik-llama.sh): our ik type table equals ik's own C
//! one; `inspect` reads ik's fixtures as ik's own reader does; chimeras of ik parents (the R1T
//! preset, an expert-level rule) and of an ik and a mainline parent load in ik_llama.cpp and
//! generate exactly what an independently assembled child does (tests/oracle/assemble_ik.py:
//! gguf-py, sized by ik's C type table, never by our code). Tensor bytes are compared at the
//! offsets and sizes ik's own gguf reader reports.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::*;
use gguf_splice::ggml_type::{Flavour, GgmlType};
use gguf_splice::layout;
use serde_json::Value;

fn ik(tool: &str, args: &[&Path]) -> String {
    let out = Command::new(ik_llama_bin().join(tool))
        .args(args)
        .output()
        .expect("ik tool runs");
    assert!(
        out.status.success(),
        "{tool} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// ik_llama.cpp loads `model` and greedy-generates: {"tokens", "logits"}.
fn ik_probe(model: &Path) -> Value {
    serde_json::from_str(&ik("ik-splice-probe", &[model])).unwrap()
}

/// One tensor as ik's gguf reader sees it.
#[derive(Debug, PartialEq)]
struct IkTensor {
    type_id: u32,
    type_name: String,
    shape: Vec<u64>,
    offset: u64,
    bytes: u64,
}

/// ik's gguf reader on `model` (`ik-splice-types FILE`), by tensor name.
fn ik_read(model: &Path) -> BTreeMap<String, IkTensor> {
    let text = ik("ik-splice-types", &[model]);
    text.lines()
        .skip(1)
        .map(|l| {
            let p: Vec<&str> = l.split_whitespace().collect();
            let n: Vec<u64> = p[3..].iter().map(|x| x.parse().unwrap()).collect();
            let t = IkTensor {
                type_id: p[1].parse().unwrap(),
                type_name: p[2].to_string(),
                shape: n[1..1 + n[0] as usize].to_vec(),
                offset: n[5],
                bytes: n[6],
            };
            (p[0].to_string(), t)
        })
        .collect()
}

/// ik's C type table (`ik-splice-types`), saved where assemble_ik.py can read it.
fn ik_types_file(dir: &Path) -> PathBuf {
    let p = dir.join("ik-types.txt");
    std::fs::write(&p, ik("ik-splice-types", &[])).unwrap();
    p
}

/// Every tensor's bytes, cut at the offsets and sizes ik's reader reports.
fn ik_tensor_bytes(model: &Path) -> BTreeMap<String, Vec<u8>> {
    let file = std::fs::read(model).unwrap();
    ik_read(model)
        .into_iter()
        .map(|(n, t)| {
            (
                n,
                file[t.offset as usize..(t.offset + t.bytes) as usize].to_vec(),
            )
        })
        .collect()
}

fn assemble(dir: &Path, out: &Path, base: &Path, takes: &[String]) {
    let types = ik_types_file(dir);
    let mut args: Vec<&OsStr> = vec![
        "--types".as_ref(),
        types.as_os_str(),
        "--base".as_ref(),
        base.as_os_str(),
        "--out".as_ref(),
        out.as_os_str(),
    ];
    args.extend(takes.iter().map(OsStr::new));
    oracle_script("assemble_ik.py", &args);
}

const EXPERTS: &str = r"ffn_(gate|up|down)_exps\.weight$";

/// The child's tensors equal the reference's (at ik's offsets) and both generate alike in
/// ik_llama.cpp.
fn assert_same_model(child: &Path, reference: &Path) {
    let (c, r) = (ik_tensor_bytes(child), ik_tensor_bytes(reference));
    assert_eq!(c.keys().collect::<Vec<_>>(), r.keys().collect::<Vec<_>>());
    for (name, bytes) in &c {
        assert!(bytes == &r[name], "{name} differs from the reference");
    }
    let (got, want) = (ik_probe(child), ik_probe(reference));
    assert_eq!(got["tokens"], want["tokens"]);
    assert_eq!(got["logits"], want["logits"]);
}

#[test]
fn our_ik_type_table_is_ik_llamas_own() {
    if !have("our_ik_type_table_is_ik_llamas_own", &[Oracle::IkLlama]) {
        return;
    }
    let text = ik("ik-splice-types", &[]);
    let mut seen = 0;
    for line in text.lines() {
        let p: Vec<&str> = line.split_whitespace().collect();
        let n: Vec<u64> = [&p[0..1], &p[2..]]
            .concat()
            .iter()
            .map(|x| x.parse().unwrap())
            .collect();
        let (id, blck, ts, meta, row4, nbytes) = (n[0] as u32, n[1], n[2], n[3], n[4], n[5]);
        let t = GgmlType::lookup(id, Flavour::Ik).unwrap_or_else(|| panic!("{line}: not ours"));
        // Our names are ggml's, upper case; the shared id 41 keeps mainline's name (Q1_0).
        if id != 41 {
            assert_eq!(t.name(), p[1].to_uppercase(), "{line}");
        }
        assert_eq!(
            (t.block_size(), t.type_size(), t.row_meta_bytes()),
            (blck, ts, meta),
            "{line}"
        );
        assert_eq!(
            layout::tensor_bytes(t, &[2 * blck, 16, 3]),
            Some(nbytes),
            "{line}"
        );
        if t.tensor_tail_bytes().is_none() {
            assert_eq!(layout::row_bytes(t, 4 * blck), Some(row4), "{line}");
        }
        seen += 1;
    }
    assert_eq!(seen, GgmlType::all_of(Flavour::Ik).count());
}

#[test]
fn inspect_reads_ik_fixtures_as_ik_llama_does() {
    if !have(
        "inspect_reads_ik_fixtures_as_ik_llama_does",
        &[Oracle::IkLlama],
    ) {
        return;
    }
    for f in [
        "qwen3moe-a-ik.gguf",
        "qwen3moe-b-ik.gguf",
        "qwen3moe-a-mainline.gguf",
    ] {
        let path = fixture(f);
        let o = run(&["inspect", "--json", path.to_str().unwrap()]);
        assert_ok(&o);
        let v: Value = serde_json::from_slice(&o.stdout).unwrap();
        let want_flavour = if f.contains("-ik") { "ik" } else { "mainline" };
        assert_eq!(v["flavour"], want_flavour, "{f}");
        let ours: BTreeMap<String, IkTensor> = v["tensors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| {
                let name = t["name"].as_str().unwrap().to_string();
                let id = t["type_id"].as_u64().unwrap() as u32;
                let it = IkTensor {
                    type_id: id,
                    type_name: t["type"].as_str().unwrap().to_string(),
                    shape: serde_json::from_value(t["shape"].clone()).unwrap(),
                    offset: t["offset"].as_u64().unwrap(),
                    bytes: t["bytes"].as_u64().unwrap(),
                };
                (name, it)
            })
            .collect();
        let theirs = ik_read(&path);
        assert_eq!(ours.len(), theirs.len(), "{f}");
        for (name, t) in &theirs {
            let o = &ours[name];
            assert_eq!(
                (o.type_id, &o.shape, o.offset, o.bytes),
                (t.type_id, &t.shape, t.offset, t.bytes),
                "{f}: {name}"
            );
            assert_eq!(
                o.type_name.to_uppercase(),
                t.type_name.to_uppercase(),
                "{f}: {name}"
            );
        }
    }
}

#[test]
fn r1t_preset_on_ik_parents_runs_like_the_reference_in_ik_llama() {
    if !have(
        "r1t_preset_on_ik_parents_runs_like_the_reference_in_ik_llama",
        &[Oracle::GgufPy, Oracle::IkLlama],
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (fixture("qwen3moe-a-ik.gguf"), fixture("qwen3moe-b-ik.gguf"));
    let child = dir.path().join("chimera.gguf");
    let o = SpliceCmd::new("splice")
        .args(&[
            "--parent",
            &format!("v3={}", a.display()),
            "--parent",
            &format!("r1={}", b.display()),
            "--recipe",
            repo()
                .join("mappings/deepseek-r1t-chimera.toml")
                .to_str()
                .unwrap(),
            "-o",
            child.to_str().unwrap(),
        ])
        .quiet()
        .output();
    assert_ok(&o);
    let reference = dir.path().join("reference.gguf");
    assemble(
        dir.path(),
        &reference,
        &a,
        &["--take".into(), format!("{EXPERTS}={}", b.display())],
    );
    assert_same_model(&child, &reference);
    // The experts matter: the child is neither parent.
    let got = ik_probe(&child);
    assert_ne!(got["logits"], ik_probe(&a)["logits"]);
    assert_ne!(got["logits"], ik_probe(&b)["logits"]);
}

#[test]
fn expert_rule_on_ik_parents_runs_like_the_reference_in_ik_llama() {
    if !have(
        "expert_rule_on_ik_parents_runs_like_the_reference_in_ik_llama",
        &[Oracle::GgufPy, Oracle::IkLlama],
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (fixture("qwen3moe-a-ik.gguf"), fixture("qwen3moe-b-ik.gguf"));
    let rule = r"blk\.1\.ffn_(gate|up|down)_exps";
    let child = dir.path().join("experts.gguf");
    let o = SpliceCmd::new("splice")
        .args(&[
            "--parent",
            &format!("a={}", a.display()),
            "--parent",
            &format!("b={}", b.display()),
            "--take",
            &format!("{rule}=b:experts=1-2"),
            "-o",
            child.to_str().unwrap(),
        ])
        .quiet()
        .output();
    assert_ok(&o);
    let reference = dir.path().join("reference.gguf");
    assemble(
        dir.path(),
        &reference,
        &a,
        &[
            "--take-experts".into(),
            format!("{rule}={}:1-2", b.display()),
        ],
    );
    assert_same_model(&child, &reference);
    // The cut kept the row scales: each expert of an IQ4_KS [256, 256, 4] tensor is 256 rows
    // of 4 + 136 bytes, and experts 1-2 are b's, 0 and 3 a's.
    let (c, pa, pb) = (
        ik_tensor_bytes(&child),
        ik_tensor_bytes(&a),
        ik_tensor_bytes(&b),
    );
    let name = "blk.1.ffn_gate_exps.weight";
    let s = 256 * (4 + 136);
    assert_eq!(c[name].len(), 4 * s);
    for e in 0..4 {
        let src = if (1..=2).contains(&e) { &pb } else { &pa };
        assert!(
            c[name][e * s..(e + 1) * s] == src[name][e * s..(e + 1) * s],
            "expert {e}"
        );
    }
    let o = run(&[
        "verify",
        child.to_str().unwrap(),
        "--parent",
        &format!("a={}", a.display()),
        "--parent",
        &format!("b={}", b.display()),
        "--take",
        &format!("{rule}=b:experts=1-2"),
    ]);
    assert_ok(&o);
}

#[test]
fn chimera_of_an_ik_and_a_mainline_parent_loads_in_ik_llama_only() {
    if !have(
        "chimera_of_an_ik_and_a_mainline_parent_loads_in_ik_llama_only",
        &[Oracle::GgufPy, Oracle::IkLlama, Oracle::Llama],
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (m, b) = (
        fixture("qwen3moe-a-mainline.gguf"),
        fixture("qwen3moe-b-ik.gguf"),
    );
    let child = dir.path().join("mixed.gguf");
    let o = run(&[
        "splice",
        "--parent",
        &format!("v3={}", m.display()),
        "--parent",
        &format!("r1={}", b.display()),
        "--recipe",
        repo()
            .join("mappings/deepseek-r1t-chimera.toml")
            .to_str()
            .unwrap(),
        "-o",
        child.to_str().unwrap(),
    ]);
    assert_ok(&o);
    assert!(
        stderr(&o).contains("only ik_llama.cpp loads it"),
        "{}",
        stderr(&o)
    );
    let reference = dir.path().join("reference.gguf");
    assemble(
        dir.path(),
        &reference,
        &m,
        &["--take".into(), format!("{EXPERTS}={}", b.display())],
    );
    assert_same_model(&child, &reference);
    // Mainline llama.cpp refuses it, as the plan said.
    let out = Command::new(llama_bin().join("llama-splice-probe"))
        .arg(&child)
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "mainline llama.cpp loaded an ik child"
    );
}
