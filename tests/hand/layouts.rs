//! Parents of different converter layouts: routed experts fused (`ffn_gate_up_exps`, as
//! `convert_hf_to_gguf.py --fuse-gate-up-exps` writes them) or separate, and the two MLA
//! attention layouts. Expected bytes are assembled in the test from the parents' markers
//! (`tests/common`), independently of the planner.

use std::path::Path;

use crate::common::*;
use gguf_splice::ggml_type::GgmlType;
use gguf_splice::gguf::Model;

const Q: GgmlType = GgmlType::Q3_K;

/// `splice --parent v3=V3 --parent r1=R1 -o OUT EXTRA`.
fn splice(v3: &Path, r1: &Path, out: &Path, extra: &[&str]) -> std::process::Output {
    SpliceCmd::new("splice")
        .parents(&[("v3", v3), ("r1", r1)])
        .arg("-o")
        .arg(out)
        .args(extra)
        .output()
}

/// `verify CHILD --parent v3=V3 --parent r1=R1 EXTRA`.
fn verify(child: &Path, v3: &Path, r1: &Path, extra: &[&str]) -> std::process::Output {
    SpliceCmd::new("verify")
        .arg(child)
        .parents(&[("v3", v3), ("r1", r1)])
        .args(extra)
        .output()
}

#[test]
fn a_fused_donor_gives_its_experts_to_a_separate_base_in_the_base_layout() {
    let d = Dir::new();
    let v3 = d.file("v3.gguf", &parent(V3, Q).build());
    let r1 = d.file("r1-fused.gguf", &fused_parent(R1, Q).build());
    let out = d.path("child.gguf");
    assert_ok(&splice(
        &v3,
        &r1,
        &out,
        &["--recipe", &chimera_preset(), "-q"],
    ));

    let child = Model::open(&out).unwrap();
    let base = Model::open(&v3).unwrap();
    let names: Vec<_> = child.tensors().map(|t| t.info.name.clone()).collect();
    let base_names: Vec<_> = base.tensors().map(|t| t.info.name.clone()).collect();
    assert_eq!(names, base_names, "the child keeps the base's layout");
    for t in base.tensors() {
        let name = &t.info.name;
        assert_eq!(child.tensor(name).unwrap().info.dims, t.info.dims, "{name}");
        // r1's fused tensor was assembled from r1's separate markers, so its unfused halves
        // are exactly r1's separate gate and up.
        let pid = if is_routed_expert(name) { R1 } else { V3 };
        assert_eq!(
            tensor_bytes(&child, name),
            expected_bytes(pid, Q, name),
            "{name}"
        );
    }
    assert_ok(&verify(&out, &v3, &r1, &["--recipe", &chimera_preset()]));

    // The plan says where a layout was converted.
    let o = splice(
        &v3,
        &r1,
        &out,
        &["--recipe", &chimera_preset(), "--dry-run"],
    );
    assert_ok(&o);
    let text = String::from_utf8_lossy(&o.stdout);
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with("blk.1.ffn_up_exps.weight"))
        .unwrap();
    assert!(
        line.contains("converted: from fused ffn_gate_up_exps"),
        "{line}"
    );
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with("blk.1.ffn_down_exps.weight"))
        .unwrap();
    assert!(!line.contains("converted"), "{line}");
}

#[test]
fn expert_rules_work_across_layouts() {
    let d = Dir::new();
    let v3 = d.file("v3.gguf", &parent(V3, Q).build());
    let r1 = d.file("r1-fused.gguf", &fused_parent(R1, Q).build());
    let out = d.path("child.gguf");
    let take = "_exps=r1:experts=0-1";
    assert_ok(&splice(&v3, &r1, &out, &["--take", take, "-q"]));
    let child = Model::open(&out).unwrap();
    for b in 1..3 {
        for m in ["gate", "up", "down"] {
            let name = format!("blk.{b}.ffn_{m}_exps.weight");
            let got = tensor_bytes(&child, &name);
            let (r1b, v3b) = (expected_bytes(R1, Q, &name), expected_bytes(V3, Q, &name));
            for e in 0..N_EXPERT {
                let want = if e < 2 { &r1b } else { &v3b };
                assert_eq!(
                    expert_slice(&got, e),
                    expert_slice(want, e),
                    "{name} expert {e}"
                );
            }
        }
    }
    assert_ok(&verify(&out, &v3, &r1, &["--take", take]));

    // A flipped byte in a converted expert is found, and named.
    let mut bytes = std::fs::read(&out).unwrap();
    let t = child.tensor("blk.2.ffn_up_exps.weight").unwrap();
    let slice = t.info.n_bytes / N_EXPERT;
    bytes[(t.file_offset + slice + 7) as usize] ^= 0x40;
    let bad = d.file("bad.gguf", &bytes);
    let o = verify(&bad, &v3, &r1, &["--take", take, "--json"]);
    assert_eq!(o.status.code(), Some(1));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let m = &j["recipe"]["mismatches"][0];
    assert_eq!(m["tensor"], "blk.2.ffn_up_exps.weight", "{j}");
    assert_eq!(m["expected"], "r1");
    assert_eq!(m["experts"], serde_json::json!([[1, 1]]));
}

