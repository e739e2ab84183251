//! Write a synthetic `deepseek2` model for benchmarks (benches/whole-process.sh).
//!
//! usage: synth OUT.gguf [--seed N] [--fill] [--small LAYERS]
//!   default: DeepSeek-V3 shapes (61 layers, 256 experts) with a sparse data section;
//!   --small L: a scaled-down model of L layers (n_embd 2048, 64 experts) for copy benchmarks;
//!   --fill: write every data byte (a seed-dependent pattern) instead of a sparse hole.

use gguf_splice::ggml_type::GgmlType;
use gguf_splice::testkit::SynthSpec;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let out = args
        .first()
        .expect("usage: synth OUT.gguf [--seed N] [--fill] [--small LAYERS]");
    let flag = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .map(|i| args[i + 1].clone())
    };
    let seed: u8 = flag("--seed").map_or(1, |s| s.parse().unwrap());
    let mut spec = SynthSpec::deepseek_v3();
    if let Some(layers) = flag("--small") {
        spec = SynthSpec {
            n_layer: layers.parse().unwrap(),
            n_dense: 1,
            n_expert: 64,
            n_embd: 2048,
            n_ff: 4096,
            n_ff_exp: 1024,
            n_head: 16,
            q_lora: 512,
            kv_lora: 256,
            vocab: 32_000,
            expert_type: GgmlType::Q3_K,
            other_type: GgmlType::Q4_K,
        };
    }
    let bytes = spec
        .write(
            std::path::Path::new(out),
            seed,
            args.iter().any(|a| a == "--fill"),
        )
        .expect("write synthetic model");
    println!("{out}: {bytes} bytes");
}
