//! The planner: recipe x parents -> a plan that says, for every byte range of every output
//! tensor, which parent file and offset it comes from, and where it lands in which output
//! shard. Every check happens here, before any output file is opened; the writer then only
//! executes the plan.

//!
//! Passes: parents and hyperparameters checked; each base tensor's owners walked from the
//! rules ([`owners`], pure); each tensor's pieces found in its owners, converting layouts
//! where a parent stores routed experts fused and the base separate or back (`tensors`);
//! routed-expert matrices of one layer checked to come from the same parents; metadata
//! (`metadata`); output shards and offsets (`shards`).

mod assembly;
mod build;
mod compat;
mod error;
mod loaders;
mod metadata;
pub mod mixed;
mod mixed_scales;
mod needs_ggml;
pub mod owners;
pub mod parents;
mod piece;
pub mod record;
mod shards;
mod tensors;
mod units;

use std::ops::Range;
use std::path::{Path, PathBuf};

use crate::gguf::{Model, OwnedValue, ValueRef};
pub use assembly::{AssemblyReport, ExpertSource, LayerExperts};
pub use build::build;
pub(crate) use compat::{STRUCTURAL_KEYS, same_value, show_value};
pub use error::PlanError;
pub use loaders::{GGML_MAX_NAME, IK_LLAMA_MAX_EXPERTS, LLAMA_MAX_EXPERTS, Loaders, OverLimit};
pub use metadata::shard_kvs;
/// The metadata steps every planner of a child shares (`build` and `assemble`): a key set
/// in order, a parent's inheritable keys, the parents recorded as `general.base_model.*`,
/// and the `general.name`-style "made by" text.
pub(crate) use metadata::{inherited, made_by, record_parents, set_kv};
pub use mixed::{MixReport, SliceDecision};
pub use needs_ggml::require_ggml;
pub use piece::{Made, ParentBytes, Piece, PlannedTensor, RunSource, Source, SourceRun};
pub use shards::{MAX_SHARDS, parse_size};

/// A parent model and the name the recipe calls it by.
pub struct Parent {
    /// The name rules use (`--parent NAME=PATH`).
    pub name: String,
    /// The opened model (one file or a shard set).
    pub model: Model,
}

/// A metadata value of the child: borrowed raw from a parent, or made here.
#[derive(Clone, Debug)]
pub enum PlanValue<'p> {
    /// A parent's value, raw.
    Parent(ValueRef<'p>),
    /// A value made by the planner or the recipe.
    Owned(OwnedValue),
}

impl PlanValue<'_> {
    /// The value's type and raw bytes.
    pub fn as_ref(&self) -> ValueRef<'_> {
        match self {
            PlanValue::Parent(v) => *v,
            PlanValue::Owned(v) => v.as_ref(),
        }
    }
}

/// One output file.
#[derive(Clone, Debug)]
pub struct OutShard {
    /// Where it goes.
    pub path: PathBuf,
    /// Its tensors, as a range of [`Plan::tensors`].
    pub tensors: Range<usize>,
    /// Its data alignment.
    pub alignment: u64,
    /// Bytes of its header, padding included.
    pub header_len: u64,
    /// Bytes of its data section.
    pub data_len: u64,
}

impl OutShard {
    /// Bytes of the whole file.
    pub fn file_len(&self) -> u64 {
        self.header_len + self.data_len
    }
}

/// How a rule fared: how many base tensors it selected.
#[derive(Clone, Debug)]
pub struct RuleReport {
    /// Where it was written (`--take #1`, `recipe.toml rule #2`).
    pub origin: String,
    /// What it selects (`role routed_experts /regex/ layers 3-60`).
    pub pattern: String,
    /// The parent it takes from.
    pub from: String,
    /// Its expert filter, as written.
    pub experts: Option<String>,
    /// Base tensors it selected.
    pub matched: usize,
}

/// How the child is cut into files.
#[derive(Clone, Copy, Debug, Default)]
pub struct SplitOptions {
    /// `--split-max-size`: a soft limit on tensor bytes per shard, as llama-gguf-split.
    pub max_bytes: Option<u64>,
    /// `--split-max-tensors`.
    pub max_tensors: Option<usize>,
}

impl SplitOptions {
    /// Whether the child is a shard set.
    pub fn is_split(&self) -> bool {
        self.max_bytes.is_some() || self.max_tensors.is_some()
    }
}

