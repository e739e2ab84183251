//! What a splice writes: a dry run writes nothing and shows the sources; sharded parents and
//! a sharded child; too little free space and more shards than the split count can hold are
//! refused before writing.

use super::*;

#[test]
fn dry_run_writes_nothing_and_shows_sources() {
    let s = setup(GgmlType::Q3_K);
    let out = s.dir.path().join("child.gguf");
    let o = s.splice(&[
        "--take",
        "blk.2.ffn_(gate|up|down)_exps=r1:experts=0-1",
        "-o",
        out.to_str().unwrap(),
        "--dry-run",
        "--json",
    ]);
    assert_ok(&o);
    assert!(!out.exists());
    let plan: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let t = plan["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "blk.2.ffn_down_exps.weight")
        .unwrap();
    let sources: Vec<(String, serde_json::Value)> = t["sources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["parent"].as_str().unwrap().to_string(),
                s["experts"].clone(),
            )
        })
        .collect();
    assert_eq!(
        sources,
        vec![
            ("r1".to_string(), serde_json::json!([0, 1])),
            ("v3".to_string(), serde_json::json!([2, 3]))
        ]
    );
    // The plan's offsets are where the writer puts the tensors.
    let o2 = s.splice(&[
        "--take",
        "blk.2.ffn_(gate|up|down)_exps=r1:experts=0-1",
        "-o",
        out.to_str().unwrap(),
        "-q",
    ]);
    assert!(o2.status.success());
    let child = GgufFile::open(&out).unwrap();
    for pt in plan["tensors"].as_array().unwrap() {
        let t = child.tensor(pt["name"].as_str().unwrap()).unwrap();
        assert_eq!(child.tensor_file_offset(t), pt["offset"].as_u64().unwrap());
    }
    assert_eq!(
        std::fs::metadata(&out).unwrap().len(),
        plan["output_bytes"].as_u64().unwrap()
    );
}

#[test]
fn sharded_parents_and_sharded_child() {
    let s = setup(GgmlType::Q3_K);
    // Split r1 into shards by splicing it alone with --split-max-tensors, then use those
    // shards as a parent, and ask for a sharded child.
    let prefix = s.dir.path().join("r1split");
    let o = run(&[
        "splice",
        "--parent",
        &format!("r1={}", s.r1.display()),
        "-o",
        &format!("{}.gguf", prefix.display()),
        "--split-max-tensors",
        "10",
        "-q",
    ]);
    assert_ok(&o);
    let n_tensors = layout(GgmlType::Q3_K).len();
    let n_shards = n_tensors.div_ceil(10);
    let second = s
        .dir
        .path()
        .join(format!("r1split-00002-of-{n_shards:05}.gguf"));
    let r1_model = Model::open(&second).unwrap();
    assert_eq!(r1_model.shards().len(), n_shards);
    assert_eq!(
        r1_model.shards()[1].get("split.no").unwrap().as_u64(),
        Some(1)
    );
    assert!(
        r1_model.shards()[1].get("general.architecture").is_none(),
        "metadata only in shard 1"
    );

    let out = s.dir.path().join("child.gguf");
    let o = run(&[
        "splice",
        "--parent",
        &format!("v3={}", s.v3.display()),
        "--parent",
        &format!("r1={}", second.display()),
        "--take",
        "_exps=r1",
        "-o",
        out.to_str().unwrap(),
        "--split-max-size",
        "3000",
        "-q",
    ]);
    assert_ok(&o);
    assert!(!out.exists());
    let first = std::fs::read_dir(s.dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().contains("child-00001-of-"))
        .expect("first child shard");
    let child = Model::open(&first).unwrap();
    assert!(child.shards().len() > 1);
    for t in child.tensors() {
        let pid = if is_routed_expert(&t.info.name) {
            R1
        } else {
            V3
        };
        assert_eq!(
            tensor_bytes(&child, &t.info.name),
            expected_bytes(pid, GgmlType::Q3_K, &t.info.name)
        );
    }
    // The size limit holds for every shard with more than one tensor.
    for sh in child.shards() {
        let data: u64 = sh
            .tensors()
            .iter()
            .map(|t| t.n_bytes.div_ceil(32) * 32)
            .sum();
        assert!(
            data <= 3000 || sh.tensors().len() == 1,
            "{}: {data}",
            sh.path.display()
        );
    }
}

#[test]
fn too_little_free_space_is_refused_before_writing() {
    let dir = tempfile::tempdir().unwrap();
    let avail = gguf_splice::execute::available_space(dir.path()).unwrap();
    // A sparse parent whose one I8 tensor is larger than the free space.
    let n = avail + (1 << 30);
    let (bytes, map) = gguf_splice::testkit::GgufBuilder::new()
        .kv_str("general.architecture", "deepseek2")
        .tensor_declared("token_embd.weight", &[n], 24, n)
        .build_with_map();
    let path = dir.path().join("huge.gguf");
    let f = std::fs::File::create(&path).unwrap();
    std::io::Write::write_all(&mut &f, &bytes[..map.data_offset]).unwrap();
    f.set_len(map.data_offset as u64 + n).unwrap();
    let out = dir.path().join("child.gguf");
    let o = run(&[
        "splice",
        "--parent",
        &format!("p={}", path.display()),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_exit(&o, 4);
    assert!(stderr(&o).contains("not enough free space"));
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, vec![std::ffi::OsString::from("huge.gguf")]);
}

/// `split.count` and `split.no` are u16: 65 535 shards is the format's limit. A base of
/// `n` one-tensor blocks, cut one tensor per shard.
#[allow(clippy::result_large_err)] // the error is matched once
fn plan_one_tensor_per_shard(n: usize) -> Result<usize, PlanError> {
    let dir = tempfile::tempdir().unwrap();
    let mut b = gguf_splice::testkit::GgufBuilder::new().kv_str("general.architecture", "llama");
    for i in 0..n {
        b = b.tensor(&format!("blk.{i}.attn_norm.weight"), &[1], GgmlType::F32, 1);
    }
    let path = write(dir.path(), "many.gguf", &b.build());
    let parents = vec![Parent {
        name: "a".into(),
        model: Model::open(&path).unwrap(),
    }];
    let split = SplitOptions {
        max_tensors: Some(1),
        ..SplitOptions::default()
    };
    plan::build(
        &parents,
        &Recipe::default(),
        &dir.path().join("c.gguf"),
        split,
    )
    .map(|p| p.shards.len())
}

#[test]
fn more_shards_than_split_count_can_hold_are_refused() {
    assert_eq!(plan_one_tensor_per_shard(65_535).unwrap(), 65_535);
    match plan_one_tensor_per_shard(65_536) {
        Err(PlanError::TooManyShards { count, max }) => {
            assert_eq!((count, max), (65_536, 65_535));
        }
        other => panic!("{:?}", other.map_err(|e| e.to_string())),
    }
}
