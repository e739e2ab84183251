//! What a manifest names, resolved as the filesystem and the network resolve it: outputs
//! that are one file through a linked directory, every child's verdict in `--verify`.

use super::*;

#[test]
fn two_outputs_that_are_one_file_through_a_linked_directory_are_refused_before_writing() {
    let s = setup(GgmlType::IQ2_XXS);
    let dir = s.dir.path().join("linked");
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    std::os::unix::fs::symlink("sub", dir.join("lnk")).unwrap();
    let text = format!(
        "[parents]\nv3 = '{}'\n[[children]]\noutput = 'sub/x.gguf'\n\
         [[children]]\noutput = 'lnk/x.gguf'\n",
        s.v3.display()
    );
    let m = dir.join("m.toml");
    std::fs::write(&m, text).unwrap();
    let m = m.display().to_string();
    for args in [
        &["--dry-run"][..],
        &["-q"],
        &["-q", "--force"],
        &["--job", "1"],
    ] {
        let o = batch(&m, args);
        assert_exit(&o, 3);
        assert!(
            stderr(&o).contains("both write"),
            "{args:?}: {}",
            stderr(&o)
        );
        assert_eq!(names(&dir), ["m.toml"], "{args:?}");
    }
    let b = Batch::from_file(Path::new(&m)).unwrap();
    match b.plan() {
        Err(BatchError::SameOutput {
            first,
            second,
            real,
            ..
        }) => {
            assert_eq!(
                (first.as_str(), second.as_str()),
                ("#1 (sub/x.gguf)", "#2 (lnk/x.gguf)")
            );
            assert_eq!(real, dir.join("sub").canonicalize().unwrap().join("x.gguf"));
        }
        Err(e) => panic!("{e:?}"),
        Ok(_) => panic!("plan should fail"),
    }
}
