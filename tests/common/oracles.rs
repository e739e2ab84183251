//! The outside oracles a test needs (gguf-py, llama.cpp, ik_llama.cpp, nginx, Slurm, a
//! ggml): where each is, whether it is installed (`have`), and runners for the probes and
//! the gguf-py scripts of `tests/oracle/`.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::fixtures::repo;

/// An external oracle a test needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Oracle {
    /// Python with the PyPI `gguf` package (gguf-py), from fixtures/setup-python.sh.
    GgufPy,
    /// Real llama.cpp (and our probe), from fixtures/build-llama.sh.
    Llama,
    /// Real ik_llama.cpp (and our ik probe and type-table oracle), from
    /// fixtures/build-ik-llama.sh.
    IkLlama,
    /// nginx, the HTTP server remote-parent tests read from (Debian: `nginx-light`).
    Nginx,
    /// Slurm's daemons and clients and munge (Debian packages slurmctld, slurmd,
    /// slurm-client, munge; .ci/run installs them), and root to run them. Tests start their
    /// own single-node Slurm.
    Slurm,
    /// ggml's quantizers, loaded at run time (mixing): GGUF_SPLICE_GGML names the shared
    /// libggml-base of fixtures/build-llama.sh, or `--ggml`'s search finds one.
    Ggml,
}

/// The gguf-splice cache root, as the fixture build scripts compute it.
fn cache_root() -> PathBuf {
    std::env::var("GGUF_SPLICE_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            std::env::var("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|_| {
                    PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache")
                })
                .join("gguf-splice")
        })
}

/// Programs the Slurm oracle needs.
pub const SLURM_PROGRAMS: [&str; 7] = [
    "slurmctld",
    "slurmd",
    "munged",
    "sbatch",
    "sinfo",
    "squeue",
    "scancel",
];

/// A program on PATH, or in the sbin directories a non-root PATH may lack.
pub fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Where the oracle is, if it is installed.
fn oracle_path(o: Oracle) -> PathBuf {
    match o {
        Oracle::GgufPy => match std::env::var("GGUF_SPLICE_PYTHON") {
            Ok(p) => PathBuf::from(p),
            Err(_) => repo().join("target/oracle-venv/bin/python"),
        },
        Oracle::Slurm => PathBuf::from("/usr/sbin"),
        Oracle::Llama | Oracle::Ggml => match std::env::var("GGUF_SPLICE_LLAMA_BIN") {
            Ok(d) => PathBuf::from(d),
            Err(_) => cache_root().join("llama.cpp-11434/build/bin"),
        },
        Oracle::IkLlama => match std::env::var("GGUF_SPLICE_IK_LLAMA_BIN") {
            Ok(d) => PathBuf::from(d),
            Err(_) => cache_root().join("ik_llama.cpp-0.1.5/build/bin"),
        },
        Oracle::Nginx => match std::env::var("GGUF_SPLICE_NGINX") {
            Ok(p) => PathBuf::from(p),
            Err(_) => std::env::var_os("PATH")
                .iter()
                .flat_map(std::env::split_paths)
                .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/local/sbin")])
                .map(|d| d.join("nginx"))
                .find(|p| p.is_file())
                .unwrap_or_else(|| PathBuf::from("nginx")),
        },
    }
}

