//! Any byte string: the reader must return Ok or an error, never panic, and never allocate
//! more than the input justifies (libFuzzer's -rss_limit_mb catches that). Accepted files
//! are walked the way `inspect` walks them, and re-encoded by the writer.
#![no_main]

use gguf_splice::gguf::GgufFile;
use gguf_splice::gguf::write::encode_header;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(f) = GgufFile::from_bytes(std::path::Path::new("fuzz.gguf"), data) else {
        return;
    };
    for kv in f.kvs() {
        let v = f.value(kv);
        let _ = v.summary(4);
        let _ = v.to_json(false);
    }
    let kvs: Vec<_> = f.kvs().iter().map(|kv| (kv.key.as_str(), f.value(kv))).collect();
    let header = encode_header(&kvs, f.tensors(), f.alignment);
    assert!(header.len() as u64 >= 24);
});
