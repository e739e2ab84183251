//! `diff` and `verify` on hand-assembled parents and children spliced from them by the
//! binary. Parents' bytes encode parent, tensor and expert, so each expected verdict is
//! known from how the files were made; assertions are on report variants and JSON fields.
// Expert sets are lists of ranges; a list holding one range (`vec![1..3]`) is meant.
#![allow(clippy::single_range_in_vec_init)]

use std::path::Path;

use crate::common::*;
use gguf_splice::compare::{
    self, CompareOptions, DiffReport, ExpertDiff, ExpertRun, KeyStatus, Mismatch, Sources,
    TensorStatus, VerifyReport,
};
use gguf_splice::ggml_type::GgmlType;
use gguf_splice::gguf::Model;

use gguf_splice::recipe::Recipe;
use gguf_splice::testkit::GgufBuilder;
use serde_json::{Value, json};

mod verify;

fn lib_diff(a: &Path, b: &Path) -> DiffReport {
    let (a, b) = (Model::open(a).unwrap(), Model::open(b).unwrap());
    compare::diff(&a, &b, &CompareOptions::default()).unwrap()
}

fn lib_verify(s: &Setup, child: &Path, recipe: Option<&str>, takes: &[&str]) -> VerifyReport {
    let recipe = (recipe.is_some() || !takes.is_empty()).then(|| {
        let mut r = match recipe {
            Some(p) => Recipe::from_file(Path::new(p)).unwrap(),
            None => Recipe::default(),
        };
        r.prepend_takes(&takes.iter().map(|t| t.to_string()).collect::<Vec<_>>())
            .unwrap();
        // Tests here take single expert matrices on purpose.
        r.allow_partial_experts = true;
        r
    });
    let child = Model::open(child).unwrap();
    // Small chunks, so chunk and expert boundaries fall in every relation.
    let opts = CompareOptions {
        chunk_bytes: 100,
        ..Default::default()
    };
    compare::verify(&child, &s.parents(), recipe.as_ref(), &opts).unwrap()
}

/// Run the binary and parse its JSON report; returns (exit code, report).
fn run_json(args: &[&str]) -> (i32, Value) {
    let mut args = args.to_vec();
    args.push("--json");
    let o = run(&args);
    let v = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: stdout {} stderr {}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    });
    (o.status.code().unwrap(), v)
}

fn run_text(args: &[&str]) -> (i32, String) {
    let o = run(args);
    (
        o.status.code().unwrap(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
    )
}

fn verify_args<'a>(child: &'a str, v3: &'a str, r1: &'a str) -> Vec<&'a str> {
    vec!["verify", child, "--parent", v3, "--parent", r1]
}

fn json_tensor<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == name)
        .unwrap_or_else(|| panic!("{name} not in report"))
}

/// The first byte of expert `e` of tensor `name` in a model file, and the expert's size.
fn expert_at(path: &Path, name: &str, e: u64) -> (u64, u64) {
    let m = Model::open(path).unwrap();
    let t = m.tensor(name).unwrap();
    let s = t.info.n_bytes / t.info.dims.last().unwrap();
    (t.file_offset + e * s, s)
}

/// What verify should say of a tensor taken whole from `from`.
fn whole_from(_name: &str, from: &str) -> Sources {
    Sources::Whole(vec![from.into()])
}

fn flip_byte(path: &Path, at: u64) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8];
    f.read_exact_at(&mut b, at).unwrap();
    f.write_all_at(&[b[0] ^ 0xff], at).unwrap();
}

// --- diff ------------------------------------------------------------------------------------

