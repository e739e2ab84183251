#![warn(missing_docs)]
//! gguf-splice: build a child GGUF model whose tensors (or single experts) come from two or
//! more quantized parents, without dequantizing anything.
//!
//! Layers, each depending only on those listed before it (the order is checked by looking
//! at the imports: nothing points back up):
//! - [`ggml_type`], [`ftype`], [`input`], [`distance`], [`source`]: the type tables, file-type
//!   labels, opening the files a user names (regular files only, text up to a cap), the one
//!   definition of how far apart two tensors' values are, and where bytes come from (local
//!   files, or HTTP(S) and `hf://` files read in place by range requests);
//! - [`layout`], [`ggml_lib`]: all size arithmetic on file-derived numbers; ggml's own quantizers
//!   and dequantizers, loaded at run time (`libggml-base`);
//! - [`gguf`]: the container (reader, writer, shard sets, flavours);
//! - [`roles`], [`mix`]: what a tensor is (layer, role, expert cut, its unit of weight and
//!   companions, views across converter layouts), the only module that reads meaning into
//!   tensor names; weight mixing, the bytes of tensors computed from several parents;
//! - [`recipe`]: rules and metadata edits, parsed from TOML or the command line;
//! - [`plan`], [`presets`]: recipe x parents -> a fully checked plan of every output byte;
//!   the recipes of `mappings/`, built in;
//! - [`assemble`], [`fit`], [`execute`], [`compare`]: the plan of an MoE (dense models
//!   stacked as experts, MoE experts pruned, reordered or united); the child that fills a
//!   size budget best; writing a plan to disk, deciding nothing; `diff` and `verify`;
//! - [`batch`]: many children from one manifest, cut into independent shard jobs;
//! - [`render`]: every text and JSON report (inspect, plan, diff, verify, maps).
//!
//! # Example
//!
//! Take the routed experts of one parent and everything else from another, then check the
//! child byte for byte against the recipe. The parents here are tiny files assembled by the
//! crate's test kit, whose tensor bytes name the parent they belong to; with real models,
//! only the paths change.
//!
//! ```rust
//! use std::path::Path;
//! use std::sync::atomic::AtomicBool;
//!
//! use gguf_splice::compare::{self, CompareOptions, Sources};
//! use gguf_splice::execute::{self, ExecOptions};
//! use gguf_splice::ggml_type::GgmlType;
//! use gguf_splice::gguf::Model;
//! use gguf_splice::plan::{self, Parent, SplitOptions};
//! use gguf_splice::recipe::Recipe;
//! use gguf_splice::render;
//! use gguf_splice::testkit::GgufBuilder;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! // Two parents of one architecture and shape: a block with attention and routed experts.
//! let write_parent = |name: &str, id: u8| -> std::io::Result<Parent> {
//!     let bytes = GgufBuilder::new()
//!         .kv_str("general.architecture", "deepseek2")
//!         .tensor("token_embd.weight", &[32, 4], GgmlType::F32, id)
//!         .tensor("blk.0.attn_norm.weight", &[32], GgmlType::F32, id)
//!         .tensor("blk.0.ffn_gate_exps.weight", &[32, 2, 4], GgmlType::F32, id)
//!         .tensor("blk.0.ffn_up_exps.weight", &[32, 2, 4], GgmlType::F32, id)
//!         .tensor("blk.0.ffn_down_exps.weight", &[2, 32, 4], GgmlType::F32, id)
//!         .build();
//!     let path = dir.path().join(format!("{name}.gguf"));
//!     std::fs::write(&path, bytes)?;
//!     let model = Model::open(&path).expect("a valid GGUF");
//!     Ok(Parent { name: name.to_string(), model })
//! };
//! // The first parent is the base: tensor order, shapes, and whatever no rule takes.
//! let parents = vec![write_parent("v3", 1)?, write_parent("r1", 2)?];
//!
//! let recipe = Recipe::from_toml(
//!     r#"
//!     [[rules]]
//!     role = "routed_experts"
//!     from = "r1"
//!     "#,
//!     Path::new("chimera.toml"),
//! )?;
//!
//! // Plan every output byte before anything is written; `splice --dry-run` prints this.
//! let output = dir.path().join("child.gguf");
//! let plan = plan::build(&parents, &recipe, &output, SplitOptions::default())?;
//! println!("{}", render::plan_text(&plan));
//! let source = |name: &str| {
//!     let t = plan.tensors.iter().find(|t| t.info.name == name).unwrap();
//!     plan.parent_name(&t.pieces[0]).to_string()
//! };
//! assert_eq!(source("blk.0.ffn_up_exps.weight"), "r1");
//! assert_eq!(source("blk.0.attn_norm.weight"), "v3");
//!
//! // Write it: a temporary file beside the output, renamed into place when complete.
//! let cancel = AtomicBool::new(false);
//! let opts = ExecOptions { force: false, cancel: &cancel, progress: &|_| {} };
//! execute::execute(&plan, &opts)?;
//!
//! // Check the child: every tensor matches the parent the recipe names.
//! let child = Model::open(&output)?;
//! let report = compare::verify(&child, &parents, Some(&recipe), &CompareOptions::default())?;
//! assert!(report.passed(), "{}", render::verify_text(&report));
//! assert_eq!(
//!     report.tensor("blk.0.ffn_down_exps.weight").unwrap().sources,
//!     Sources::Whole(vec!["r1".to_string()])
//! );
//! # Ok(())
//! # }
//! ```

// Errors carry the file, tensor, expected and found values so messages can be acted on; they
// are built once per failed run, so their size on the stack does not matter.
#![allow(clippy::result_large_err)]

pub mod assemble;
pub mod batch;
pub mod compare;
pub mod distance;
pub mod execute;
pub mod fit;
pub mod ftype;
pub mod ggml_lib;
pub mod ggml_type;
pub mod gguf;
pub mod input;
pub mod layout;
pub mod mix;
pub mod plan;
pub mod presets;
pub mod recipe;
pub mod render;
pub mod roles;
pub mod source;
/// Hand-built GGUF files for tests; only with the `testkit` feature (or in this crate's
/// unit tests).
#[cfg(any(test, feature = "testkit"))]
#[doc(hidden)]
pub mod testkit;
