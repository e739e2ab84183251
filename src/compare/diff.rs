//! `diff`: two models compared tensor by tensor (stacked experts expert by expert) and key
//! by key.

use std::ops::Range;

use super::engine::{FileSet, Target, compare_targets, slicing};
use super::{CompareError, CompareOptions, ModelSummary, Shown, is_split_key, to_ranges};
use crate::ggml_type::GgmlType;
use crate::gguf::{Model, ValueRef};
use crate::roles::views;
use crate::roles::{self, Role};

/// How a tensor of A compares with the tensor of the same name in B.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TensorStatus {
    /// Same type, shape and bytes.
    Identical,
    /// Same type and shape, different bytes. `first_offset` is the first differing byte from
    /// the tensor's start; `experts` says which experts differ, for tensors cut by expert.
    BytesDiffer {
        /// First differing byte, from the tensor's start.
        first_offset: u64,
        /// For tensors cut by expert: which experts differ.
        experts: Option<ExpertDiff>,
    },
    /// Different types (and maybe shapes): the bytes are not comparable.
    TypeDiffers {
        /// A's type.
        a: GgmlType,
        /// B's type.
        b: GgmlType,
        /// A's dimensions.
        a_dims: Vec<u64>,
        /// B's dimensions.
        b_dims: Vec<u64>,
    },
    /// Same type, different shapes: the bytes are not comparable.
    ShapeDiffers {
        /// A's dimensions.
        a: Vec<u64>,
        /// B's dimensions.
        b: Vec<u64>,
    },
    /// B has no tensor of this name.
    OnlyInA,
    /// A has no tensor of this name.
    OnlyInB,
}

/// Which experts of a tensor cut by expert differ, so a report can say "experts 0-7 differ"
/// instead of a byte offset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExpertDiff {
    /// Experts in the tensor.
    pub count: u64,
    /// Experts whose bytes differ.
    pub differ: Vec<Range<u64>>,
}

impl TensorStatus {
    /// The name used in JSON and group totals.
    pub fn kind(&self) -> &'static str {
        match self {
            TensorStatus::Identical => "identical",
            TensorStatus::BytesDiffer { .. } => "bytes_differ",
            TensorStatus::TypeDiffers { .. } => "type_differs",
            TensorStatus::ShapeDiffers { .. } => "shape_differs",
            TensorStatus::OnlyInA => "only_in_a",
            TensorStatus::OnlyInB => "only_in_b",
        }
    }
}

/// One tensor of either model and how it compares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorDiff {
    /// The tensor's name (the same in both models).
    pub name: String,
    /// Its role, for per-group totals.
    pub group: Role,
    /// How it compares.
    pub status: TensorStatus,
}

/// How a key that differs between the models differs.
#[derive(Clone, Debug, PartialEq)]
pub enum KeyStatus {
    /// B lacks the key; A's value.
    OnlyInA(Shown),
    /// A lacks the key; B's value.
    OnlyInB(Shown),
    /// Different type or bytes.
    Differs {
        /// A's value.
        a: Shown,
        /// B's value.
        b: Shown,
    },
}

/// One metadata key that differs between the models.
#[derive(Clone, Debug, PartialEq)]
pub struct KeyDiff {
    /// The key.
    pub key: String,
    /// How it differs.
    pub status: KeyStatus,
    /// For differing arrays and strings: where they part, since two summaries of a long
    /// vocabulary or chat template usually look the same.
    pub detail: Option<ValueDiff>,
}

/// Where two values of the same kind first differ.
#[derive(Clone, Debug, PartialEq)]
pub enum ValueDiff {
    /// Arrays of one element type.
    Array {
        /// The first index whose elements differ (or where the shorter array ends).
        first: u64,
        /// A's element there (`None`: A ends before it).
        a: Option<Shown>,
        /// B's element there.
        b: Option<Shown>,
        /// How many indices present in both differ.
        differing: u64,
        /// A's length.
        len_a: u64,
        /// B's length.
        len_b: u64,
    },
    /// Strings: the first differing character (byte offset) and some text around it.
    Text {
        /// Byte offset of the first difference.
        at: usize,
        /// A's text around it.
        a: String,
        /// B's text around it.
        b: String,
    },
}

/// Characters of context shown on each side of a string difference.
const TEXT_CONTEXT: usize = 24;

