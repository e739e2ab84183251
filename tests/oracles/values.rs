//! `diff --values`: distances of dequantized values against numpy's, computed from
//! gguf-py's dequantization of the fixtures (tests/oracle/values.py); identical files at 0;
//! the same numbers, to the bit, as a mix rule's threshold measures; and the refusal of a
//! machine without ggml.
//!
//! Needs a ggml (GGUF_SPLICE_GGML) and gguf-py for the numpy reference: `have` skips the tests
//! without them, or fails them under GGUF_SPLICE_REQUIRE_ORACLES=1 (scripts/test.sh).

use std::collections::HashMap;
use std::path::Path;

use crate::common::*;
use serde_json::Value;

/// `diff A B --values --json`, parsed.
fn values(a: &Path, b: &Path) -> Value {
    let o = run(&[
        "diff",
        a.to_str().unwrap(),
        b.to_str().unwrap(),
        "--values",
        "--json",
    ]);
    assert_ok(&o);
    serde_json::from_slice(&o.stdout).unwrap()
}

/// numpy's distances (tests/oracle/values.py), by tensor.
fn numpy(a: &Path, b: &Path) -> HashMap<String, Value> {
    serde_json::from_slice(&oracle_script("values.py", &[a, b])).unwrap()
}

/// Within float tolerance: both sides sum f64 of the same f32 values (gguf-py's and
/// ggml's dequantization agree to the last bit or two), in another order.
#[track_caller]
fn close(got: &Value, want: &Value, what: &str) {
    let (g, w) = (got.as_f64(), want.as_f64());
    match (g, w) {
        (Some(g), Some(w)) => assert!(
            (g - w).abs() <= 1e-6 * w.abs().max(1e-3),
            "{what}: gguf-splice {g}, numpy {w}"
        ),
        _ => assert_eq!(got, want, "{what}"),
    }
}

/// Every tensor and expert of `ours` against numpy; returns the routed experts' distances.
fn agree(ours: &Value, reference: &HashMap<String, Value>) -> Vec<f64> {
    let mut experts = Vec::new();
    let tensors = ours["tensors"].as_array().unwrap();
    assert_eq!(tensors.len(), reference.len(), "every tensor compared");
    for t in tensors {
        let name = t["name"].as_str().unwrap();
        let want = &reference[name];
        assert_eq!(t["status"], "compared", "{name}");
        close(&t["distance"], &want["distance"], name);
        close(&t["cosine"], &want["cosine"], name);
        if name.contains("_exps.") {
            for k in ["distance", "cosine"] {
                let (g, w) = (&t["experts"][k], &want["experts"][k]);
                assert_eq!(g.as_array().unwrap().len(), 4, "{name}");
                for (e, (g, w)) in g
                    .as_array()
                    .unwrap()
                    .iter()
                    .zip(w.as_array().unwrap())
                    .enumerate()
                {
                    close(g, w, &format!("{name} expert {e} {k}"));
                }
            }
            experts.extend(
                t["experts"]["distance"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|d| d.as_f64().unwrap()),
            );
        }
    }
    assert_eq!(
        experts.len(),
        2 * 3 * 4,
        "two MoE blocks, three matrices, four experts"
    );
    experts
}

#[test]
fn same_weights_in_other_types_are_close_and_equal_numpy() {
    if !have(
        "same_weights_in_other_types_are_close_and_equal_numpy",
        &[Oracle::Ggml, Oracle::GgufPy],
    ) {
        return;
    }
    // The same R1 weights: Q3_K experts against IQ2_XXS ones, Q4_K attention against
    // IQ3_XXS, IQ4_XS, Q5_K and Q8_0; some tensors in one type in both.
    let (a, b) = (fixture("r1-q3mix.gguf"), fixture("r1-iq2mix.gguf"));
    let ours = values(&a, &b);
    let experts = agree(&ours, &numpy(&a, &b));
    // Quantization noise only: IQ2_XXS is 2 bits a weight, so about a third.
    assert!(
        experts.iter().all(|d| (0.2..0.5).contains(d)),
        "{experts:?}"
    );
    for t in ours["tensors"].as_array().unwrap() {
        let d = t["distance"].as_f64().unwrap();
        if t["type"]["a"] == t["type"]["b"] {
            assert_eq!(d, 0.0, "{}: same weights, same type", t["name"]);
        } else {
            assert!(d > 0.0 && d < 0.5, "{}: {d}", t["name"]);
        }
    }
    let routed = ours["by_role"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["role"] == "routed_experts")
        .unwrap();
    assert_eq!(routed["tensors"], 6);
}

