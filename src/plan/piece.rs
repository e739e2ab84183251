//! What a plan says of one output tensor: its pieces, each a byte range with where it comes
//! from. A piece is a range of a parent's file (a whole tensor, some of its experts, or part
//! of one expert read through another converter layout), or bytes the planner made (the router
//! of an MoE assembled from dense models). Each piece carries the facts `verify` and the
//! reports need: which output experts it makes, which tensor and experts of the parent it is.

use std::ops::Range;
use std::sync::Arc;

use crate::gguf::TensorInfo;
use crate::roles::views::Conversion;

/// Bytes of a parent's file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParentBytes {
    /// Index of the parent in [`Plan::parents`](super::Plan::parents).
    pub parent: usize,
    /// Shard of the parent that holds the bytes.
    pub shard: usize,
    /// Absolute offset of the first byte in that shard file.
    pub offset: u64,
    /// The parent's tensor the bytes belong to: the output tensor's namesake, the other
    /// layout's tensor (`ffn_gate_up_exps`), or for an assembled MoE a dense `ffn_up` that
    /// becomes one expert of `ffn_up_exps`.
    pub tensor: String,
    /// The experts of that tensor the bytes belong to; `None`: a tensor not cut by expert, or
    /// taken whole.
    pub experts: Option<Range<u64>>,
}

/// Bytes the planner made and the plan holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Made {
    /// The bytes, exactly as written.
    pub bytes: Arc<[u8]>,
    /// What made them, for reports: `router random:7`.
    pub origin: String,
}

/// Where a piece's bytes come from.
#[derive(Clone, Debug, PartialEq)]
pub enum Source {
    /// A byte range of a parent's file.
    Parent(ParentBytes),
    /// Bytes held in the plan.
    Made(Made),
    /// Bytes computed by mixing parents' dequantized rows and quantizing the sum with ggml
    /// (`mix` rules); the job says everything that decides them.
    Mix(Box<crate::mix::Job>),
}

/// A byte range of one output tensor and where it comes from.
#[derive(Clone, Debug, PartialEq)]
pub struct Piece {
    /// Where the bytes come from.
    pub source: Source,
    /// Bytes copied.
    pub len: u64,
    /// The output experts this piece belongs to, for tensors planned expert by expert (mixed
    /// parents, a converted layout where a piece may be part of one expert, or an assembled
    /// MoE); `None`: the whole tensor.
    pub experts: Option<Range<u64>>,
    /// The bytes come from a tensor of another layout (fused vs separate gate/up experts).
    pub converted: bool,
}

impl Piece {
    /// The parent's bytes, if the piece is a range of a parent's file.
    pub fn parent_bytes(&self) -> Option<&ParentBytes> {
        match &self.source {
            Source::Parent(p) => Some(p),
            Source::Made(_) | Source::Mix(_) => None,
        }
    }

    /// The parents whose bytes this piece reads: the one it copies from, every parent of a
    /// mix, none for made bytes.
    pub fn reads(&self) -> Vec<usize> {
        match &self.source {
            Source::Parent(p) => vec![p.parent],
            Source::Made(_) => Vec::new(),
            Source::Mix(job) => job.inputs.iter().map(|i| i.parent).collect(),
        }
    }

    /// Index of the parent the bytes come from; `None` for made bytes.
    pub fn parent(&self) -> Option<usize> {
        self.parent_bytes().map(|p| p.parent)
    }

    /// Whether the bytes are not where a splice would find them: another tensor than the
    /// output tensor `name` (other than a converted layout), or other experts than the output
    /// experts. Such pieces come from assembling an MoE (output expert 4 may be expert 0 of a
    /// parent, or a dense parent's `ffn_up`); `verify` checks them range by range.
    pub fn is_relocated(&self, name: &str) -> bool {
        match &self.source {
            Source::Made(_) | Source::Mix(_) => false,
            Source::Parent(p) => {
                (!self.converted && p.tensor != name)
                    || (p.experts.is_some() && p.experts != self.experts)
            }
        }
    }
}

/// One run of a tensor's sources, as reports show it: consecutive pieces of one source merged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceRun {
    /// Output experts (`None`: the whole tensor).
    pub experts: Option<Range<u64>>,
    /// What the bytes are.
    pub from: RunSource,
}

/// Where a [`SourceRun`] comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RunSource {
    /// A parent: its index; its tensor when that is not the output tensor's namesake nor a
    /// converted layout; its experts when they are not the output experts.
    Parent {
        /// Index in [`Plan::parents`](super::Plan::parents).
        parent: usize,
        /// The parent's tensor, if another (a dense `ffn_up` stacked as one expert).
        tensor: Option<String>,
        /// The parent's experts, if other than the output experts.
        experts: Option<Range<u64>>,
    },
    /// Made by the planner (the origin, such as `router random:7`).
    Made(String),
    /// Computed by a mix rule.
    Mix,
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
    /// For a tensor a mix rule selected: its weights, output type, distances and decisions.
    pub mix: Option<super::MixReport>,
}

