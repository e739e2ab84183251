//! `gguf-splice assemble`: the options that say which experts an MoE has and how it is routed
//! (shared with `verify --assembled`), parsed into the library's [`AssembleOptions`].

use std::path::PathBuf;

use clap::Args;

use gguf_splice::assemble::spec::{ExpertList, RouterSpec};
use gguf_splice::assemble::{self, AssembleError, AssembleOptions, Selection};

use super::CliError;
use super::args::{FlavourArg, OutputArgs};
use super::open_parent_specs;
use super::splice::write_plan;

#[derive(Args)]
pub(super) struct AssembleArgs {
    /// NAME=PATH: a parent and the name the options call it by; PATH may be any shard.
    #[arg(long = "parent", value_name = "NAME=PATH", required = true)]
    parents: Vec<String>,
    #[command(flatten)]
    spec: AssemblySpec,
    #[command(flatten)]
    out: OutputArgs,
    #[command(flatten)]
    flavour: FlavourArg,
}

/// Which experts, from where, and how they are routed.
#[derive(Args)]
pub(super) struct AssemblySpec {
    /// The parent whose embeddings, attention, norms, shared experts, output and metadata the
    /// MoE has (default: the first --parent).
    #[arg(long, value_name = "NAME")]
    base: Option<String>,
    /// The output's experts, in order: 'a:0-63,b:0-63' (union), 'a:4-7,a:0-3' (reorder),
    /// 'a,b,b' (all of a parent's experts; a dense parent has one). Default: every expert of
    /// every parent, parents in the order given.
    #[arg(long, value_name = "LIST", conflicts_with_all = ["keep", "keep_top"])]
    experts: Option<String>,
    /// Prune one MoE parent to these experts: 'a:0-127'.
    #[arg(long, value_name = "LIST", conflicts_with = "keep_top")]
    keep: Option<String>,
    /// Prune one MoE parent to the N most used experts of each layer, by the per-expert
    /// counts of --imatrix (ties to the lower expert; kept experts keep their order).
    #[arg(long, value_name = "N", requires = "imatrix", value_parser = clap::value_parser!(u64).range(1..))]
    keep_top: Option<u64>,
    /// A GGUF importance matrix made by llama-imatrix on the parent, for --keep-top.
    #[arg(long, value_name = "FILE", requires = "keep_top")]
    imatrix: Option<PathBuf>,
    /// For dense parents, the router rows: random:SEED (seeded, reproducible), uniform (all
    /// experts score the same; the default), or a .npy/.safetensors file of gate vectors
    /// (per layer x per expert; see the README).
    #[arg(long, value_name = "random:SEED|uniform|FILE")]
    router: Option<String>,
    /// Experts used per token (expert_used_count). Default: the base's for MoE parents, 2
    /// (or fewer, if fewer experts) for dense ones.
    #[arg(long, value_name = "K", value_parser = clap::value_parser!(u64).range(1..))]
    experts_used: Option<u64>,
}

impl AssemblySpec {
    /// The library's options.
    pub(super) fn options(&self) -> Result<AssembleOptions, CliError> {
        let list = |option: &'static str, text: &str| {
            ExpertList::parse(text).map_err(|reason| AssembleError::BadOption {
                option,
                text: text.to_string(),
                reason,
            })
        };
        let selection = match (&self.experts, &self.keep, self.keep_top, &self.imatrix) {
            (Some(e), _, _, _) => Selection::List(list("--experts", e)?),
            (_, Some(k), _, _) => Selection::Keep(list("--keep", k)?),
            (_, _, Some(n), Some(imatrix)) => Selection::Top {
                n,
                imatrix: imatrix.clone(),
            },
            _ => Selection::All,
        };
        let router = self
            .router
            .as_deref()
            .map(|r| {
                RouterSpec::parse(r).map_err(|reason| AssembleError::BadOption {
                    option: "--router",
                    text: r.to_string(),
                    reason,
                })
            })
            .transpose()?;
        Ok(AssembleOptions {
            base: self.base.clone(),
            selection,
            router,
            experts_used: self.experts_used,
        })
    }

    /// The first assembly option given, if any (for `verify` without `--assembled`).
    pub(super) fn given(&self) -> Option<&'static str> {
        [
            (self.base.is_some(), "--base"),
            (self.experts.is_some(), "--experts"),
            (self.keep.is_some(), "--keep"),
            (self.keep_top.is_some(), "--keep-top"),
            (self.router.is_some(), "--router"),
            (self.experts_used.is_some(), "--experts-used"),
        ]
        .into_iter()
        .find(|(given, _)| *given)
        .map(|(_, name)| name)
    }
}

/// Plan the MoE, then print or write it.
pub(super) fn run(args: AssembleArgs) -> Result<i32, CliError> {
    let parents = open_parent_specs(&args.parents, args.flavour)?;
    let options = args.spec.options()?;
    let mut plan = assemble::plan(&parents, &options, &args.out.output, args.out.split())?;
    write_plan(&mut plan, &args.out)
}
