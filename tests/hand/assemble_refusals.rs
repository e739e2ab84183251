//! `assemble` refuses what cannot be one MoE, each with its named reason and nothing left
//! behind: heterogeneous parents (architecture, hyperparameters, tokenizer, attention layout,
//! FFN types), mixed dense and MoE parents, counts that do not fit `expert_used_count` or
//! grouped routing, bad experts lists, more experts than the loaders accept.

use std::path::PathBuf;

use crate::assemble_parents::*;
use crate::common::*;
use gguf_splice::assemble::compat::Incompatibility;
use gguf_splice::assemble::spec::{ExpertList, RouterSpec};
use gguf_splice::assemble::{self, AssembleError, Selection};
use gguf_splice::ggml_type::GgmlType;
use gguf_splice::plan::{IK_LLAMA_MAX_EXPERTS, LLAMA_MAX_EXPERTS, PlanError, SplitOptions};
use gguf_splice::testkit::GgufBuilder;

#[test]
fn expert_counts_are_checked_against_used_and_grouped_routing() {
    let dir = tempfile::tempdir().unwrap();
    let parents = moe_parents(dir.path());
    let mut opts = options(list("v3:0"));
    opts.experts_used = Some(2);
    let e = err(&parents, &opts);
    assert!(
        matches!(
            e,
            AssembleError::ExpertsUsed {
                used: 2,
                count: 1,
                ..
            }
        ),
        "{e}"
    );
    let e = err(&parents, &options(list("v3:0-4")));
    assert!(
        matches!(
            e,
            AssembleError::ExpertOutOfRange {
                expert: 4,
                count: 4,
                ..
            }
        ),
        "{e}"
    );
    let e = err(&parents, &options(list("x:0")));
    assert!(matches!(e, AssembleError::UnknownParent { .. }), "{e}");
    // A base that routes in 2 groups of experts, 1 group used.
    let grouped = header(V3)
        .kv_u32("deepseek2.expert_group_count", 2)
        .kv_u32("deepseek2.expert_group_used_count", 1);
    let mut b = grouped;
    for (name, dims, ty) in layout(GgmlType::Q3_K) {
        b = b.tensor(&name, &dims, ty, V3);
    }
    let g = [open(dir.path(), "g", &b)];
    let keep = |t: &str| options(Selection::Keep(ExpertList::parse(t).unwrap()));
    let e = err(&g, &keep("g:0-2"));
    assert!(
        matches!(
            e,
            AssembleError::ExpertGroups {
                count: 3,
                groups: 2,
                ..
            }
        ),
        "{e}"
    );
    let e = err(&g, &keep("g:0-1"));
    assert!(
        matches!(e, AssembleError::ExpertGroups { count: 2, .. }),
        "{e}"
    );
    // 4 experts in 2 groups, 1 used: top-k picks among 2 experts, so at most 2.
    let mut k3 = keep("g:0-3");
    k3.experts_used = Some(3);
    let e = err(&g, &k3);
    assert!(
        matches!(e, AssembleError::ExpertsUsed { max: 2, .. }),
        "{e}"
    );
    assert!(
        assemble::plan(
            &g,
            &keep("g:0-3"),
            &dir.path().join("g.gguf"),
            SplitOptions::default()
        )
        .is_ok()
    );
}

/// The reasons of an `Incompatible` error.
fn reasons(e: AssembleError) -> Vec<Incompatibility> {
    match e {
        AssembleError::Incompatible { reasons } => reasons,
        other => panic!("not Incompatible: {other}"),
    }
}

