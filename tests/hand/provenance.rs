//! A child carries its own record (`splice.version`, `splice.options`, `splice.parents`):
//! what it holds, `verify CHILD` from it, parents checked against it, `inspect --provenance`
//! and `splice --like`.

use crate::assemble_parents as support;

use std::path::Path;

use crate::common::*;
use gguf_splice::ggml_type::GgmlType;
use gguf_splice::gguf::{GgufFile, Model};
use gguf_splice::plan::record::{ChildRecord, Made};
use gguf_splice::presets::Preset;

/// The child's header bytes (everything before its tensor data).
fn header_bytes(path: &Path) -> Vec<u8> {
    let f = GgufFile::open(path).unwrap();
    let bytes = std::fs::read(path).unwrap();
    bytes[..f.data_offset as usize].to_vec()
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn a_child_records_its_recipe_text_and_its_parents_by_name_size_and_header_digest() {
    let s = setup(GgmlType::IQ2_XXS);
    let out = s.dir.path().join("child.gguf");
    assert_ok(&s.splice(&[
        "--recipe",
        "deepseek-r1t-chimera",
        "--take",
        "output=r1",
        "-o",
        out.to_str().unwrap(),
        "--quiet",
    ]));
    let child = Model::open(&out).unwrap();
    let r = ChildRecord::read(&child).unwrap();
    assert_eq!(r.version.as_deref(), Some(env!("CARGO_PKG_VERSION")));
    let options = r.options.expect("splice.options");
    let preset = Preset::find("deepseek-r1t-chimera").unwrap();
    assert_eq!(
        options.made,
        Made::Splice {
            recipe: preset.recipe().unwrap().text,
            takes: vec!["output=r1".into()],
            allow_partial_experts: false,
        },
        "the preset's text, not its name"
    );
    assert_eq!(r.parents.len(), 2);
    for (rec, (name, path)) in r.parents.iter().zip([("v3", &s.v3), ("r1", &s.r1)]) {
        let f = GgufFile::open(path).unwrap();
        assert_eq!(rec.name, name);
        assert_eq!(rec.shards.len(), 1);
        assert_eq!(rec.shards[0].file, format!("{name}.gguf"));
        assert_eq!(rec.shards[0].size, f.file_len);
        assert_eq!(rec.shards[0].header_sha256, f.header_sha256());
        assert_eq!(rec.shards[0].url, None);
    }
    // No absolute path anywhere in the child's metadata.
    let dir = s.dir.path().to_str().unwrap();
    assert!(
        !contains(&header_bytes(&out), dir.as_bytes()),
        "the child holds the directory {dir}"
    );
}

/// `verify --json` of `child` with `args`: (exit code, report).
fn verify_json(child: &Path, args: &[&str]) -> (Option<i32>, serde_json::Value) {
    let mut all = vec!["verify", child.to_str().unwrap(), "--json"];
    all.extend(args);
    let o = run(&all);
    let v = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("{e}: stdout {:?} stderr {}", o.stdout, stderr(&o)));
    (o.status.code(), v)
}

