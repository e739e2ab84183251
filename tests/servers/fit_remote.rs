//! `fit` over remote parents (nginx behind the counting proxy of proxy.rs): it fetches
//! the headers and the sampled rows, nothing else, and says how much it read; the dry run's
//! choice equals the one from the same files read locally.
//!
//! Needs nginx and the `ggml` feature (skipped without them by a plain `cargo test`).

use crate::common::{Oracle, assert_ok, have};
use crate::server::server;
use serde_json::Value;

#[test]
fn a_remote_fit_fetches_only_the_sampled_rows() {
    if !have("a_remote_fit", &[Oracle::Ggml]) {
        return;
    }
    let Some(s) = server("a_remote_fit") else {
        return;
    };
    let files = ["r1-q3mix.gguf", "r1-iq2mix.gguf"];
    let dry = |q3: &str, q2: &str| -> Value {
        let out = s.out("child.gguf");
        let o = s.run(&[
            "fit",
            "--parent",
            &format!("q3={q3}"),
            "--parent",
            &format!("q2={q2}"),
            "--budget",
            "1900000",
            "-o",
            out.to_str().unwrap(),
            "--dry-run",
            "--json",
        ]);
        assert_ok(&o);
        serde_json::from_slice(&o.stdout).unwrap()
    };
    let local = dry(&s.local(files[0]), &s.local(files[1]));
    s.proxy.reset();
    let remote = dry(&s.hf(files[0]), &s.hf(files[1]));
    assert_eq!(local["units"], remote["units"]);
    assert_eq!(local["bytes_read"], remote["bytes_read"]);
    for (name, file) in ["q3", "q2"].into_iter().zip(files) {
        let read = remote["bytes_read"][name].as_u64().unwrap();
        let data = gguf_splice::gguf::Model::open(&s.served(file))
            .unwrap()
            .data_bytes();
        let served = s.proxy.served(file, true);
        // Tensor data fetched: the sampled rows, which on these small tensors (at least
        // 4 bands of 8 rows each) is still well under half of the file.
        assert_eq!(served, read, "{file}: served {served}, read {read}");
        assert!(read > 0 && read * 2 < data, "{file}: {read} of {data}");
    }
}
