//! `gguf-splice assemble`: plan the MoE its options describe (see [`AssembleArgs`]), then
//! print or write it like a splice.

use gguf_splice::assemble;

use super::CliError;
use super::args::AssembleArgs;
use super::open_parent_specs;
use super::splice::write_plan;

/// Plan the MoE, then print or write it.
pub(super) fn run(args: AssembleArgs) -> Result<i32, CliError> {
    let parents = open_parent_specs(&args.parents, args.flavour)?;
    let options = args.spec.options()?;
    let mut plan = assemble::plan(&parents, &options, &args.out.output, args.out.split())?;
    write_plan(&mut plan, &args.out)
}
