//! Router files and made routers: reading, shapes, and each refusal, on files whose bytes
//! are assembled here by hand.

use super::files::f16_to_f32;
use super::*;

fn npy(shape: &[u64], values: &[f32]) -> Vec<u8> {
    let data: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    npy_raw("<f4", shape, &data)
}

/// A version 1 `.npy` file as `np.save` writes it: magic, version, header length, a dict
/// literal padded to 64 bytes with a newline, then `data` as given.
fn npy_raw(descr: &str, shape: &[u64], data: &[u8]) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let mut h = format!(
        "{{'descr': '{descr}', 'fortran_order': False, 'shape': ({},), }}",
        dims.join(", ")
    );
    while (10 + h.len() + 1) % 64 != 0 {
        h.push(' ');
    }
    h.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend((h.len() as u16).to_le_bytes());
    out.extend(h.as_bytes());
    out.extend(data);
    out
}

/// A `.safetensors` file: the header's length (u64 LE), the header text as given (so it can
/// repeat a key), then `data`.
fn safetensors(header: &str, data: &[u8]) -> Vec<u8> {
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend(header.as_bytes());
    out.extend(data);
    out
}

/// `router_bytes` from a file holding `bytes`, for `layers`, 2 experts of 4 values.
fn from_bytes(name: &str, bytes: &[u8], layers: &[u64]) -> Result<Vec<Vec<u8>>, AssembleError> {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join(name);
    std::fs::write(&p, bytes).unwrap();
    router_bytes(&RouterSpec::File(p), layers, 2, 4)
}

fn value_err(e: AssembleError) -> (String, u64, Vec<u64>, String) {
    match e {
        AssembleError::RouterValue {
            tensor,
            element,
            index,
            found,
            ..
        } => (tensor, element, index, found),
        e => panic!("{e:?}"),
    }
}

fn floats(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

#[test]
fn random_rows_are_reproducible_bounded_and_independent_of_the_expert_count() {
    let a = router_bytes(&RouterSpec::Random(7), &[0, 1], 3, 16).unwrap();
    let b = router_bytes(&RouterSpec::Random(7), &[0, 1], 4, 16).unwrap();
    assert_eq!(
        a[1],
        b[1][..a[1].len()],
        "row e of layer l does not depend on N"
    );
    assert_ne!(a[0], a[1], "layers differ");
    let c = router_bytes(&RouterSpec::Random(8), &[0, 1], 3, 16).unwrap();
    assert_ne!(a, c, "seeds differ");
    let v = floats(&a[0]);
    assert!(v.iter().all(|x| x.abs() < 0.25 && *x != 0.0));
    // Pinned values, so the documented generator cannot drift.
    let r = random_row(0, 0, 0, 4);
    // (A Python reimplementation of the module comment gives the same values.)
    let expected = [-0.06847203f32, -0.47356623, 0.47088194, -0.39365333];
    for (x, y) in r.iter().zip(expected) {
        assert!((x - y).abs() < 1e-6, "{r:?}");
    }
}

#[test]
fn uniform_is_zero() {
    let u = router_bytes(&RouterSpec::Uniform, &[3], 2, 8).unwrap();
    assert_eq!(u, vec![vec![0u8; 2 * 8 * 4]]);
}

#[test]
fn npy_files_per_layer_or_shared() {
    let dir = tempfile::tempdir().unwrap();
    let vals: Vec<f32> = (0..2 * 3 * 4).map(|i| i as f32).collect();
    let p = dir.path().join("g.npy");
    std::fs::write(&p, npy(&[2, 3, 4], &vals)).unwrap();
    let r = router_bytes(&RouterSpec::File(p.clone()), &[1, 2], 3, 4).unwrap();
    assert_eq!(floats(&r[1]), vals[12..]);
    std::fs::write(&p, npy(&[3, 4], &vals[..12])).unwrap();
    let r = router_bytes(&RouterSpec::File(p.clone()), &[1, 2], 3, 4).unwrap();
    assert_eq!(floats(&r[0]), floats(&r[1]));
    let e = router_bytes(&RouterSpec::File(p), &[1, 2], 2, 4).unwrap_err();
    assert!(e.to_string().contains("[2, 4]"), "{e}");
}

#[test]
fn safetensors_per_layer_in_mixtral_naming_and_bf16() {
    let dir = tempfile::tempdir().unwrap();
    let mut header = serde_json::Map::new();
    let mut data = Vec::new();
    for l in [0u64, 1] {
        // BF16: the top half of the f32 bits (exact for small integers).
        let vals: Vec<u16> = (0..2 * 4)
            .map(|i| ((1.0f32 + (l * 8 + i) as f32).to_bits() >> 16) as u16)
            .collect();
        let a = data.len();
        data.extend(vals.iter().flat_map(|v| v.to_le_bytes()));
        header.insert(
            format!("model.layers.{l}.block_sparse_moe.gate.weight"),
            serde_json::json!({"dtype": "BF16", "shape": [2, 4], "data_offsets": [a, data.len()]}),
        );
    }
    let h = serde_json::to_vec(&header).unwrap();
    let mut file = (h.len() as u64).to_le_bytes().to_vec();
    file.extend(h);
    file.extend(data);
    let p = dir.path().join("g.safetensors");
    std::fs::write(&p, file).unwrap();
    let r = router_bytes(&RouterSpec::File(p.clone()), &[0, 1], 2, 4).unwrap();
    assert_eq!(floats(&r[1])[0], 9.0);
    let e = router_bytes(&RouterSpec::File(p), &[0, 1, 2], 2, 4).unwrap_err();
    assert!(
        matches!(&e, AssembleError::RouterLayersMissing { missing, found, .. }
            if *missing == [2] && *found == [0, 1]),
        "{e}"
    );
}

#[test]
fn half_precision_converts_exactly() {
    assert_eq!(f16_to_f32(0x3c00), 1.0);
    assert_eq!(f16_to_f32(0xc000), -2.0);
    assert_eq!(f16_to_f32(0x0001), 2f32.powi(-24));
    assert!(f16_to_f32(0x7c00).is_infinite());
}

#[test]
fn broken_files_are_refused_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("g.npy");
    std::fs::write(&p, b"not numpy").unwrap();
    assert!(router_bytes(&RouterSpec::File(p.clone()), &[0], 2, 4).is_err());
    let mut short = npy(&[2, 4], &[0.0; 8]);
    short.truncate(short.len() - 4);
    std::fs::write(&p, short).unwrap();
    let e = router_bytes(&RouterSpec::File(p), &[0], 2, 4).unwrap_err();
    assert!(e.to_string().contains("more data"), "{e}");
    let t = dir.path().join("g.txt");
    std::fs::write(&t, b"x").unwrap();
    assert!(router_bytes(&RouterSpec::File(t), &[0], 2, 4).is_err());
}

