//! Helpers of the `assemble` tests: hand-built dense parents whose bytes say where they came
//! from, and short ways to plan, write and fail an assembly.

use std::path::Path;

use gguf_splice::assemble::spec::ExpertList;
use gguf_splice::assemble::{self, AssembleError, AssembleOptions, Selection};
use gguf_splice::ggml_type::GgmlType;
use gguf_splice::gguf::Model;
use gguf_splice::plan::{Parent, SplitOptions};
use gguf_splice::testkit::GgufBuilder;

use crate::common::{R1, V3, parent, write};

pub const D_EMBD: u64 = 256;

pub fn q5k() -> GgmlType {
    GgmlType::from_id(13).unwrap()
}

pub fn q6k() -> GgmlType {
    GgmlType::from_id(14).unwrap()
}

/// A tiny dense model of `arch` (2 blocks), every tensor marker data of `id`.
pub fn dense(id: u8, arch: &str, ffn: GgmlType, n_ff: u64) -> GgufBuilder {
    dense_keys(id, arch, ffn, n_ff, 4, D_EMBD as u32)
}

/// [`dense`] whose `head_count` and `embedding_length` keys say `heads` and `embd`.
pub fn dense_keys(
    id: u8,
    arch: &str,
    ffn: GgmlType,
    n_ff: u64,
    heads: u32,
    embd: u32,
) -> GgufBuilder {
    let mut b = GgufBuilder::new()
        .kv_str("general.architecture", arch)
        .kv_str("general.name", &format!("dense-{id}"))
        .kv_u32(&format!("{arch}.block_count"), 2)
        .kv_u32(&format!("{arch}.embedding_length"), embd)
        .kv_u32(&format!("{arch}.feed_forward_length"), n_ff as u32)
        .kv_u32(&format!("{arch}.attention.head_count"), heads)
        .kv_u32(&format!("{arch}.attention.head_count_kv"), 2)
        .kv_str_array("tokenizer.ggml.tokens", &["a", "b", "c"]);
    b = b
        .tensor("token_embd.weight", &[D_EMBD, 8], GgmlType::Q4_K, id)
        .tensor("output_norm.weight", &[D_EMBD], GgmlType::F32, id)
        .tensor("output.weight", &[D_EMBD, 8], q6k(), id);
    for l in 0..2 {
        let p = format!("blk.{l}.");
        b = b
            .tensor(
                &format!("{p}attn_k.weight"),
                &[D_EMBD, 128],
                GgmlType::Q4_K,
                id,
            )
            .tensor(
                &format!("{p}attn_norm.weight"),
                &[D_EMBD],
                GgmlType::F32,
                id,
            )
            .tensor(
                &format!("{p}attn_q.weight"),
                &[D_EMBD, 256],
                GgmlType::Q4_K,
                id,
            );
        if arch == "qwen3" {
            b = b.tensor(&format!("{p}attn_q_norm.weight"), &[64], GgmlType::F32, id);
        }
        b = b
            .tensor(&format!("{p}ffn_down.weight"), &[n_ff, D_EMBD], ffn, id)
            .tensor(&format!("{p}ffn_gate.weight"), &[D_EMBD, n_ff], ffn, id)
            .tensor(&format!("{p}ffn_norm.weight"), &[D_EMBD], GgmlType::F32, id)
            .tensor(&format!("{p}ffn_up.weight"), &[D_EMBD, n_ff], ffn, id);
    }
    b
}

pub fn open(dir: &Path, name: &str, b: &GgufBuilder) -> Parent {
    let p = write(dir, &format!("{name}.gguf"), &b.build());
    Parent {
        name: name.into(),
        model: Model::open(&p).unwrap(),
    }
}

pub fn options(selection: Selection) -> AssembleOptions {
    AssembleOptions {
        base: None,
        selection,
        router: None,
        experts_used: None,
        force_expert_count: false,
    }
}

pub fn list(text: &str) -> Selection {
    Selection::List(ExpertList::parse(text).unwrap())
}

/// Plan and write; the output's model.
pub fn assemble_to(parents: &[Parent], opts: &AssembleOptions, out: &Path) -> Model {
    let plan = assemble::plan(parents, opts, out, SplitOptions::default()).unwrap();
    let cancel = std::sync::atomic::AtomicBool::new(false);
    gguf_splice::execute::execute(
        &plan,
        &gguf_splice::execute::ExecOptions {
            force: true,
            cancel: &cancel,
            progress: &|_| {},
        },
    )
    .unwrap();
    Model::open(out).unwrap()
}

pub fn err(parents: &[Parent], opts: &AssembleOptions) -> AssembleError {
    match assemble::plan(
        parents,
        opts,
        Path::new("/nonexistent/out.gguf"),
        SplitOptions::default(),
    ) {
        Ok(_) => panic!("planned"),
        Err(e) => e,
    }
}

pub fn u64_key(m: &Model, key: &str) -> Option<u64> {
    m.get(key).and_then(|v| v.as_u64())
}

/// The hand-built deepseek2-like parents (common::parent): 4 experts in blocks 1-2.
pub fn moe_parents(dir: &Path) -> [Parent; 2] {
    [
        open(dir, "v3", &parent(V3, GgmlType::Q3_K)),
        open(dir, "r1", &parent(R1, GgmlType::Q3_K)),
    ]
}
