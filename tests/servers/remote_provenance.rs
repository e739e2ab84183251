//! The record of a child made from remote parents (nginx behind the test proxy, as in
//! remote.rs): URLs recorded without their query, user information or fragment, the
//! Hub's commit recorded, and `verify CHILD` fetching the parents again from the record,
//! at that commit. Skipped by a plain `cargo test` when nginx is missing.

use crate::common::{Oracle, assert_exit, assert_ok, have, stderr};
use crate::nginx::REPO_COMMIT;
use crate::server::server;
use gguf_splice::gguf::{GgufFile, Model};
use gguf_splice::plan::record::ChildRecord;

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[test]
fn a_child_of_hub_parents_records_public_urls_and_the_commit_and_verifies_with_no_parent() {
    let Some(s) = server(
        "a_child_of_hub_parents_records_public_urls_and_the_commit_and_verifies_with_no_parent",
    ) else {
        return;
    };
    let out = s.out("child.gguf");
    let r1 = format!(
        "{}/org/repo/resolve/main/r1-iq2mix.gguf?token=SECRET#frag",
        s.proxy.endpoint()
    );
    assert_ok(&s.run(&[
        "splice",
        "--parent",
        &format!("v3={}", s.hf("v3-q3mix.gguf")),
        "--parent",
        &format!("r1={r1}"),
        "--recipe",
        "deepseek-r1t-chimera",
        "-o",
        out.to_str().unwrap(),
        "-q",
    ]));
    let child = Model::open(&out).unwrap();
    let r = ChildRecord::read(&child).unwrap();
    let base = format!("{}/org/repo/resolve/main", s.proxy.endpoint());
    for (p, file) in r.parents.iter().zip(["v3-q3mix.gguf", "r1-iq2mix.gguf"]) {
        assert_eq!(p.shards[0].file, file);
        assert_eq!(p.shards[0].url, Some(format!("{base}/{file}")));
        assert_eq!(p.shards[0].commit.as_deref(), Some(REPO_COMMIT));
    }
    // Nothing private in the child's header: no query, no fragment, no local directory.
    let header = {
        let f = GgufFile::open(&out).unwrap();
        std::fs::read(&out).unwrap()[..f.data_offset as usize].to_vec()
    };
    for private in [
        "SECRET",
        "token=",
        "#frag",
        "sig=",
        s.root.path().to_str().unwrap(),
        s.out.path().to_str().unwrap(),
    ] {
        assert!(!contains(&header, private), "the child holds {private:?}");
    }
    for key in ["splice.parents", "splice.recipe", "splice.options"] {
        let v = child.get(key).unwrap().as_str().unwrap().to_string();
        assert!(!v.contains('?'), "{key}: {v}");
    }

    // verify with no --parent fetches the recorded parents at the recorded commit.
    s.proxy.reset();
    let o = s.run(&["verify", out.to_str().unwrap(), "--json"]);
    assert_ok(&o);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["basis"], "using the recipe recorded in the child");
    assert_eq!(v["passed"], true);
    let log = s.nginx.access_log();
    for file in ["v3-q3mix.gguf", "r1-iq2mix.gguf"] {
        assert!(
            log.contains(&format!("/resolve/{REPO_COMMIT}/{file}")),
            "{file} not fetched at the commit: {log}"
        );
        assert!(s.proxy.served(file, true) > 0, "{file}: no data read");
    }
}

#[test]
fn a_mixed_child_given_remote_parents_is_checked_for_its_sources_only() {
    let test = "a_mixed_child_given_remote_parents_is_checked_for_its_sources_only";
    if !have(test, &[Oracle::Ggml]) {
        return;
    }
    let Some(s) = server(test) else {
        return;
    };
    let recipe = s.out("mix.toml");
    std::fs::write(
        &recipe,
        "[recipe]\nbase = 'v3'\n[[rules]]\nmatch = 'attn_output'\nmix = { v3 = 0.5, r1 = 0.5 }\n",
    )
    .unwrap();
    let out = s.out("mixed.gguf");
    assert_ok(&s.run(&[
        "splice",
        "--parent",
        &format!("v3={}", s.local("v3-q3mix.gguf")),
        "--parent",
        &format!("r1={}", s.local("r1-q3mix.gguf")),
        "--recipe",
        recipe.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "-q",
    ]));
    // The recorded recipe mixes, which reads local parents only: the sources are checked,
    // and the run says why the recipe was not.
    let o = s.run(&[
        "verify",
        out.to_str().unwrap(),
        "--parent",
        &format!("v3={}", s.hf("v3-q3mix.gguf")),
        "--parent",
        &format!("r1={}", s.hf("r1-q3mix.gguf")),
        "--json",
    ]);
    assert_exit(&o, 0);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["basis"], "no recipe: where each tensor came from only");
    assert_eq!(v["mixed"].as_array().unwrap().len(), 3, "{v}");
    assert!(
        stderr(&o).contains("the recorded recipe cannot be checked here"),
        "{}",
        stderr(&o)
    );
}
