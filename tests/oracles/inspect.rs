//! `inspect` against gguf-py's view of the real fixtures, and its behaviour on bad files.

use crate::common::*;
use serde_json::Value;
use std::collections::BTreeMap;

#[test]
fn inspect_json_agrees_with_gguf_py_and_totals_add_up() {
    if !have(
        "inspect_json_agrees_with_gguf_py_and_totals_add_up",
        &[Oracle::GgufPy],
    ) {
        return;
    }
    // Given the middle shard, inspect shows the whole set.
    let o = run(&[
        "inspect",
        "--json",
        &fixture_arg("r1-iq2mix-split-00002-of-00003.gguf"),
    ]);
    assert_ok(&o);
    let ours: Value = serde_json::from_slice(&o.stdout).unwrap();
    let theirs: Value = serde_json::from_slice(&oracle_script(
        "dump.py",
        &[fixture("r1-iq2mix-split-00001-of-00003.gguf")],
    ))
    .unwrap();

    assert_eq!(ours["architecture"], "deepseek2");
    assert_eq!(ours["files"].as_array().unwrap().len(), 3);
    let (ot, tt) = (
        ours["tensors"].as_array().unwrap(),
        theirs["tensors"].as_array().unwrap(),
    );
    assert_eq!(ot.len(), tt.len());
    let mut by_type: BTreeMap<String, u64> = BTreeMap::new();
    for (a, b) in ot.iter().zip(tt) {
        assert_eq!(a["name"], b["name"]);
        assert_eq!(a["type"], b["type_name"], "{}", a["name"]);
        assert_eq!(a["shape"], b["shape"], "{}", a["name"]);
        assert_eq!(a["bytes"], b["n_bytes"], "{}", a["name"]);
        // Shards are numbered from 1, as their file names are; the oracle counts from 0.
        assert_eq!(
            a["shard"].as_u64().unwrap(),
            b["shard"].as_u64().unwrap() + 1,
            "{}",
            a["name"]
        );
        *by_type
            .entry(b["type_name"].as_str().unwrap().to_string())
            .or_default() += b["n_bytes"].as_u64().unwrap();
    }
    for (ty, bytes) in by_type {
        assert_eq!(ours["totals_by_type"][&ty]["bytes"], bytes, "{ty}");
    }
    let groups = ours["totals_by_group"].as_object().unwrap();
    assert_eq!(groups["routed experts"]["tensors"], 6);
    assert_eq!(groups["router"]["tensors"], 4);
    let keys: Vec<&str> = ours["metadata"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["key"].as_str().unwrap())
        .collect();
    let theirs_keys: Vec<&str> = theirs["kv"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, theirs_keys);
    // Arrays are summarised, not dumped: the 512-token vocabulary shows 8 items.
    let tokens = ours["metadata"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["key"] == "tokenizer.ggml.tokens")
        .unwrap();
    assert_eq!(tokens["value"]["len"], 512);
    assert_eq!(tokens["value"]["items"].as_array().unwrap().len(), 8);

    // The text form names the same tensors.
    let o = run(&["inspect", &fixture_arg("v3-q3mix.gguf")]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("architecture: deepseek2"));
    assert!(text.contains("blk.2.ffn_down_exps.weight"));
    assert!(text.contains("totals by group"));
}

#[test]
fn bad_files_are_one_line_errors() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = std::fs::read(fixture_arg("v3-q3mix.gguf")).unwrap();
    bytes.truncate(bytes.len() / 2);
    let cut = write(dir.path(), "cut.gguf", &bytes);
    for (path, code) in [
        (cut.display().to_string(), 3),
        ("/nonexistent/x.gguf".to_string(), 4),
    ] {
        let o = run(&["inspect", &path]);
        assert_eq!(o.status.code(), Some(code), "{path}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(&path) && !err.contains("panicked"), "{err}");
    }
}

#[test]
fn inspect_names_the_file_type_and_keeps_numbers_typed_and_groups_in_role_order() {
    let f = fixture_arg("v3-q3mix.gguf");
    let o = run(&["inspect", &f]);
    assert_ok(&o);
    let text = String::from_utf8_lossy(&o.stdout);
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with("general.file_type"))
        .unwrap();
    assert!(line.ends_with("12 = Q3_K_M"), "{line}");
    // Groups in the same logical order as diff: embeddings first, output last.
    let groups = text.split("totals by group:").nth(1).unwrap();
    let order: Vec<&str> = groups
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .take_while(|w| *w != "tensor")
        .collect();
    assert_eq!(order.first(), Some(&"embeddings"), "{groups}");
    assert!(
        order.iter().position(|g| *g == "attention") < order.iter().position(|g| *g == "output"),
        "{groups}"
    );
    let o = run(&["inspect", &f, "--json"]);
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["hyperparameters"]["deepseek2.block_count"], 3);
    assert_eq!(
        j["file_type"],
        serde_json::json!({"id": 12, "name": "Q3_K_M"})
    );
}
