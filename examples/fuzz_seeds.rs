//! Write the fuzzers' seed corpus, `fuzz/corpus/<target>/seed-*` (a few KB in all): tiny
//! models assembled by hand, the headers of real llama.cpp shards from `fixtures/`, and the
//! recipes in `mappings/`, each in the input framing its target documents.
//!
//! usage: cargo run --example fuzz_seeds   (from the repository root)

use std::path::Path;

use gguf_splice::ggml_type::GgmlType;
use gguf_splice::gguf::GgufFile;
use gguf_splice::testkit::GgufBuilder;

/// A two-block deepseek2-shaped model with experts and a router, in a few KB.
fn tiny(parent: u8, expert_type: GgmlType) -> GgufBuilder {
    GgufBuilder::new()
        .kv_str("general.architecture", "deepseek2")
        .kv_str("general.name", &format!("tiny-{parent}"))
        .kv_str("general.url", "https://example.com")
        .kv_u32("deepseek2.block_count", 2)
        .kv_u32("deepseek2.expert_count", 4)
        .kv_str_array("tokenizer.ggml.tokens", &["a", "b"])
        .tensor("token_embd.weight", &[32, 2], GgmlType::Q8_0, parent)
        .tensor("blk.0.attn_q_a.weight", &[32, 2], GgmlType::F32, parent)
        .tensor("blk.1.attn_q_a.weight", &[32, 2], GgmlType::F32, parent)
        .tensor("blk.1.ffn_gate_inp.weight", &[32, 4], GgmlType::F32, parent)
        .tensor("blk.1.exp_probs_b.bias", &[4], GgmlType::F32, parent)
        .tensor("blk.1.ffn_up_exps.weight", &[32, 2, 4], expert_type, parent)
        .tensor("output.weight", &[32, 2], GgmlType::F32, parent)
}

/// A shard of a two-shard split of `tiny`, as llama-gguf-split lays it out.
fn tiny_shard(no: u16) -> Vec<u8> {
    let mut b = GgufBuilder::new()
        .kv_u16("split.no", no)
        .kv_u16("split.count", 2)
        .kv_i32("split.tensors.count", 3);
    if no == 0 {
        b = b
            .kv_str("general.architecture", "deepseek2")
            .tensor("token_embd.weight", &[32, 2], GgmlType::F32, 1)
            .tensor("blk.0.attn_q_a.weight", &[32, 2], GgmlType::Q8_0, 1);
    } else {
        b = b.tensor("output.weight", &[32, 2], GgmlType::F32, 1);
    }
    b.build()
}

/// `parts` in the fuzz targets' framing: each part but the last after a u32 length.
fn framed(head: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut out = head.to_vec();
    for (i, p) in parts.iter().enumerate() {
        if i + 1 < parts.len() {
            out.extend_from_slice(&(p.len() as u32).to_le_bytes());
        }
        out.extend_from_slice(p);
    }
    out
}

/// The header (everything before the tensor data) of a real fixture file.
fn fixture_header(name: &str) -> Vec<u8> {
    let path = Path::new("fixtures").join(name);
    let f = GgufFile::open(&path).expect("fixture opens");
    let bytes = std::fs::read(&path).expect("fixture reads");
    bytes[..f.data_offset as usize].to_vec()
}

fn main() -> std::io::Result<()> {
    let corpus = Path::new("fuzz/corpus");
    let put = |target: &str, name: &str, bytes: &[u8]| -> std::io::Result<()> {
        let dir = corpus.join(target);
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join(format!("seed-{name}")), bytes)
    };
    let tiny_a = tiny(1, GgmlType::F32).build();
    let tiny_b = tiny(2, GgmlType::F32).build();
    let shard2 = fixture_header("r1-iq2mix-split-00002-of-00003.gguf");

    put("parse_header", "tiny", &tiny_a)?;
    put("parse_header", "llama-shard-header", &shard2)?;

    put("shard_set", "single", &framed(&[0, 0], &[&tiny_a]))?;
    put(
        "shard_set",
        "two-shards",
        &framed(&[1, 1], &[&tiny_shard(0), &tiny_shard(1)]),
    )?;

    for recipe in [
        "deepseek-r1t-chimera.toml",
        "embeddings-output-from-donor.toml",
    ] {
        let text = std::fs::read(Path::new("mappings").join(recipe))?;
        put("recipe", recipe.trim_end_matches(".toml"), &text)?;
    }
    put(
        "recipe",
        "takes",
        br"(?:gate|up)_exps\.=r1:experts=0-63,128:router:layers=3-60
a\=b:c=v3
[[rules]]
match = 'x'
from = 'v3'
",
    )?;

    put(
        "plan_verify",
        "same-types",
        &framed(&[0], &[&tiny_a, &tiny_b]),
    )?;
    let tiny_q = tiny(2, GgmlType::Q8_0).build();
    put(
        "plan_verify",
        "split-types",
        &framed(&[7], &[&tiny_a, &tiny_q]),
    )?;
    Ok(())
}
