//! Remote parents over real HTTP: nginx (started here, on 127.0.0.1) behind a proxy of our
//! own that counts the bytes it serves. A child spliced from remote parents must be
//! byte-identical to the child spliced from the same files locally, `verify` against the
//! remote parents must pass, the bytes served must be what the child takes plus the
//! headers, and `--dry-run` / `inspect` must fetch only headers. Skipped by a plain
//! `cargo test` when nginx is missing; `scripts/test.sh` requires it.

// Errors carry the file, expected and found values; built once per failed run.
#![allow(clippy::result_large_err)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::common::{assert_exit, assert_ok, chimera_preset, first_shard, names, stderr, strs};
use crate::server::{comparable, server};
use gguf_splice::gguf::Model;
use gguf_splice::plan::{self, Parent, SplitOptions};
use gguf_splice::recipe::Recipe;
use gguf_splice::testkit::SynthSpec;

/// Per parent file name: (parent, tensor bytes the child takes from it, header size).
fn taken(
    parents: &[(&str, String)],
    args: &[String],
    split: SplitOptions,
) -> BTreeMap<String, (String, u64, u64)> {
    let parents: Vec<Parent> = parents
        .iter()
        .map(|(n, p)| Parent {
            name: n.to_string(),
            model: Model::open(Path::new(p)).unwrap(),
        })
        .collect();
    let mut recipe = match args.iter().position(|a| a == "--recipe") {
        Some(i) => Recipe::from_file(Path::new(&args[i + 1])).unwrap(),
        None => Recipe::default(),
    };
    let takes: Vec<String> = args
        .windows(2)
        .filter(|w| w[0] == "--take")
        .map(|w| w[1].clone())
        .collect();
    recipe.prepend_takes(&takes).unwrap();
    let plan = plan::build(&parents, &recipe, Path::new("/nonexistent/c.gguf"), split).unwrap();
    let file =
        |s: &gguf_splice::gguf::GgufFile| s.path.file_name().unwrap().to_str().unwrap().to_string();
    let mut out = BTreeMap::new();
    for p in &parents {
        for s in p.model.shards() {
            out.insert(file(s), (p.name.clone(), 0, s.data_offset));
        }
    }
    for t in &plan.tensors {
        for pc in &t.pieces {
            let gguf_splice::plan::Source::Parent(from) = &pc.source else {
                continue;
            };
            let s = &plan.parents[from.parent].model.shards()[from.shard];
            out.get_mut(&file(s)).unwrap().1 += pc.len;
        }
    }
    out
}

/// The files of an output (one, or every shard), as comparable bytes (see [`comparable`]).
fn output_bytes(path: &Path) -> Vec<(String, Vec<u8>)> {
    let dir = path.parent().unwrap();
    let stem = path.file_stem().unwrap().to_str().unwrap().to_string();
    let mut v: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_str().unwrap();
            n == format!("{stem}.gguf") || n.starts_with(&format!("{stem}-0"))
        })
        .map(|p| {
            let n = p.file_name().unwrap().to_str().unwrap().to_string();
            (n.replacen(&stem, "C", 1), comparable(&p))
        })
        .collect();
    v.sort();
    assert!(!v.is_empty(), "no output at {}", path.display());
    v
}

struct Case {
    name: &'static str,
    /// (parent name, fixture file, served remotely?)
    parents: Vec<(&'static str, &'static str, bool)>,
    args: Vec<String>,
    split: SplitOptions,
}

fn cases() -> Vec<Case> {
    let recipe = vec!["--recipe".to_string(), chimera_preset()];
    let experts = vec![
        "--take".to_string(),
        "ffn_(gate|up|down)_exps=r1:experts=1-2:router".to_string(),
    ];
    vec![
        Case {
            name: "whole tensors, single-file parents",
            parents: vec![
                ("v3", "v3-q3mix.gguf", true),
                ("r1", "r1-iq2mix.gguf", true),
            ],
            args: recipe.clone(),
            split: SplitOptions::default(),
        },
        Case {
            name: "whole tensors, sharded r1 (named by its second shard)",
            parents: vec![
                ("v3", "v3-q3mix.gguf", true),
                ("r1", "r1-iq2mix-split-00002-of-00003.gguf", true),
            ],
            args: recipe.clone(),
            split: SplitOptions::default(),
        },
        Case {
            name: "per expert, sharded child",
            parents: vec![("v3", "v3-q3mix.gguf", true), ("r1", "r1-q3mix.gguf", true)],
            args: experts.clone(),
            split: SplitOptions {
                max_bytes: None,
                max_tensors: Some(20),
            },
        },
        Case {
            name: "per expert, local v3 and remote r1",
            parents: vec![
                ("v3", "v3-q3mix.gguf", false),
                ("r1", "r1-q3mix.gguf", true),
            ],
            args: experts,
            split: SplitOptions::default(),
        },
    ]
}