#[test]
fn diff_of_a_parent_against_itself_and_its_own_shards_is_identical() {
    let s = setup(GgmlType::Q3_K);
    let r = lib_diff(&s.v3, &s.v3);
    assert!(r.identical());
    assert_eq!(r.tensors.len(), layout(GgmlType::Q3_K).len());
    assert!(
        r.tensors
            .iter()
            .all(|t| t.status == TensorStatus::Identical)
    );
    assert!(r.keys.is_empty());

    // The same model as a hand-made shard set: split.* keys are not a difference.
    let l = layout(GgmlType::Q3_K);
    let half = l.len() / 2;
    let split = |b: GgufBuilder, no: u16| {
        b.kv_u16("split.no", no)
            .kv_u16("split.count", 2)
            .kv_i32("split.tensors.count", l.len() as i32)
    };
    let mut first = split(
        GgufBuilder::new()
            .kv_str("general.architecture", "deepseek2")
            .kv_str("general.name", "parent-1")
            .kv_u32("deepseek2.block_count", 3)
            .kv_u32("deepseek2.embedding_length", N_EMBD as u32)
            .kv_u32("deepseek2.expert_count", N_EXPERT as u32)
            .kv_str_array("tokenizer.ggml.tokens", &["a", "b", "c"])
            .kv_str("tokenizer.chat_template", "template-1"),
        0,
    );
    let mut second = split(GgufBuilder::new(), 1);
    for (i, (name, dims, ty)) in l.iter().enumerate() {
        let data = expected_bytes(V3, GgmlType::Q3_K, name);
        if i < half {
            first = first.tensor_raw(name, dims, ty.id(), data);
        } else {
            second = second.tensor_raw(name, dims, ty.id(), data);
        }
    }
    write(s.dir.path(), "v3s-00001-of-00002.gguf", &first.build());
    let shard2 = write(s.dir.path(), "v3s-00002-of-00002.gguf", &second.build());
    let r = lib_diff(&s.v3, &shard2);
    assert_eq!(r.b.paths.len(), 2);
    assert!(r.identical(), "{}", gguf_splice::render::diff_text(&r));

    let (code, j) = run_json(&["diff", s.v3.to_str().unwrap(), shard2.to_str().unwrap()]);
    assert_eq!(code, 0);
    assert_eq!(j["identical"], true);
    assert_eq!(j["counts"]["identical"], l.len());
    assert_eq!(j["metadata"], json!([]));
    let (code, text) = run_text(&["diff", s.v3.to_str().unwrap(), s.v3.to_str().unwrap()]);
    assert_eq!(code, 0);
    assert!(
        text.contains(&format!("all {} tensors: identical", l.len())),
        "{text}"
    );
}