/// Every byte of the child: where it comes from and where it goes. Built and checked whole
/// before any output is opened.
pub struct Plan<'p> {
    /// The parents, as given.
    pub parents: &'p [Parent],
    /// Index of the base parent (tensor order, shapes, default metadata).
    pub base: usize,
    /// The child's metadata (shard 0), without split keys.
    pub kvs: Vec<(String, PlanValue<'p>)>,
    /// The child's tensors, in the base's order.
    pub tensors: Vec<PlannedTensor>,
    /// The output files.
    pub shards: Vec<OutShard>,
    /// The set identity written as `splice.set_id` into every shard of a sharded output: a
    /// hash of everything the plan says, so the same plan gives the same bytes and shards
    /// of different plans never pass as one set.
    pub set_id: String,
    /// Each rule and what it matched.
    pub rules: Vec<RuleReport>,
    /// Things the user should know that do not stop the run.
    pub warnings: Vec<String>,
    /// Which programs load the child (from its tensor types).
    pub loaders: Loaders,
    /// For an assembled MoE: its experts, their sources and the router's origin.
    pub assembly: Option<AssemblyReport>,
    /// The importance matrices mix pieces quantize with (indexed by their jobs).
    pub imatrices: Vec<crate::mix::Imatrix>,
}

/// Everything a plan says before its output files are laid out: what [`finish`] turns into a
/// [`Plan`]. Planners other than [`build`] (such as [`assemble`](crate::assemble)) make one.
pub struct PlanParts<'p> {
    /// The parents, as given.
    pub parents: &'p [Parent],
    /// Index of the base parent.
    pub base: usize,
    /// The child's metadata, without split keys.
    pub kvs: Vec<(String, PlanValue<'p>)>,
    /// The child's tensors, in output order (offsets are assigned by [`finish`]).
    pub tensors: Vec<PlannedTensor>,
    /// Rules and what they matched (none for an assembly).
    pub rules: Vec<RuleReport>,
    /// Things the user should know.
    pub warnings: Vec<String>,
    /// For an assembled MoE, its summary.
    pub assembly: Option<AssemblyReport>,
    /// The importance matrices mix pieces quantize with (indexed by their jobs).
    pub imatrices: Vec<crate::mix::Imatrix>,
    /// How the child was made, recorded in it with its parents (see [`record`]).
    pub made: record::Made,
}

/// Lay out `parts` as the output `output` (the first shard's path when split): the set
/// identity, the shards and every tensor's offset. A child with more experts than its
/// loaders accept gets a warning (see [`finish_with`]).
pub fn finish<'p>(
    parts: PlanParts<'p>,
    output: &Path,
    split: SplitOptions,
) -> Result<Plan<'p>, PlanError> {
    finish_with(parts, output, split, OverLimit::Warn)
}

/// [`finish`], saying what to do when the child has more experts per layer than every
/// program that would load it accepts.
pub fn finish_with<'p>(
    parts: PlanParts<'p>,
    output: &Path,
    split: SplitOptions,
    experts: OverLimit,
) -> Result<Plan<'p>, PlanError> {
    let PlanParts {
        parents,
        base,
        kvs,
        mut tensors,
        rules,
        mut warnings,
        assembly,
        imatrices,
        made,
    } = parts;
    let mut kvs = kvs;
    record::set(&mut kvs, parents, &made, split);
    let loaders = loaders::loaders(&tensors, &mut warnings)?;
    loaders::check_limits(&loaders, &tensors, &kvs, experts, &mut warnings)?;
    let set_id = metadata::set_id(parents, &kvs, &tensors, &imatrices, split);
    let shards = shards::assign_shards(&mut tensors, &kvs, &set_id, output, split)?;
    loaders::check_shards(&loaders, shards.len(), &mut warnings);
    Ok(Plan {
        parents,
        base,
        kvs,
        tensors,
        shards,
        set_id,
        rules,
        warnings,
        loaders,
        assembly,
        imatrices,
    })
}

pub(crate) const KEY_CHAT_TEMPLATE: &str = "tokenizer.chat_template";
/// The key that records how the child was made (parents and recipe text).
pub const KEY_SPLICE_RECIPE: &str = "splice.recipe";

impl Plan<'_> {
    /// Total bytes of the output files.
    pub fn output_bytes(&self) -> u64 {
        self.shards.iter().map(|s| s.file_len()).sum()
    }

    /// The name of a piece's parent; for made bytes, `made`.
    pub fn parent_name(&self, piece: &Piece) -> &str {
        piece.parent().map_or("made", |p| &self.parents[p].name)
    }
}
