//! The `gguf-splice` binary: everything lives in the library; see `cli`.

fn main() {
    std::process::exit(gguf_splice::cli::main());
}
