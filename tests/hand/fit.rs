//! `fit` on real quants of one model: the fixtures' R1 weights as llama-quantize's Q3_K mix
//! (`r1-q3mix`) and its IQ2_XXS mix (`r1-iq2mix`, also as a 3-shard set). The child never
//! passes the budget (sizes on disk), `splice` with the written recipe makes the same bytes
//! as `fit -o`, `verify` accepts the child, a budget below the smallest child is refused
//! naming it, and parents that do not fit together are refused as `splice` refuses them.
//!
//! Needs the `ggml` feature (the estimate dequantizes): `have` skips the tests without it,
//! or fails them under GGUF_SPLICE_REQUIRE_ORACLES=1 (scripts/test.sh).

use std::path::{Path, PathBuf};

use crate::common::*;
use serde_json::Value;

fn parents() -> Vec<String> {
    vec![
        format!("q3={}", fixture_arg("r1-q3mix.gguf")),
        format!("q2={}", fixture_arg("r1-iq2mix.gguf")),
    ]
}

/// `gguf-splice CMD --parent … ARGS`.
fn with_parents(cmd: &str, first: Option<&str>, parents: &[String], args: &[&str]) -> Vec<String> {
    let mut v = vec![cmd.to_string()];
    v.extend(first.map(str::to_string));
    for p in parents {
        v.push("--parent".into());
        v.push(p.clone());
    }
    v.extend(args.iter().map(|s| s.to_string()));
    v
}

fn go(v: &[String]) -> std::process::Output {
    let args: Vec<&str> = v.iter().map(String::as_str).collect();
    run(&args)
}

/// `fit --dry-run --json` with this budget.
fn dry(parents: &[String], budget: u64, out: &Path) -> Value {
    let o = go(&with_parents(
        "fit",
        None,
        parents,
        &[
            "--budget",
            &budget.to_string(),
            "-o",
            out.to_str().unwrap(),
            "--dry-run",
            "--json",
        ],
    ));
    assert_ok(&o);
    serde_json::from_slice(&o.stdout).unwrap()
}

fn file_len(p: &Path) -> u64 {
    std::fs::metadata(p).unwrap().len()
}

