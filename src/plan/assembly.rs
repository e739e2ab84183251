//! What a plan says of an assembled MoE as a whole, for `--dry-run` and reports: the experts
//! per layer and where each comes from, how many are used per token, and the router's origin.
//! Built by [`assemble`](crate::assemble); a splice plan has none.

/// Where one output expert comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExpertSource {
    /// Index of the parent in [`Plan::parents`](super::Plan::parents).
    pub parent: usize,
    /// The parent's expert; `None`: the parent is dense and its whole FFN is the expert.
    pub expert: Option<u64>,
}

/// The experts of one MoE layer of the output, in output order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerExperts {
    /// The block `N` of `blk.N.*`.
    pub layer: u64,
    /// Output expert e is `experts[e]`.
    pub experts: Vec<ExpertSource>,
}

/// An assembled MoE in a few facts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AssemblyReport {
    /// The output's architecture (`qwen3moe` for qwen3 parents).
    pub architecture: String,
    /// Experts per MoE layer (`expert_count`).
    pub expert_count: u64,
    /// Experts used per token (`expert_used_count`).
    pub experts_used: u64,
    /// Where the router rows come from: `follow their experts` for MoE parents, or what made
    /// them (`random:7`, `uniform`, a file) for dense parents.
    pub router: String,
    /// Every MoE layer's experts.
    pub layers: Vec<LayerExperts>,
}
