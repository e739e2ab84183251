//! Two fuzzed parents and a fixed recipe (whole tensors, experts with their router rows,
//! layers): whenever `plan::build` accepts them, the plan is reported, written, and the
//! child must read back and pass `verify` against the same parents and recipe (every byte
//! where the plan put it). Nothing may panic on the way.
//!
//! Input: byte 0 picks the split options; then a little-endian u32 length and the first
//! parent's bytes; the second parent takes the rest.
#![no_main]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::AtomicBool;

use gguf_splice::compare::{self, CompareOptions};
use gguf_splice::execute::{self, ExecOptions};
use gguf_splice::gguf::Model;
use gguf_splice::plan::{self, Parent, SplitOptions};
use gguf_splice::recipe::Recipe;
use gguf_splice::render;
use libfuzzer_sys::fuzz_target;

const RECIPE: &str = r#"
[recipe]
parents = ["a", "b"]
base = "a"

[[rules]]
match = 'ffn_(gate|up|down)_exps'
from = "b"
experts = "1-2"
router = true
optional = true

[[rules]]
match = 'attn|output'
from = "b"
layers = "1"
optional = true

[[rules]]
match = '^output\.'
from = "b"
optional = true

[metadata]
name = "fuzz child"
remove = ["general.url"]
[[metadata.set]]
key = "general.quantized_by"
type = "string"
value = "fuzz"
"#;

/// One directory per process, on tmpfs when there is one: the writer fsyncs every output.
fn dir() -> &'static tempfile::TempDir {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let shm = Path::new("/dev/shm");
        if shm.is_dir() {
            tempfile::tempdir_in(shm)
        } else {
            tempfile::tempdir()
        }
        .expect("temporary directory")
    })
}

fn recipe() -> &'static Recipe {
    static RECIPE_PARSED: OnceLock<Recipe> = OnceLock::new();
    RECIPE_PARSED.get_or_init(|| Recipe::from_toml(RECIPE, Path::new("fuzz.toml")).unwrap())
}

fuzz_target!(|data: &[u8]| {
    let Some((&options, rest)) = data.split_first() else {
        return;
    };
    let Some(len) = rest.get(..4) else {
        return;
    };
    let len = (u32::from_le_bytes(len.try_into().unwrap()) as usize).min(rest.len() - 4);
    let (a, b) = rest[4..].split_at(len);
    let dir = dir().path();
    for entry in std::fs::read_dir(dir).unwrap() {
        std::fs::remove_file(entry.unwrap().path()).unwrap();
    }
    let mut parents = Vec::new();
    for (name, bytes) in [("a", a), ("b", b)] {
        let path = dir.join(format!("{name}.gguf"));
        std::fs::write(&path, bytes).unwrap();
        let Ok(model) = Model::open(&path) else {
            return;
        };
        parents.push(Parent {
            name: name.into(),
            model,
        });
    }
    let split = SplitOptions {
        max_bytes: (options & 1 == 1).then_some(64),
        max_tensors: (options & 2 == 2).then_some((options >> 2) as usize % 4 + 1),
    };
    let out: PathBuf = dir.join("child.gguf");
    let Ok(plan) = plan::build(&parents, recipe(), &out, split) else {
        return;
    };
    let _ = render::plan_text(&plan);
    let _ = render::plan_json(&plan);
    let cancel = AtomicBool::new(false);
    let written = execute::execute(
        &plan,
        &ExecOptions {
            force: true,
            cancel: &cancel,
            progress: &|_| {},
        },
    )
    .expect("a checked plan is written");
    let child = Model::open(&written.files[0]).expect("the child reads back");
    let r = compare::verify(
        &child,
        &parents,
        Some(recipe()),
        &CompareOptions {
            chunk_bytes: 64,
            ..Default::default()
        },
    )
    .expect("verify runs");
    assert!(r.passed(), "{}", render::verify_text(&r));
});
