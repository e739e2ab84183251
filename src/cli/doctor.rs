//! `doctor`: which ggml this machine gives mixing, `diff --values` and value maps, and
//! whether its type table agrees with ours.

use super::{CliError, emit, exit};
use gguf_splice::ggml_lib::{self, GgmlError};
use gguf_splice::ggml_type::GgmlType;

/// Print the ggml found (where, how, version, commit) and check every mainline type of our
/// table against it. No ggml, or a refused one: the one-line error, exit 5.
pub(crate) fn doctor() -> Result<i32, CliError> {
    let g = ggml_lib::library()?;
    let refused: Vec<GgmlError> = GgmlType::all().filter_map(|t| g.check(t).err()).collect();
    let mut out = format!(
        "ggml      {}\nfound by  {}\nversion   {}\ncommit    {}\nrecorded  {} = \"{}\"\n",
        g.path().display(),
        g.found(),
        g.version().unwrap_or("unknown (no ggml_version)"),
        g.commit().unwrap_or("unknown (no ggml_commit)"),
        ggml_lib::RECORD_KEY,
        g.record(),
    );
    let n = GgmlType::all().count();
    if refused.is_empty() {
        out.push_str(&format!(
            "types     all {n} agree with gguf-splice's table (block size, bytes, name)\n"
        ));
        emit(&out)?;
        return Ok(exit::OK);
    }
    out.push_str(&format!(
        "types     {} of {n} refused; mixing and value comparisons of them are refused:\n",
        refused.len()
    ));
    for e in &refused {
        out.push_str(&format!("  {e}\n"));
    }
    emit(&out)?;
    Ok(exit::UNSUPPORTED)
}