impl PlannedTensor {
    /// Who gave what, in output order: runs of consecutive experts from one source merged
    /// (experts `None` for a tensor taken whole). For an assembled MoE a run also says which
    /// experts (or which dense tensor) of the parent it is.
    pub fn sources(&self) -> Vec<SourceRun> {
        let mut out: Vec<SourceRun> = Vec::new();
        for p in &self.pieces {
            let from = match &p.source {
                Source::Made(m) => RunSource::Made(m.origin.clone()),
                Source::Mix(_) => RunSource::Mix,
                Source::Parent(b) => RunSource::Parent {
                    parent: b.parent,
                    tensor: (!p.converted && b.tensor != self.info.name).then(|| b.tensor.clone()),
                    experts: b.experts.clone().filter(|e| Some(e) != p.experts.as_ref()),
                },
            };
            if let Some(last) = out.last_mut()
                && let (Some(r), Some(e)) = (last.experts.as_mut(), p.experts.as_ref())
                && e.start <= r.end
                && extends(&last.from, &from, r.end - r.start, e.start < r.end)
            {
                if let RunSource::Parent {
                    experts: Some(src), ..
                } = &mut last.from
                    && e.end > r.end
                {
                    src.end += e.end - r.end;
                }
                r.end = r.end.max(e.end);
                continue;
            }
            out.push(SourceRun {
                experts: p.experts.clone(),
                from,
            });
        }
        out
    }
}

/// Whether a piece from `next` continues a run from `last` that covers `run_len` output
/// experts (`overlap`: the piece is another part of the run's last expert).
fn extends(last: &RunSource, next: &RunSource, run_len: u64, overlap: bool) -> bool {
    match (last, next) {
        (
            RunSource::Parent {
                parent: p,
                tensor: t,
                experts: a,
            },
            RunSource::Parent {
                parent: q,
                tensor: u,
                experts: b,
            },
        ) => {
            p == q
                && t == u
                && match (a, b) {
                    (None, None) => true,
                    // The parent's experts continue where the run's end.
                    (Some(a), Some(b)) if overlap => b.start + 1 == a.end,
                    (Some(a), Some(b)) => a.end == b.start && a.end - a.start == run_len,
                    _ => false,
                }
        }
        (RunSource::Made(a), RunSource::Made(b)) => a == b,
        (RunSource::Mix, RunSource::Mix) => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ggml_type::GgmlType;

    fn piece(parent: usize, tensor: &str, src: Option<Range<u64>>, out: Range<u64>) -> Piece {
        Piece {
            source: Source::Parent(ParentBytes {
                parent,
                shard: 0,
                offset: 0,
                tensor: tensor.into(),
                experts: src,
            }),
            len: 8,
            experts: Some(out),
            converted: false,
        }
    }

    fn tensor(pieces: Vec<Piece>) -> PlannedTensor {
        PlannedTensor {
            info: TensorInfo {
                name: "blk.1.ffn_up_exps.weight".into(),
                dims: vec![32, 1, 4],
                ty: GgmlType::F32,
                offset: 0,
                n_bytes: 8 * pieces.len() as u64,
            },
            out_shard: 0,
            pieces,
            conversion: Conversion::Same,
            mix: None,
        }
    }

    const T: &str = "blk.1.ffn_up_exps.weight";

    #[test]
    fn runs_of_a_splice_name_parents_and_output_experts() {
        let t = tensor(vec![
            piece(1, T, Some(0..2), 0..2),
            piece(1, T, Some(2..3), 2..3),
            piece(0, T, Some(3..4), 3..4),
        ]);
        let runs = t.sources();
        assert_eq!(runs.len(), 2);
        assert_eq!(runs[0].experts, Some(0..3));
        assert_eq!(
            runs[0].from,
            RunSource::Parent {
                parent: 1,
                tensor: None,
                experts: None
            }
        );
        assert!(!t.pieces[0].is_relocated(T));
    }

    #[test]
    fn runs_of_an_assembly_say_which_parent_experts() {
        // Output 0-1 <- parent 0 experts 0-1; output 2-3 <- parent 1 experts 0-1.
        let t = tensor(vec![
            piece(0, T, Some(0..1), 0..1),
            piece(0, T, Some(1..2), 1..2),
            piece(1, T, Some(0..1), 2..3),
            piece(1, T, Some(1..2), 3..4),
        ]);
        let runs = t.sources();
        assert_eq!(runs.len(), 2, "{runs:?}");
        assert_eq!(runs[1].experts, Some(2..4));
        assert_eq!(
            runs[1].from,
            RunSource::Parent {
                parent: 1,
                tensor: None,
                experts: Some(0..2)
            }
        );
        assert!(t.pieces[2].is_relocated(T));
        // A reorder does not merge: output 0 <- 1, output 1 <- 0.
        let t = tensor(vec![
            piece(0, T, Some(1..2), 0..1),
            piece(0, T, Some(0..1), 1..2),
        ]);
        assert_eq!(t.sources().len(), 2);
        // Dense parents: each expert is a whole dense tensor.
        let dense = "blk.1.ffn_up.weight";
        let t = tensor(vec![
            piece(0, dense, None, 0..1),
            piece(1, dense, None, 1..2),
        ]);
        let runs = t.sources();
        assert_eq!(runs.len(), 2);
        assert_eq!(
            runs[0].from,
            RunSource::Parent {
                parent: 0,
                tensor: Some(dense.into()),
                experts: None
            }
        );
        assert!(t.pieces[0].is_relocated(T));
    }

    #[test]
    fn made_bytes_are_one_run() {
        let made = Piece {
            source: Source::Made(Made {
                bytes: Arc::from(vec![0u8; 8]),
                origin: "router uniform".into(),
            }),
            len: 8,
            experts: None,
            converted: false,
        };
        assert_eq!(made.parent(), None);
        assert!(!made.is_relocated(T));
        let runs = tensor(vec![made]).sources();
        assert_eq!(runs[0].from, RunSource::Made("router uniform".into()));
    }
}