#[test]
fn diff_of_the_chimera_against_its_base_finds_exactly_the_routed_experts() {
    let s = setup(GgmlType::Q3_K);
    let child = s.child("child.gguf", &["--recipe", &chimera_preset()]);
    let r = lib_diff(&s.v3, &child);
    let mut n_experts = 0;
    for t in &r.tensors {
        if is_routed_expert(&t.name) {
            n_experts += 1;
            assert_eq!(
                t.status,
                TensorStatus::BytesDiffer {
                    first_offset: 0,
                    experts: Some(ExpertDiff {
                        count: N_EXPERT,
                        differ: vec![0..N_EXPERT],
                    }),
                },
                "{}",
                t.name
            );
        } else {
            assert_eq!(t.status, TensorStatus::Identical, "{}", t.name);
        }
    }
    assert_eq!(n_experts, 6);
    for g in r.groups() {
        if g.group == gguf_splice::roles::Role::RoutedExperts {
            assert_eq!((g.tensors, g.bytes_differ), (6, 6));
        } else {
            assert_eq!(g.identical, g.tensors, "{}", g.group);
        }
    }
    // Metadata: the recipe's name, and the parents and recipe recorded; nothing else.
    let mut keys: Vec<(&str, &str)> = r
        .keys
        .iter()
        .map(|k| {
            let kind = match k.status {
                KeyStatus::OnlyInA(_) => "only A",
                KeyStatus::OnlyInB(_) => "only B",
                KeyStatus::Differs { .. } => "differs",
            };
            (k.key.as_str(), kind)
        })
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        vec![
            ("general.base_model.0.name", "only B"),
            ("general.base_model.1.name", "only B"),
            ("general.base_model.count", "only B"),
            ("general.name", "differs"),
            ("splice.options", "only B"),
            ("splice.parents", "only B"),
            ("splice.recipe", "only B"),
            ("splice.version", "only B"),
        ]
    );
    let name = r.keys.iter().find(|k| k.key == "general.name").unwrap();
    assert!(
        matches!(&name.status, KeyStatus::Differs { a, b } if a.json == "parent-1" && b.json == "DeepSeek-R1T-Chimera (gguf-splice DIY)")
    );

    // The binary says the same, exits 0, and reports compactly.
    let (code, j) = run_json(&["diff", s.v3.to_str().unwrap(), child.to_str().unwrap()]);
    assert_eq!(code, 0, "diff reports, it does not fail");
    assert_eq!(j["identical"], false);
    assert_eq!(j["counts"]["bytes_differ"], 6);
    assert_eq!(j["counts"]["identical"], layout(GgmlType::Q3_K).len() - 6);
    let t = json_tensor(&j, "blk.2.ffn_down_exps.weight");
    assert_eq!(t["status"], "bytes_differ");
    assert_eq!(t["experts"], json!({"count": 4, "differ": [[0, 3]]}));
    let groups: Vec<(&str, u64)> = j["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            (
                g["group"].as_str().unwrap(),
                g["bytes_differ"].as_u64().unwrap(),
            )
        })
        .collect();
    assert!(groups.contains(&("routed experts", 6)), "{groups:?}");
    let (code, text) = run_text(&["diff", s.v3.to_str().unwrap(), child.to_str().unwrap()]);
    assert_eq!(code, 0);
    assert!(
        text.contains("blk.1-2 ffn_{gate,up,down}_exps.weight: bytes differ in experts 0-3 of 4"),
        "{text}"
    );
}

