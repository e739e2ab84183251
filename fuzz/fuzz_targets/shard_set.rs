//! A set of one to three fuzzed shard files, written to a temporary directory under
//! llama.cpp's shard names (`m-0000I-of-0000N.gguf`, or `m.gguf` for one) and opened through
//! any of them, as a user would name it: `Model::open` must return a model or an error,
//! never panic, and never allocate more than the files justify. Opened models are reported
//! as `inspect` does and diffed against themselves, which reads every tensor byte.
//!
//! Input: byte 0 picks the shard count (1 to 3) and byte 1 the shard named; then each shard
//! but the last is a little-endian u32 length and that many bytes; the last takes the rest.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use gguf_splice::compare::{self, CompareOptions};
use gguf_splice::gguf::Model;
use gguf_splice::gguf::model::shard_path;
use gguf_splice::render;
use libfuzzer_sys::fuzz_target;

/// One directory per process, emptied for each input (a stale shard from the previous
/// input would make runs depend on their order).
fn dir() -> &'static tempfile::TempDir {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().expect("temporary directory"))
}

/// Split `data` into `n` parts by the framing above.
fn split(mut data: &[u8], n: usize) -> Vec<&[u8]> {
    let mut parts = Vec::with_capacity(n);
    for _ in 1..n {
        let len = match data.get(..4) {
            Some(b) => u32::from_le_bytes(b.try_into().unwrap()) as usize,
            None => 0,
        };
        data = data.get(4..).unwrap_or(&[]);
        let len = len.min(data.len());
        parts.push(&data[..len]);
        data = &data[len..];
    }
    parts.push(data);
    parts
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let count = (data[0] % 3) as u64 + 1;
    let named = (data[1] as u64 % count) + 1;
    let dir = dir().path();
    for entry in std::fs::read_dir(dir).unwrap() {
        std::fs::remove_file(entry.unwrap().path()).unwrap();
    }
    let prefix = dir.join("m").display().to_string();
    let paths: Vec<PathBuf> = (1..=count)
        .map(|i| match count {
            1 => dir.join("m.gguf"),
            _ => shard_path(&prefix, i, count),
        })
        .collect();
    for (path, bytes) in paths.iter().zip(split(&data[2..], count as usize)) {
        std::fs::write(path, bytes).unwrap();
    }
    let Ok(model) = Model::open(&paths[named as usize - 1]) else {
        return;
    };
    let _ = render::inspect_text(&model);
    let _ = render::inspect_json(&model);
    let r = compare::diff(&model, &model, &CompareOptions {
            chunk_bytes: 64,
            ..Default::default()
        })
        .expect("a model reads back the bytes it was opened with");
    let _ = render::diff_text(&r);
});
