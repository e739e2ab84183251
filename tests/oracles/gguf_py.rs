//! Cross-check with the reference implementation: llama.cpp's gguf-py (PyPI `gguf` 0.19.0)
//! reads the real fixtures and the files we write, and must agree with our reader on every
//! key, value type, value, tensor type, shape and tensor byte.

use std::path::Path;

use crate::common::*;
use gguf_splice::ggml_type::GgmlType;
use gguf_splice::gguf::{Model, ValueRef, ValueType};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// gguf-py's view of a file or shard set, from tests/oracle/dump.py.
fn reference_view(path: &Path) -> Value {
    serde_json::from_slice(&oracle_script("dump.py", &[path])).unwrap()
}

fn value_json(v: ValueRef) -> Value {
    match v.array_header() {
        Some(_) => Value::Array(v.array_items().map(value_json).collect()),
        None => v.to_json(true),
    }
}

/// Our reader's view, in dump.py's shape.
fn our_view(path: &Path) -> Value {
    let m = Model::open(path).unwrap();
    let first = m.first();
    let kv: Vec<Value> = first
        .kvs()
        .iter()
        .map(|kv| {
            let v = first.value(kv);
            let mut e = json!({"key": kv.key, "type": kv.ty as u32, "value": value_json(v)});
            if let Some((elem, _)) = v.array_header() {
                e["elem_type"] = json!(elem as u32);
            }
            e
        })
        .collect();
    let tensors: Vec<Value> = m
        .tensors()
        .map(|t| {
            json!({
                "name": t.info.name, "type": t.info.ty.id(), "shape": t.info.dims,
                "n_bytes": t.info.n_bytes, "shard": t.shard,
                "sha256": hex(&Sha256::digest(tensor_bytes(&m, &t.info.name))),
            })
        })
        .collect();
    json!({"alignment": first.alignment, "kv": kv, "tensors": tensors})
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn same_number(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x == y || (x.is_nan() && y.is_nan()),
        _ => false,
    }
}

fn same_value(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(_), Value::Number(_)) => same_number(a, b),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| same_value(p, q))
        }
        _ => a == b,
    }
}

fn assert_agree(path: &Path) {
    let ours = our_view(path);
    let theirs = reference_view(path);
    assert_eq!(ours["alignment"], theirs["alignment"], "{}", path.display());
    let (ok, tk) = (
        ours["kv"].as_array().unwrap(),
        theirs["kv"].as_array().unwrap(),
    );
    let keys = |v: &Vec<Value>| {
        v.iter()
            .map(|e| e["key"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        keys(ok),
        keys(tk),
        "{}: keys and their order",
        path.display()
    );
    for (a, b) in ok.iter().zip(tk) {
        assert_eq!(
            a["type"],
            b["type"],
            "{}: type of {}",
            path.display(),
            a["key"]
        );
        assert_eq!(
            a.get("elem_type"),
            b.get("elem_type"),
            "{}: {}",
            path.display(),
            a["key"]
        );
        assert!(
            same_value(&a["value"], &b["value"]),
            "{}: value of {}",
            path.display(),
            a["key"]
        );
    }
    let (ot, tt) = (
        ours["tensors"].as_array().unwrap(),
        theirs["tensors"].as_array().unwrap(),
    );
    assert_eq!(ot.len(), tt.len(), "{}", path.display());
    for (a, b) in ot.iter().zip(tt) {
        for field in ["name", "type", "shape", "n_bytes", "shard", "sha256"] {
            assert_eq!(
                a[field],
                b[field],
                "{}: {field} of {}",
                path.display(),
                a["name"]
            );
        }
    }
}

#[test]
fn reader_agrees_with_gguf_py_on_real_fixtures() {
    if !have(
        "reader_agrees_with_gguf_py_on_real_fixtures",
        &[Oracle::GgufPy],
    ) {
        return;
    }
    for f in [
        "v3-q3mix.gguf",
        "r1-q3mix.gguf",
        "r1-iq2mix.gguf",
        "r1-iq2mix-split-00001-of-00003.gguf",
    ] {
        assert_agree(&fixture(f));
    }
}

#[test]
fn gguf_py_reads_what_we_write() {
    if !have("gguf_py_reads_what_we_write", &[Oracle::GgufPy]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // A real chimera, single file and sharded (from a sharded parent).
    let single = dir.path().join("chimera.gguf");
    let sharded = dir.path().join("chimera-split.gguf");
    for (out, r1, extra) in [
        (&single, fixture("r1-iq2mix.gguf"), vec![]),
        (
            &sharded,
            fixture("r1-iq2mix-split-00002-of-00003.gguf"),
            vec!["--split-max-tensors", "20"],
        ),
    ] {
        let mut args = vec![
            "splice".to_string(),
            "--parent".into(),
            format!("v3={}", fixture("v3-q3mix.gguf").display()),
            "--parent".into(),
            format!("r1={}", r1.display()),
            "--recipe".into(),
            repo()
                .join("mappings/deepseek-r1t-chimera.toml")
                .display()
                .to_string(),
            "-o".into(),
            out.display().to_string(),
            "-q".into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let o = run(&refs);
        assert_ok(&o);
    }
    assert_agree(&single);
    assert_agree(&first_shard(dir.path(), "chimera-split"));

    // Every value type, through our writer (a splice of a hand-built parent).
    let mut all_types = parent(3, GgmlType::Q3_K)
        .kv_raw("t.u8", 0, vec![200])
        .kv_raw("t.i8", 1, vec![0x80])
        .kv_raw("t.u16", 2, 65535u16.to_le_bytes().to_vec())
        .kv_raw("t.i16", 3, (-2i16).to_le_bytes().to_vec())
        .kv_raw("t.i32", 5, (-7i32).to_le_bytes().to_vec())
        .kv_f32("t.f32", 0.1)
        .kv_raw("t.bool", 7, vec![1])
        .kv_raw("t.u64", 10, u64::MAX.to_le_bytes().to_vec())
        .kv_raw("t.i64", 11, i64::MIN.to_le_bytes().to_vec())
        .kv_raw("t.f64", 12, std::f64::consts::PI.to_le_bytes().to_vec())
        .kv_i32_array("t.empty", &[])
        .kv_str("t.unicode", "日本語 ✓");
    all_types = all_types.kv_u32("general.alignment", 64);
    let p = write(dir.path(), "all.gguf", &all_types.build());
    let out = dir.path().join("all-out.gguf");
    let o = run(&[
        "splice",
        "--parent",
        &format!("p={}", p.display()),
        "-o",
        out.to_str().unwrap(),
        "-q",
    ]);
    assert_ok(&o);
    assert_agree(&out);
    let m = Model::open(&out).unwrap();
    assert_eq!(m.get("t.i64").unwrap().ty(), ValueType::I64);
}