#[test]
fn a_separate_donor_gives_its_experts_to_a_fused_base() {
    let d = Dir::new();
    let v3 = d.file("v3-fused.gguf", &fused_parent(V3, Q).build());
    let r1 = d.file("r1.gguf", &parent(R1, Q).build());
    let out = d.path("child.gguf");
    assert_ok(&splice(
        &v3,
        &r1,
        &out,
        &["--recipe", &chimera_preset(), "-q"],
    ));
    let child = Model::open(&out).unwrap();
    let base = Model::open(&v3).unwrap();
    for t in base.tensors() {
        let name = &t.info.name;
        let want = match name.as_str() {
            n if n.ends_with("ffn_gate_up_exps.weight") => fused_bytes(R1, Q, layer(n)),
            n if is_routed_expert(n) => expected_bytes(R1, Q, n),
            n => tensor_bytes(&base, n),
        };
        assert_eq!(tensor_bytes(&child, name), want, "{name}");
    }
    assert!(child.tensor("blk.1.ffn_up_exps.weight").is_none());
    assert_ok(&verify(&out, &v3, &r1, &["--recipe", &chimera_preset()]));
}

fn layer(name: &str) -> u64 {
    name.split('.').nth(1).unwrap().parse().unwrap()
}

#[test]
fn the_preset_takes_fused_experts_whole_from_two_fused_parents() {
    let d = Dir::new();
    let v3 = d.file("v3-fused.gguf", &fused_parent(V3, Q).build());
    let r1 = d.file(
        "r1-fused.gguf",
        &fused_parent(R1, GgmlType::IQ2_XXS).build(),
    );
    let out = d.path("child.gguf");
    assert_ok(&splice(
        &v3,
        &r1,
        &out,
        &["--recipe", &chimera_preset(), "-q"],
    ));
    let child = Model::open(&out).unwrap();
    let (base, donor) = (Model::open(&v3).unwrap(), Model::open(&r1).unwrap());
    for t in base.tensors() {
        let name = &t.info.name;
        let from = if is_routed_expert(name) {
            &donor
        } else {
            &base
        };
        assert_eq!(
            tensor_bytes(&child, name),
            tensor_bytes(from, name),
            "{name}"
        );
        assert_eq!(
            child.tensor(name).unwrap().info.ty,
            from.tensor(name).unwrap().info.ty
        );
    }
    assert_ok(&verify(&out, &v3, &r1, &["--recipe", &chimera_preset()]));
}

#[test]
fn a_regex_that_misses_the_fused_tensor_is_refused_not_half_applied() {
    // The old preset's regex: on fused parents it matched ffn_down_exps only, and the child
    // got V3's gate/up with R1's down in every expert.
    let d = Dir::new();
    let v3 = d.file("v3-fused.gguf", &fused_parent(V3, Q).build());
    let r1 = d.file("r1-fused.gguf", &fused_parent(R1, Q).build());
    let out = d.path("child.gguf");
    let o = splice(
        &v3,
        &r1,
        &out,
        &["--take", r"ffn_(gate|up|down)_exps\.weight$=r1"],
    );
    assert_eq!(o.status.code(), Some(3));
    let err = stderr(&o);
    assert!(
        err.contains("blk.1: the routed experts would be assembled from different parents")
            && err.contains("ffn_gate_up_exps.weight from v3")
            && err.contains("ffn_down_exps.weight from r1")
            && err.contains("role = \"routed_experts\""),
        "{err}"
    );
    assert!(!out.exists());
}

#[test]
fn gate_and_up_of_different_types_cannot_be_fused() {
    let d = Dir::new();
    let v3 = d.file("v3-fused.gguf", &fused_parent(V3, Q).build());
    // A separate donor whose up experts are Q4_K while its gate experts are Q3_K.
    let r1 = d.file("r1.gguf", &retype_up(R1).build());
    let out = d.path("child.gguf");
    let o = splice(&v3, &r1, &out, &["--recipe", &chimera_preset()]);
    assert_eq!(o.status.code(), Some(3));
    let err = stderr(&o);
    assert!(
        err.contains("blk.1.ffn_gate_up_exps.weight")
            && err.contains("parent 'r1'")
            && err.contains("gate (Q3_K) and up (Q4_K)"),
        "{err}"
    );
    assert!(!out.exists());
}

