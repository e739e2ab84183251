//! A child carries its own record (`splice.version`, `splice.options`, `splice.parents`):
//! what it holds, `verify CHILD` from it, parents checked against it, `inspect --provenance`
//! and `splice --like`.

mod common;
#[path = "support/assemble_parents.rs"]
mod support;

use std::path::Path;

use common::*;
use gguf_splice::ggml_type::GgmlType;
use gguf_splice::gguf::{GgufFile, Model};
use gguf_splice::plan::record::{ChildRecord, Made};
use gguf_splice::presets::Preset;

/// The child's header bytes (everything before its tensor data).
fn header_bytes(path: &Path) -> Vec<u8> {
    let f = GgufFile::open(path).unwrap();
    let bytes = std::fs::read(path).unwrap();
    bytes[..f.data_offset as usize].to_vec()
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn a_child_records_its_recipe_text_and_its_parents_by_name_size_and_header_digest() {
    let s = setup(GgmlType::IQ2_XXS);
    let out = s.dir.path().join("child.gguf");
    assert_ok(&s.splice(&[
        "--recipe",
        "deepseek-r1t-chimera",
        "--take",
        "output=r1",
        "-o",
        out.to_str().unwrap(),
        "--quiet",
    ]));
    let child = Model::open(&out).unwrap();
    let r = ChildRecord::read(&child).unwrap();
    assert_eq!(r.version.as_deref(), Some(env!("CARGO_PKG_VERSION")));
    let options = r.options.expect("splice.options");
    let preset = Preset::find("deepseek-r1t-chimera").unwrap();
    assert_eq!(
        options.made,
        Made::Splice {
            recipe: preset.recipe().unwrap().text,
            takes: vec!["output=r1".into()],
            allow_partial_experts: false,
        },
        "the preset's text, not its name"
    );
    assert_eq!(r.parents.len(), 2);
    for (rec, (name, path)) in r.parents.iter().zip([("v3", &s.v3), ("r1", &s.r1)]) {
        let f = GgufFile::open(path).unwrap();
        assert_eq!(rec.name, name);
        assert_eq!(rec.shards.len(), 1);
        assert_eq!(rec.shards[0].file, format!("{name}.gguf"));
        assert_eq!(rec.shards[0].size, f.file_len);
        assert_eq!(rec.shards[0].header_sha256, f.header_sha256());
        assert_eq!(rec.shards[0].url, None);
    }
    // No absolute path anywhere in the child's metadata.
    let dir = s.dir.path().to_str().unwrap();
    assert!(
        !contains(&header_bytes(&out), dir.as_bytes()),
        "the child holds the directory {dir}"
    );
}