#[test]
fn remote_children_are_byte_identical_to_local_ones_and_fetch_only_what_they_take() {
    let Some(s) =
        server("remote_children_are_byte_identical_to_local_ones_and_fetch_only_what_they_take")
    else {
        return;
    };
    for (k, case) in cases().into_iter().enumerate() {
        let local_out = s.out(&format!("local{k}.gguf"));
        let remote_out = s.out(&format!("remote{k}.gguf"));
        let mut local_args = vec!["splice".to_string()];
        let mut remote_args = vec!["splice".to_string()];
        let mut parent_args = Vec::new();
        for (name, file, remote) in &case.parents {
            local_args.extend(["--parent".into(), format!("{name}={}", s.local(file))]);
            let src = if *remote { s.hf(file) } else { s.local(file) };
            parent_args.extend(["--parent".to_string(), format!("{name}={src}")]);
        }
        remote_args.extend(parent_args.clone());
        for (a, out) in [
            (&mut local_args, &local_out),
            (&mut remote_args, &remote_out),
        ] {
            a.extend(case.args.iter().cloned());
            if let Some(n) = case.split.max_tensors {
                a.extend(["--split-max-tensors".into(), n.to_string()]);
            }
            a.extend(["-o".into(), out.display().to_string(), "--json".into()]);
        }
        assert_ok(&s.run(&strs(&local_args)));
        s.proxy.reset();
        let o = s.run(&strs(&remote_args));
        assert_ok(&o);
        let summary: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(
            output_bytes(&local_out),
            output_bytes(&remote_out),
            "{}: remote child differs from local child",
            case.name
        );

        // Bytes served per remote parent file: what the child takes, plus its header reads.
        let paths: Vec<(&str, String)> = case
            .parents
            .iter()
            .map(|(n, f, _)| (*n, s.local(f)))
            .collect();
        let mut fetched_by_parent: BTreeMap<String, u64> = BTreeMap::new();
        for (file, (parent, take, header)) in taken(&paths, &case.args, case.split) {
            let remote = case.parents.iter().any(|(n, _, r)| *n == parent && *r);
            let data = s.proxy.served(&file, true);
            let all = s.proxy.served(&file, false);
            if !remote {
                assert_eq!(all, 0, "{}: local parent {file} was fetched", case.name);
                continue;
            }
            let headers = all - data;
            assert!(
                data <= take + take / 100,
                "{}: {file}: {data} data bytes served, the child takes {take}",
                case.name
            );
            assert!(
                headers <= (4 * header).max(64 << 10) + 1024,
                "{}: {file}: {headers} header bytes served for a {header}-byte header",
                case.name
            );
            *fetched_by_parent.entry(parent).or_default() += all;
        }
        // The summary's bytes per parent are what the server served (plus nothing else).
        for f in summary["fetched"].as_array().unwrap() {
            let name = f["parent"].as_str().unwrap();
            let got = f["bytes"].as_u64().unwrap();
            let served = fetched_by_parent[name];
            assert!(
                got <= served && served - got < 4096,
                "{}: summary says {got} bytes from '{name}', the server sent {served}",
                case.name
            );
        }

        // verify against the remote parents passes.
        let child = if case.split.is_split() {
            first_shard(s.out.path(), &format!("remote{k}"))
        } else {
            remote_out.clone()
        };
        let mut v = vec!["verify".to_string(), child.display().to_string()];
        v.extend(parent_args);
        v.extend(case.args.iter().cloned());
        assert_ok(&s.run(&strs(&v)));
    }
}

/// A scaled-down synthetic deepseek2 model with every byte written.
fn synth(dir: &Path, name: &str, seed: u8) -> PathBuf {
    let spec = SynthSpec {
        n_layer: 4,
        n_dense: 1,
        n_expert: 16,
        n_embd: 1024,
        n_ff: 2048,
        n_ff_exp: 512,
        n_head: 8,
        q_lora: 256,
        kv_lora: 256,
        vocab: 4000,
        expert_type: gguf_splice::ggml_type::GgmlType::Q3_K,
        other_type: gguf_splice::ggml_type::GgmlType::Q4_K,
    };
    let p = dir.join(name);
    spec.write(&p, seed, true).unwrap();
    p
}