/// A parent like `parent(pid, Q)` but with Q4_K `ffn_up_exps`.
fn retype_up(pid: u8) -> gguf_splice::testkit::GgufBuilder {
    let mut b = header(pid);
    for (name, dims, ty) in layout(Q) {
        let ty = if name.ends_with("ffn_up_exps.weight") {
            GgmlType::Q4_K
        } else {
            ty
        };
        b = b.tensor(&name, &dims, ty, pid);
    }
    b
}

#[test]
fn mla_layouts_are_refused_only_when_taken_across() {
    let d = Dir::new();
    // Base: an older converter's attn_kv_b; donor: attn_k_b + attn_v_b.
    let v3 = d.file(
        "v3.gguf",
        &parent(V3, Q)
            .tensor("blk.0.attn_kv_b.weight", &[N_EMBD, 4], GgmlType::Q4_K, V3)
            .build(),
    );
    let r1 = d.file(
        "r1.gguf",
        &parent(R1, Q)
            .tensor("blk.0.attn_k_b.weight", &[N_EMBD, 2], GgmlType::Q4_K, R1)
            .tensor("blk.0.attn_v_b.weight", &[N_EMBD, 2], GgmlType::Q4_K, R1)
            .build(),
    );
    let out = d.path("child.gguf");
    let o = splice(&v3, &r1, &out, &["--take", "attn_=r1"]);
    assert_eq!(o.status.code(), Some(3));
    let err = stderr(&o);
    assert!(
        err.contains("blk.0.attn_kv_b.weight")
            && err.contains("other layout (attn_k_b + attn_v_b)")
            && err.contains("cannot be converted"),
        "{err}"
    );
    assert!(!out.exists());
    // Taking only the routed experts from such a parent is fine.
    assert_ok(&splice(
        &v3,
        &r1,
        &out,
        &["--recipe", &chimera_preset(), "-q"],
    ));
    let child = Model::open(&out).unwrap();
    assert_eq!(
        tensor_bytes(&child, "blk.0.attn_kv_b.weight"),
        tensor_bytes(&Model::open(&v3).unwrap(), "blk.0.attn_kv_b.weight")
    );
}

#[test]
fn diff_and_inspect_group_fused_experts_as_routed_experts() {
    let d = Dir::new();
    let v3 = d.file("v3-fused.gguf", &fused_parent(V3, Q).build());
    let o = run(&["inspect", v3.to_str().unwrap(), "--json"]);
    assert_ok(&o);
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let t = j["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "blk.1.ffn_gate_up_exps.weight")
        .unwrap();
    assert_eq!(t["group"], "routed experts");
}

/// `parent(pid, Q)` without `output.weight`: the head is tied to `token_embd` (Gemma).
fn tied_parent(pid: u8) -> gguf_splice::testkit::GgufBuilder {
    let mut b = header(pid);
    for (name, dims, ty) in layout(Q) {
        if name != "output.weight" {
            b = b.tensor(&name, &dims, ty, pid);
        }
    }
    b
}

#[test]
fn tied_output_heads_are_named_in_inspect_and_in_rule_errors() {
    let d = Dir::new();
    let v3 = d.file("v3.gguf", &tied_parent(V3).build());
    let r1 = d.file("r1.gguf", &tied_parent(R1).build());
    let o = run(&["inspect", v3.to_str().unwrap()]);
    assert_ok(&o);
    assert!(String::from_utf8_lossy(&o.stdout).contains("output head: tied to token_embd.weight"));
    let o = run(&["inspect", v3.to_str().unwrap(), "--json"]);
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["output_tied_to_token_embd"], true);

    let out = d.path("child.gguf");
    let o = splice(&v3, &r1, &out, &["--take", r"^output\.weight$=r1"]);
    assert_eq!(o.status.code(), Some(3));
    let err = stderr(&o);
    assert!(
        err.contains("output head is tied to token_embd.weight"),
        "{err}"
    );
    // The donor preset's optional output rule says why it took nothing.
    let donor = repo().join("mappings/embeddings-output-from-donor.toml");
    let (a, b) = (
        format!("base={}", v3.display()),
        format!("donor={}", r1.display()),
    );
    let o = run(&[
        "splice",
        "--parent",
        &a,
        "--parent",
        &b,
        "--recipe",
        donor.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--dry-run",
    ]);
    assert_ok(&o);
    let text = String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr);
    assert!(
        text.contains("matched nothing: this model has no output.weight"),
        "{text}"
    );
}
