//! The `gguf-splice` binary: a thin command line over the `gguf_splice` library. `cli`
//! parses arguments, calls the library, prints, and maps results to exit codes.

// Errors carry the file, tensor, expected and found values; built once per failed run.
#![allow(clippy::result_large_err)]

mod cli;

fn main() {
    std::process::exit(cli::main());
}
