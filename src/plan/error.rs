//! Why a plan cannot be made: every error names the rule, tensor or parent at fault, what
//! was expected and found, and how to fix it.

use std::path::PathBuf;

use crate::ggml_type::GgmlType;
use crate::mix::{ImatrixError, MixError};
use crate::recipe::short_pattern;

/// Why a plan cannot be made. Every variant names what the user can change.
///
/// `origin` fields name the rule or option that asked for the thing (`--take #1`,
/// `recipe.toml rule #2`, `metadata.from`), so the message points at the line to fix.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// A rule, the recipe's base or its metadata names a parent that was not given.
    #[error(
        "{origin}: no parent named '{}' (parents given: {}){hint}",
        short_pattern(.name),
        short_pattern(.known)
    )]
    UnknownParent {
        /// What named it.
        origin: String,
        /// The name it used.
        name: String,
        /// The parent names that were given, comma-separated.
        known: String,
        /// For a `--take` rule whose regex holds a `:`, how the rule was split (the
        /// options were probably misplaced, as in `:experts=0-2`); otherwise empty.
        hint: String,
    },
    /// The recipe lists a parent (`parents = [...]`) that the command line did not give.
    #[error(
        "the recipe expects a parent named '{0}'{1}; give it with --parent {0}=PATH",
        short_pattern(.name),
        .given.as_ref().map(|g| format!(" (you gave '{}': names are case-sensitive)", short_pattern(g))).unwrap_or_default()
    )]
    MissingParent {
        /// The parent's name.
        name: String,
        /// A parent given under the same name in another case (`V3` for `v3`), if any.
        given: Option<String>,
    },
    /// No parent at all.
    #[error("no parents given; use --parent NAME=PATH (at least one)")]
    NoParents,
    /// Two parents share a name, so rules could not say which one they mean.
    #[error("parent name '{}' is given twice", short_pattern(.name))]
    DuplicateParent {
        /// The repeated name.
        name: String,
    },
    /// A parent's `general.architecture` differs from the base's: its tensors mean other things.
    #[error(
        "architectures differ: base '{base}' ({base_path}) is '{base_arch}', parent '{parent}' ({path}) is '{arch}'"
    )]
    ArchitectureMismatch {
        /// The base parent's name.
        base: String,
        /// The base's (first) file.
        base_path: PathBuf,
        /// The base's architecture.
        base_arch: String,
        /// The other parent's name.
        parent: String,
        /// Its (first) file.
        path: PathBuf,
        /// Its architecture.
        arch: String,
    },
    /// A parent differs from the base in a key that decides tensor shapes.
    #[error(
        "hyperparameter '{key}' differs: base '{base}' has {base_value}, parent '{parent}' has {value}; tensors of different models cannot be combined"
    )]
    HyperparameterMismatch {
        /// The key, with its architecture prefix.
        key: String,
        /// The base parent's name.
        base: String,
        /// The base's value, as shown in reports (or "no such key").
        base_value: String,
        /// The other parent's name.
        parent: String,
        /// Its value, as shown in reports (or "no such key").
        value: String,
    },
    /// A tensor of the base is to come from a parent that lacks it in any layout.
    #[error("{origin}: tensor '{tensor}' is not in parent '{parent}' ({path}){hint}")]
    TensorMissing {
        /// The rule that chose the parent.
        origin: String,
        /// The tensor's name in the base.
        tensor: String,
        /// The parent's name.
        parent: String,
        /// Its (first) file.
        path: PathBuf,
        /// Extra advice appended to the message; empty when there is none.
        hint: String,
    },
    /// A parent has the tensor, but with another shape than the base's.
    #[error(
        "tensor '{tensor}': shape {shape:?} in parent '{parent}' differs from {base_shape:?} in base '{base}'{hint}"
    )]
    ShapeMismatch {
        /// The tensor's name.
        tensor: String,
        /// The base parent's name.
        base: String,
        /// Its shape in the base.
        base_shape: Vec<u64>,
        /// The other parent's name.
        parent: String,
        /// Its shape there.
        shape: Vec<u64>,
        /// Extra advice appended to the message; empty when there is none.
        hint: String,
    },
    /// Experts of one tensor would come from parents that quantized it to different types;
    /// a tensor has one type, so its experts cannot be mixed.
    #[error(
        "tensor '{tensor}': experts cannot be mixed across types: '{first}' has {first_type}, '{second}' has {second_type}; take the whole tensor from one parent instead (a rule without `experts`)"
    )]
    ExpertTypeMismatch {
        /// The tensor's name.
        tensor: String,
        /// One contributing parent.
        first: String,
        /// Its type for the tensor.
        first_type: String,
        /// Another contributing parent.
        second: String,
        /// Its type, which differs.
        second_type: String,
    },
    /// A rule names experts past the tensor's expert count.
    #[error("{origin}: experts {experts} out of range for '{tensor}', which has {count}")]
    ExpertsOutOfRange {
        /// The rule.
        origin: String,
        /// The tensor it matched.
        tensor: String,
        /// Its `experts` as written.
        experts: String,
        /// Experts the tensor has.
        count: u64,
    },
    /// A rule with `experts` matched a tensor that is not cut by expert.
    #[error(
        "{origin}: a rule with `experts` matched '{tensor}', which is not cut by expert (not a stacked expert tensor ffn_*_exps or a router: all experts share it, or it is one expert of the old per-expert layout); narrow the regex to the stacked tensors, e.g. '_exps\\.', or take the routed experts whole"
    )]
    ExpertsOnPlainTensor {
        /// The rule.
        origin: String,
        /// The tensor it matched.
        tensor: String,
    },
    /// A rule not marked `optional` selects no tensor: most likely a typo in its regex.
    #[error(
        "{origin}: '{}' takes no tensor of the base (no name matches, or earlier rules took them all){note}; fix the regex or mark the rule optional (`optional = true` in a recipe, `:optional` in --take)",
        short_pattern(.pattern)
    )]
    RuleMatchedNothing {
        /// The rule.
        origin: String,
        /// What it selects, as [`RuleReport::pattern`](super::RuleReport::pattern) shows it.
        pattern: String,
        /// Why it may match nothing in this model (a tied output head), or empty.
        note: String,
    },
    /// The recipe's chat template cannot be had (a parent without one, an unreadable file).
    #[error("chat template: {0}")]
    ChatTemplate(String),
    /// The recipe's chat template file could not be read, or is too large or not UTF-8.
    #[error("chat template: {0}")]
    ChatTemplateFile(#[source] crate::input::InputError),
    /// A rule took nothing and its `layers` name blocks the base does not have.
    #[error(
        "{origin}: layers {} are past the model's last block (it has {block_count} blocks, blk.0 to blk.{}); fix `layers`",
        short_pattern(.layers),
        block_count.saturating_sub(1)
    )]
    LayersBeyondModel {
        /// Where the rule was written.
        origin: String,
        /// Its `layers`, as written.
        layers: String,
        /// Blocks the base has.
        block_count: u64,
    },
    /// The child's header would be larger than the reader accepts.
    #[error(
        "{path}: the header (metadata and tensor infos) would be {len} bytes, over the {} MiB ({max} bytes) that gguf-splice reads back; drop large keys with metadata.remove",
        max >> 20
    )]
    HeaderTooLarge {
        /// The output file.
        path: PathBuf,
        /// Its header's size.
        len: u64,
        /// The reader's limit.
        max: u64,
    },
    /// A rule with `experts` matched an expert tensor whose shape cannot be cut into whole
    /// expert slices.
    #[error("{origin}: tensor '{tensor}' cannot be split by expert: {reason}")]
    CannotSplit {
        /// The rule.
        origin: String,
        /// The tensor.
        tensor: String,
        /// What is wrong with its shape.
        reason: String,
    },
    /// The split options would make more shards than `split.count` (a u16) can number.
    #[error("the split options make {count} shards; at most {max} can be named")]
    TooManyShards {
        /// Shards the options would make.
        count: usize,
        /// [`MAX_SHARDS`](super::MAX_SHARDS).
        max: usize,
    },
    /// A size or offset does not fit in 64 bits.
    #[error("tensor '{tensor}': size overflows")]
    Overflow {
        /// The tensor (or `<data section>`).
        tensor: String,
    },
    /// A parent stores the tensor in another converter layout (fused vs separate gate/up
    /// experts) that cannot be turned into the base's.
    #[error(
        "{origin}: tensor '{tensor}' cannot be taken from parent '{parent}' ({path}): {reason}"
    )]
    LayoutNotConvertible {
        /// The rule that chose the parent.
        origin: String,
        /// The tensor, as the base names it.
        tensor: String,
        /// The parent's name.
        parent: String,
        /// Its (first) file.
        path: PathBuf,
        /// Why the layouts do not convert.
        reason: String,
    },
    /// The recipe mixes, and no usable ggml was found (none, or one refused).
    #[error("{origin}: a mix rule needs ggml's quantizers: {source}")]
    MixUnavailable {
        /// The mix rule.
        origin: String,
        /// Why there is no ggml.
        source: crate::ggml_lib::GgmlError,
    },
    /// A mix rule weighs a remote parent. Mixing reads every input row more than once (each
    /// measure, then the mix) and the remote writer streams copies only, so mixes read
    /// local parents only.
    #[error(
        "{origin}: mixes parent '{parent}', which is remote ({url}); mixes read local parents only: download it (or pick these tensors `from` one parent)"
    )]
    RemoteMix {
        /// The mix rule.
        origin: String,
        /// The remote parent's name.
        parent: String,
        /// Its first remote file.
        url: String,
    },
    /// A mix parent stores the tensor in a type ggml cannot dequantize.
    #[error(
        "{origin}: tensor '{tensor}': parent '{parent}' stores it as {ty}, which ggml cannot dequantize; leave '{parent}' out of the mix for this tensor (narrow the rule)"
    )]
    MixInputType {
        /// The mix rule.
        origin: String,
        /// The tensor it matched.
        tensor: String,
        /// The mix parent's name.
        parent: String,
        /// The tensor's type in that parent.
        ty: GgmlType,
    },
    /// The mix's output type cannot be made for this tensor.
    #[error("{origin}: tensor '{tensor}': cannot write {ty}: {reason}")]
    MixOutputType {
        /// The mix rule.
        origin: String,
        /// The tensor it matched.
        tensor: String,
        /// The output type asked for (the rule's `type`, else the base's).
        ty: GgmlType,
        /// Why: ggml cannot quantize to it, or the rows are not a whole number of its blocks.
        reason: String,
    },
    /// The output type needs an importance matrix and none (or no entry) was given.
    #[error(
        "{origin}: tensor '{tensor}': ggml quantizes {ty} only with an importance matrix{found}; add `imatrix = \"FILE\"` (llama-imatrix's output) to the rule, or choose another `type`"
    )]
    MixNeedsImatrix {
        /// The mix rule.
        origin: String,
        /// The tensor it matched.
        tensor: String,
        /// The output type.
        ty: GgmlType,
        /// Why the given one does not serve, if one was given.
        found: String,
    },
    /// An imatrix entry whose size does not fit the tensor.
    #[error(
        "{origin}: tensor '{tensor}': importance matrix {path} has {found} weights for it, expected {expected} (ne0 {ne0} x {matrices} matrices); was it made for another model?"
    )]
    MixImatrixSize {
        /// The mix rule.
        origin: String,
        /// The tensor it matched.
        tensor: String,
        /// The importance matrix file.
        path: PathBuf,
        /// Weights the tensor needs: `ne0` times `matrices`.
        expected: u64,
        /// Weights the file's entry for the tensor has.
        found: u64,
        /// The tensor's row length, in elements.
        ne0: u64,
        /// Matrices in the tensor (experts, for a stacked expert tensor).
        matrices: u64,
    },
    /// Experts of one tensor would be written in two types.
    #[error(
        "tensor '{tensor}': its experts would be written as {first_type} ({first}) and {second_type} ({second}); one tensor has one type: give the mix rule `type = \"{second_type}\"` or select the whole tensor with one rule"
    )]
    MixTypeMismatch {
        /// The tensor's name.
        tensor: String,
        /// Where some of its experts come from: a mix's label or a parent's name.
        first: String,
        /// The type they would be written in.
        first_type: GgmlType,
        /// Where other experts come from.
        second: String,
        /// Their type, which differs.
        second_type: GgmlType,
    },
    /// The importance matrix file cannot be read.
    #[error("{origin}: {source}")]
    Imatrix {
        /// The mix rule that names the file.
        origin: String,
        /// Why the file cannot be read.
        #[source]
        source: ImatrixError,
    },
    /// Measuring distances for a threshold failed.
    #[error("{origin}: measuring distances for the threshold: {source}")]
    Measure {
        /// The mix rule with the threshold.
        origin: String,
        /// Why measuring failed (a parent could not be read, ggml refused its rows).
        #[source]
        source: MixError,
    },
    /// The gate, up and down matrices of one layer's experts would come from different
    /// parents, making experts that are part one model and part another.
    #[error(
        "blk.{layer}: the routed experts would be assembled from different parents ({detail}): every expert would be part one model, part another. Select all of a layer's expert matrices with one rule by role, which covers separate and fused (ffn_gate_up_exps) layouts: `role = \"routed_experts\"` in a recipe, `--take '=PARENT:role=routed_experts'`"
    )]
    ExpertsTornApart {
        /// The block number.
        layer: u64,
        /// Which matrix would come from which parent.
        detail: String,
    },
    /// A rule's regex takes a weight's companion (`.scale`, `.bias`, ...) but not the weight:
    /// the two are one unit, and no program can use a child that has one parent's weight
    /// with another's companion.
    #[error(
        "{origin}: it selects {companion} but not its weight {weight}: a weight and its companions (.scale, .input_scale, .bias) are one unit and go together. Write the rule for the weight ({weight}); its companions follow it"
    )]
    CompanionWithoutWeight {
        /// The rule.
        origin: String,
        /// The companion it selects.
        companion: String,
        /// The weight it does not select.
        weight: String,
    },
    /// A companion cannot be cut into the experts its weight is taken by.
    #[error(
        "{companion} (shape {shape:?}) cannot follow {weight} expert by expert: {reason}; take the weight whole, or fix the file (llama.cpp expects one value per expert)"
    )]
    CompanionCannotFollow {
        /// The companion.
        companion: String,
        /// Its weight.
        weight: String,
        /// The companion's shape.
        shape: Vec<u64>,
        /// Why it cannot be cut like the weight.
        reason: String,
    },
    /// A parent gives a weight whose companion the child would not carry (the child has the
    /// base's tensors, and the base has no such companion, or stores the weight in another
    /// layout): the values the parent's blocks mean would be lost.
    #[error(
        "parent '{parent}' has {companion} beside {weight}, but the child (the tensors of base '{base}') would not carry it, so {weight} from '{parent}' would lose it; make '{parent}' the base (recipe `base = \"{parent}\"`), or take {weight} from a parent without it"
    )]
    CompanionDropped {
        /// The parent.
        parent: String,
        /// The child's weight taken from it.
        weight: String,
        /// The parent's companion the child would lose.
        companion: String,
        /// The base parent.
        base: String,
    },
    /// A mix rule selects a weight whose `.scale` companion cannot be applied to the
    /// parent's values: not F32, or neither one value nor one per matrix (expert).
    #[error(
        "{origin}: {scale} of parent '{parent}' cannot scale the values of {tensor} ({matrices} experts) to mix them: {found}; take {tensor} whole from one parent (a pick rule), or exclude it from the mix rule"
    )]
    MixScaleUnusable {
        /// The mix rule.
        origin: String,
        /// The weight mixed.
        tensor: String,
        /// Its scale companion.
        scale: String,
        /// The parent.
        parent: String,
        /// What is wrong with it (its type and shape, its layout, a value that is not finite).
        found: String,
        /// Matrices (experts) of the weight.
        matrices: u64,
    },
    /// The parents mixed into an expert have different `.input_scale` values for it:
    /// llama.cpp b11434 loads but does not apply `.input_scale`, so no value is right for
    /// the mix.
    #[error(
        "{origin}: {tensor} (expert {expert}) differs between the parents mixed: {values}; llama.cpp b11434 loads .input_scale but does not apply it, so no value is right for the mixed expert; mix only parents with the same input scale, or take the expert from one parent (a pick rule)"
    )]
    MixInputScaleDiffers {
        /// The mix rule.
        origin: String,
        /// The `.input_scale` companion.
        tensor: String,
        /// The expert (0 for a tensor taken whole).
        expert: u64,
        /// Each parent and its value: `a 1, b 0.5`.
        values: String,
    },
    /// The child would hold types only ik_llama.cpp defines and types only mainline
    /// llama.cpp defines, so neither program would load it.
    #[error(
        "no program would load the child: '{ik_tensor}' would be {ik_type}, which only ik_llama.cpp defines, and '{mainline_tensor}' {mainline_type}, which only mainline llama.cpp defines; take one of them from another parent"
    )]
    FlavoursMixed {
        /// A tensor of an ik-only type.
        ik_tensor: String,
        /// Its type.
        ik_type: String,
        /// A tensor of a mainline-only type.
        mainline_tensor: String,
        /// Its type.
        mainline_type: String,
    },
    /// The child would have more experts per layer than any program that would load it
    /// accepts (`LLAMA_MAX_EXPERTS`): it would abort at load.
    #[error(
        "the child would have {count} experts per layer, but {program} loads at most {limit} (its LLAMA_MAX_EXPERTS): keep fewer experts (--experts, --keep, --keep-top), or pass --force-expert-count if your build allows more"
    )]
    TooManyExperts {
        /// Experts per layer.
        count: u64,
        /// The highest limit of the programs that would load the child.
        limit: u64,
        /// The program with that limit.
        program: &'static str,
    },
    /// A child tensor's name would be too long for ggml (`GGML_MAX_NAME`): no program would
    /// read the file.
    #[error(
        "tensor '{tensor}' would have a name of {len} bytes; ggml reads names of at most {max} bytes (GGML_MAX_NAME), so no program would load the child"
    )]
    NameTooLong {
        /// The tensor.
        tensor: String,
        /// Its name's length in bytes.
        len: usize,
        /// The longest name ggml reads.
        max: u64,
    },
}