#[test]
fn different_weights_are_far_and_equal_numpy() {
    if !have(
        "different_weights_are_far_and_equal_numpy",
        &[Oracle::Ggml, Oracle::GgufPy],
    ) {
        return;
    }
    // Different seeds, same types: unrelated weights of one scale are about √2 apart.
    let (a, b) = (fixture("r1-q3mix.gguf"), fixture("v3-q3mix.gguf"));
    let ours = values(&a, &b);
    let experts = agree(&ours, &numpy(&a, &b));
    assert!(
        experts.iter().all(|d| (1.3..1.55).contains(d)),
        "{experts:?}"
    );
}

#[test]
fn identical_files_are_at_distance_zero() {
    if !have("identical_files_are_at_distance_zero", &[Oracle::Ggml]) {
        return;
    }
    let a = fixture("v3-q3mix.gguf");
    let ours = values(&a, &a);
    for t in ours["tensors"].as_array().unwrap() {
        assert_eq!(t["distance"], 0.0, "{}", t["name"]);
        assert_eq!(t["cosine"], 1.0, "{}", t["name"]);
        if let Some(e) = t["experts"]["distance"].as_array() {
            assert!(e.iter().all(|d| *d == 0.0), "{}", t["name"]);
        }
    }
    for r in ours["by_layer_role"].as_array().unwrap() {
        assert_eq!(r["distance"], 0.0, "{r}");
    }
    // A split copy of a model has the same values.
    let (s, w) = (
        fixture("r1-iq2mix-split-00001-of-00003.gguf"),
        fixture("r1-iq2mix.gguf"),
    );
    let split = values(&s, &w);
    assert!(
        split["tensors"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["distance"] == 0.0)
    );
    // The text report says what the numbers are.
    let o = run(&["diff", a.to_str().unwrap(), a.to_str().unwrap(), "--values"]);
    assert_ok(&o);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("‖A − B‖ / ‖B‖"), "{text}");
    assert!(text.contains("by layer and role"), "{text}");
}

#[test]
fn map_distances_are_the_mix_thresholds_distances() {
    if !have(
        "map_distances_are_the_mix_thresholds_distances",
        &[Oracle::Ggml],
    ) {
        return;
    }
    // A mix rule measures ‖P − B‖ / ‖B‖ with B its base: `diff P B --values` must show
    // the very numbers, whole tensors and experts, so a threshold can be read off a map.
    let (v3, r1) = (fixture("v3-q3mix.gguf"), fixture("r1-q3mix.gguf"));
    let ours = values(&r1, &v3);
    let dir = tempfile::tempdir().unwrap();
    let recipe = dir.path().join("r.toml");
    std::fs::write(
        &recipe,
        "[recipe]\nbase = 'v3'\n\
         [[rules]]\nrole = 'routed_experts'\nlayers = '1'\nexperts = '0-3'\nmix = { r1 = 0.75, v3 = 0.25 }\nthreshold = 1.41\n\
         [[rules]]\nrole = 'routed_experts'\nlayers = '2'\nmix = { r1 = 0.5, v3 = 0.5 }\nthreshold = 0.5\n\
         [[rules]]\nmatch = 'blk\\.2\\.attn_q_a\\.'\nmix = { r1 = 0.5, v3 = 0.5 }\nthreshold = 0.5\n",
    )
    .unwrap();
    let o = run(&[
        "splice",
        "--parent",
        &format!("v3={}", v3.display()),
        "--parent",
        &format!("r1={}", r1.display()),
        "--recipe",
        recipe.to_str().unwrap(),
        "-o",
        dir.path().join("c.gguf").to_str().unwrap(),
        "--dry-run",
        "--json",
    ]);
    assert_ok(&o);
    let plan: Value = serde_json::from_slice(&o.stdout).unwrap();
    let planned = |name: &str| -> Vec<Value> {
        let t = plan["tensors"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == name)
            .unwrap();
        t["mix"]["slices"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["distance"].clone())
            .collect()
    };
    let shown = |name: &str| {
        ours["tensors"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == name)
            .unwrap()
            .clone()
    };
    let up = shown("blk.1.ffn_up_exps.weight");
    assert_eq!(
        planned("blk.1.ffn_up_exps.weight"),
        *up["experts"]["distance"].as_array().unwrap()
    );
    for name in ["blk.2.ffn_down_exps.weight", "blk.2.attn_q_a.weight"] {
        assert_eq!(planned(name), [shown(name)["distance"].clone()], "{name}");
    }
}

