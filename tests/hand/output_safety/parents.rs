//! Parents that change under a run: rewritten while they are copied, or replaced before the
//! copy, are refused and named in words.

use super::*;

#[test]
fn a_parent_rewritten_while_it_is_copied_is_refused() {
    let s = outputs();
    let v3 = s.dir.path().join("v3.gguf");
    let parents = parents_of(&[("v3", &v3)]);
    let out = s.out.join("child.gguf");
    let data_at = parents[0].model.tensors().next().unwrap().file_offset;

    // Rewritten in place, same size, after the first tensor was copied; its modified time
    // set to another value, as any write makes it.
    let rewritten = std::cell::Cell::new(false);
    let rewrite = |_: u64| {
        if !rewritten.replace(true) {
            let f = std::fs::OpenOptions::new().write(true).open(&v3).unwrap();
            std::os::unix::fs::FileExt::write_all_at(&f, b"changed!", data_at + 64).unwrap();
            f.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(1 << 30))
                .unwrap();
        }
    };
    let r = execute_with(&parents, &out, false, &rewrite);
    match &r {
        Err(ExecError::ParentChanged {
            parent,
            when,
            expected,
            found,
            ..
        }) => {
            assert_eq!(parent, "v3");
            assert_eq!(*when, identity::WHILE_COPIED);
            assert_eq!(expected.len, found.len);
            assert_ne!(expected.mtime, found.mtime);
        }
        r => panic!("{r:?}"),
    }
    assert!(names(&s.out).is_empty(), "{:?}", names(&s.out));

    // Grown: the message says what changed, in words.
    let parents = parents_of(&[("v3", &v3)]);
    let len = std::fs::metadata(&v3).unwrap().len();
    let grown = std::cell::Cell::new(false);
    let grow = |_: u64| {
        if !grown.replace(true) {
            let f = std::fs::OpenOptions::new().append(true).open(&v3).unwrap();
            std::io::Write::write_all(&mut &f, &[0; 32]).unwrap();
        }
    };
    let e = execute_with(&parents, &out, false, &grow).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains(&format!(
            "parent 'v3' ({}) changed while it was copied",
            v3.display()
        )),
        "{msg}"
    );
    assert!(
        msg.contains(&format!("size {len} -> {}", len + 32)),
        "{msg}"
    );
    assert!(!msg.contains("FileIdentity"), "{msg}");
    assert!(names(&s.out).is_empty());
}

#[test]
fn a_parent_replaced_before_the_copy_is_named_in_words() {
    let s = outputs();
    let v3 = s.dir.path().join("v3.gguf");
    let parents = parents_of(&[("v3", &v3)]);
    // Same bytes in a new file renamed over it: a new inode.
    let copy = s.dir.path().join("v3.new");
    std::fs::copy(&v3, &copy).unwrap();
    std::fs::rename(&copy, &v3).unwrap();
    let e = execute_with(&parents, &s.out.join("c.gguf"), false, &|_| {}).unwrap_err();
    assert!(
        matches!(&e, ExecError::ParentChanged { when, expected, found, .. }
            if *when == identity::SINCE_PLANNING && expected.ino != found.ino),
        "{e:?}"
    );
    assert!(e.to_string().contains("replaced by another file"), "{e}");
}
