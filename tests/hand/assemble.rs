//! `assemble` on hand-built parents whose bytes say where they came from (parent, tensor,
//! expert): every output expert, router row and bias element checked against the parent and
//! expert the plan names; metadata of dense -> MoE; the dry-run, `verify --assembled` and
//! `diff` of assembled children. Refusals are in assemble_refusals.rs.

use crate::assemble_parents::*;
use crate::common::*;
use gguf_splice::assemble::spec::{ExpertList, RouterSpec};
use gguf_splice::assemble::{self, AssembleError, Selection};
use gguf_splice::compare::{self, CompareOptions, Mismatch, TensorStatus};
use gguf_splice::ggml_type::GgmlType;
use gguf_splice::gguf::Model;
use gguf_splice::plan::{Parent, SplitOptions};

#[test]
fn dense_parents_become_experts_of_a_llama_moe() {
    let dir = tempfile::tempdir().unwrap();
    let parents = [
        open(dir.path(), "a", &dense(1, "llama", GgmlType::Q4_K, 256)),
        open(dir.path(), "b", &dense(2, "llama", GgmlType::Q4_K, 256)),
    ];
    let mut opts = options(list("a,b,a"));
    opts.router = Some(RouterSpec::Random(7));
    let out = dir.path().join("moe.gguf");
    let m = assemble_to(&parents, &opts, &out);
    assert_eq!(m.architecture(), Some("llama"));
    assert_eq!(u64_key(&m, "llama.expert_count"), Some(3));
    assert_eq!(u64_key(&m, "llama.expert_used_count"), Some(2));
    assert_eq!(u64_key(&m, "llama.feed_forward_length"), Some(256));
    // Each block: the router right before its first expert tensor, then the stacked tensors
    // where the dense ones were; no dense FFN left.
    let names: Vec<String> = m.tensors().map(|t| t.info.name.clone()).collect();
    let at = |n: &str| names.iter().position(|x| x == n).unwrap();
    assert_eq!(
        at("blk.0.ffn_gate_inp.weight") + 1,
        at("blk.0.ffn_down_exps.weight")
    );
    assert!(!names.iter().any(|n| n.ends_with("ffn_up.weight")));
    for l in 0..2 {
        for w in ["gate", "up", "down"] {
            let name = format!("blk.{l}.ffn_{w}_exps.weight");
            let t = m.tensor(&name).unwrap();
            assert_eq!(t.info.dims.last(), Some(&3));
            let bytes = tensor_bytes(&m, &name);
            let dense_name = format!("blk.{l}.ffn_{w}.weight");
            let s = bytes.len() / 3;
            for (e, p) in [(0, &parents[0]), (1, &parents[1]), (2, &parents[0])] {
                assert_eq!(
                    &bytes[e * s..(e + 1) * s],
                    tensor_bytes(&p.model, &dense_name),
                    "{name} expert {e}"
                );
            }
        }
        // Router rows: the documented generator, row e of layer l.
        let r = tensor_bytes(&m, &format!("blk.{l}.ffn_gate_inp.weight"));
        let want: Vec<u8> = (0..3)
            .flat_map(|e| assemble::router::random_row(7, l, e, D_EMBD))
            .flat_map(f32::to_le_bytes)
            .collect();
        assert_eq!(r, want);
    }
    // Everything else is the base's, byte for byte.
    for name in ["token_embd.weight", "blk.1.attn_q.weight", "output.weight"] {
        assert_eq!(
            tensor_bytes(&m, name),
            tensor_bytes(&parents[0].model, name)
        );
    }
    // verify reads the plan: every expert from the dense tensor it came from.
    let plan = assemble::plan(&parents, &opts, &out, SplitOptions::default()).unwrap();
    let r = compare::verify_plan(&m, &plan, &CompareOptions::default()).unwrap();
    assert!(r.passed(), "{}", gguf_splice::render::verify_text(&r));
    // A router byte changed: the made router no longer matches what made it.
    let t = m.tensor("blk.1.ffn_gate_inp.weight").unwrap();
    let at = (t.file_offset + 9) as usize;
    let mut bytes = std::fs::read(&out).unwrap();
    bytes[at] ^= 1;
    std::fs::write(&out, bytes).unwrap();
    let m = Model::open(&out).unwrap();
    let r = compare::verify_plan(&m, &plan, &CompareOptions::default()).unwrap();
    let ms = &r.recipe.as_ref().unwrap().mismatches;
    assert!(
        matches!(&ms[..], [Mismatch::BytesDiffer { tensor, expected, first_offset: Some(9), .. }]
            if tensor == "blk.1.ffn_gate_inp.weight" && expected == "made: router random:7"),
        "{ms:?}"
    );
}