/// Where `a` and `b` (same type, different bytes) part, for arrays and strings.
fn value_diff(a: ValueRef<'_>, b: ValueRef<'_>) -> Option<ValueDiff> {
    if a.ty() != b.ty() {
        return None;
    }
    if let (Some(x), Some(y)) = (a.as_str(), b.as_str()) {
        let at = x
            .char_indices()
            .zip(y.chars())
            .find(|((_, p), q)| p != q)
            .map(|((i, _), _)| i)
            .unwrap_or_else(|| x.len().min(y.len()));
        let around = |s: &str| {
            let start = s[..at.min(s.len())]
                .char_indices()
                .rev()
                .nth(TEXT_CONTEXT)
                .map_or(0, |(i, _)| i);
            s[start..]
                .chars()
                .take(2 * TEXT_CONTEXT)
                .collect::<String>()
        };
        return Some(ValueDiff::Text {
            at,
            a: around(x),
            b: around(y),
        });
    }
    let ((ta, len_a), (tb, len_b)) = (a.array_header()?, b.array_header()?);
    if ta != tb {
        return None;
    }
    let mut first = None;
    let mut differing = 0u64;
    let (mut ia, mut ib) = (a.array_items(), b.array_items());
    let mut i = 0u64;
    loop {
        match (ia.next(), ib.next()) {
            (Some(x), Some(y)) => {
                if x != y {
                    differing += 1;
                    first.get_or_insert((i, Some(Shown::of(x)), Some(Shown::of(y))));
                }
            }
            (Some(x), None) => {
                first.get_or_insert((i, Some(Shown::of(x)), None));
                break;
            }
            (None, Some(y)) => {
                first.get_or_insert((i, None, Some(Shown::of(y))));
                break;
            }
            (None, None) => break,
        }
        i += 1;
    }
    let (first, a, b) = first?;
    Some(ValueDiff::Array {
        first,
        a,
        b,
        differing,
        len_a,
        len_b,
    })
}

/// Totals of one tensor group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupSummary {
    /// The role the tensors have.
    pub group: Role,
    /// Tensors of this role in either model.
    pub tensors: usize,
    /// Of those, [`TensorStatus::Identical`].
    pub identical: usize,
    /// [`TensorStatus::BytesDiffer`].
    pub bytes_differ: usize,
    /// [`TensorStatus::TypeDiffers`].
    pub type_differs: usize,
    /// [`TensorStatus::ShapeDiffers`].
    pub shape_differs: usize,
    /// [`TensorStatus::OnlyInA`].
    pub only_in_a: usize,
    /// [`TensorStatus::OnlyInB`].
    pub only_in_b: usize,
}

/// What [`diff`] found: every tensor's status and every differing key. Data only;
/// [`render`](crate::render) formats it.
#[derive(Clone, Debug)]
pub struct DiffReport {
    /// The first model.
    pub a: ModelSummary,
    /// The second model.
    pub b: ModelSummary,
    /// A's tensors in A's order, then those only in B in B's order.
    pub tensors: Vec<TensorDiff>,
    /// Keys that differ (`split.*` ignored): A's order, then those only in B.
    pub keys: Vec<KeyDiff>,
}

impl DiffReport {
    /// No tensor and no key differs.
    pub fn identical(&self) -> bool {
        self.keys.is_empty()
            && self
                .tensors
                .iter()
                .all(|t| t.status == TensorStatus::Identical)
    }

    /// The entry for the tensor of this name, in either model.
    pub fn tensor(&self, name: &str) -> Option<&TensorDiff> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// Totals by tensor group, in a fixed order; groups without tensors left out.
    pub fn groups(&self) -> Vec<GroupSummary> {
        let mut out: Vec<GroupSummary> = Role::ALL
            .iter()
            .map(|&group| GroupSummary {
                group,
                tensors: 0,
                identical: 0,
                bytes_differ: 0,
                type_differs: 0,
                shape_differs: 0,
                only_in_a: 0,
                only_in_b: 0,
            })
            .collect();
        for t in &self.tensors {
            let g = &mut out[t.group.order()];
            g.tensors += 1;
            match t.status {
                TensorStatus::Identical => g.identical += 1,
                TensorStatus::BytesDiffer { .. } => g.bytes_differ += 1,
                TensorStatus::TypeDiffers { .. } => g.type_differs += 1,
                TensorStatus::ShapeDiffers { .. } => g.shape_differs += 1,
                TensorStatus::OnlyInA => g.only_in_a += 1,
                TensorStatus::OnlyInB => g.only_in_b += 1,
            }
        }
        out.retain(|g| g.tensors > 0);
        out
    }

