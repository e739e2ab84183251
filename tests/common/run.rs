//! Running the binary: plain argument lists, a [`SpliceCmd`] builder for commands with
//! parents, and assertions on the exit that show the command's output when they fail.

use std::ffi::{OsStr, OsString};
use std::path::Path;
use std::process::{Command, Output};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_gguf-splice");

pub fn run(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().expect("binary runs")
}

/// The binary on a machine without ggml, as far as it can tell: no GGUF_SPLICE_GGML, an
/// empty PATH (no llama.cpp tools, no python3) and no LD_LIBRARY_PATH.
pub fn run_without_ggml(args: &[&str]) -> Output {
    let empty = tempfile::tempdir().unwrap();
    Command::new(BIN)
        .args(args)
        .env_remove("GGUF_SPLICE_GGML")
        .env_remove("LD_LIBRARY_PATH")
        .env("PATH", empty.path())
        .output()
        .expect("binary runs")
}

/// A command's stderr as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The command succeeded; otherwise fail showing its output.
#[track_caller]
pub fn assert_ok(o: &Output) {
    assert!(
        o.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        stderr(o)
    );
}

/// The command exited with `code`; otherwise fail showing its output.
#[track_caller]
pub fn assert_exit(o: &Output, code: i32) {
    assert_eq!(o.status.code(), Some(code), "stderr: {}", stderr(o));
}

/// A command of the binary built up step by step: `SpliceCmd::new("splice")
/// .parent("v3", &v3).arg("-o").arg(&out).args(&["--recipe", r]).quiet().output()`.
pub struct SpliceCmd {
    args: Vec<OsString>,
}

impl SpliceCmd {
    /// The binary's `command` (`splice`, `verify`, `diff`, ...) with no arguments yet.
    pub fn new(command: &str) -> Self {
        Self {
            args: vec![command.into()],
        }
    }

    /// `--parent NAME=PATH`.
    pub fn parent(mut self, name: &str, path: impl AsRef<Path>) -> Self {
        let mut spec = OsString::from(format!("{name}="));
        spec.push(path.as_ref());
        self.args.extend(["--parent".into(), spec]);
        self
    }

    /// `--parent NAME=PATH` for each pair, in order.
    pub fn parents<P: AsRef<Path>>(self, parents: &[(&str, P)]) -> Self {
        parents.iter().fold(self, |c, (n, p)| c.parent(n, p))
    }

    /// One more argument.
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.args.push(arg.as_ref().into());
        self
    }

    /// More arguments.
    pub fn args(self, args: &[&str]) -> Self {
        args.iter().fold(self, |c, a| c.arg(a))
    }

    /// `-q`.
    pub fn quiet(self) -> Self {
        self.arg("-q")
    }

    /// Run it; its output, whatever the exit.
    pub fn output(self) -> Output {
        Command::new(BIN)
            .args(&self.args)
            .output()
            .expect("binary runs")
    }

    /// Run it and assert it succeeded; its output.
    #[track_caller]
    pub fn ok(self) -> Output {
        let o = self.output();
        assert_ok(&o);
        o
    }
}

/// Borrow a list of arguments as `&str`s, for [`run`].
pub fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}
