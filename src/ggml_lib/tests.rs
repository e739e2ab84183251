//! Unit tests of the ggml binding: the guards before ggml is called, and (with a ggml, see
//! [`super::test_library`]) the table check, the layout check and round trips.

use super::*;

fn ty(name: &str) -> GgmlType {
    GgmlType::from_name(name).unwrap()
}

#[test]
fn quantizable_types_are_known_types() {
    for n in QUANTIZABLE.iter().chain(NEEDS_IMATRIX) {
        assert!(GgmlType::from_name(n).is_some(), "{n}");
    }
    assert!(can_quantize(ty("Q4_K")) && can_quantize(ty("IQ4_XS")));
    assert!(!can_quantize(ty("Q8_K")) && !can_quantize(ty("Q8_1")) && !can_quantize(ty("I32")));
    for n in NEEDS_IMATRIX {
        assert!(requires_imatrix(ty(n)), "{n}");
    }
    assert!(!requires_imatrix(ty("Q4_K")));
}

#[test]
fn sizes_are_checked_before_ggml_is_called() {
    let mut out = vec![0u8; 144];
    let e = quantize(ty("Q4_K"), 100, &[0.0; 100], None, &mut out).unwrap_err();
    assert!(matches!(e, GgmlError::BadSize { .. }), "{e}");
    let e = quantize(ty("Q4_K"), 256, &[0.0; 256], None, &mut out[..100]).unwrap_err();
    assert!(matches!(e, GgmlError::BadSize { .. }), "{e}");
    let e = quantize(ty("Q8_K"), 256, &[0.0; 256], None, &mut out).unwrap_err();
    assert_eq!(e, GgmlError::CannotQuantize { ty: ty("Q8_K") });
    let mut iq = vec![0u8; 66];
    let e = quantize(ty("IQ2_XXS"), 256, &[0.0; 256], None, &mut iq).unwrap_err();
    assert_eq!(e, GgmlError::NeedsImatrix { ty: ty("IQ2_XXS") });
    let e = quantize(ty("IQ2_XXS"), 256, &[0.0; 256], Some(&[1.0; 255]), &mut iq);
    assert!(matches!(e, Err(GgmlError::BadSize { .. })));
}

#[test]
fn f32_reads_as_it_is() {
    let src: Vec<u8> = [1.5f32, -0.0, 3.25]
        .iter()
        .flat_map(|f| f.to_le_bytes())
        .collect();
    let mut dst = [0f32; 3];
    dequantize(GgmlType::F32, 3, &src, &mut dst).unwrap();
    assert_eq!(
        dst.map(f32::to_bits),
        [1.5f32, -0.0, 3.25].map(f32::to_bits)
    );
}

#[test]
fn a_table_that_differs_is_refused_naming_the_type_and_both_values() {
    let Some(g) = test_library("a_table_that_differs_is_refused") else {
        return;
    };
    let q4k = ty("Q4_K");
    let mut want = check::Expected::of(q4k);
    assert!(check::check_traits(&g.lib, q4k, want).is_ok());
    want.bytes += 2;
    match check::check_traits(&g.lib, q4k, want) {
        Err(GgmlError::TableMismatch {
            field: "type_size",
            ours,
            theirs,
            ..
        }) => assert_eq!((ours.as_str(), theirs.as_str()), ("146", "144")),
        other => panic!("{other:?}"),
    }
    let mut want = check::Expected::of(q4k);
    want.name = "Q5_K";
    assert!(matches!(
        check::check_traits(&g.lib, q4k, want),
        Err(GgmlError::TableMismatch {
            field: "type_name",
            ..
        })
    ));
    // ik_llama.cpp's types share ids with mainline's: never asked of a mainline ggml.
    assert!(matches!(
        g.check(GgmlType::IQ4_KS),
        Err(GgmlError::TypeUnknown { .. })
    ));
    // Every mainline type of our table passes against the tests' ggml.
    for t in GgmlType::all() {
        g.check(t).unwrap_or_else(|e| panic!("{t}: {e}"));
    }
}

/// The real library's table, read at the stride of a struct 8 bytes longer than ours:
/// what our declaration would read from a ggml whose `struct ggml_type_traits` grew a
/// field. (No such ggml exists to test with: b11434 and 0.20.2 agree.)
unsafe extern "C" fn longer_struct(id: c_int) -> *const load::TypeTraits {
    let real = test_library("longer_struct")
        .unwrap()
        .lib
        .fns
        .get_type_traits;
    let stride = std::mem::size_of::<load::TypeTraits>() + 8;
    // SAFETY: entry 0 is in the table; for the ids below, id * stride stays inside the
    // 43 entries of ggml's table (a test-only read of static data).
    unsafe { real(0).cast::<u8>().add(id as usize * stride).cast() }
}

#[test]
fn a_traits_struct_of_another_layout_is_refused() {
    let Some(g) = test_library("a_traits_struct_of_another_layout_is_refused") else {
        return;
    };
    let mut lib = load::open(g.path(), Found::Flag).unwrap();
    lib.fns.get_type_traits = longer_struct;
    let q4k = ty("Q4_K");
    match check::check_traits(&lib, q4k, check::Expected::of(q4k)) {
        Err(GgmlError::TableMismatch { field, .. }) => {
            assert_eq!(field, "struct ggml_type_traits layout")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn ggml_round_trips_q8_0() {
    if test_library("ggml_round_trips_q8_0").is_none() {
        return;
    }
    // Q8_0 keeps each value within half a step (d = max/127, d stored as f16).
    let src: Vec<f32> = (0..64).map(|i| (i as f32 - 32.0) / 127.0 * 4.0).collect();
    let mut q = vec![0u8; 2 * 34];
    quantize(ty("Q8_0"), 64, &src, None, &mut q).unwrap();
    let mut back = vec![0f32; 64];
    dequantize(ty("Q8_0"), 64, &q, &mut back).unwrap();
    for (a, b) in src.iter().zip(&back) {
        assert!((a - b).abs() < 0.01, "{a} {b}");
    }
    assert!(can_dequantize(ty("IQ2_XXS")) && can_dequantize(ty("Q4_K")));
    assert!(!can_dequantize(ty("Q8_1")));
    let e = dequantize(ty("Q8_1"), 32, &[0u8; 36], &mut [0f32; 32]).unwrap_err();
    assert_eq!(e, GgmlError::CannotDequantize { ty: ty("Q8_1") });
}

#[test]
fn ggml_refuses_non_finite_rows() {
    if test_library("ggml_refuses_non_finite_rows").is_none() {
        return;
    }
    let mut src = vec![0.5f32; 32];
    src[3] = f32::NAN;
    let mut out = vec![0u8; 32 * 4];
    assert_eq!(
        quantize(GgmlType::F32, 32, &src, None, &mut out),
        Err(GgmlError::Invalid { ty: GgmlType::F32 })
    );
    src[3] = f32::INFINITY;
    let mut q = vec![0u8; 34];
    assert_eq!(
        quantize(ty("Q8_0"), 32, &src, None, &mut q),
        Err(GgmlError::Invalid { ty: ty("Q8_0") })
    );
}
