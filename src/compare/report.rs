//! What `verify` found, as data: for each tensor and expert of the child the parents its
//! bytes match, every mismatch with what was expected and found, and the verdict. Filled by
//! `verify`, `pieces` and `mixed`; rendered by `render::verify`.

use std::ops::Range;
use std::path::PathBuf;

use super::{ModelSummary, Shown, to_ranges};
use crate::ggml_type::GgmlType;
use crate::roles::Role;

/// Which parents some bytes match.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Sources {
    /// The whole tensor matches these parents (none: it matches no parent).
    Whole(Vec<String>),
    /// Expert by expert: runs grouped by the parents they match, in order of first expert.
    Experts(Vec<ExpertRun>),
}

/// Experts of one tensor that match the same set of parents.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExpertRun {
    /// The parents these experts match byte for byte; empty: none.
    pub parents: Vec<String>,
    /// The experts, as half-open ranges in ascending order (not necessarily contiguous).
    pub experts: Vec<Range<u64>>,
}

impl Sources {
    /// Some byte range matches no parent.
    pub fn matches_no_parent(&self) -> bool {
        match self {
            Sources::Whole(p) => p.is_empty(),
            Sources::Experts(runs) => runs.iter().any(|r| r.parents.is_empty()),
        }
    }

    /// The parents of expert `e`, when the sources are by expert.
    pub fn expert(&self, e: u64) -> Option<&[String]> {
        match self {
            Sources::Whole(_) => None,
            Sources::Experts(runs) => runs
                .iter()
                .find(|r| r.experts.iter().any(|x| x.contains(&e)))
                .map(|r| r.parents.as_slice()),
        }
    }
}

/// Group experts (in `indices`) by their match sets, in order of first expert.
pub(super) fn expert_runs(
    sets: &[Vec<usize>],
    indices: impl Iterator<Item = u64>,
    names: &[String],
) -> Vec<ExpertRun> {
    let mut runs: Vec<(&Vec<usize>, Vec<u64>)> = Vec::new();
    for e in indices {
        let set = &sets[e as usize];
        match runs.iter_mut().find(|(s, _)| *s == set) {
            Some(r) => r.1.push(e),
            None => runs.push((set, vec![e])),
        }
    }
    runs.into_iter()
        .map(|(set, experts)| ExpertRun {
            parents: set.iter().map(|&p| names[p].clone()).collect(),
            experts: to_ranges(experts),
        })
        .collect()
}

/// One tensor of the child and the parents its bytes match.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorSources {
    /// The tensor's name.
    pub name: String,
    /// Its type in the child.
    pub ty: GgmlType,
    /// Its shape in the child.
    pub dims: Vec<u64>,
    /// Its role, for grouping in reports.
    pub group: Role,
    /// Parents with a tensor of this name, type and shape: the ones compared.
    pub compared: Vec<String>,
    /// Which of them match, whole or expert by expert.
    pub sources: Sources,
    /// A mix rule makes this tensor (of the recipe given, or, without one, of the recipe
    /// the child records in `splice.recipe`), so bytes that match no parent are expected.
    /// With a recipe they are computed again and compared; without one they cannot be.
    pub mixed: bool,
}

/// One way the child differs from what the recipe makes.
#[derive(Clone, Debug, PartialEq)]
pub enum Mismatch {
    /// The recipe makes this tensor (at `position`); the child lacks it.
    MissingTensor {
        /// The tensor.
        tensor: String,
        /// Its index in the plan's tensor order.
        position: usize,
    },
    /// The child has a tensor (at `position`) the recipe does not make.
    ExtraTensor {
        /// The tensor.
        tensor: String,
        /// Its index in the child's tensor order.
        position: usize,
    },
    /// Same tensors, another order: the first position where they part.
    TensorOrder {
        /// Index in the child (among the tensors both have).
        position: usize,
        /// The tensor the plan puts there.
        expected: String,
        /// The tensor the child has there.
        found: String,
    },
    /// The child stores the tensor in another type than the plan says.
    TypeDiffers {
        /// The tensor.
        tensor: String,
        /// The planned type.
        expected: GgmlType,
        /// The child's type.
        found: GgmlType,
    },
    /// The child's tensor has another shape than the plan's.
    ShapeDiffers {
        /// The tensor.
        tensor: String,
        /// The planned shape.
        expected: Vec<u64>,
        /// The child's shape.
        found: Vec<u64>,
    },
    /// Bytes that should be `expected`'s are not. For tensors cut by expert, `experts` are
    /// the experts that do not match; `found` says what they match instead;
    /// `first_offset` is the first byte (from the tensor's start) differing from `expected`.
    BytesDiffer {
        /// The tensor.
        tensor: String,
        /// The experts that do not match `expected`; `None` for a tensor taken whole.
        experts: Option<Vec<Range<u64>>>,
        /// The parent the plan takes these bytes from.
        expected: String,
        /// The parents the bytes match instead.
        found: Sources,
        /// First byte, from the tensor's start, that differs from `expected`'s; `None` when
        /// `expected` was not compared (it lacks the tensor in a comparable form).
        first_offset: Option<u64>,
    },
    /// The plan sets a key the child lacks.
    MissingKey {
        /// The key.
        key: String,
        /// The planned value.
        expected: Shown,
    },
    /// The child has a key the plan does not set.
    ExtraKey {
        /// The key.
        key: String,
        /// The child's value.
        found: Shown,
    },
    /// The child's value for a key differs (type or bytes) from the plan's.
    KeyDiffers {
        /// The key.
        key: String,
        /// The planned value.
        expected: Shown,
        /// The child's value.
        found: Shown,
    },
}