#[test]
fn without_ggml_values_are_refused_with_the_ways_to_get_one() {
    let a = fixture("v3-q3mix.gguf");
    for extra in [&["--values"][..], &["--map", "m.svg"], &["--grid"]] {
        let mut args = vec!["diff", a.to_str().unwrap(), a.to_str().unwrap()];
        args.extend_from_slice(extra);
        let o = run_without_ggml(&args);
        // Exit 5, as for a mix rule: this machine lacks what the command needs.
        assert_exit(&o, 5);
        let e = stderr(&o);
        assert_eq!(e.lines().count(), 1, "{e}");
        assert!(
            e.contains("--values") && e.contains("pip install libggml-python"),
            "{e}"
        );
    }
}

#[test]
fn a_weights_scale_is_part_of_its_values() {
    if !have(
        "a_weights_scale_is_part_of_its_values",
        &[Oracle::Ggml, Oracle::GgufPy],
    ) {
        return;
    }
    // The same NVFP4 blocks, different per-expert scales: each expert's values differ by
    // its factor alone, so its distance is |sa - sb| / sb exactly and its cosine 1.
    let d = tempfile::tempdir().unwrap();
    let src = fixture("qwen3moe-a-mainline.gguf");
    let make = |name: &str, scale_seed: &str| {
        let p = d.path().join(name);
        oracle_script(
            "nvfp4_parents.py",
            &[src.to_str().unwrap(), p.to_str().unwrap(), "1", scale_seed],
        );
        p
    };
    let (a, b) = (make("a.gguf", "11"), make("b.gguf", "12"));
    let o = run(&[
        "diff",
        a.to_str().unwrap(),
        b.to_str().unwrap(),
        "--values",
        "--json",
    ]);
    assert_ok(&o);
    let ours: Value = serde_json::from_slice(&o.stdout).unwrap();
    let (ma, mb) = (
        gguf_splice::gguf::Model::open(&a).unwrap(),
        gguf_splice::gguf::Model::open(&b).unwrap(),
    );
    let floats = |m: &gguf_splice::gguf::Model, n: &str| -> Vec<f64> {
        tensor_bytes(m, n)
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64)
            .collect()
    };
    let mut checked = 0;
    for t in ours["tensors"].as_array().unwrap() {
        let name = t["name"].as_str().unwrap();
        if !name.ends_with("_exps.weight") {
            continue;
        }
        let scale = name.replace(".weight", ".scale");
        let (sa, sb) = (floats(&ma, &scale), floats(&mb, &scale));
        let dist = t["experts"]["distance"].as_array().unwrap();
        let cos = t["experts"]["cosine"].as_array().unwrap();
        for e in 0..4 {
            let want = (sa[e] - sb[e]).abs() / sb[e].abs();
            let got = dist[e].as_f64().unwrap();
            assert!(
                (got - want).abs() <= 1e-5 * want,
                "{name} expert {e}: {got} vs {want}"
            );
            assert!(
                (cos[e].as_f64().unwrap() - 1.0).abs() < 1e-6,
                "{name} expert {e}"
            );
        }
        checked += 1;
    }
    assert_eq!(checked, 6, "two blocks, three matrices");
    // And every tensor agrees with numpy on gguf-py's dequantization times the scale.
    let reference = numpy(&a, &b);
    for t in ours["tensors"].as_array().unwrap() {
        let name = t["name"].as_str().unwrap();
        close(&t["distance"], &reference[name]["distance"], name);
    }
}
