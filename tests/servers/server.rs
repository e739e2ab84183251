//! The remote-parent test setup: the repository's fixtures (and any extra files) served by
//! a real nginx under `org/repo`, behind the fault-injecting proxy, and the binary run with
//! `HF_ENDPOINT` pointing at the proxy's hub port.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::common::{BIN, Oracle, have, nginx_bin, repo};
use crate::nginx::Nginx;
use crate::proxy::Proxy;
use gguf_splice::gguf::GgufFile;

pub struct Server {
    pub proxy: Proxy,
    pub nginx: Nginx,
    /// nginx's root; files are served from `root/org/repo/NAME`.
    pub root: tempfile::TempDir,
    /// A scratch directory for outputs.
    pub out: tempfile::TempDir,
}

/// Start a server with every fixture, or skip the test (see `common::have`).
pub fn server(test: &str) -> Option<Server> {
    if !have(test, &[Oracle::Nginx]) {
        return None;
    }
    let root = tempfile::tempdir().unwrap();
    let repo_dir = root.path().join("org/repo");
    std::fs::create_dir_all(&repo_dir).unwrap();
    let nginx = Nginx::start(&nginx_bin(), root.path());
    let proxy = Proxy::start(nginx.port);
    let s = Server {
        proxy,
        nginx,
        root,
        out: tempfile::tempdir().unwrap(),
    };
    for e in std::fs::read_dir(repo().join("fixtures")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "gguf") {
            s.add(&p);
        }
    }
    Some(s)
}

impl Server {
    /// Serve a copy of `file` as `hf://org/repo/NAME`.
    pub fn add(&self, file: &Path) -> PathBuf {
        let name = file.file_name().unwrap().to_str().unwrap();
        let to = self.served(name);
        std::fs::copy(file, &to).unwrap();
        self.proxy
            .data_from(name, GgufFile::open(&to).unwrap().data_offset);
        to
    }

    /// Serve a copy of a file that is not GGUF (no data offset to tell header reads apart).
    pub fn add_raw(&self, file: &Path) {
        let name = file.file_name().unwrap().to_str().unwrap();
        std::fs::copy(file, self.served(name)).unwrap();
    }

    /// Where the served copy of `name` is.
    pub fn served(&self, name: &str) -> PathBuf {
        self.root.path().join("org/repo").join(name)
    }

    /// `hf://org/repo/NAME`
    pub fn hf(&self, name: &str) -> String {
        format!("hf://org/repo/{name}")
    }

    /// A local fixture's path.
    pub fn local(&self, name: &str) -> String {
        repo().join("fixtures").join(name).display().to_string()
    }

    /// A path in the scratch directory.
    pub fn out(&self, name: &str) -> PathBuf {
        self.out.path().join(name)
    }

    /// The binary with `args` against this server, with extra environment variables.
    pub fn command(&self, args: &[&str], env: &[(&str, &str)]) -> Command {
        let mut c = Command::new(BIN);
        c.args(args)
            .env("HF_ENDPOINT", self.proxy.endpoint())
            .env("GGUF_SPLICE_HTTP_BACKOFF_MS", "1")
            .env_remove("HF_TOKEN")
            // Traffic stays on 127.0.0.1, whatever proxy the environment names.
            .env("NO_PROXY", "127.0.0.1")
            .env("no_proxy", "127.0.0.1")
            .env_remove("GGUF_SPLICE_TEST_KILL_AT")
            .env_remove("GGUF_SPLICE_TEST_FAIL_AT")
            .env_remove("GGUF_SPLICE_TEST_PAUSE_AT");
        for (k, v) in env {
            c.env(k, v);
        }
        c
    }

    /// Run the binary against this server, with extra environment variables.
    pub fn run_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        self.command(args, env).output().expect("binary runs")
    }

    /// Start the binary with `args` paused at the test hook step `at` (`shard:1`, ...): returns
    /// once it is paused there, with the file to remove to let it go on.
    pub fn start_paused(&self, args: &[&str], at: &str) -> (std::process::Child, PathBuf) {
        let flag = self
            .root
            .path()
            .join(format!("paused-{}", at.replace(':', "-")));
        let mut child = self
            .command(
                args,
                &[
                    ("GGUF_SPLICE_TEST_PAUSE_AT", at),
                    ("GGUF_SPLICE_TEST_PAUSE_FILE", flag.to_str().unwrap()),
                ],
            )
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("binary starts");
        // Waiting for a condition the run signals, not for time to pass.
        while !flag.exists() {
            if let Some(status) = child.try_wait().unwrap() {
                let out = child.wait_with_output().unwrap();
                panic!(
                    "ended ({status}) before pausing at {at}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        (child, flag)
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.run_env(args, &[])
    }
}

/// A file's bytes but for what tells a child of remote parents from one of the same files
/// read locally: the record of the parents (`splice.parents` names the URLs) and the set
/// identity hashed from it. Its other keys (raw), tensor infos and data section, in order.
pub fn comparable(path: &Path) -> Vec<u8> {
    let f = GgufFile::open(path).unwrap();
    let mut out = Vec::new();
    for kv in f.kvs() {
        if kv.key == "splice.parents" || kv.key == "splice.set_id" {
            continue;
        }
        out.extend(kv.key.as_bytes());
        out.extend(f.value(kv).raw());
    }
    for t in f.tensors() {
        out.extend(format!("{} {:?} {:?} {}", t.name, t.dims, t.ty, t.offset).as_bytes());
    }
    out.extend(&std::fs::read(path).unwrap()[f.data_offset as usize..]);
    out
}