impl Mismatch {
    /// A stable snake_case name for the variant, as JSON reports and tallies use it.
    pub fn kind(&self) -> &'static str {
        match self {
            Mismatch::MissingTensor { .. } => "missing_tensor",
            Mismatch::ExtraTensor { .. } => "extra_tensor",
            Mismatch::TensorOrder { .. } => "tensor_order",
            Mismatch::TypeDiffers { .. } => "type_differs",
            Mismatch::ShapeDiffers { .. } => "shape_differs",
            Mismatch::BytesDiffer { .. } => "bytes_differ",
            Mismatch::MissingKey { .. } => "missing_key",
            Mismatch::ExtraKey { .. } => "extra_key",
            Mismatch::KeyDiffers { .. } => "key_differs",
        }
    }
}

/// A weight and one of its companions (`.scale`, `.input_scale`, `.bias`) whose bytes come
/// from different parents: each matches a parent, but the child computes values neither
/// parent has (the blocks of one times the scale of another).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TornUnit {
    /// The weight.
    pub weight: String,
    /// Its companion.
    pub companion: String,
    /// For tensors cut by expert: the experts whose weight and companion part; `None` for
    /// tensors taken whole.
    pub experts: Option<Vec<Range<u64>>>,
    /// The parents the weight's bytes match (at the first such expert).
    pub weight_from: Vec<String>,
    /// The parents the companion's bytes match (at the first such expert).
    pub companion_from: Vec<String>,
}

/// The result of checking a child against the plan its recipe makes.
#[derive(Clone, Debug)]
pub struct RecipeCheck {
    /// The plan checked is an assembled MoE's (`assemble`), not a recipe's.
    pub assembled: bool,
    /// Tensors the plan makes.
    pub tensors: usize,
    /// Keys the plan sets and that were checked (`splice.recipe` and `split.*` aside).
    pub keys: usize,
    /// Every way the child differs; empty: it is exactly what the recipe makes.
    pub mismatches: Vec<Mismatch>,
}

/// What [`verify`](super::verify()) found: where each tensor of the child came from and, with a recipe,
/// whether the child is what it makes. Data only; [`render`](crate::render) formats it.
#[derive(Clone, Debug)]
pub struct VerifyReport {
    /// The child model.
    pub child: ModelSummary,
    /// (name, first file) of each parent.
    pub parents: Vec<(String, PathBuf)>,
    /// Every tensor of the child, in its order.
    pub tensors: Vec<TensorSources>,
    /// With a recipe: how the child compares with its plan.
    pub recipe: Option<RecipeCheck>,
    /// Weights and companions whose bytes come from different parents.
    pub torn: Vec<TornUnit>,
}

impl VerifyReport {
    /// Tensors with some byte range that matches no parent and that no mix rule makes.
    pub fn unmatched(&self) -> impl Iterator<Item = &TensorSources> {
        self.tensors
            .iter()
            .filter(|t| t.sources.matches_no_parent() && !t.mixed)
    }

    /// Tensors with bytes that match no parent, which a mix rule makes: checked byte for
    /// byte against a recomputation with a recipe, unchecked without one.
    pub fn mixed(&self) -> impl Iterator<Item = &TensorSources> {
        self.tensors
            .iter()
            .filter(|t| t.sources.matches_no_parent() && t.mixed)
    }

    /// The entry for the child's tensor of this name.
    pub fn tensor(&self, name: &str) -> Option<&TensorSources> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// Every tensor matches some parent, every weight and its companions match one parent, and,
    /// with a recipe, the child is what it makes.
    pub fn passed(&self) -> bool {
        self.unmatched().next().is_none()
            && self.torn.is_empty()
            && self.recipe.as_ref().is_none_or(|r| r.mismatches.is_empty())
    }
}
