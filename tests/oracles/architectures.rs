//! Every architecture gguf-py knows that has routed experts: role rules and the presets take
//! exactly the tensors they should, companions included, and the children verify.
//!
//! The oracle is gguf-py: `tests/oracle/arch_tensors.py` lists each such architecture's
//! tensor names with gguf-py's enum name for each (`FFN_UP_EXP`, `ATTN_Q`, ...). The role a
//! tensor should get is read here from the enum name, not from the tensor name that
//! gguf-splice parses, so a name the roles module misreads shows up as a wrong source.
//! Each tensor is written with the companions llama.cpp b11434 loads beside a weight
//! (`.scale`, `.input_scale`, `.bias`), with marker bytes that say their parent.

use std::path::{Path, PathBuf};

use crate::common::*;
use gguf_splice::ggml_type::GgmlType;
use gguf_splice::testkit::GgufBuilder;
use serde_json::Value;

const A: u8 = 1;
const B: u8 = 2;
const N_EXP: u64 = 4;
const F32: GgmlType = GgmlType::F32;

/// What gguf-py's enum names say, as the rules under test read them.
mod oracle {
    /// A routed expert: the stacked `*_EXP` matrices, GroveMoE's chunk experts and the
    /// latent projections routed experts compute in. Not `FFN_NORM_EXP` (arctic's norm of
    /// the experts' input, a norm like `FFN_NORM`).
    pub fn routed(e: &str) -> bool {
        !e.contains("NORM")
            && (e.ends_with("_EXP") || e.ends_with("_CHEXP") || e.starts_with("MOE_LATENT_"))
    }

    /// A routed-expert tensor stacked with one slice per expert (cut by expert).
    pub fn stacked(e: &str) -> bool {
        matches!(
            e,
            "FFN_GATE_EXP" | "FFN_UP_EXP" | "FFN_DOWN_EXP" | "FFN_GATE_UP_EXP"
        )
    }

    /// Attention: the `ATTN_*` matrices (not their norms), and DeepSeek V3.2's indexer, which
    /// picks the keys attention reads.
    pub fn attention(e: &str) -> bool {
        !e.contains("NORM") && (e.starts_with("ATTN_") || e.starts_with("INDEXER_"))
    }
}

struct Arch {
    name: String,
    /// (tensor name, gguf-py enum name), companions included.
    tensors: Vec<(String, String)>,
    dir: tempfile::TempDir,
    a: PathBuf,
    b: PathBuf,
}

/// The shape of a tensor of enum `e`, and of its companion of `suffix`.
fn dims(e: &str, suffix: &str) -> Vec<u64> {
    let stacked = oracle::stacked(e);
    match suffix {
        "scale" | "input_scale" if stacked => vec![N_EXP],
        "scale" | "input_scale" => vec![1],
        "bias" if stacked => vec![2, N_EXP],
        "bias" if e == "FFN_GATE_INP" || e == "FFN_EXP_PROBS_B" => vec![N_EXP],
        "bias" => vec![2],
        _ if stacked => vec![32, 2, N_EXP],
        _ if e.ends_with("_CHEXP") => vec![32, 2, 2],
        _ if e == "FFN_GATE_INP" => vec![32, N_EXP],
        _ => vec![32, 2],
    }
}

