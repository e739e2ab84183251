//! What a plan is: every output tensor with the pieces that make it (copied from a parent,
//! or computed by mixing), the output shards, the child's metadata, and what each rule
//! matched. Data only: [`build`](super::build) makes it, `execute` carries it out.

use std::ops::Range;
use std::path::PathBuf;

use super::{MixReport, Parent};
use crate::gguf::{OwnedValue, TensorInfo, ValueRef};
use crate::mix::Imatrix;
use crate::roles::views::Conversion;

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

/// A byte range of one output tensor and where it comes from.
#[derive(Clone, Debug, PartialEq)]
pub struct Piece {
    /// Bytes of the output it makes.
    pub len: u64,
    /// The experts this piece belongs to, for tensors planned expert by expert (mixed
    /// parents, or a converted layout, where a piece may be part of one expert); `None`: the
    /// whole tensor.
    pub experts: Option<Range<u64>>,
    /// Copied from a parent, or computed by mixing parents.
    pub source: Source,
}

/// Where a piece's bytes come from.
#[derive(Clone, Debug, PartialEq)]
pub enum Source {
    /// Copied, byte for byte, from a parent's file.
    Copy {
        /// Index of the parent in [`Plan::parents`].
        parent: usize,
        /// Shard of the parent that holds the bytes.
        shard: usize,
        /// Absolute offset of the first byte in that shard file.
        src_offset: u64,
        /// The bytes come from a tensor of another layout (fused vs separate gate/up experts).
        converted: bool,
    },
    /// Computed from parents by a mix rule: dequantized, weighted, summed, quantized (see
    /// [`crate::mix`]). The job says which rows of which parents, the weights, the output
    /// type and the importance matrix.
    Mix(Box<crate::mix::Job>),
}

impl Piece {
    /// The parent a copied piece comes from; `None` for a mixed one.
    pub fn copied_from(&self) -> Option<usize> {
        match &self.source {
            Source::Copy { parent, .. } => Some(*parent),
            Source::Mix(_) => None,
        }
    }

    /// Every parent whose bytes the piece reads.
    pub fn reads(&self) -> Vec<usize> {
        match &self.source {
            Source::Copy { parent, .. } => vec![*parent],
            Source::Mix(job) => job.inputs.iter().map(|i| i.parent).collect(),
        }
    }
}

/// One tensor of the child.
#[derive(Clone, Debug)]
pub struct PlannedTensor {
    /// Name, shape, type, size, and offset within its output shard's data section.
    pub info: TensorInfo,
    /// Index of its output shard.
    pub out_shard: usize,
    /// In output order; they cover the tensor exactly.
    pub pieces: Vec<Piece>,
    /// Whether some piece was converted from another layout.
    pub conversion: Conversion,
    /// For a tensor a mix rule selected: the rule, weights, output type and threshold
    /// decisions (what `--dry-run` shows).
    pub mix: Option<MixReport>,
}

/// Who made a run of a tensor's bytes, for reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Maker {
    /// Copied from this parent.
    Parent(usize),
    /// Computed by mixing.
    Mix,
}

impl PlannedTensor {
    /// Who gave what: (maker, experts) runs in output order, pieces of consecutive experts
    /// of one maker merged; experts `None` for a tensor taken whole.
    pub fn sources(&self) -> Vec<(Maker, Option<Range<u64>>)> {
        let mut out: Vec<(Maker, Option<Range<u64>>)> = Vec::new();
        for p in &self.pieces {
            let m = p.copied_from().map_or(Maker::Mix, Maker::Parent);
            match (out.last_mut(), &p.experts) {
                (Some((q, Some(r))), Some(e)) if *q == m && e.start <= r.end => {
                    r.end = r.end.max(e.end)
                }
                (Some((q, None)), None) if *q == m => {}
                _ => out.push((m, p.experts.clone())),
            }
        }
        out
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
    /// The importance matrices mix jobs quantize with ([`crate::mix::ImatrixUse::file`]).
    pub imatrices: Vec<Imatrix>,
    /// Things the user should know that do not stop the run.
    pub warnings: Vec<String>,
}

impl Plan<'_> {
    /// Total bytes of the output files.
    pub fn output_bytes(&self) -> u64 {
        self.shards.iter().map(|s| s.file_len()).sum()
    }

    /// The name of a copied piece's parent; `mix` for a mixed piece.
    pub fn parent_name(&self, piece: &Piece) -> &str {
        match piece.copied_from() {
            Some(p) => &self.parents[p].name,
            None => "mix",
        }
    }
}
