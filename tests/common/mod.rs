//! Shared helpers for integration tests: tiny deepseek2-shaped parents assembled by hand
//! (`gguf_splice::testkit`, which does not use the crate's writer), and a runner for the binary.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use gguf_splice::ggml_type::GgmlType;
use gguf_splice::testkit::{GgufBuilder, marker_data};

pub const N_EXPERT: u64 = 4;
pub const N_EMBD: u64 = 256;

/// (name, dims, type) of a tiny deepseek2-like model: block 0 dense, blocks 1-2 MoE.
pub fn layout(expert_type: GgmlType) -> Vec<(String, Vec<u64>, GgmlType)> {
    let mut t = vec![
        (
            "token_embd.weight".to_string(),
            vec![N_EMBD, 8],
            GgmlType::Q4_K,
        ),
        ("output_norm.weight".into(), vec![N_EMBD], GgmlType::F32),
        ("output.weight".into(), vec![N_EMBD, 8], GgmlType::Q4_K),
    ];
    for b in 0..3 {
        let p = format!("blk.{b}.");
        t.push((format!("{p}attn_norm.weight"), vec![N_EMBD], GgmlType::F32));
        t.push((
            format!("{p}attn_q_a.weight"),
            vec![N_EMBD, 2],
            GgmlType::Q4_K,
        ));
        t.push((
            format!("{p}attn_output.weight"),
            vec![N_EMBD, 2],
            GgmlType::Q4_K,
        ));
        if b == 0 {
            t.push((format!("{p}ffn_up.weight"), vec![N_EMBD, 2], GgmlType::Q4_K));
        } else {
            t.push((
                format!("{p}ffn_gate_inp.weight"),
                vec![N_EMBD, N_EXPERT],
                GgmlType::F32,
            ));
            t.push((
                format!("{p}exp_probs_b.bias"),
                vec![N_EXPERT],
                GgmlType::F32,
            ));
            for w in ["gate", "up", "down"] {
                t.push((
                    format!("{p}ffn_{w}_exps.weight"),
                    vec![N_EMBD, 2, N_EXPERT],
                    expert_type,
                ));
            }
            t.push((
                format!("{p}ffn_up_shexp.weight"),
                vec![N_EMBD, 2],
                GgmlType::Q4_K,
            ));
        }
    }
    t
}

/// A parent whose every tensor holds `marker_data(.., parent_id, index)`.
pub fn parent(parent_id: u8, expert_type: GgmlType) -> GgufBuilder {
    let mut b = header(parent_id);
    for (name, dims, ty) in layout(expert_type) {
        b = b.tensor(&name, &dims, ty, parent_id);
    }
    b
}

/// The bytes `parent(parent_id, expert_type)` stores for tensor `name`.
pub fn expected_bytes(parent_id: u8, expert_type: GgmlType, name: &str) -> Vec<u8> {
    let l = layout(expert_type);
    let i = l
        .iter()
        .position(|(n, _, _)| n == name)
        .expect("tensor in layout");
    marker_data(l[i].2, &l[i].1, parent_id, i as u16)
}

pub fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

pub fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gguf-splice"))
        .args(args)
        .output()
        .expect("binary runs")
}

/// The binary on a machine without ggml, as far as it can tell: no GGUF_SPLICE_GGML, an
/// empty PATH (no llama.cpp tools, no python3) and no LD_LIBRARY_PATH.
pub fn run_without_ggml(args: &[&str]) -> Output {
    let empty = tempfile::tempdir().unwrap();
    Command::new(env!("CARGO_BIN_EXE_gguf-splice"))
        .args(args)
        .env_remove("GGUF_SPLICE_GGML")
        .env_remove("LD_LIBRARY_PATH")
        .env("PATH", empty.path())
        .output()
        .expect("binary runs")
}

/// Raw data bytes of tensor `name` of a model, read through the plain file API.
pub fn tensor_bytes(model: &gguf_splice::gguf::Model, name: &str) -> Vec<u8> {
    use std::io::{Read, Seek, SeekFrom};
    let t = model.tensor(name).expect("tensor present");
    let mut f = std::fs::File::open(&model.shards()[t.shard].path).unwrap();
    f.seek(SeekFrom::Start(t.file_offset)).unwrap();
    let mut buf = vec![0; t.info.n_bytes as usize];
    f.read_exact(&mut buf).unwrap();
    buf
}

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
                Oracle::Ggml => !gguf_splice::ggml::available(),
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

pub fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The first shard `PREFIX-00001-of-NNNNN.gguf` in `dir`, whatever the count.
pub fn first_shard(dir: &Path, prefix: &str) -> PathBuf {
    let want = format!("{prefix}-00001-of-");
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with(&want))
        .unwrap_or_else(|| panic!("no {want}* in {}", dir.display()))
}

/// Header keys every hand-built parent shares (so parents are compatible).
pub fn header(parent_id: u8) -> GgufBuilder {
    GgufBuilder::new()
        .kv_str("general.architecture", "deepseek2")
        .kv_str("general.name", &format!("parent-{parent_id}"))
        .kv_u32("deepseek2.block_count", 3)
        .kv_u32("deepseek2.embedding_length", N_EMBD as u32)
        .kv_u32("deepseek2.expert_count", N_EXPERT as u32)
        .kv_str_array("tokenizer.ggml.tokens", &["a", "b", "c"])
        .kv_str("tokenizer.chat_template", &format!("template-{parent_id}"))
}

/// Expert `e` of a stacked tensor's bytes.
pub fn expert_slice(bytes: &[u8], e: u64) -> &[u8] {
    let s = bytes.len() / N_EXPERT as usize;
    &bytes[e as usize * s..(e as usize + 1) * s]
}

