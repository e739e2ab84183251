//! Recipe text and `--take` rules: `Recipe::from_toml` and `parse_take` must return a recipe
//! or an error, never panic, and every error must be one line. Parsed rules are tried on a
//! few tensor names, and the recipe's `--take` lines are prepended as the command line does.
//!
//! Input: any bytes, read as UTF-8 (lossily); the whole text is a recipe, and each line is
//! also a `--take` rule.
#![no_main]

use std::path::Path;

use gguf_splice::recipe::{Recipe, parse_take};
use libfuzzer_sys::fuzz_target;

const NAMES: &[&str] = &[
    "token_embd.weight",
    "blk.0.attn_q_a.weight",
    "blk.3.ffn_up_exps.weight",
    "blk.3.ffn_gate_inp.weight",
    "blk.60.exp_probs_b.bias",
    "blk.18446744073709551615.x",
];

fn one_line(e: &dyn std::fmt::Display) {
    let text = e.to_string();
    assert!(!text.contains('\n'), "a multi-line error: {text:?}");
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let takes: Vec<String> = text.lines().take(8).map(str::to_string).collect();
    for (i, t) in takes.iter().enumerate() {
        match parse_take(t, &format!("--take #{}", i + 1)) {
            Ok(rule) => {
                for name in NAMES {
                    let _ = rule.selects(name);
                }
                let _ = rule.layers_beyond(3);
            }
            Err(e) => one_line(&e),
        }
    }
    match Recipe::from_toml(&text, Path::new("fuzz.toml")) {
        Ok(mut recipe) => {
            for rule in &recipe.rules {
                for name in NAMES {
                    let _ = rule.selects(name);
                }
                let _ = rule.layers_beyond(0);
            }
            if let Err(e) = recipe.prepend_takes(&takes) {
                one_line(&e);
            }
        }
        Err(e) => one_line(&e),
    }
});