#[test]
fn diff_reports_types_shapes_missing_tensors_single_experts_and_keys() {
    let s = setup(GgmlType::Q3_K);
    // B: v3 with one shape, one type, one tensor missing, one extra, one expert changed,
    // another name and an extra key.
    let mut b = GgufBuilder::new()
        .kv_str("general.architecture", "deepseek2")
        .kv_str("general.name", "other")
        .kv_u32("deepseek2.block_count", 3)
        .kv_u32("deepseek2.embedding_length", N_EMBD as u32)
        .kv_u32("deepseek2.expert_count", N_EXPERT as u32)
        .kv_str_array("tokenizer.ggml.tokens", &["a", "b", "c"])
        .kv_str("tokenizer.chat_template", "template-1")
        .kv_u32("general.quantization_version", 2);
    let expert_bytes = 2 * 110; // [256, 2] of Q3_K
    for (name, dims, ty) in layout(GgmlType::Q3_K) {
        let data = expected_bytes(V3, GgmlType::Q3_K, &name);
        b = match name.as_str() {
            "output.weight" => b,
            "blk.0.attn_q_a.weight" => b.tensor(&name, &[N_EMBD, 3], ty, V3),
            "blk.1.ffn_up_exps.weight" => b.tensor(&name, &dims, GgmlType::IQ2_XXS, V3),
            "blk.2.ffn_down_exps.weight" => {
                let mut d = data;
                d[2 * expert_bytes + 17] ^= 1;
                b.tensor_raw(&name, &dims, ty.id(), d)
            }
            _ => b.tensor_raw(&name, &dims, ty.id(), data),
        };
    }
    b = b.tensor("extra.weight", &[N_EMBD], GgmlType::F32, V3);
    let other = write(s.dir.path(), "other.gguf", &b.build());

    let r = lib_diff(&s.v3, &other);
    let status = |n: &str| r.tensor(n).unwrap().status.clone();
    assert_eq!(
        status("blk.0.attn_q_a.weight"),
        TensorStatus::ShapeDiffers {
            a: vec![N_EMBD, 2],
            b: vec![N_EMBD, 3]
        }
    );
    assert!(matches!(
        status("blk.1.ffn_up_exps.weight"),
        TensorStatus::TypeDiffers {
            a: GgmlType::Q3_K,
            b: GgmlType::IQ2_XXS,
            ..
        }
    ));
    assert_eq!(status("output.weight"), TensorStatus::OnlyInA);
    assert_eq!(status("extra.weight"), TensorStatus::OnlyInB);
    assert_eq!(
        status("blk.2.ffn_down_exps.weight"),
        TensorStatus::BytesDiffer {
            first_offset: 2 * expert_bytes as u64 + 17,
            experts: Some(ExpertDiff {
                count: N_EXPERT,
                differ: vec![2..3]
            }),
        }
    );
    let others = r
        .tensors
        .iter()
        .filter(|t| t.status != TensorStatus::Identical)
        .count();
    assert_eq!(others, 5);
    assert_eq!(
        r.tensors.last().unwrap().name,
        "extra.weight",
        "B-only last"
    );
    let keys: Vec<(&str, bool)> = r
        .keys
        .iter()
        .map(|k| (k.key.as_str(), matches!(k.status, KeyStatus::OnlyInB(_))))
        .collect();
    assert_eq!(
        keys,
        vec![
            ("general.name", false),
            ("general.quantization_version", true)
        ]
    );

    let (code, j) = run_json(&["diff", s.v3.to_str().unwrap(), other.to_str().unwrap()]);
    assert_eq!(code, 0);
    for (name, st) in [
        ("blk.0.attn_q_a.weight", "shape_differs"),
        ("blk.1.ffn_up_exps.weight", "type_differs"),
        ("output.weight", "only_in_a"),
        ("extra.weight", "only_in_b"),
        ("blk.2.ffn_down_exps.weight", "bytes_differ"),
    ] {
        assert_eq!(json_tensor(&j, name)["status"], st, "{name}");
    }
    let t = json_tensor(&j, "blk.2.ffn_down_exps.weight");
    assert_eq!(t["experts"]["differ"], json!([[2, 2]]));
    assert_eq!(t["first_difference"], 2 * expert_bytes + 17);
    assert_eq!(
        json_tensor(&j, "blk.1.ffn_up_exps.weight")["type"],
        json!({"a": "Q3_K", "b": "IQ2_XXS"})
    );
    assert_eq!(j["metadata"][0]["status"], "differs");
    assert_eq!(j["metadata"][0]["b"]["value"], "other");
}

// --- verify ----------------------------------------------------------------------------------