#[test]
fn heterogeneous_parents_are_refused_with_every_reason() {
    let dir = tempfile::tempdir().unwrap();
    let d = |id, b: &GgufBuilder| open(dir.path(), &format!("p{id}"), b);
    let a = d(1, &dense(1, "llama", GgmlType::Q4_K, 256));
    let check = |other: GgufBuilder| {
        reasons(err(
            &[d(1, &dense(1, "llama", GgmlType::Q4_K, 256)), d(2, &other)],
            &options(Selection::All),
        ))
    };

    let r = check(dense(2, "qwen3", GgmlType::Q4_K, 256));
    assert!(
        matches!(&r[0], Incompatibility::Architecture { arch, .. } if arch == "qwen3"),
        "{r:?}"
    );
    let r = check(dense(2, "llama", GgmlType::Q4_K, 512));
    assert!(
        r.iter().any(|x| matches!(x, Incompatibility::Hyperparameter { key, .. } if key == "llama.feed_forward_length")),
        "{r:?}"
    );
    assert!(
        r.iter()
            .any(|x| matches!(x, Incompatibility::FfnTensor { .. })),
        "{r:?}"
    );
    let r = check(dense(2, "llama", q5k(), 256));
    assert_eq!(r.len(), 3, "one reason per matrix, layers grouped: {r:?}");
    assert!(matches!(
        &r[0],
        Incompatibility::FfnType { found, expected: GgmlType::Q4_K, layers, .. } if *found == q5k() && layers == "0-1"
    ));
    assert!(
        r[0].to_string().contains("llama-quantize"),
        "the way out is named: {}",
        r[0]
    );
    let r = check(
        dense(2, "llama", GgmlType::Q4_K, 256).kv_str_array("tokenizer.ggml.merges", &["a b"]),
    );
    assert!(
        matches!(&r[0], Incompatibility::Tokenizer { keys, .. } if keys == &["tokenizer.ggml.merges"]),
        "{r:?}"
    );
    let heads = dense_keys(2, "llama", GgmlType::Q4_K, 256, 8, D_EMBD as u32);
    let r = check(heads);
    assert!(r.iter().any(|x| matches!(x, Incompatibility::Hyperparameter { key, .. } if key.ends_with("head_count"))), "{r:?}");
    let embd = dense_keys(2, "llama", GgmlType::Q4_K, 256, 4, 512);
    let r = check(embd);
    assert!(r.iter().any(|x| matches!(x, Incompatibility::Hyperparameter { key, .. } if key.ends_with("embedding_length"))), "{r:?}");
    // Attention of another shape.
    let mut other = dense(2, "llama", GgmlType::Q4_K, 256);
    other = other.tensor("blk.1.attn_v.weight", &[D_EMBD, 128], GgmlType::Q4_K, 2);
    let r = check(other);
    assert!(
        matches!(&r[0], Incompatibility::AttentionLayout { tensor, .. } if tensor == "blk.1.attn_v.weight"),
        "{r:?}"
    );
    // Several reasons at once are all named.
    let r = check(dense(2, "llama", q5k(), 256).kv_str_array("tokenizer.ggml.merges", &["a b"]));
    assert!(r.len() >= 4, "{r:?}");

    // Dense and MoE parents do not mix; an architecture without an MoE form is refused.
    let moe = open(dir.path(), "m", &parent(V3, GgmlType::Q3_K));
    let e = err(&[a, moe], &options(Selection::All));
    assert!(matches!(e, AssembleError::MixedKinds { .. }), "{e}");
    let gemma = open(dir.path(), "g", &dense(3, "gemma3", GgmlType::Q4_K, 256));
    let e = err(&[gemma], &options(Selection::All));
    assert!(
        matches!(e, AssembleError::UnsupportedArchitecture { .. }),
        "{e}"
    );
    // A router for MoE parents is refused: their rows follow their experts.
    let mut o = options(Selection::All);
    o.router = Some(RouterSpec::Uniform);
    let e = err(&moe_parents(dir.path()), &o);
    assert!(matches!(e, AssembleError::RouterForMoe), "{e}");
}

#[test]
fn the_cli_refuses_heterogeneous_parents_and_leaves_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let a = write(
        dir.path(),
        "a.gguf",
        &dense(1, "llama", GgmlType::Q4_K, 256).build(),
    );
    let cases: [(&str, GgufBuilder, &str); 3] = [
        (
            "arch",
            dense(2, "qwen3", GgmlType::Q4_K, 256),
            "architecture",
        ),
        ("types", dense(2, "llama", q5k(), 256), "quant types"),
        (
            "ff",
            dense(2, "llama", GgmlType::Q4_K, 512),
            "feed_forward_length",
        ),
    ];
    for (name, b, says) in cases {
        let other = write(dir.path(), &format!("{name}.gguf"), &b.build());
        let out = dir.path().join(format!("out-{name}.gguf"));
        let o = run(&[
            "assemble",
            "--parent",
            &format!("a={}", a.display()),
            "--parent",
            &format!("b={}", other.display()),
            "-o",
            out.to_str().unwrap(),
        ]);
        assert_exit(&o, 3);
        assert!(stderr(&o).contains(says), "{name}: {}", stderr(&o));
        assert!(!out.exists());
        let left: Vec<PathBuf> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.to_string_lossy().contains("out-"))
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }
    // A bad experts list is a usage error.
    let o = run(&[
        "assemble",
        "--parent",
        &format!("a={}", a.display()),
        "--experts",
        "a:3-1",
        "-o",
        "x.gguf",
    ]);
    assert_exit(&o, 2);
}