#[test]
fn fit_children_fit_and_splice_of_the_recipe_makes_the_same_bytes() {
    if !have("fit_children_fit", &[Oracle::Ggml]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let parents = parents();
    let big = dry(&parents, 1_000_000_000, &dir.path().join("x.gguf"));
    let minimum = big["minimum_bytes"].as_u64().unwrap();
    let largest = big["child_bytes"].as_u64().unwrap();
    // With room for everything, every unit comes from its reference: no error.
    assert_eq!(big["error"].as_f64(), Some(0.0));
    assert!(minimum < largest, "{minimum} < {largest}");
    let mut last_error = f64::INFINITY;
    for (i, budget) in [
        minimum,
        minimum + 1,
        (minimum + largest) / 2,
        largest - 1,
        largest,
    ]
    .into_iter()
    .enumerate()
    {
        let child = dir.path().join(format!("fit{i}.gguf"));
        let again = dir.path().join(format!("splice{i}.gguf"));
        let recipe = dir.path().join(format!("fit{i}.toml"));
        let o = go(&with_parents(
            "fit",
            None,
            &parents,
            &[
                "--budget",
                &budget.to_string(),
                "-o",
                child.to_str().unwrap(),
                "--write-recipe",
                recipe.to_str().unwrap(),
                "--quiet",
            ],
        ));
        assert_ok(&o);
        let size = file_len(&child);
        assert!(size <= budget, "budget {budget}: child of {size} bytes");
        // The dry run chose the same.
        let d = dry(&parents, budget, &child);
        assert_eq!(d["child_bytes"].as_u64(), Some(size));
        let error = d["error"].as_f64().unwrap();
        assert!(
            error <= last_error,
            "more budget, more error: {error} > {last_error}"
        );
        last_error = error;
        // splice with the written recipe: the same bytes.
        let o = go(&with_parents(
            "splice",
            None,
            &parents,
            &[
                "--recipe",
                recipe.to_str().unwrap(),
                "-o",
                again.to_str().unwrap(),
                "--quiet",
            ],
        ));
        assert_ok(&o);
        assert!(
            std::fs::read(&child).unwrap() == std::fs::read(&again).unwrap(),
            "budget {budget}: fit -o and splice --recipe differ"
        );
        // And verify accepts the child against that recipe.
        let o = go(&with_parents(
            "verify",
            Some(child.to_str().unwrap()),
            &parents,
            &["--recipe", recipe.to_str().unwrap()],
        ));
        assert_ok(&o);
    }
    // The smallest budget takes the smallest unit everywhere; the largest, the largest.
    assert_eq!(file_len(&dir.path().join("fit0.gguf")), minimum);
    assert_eq!(file_len(&dir.path().join("fit4.gguf")), largest);
}

#[test]
fn a_budget_below_the_smallest_child_is_refused_naming_it() {
    if !have("a_budget_below", &[Oracle::Ggml]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let parents = parents();
    let minimum = dry(&parents, 1_000_000_000, &dir.path().join("x.gguf"))["minimum_bytes"]
        .as_u64()
        .unwrap();
    let child = dir.path().join("child.gguf");
    let o = go(&with_parents(
        "fit",
        None,
        &parents,
        &[
            "--budget",
            &(minimum - 1).to_string(),
            "-o",
            child.to_str().unwrap(),
        ],
    ));
    assert_exit(&o, 2);
    assert!(stderr(&o).contains(&minimum.to_string()), "{}", stderr(&o));
    assert!(!child.exists());
    // The minimum a tiny budget is told is enough as it is said: the child's header records
    // the budget, whose digits count.
    let o = go(&with_parents(
        "fit",
        None,
        &parents,
        &["--budget", "1", "-o", child.to_str().unwrap()],
    ));
    assert_exit(&o, 2);
    let said: u64 = stderr(&o)
        .rsplit("at least ")
        .next()
        .and_then(|t| t.trim().parse().ok())
        .expect("the minimum is said");
    let o = go(&with_parents(
        "fit",
        None,
        &parents,
        &["--budget", &said.to_string(), "-o", child.to_str().unwrap()],
    ));
    assert_ok(&o);
    assert!(std::fs::metadata(&child).unwrap().len() <= said);
}

#[test]
fn a_shard_set_parent_is_read_as_one_model() {
    if !have("a_shard_set_parent", &[Oracle::Ggml]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let split = vec![
        format!("q3={}", fixture_arg("r1-q3mix.gguf")),
        format!("q2={}", fixture_arg("r1-iq2mix-split-00002-of-00003.gguf")),
    ];
    let out = dir.path().join("x.gguf");
    let a = dry(&parents(), 1_900_000, &out);
    let b = dry(&split, 1_900_000, &out);
    // The same choice from the same bytes (the child's header differs only in the parent's
    // file name that splice.recipe records).
    for k in ["error", "units", "bytes_read"] {
        assert_eq!(a[k], b[k], "{k}");
    }
}

#[test]
fn parents_of_other_models_are_refused_as_splice_refuses_them() {
    if !have("parents_of_other_models", &[Oracle::Ggml]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let parents = vec![
        format!("q3={}", fixture_arg("r1-q3mix.gguf")),
        format!("qw={}", fixture_arg("qwen3-ft-a-q4km.gguf")),
    ];
    let out: PathBuf = dir.path().join("x.gguf");
    let args = ["--budget", "10M", "-o", out.to_str().unwrap(), "--dry-run"];
    let fit = go(&with_parents("fit", None, &parents, &args));
    assert_exit(&fit, 3);
    let splice = go(&with_parents("splice", None, &parents, &args[2..]));
    assert_exit(&splice, 3);
    assert_eq!(
        stderr(&fit).lines().last(),
        stderr(&splice).lines().last(),
        "the same refusal"
    );
}

#[test]
fn without_ggml_fit_says_how_to_get_one() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.gguf");
    let args = with_parents(
        "fit",
        None,
        &parents(),
        &["--budget", "10M", "-o", out.to_str().unwrap(), "--dry-run"],
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = run_without_ggml(&args);
    assert_exit(&o, 5);
    let e = stderr(&o);
    assert_eq!(e.lines().count(), 1, "{e}");
    assert!(e.contains("pip install libggml-python"), "{e}");
}

#[test]
fn a_chimera_that_fits_routed_experts_from_r1_quants_the_rest_from_v3() {
    if !have("a_chimera_that_fits", &[Oracle::Ggml]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let parents = vec![
        format!("v3={}", fixture_arg("v3-q3mix.gguf")),
        format!("r1q3={}", fixture_arg("r1-q3mix.gguf")),
        format!("r1q2={}", fixture_arg("r1-iq2mix.gguf")),
    ];
    let constraint = dir.path().join("c.toml");
    std::fs::write(
        &constraint,
        "[[rules]]\nrole = \"routed_experts\"\nfrom = [\"r1q3\", \"r1q2\"]\n\
         [[rules]]\nmatch = \".\"\nfrom = \"v3\"\n",
    )
    .unwrap();
    let child = dir.path().join("chimera.gguf");
    let recipe = dir.path().join("chimera.toml");
    let budget = "1900000";
    let args = [
        "--recipe",
        constraint.to_str().unwrap(),
        "--budget",
        budget,
        "-o",
        child.to_str().unwrap(),
    ];
    let o = go(&with_parents(
        "fit",
        None,
        &parents,
        &[&args[..], &["--dry-run", "--json"]].concat(),
    ));
    assert_ok(&o);
    let d: Value = serde_json::from_slice(&o.stdout).unwrap();
    let mut expert_parents = Vec::new();
    for u in d["units"].as_array().unwrap() {
        let chosen = u["chosen"].as_str().unwrap();
        if u["role"] == "routed_experts" {
            assert!(chosen.starts_with("r1"), "{u}");
            expert_parents.push(chosen.to_string());
        } else {
            assert_eq!(chosen, "v3", "{u}");
        }
    }
    // The budget is too small for Q3_K experts in both layers: fit took IQ2_XXS somewhere.
    assert!(
        expert_parents.contains(&"r1q2".to_string()),
        "{expert_parents:?}"
    );
    let o = go(&with_parents(
        "fit",
        None,
        &parents,
        &[
            &args[..],
            &["--write-recipe", recipe.to_str().unwrap(), "-q"],
        ]
        .concat(),
    ));
    assert_ok(&o);
    assert!(file_len(&child) <= 1_900_000);
    let again = dir.path().join("again.gguf");
    let o = go(&with_parents(
        "splice",
        None,
        &parents,
        &[
            "--recipe",
            recipe.to_str().unwrap(),
            "-o",
            again.to_str().unwrap(),
            "-q",
        ],
    ));
    assert_ok(&o);
    assert!(std::fs::read(&child).unwrap() == std::fs::read(&again).unwrap());
    // A constraint naming a parent that is not given: refused, exit 3, nothing written.
    std::fs::write(&constraint, "[[rules]]\nmatch = \".\"\nfrom = [\"v4\"]\n").unwrap();
    let gone = dir.path().join("gone.gguf");
    let o = go(&with_parents(
        "fit",
        None,
        &parents,
        &[
            "--recipe",
            constraint.to_str().unwrap(),
            "--budget",
            budget,
            "-o",
            gone.to_str().unwrap(),
        ],
    ));
    assert_exit(&o, 3);
    assert!(stderr(&o).contains("v4"), "{}", stderr(&o));
    assert!(!gone.exists());
}