#[test]
fn tensors_with_too_many_experts_are_refused_by_the_plan() {
    // More slices than roles::cut::MAX_EXPERTS: the plan refuses to cut them (a bounded expert
    // table), with a bad-input exit code and nothing written.
    let dir = tempfile::tempdir().unwrap();
    let n = gguf_splice::roles::cut::MAX_EXPERTS + 1;
    let model = |pid: u8| {
        GgufBuilder::new()
            .kv_str("general.architecture", "deepseek2")
            .tensor("blk.0.exp_probs_b.bias", &[n], GgmlType::F32, pid)
            .build()
    };
    let v3 = write(dir.path(), "v3.gguf", &model(V3));
    let r1 = write(dir.path(), "r1.gguf", &model(R1));
    let out = dir.path().join("child.gguf");
    let o = run(&[
        "splice",
        "--parent",
        &format!("v3={}", v3.display()),
        "--parent",
        &format!("r1={}", r1.display()),
        "--take",
        "exp_probs_b=r1:experts=0-9",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_exit(&o, 3);
    assert!(stderr(&o).contains("cannot be split by expert"));
    assert!(!out.exists());
}

#[test]
fn bad_inputs_are_errors_with_input_exit_codes() {
    let s = setup(GgmlType::Q3_K);
    let bad = write(s.dir.path(), "bad.gguf", b"GGUF\x03\0\0\0garbage");
    let o = run(&["diff", s.v3.to_str().unwrap(), bad.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(3));
    let v3 = format!("v3={}", s.v3.display());
    let o = run(&[
        "verify",
        s.v3.to_str().unwrap(),
        "--parent",
        &v3,
        "--parent",
        &v3,
    ]);
    assert_eq!(o.status.code(), Some(3), "duplicate parent names");
    let o = run(&[
        "verify",
        s.v3.to_str().unwrap(),
        "--parent",
        &v3,
        "--take",
        "nothing_matches=v3",
    ]);
    assert_eq!(o.status.code(), Some(3), "a plan error");
    let o = run(&["diff", s.v3.to_str().unwrap(), "/nonexistent.gguf"]);
    assert_eq!(o.status.code(), Some(4));
}

#[test]
fn diff_names_the_first_differing_array_element_and_text_position() {
    let dir = tempfile::tempdir().unwrap();
    let tokens: Vec<String> = (0..300).map(|i| format!("tok{i}")).collect();
    let mut other = tokens.clone();
    other[217] = "changed".into();
    other[250] = "changed too".into();
    let model = |toks: &[String], template: &str| {
        let refs: Vec<&str> = toks.iter().map(String::as_str).collect();
        GgufBuilder::new()
            .kv_str("general.architecture", "deepseek2")
            .kv_str_array("tokenizer.ggml.tokens", &refs)
            .kv_str("tokenizer.chat_template", template)
            .tensor("token_embd.weight", &[32, 4], GgmlType::F32, 1)
            .build()
    };
    let long = "{% for m in messages %}<|user|>{{ m.content }}{% endfor %}".repeat(20);
    let changed = long.replacen(
        "<|user|>{{ m.content }}{% endfor %}{% for",
        "<|user|>{{ m.content }}{% endfor %}{%- for",
        3,
    );
    let a = write(dir.path(), "a.gguf", &model(&tokens, &long));
    let b = write(dir.path(), "b.gguf", &model(&other, &changed));
    let (code, j) = run_json(&["diff", a.to_str().unwrap(), b.to_str().unwrap()]);
    assert_eq!(code, 0);
    let key = |k: &str| {
        j["metadata"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["key"] == k)
            .unwrap_or_else(|| panic!("{k} not in {j}"))
            .clone()
    };
    let toks = key("tokenizer.ggml.tokens");
    assert_eq!(
        toks["first_difference"],
        json!({"index": 217, "a": "tok217", "b": "changed", "differing": 2, "len_a": 300, "len_b": 300})
    );
    let t = key("tokenizer.chat_template");
    let at = long
        .bytes()
        .zip(changed.bytes())
        .position(|(x, y)| x != y)
        .unwrap();
    assert_eq!(t["first_difference"]["byte"], at);
    assert!(
        t["first_difference"]["b"].as_str().unwrap().contains("{%-"),
        "{t}"
    );
    let o = run(&["diff", a.to_str().unwrap(), b.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains(
            "first difference at [217]: \"tok217\" vs \"changed\"; 2 of 300 elements differ"
        ),
        "{text}"
    );
}

#[test]
fn diff_group_table_columns_line_up() {
    let s = setup(GgmlType::Q3_K);
    let text = gguf_splice::render::diff_text(&lib_diff(&s.v3, &s.r1));
    let mut lines = text
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("group "));
    let header = lines
        .next()
        .unwrap_or_else(|| panic!("no group table in {text}"));
    // Fixed-width, right-aligned columns: a row is as long as its heading line exactly
    // when the group names are padded to their column.
    let rows: Vec<&str> = lines.take_while(|l| !l.trim().is_empty()).collect();
    assert!(rows.len() >= 5, "{text}");
    for row in rows {
        assert_eq!(row.len(), header.len(), "misaligned:\n{header}\n{row}");
    }
}