#[test]
fn qwen3_becomes_qwen3moe_with_its_keys_renamed() {
    let dir = tempfile::tempdir().unwrap();
    let parents = [open(
        dir.path(),
        "q",
        &dense(1, "qwen3", GgmlType::Q4_K, 512),
    )];
    let mut opts = options(list("q,q"));
    opts.experts_used = Some(1);
    let m = assemble_to(&parents, &opts, &dir.path().join("moe.gguf"));
    assert_eq!(m.architecture(), Some("qwen3moe"));
    assert_eq!(u64_key(&m, "qwen3moe.expert_count"), Some(2));
    assert_eq!(u64_key(&m, "qwen3moe.expert_used_count"), Some(1));
    assert_eq!(
        u64_key(&m, "qwen3moe.expert_feed_forward_length"),
        Some(512)
    );
    assert_eq!(u64_key(&m, "qwen3moe.block_count"), Some(2));
    assert!(
        m.first()
            .kvs()
            .iter()
            .all(|kv| !kv.key.starts_with("qwen3."))
    );
    // Uniform (the default) router: all zero.
    let r = tensor_bytes(&m, "blk.1.ffn_gate_inp.weight");
    assert_eq!(r, vec![0u8; (D_EMBD * 2 * 4) as usize]);
    assert!(m.tensor("blk.0.attn_q_norm.weight").is_some());
}

#[test]
fn moe_experts_router_rows_and_bias_follow_the_list() {
    let dir = tempfile::tempdir().unwrap();
    let parents = moe_parents(dir.path());
    let opts = options(list("r1:3,v3:0-1,r1:0-1"));
    let m = assemble_to(&parents, &opts, &dir.path().join("moe.gguf"));
    assert_eq!(u64_key(&m, "deepseek2.expert_count"), Some(5));
    let want = [(R1, 3), (V3, 0), (V3, 1), (R1, 0), (R1, 1)];
    for l in 1..3 {
        for suffix in [
            "ffn_gate_exps.weight",
            "ffn_up_exps.weight",
            "ffn_down_exps.weight",
            "ffn_gate_inp.weight",
            "exp_probs_b.bias",
        ] {
            let name = format!("blk.{l}.{suffix}");
            let bytes = tensor_bytes(&m, &name);
            assert_eq!(m.tensor(&name).unwrap().info.dims.last(), Some(&5));
            let s = bytes.len() / 5;
            for (e, (p, src)) in want.iter().enumerate() {
                let parent_bytes = expected_bytes(*p, GgmlType::Q3_K, &name);
                assert_eq!(
                    &bytes[e * s..(e + 1) * s],
                    expert_slice(&parent_bytes, *src),
                    "{name}: output expert {e}"
                );
            }
        }
    }
    // The shared expert, attention and the dense block are the base's.
    for name in [
        "blk.1.ffn_up_shexp.weight",
        "blk.2.attn_q_a.weight",
        "blk.0.ffn_up.weight",
    ] {
        assert_eq!(
            tensor_bytes(&m, name),
            expected_bytes(V3, GgmlType::Q3_K, name)
        );
    }
}

#[test]
fn keeping_every_expert_copies_every_tensor_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let parents = [open(dir.path(), "v3", &parent(V3, GgmlType::Q3_K))];
    let opts = options(Selection::Keep(ExpertList::parse("v3:0-3").unwrap()));
    let m = assemble_to(&parents, &opts, &dir.path().join("same.gguf"));
    for t in parents[0].model.tensors() {
        assert_eq!(
            tensor_bytes(&m, &t.info.name),
            tensor_bytes(&parents[0].model, &t.info.name)
        );
    }
    // Prune to experts 1 and 3.
    let opts = options(Selection::Keep(ExpertList::parse("v3:1,3").unwrap()));
    let m = assemble_to(&parents, &opts, &dir.path().join("half.gguf"));
    assert_eq!(u64_key(&m, "deepseek2.expert_count"), Some(2));
    let b = tensor_bytes(&m, "blk.2.ffn_gate_inp.weight");
    let p = expected_bytes(V3, GgmlType::Q3_K, "blk.2.ffn_gate_inp.weight");
    assert_eq!(b, [expert_slice(&p, 1), expert_slice(&p, 3)].concat());
    // --keep is for one parent.
    let two = moe_parents(dir.path());
    let e = err(
        &two,
        &options(Selection::Keep(ExpertList::parse("v3:0").unwrap())),
    );
    assert!(
        matches!(e, AssembleError::PruneNeedsOneParent { .. }),
        "{e}"
    );
}

