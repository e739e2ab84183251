//! Rules and parents as a user writes them: one grammar for `--take` and recipe rules, so
//! every hint works where the rule was written; names given in the wrong case.

use super::*;

#[test]
fn take_hints_work_in_take() {
    let s = setup(GgmlType::Q3_K);
    let out = s.dir.path().join("c.gguf");
    let out = out.to_str().unwrap();
    // A rule that matches nothing: the hint names the --take spelling...
    let o = s.splice(&["--take", r"blk\.99\.attn=r1", "-o", out, "--dry-run"]);
    assert_exit(&o, 3);
    assert!(
        stderr(&o).contains("`:optional` in --take"),
        "{}",
        stderr(&o)
    );
    // ...which is accepted.
    let o = s.splice(&[
        "--take",
        r"blk\.99\.attn=r1:optional",
        "-o",
        out,
        "--dry-run",
    ]);
    assert_ok(&o);
    // Experts torn apart: the hint names a rule by role, in --take too...
    let o = s.splice(&["--take", "ffn_(gate|up)_exps=r1", "-o", out, "--dry-run"]);
    assert_exit(&o, 3);
    assert!(
        stderr(&o).contains("--take '=PARENT:role=routed_experts'"),
        "{}",
        stderr(&o)
    );
    // ...which takes every routed expert matrix from r1.
    let o = s.splice(&["--take", "=r1:role=routed_experts", "-o", out, "-q"]);
    assert_ok(&o);
    let child = gguf_splice::gguf::Model::open(std::path::Path::new(out)).unwrap();
    let mut experts = 0;
    for t in child.tensors().filter(|t| is_routed_expert(&t.info.name)) {
        assert_eq!(
            tensor_bytes(&child, &t.info.name),
            expected_bytes(R1, GgmlType::Q3_K, &t.info.name),
            "{}",
            t.info.name
        );
        experts += 1;
    }
    assert!(experts > 0);
    // An empty regex needs a role.
    assert_exit(&s.splice(&["--take", "=r1", "-o", out, "--dry-run"]), 3);
}
