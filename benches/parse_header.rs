//! Parsing a DeepSeek-V3-size header (1 086 tensors, 129 280-token vocabulary with merges),
//! and planning an R1T chimera from two of them. The data sections are sparse holes: only
//! headers are read. Whole-process wall time and memory are in benches/whole-process.sh.

use criterion::{Criterion, criterion_group, criterion_main};
use gguf_splice::gguf::{GgufFile, Model};
use gguf_splice::plan::{self, Parent, SplitOptions};
use gguf_splice::recipe::Recipe;
use gguf_splice::testkit::SynthSpec;
use std::hint::black_box;
use std::path::Path;

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let spec = SynthSpec::deepseek_v3();
    let v3 = dir.path().join("v3.gguf");
    let r1 = dir.path().join("r1.gguf");
    spec.write(&v3, 1, false).unwrap();
    spec.write(&r1, 2, false).unwrap();
    let f = GgufFile::open(&v3).unwrap();
    eprintln!(
        "synthetic DeepSeek-V3 header: {} tensors, {} keys, {} header bytes",
        f.tensors().len(),
        f.kvs().len(),
        f.data_offset
    );

    c.bench_function("open DeepSeek-V3-size header", |b| {
        b.iter(|| black_box(GgufFile::open(black_box(&v3)).unwrap()))
    });

    let recipe_path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("mappings/deepseek-r1t-chimera.toml");
    let recipe = Recipe::from_file(&recipe_path).unwrap();
    let out = dir.path().join("child.gguf");
    c.bench_function(
        "open two DeepSeek-V3-size parents and plan the R1T chimera",
        |b| {
            b.iter(|| {
                let parents = vec![
                    Parent {
                        name: "v3".into(),
                        model: Model::open(&v3).unwrap(),
                    },
                    Parent {
                        name: "r1".into(),
                        model: Model::open(&r1).unwrap(),
                    },
                ];
                let p = plan::build(&parents, &recipe, &out, SplitOptions::default()).unwrap();
                black_box(p.output_bytes());
            })
        },
    );
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = bench
}
criterion_main!(benches);