#[test]
fn dry_run_and_inspect_fetch_only_headers() {
    let Some(s) = server("dry_run_and_inspect_fetch_only_headers") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let a = s.add(&synth(tmp.path(), "big-v3.gguf", 1));
    let b = s.add(&synth(tmp.path(), "big-r1.gguf", 2));
    let size = std::fs::metadata(&a).unwrap().len() + std::fs::metadata(&b).unwrap().len();
    let out = s.out("c.gguf").display().to_string();
    let pv = format!("v3={}", s.hf("big-v3.gguf"));
    let pr = format!("r1={}", s.hf("big-r1.gguf"));
    let o = s.run(&[
        "splice",
        "--parent",
        &pv,
        "--parent",
        &pr,
        "--recipe",
        &chimera_preset(),
        "-o",
        &out,
        "--dry-run",
    ]);
    assert_ok(&o);
    let served = s.proxy.served_total();
    assert!(
        served * 100 < size,
        "--dry-run fetched {served} bytes of {size}"
    );
    let requests = s.proxy.log().len();
    assert!(
        requests <= 2 * 3,
        "--dry-run made {requests} requests for 2 files"
    );
    assert!(!s.out("c.gguf").exists());

    s.proxy.reset();
    let o = s.run(&["inspect", "--json", &s.hf("big-r1.gguf")]);
    assert_ok(&o);
    let served = s.proxy.served_total();
    assert!(served * 100 < size / 2, "inspect fetched {served} bytes");
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["architecture"], "deepseek2");
}

#[test]
fn the_token_goes_only_to_the_hub_and_missing_shards_are_named() {
    let Some(s) = server("the_token_goes_only_to_the_hub_and_missing_shards_are_named") else {
        return;
    };
    let out = s.out("c.gguf").display().to_string();
    let pv = format!("v3={}", s.hf("v3-q3mix.gguf"));
    let pr = format!("r1={}", s.hf("r1-iq2mix.gguf"));
    let o = s.run_env(
        &[
            "splice",
            "--parent",
            &pv,
            "--parent",
            &pr,
            "--recipe",
            &chimera_preset(),
            "-o",
            &out,
        ],
        &[("HF_TOKEN", "hf_secret")],
    );
    assert_ok(&o);
    let log = s.proxy.log();
    assert!(log.iter().any(|r| r.listener == "cdn"));
    for r in &log {
        match r.listener {
            "hub" => assert_eq!(r.auth.as_deref(), Some("Bearer hf_secret"), "{r:?}"),
            _ => assert_eq!(r.auth, None, "token sent to the CDN: {r:?}"),
        }
    }

    // A missing shard of a remote set is named.
    std::fs::remove_file(s.served("r1-iq2mix-split-00003-of-00003.gguf")).unwrap();
    let o = s.run(&["inspect", &s.hf("r1-iq2mix-split-00001-of-00003.gguf")]);
    assert_exit(&o, 3);
    let e = stderr(&o);
    assert!(
        e.contains("shard 3 of 3 is missing") && e.contains("r1-iq2mix-split-00003-of-00003.gguf"),
        "{e}"
    );
    // A bad hf:// name is a usage error.
    let o = s.run(&["inspect", "hf://org/repo"]);
    assert_exit(&o, 2);
    assert!(
        stderr(&o).contains("hf://ORG/REPO/PATH/FILE.gguf"),
        "{}",
        stderr(&o)
    );
}