#[test]
fn nan_and_infinity_are_refused_by_tensor_and_element() {
    let mut v = [0.5f32; 8];
    v[5] = f32::NAN;
    let e = from_bytes("g.npy", &npy(&[2, 4], &v), &[0]).unwrap_err();
    assert_eq!(value_err(e), ("array".into(), 5, vec![1, 1], "NaN".into()));
    v[5] = 0.5;
    v[2] = f32::NEG_INFINITY;
    let e = from_bytes("g.npy", &npy(&[1, 2, 4], &v), &[7]).unwrap_err();
    assert_eq!(
        value_err(e),
        ("array".into(), 2, vec![0, 0, 2], "-inf".into())
    );
    // F16 infinity (0x7c00) in layer 1's tensor of a per-layer file.
    let mut data = vec![0u8; 2 * 16];
    data[16 + 6..16 + 8].copy_from_slice(&0x7c00u16.to_le_bytes());
    let header = r#"{"blk.0.ffn_gate_inp.weight":{"dtype":"F16","shape":[2,4],"data_offsets":[0,16]},"blk.1.ffn_gate_inp.weight":{"dtype":"F16","shape":[2,4],"data_offsets":[16,32]}}"#;
    let e = from_bytes("g.safetensors", &safetensors(header, &data), &[0, 1]).unwrap_err();
    assert_eq!(
        value_err(e),
        (
            "blk.1.ffn_gate_inp.weight".into(),
            3,
            vec![0, 3],
            "inf".into()
        )
    );
}

#[test]
fn an_f64_beyond_f32s_range_is_refused_not_made_infinite() {
    let mut data: Vec<u8> = [0.25f64; 8].iter().flat_map(|v| v.to_le_bytes()).collect();
    data[7 * 8..].copy_from_slice(&1e300f64.to_le_bytes());
    let e = from_bytes("g.npy", &npy_raw("<f8", &[2, 4], &data), &[0]).unwrap_err();
    let (tensor, element, index, found) = value_err(e);
    assert_eq!((tensor.as_str(), element, index), ("array", 7, vec![1, 3]));
    assert!(found.contains("1e300"), "{found}");
    // Within range, F64 values are taken (rounded to F32).
    data[7 * 8..].copy_from_slice(&3e38f64.to_le_bytes());
    let r = from_bytes("g.npy", &npy_raw("<f8", &[2, 4], &data), &[0]).unwrap();
    assert_eq!(floats(&r[0])[7], 3e38f32);
}