/// Change `from` to `to` (same length) in the file's bytes.
fn tamper(path: &Path, from: &str, to: &str) {
    assert_eq!(from.len(), to.len());
    let mut bytes = std::fs::read(path).unwrap();
    let at = bytes
        .windows(from.len())
        .position(|w| w == from.as_bytes())
        .expect("text in file");
    bytes[at..at + to.len()].copy_from_slice(to.as_bytes());
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn plain_verify_uses_the_recorded_recipe_and_catches_tampered_metadata() {
    let s = setup(GgmlType::IQ2_XXS);
    let out = s.dir.path().join("child.gguf");
    assert_ok(&s.splice(&[
        "--recipe",
        "deepseek-r1t-chimera",
        "-o",
        out.to_str().unwrap(),
        "-q",
    ]));
    let parents = s.parent_args();
    let p: Vec<&str> = parents.iter().map(String::as_str).collect();
    let (code, v) = verify_json(&out, &p);
    assert_eq!(code, Some(0), "{v}");
    assert_eq!(v["basis"], "using the recipe recorded in the child");
    assert_eq!(v["checked"], "tensors and metadata");

    tamper(
        &out,
        "Chimera (gguf-splice DIY)",
        "Chimera (gguf-splice DIX)",
    );
    let (code, v) = verify_json(&out, &p);
    assert_eq!(code, Some(1), "{v}");
    let ms = v["recipe"]["mismatches"].as_array().unwrap();
    assert!(
        ms.iter().any(|m| m.to_string().contains("general.name")),
        "{ms:?}"
    );
    // A recipe given on the command line wins, and the report says so.
    let mut with_recipe = p.clone();
    with_recipe.extend(["--recipe", "deepseek-r1t-chimera"]);
    let (code, v) = verify_json(&out, &with_recipe);
    assert_eq!(code, Some(1));
    assert_eq!(v["basis"], "using the recipe given on the command line");
}

#[test]
fn an_assembled_child_verifies_with_no_options() {
    let dir = tempfile::tempdir().unwrap();
    let a = write(
        dir.path(),
        "a.gguf",
        &support::dense(V3, "llama", GgmlType::Q4_K, 256).build(),
    );
    let b = write(
        dir.path(),
        "b.gguf",
        &support::dense(R1, "llama", GgmlType::Q4_K, 256).build(),
    );
    let out = dir.path().join("moe.gguf");
    let pa = format!("a={}", a.display());
    let pb = format!("b={}", b.display());
    assert_ok(&run(&[
        "assemble",
        "--parent",
        &pa,
        "--parent",
        &pb,
        "--base",
        "a",
        "--router",
        "random:7",
        "--experts-used",
        "2",
        "-o",
        out.to_str().unwrap(),
        "-q",
    ]));
    let (code, v) = verify_json(&out, &["--parent", &pa, "--parent", &pb]);
    assert_eq!(code, Some(0), "{v}");
    assert_eq!(
        v["basis"],
        "using the assemble options recorded in the child"
    );
    assert_eq!(v["recipe"]["assembled"], true);
    // Other options given on the command line are what is checked.
    let (code, v) = verify_json(
        &out,
        &[
            "--parent",
            &pa,
            "--parent",
            &pb,
            "--assembled",
            "--router",
            "random:8",
        ],
    );
    assert_eq!(code, Some(1), "{v}");
    assert_eq!(
        v["basis"],
        "using the assemble options given on the command line"
    );
}

#[test]
fn a_compatible_parent_that_is_not_the_recorded_file_is_named_and_compared_all_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("child.gguf");
    let v3 = format!("v3={}", fixture_arg("v3-q3mix.gguf"));
    assert_ok(&run(&[
        "splice",
        "--parent",
        &v3,
        "--parent",
        &format!("r1={}", fixture_arg("r1-iq2mix.gguf")),
        "--recipe",
        "deepseek-r1t-chimera",
        "-o",
        out.to_str().unwrap(),
        "-q",
    ]));
    // Another quant of the same model given as r1: a compatible file, but not the one.
    let wrong = format!("r1={}", fixture_arg("v3-q3mix.gguf"));
    let (code, v) = verify_json(&out, &["--parent", &v3, "--parent", &wrong]);
    assert_eq!(code, Some(1), "{v}");
    let named = v["not_recorded"].as_array().unwrap();
    assert_eq!(named.len(), 1, "{named:?}");
    assert_eq!(named[0]["parent"], "r1");
    let message = named[0]["message"].as_str().unwrap();
    assert!(
        message
            .starts_with("r1 is not the file the child was made from (recorded r1-iq2mix.gguf, ")
            && message.contains("given v3-q3mix.gguf"),
        "{message}"
    );
    let f = GgufFile::open(Path::new(&fixture_arg("r1-iq2mix.gguf"))).unwrap();
    assert_eq!(named[0]["recorded"][0]["header_sha256"], f.header_sha256());
    // The comparison went on: the routed experts match no parent given.
    assert!(!v["unmatched"].as_array().unwrap().is_empty(), "{v}");
    // The right file under another name is the right file.
    let copy = dir.path().join("renamed.gguf");
    std::fs::copy(fixture_arg("r1-iq2mix.gguf"), &copy).unwrap();
    let right = format!("r1={}", copy.display());
    let (code, v) = verify_json(&out, &["--parent", &v3, "--parent", &right]);
    assert_eq!(code, Some(0), "{v}");
    assert_eq!(v["not_recorded"], serde_json::json!([]));
}

#[test]
fn local_parents_are_found_by_their_recorded_names_or_asked_for() {
    let s = setup(GgmlType::IQ2_XXS);
    let out = s.dir.path().join("child.gguf");
    assert_ok(&s.splice(&[
        "--recipe",
        "deepseek-r1t-chimera",
        "-o",
        out.to_str().unwrap(),
        "-q",
    ]));
    // The parents moved elsewhere: --parents-dir finds them by file name.
    let moved = tempfile::tempdir().unwrap();
    for p in [&s.v3, &s.r1] {
        std::fs::rename(p, moved.path().join(p.file_name().unwrap())).unwrap();
    }
    let dir = moved.path().to_str().unwrap();
    let (code, v) = verify_json(&out, &["--parents-dir", dir]);
    assert_eq!(code, Some(0), "{v}");
    assert_eq!(v["parents"][1]["name"], "r1");
    // --parent wins over the directory for the parent it names.
    let given = format!("v3={dir}/r1.gguf");
    let (code, v) = verify_json(&out, &["--parents-dir", dir, "--parent", &given]);
    assert_eq!(code, Some(1), "{v}");
    assert_eq!(v["not_recorded"][0]["parent"], "v3");
    // Neither: the files needed are named, with the way to give them.
    let o = run(&["verify", out.to_str().unwrap()]);
    assert_exit(&o, 2);
    let e = stderr(&o);
    assert!(
        e.contains("v3 (v3.gguf), r1 (r1.gguf)") && e.contains("--parent v3=PATH --parent r1=PATH"),
        "{e}"
    );
}