/// A URL's user info, query and fragment may hold a password or a signature: they are never
/// written into the child (`splice.recipe`, `general.base_model.*`), the resume journal,
/// `--json`, progress lines or errors, also after a redirect to a signed target (issue 19).
#[test]
fn secrets_in_urls_are_never_written_or_shown() {
    let Some(s) = server("secrets_in_urls_are_never_written_or_shown") else {
        return;
    };
    const SECRET: &str = "S3cr3tSig";
    let signed = |file: &str| {
        format!(
            "{}/org/repo/resolve/main/{file}?X-Amz-Signature={SECRET}&token={SECRET}#{SECRET}",
            s.proxy.endpoint()
        )
    };
    let clean = |what: &str, bytes: &[u8]| {
        let text = String::from_utf8_lossy(bytes);
        assert!(
            !text.contains(SECRET) && !text.contains("sig=") && !text.contains("pa55w0rd"),
            "{what} shows a secret: {text}"
        );
    };
    let pv = format!("v3={}", signed("v3-q3mix.gguf"));
    let pr = format!("r1={}", s.hf("r1-q3mix.gguf"));
    let preset = chimera_preset();
    let splice = |out: &Path, extra: &[&str], env: &[(&str, &str)]| {
        let o_str = out.display().to_string();
        let mut args = vec![
            "splice", "--parent", &pv, "--parent", &pr, "--recipe", &preset, "-o", &o_str,
        ];
        args.extend_from_slice(extra);
        s.run_env(&args, env)
    };

    // The child, its report and its progress lines.
    let out = s.out("c.gguf");
    let o = splice(&out, &["--json", "--progress", "json"], &[]);
    assert_ok(&o);
    clean("the child", &std::fs::read(&out).unwrap());
    clean("--json", &o.stdout);
    clean("progress", &o.stderr);
    let child = gguf_splice::gguf::GgufFile::open(&out).unwrap();
    let recipe = child.get("splice.recipe").unwrap().as_str().unwrap();
    assert!(recipe.contains("# --parent v3=v3-q3mix.gguf\n"), "{recipe}");
    let o = splice(&s.out("d.gguf"), &["--dry-run", "--json"], &[]);
    assert_ok(&o);
    clean("--dry-run --json", &o.stdout);
    let o = s.run(&["inspect", "--json", &signed("v3-q3mix.gguf")]);
    assert_ok(&o);
    clean("inspect --json", &o.stdout);

    // An assembled child records its parents the same way.
    let a = s.out("a.gguf");
    let o = s.run(&[
        "assemble",
        "--parent",
        &pv,
        "--parent",
        &pr,
        "--experts",
        "r1:2-3,v3:0-1",
        "-o",
        a.to_str().unwrap(),
    ]);
    assert_ok(&o);
    clean("the assembled child", &std::fs::read(&a).unwrap());

    // The journal of an interrupted run; it is resumed with a new signature.
    let r = s.out("r.gguf");
    let o = splice(&r, &[], &[("GGUF_SPLICE_TEST_KILL_AT", "journal:1")]);
    assert!(o.status.code().is_none(), "{}", stderr(&o));
    let journal = s.out(".r.gguf.resume.journal");
    clean("the journal", &std::fs::read(&journal).unwrap());
    let pv2 = format!("v3={}", signed("v3-q3mix.gguf").replace(SECRET, "Renewed"));
    let o_str = r.display().to_string();
    let o = s.run(&[
        "splice", "--parent", &pv2, "--parent", &pr, "--recipe", &preset, "-o", &o_str, "--resume",
    ]);
    assert_ok(&o);
    assert_eq!(std::fs::read(&r).unwrap(), std::fs::read(&out).unwrap());

    // Errors: a password in the URL, and a 404 after the redirect to a signed target.
    let port = s.proxy.hub;
    let o = s.run(&[
        "inspect",
        &format!("http://user:pa55w0rd@127.0.0.1:{port}/org/repo/resolve/main/v3-q3mix.gguf"),
    ]);
    assert_exit(&o, 2);
    clean("the refusal of user info", &o.stderr);
    let o = s.run(&["inspect", &s.hf("missing.gguf")]);
    assert_exit(&o, 4);
    clean("a 404 after a redirect", &o.stderr);
    assert!(
        stderr(&o).contains("/org/repo/resolve/main/missing.gguf"),
        "{}",
        stderr(&o)
    );
}

/// Shard jobs and mixes read local parents only: with a remote parent both are refused as a
/// usage error naming the parent, before anything is written at the output.
#[test]
fn shard_jobs_and_mixes_refuse_remote_parents_before_writing() {
    let Some(s) = server("shard_jobs_and_mixes_refuse_remote_parents_before_writing") else {
        return;
    };
    let out = s.out("c.gguf");
    let o_str = out.display().to_string();
    let pv = format!("v3={}", s.hf("v3-q3mix.gguf"));
    let pr = format!("r1={}", s.local("r1-q3mix.gguf"));
    let run = |extra: &[&str]| {
        let mut args = vec!["splice", "--parent", &pv, "--parent", &pr, "-o", &o_str];
        args.extend_from_slice(extra);
        s.run(&args)
    };

    let o = run(&["--recipe", &chimera_preset(), "--shard", "1"]);
    assert_exit(&o, 2);
    let e = stderr(&o);
    assert!(
        e.contains("parent 'v3' is remote") && e.contains("shard jobs"),
        "{e}"
    );
    assert!(!out.exists());

    // A mix of a remote parent is refused when planned, with or without a ggml.
    {
        let recipe = s.out("mix.toml");
        std::fs::write(
            &recipe,
            "[[rules]]\nrole = 'routed_experts'\nmix = { r1 = 0.75, v3 = 0.25 }\n",
        )
        .unwrap();
        // Refused when planned, so a dry run says it too.
        for dry in [&[][..], &["--dry-run"][..]] {
            let mut args = vec!["--recipe", recipe.to_str().unwrap()];
            args.extend_from_slice(dry);
            let o = run(&args);
            assert_exit(&o, 2);
            let e = stderr(&o);
            assert!(
                e.contains("mixes parent 'v3', which is remote") && e.contains("download it"),
                "{e}"
            );
            assert!(!out.exists());
        }
        assert_eq!(
            s.proxy.served("v3-q3mix.gguf", true),
            0,
            "tensor data fetched for a refused mix"
        );
    }
}