    pub(crate) fn count(&self, kind: &str) -> usize {
        self.tensors
            .iter()
            .filter(|t| t.status.kind() == kind)
            .count()
    }
}

/// Compare two models (each one file or a shard set) tensor by tensor and key by key.
pub fn diff(a: &Model, b: &Model, opts: &CompareOptions) -> Result<DiffReport, CompareError> {
    let mut files = FileSet::default();
    let fa = files.add(a)?;
    let fb = files.add(b)?;

    let mut tensors: Vec<TensorDiff> = Vec::with_capacity(a.tensor_count());
    // Index in `tensors` of each tensor whose bytes are to be compared.
    let mut pending: Vec<usize> = Vec::new();
    let mut targets: Vec<Target> = Vec::new();
    for t in a.tensors() {
        let name = &t.info.name;
        let status = match b.tensor(name) {
            None => TensorStatus::OnlyInA,
            Some(u) if u.info.ty != t.info.ty => TensorStatus::TypeDiffers {
                a: t.info.ty,
                b: u.info.ty,
                a_dims: t.info.dims.clone(),
                b_dims: u.info.dims.clone(),
            },
            Some(u) if u.info.dims != t.info.dims => TensorStatus::ShapeDiffers {
                a: t.info.dims.clone(),
                b: u.info.dims.clone(),
            },
            Some(_) => {
                // Same name, type and shape: B's view of it is the tensor itself.
                let view = views::view(t.info, b).expect("same name, type and shape");
                pending.push(tensors.len());
                targets.push(Target {
                    tensor: name.clone(),
                    slicing: slicing(t.info),
                    child_file: fa + t.shard,
                    child_offset: t.file_offset,
                    candidates: vec![(fb, view)],
                });
                TensorStatus::Identical
            }
        };
        tensors.push(TensorDiff {
            name: name.clone(),
            group: roles::role_of(name),
            status,
        });
    }
    for u in b.tensors() {
        if a.tensor(&u.info.name).is_none() {
            tensors.push(TensorDiff {
                name: u.info.name.clone(),
                group: roles::role_of(&u.info.name),
                status: TensorStatus::OnlyInB,
            });
        }
    }

    let results = compare_targets(&targets, &files, opts)?;
    for ((i, target), firsts) in pending.into_iter().zip(&targets).zip(results) {
        let sl = target.slicing;
        let per_slice = &firsts[0];
        let Some(first_offset) = per_slice.iter().flatten().min().copied() else {
            continue;
        };
        let experts = sl.by_expert.then(|| ExpertDiff {
            count: sl.count,
            differ: to_ranges(
                per_slice
                    .iter()
                    .enumerate()
                    .filter(|(_, f)| f.is_some())
                    .map(|(e, _)| e as u64),
            ),
        });
        tensors[i].status = TensorStatus::BytesDiffer {
            first_offset,
            experts,
        };
    }

    Ok(DiffReport {
        a: ModelSummary::of(a),
        b: ModelSummary::of(b),
        tensors,
        keys: diff_keys(a, b),
    })
}

fn diff_keys(a: &Model, b: &Model) -> Vec<KeyDiff> {
    let (fa, fb) = (a.first(), b.first());
    let mut out = Vec::new();
    for kv in fa.kvs().iter().filter(|kv| !is_split_key(&kv.key)) {
        let va = fa.value(kv);
        let (status, detail) = match fb.get(&kv.key) {
            None => (KeyStatus::OnlyInA(Shown::of(va)), None),
            // ValueRef equality is type and raw bytes.
            Some(vb) if vb != va => (
                KeyStatus::Differs {
                    a: Shown::of(va),
                    b: Shown::of(vb),
                },
                value_diff(va, vb),
            ),
            Some(_) => continue,
        };
        out.push(KeyDiff {
            key: kv.key.clone(),
            status,
            detail,
        });
    }
    for kv in fb.kvs().iter().filter(|kv| !is_split_key(&kv.key)) {
        if fa.get(&kv.key).is_none() {
            out.push(KeyDiff {
                key: kv.key.clone(),
                status: KeyStatus::OnlyInB(Shown::of(fb.value(kv))),
                detail: None,
            });
        }
    }
    out
}