#[test]
fn dry_run_shows_each_experts_source_and_the_router() {
    let s = setup(GgmlType::Q3_K);
    let out = s.dir.path().join("u.gguf");
    let o = s.run(
        "assemble",
        None,
        &[
            "--experts",
            "r1:2-3,v3:0-1",
            "--experts-used",
            "2",
            "-o",
            out.to_str().unwrap(),
            "--dry-run",
        ],
    );
    assert_ok(&o);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("assembly: deepseek2, 4 experts per layer, 2 used per token"),
        "{text}"
    );
    assert!(
        text.contains("experts of blk.1-2: 0-1 <- r1[2-3], 2-3 <- v3[0-1]"),
        "{text}"
    );
    assert!(text.contains("r1[2-3]→0-1 v3[0-1]→2-3"), "{text}");
    assert!(!out.exists());
    let o = s.run(
        "assemble",
        None,
        &[
            "--experts",
            "r1:2-3,v3:0-1",
            "-o",
            out.to_str().unwrap(),
            "--dry-run",
            "--json",
        ],
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        v["assembly"]["layers"][0]["experts"][0],
        serde_json::json!({"parent": "r1", "expert": 2})
    );
    let t = v["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "blk.1.ffn_up_exps.weight")
        .unwrap();
    assert_eq!(t["sources"][0]["src_experts"], serde_json::json!([2, 3]));
    assert_eq!(t["sources"][0]["experts"], serde_json::json!([0, 1]));
}

#[test]
fn verify_checks_each_output_expert_against_its_source() {
    let s = setup(GgmlType::Q3_K);
    let out = s.dir.path().join("u.gguf");
    let args = ["--experts", "r1:2-3,v3:0-1"];
    let mut w = args.to_vec();
    let o_path = out.to_str().unwrap();
    w.extend(["-o", o_path, "-q"]);
    assert_ok(&s.run("assemble", None, &w));
    let mut v = vec!["--assembled"];
    v.extend(args);
    assert_ok(&s.run("verify", Some(o_path), &v));
    // Without --assembled the experts options are refused; plain verify of an assembled
    // child finds experts that match no parent at their own index.
    assert_exit(&s.run("verify", Some(o_path), &args), 2);
    // Flip a byte in output expert 1 of blk.2.ffn_down_exps (r1's expert 3).
    let m = Model::open(&out).unwrap();
    let t = m.tensor("blk.2.ffn_down_exps.weight").unwrap();
    let at = t.file_offset + t.info.n_bytes / 4 + 5;
    let mut bytes = std::fs::read(&out).unwrap();
    bytes[at as usize] ^= 0xff;
    std::fs::write(&out, bytes).unwrap();
    let plan = {
        let parents = vec![
            Parent {
                name: "v3".into(),
                model: Model::open(&s.v3).unwrap(),
            },
            Parent {
                name: "r1".into(),
                model: Model::open(&s.r1).unwrap(),
            },
        ];
        let opts = options(list("r1:2-3,v3:0-1"));
        let child = Model::open(&out).unwrap();
        let p = assemble::plan(&parents, &opts, &out, SplitOptions::default()).unwrap();
        compare::verify_plan(&child, &p, &CompareOptions::default()).unwrap()
    };
    assert!(!plan.passed());
    let ms = &plan.recipe.as_ref().unwrap().mismatches;
    assert_eq!(ms.len(), 1, "{ms:?}");
    match &ms[0] {
        Mismatch::BytesDiffer {
            tensor,
            experts,
            expected,
            first_offset,
            ..
        } => {
            assert_eq!(tensor, "blk.2.ffn_down_exps.weight");
            assert_eq!(
                experts.clone(),
                Some(vec![std::ops::Range { start: 1, end: 2 }])
            );
            assert!(
                expected.contains("r1") && expected.contains("experts 2-3"),
                "{expected}"
            );
            assert_eq!(*first_offset, Some(t.info.n_bytes / 4 + 5));
        }
        m => panic!("{m:?}"),
    }
    let o = s.run("verify", Some(o_path), &v);
    assert_exit(&o, 1);
}