#[test]
fn one_layers_tensor_is_not_applied_to_every_layer() {
    let data: Vec<u8> = [1.0f32; 8].iter().flat_map(|v| v.to_le_bytes()).collect();
    let header =
        r#"{"blk.0.ffn_gate_inp.weight":{"dtype":"F32","shape":[2,4],"data_offsets":[0,32]}}"#;
    let file = safetensors(header, &data);
    let e = from_bytes("g.safetensors", &file, &[0, 1, 2]).unwrap_err();
    assert!(
        matches!(&e, AssembleError::RouterLayersMissing { missing, found, .. }
            if *missing == [1, 2] && *found == [0]),
        "{e:?}"
    );
    // The same tensor is layer 0's when the output has only layer 0.
    assert_eq!(from_bytes("g.safetensors", &file, &[0]).unwrap()[0], data);
    // Without a layer in its name, one tensor serves every layer.
    let shared = r#"{"gate":{"dtype":"F32","shape":[2,4],"data_offsets":[0,32]}}"#;
    let r = from_bytes("g.safetensors", &safetensors(shared, &data), &[0, 1, 2]).unwrap();
    assert_eq!(r, vec![data.clone(); 3]);
}

#[test]
fn bytes_after_the_npy_data_are_refused() {
    let mut file = npy(&[2, 4], &[0.0; 8]);
    file.extend([0u8; 4]);
    let e = from_bytes("g.npy", &file, &[0]).unwrap_err();
    assert!(
        matches!(&e, AssembleError::RouterFile { reason, .. } if reason.contains("4 bytes after the data")),
        "{e:?}"
    );
}

#[test]
fn a_key_given_twice_in_a_safetensors_header_is_refused() {
    let data: Vec<u8> = (0..16).flat_map(|i| (i as f32).to_le_bytes()).collect();
    let t = |a: u32, b: u32| format!(r#"{{"dtype":"F32","shape":[2,4],"data_offsets":[{a},{b}]}}"#);
    let twice = |header: String| {
        let e = from_bytes("g.safetensors", &safetensors(&header, &data), &[0]).unwrap_err();
        match e {
            AssembleError::RouterFile { reason, .. } => reason,
            e => panic!("{e:?}"),
        }
    };
    // A tensor given twice: a JSON reader would keep the second silently.
    let name = "blk.0.ffn_gate_inp.weight";
    let r = twice(format!(
        r#"{{"{name}":{},"{name}":{}}}"#,
        t(0, 32),
        t(32, 64)
    ));
    assert!(
        r.contains("key 'blk.0.ffn_gate_inp.weight' is given twice"),
        "{r}"
    );
    // A field of a tensor given twice.
    let r = twice(format!(
        r#"{{"{name}":{{"dtype":"F32","shape":[2,4],"data_offsets":[0,32],"data_offsets":[32,64]}}}}"#
    ));
    assert!(r.contains(name) && r.contains("duplicate field"), "{r}");
    // A metadata key given twice.
    let r = twice(format!(
        r#"{{"__metadata__":{{"a":"1","a":"2"}},"{name}":{}}}"#,
        t(0, 32)
    ));
    assert!(r.contains("key 'a' is given twice"), "{r}");
    // The same header with each key once is read.
    let ok = format!(r#"{{"__metadata__":{{"a":"1"}},"{name}":{}}}"#, t(32, 64));
    let r = from_bytes("g.safetensors", &safetensors(&ok, &data), &[0]).unwrap();
    assert_eq!(r[0], data[32..]);
}

#[test]
fn a_router_file_that_is_not_a_regular_file_is_refused_before_reading() {
    let dir = tempfile::tempdir().unwrap();
    let zero = dir.path().join("g.npy");
    std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
    let e = router_bytes(&RouterSpec::File(zero), &[0], 2, 4).unwrap_err();
    assert!(
        matches!(
            e,
            AssembleError::Input(crate::input::InputError::NotRegular { .. })
        ),
        "{e:?}"
    );
    let e = router_bytes(&RouterSpec::File(dir.path().join("no.npy")), &[0], 2, 4).unwrap_err();
    assert!(
        matches!(e, AssembleError::Input(crate::input::InputError::Io { .. })),
        "{e:?}"
    );
}