/// The fused `ffn_gate_up_exps` bytes of block `b` of `parent(parent_id, ty)`, assembled
/// here as `convert_hf_to_gguf.py --fuse-gate-up-exps` lays them out: expert e is its gate
/// rows, then its up rows.
pub fn fused_bytes(parent_id: u8, ty: GgmlType, b: u64) -> Vec<u8> {
    let gate = expected_bytes(parent_id, ty, &format!("blk.{b}.ffn_gate_exps.weight"));
    let up = expected_bytes(parent_id, ty, &format!("blk.{b}.ffn_up_exps.weight"));
    (0..N_EXPERT)
        .flat_map(|e| {
            let mut v = expert_slice(&gate, e).to_vec();
            v.extend_from_slice(expert_slice(&up, e));
            v
        })
        .collect()
}

/// `parent(parent_id, ty)` as a fused-layout converter writes it: in each MoE block,
/// `ffn_gate_up_exps` (`[N_EMBD, 4, N_EXPERT]`, [`fused_bytes`]) where `ffn_gate_exps` was,
/// and no `ffn_up_exps`. Every other tensor holds the same bytes as in `parent`.
pub fn fused_parent(parent_id: u8, expert_type: GgmlType) -> GgufBuilder {
    let mut b = header(parent_id);
    for (name, dims, ty) in layout(expert_type) {
        if name.ends_with("ffn_up_exps.weight") {
            continue;
        }
        if let Some(block) = name
            .strip_suffix(".ffn_gate_exps.weight")
            .and_then(|p| p.strip_prefix("blk."))
        {
            let block: u64 = block.parse().unwrap();
            b = b.tensor_raw(
                &format!("blk.{block}.ffn_gate_up_exps.weight"),
                &[N_EMBD, 4, N_EXPERT],
                ty.id(),
                fused_bytes(parent_id, expert_type, block),
            );
        } else {
            b = b.tensor_raw(
                &name,
                &dims,
                ty.id(),
                expected_bytes(parent_id, expert_type, &name),
            );
        }
    }
    b
}

/// Parent ids of the hand-built pair: their bytes say which one they came from.
pub const V3: u8 = 1;
/// See [`V3`].
pub const R1: u8 = 2;

/// Two hand-built parents in a temporary directory: `v3` (Q3_K experts) and `r1`.
pub struct Setup {
    pub dir: tempfile::TempDir,
    pub v3: PathBuf,
    pub r1: PathBuf,
}

/// A [`Setup`] whose r1 has routed experts of `r1_expert_type`.
pub fn setup(r1_expert_type: GgmlType) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let v3 = write(dir.path(), "v3.gguf", &parent(V3, GgmlType::Q3_K).build());
    let r1 = write(dir.path(), "r1.gguf", &parent(R1, r1_expert_type).build());
    Setup { dir, v3, r1 }
}

impl Setup {
    /// `--parent v3=.. --parent r1=..`
    pub fn parent_args(&self) -> Vec<String> {
        vec![
            "--parent".into(),
            format!("v3={}", self.v3.display()),
            "--parent".into(),
            format!("r1={}", self.r1.display()),
        ]
    }

    /// Run `COMMAND [FIRST] --parent v3=.. --parent r1=.. ARGS`.
    pub fn run(&self, command: &str, first: Option<&str>, args: &[&str]) -> Output {
        let mut all: Vec<String> = vec![command.into()];
        all.extend(first.map(String::from));
        all.extend(self.parent_args());
        all.extend(args.iter().map(|a| a.to_string()));
        let refs: Vec<&str> = all.iter().map(String::as_str).collect();
        run(&refs)
    }

    /// Run `splice --parent v3=.. --parent r1=..` with more arguments.
    pub fn splice(&self, args: &[&str]) -> Output {
        self.run("splice", None, args)
    }
}

/// The R1T preset's path.
pub fn chimera_preset() -> String {
    repo()
        .join("mappings/deepseek-r1t-chimera.toml")
        .display()
        .to_string()
}

/// Stacked routed experts (`*_exps.*`), as the hand-built parents name them.
pub fn is_routed_expert(name: &str) -> bool {
    name.contains("_exps.")
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

/// Assert that every tensor of `child` comes from the parents `owner` names: `owner(name)`
/// lists a parent id per slice along the outermost dimension (one id: the whole tensor);
/// `parents` maps ids to files. The expected bytes are the parents' own slices, read here.
pub fn assert_slices_from(child: &Path, parents: &[(u8, &Path)], owner: impl Fn(&str) -> Vec<u8>) {
    let child = gguf_splice::gguf::Model::open(child).unwrap();
    let models: Vec<(u8, gguf_splice::gguf::Model)> = parents
        .iter()
        .map(|(id, p)| (*id, gguf_splice::gguf::Model::open(p).unwrap()))
        .collect();
    for t in child.tensors() {
        let name = &t.info.name;
        let owners = owner(name);
        let got = tensor_bytes(&child, name);
        let s = got.len() / owners.len();
        for (e, o) in owners.iter().enumerate() {
            let (_, m) = models
                .iter()
                .find(|(id, _)| id == o)
                .expect("owner is a parent");
            let want = tensor_bytes(m, name);
            assert_eq!(
                &got[e * s..(e + 1) * s],
                &want[e * s..(e + 1) * s],
                "{name}: slice {e} of {} should come from parent {o}",
                owners.len()
            );
        }
    }
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
    let out = Command::new(oracle_python())
        .arg(repo().join("tests/oracle").join(script))
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