#[test]
fn diff_says_which_expert_of_a_each_moved_expert_is() {
    let dir = tempfile::tempdir().unwrap();
    let parents = moe_parents(dir.path());
    let m = assemble_to(
        &parents,
        &options(list("r1:3,v3:2,v3:0-1")),
        &dir.path().join("r.gguf"),
    );
    let r = compare::diff(&parents[0].model, &m, &CompareOptions::default()).unwrap();
    // (Not exp_probs_b: its 4-byte marker elements repeat, so several experts match.)
    for name in ["blk.1.ffn_up_exps.weight", "blk.2.ffn_gate_inp.weight"] {
        assert_eq!(
            r.tensor(name).unwrap().status,
            TensorStatus::ExpertsMoved {
                a: 4,
                b: 4,
                from_a: vec![None, Some(2), Some(0), Some(1)]
            },
            "{name}"
        );
    }
    assert_eq!(
        r.tensor("blk.1.ffn_up_shexp.weight").unwrap().status,
        TensorStatus::Identical
    );
    // A prune: fewer experts, each found in the parent.
    let one = [open(dir.path(), "v3", &parent(V3, GgmlType::Q3_K))];
    let keep = options(Selection::Keep(ExpertList::parse("v3:3,1").unwrap()));
    let p = assemble_to(&one, &keep, &dir.path().join("p.gguf"));
    let r = compare::diff(&one[0].model, &p, &CompareOptions::default()).unwrap();
    assert_eq!(
        r.tensor("blk.1.ffn_down_exps.weight").unwrap().status,
        TensorStatus::ExpertsMoved {
            a: 4,
            b: 2,
            from_a: vec![Some(3), Some(1)]
        }
    );
    let text = gguf_splice::render::diff_text(&r);
    assert!(
        text.contains("experts moved (4 in A, 2 in B): 0 = A 3, 1 = A 1"),
        "{text}"
    );
    // Identical experts in another order are each found (the same index first).
    let copies = assemble_to(
        &one,
        &options(list("v3:0,v3:0")),
        &dir.path().join("c.gguf"),
    );
    let r = compare::diff(&one[0].model, &copies, &CompareOptions::default()).unwrap();
    assert_eq!(
        r.tensor("blk.2.ffn_up_exps.weight").unwrap().status,
        TensorStatus::ExpertsMoved {
            a: 4,
            b: 2,
            from_a: vec![Some(0), Some(0)]
        }
    );
}

#[test]
fn a_parent_with_fused_gate_up_experts_is_read_in_the_base_layout() {
    let dir = tempfile::tempdir().unwrap();
    let parents = [
        open(dir.path(), "v3", &fused_parent(V3, GgmlType::Q3_K)),
        open(dir.path(), "r1", &parent(R1, GgmlType::Q3_K)),
    ];
    let out = dir.path().join("f.gguf");
    let opts = options(list("v3:1,r1:2-3"));
    let m = assemble_to(&parents, &opts, &out);
    // The base's layout: fused, 3 experts; r1's separate gate and up become fused experts.
    let name = "blk.1.ffn_gate_up_exps.weight";
    assert_eq!(m.tensor(name).unwrap().info.dims, vec![N_EMBD, 4, 3]);
    let bytes = tensor_bytes(&m, name);
    let s = bytes.len() / 3;
    let v3 = fused_bytes(V3, GgmlType::Q3_K, 1);
    let r1 = fused_bytes(R1, GgmlType::Q3_K, 1);
    let fused_expert = |b: &[u8], e: usize| b[e * s..(e + 1) * s].to_vec();
    assert_eq!(&bytes[..s], fused_expert(&v3, 1));
    assert_eq!(&bytes[s..2 * s], fused_expert(&r1, 2));
    assert_eq!(&bytes[2 * s..], fused_expert(&r1, 3));
    let plan = assemble::plan(&parents, &opts, &out, SplitOptions::default()).unwrap();
    let r = compare::verify_plan(&m, &plan, &CompareOptions::default()).unwrap();
    assert!(r.passed(), "{}", gguf_splice::render::verify_text(&r));
}