#[test]
fn an_imatrix_that_cannot_be_read_is_an_io_error_with_a_plain_message() {
    let dir = tempfile::tempdir().unwrap();
    let v3 = write(dir.path(), "v3.gguf", &parent(V3, GgmlType::Q3_K).build());
    let missing = dir.path().join("missing.gguf");
    let out = dir.path().join("out.gguf");
    for imatrix in [missing.to_str().unwrap(), "/dev/zero"] {
        let o = run(&[
            "assemble",
            "--parent",
            &format!("v3={}", v3.display()),
            "--keep-top",
            "2",
            "--imatrix",
            imatrix,
            "-o",
            out.to_str().unwrap(),
        ]);
        assert_exit(&o, 4);
        let e = stderr(&o);
        assert!(e.contains(imatrix) && !e.contains(".dat"), "{e}");
        assert!(!out.exists());
    }
}

/// `n` copies of dense parent `a` as experts: 'a,a,...'.
fn copies(n: u64) -> String {
    vec!["a"; n as usize].join(",")
}

#[test]
fn more_experts_than_the_loaders_accept_are_refused_unless_forced() {
    let dir = tempfile::tempdir().unwrap();
    let over = LLAMA_MAX_EXPERTS + 1;
    let a = [open(
        dir.path(),
        "a",
        &dense(1, "llama", GgmlType::Q4_K, 256),
    )];
    let mut opts = options(list(&copies(over)));
    let e = err(&a, &opts);
    assert!(
        matches!(
            e,
            AssembleError::Plan(PlanError::TooManyExperts {
                count,
                limit: LLAMA_MAX_EXPERTS,
                program: "llama.cpp",
            }) if count == over
        ),
        "{e}"
    );
    opts.force_expert_count = true;
    let out = dir.path().join("out.gguf");
    let plan = assemble::plan(&a, &opts, &out, SplitOptions::default()).unwrap();
    assert!(
        plan.warnings
            .iter()
            .any(|w| w.contains(&format!("{over} experts per layer"))
                && w.contains("llama.cpp loads at most 1024")),
        "{:?}",
        plan.warnings
    );
    // An ik_llama.cpp child: ik's own limit.
    let ik = [open(
        dir.path(),
        "a",
        &dense(1, "llama", GgmlType::IQ4_KS, 256),
    )];
    let e = err(&ik, &options(list(&copies(IK_LLAMA_MAX_EXPERTS + 1))));
    assert!(
        matches!(
            e,
            AssembleError::Plan(PlanError::TooManyExperts {
                program: "ik_llama.cpp",
                limit: IK_LLAMA_MAX_EXPERTS,
                ..
            })
        ),
        "{e}"
    );

    // The CLI: refused (exit 3, no file), then written with a warning when forced.
    let parent = format!(
        "a={}",
        write(
            dir.path(),
            "a.gguf",
            &dense(1, "llama", GgmlType::Q4_K, 256).build()
        )
        .display()
    );
    let experts = copies(over);
    let args = [
        "assemble",
        "--parent",
        &parent,
        "--experts",
        &experts,
        "-o",
        out.to_str().unwrap(),
    ];
    let o = run(&args);
    assert_exit(&o, 3);
    assert!(
        stderr(&o).contains("--force-expert-count"),
        "{}",
        stderr(&o)
    );
    assert!(!out.exists());
    let mut forced = args.to_vec();
    forced.extend(["--force-expert-count", "--dry-run"]);
    let o = run(&forced);
    assert_ok(&o);
    let text = format!("{}{}", String::from_utf8_lossy(&o.stdout), stderr(&o));
    assert!(
        text.contains("llama.cpp loads at most 1024 (LLAMA_MAX_EXPERTS): the child loads only"),
        "{text}"
    );
}
