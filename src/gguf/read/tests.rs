use super::*;
use crate::testkit::GgufBuilder;
use std::fs::File;

fn path() -> &'static Path {
    Path::new("t.gguf")
}

fn sample() -> GgufBuilder {
    GgufBuilder::new()
        .kv_str("general.architecture", "deepseek2")
        .kv_u32("deepseek2.block_count", 2)
        .kv_str_array("tokenizer.ggml.tokens", &["a", "b", "<s>"])
        .tensor("token_embd.weight", &[256, 4], GgmlType::Q4_K, 0)
        .tensor("output_norm.weight", &[7], GgmlType::F32, 0)
        .tensor("blk.0.ffn_up_exps.weight", &[256, 2, 4], GgmlType::Q3_K, 0)
}

fn parse_err(bytes: &[u8]) -> GgufError {
    GgufFile::from_bytes(path(), bytes).expect_err("file should be refused")
}

fn put_u32(bytes: &mut [u8], at: usize, v: u32) {
    bytes[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn put_u64(bytes: &mut [u8], at: usize, v: u64) {
    bytes[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

#[test]
fn reads_a_valid_file_in_order() {
    let (bytes, map) = sample().build_with_map();
    let f = GgufFile::from_bytes(path(), &bytes).unwrap();
    let keys: Vec<_> = f.kvs().iter().map(|kv| kv.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "general.architecture",
            "deepseek2.block_count",
            "tokenizer.ggml.tokens"
        ]
    );
    let t = f.tensor("blk.0.ffn_up_exps.weight").unwrap();
    assert_eq!(t.n_bytes, 110 * 2 * 4);
    assert_eq!(f.data_offset, map.data_offset as u64);
    assert_eq!(f.get("deepseek2.block_count").unwrap().as_u64(), Some(2));
    // v2 is accepted too (the 0-dim case is in `too_many_dims`).
    let mut v2 = bytes.clone();
    put_u32(&mut v2, 4, 2);
    assert_eq!(GgufFile::from_bytes(path(), &v2).unwrap().version, 2);
}

#[test]
fn bad_magic() {
    let mut b = sample().build();
    b[0] = b'X';
    assert!(matches!(parse_err(&b), GgufError::BadMagic { found, .. } if &found == b"XGUF"));
    // Shown as text and hex, unprintable bytes escaped.
    b[..4].copy_from_slice(b"# g\0");
    let e = parse_err(&b).to_string();
    assert!(e.ends_with(r##"found "# g\x00" (23 20 67 00)"##), "{e}");
}

#[test]
fn unsupported_version() {
    for v in [1, 4] {
        let mut b = sample().build();
        put_u32(&mut b, 4, v);
        assert!(matches!(parse_err(&b), GgufError::UnsupportedVersion { found, .. } if found == v));
    }
}

#[test]
fn huge_counts_are_refused_before_allocating() {
    let mut b = sample().build();
    put_u64(&mut b, 8, u64::MAX / 2);
    assert!(
        matches!(parse_err(&b), GgufError::CountTooLarge { count, .. } if count == u64::MAX / 2)
    );
    let mut b = sample().build();
    put_u64(&mut b, 16, 1 << 40);
    assert!(matches!(parse_err(&b), GgufError::CountTooLarge { .. }));
    // An array length that the file cannot hold.
    let (mut b, map) = sample().build_with_map();
    put_u64(&mut b, map.kv_value_at[2] + 4, 1 << 50);
    assert!(
        matches!(parse_err(&b), GgufError::CountTooLarge { what, .. } if what.contains("tokenizer.ggml.tokens"))
    );
}

#[test]
fn string_past_end() {
    let (mut b, map) = sample().build_with_map();
    put_u64(&mut b, map.kv_key_len_at[1], u64::MAX - 1);
    assert!(matches!(parse_err(&b), GgufError::StringPastEnd { .. }));
}

#[test]
fn truncated_header() {
    let (b, map) = sample().build_with_map();
    let cut = &b[..map.tensor_type_at[1] + 2];
    assert!(matches!(parse_err(cut), GgufError::Truncated { .. }));
    assert!(matches!(parse_err(&b[..3]), GgufError::Truncated { .. }));
}

#[test]
fn truncated_data() {
    let b = sample().build();
    let cut = &b[..b.len() - 100];
    assert!(
        matches!(parse_err(cut), GgufError::DataPastEnd { tensor, .. } if tensor == "blk.0.ffn_up_exps.weight")
    );
}

#[test]
fn empty_and_duplicate_keys() {
    let b = GgufBuilder::new().kv_u32("", 1).build();
    assert!(matches!(parse_err(&b), GgufError::EmptyKey { .. }));
    let b = GgufBuilder::new().kv_u32("a", 1).kv_str("a", "x").build();
    assert!(matches!(parse_err(&b), GgufError::DuplicateKey { key, .. } if key == "a"));
}

#[test]
fn unknown_value_type() {
    let b = GgufBuilder::new().kv_raw("k", 13, vec![0; 8]).build();
    assert!(matches!(
        parse_err(&b),
        GgufError::UnknownValueType { found: 13, .. }
    ));
    // Also inside an array.
    let mut raw = 42u32.to_le_bytes().to_vec();
    raw.extend_from_slice(&0u64.to_le_bytes());
    let b = GgufBuilder::new().kv_raw("k", 9, raw).build();
    assert!(matches!(
        parse_err(&b),
        GgufError::UnknownValueType { found: 42, .. }
    ));
}

#[test]
fn nested_arrays_are_carried_but_capped() {
    // [[1, 2], [3]] as arrays of i32 arrays.
    let inner = |items: &[i32]| {
        let mut r = 5u32.to_le_bytes().to_vec();
        r.extend_from_slice(&(items.len() as u64).to_le_bytes());
        items
            .iter()
            .for_each(|v| r.extend_from_slice(&v.to_le_bytes()));
        r
    };
    let mut raw = 9u32.to_le_bytes().to_vec();
    raw.extend_from_slice(&2u64.to_le_bytes());
    raw.extend(inner(&[1, 2]));
    raw.extend(inner(&[3]));
    let b = GgufBuilder::new().kv_raw("nested", 9, raw.clone()).build();
    let f = GgufFile::from_bytes(path(), &b).unwrap();
    let v = f.get("nested").unwrap();
    assert_eq!(v.raw, &raw[..]);
    let lens: Vec<_> = v
        .array_items()
        .map(|a| a.array_header().unwrap().1)
        .collect();
    assert_eq!(lens, [2, 1]);

    let mut deep = inner(&[1]);
    for _ in 0..MAX_ARRAY_DEPTH {
        let mut outer = 9u32.to_le_bytes().to_vec();
        outer.extend_from_slice(&1u64.to_le_bytes());
        outer.extend(deep);
        deep = outer;
    }
    let b = GgufBuilder::new().kv_raw("deep", 9, deep).build();
    assert!(matches!(parse_err(&b), GgufError::NestingTooDeep { .. }));
}

#[test]
fn alignment_must_be_a_u32_power_of_two() {
    let b = GgufBuilder::new()
        .kv_raw("general.alignment", 4, 48u32.to_le_bytes().to_vec())
        .build();
    assert!(matches!(
        parse_err(&b),
        GgufError::BadAlignment { found: 48, .. }
    ));
    let b = GgufBuilder::new()
        .kv_raw("general.alignment", 4, 0u32.to_le_bytes().to_vec())
        .build();
    assert!(matches!(
        parse_err(&b),
        GgufError::BadAlignment { found: 0, .. }
    ));
    let b = GgufBuilder::new()
        .kv_raw("general.alignment", 10, 32u64.to_le_bytes().to_vec())
        .build();
    assert!(matches!(parse_err(&b), GgufError::BadKeyValue { .. }));
    let b = GgufBuilder::new()
        .kv_u32("general.alignment", 64)
        .tensor("a", &[3], GgmlType::F32, 0)
        .tensor("b", &[3], GgmlType::F32, 0)
        .build();
    let f = GgufFile::from_bytes(path(), &b).unwrap();
    assert_eq!(f.tensor("b").unwrap().offset, 64);
}

#[test]
fn duplicate_tensor() {
    let b = GgufBuilder::new()
        .tensor("a", &[3], GgmlType::F32, 0)
        .tensor("a", &[3], GgmlType::F32, 0)
        .build();
    assert!(matches!(parse_err(&b), GgufError::DuplicateTensor { name, .. } if name == "a"));
}

#[test]
fn tensor_name_too_long() {
    let ok = "n".repeat(63);
    let b = GgufBuilder::new()
        .tensor(&ok, &[1], GgmlType::F32, 0)
        .build();
    assert!(GgufFile::from_bytes(path(), &b).is_ok());
    let long = "n".repeat(64);
    let b = GgufBuilder::new()
        .tensor(&long, &[1], GgmlType::F32, 0)
        .build();
    assert!(matches!(
        parse_err(&b),
        GgufError::TensorNameTooLong { len: 64, .. }
    ));
}

#[test]
fn too_many_dims() {
    let b = GgufBuilder::new()
        .tensor_raw("t", &[1, 1, 1, 1, 1], 0, vec![0; 4])
        .build();
    assert!(matches!(
        parse_err(&b),
        GgufError::TooManyDims { found: 5, .. }
    ));
    // ggml reads 0 dims as a one-element scalar.
    let b = GgufBuilder::new()
        .tensor_raw("s", &[], 0, vec![0; 4])
        .build();
    assert_eq!(
        GgufFile::from_bytes(path(), &b)
            .unwrap()
            .tensor("s")
            .unwrap()
            .n_bytes,
        4
    );
}

#[test]
fn unknown_type_names_the_tensor() {
    let b = GgufBuilder::new()
        .tensor_raw("blk.0.attn_q.weight", &[256], 500, vec![0; 64])
        .build();
    let e = parse_err(&b);
    assert!(
        matches!(&e, GgufError::UnknownType { id: 500, tensor, .. } if tensor == "blk.0.attn_q.weight")
    );
    assert!(e.to_string().contains("ik_llama.cpp"));
}

#[test]
fn ne0_not_a_block_multiple() {
    let b = GgufBuilder::new()
        .tensor_raw("t", &[100, 2], 12, vec![0; 288])
        .build();
    assert!(matches!(
        parse_err(&b),
        GgufError::NotBlockMultiple {
            ne0: 100,
            block_size: 256,
            ..
        }
    ));
}

#[test]
fn size_overflow() {
    let b = GgufBuilder::new()
        .tensor_raw("t", &[1 << 32, 1 << 32, 4], 0, vec![0; 4])
        .build();
    assert!(matches!(parse_err(&b), GgufError::SizeOverflow { .. }));
    // Fits in u64 but not in ggml's int64 (2^63 elements of I8).
    let b = GgufBuilder::new()
        .tensor_raw("t", &[1 << 62, 2], 24, vec![0; 4])
        .build();
    assert!(matches!(parse_err(&b), GgufError::SizeOverflow { .. }));
    // A "negative" dimension, even when another is 0.
    let b = GgufBuilder::new()
        .tensor_raw("t", &[0, 1 << 63], 24, vec![])
        .build();
    assert!(matches!(parse_err(&b), GgufError::SizeOverflow { .. }));
}

#[test]
fn offsets_must_be_contiguous_and_padded() {
    let (mut b, map) = sample().build_with_map();
    put_u64(&mut b, map.tensor_offset_at[1], 1000);
    assert!(matches!(
        parse_err(&b),
        GgufError::BadOffset { found: 1000, .. }
    ));
    // Unpadded: the third tensor straight after the second one's 28 bytes.
    let (mut b, map) = sample().build_with_map();
    put_u64(&mut b, map.tensor_offset_at[2], 576 + 28);
    assert!(matches!(parse_err(&b), GgufError::BadOffset { .. }));
}

/// A sparse file of `len` bytes starting with `head`.
fn sparse(dir: &Path, head: &[u8], len: u64) -> PathBuf {
    let p = dir.join("sparse.gguf");
    let f = File::create(&p).unwrap();
    std::io::Write::write_all(&mut &f, head).unwrap();
    f.set_len(len).unwrap();
    p
}

#[test]
fn counts_and_lengths_in_huge_files_do_not_allocate_the_file() {
    let dir = tempfile::tempdir().unwrap();
    // 10^12 / 14 key/values "fit" in a 1 TB file; nothing may be reserved for them.
    let mut head = b"GGUF".to_vec();
    head.extend_from_slice(&3u32.to_le_bytes());
    head.extend_from_slice(&0u64.to_le_bytes());
    head.extend_from_slice(&(1_000_000_000_000u64 / 14).to_le_bytes());
    let p = sparse(dir.path(), &head, 1 << 40);
    // The first key is a zero-length string: an empty key, found without reserving 70 GB.
    assert!(matches!(
        GgufFile::open(&p),
        Err(GgufError::EmptyKey { .. })
    ));
    // A 4 GB string value: the header would be longer than any real one.
    let b = GgufBuilder::new().kv_str("k", "x").build();
    let mut head = b[..24 + 8 + 1 + 4].to_vec();
    head.extend_from_slice(&4_000_000_000u64.to_le_bytes());
    let p = sparse(dir.path(), &head, 5_000_000_000);
    assert!(matches!(
        GgufFile::open(&p),
        Err(GgufError::HeaderTooLarge { .. })
    ));
}

#[test]
fn reads_headers_longer_than_the_first_read() {
    // A vocabulary bigger than FIRST_READ makes `open` read more than once.
    let words: Vec<String> = (0..200_000).map(|i| format!("token{i}")).collect();
    let refs: Vec<&str> = words.iter().map(String::as_str).collect();
    let b = GgufBuilder::new()
        .kv_str_array("tokenizer.ggml.tokens", &refs)
        .tensor("t", &[4], GgmlType::F32, 0)
        .build();
    assert!(b.len() as u64 > FIRST_READ);
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("big.gguf");
    std::fs::write(&p, &b).unwrap();
    let f = GgufFile::open(&p).unwrap();
    assert_eq!(
        f.get("tokenizer.ggml.tokens")
            .unwrap()
            .array_header()
            .unwrap()
            .1,
        200_000
    );
    std::fs::write(&p, &b[..b.len() / 2]).unwrap();
    // Cut inside the vocabulary: whichever length check trips first, it is an error.
    assert!(matches!(
        GgufFile::open(&p),
        Err(GgufError::Truncated { .. }
            | GgufError::CountTooLarge { .. }
            | GgufError::StringPastEnd { .. })
    ));
}