#[test]
fn a_batch_manifest_reads_remote_parents_for_whole_runs_and_refuses_them_to_shard_jobs() {
    let Some(s) = server(
        "a_batch_manifest_reads_remote_parents_for_whole_runs_and_refuses_them_to_shard_jobs",
    ) else {
        return;
    };
    let preset = chimera_preset();
    // The local reference: the same child spliced from the fixtures themselves.
    let local = s.out("local.gguf");
    assert_ok(&s.run(&[
        "splice",
        "--parent",
        &format!("v3={}", s.local("v3-q3mix.gguf")),
        "--parent",
        &format!("r1={}", s.local("r1-q3mix.gguf")),
        "--recipe",
        &preset,
        "--split-max-tensors",
        "40",
        "-o",
        local.to_str().unwrap(),
        "-q",
    ]));
    // One parent by hf:// name, one by http:// URL: both are read in place.
    let dir = s.out("farm");
    std::fs::create_dir(&dir).unwrap();
    let m = dir.join("m.toml");
    let r1_url = format!("{}/org/repo/resolve/main/r1-q3mix.gguf", s.proxy.endpoint());
    std::fs::write(
        &m,
        format!(
            "[parents]\nv3 = '{}'\nr1 = '{r1_url}'\n[[children]]\noutput = 'remote.gguf'\n\
             recipe = '{preset}'\nsplit_max_tensors = 40\n",
            s.hf("v3-q3mix.gguf")
        ),
    )
    .unwrap();
    let m = m.to_str().unwrap();
    let batch = |args: &[&str]| {
        let mut all = vec!["batch", m];
        all.extend_from_slice(args);
        s.run(&all)
    };
    assert_ok(&batch(&["--dry-run"]));
    assert_eq!(names(&dir), ["m.toml"]);

    // A shard job refuses a remote parent as `splice --shard` does, before writing.
    let o = batch(&["--job", "0"]);
    assert_exit(&o, 2);
    let e = stderr(&o);
    assert!(
        e.contains("parent 'v3' is remote") && e.contains("shard jobs"),
        "{e}"
    );
    assert_eq!(names(&dir), ["m.toml"]);

    // A whole run fetches what the child takes and writes what a local splice writes.
    let o = batch(&["--json", "-q"]);
    assert_ok(&o);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let shards = v["children"][0]["shard_count"].as_u64().unwrap();
    assert!(shards > 1, "{v}");
    assert_eq!(v["children"][0]["written"], shards);
    assert_eq!(output_bytes(&local), output_bytes(&dir.join("remote.gguf")));
    assert!(s.proxy.served("r1-q3mix.gguf", true) > 0);
    // Run again: the complete child is skipped; status and verify agree.
    let o = batch(&["--json", "-q"]);
    assert_ok(&o);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["children"][0]["skipped"], shards);
    assert_ok(&batch(&["--status"]));
    assert_ok(&batch(&["--verify"]));

    // A parent that is not a URL that can be read is the manifest's fault.
    std::fs::write(
        dir.join("bad.toml"),
        "[parents]\nv3 = 'hf://org/repo'\n[[children]]\noutput = 'x.gguf'\n",
    )
    .unwrap();
    let o = s.run(&["batch", dir.join("bad.toml").to_str().unwrap(), "--dry-run"]);
    assert_exit(&o, 3);
    assert!(
        stderr(&o).contains("hf://ORG/REPO/PATH/FILE.gguf"),
        "{}",
        stderr(&o)
    );
}