fn archs() -> Vec<Arch> {
    let j: Value = serde_json::from_slice(&oracle_script::<&str>("arch_tensors.py", &[])).unwrap();
    let mut v = Vec::new();
    for a in j["archs"].as_array().unwrap() {
        let name = a["name"].as_str().unwrap().to_string();
        let mut tensors: Vec<(String, String)> = Vec::new();
        for t in a["tensors"].as_array().unwrap() {
            let (fmt, e) = (t[0].as_str().unwrap(), t[1].as_str().unwrap());
            let blocks: Vec<String> = if fmt.contains("{bid}") {
                (0..2)
                    .map(|b| fmt.replace("{bid}", &b.to_string()))
                    .collect()
            } else {
                vec![fmt.to_string()]
            };
            // llama.cpp's names: the router bias alone; everything else a weight and the
            // companions its loader takes beside it.
            let suffixes: &[&str] = if e == "FFN_EXP_PROBS_B" {
                &["bias"]
            } else {
                &["weight", "scale", "input_scale", "bias"]
            };
            for n in blocks {
                for s in suffixes {
                    let full = format!("{n}.{s}");
                    // Two enum members can share a name (FFN_NORM, FFN_PRE_NORM).
                    if !tensors.iter().any(|(x, _)| *x == full) {
                        tensors.push((full, e.to_string()));
                    }
                }
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let build = |id: u8| {
            let mut b = GgufBuilder::new()
                .kv_str("general.architecture", &name)
                .kv_u32(&format!("{name}.block_count"), 2)
                .kv_u32(&format!("{name}.expert_count"), N_EXP as u32)
                .kv_str_array("tokenizer.ggml.tokens", &["a", "b", "c"]);
            for (t, e) in &tensors {
                let suffix = t.rsplit('.').next().unwrap();
                b = b.tensor(t, &dims(e, suffix), F32, id);
            }
            b.build()
        };
        let a_path = write(dir.path(), "a.gguf", &build(A));
        let b_path = write(dir.path(), "b.gguf", &build(B));
        v.push(Arch {
            name,
            tensors,
            dir,
            a: a_path,
            b: b_path,
        });
    }
    v
}

impl Arch {
    fn enum_of(&self, tensor: &str) -> &str {
        &self.tensors.iter().find(|(n, _)| n == tensor).unwrap().1
    }

    /// Splice with parents named `names` (a, b) and `recipe`, then verify the child with the
    /// same recipe; the child's path, or the failed splice.
    fn splice(&self, names: (&str, &str), recipe: &str, tag: &str) -> Result<PathBuf, String> {
        let r = self.dir.path().join(format!("{tag}.toml"));
        std::fs::write(&r, recipe).unwrap();
        let out = self.dir.path().join(format!("{tag}.gguf"));
        let o = SpliceCmd::new("splice")
            .parents(&[(names.0, &self.a), (names.1, &self.b)])
            .arg("--recipe")
            .arg(&r)
            .quiet()
            .arg("-o")
            .arg(&out)
            .output();
        if !o.status.success() {
            return Err(stderr(&o));
        }
        let v = SpliceCmd::new("verify")
            .arg(&out)
            .parents(&[(names.0, &self.a), (names.1, &self.b)])
            .arg("--recipe")
            .arg(&r)
            .output();
        assert!(
            v.status.success(),
            "{}: {tag}: verify failed:\n{}{}",
            self.name,
            String::from_utf8_lossy(&v.stdout),
            stderr(&v)
        );
        Ok(out)
    }

    fn check(&self, child: &Path, owner: impl Fn(&str) -> Vec<u8>) {
        assert_slices_from(child, &[(A, &self.a), (B, &self.b)], owner);
    }
}

#[test]
fn role_rules_and_presets_take_the_right_tensors_in_every_moe_architecture() {
    if !have(
        "role_rules_and_presets_take_the_right_tensors_in_every_moe_architecture",
        &[Oracle::GgufPy],
    ) {
        return;
    }
    let archs = archs();
    assert!(
        archs.len() >= 40,
        "gguf-py lists {} MoE architectures",
        archs.len()
    );
    let preset = std::fs::read_to_string(chimera_preset()).unwrap();
    for arch in &archs {
        let routed = |t: &str| oracle::routed(arch.enum_of(t));
        // Routed experts, whole: every routed tensor and its companions from b.
        let c = arch
            .splice(
                ("a", "b"),
                "[[rules]]\nrole = \"routed_experts\"\nfrom = \"b\"\n",
                "whole",
            )
            .unwrap_or_else(|e| panic!("{}: {e}", arch.name));
        arch.check(&c, |t| vec![if routed(t) { B } else { A }]);

        // The R1T chimera preset is that rule with the parents named v3 and r1.
        let c = arch
            .splice(("v3", "r1"), &preset, "preset")
            .unwrap_or_else(|e| panic!("{}: preset: {e}", arch.name));
        arch.check(&c, |t| vec![if routed(t) { B } else { A }]);

        // Attention, with the indexer of DeepSeek V3.2.
        let c = arch
            .splice(
                ("a", "b"),
                "[[rules]]\nrole = \"attention\"\nfrom = \"b\"\n",
                "attn",
            )
            .unwrap_or_else(|e| panic!("{}: attention: {e}", arch.name));
        arch.check(&c, |t| {
            vec![if oracle::attention(arch.enum_of(t)) {
                B
            } else {
                A
            }]
        });

        // By expert: experts 1-2 of every stacked tensor and of its companions from b.
        // Routed tensors that are not cut by expert (chunk experts, latent projections)
        // cannot follow, and the plan says so.
        let by_expert = arch.splice(
            ("a", "b"),
            "[[rules]]\nrole = \"routed_experts\"\nfrom = \"b\"\nexperts = \"1-2\"\n",
            "experts",
        );
        let whole_routed = arch
            .tensors
            .iter()
            .any(|(_, e)| oracle::routed(e) && !oracle::stacked(e));
        match by_expert {
            Ok(c) => {
                assert!(!whole_routed, "{}: by expert should be refused", arch.name);
                arch.check(&c, |t| {
                    if oracle::stacked(arch.enum_of(t)) {
                        vec![A, B, B, A]
                    } else {
                        vec![A]
                    }
                });
            }
            Err(e) => assert!(
                whole_routed && e.contains("not cut by expert"),
                "{}: {e}",
                arch.name
            ),
        }
    }
}