/// Whether the oracles a test needs are installed. A plain `cargo test` on a fresh clone
/// skips such a test with a message saying why; `scripts/test.sh` installs them and sets
/// `GGUF_SPLICE_REQUIRE_ORACLES=1`, which turns a missing oracle into a failure, so CI
/// always runs every test.
pub fn have(test: &str, needs: &[Oracle]) -> bool {
    let missing: Vec<Oracle> = needs
        .iter()
        .copied()
        .filter(|&o| {
            let p = oracle_path(o);
            match o {
                Oracle::GgufPy | Oracle::Nginx => !p.exists(),
                Oracle::Llama => !p.join("llama-splice-probe").exists(),
                Oracle::IkLlama => {
                    !p.join("ik-splice-probe").exists() || !p.join("ik-splice-types").exists()
                }
                // The test cluster runs its daemons and jobs as root (SlurmUser=root).
                Oracle::Slurm => {
                    // SAFETY: geteuid has no preconditions and cannot fail.
                    let root = unsafe { libc::geteuid() } == 0;
                    !root || SLURM_PROGRAMS.iter().any(|n| find_program(n).is_none())
                }
                Oracle::Ggml => !gguf_splice::ggml_lib::available(),
            }
        })
        .collect();
    if missing.is_empty() {
        return true;
    }
    let how = "run `bash scripts/test.sh` as root (it installs nginx and Slurm from Debian's packages, gguf-py, builds llama.cpp, its shared libggml-base and ik_llama.cpp), or set GGUF_SPLICE_PYTHON / GGUF_SPLICE_LLAMA_BIN / GGUF_SPLICE_IK_LLAMA_BIN / GGUF_SPLICE_NGINX / GGUF_SPLICE_GGML";
    assert!(
        std::env::var("GGUF_SPLICE_REQUIRE_ORACLES").as_deref() != Ok("1"),
        "{test}: {missing:?} not installed but GGUF_SPLICE_REQUIRE_ORACLES=1; {how}"
    );
    // Written to the real stderr: libtest captures eprintln! of passing tests.
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED {test}: needs {missing:?}, not installed; {how}"
    );
    false
}

/// A Python interpreter with the PyPI `gguf` package (see [`have`]).
pub fn oracle_python() -> PathBuf {
    oracle_path(Oracle::GgufPy)
}

/// The nginx binary (see [`have`]).
pub fn nginx_bin() -> PathBuf {
    oracle_path(Oracle::Nginx)
}

/// The directory of real llama.cpp's binaries (see [`have`]).
pub fn llama_bin() -> PathBuf {
    oracle_path(Oracle::Llama)
}

/// The directory of real ik_llama.cpp's binaries (see [`have`]).
pub fn ik_llama_bin() -> PathBuf {
    oracle_path(Oracle::IkLlama)
}

/// Real llama.cpp's greedy tokens and logits for `model` (`llama-splice-probe`, see
/// tests/oracle/probe.cpp), as JSON; panics with llama.cpp's stderr if it fails.
pub fn llama_probe(model: &Path) -> serde_json::Value {
    let out = Command::new(llama_bin().join("llama-splice-probe"))
        .arg(model)
        .output()
        .expect("probe runs");
    assert!(
        out.status.success(),
        "llama.cpp failed to load/run {}: {}",
        model.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Run the oracle script `tests/oracle/SCRIPT` with gguf-py's Python; its stdout. Panics
/// with its stderr if it fails.
pub fn oracle_script<S: AsRef<std::ffi::OsStr>>(script: &str, args: &[S]) -> Vec<u8> {
    python_script(&format!("tests/oracle/{script}"), args)
}

/// Run the repository's Python script `SCRIPT` (a path from the repository's root) with
/// gguf-py's Python; its stdout. Panics with its stderr if it fails.
pub fn python_script<S: AsRef<std::ffi::OsStr>>(script: &str, args: &[S]) -> Vec<u8> {
    let out = Command::new(oracle_python())
        .arg(repo().join(script))
        .args(args)
        .output()
        .expect("python runs");
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// A child assembled independently by gguf-py (`tests/oracle/assemble.py`) from `base`, with
/// its `--take` / `--take-experts` options `takes` (`("--take", "REGEX=PATH")`), written to
/// `out`.
pub fn assemble_reference(base: &Path, out: &Path, takes: &[(&str, String)]) -> PathBuf {
    let mut args: Vec<String> = vec![
        "--base".into(),
        base.display().to_string(),
        "--out".into(),
        out.display().to_string(),
    ];
    for (option, value) in takes {
        args.push(option.to_string());
        args.push(value.clone());
    }
    oracle_script("assemble.py", &args);
    out.to_path_buf()
}
