//! Inputs the tests build or find: tiny deepseek2-shaped parents assembled by hand
//! (`gguf_splice::testkit`, which does not use the crate's writer) whose bytes say which
//! parent, tensor and block they came from, the repository's `fixtures/`, and checks that
//! every byte of a child came from the parent it should.

use std::path::{Path, PathBuf};
use std::process::Output;

use gguf_splice::ggml_type::GgmlType;
use gguf_splice::gguf::Model;
use gguf_splice::plan::Parent;
use gguf_splice::testkit::{GgufBuilder, marker_data};

use super::run::{SpliceCmd, assert_ok};

pub const N_EXPERT: u64 = 4;

pub const N_EMBD: u64 = 256;

/// Parent ids of the hand-built pair: their bytes say which one they came from.
pub const V3: u8 = 1;

/// See [`V3`].
pub const R1: u8 = 2;

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

/// A temporary directory to write parents and children in.
pub struct Dir {
    pub dir: tempfile::TempDir,
}

impl Dir {
    /// A new empty directory, removed when dropped.
    pub fn new() -> Dir {
        Dir {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// Write `bytes` to `name` in the directory; its path.
    pub fn file(&self, name: &str, bytes: &[u8]) -> PathBuf {
        write(self.dir.path(), name, bytes)
    }

    /// `name` in the directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// Two parents in a temporary directory, `v3` and `r1`; [`setup`] makes the usual pair.
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
    /// `name` in the setup's directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Write `bytes` to `name` in the setup's directory; its path.
    pub fn file(&self, name: &str, bytes: &[u8]) -> PathBuf {
        write(self.dir.path(), name, bytes)
    }

    /// `--parent v3=.. --parent r1=..`
    pub fn parent_args(&self) -> Vec<String> {
        vec![
            "--parent".into(),
            format!("v3={}", self.v3.display()),
            "--parent".into(),
            format!("r1={}", self.r1.display()),
        ]
    }

    /// `COMMAND [FIRST] --parent v3=.. --parent r1=..`, to add more to.
    pub fn cmd(&self, command: &str, first: Option<&str>) -> SpliceCmd {
        SpliceCmd::new(command)
            .args(first.as_slice())
            .parent("v3", &self.v3)
            .parent("r1", &self.r1)
    }

    /// Run `COMMAND [FIRST] --parent v3=.. --parent r1=.. ARGS`.
    pub fn run(&self, command: &str, first: Option<&str>, args: &[&str]) -> Output {
        self.cmd(command, first).args(args).output()
    }

    /// Run `splice --parent v3=.. --parent r1=..` with more arguments.
    pub fn splice(&self, args: &[&str]) -> Output {
        self.run("splice", None, args)
    }

    /// Run `splice` into `out`, quietly, with more arguments (a recipe, takes, split
    /// options).
    pub fn splice_to(&self, out: &Path, args: &[&str]) -> Output {
        self.cmd("splice", None)
            .arg("-o")
            .arg(out)
            .quiet()
            .args(args)
            .output()
    }

    /// Splice `out` in the setup's directory (see [`Setup::splice_to`]); assert it
    /// succeeded and return its path.
    #[track_caller]
    pub fn child(&self, out: &str, args: &[&str]) -> PathBuf {
        let out = self.path(out);
        assert_ok(&self.splice_to(&out, args));
        out
    }

    /// A recipe file `name` in the setup's directory; its path as an argument.
    pub fn recipe(&self, name: &str, text: &str) -> String {
        self.file(name, text.as_bytes()).display().to_string()
    }

    /// The pair as the library's parents, `v3` then `r1`.
    pub fn parents(&self) -> Vec<Parent> {
        [("v3", &self.v3), ("r1", &self.r1)]
            .map(|(name, path)| Parent {
                name: name.into(),
                model: Model::open(path).unwrap(),
            })
            .into()
    }
}

pub fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

/// A file of the repository's `fixtures/` (real models made by llama.cpp, see
/// fixtures/README.md).
pub fn fixture(name: &str) -> PathBuf {
    repo().join("fixtures").join(name)
}

/// [`fixture`] as a command-line argument.
pub fn fixture_arg(name: &str) -> String {
    fixture(name).display().to_string()
}

/// The repository's root.
pub fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The names of the entries of `dir`, sorted.
pub fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
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