#[test]
fn inspect_provenance_shows_parents_recipe_sources_and_base_models() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("child.gguf");
    assert_ok(&run(&[
        "splice",
        "--parent",
        &format!("v3={}", fixture_arg("v3-q3mix.gguf")),
        "--parent",
        &format!("r1={}", fixture_arg("r1-iq2mix.gguf")),
        "--recipe",
        "deepseek-r1t-chimera",
        "-o",
        out.to_str().unwrap(),
        "-q",
    ]));
    let fixtures = repo().join("fixtures");
    let o = run(&[
        "inspect",
        out.to_str().unwrap(),
        "--provenance",
        "--parents-dir",
        fixtures.to_str().unwrap(),
    ]);
    assert_ok(&o);
    let text = String::from_utf8_lossy(&o.stdout);
    let sha = GgufFile::open(Path::new(&fixture_arg("r1-iq2mix.gguf")))
        .unwrap()
        .header_sha256();
    for want in [
        format!("made by gguf-splice {}", env!("CARGO_PKG_VERSION")),
        format!("  r1: r1-iq2mix.gguf, 1734080 bytes, header sha256 {sha}"),
        "recipe:\n  | # DeepSeek R1T Chimera, DIY.".to_string(),
        "  blk.1-2 ffn_{down,gate,up}_exps.weight: r1".to_string(),
        "everything else (".to_string(),
        "base models (general.base_model.*):\n  0: name Tiny-DeepSeek-V3\n  1: name Tiny-DeepSeek-R1"
            .to_string(),
    ] {
        assert!(text.contains(&want), "no {want:?} in\n{text}");
    }
    // Without the parents: the record, and what to give for the sources.
    let o = run(&["inspect", out.to_str().unwrap(), "--provenance", "--json"]);
    assert_ok(&o);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["options"]["kind"], "splice");
    assert_eq!(v["parents"][1]["shards"][0]["header_sha256"], sha);
    assert_eq!(v["sources"], serde_json::Value::Null);
    let why = v["sources_unavailable"].as_str().unwrap();
    assert!(why.contains("--parent v3=PATH --parent r1=PATH"), "{why}");
}

/// Every file of a child named `stem` in `dir` (one, or its shards), by name and bytes.
fn files_of(dir: &Path, stem: &str) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_str().unwrap();
            n == format!("{stem}.gguf") || n.starts_with(&format!("{stem}-0"))
        })
        .map(|p| {
            let n = p
                .file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .replacen(stem, "C", 1);
            (n, std::fs::read(&p).unwrap())
        })
        .collect();
    v.sort();
    v
}

#[test]
fn splice_like_remakes_byte_identical_children_from_their_record() {
    let s = setup(GgmlType::Q3_K);
    let d = s.dir.path();
    let like = |child: &Path, out: &str, more: &[&str]| {
        let out = d.join(out);
        let mut args = vec![
            "splice",
            "--like",
            child.to_str().unwrap(),
            "--parents-dir",
            d.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "-q",
        ];
        args.extend(more);
        assert_ok(&run(&args));
    };
    // A split splice with --take rules.
    let a = d.join("a.gguf");
    assert_ok(&s.splice(&[
        "--recipe",
        "deepseek-r1t-chimera",
        "--take",
        "token_embd=r1",
        "--split-max-tensors",
        "20",
        "-o",
        a.to_str().unwrap(),
        "-q",
    ]));
    let first = first_shard(d, "a");
    like(&first, "b.gguf", &[]);
    let (fa, fb) = (files_of(d, "a"), files_of(d, "b"));
    assert!(fa.len() > 1, "split");
    assert!(fa == fb, "splice --like made other bytes");
    // Another split: other shards, the same model (verify from the record passes).
    like(&first, "c.gguf", &["--split-max-tensors", "30"]);
    assert_ne!(files_of(d, "c").len(), fa.len());
    let c = first_shard(d, "c");
    let (code, v) = verify_json(&c, &["--parents-dir", d.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{v}");

    // An assembled child.
    let m = d.join("m.gguf");
    assert_ok(&s.run(
        "assemble",
        None,
        &[
            "--experts",
            "r1:2-3,v3:0-1",
            "--experts-used",
            "2",
            "-o",
            m.to_str().unwrap(),
            "-q",
        ],
    ));
    like(&m, "n.gguf", &[]);
    assert!(
        std::fs::read(&m).unwrap() == std::fs::read(d.join("n.gguf")).unwrap(),
        "assemble remade by --like differs"
    );
}
