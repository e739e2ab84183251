//! Plan errors of mix rules name the tensor and the fix.

use super::*;

fn plan_error(text: &str) -> PlanError {
    let dir = tempfile::tempdir().unwrap();
    let rec = write_recipe(dir.path(), text);
    let recipe = Recipe::from_file(&rec).unwrap();
    let parents = vec![
        Parent {
            name: "v3".into(),
            model: Model::open(&v3()).unwrap(),
        },
        Parent {
            name: "r1".into(),
            model: Model::open(&r1()).unwrap(),
        },
    ];
    match plan::build(
        &parents,
        &recipe,
        &dir.path().join("c.gguf"),
        SplitOptions::default(),
    ) {
        Err(e) => e,
        Ok(_) => panic!("planned: {text}"),
    }
}

#[test]
fn plan_errors_name_the_tensor_and_the_fix() {
    if !have("plan_errors_name_the_tensor_and_the_fix", &[Oracle::Ggml]) {
        return;
    }
    let rule = "[[rules]]\nmatch = 'blk\\.1\\.ffn_up_exps'\nmix = { r1 = 0.5, v3 = 0.5 }\n";
    let e = plan_error(&format!("{rule}type = 'IQ2_XXS'\n"));
    assert!(
        matches!(&e, PlanError::MixNeedsImatrix { tensor, .. } if tensor == "blk.1.ffn_up_exps.weight"),
        "{e}"
    );
    assert!(e.to_string().contains("imatrix = "), "{e}");
    let e = plan_error(&format!("{rule}type = 'Q8_K'\n"));
    assert!(matches!(e, PlanError::MixOutputType { .. }), "{e}");
    // attn_k_b rows have 64 elements: no K-quant fits.
    let e = plan_error(
        "[[rules]]\nmatch = 'blk\\.1\\.attn_k_b'\nmix = { r1 = 0.5, v3 = 0.5 }\ntype = 'Q4_K'\n",
    );
    assert!(matches!(e, PlanError::MixOutputType { .. }), "{e}");
    assert!(e.to_string().contains("64"), "{e}");
    let e = plan_error("[[rules]]\nmatch = 'x'\nmix = { r2 = 1 }\n");
    assert!(matches!(e, PlanError::UnknownParent { .. }), "{e}");
    let e = plan_error(&format!("{rule}imatrix = 'missing.imatrix.gguf'\n"));
    assert!(matches!(e, PlanError::Imatrix { .. }), "{e}");
    // An importance matrix made for another model: the entry's size does not fit, or
    // there is none where the type needs one.
    let f32s = |n: usize| vec![0x3f800000u32.to_le_bytes(); n].concat();
    let dir = tempfile::tempdir().unwrap();
    let im = dir.path().join("other.imatrix.gguf");
    let bytes = gguf_splice::testkit::GgufBuilder::new()
        .kv_str_array("imatrix.datasets", &["t.txt"])
        .kv_u32("imatrix.chunk_count", 1)
        .kv_u32("imatrix.chunk_size", 512)
        .tensor_raw("blk.1.ffn_up_exps.weight.in_sum2", &[128, 4], 0, f32s(512))
        .tensor_raw("blk.1.ffn_up_exps.weight.counts", &[1, 4], 0, f32s(4))
        .build();
    std::fs::write(&im, bytes).unwrap();
    let e = plan_error(&format!(
        "{rule}type = 'Q4_K'\nimatrix = '{}'\n",
        im.display()
    ));
    assert!(
        matches!(
            e,
            PlanError::MixImatrixSize {
                expected: 1024,
                found: 512,
                ..
            }
        ),
        "{e}"
    );
    let e = plan_error(&format!(
        "[[rules]]\nmatch = 'blk\\.2\\.ffn_up_exps'\nmix = {{ r1 = 0.5, v3 = 0.5 }}\ntype = 'IQ2_XS'\nimatrix = '{}'\n",
        im.display()
    ));
    assert!(
        matches!(&e, PlanError::MixNeedsImatrix { found, .. } if found.contains("no entry")),
        "{e}"
    );
    // Some experts picked from a parent of another type than the mix writes.
    let e = plan_error(
        "[[rules]]\nmatch = 'blk\\.1\\.ffn_up_exps'\nexperts = '0'\nfrom = 'r1'\n[[rules]]\nmatch = 'blk\\.1\\.ffn_up_exps'\nmix = { r1 = 0.5, v3 = 0.5 }\ntype = 'Q4_K'\n[recipe]\nallow_partial_experts = true\n",
    );
    assert!(matches!(e, PlanError::MixTypeMismatch { .. }), "{e}");
}
