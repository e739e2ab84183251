//! Finding a ggml on this machine and loading it: which file, found how, and the C functions
//! bound from it. Nothing here calls a quantizer; [`Ggml::check`](super::Ggml::check)
//! checks the library's type table before any type is used.
//!
//! The search, first hit wins (an explicit choice that fails is an error, not a fall-through):
//! 1. `--ggml PATH` ([`super::set_path`]) or `GGUF_SPLICE_GGML=PATH`: a `libggml-base`
//!    shared library, or a directory holding one (itself, or its `lib`, `lib64`, `bin` or
//!    `ggml/src`: a llama.cpp build or install tree, or an unpacked `libggml-python`);
//! 2. the directory of `llama-quantize`, `llama-server` or `llama-cli` found on `PATH` (and
//!    of the file it links to), and its `../lib`: where a llama.cpp build or `cmake
//!    --install` puts `libggml-base.so`;
//! 3. the system's library search path (`dlopen("libggml-base.so")`: Homebrew and
//!    distribution packages of llama.cpp);
//! 4. PyPI's `libggml-python`, found by asking `python3` where its `libggml` package is
//!    (it ships `libggml/lib64/libggml-base.so`).

use std::ffi::{CStr, c_char, c_int, c_void};
use std::path::{Path, PathBuf};

use super::GgmlError;

/// Environment variable naming the library (or a directory holding it).
pub const ENV: &str = "GGUF_SPLICE_GGML";

/// The library's file name on this platform.
pub const LIB_NAME: &str = if cfg!(target_os = "macos") {
    "libggml-base.dylib"
} else {
    "libggml-base.so"
};

/// The llama.cpp tools whose directory (and its `../lib`) holds the ggml they run with.
const TOOLS: &[&str] = &["llama-quantize", "llama-server", "llama-cli"];

/// How a ggml was found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Found {
    /// `--ggml PATH`.
    Flag,
    /// `GGUF_SPLICE_GGML`.
    Env,
    /// Beside this llama.cpp tool found on `PATH`.
    Tool(PathBuf),
    /// The system's library search path.
    System,
    /// PyPI's `libggml-python`, located by `python3`.
    Python,
}

impl std::fmt::Display for Found {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Found::Flag => write!(f, "--ggml"),
            Found::Env => write!(f, "{ENV}"),
            Found::Tool(t) => write!(f, "beside {} on PATH", t.display()),
            Found::System => write!(f, "the system library path"),
            Found::Python => write!(f, "python3's libggml-python"),
        }
    }
}

pub(super) type ToFloat = unsafe extern "C" fn(x: *const c_void, y: *mut f32, k: i64);
type FromFloat = unsafe extern "C" fn(x: *const f32, y: *mut c_void, k: i64);

/// `struct ggml_type_traits`, field for field, as declared by ggml.h of llama.cpp b11434 and
/// of ggml 0.20.2 (libggml-python): the two agree. [`super::check`] verifies the layout of
/// every entry it reads against functions that do not depend on it.
#[repr(C)]
pub(super) struct TypeTraits {
    pub(super) type_name: *const c_char,
    pub(super) blck_size: i64,
    pub(super) blck_size_interleave: i64,
    pub(super) type_size: usize,
    pub(super) is_quantized: bool,
    pub(super) to_float: Option<ToFloat>,
    pub(super) from_float_ref: Option<FromFloat>,
}

/// The functions bound from the library. Signatures copy ggml.h: `enum ggml_type` is passed
/// as a C int, `bool` is C's `_Bool`.
pub(super) struct Fns {
    pub(super) get_type_traits: unsafe extern "C" fn(c_int) -> *const TypeTraits,
    pub(super) type_name: unsafe extern "C" fn(c_int) -> *const c_char,
    pub(super) blck_size: unsafe extern "C" fn(c_int) -> i64,
    pub(super) type_size: unsafe extern "C" fn(c_int) -> usize,
    pub(super) is_quantized: unsafe extern "C" fn(c_int) -> bool,
    pub(super) quantize_requires_imatrix: unsafe extern "C" fn(c_int) -> bool,
    pub(super) quantize_chunk:
        unsafe extern "C" fn(c_int, *const f32, *mut c_void, i64, i64, i64, *const f32) -> usize,
    pub(super) validate_row_data: unsafe extern "C" fn(c_int, *const c_void, usize) -> bool,
}

/// A loaded library and what is known of it.
pub(super) struct Loaded {
    /// Kept so the functions stay mapped for the life of the process.
    _lib: libloading::Library,
    pub(super) path: PathBuf,
    pub(super) found: Found,
    pub(super) version: Option<String>,
    pub(super) commit: Option<String>,
    pub(super) fns: Fns,
}

/// The library file in `path`: the file itself, or [`LIB_NAME`] in the directory or one of
/// its usual subdirectories.
fn in_dir_or_file(path: &Path) -> Option<PathBuf> {
    if !path.is_dir() {
        return Some(path.to_path_buf());
    }
    [
        "",
        "lib",
        "lib64",
        "bin",
        "ggml/src",
        "libggml/lib64",
        "libggml/lib",
    ]
    .iter()
    .map(|sub| path.join(sub).join(LIB_NAME))
    .find(|p| p.is_file())
}

/// Candidate files beside the llama.cpp tools on `PATH`, with the tool each was found by.
fn beside_tools() -> Vec<(PathBuf, PathBuf)> {
    let Some(path) = std::env::var_os("PATH") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for dir in std::env::split_paths(&path) {
        for tool in TOOLS {
            let t = dir.join(tool);
            if !t.is_file() {
                continue;
            }
            // The tool's own directory, and the one of the file it links to (Homebrew's
            // bin/ holds links into the Cellar).
            let mut dirs = vec![dir.clone()];
            if let Some(real) = t
                .canonicalize()
                .ok()
                .and_then(|r| r.parent().map(Path::to_path_buf))
                && real != dir
            {
                dirs.push(real);
            }
            for d in dirs {
                for lib in [d.join(LIB_NAME), d.join("../lib").join(LIB_NAME)] {
                    if lib.is_file() && !out.iter().any(|(l, _)| *l == lib) {
                        out.push((lib, t.clone()));
                    }
                }
            }
        }
    }
    out
}

/// Where `python3` has PyPI's `libggml-python` (its `libggml` package), if anywhere.
fn python_candidates() -> Vec<PathBuf> {
    let script = "import importlib.util as u\ns = u.find_spec('libggml')\nfor p in (s.submodule_search_locations or []) if s else []: print(p)";
    let Ok(out) = std::process::Command::new("python3")
        .args(["-c", script])
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
    else {
        return Vec::new();
    };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .flat_map(|dir| ["lib64", "lib"].map(|sub| Path::new(dir.trim()).join(sub).join(LIB_NAME)))
        .filter(|p| p.is_file())
        .collect()
}

/// Find and load a ggml, `explicit` (from `--ggml`) first.
pub(super) fn find(explicit: Option<&Path>) -> Result<Loaded, GgmlError> {
    let chosen = match explicit {
        Some(p) => Some((p.to_path_buf(), Found::Flag)),
        None => std::env::var_os(ENV)
            .filter(|v| !v.is_empty())
            .map(|v| (PathBuf::from(v), Found::Env)),
    };
    if let Some((path, found)) = chosen {
        let file = in_dir_or_file(&path).ok_or_else(|| GgmlError::NotLoaded {
            library: path.clone(),
            reason: format!("a directory without {LIB_NAME} (nor in its lib, lib64, bin)"),
        })?;
        return open(&file, found);
    }
    // Beside the tools: a library that fails to load there is reported, not skipped: it is
    // the one the user's llama.cpp runs with.
    if let Some((lib, tool)) = beside_tools().into_iter().next() {
        return open(&lib, Found::Tool(tool));
    }
    if let Ok(l) = open(Path::new(LIB_NAME), Found::System) {
        return Ok(l);
    }
    if let Some(lib) = python_candidates().into_iter().next() {
        return open(&lib, Found::Python);
    }
    Err(GgmlError::NotFound)
}

/// Load `path` and bind its functions.
pub(super) fn open(path: &Path, found: Found) -> Result<Loaded, GgmlError> {
    let not_loaded = |reason: String| GgmlError::NotLoaded {
        library: path.to_path_buf(),
        reason,
    };
    // A path (not a bare name the loader searches for) must be a regular file: dlopen of a
    // FIFO blocks until a writer comes, a device never ends.
    if path.parent().is_some_and(|d| !d.as_os_str().is_empty()) {
        match std::fs::metadata(path) {
            Ok(m) if !m.is_file() => {
                return Err(not_loaded("not a regular file".into()));
            }
            _ => {}
        }
    }
    // SAFETY: loading a library runs its initialisers. A libggml-base's are ggml's own
    // (none that touch our state); the user named this file or installed it where
    // llama.cpp's own tools load it from.
    let lib = unsafe { libloading::Library::new(path) }.map_err(|e| not_loaded(e.to_string()))?;
    // The file the loader actually mapped, for messages and `doctor`.
    let path = loaded_path(&lib).unwrap_or_else(|| path.to_path_buf());
    macro_rules! sym {
        ($name:literal) => {{
            // SAFETY: the symbol's type is the one ggml.h declares for it (see Fns); a
            // library that exports these names with other types is not ggml, and its type
            // table then fails the checks of `check` before any other function is called.
            let s = unsafe { lib.get(concat!($name, "\0").as_bytes()) }.map_err(|_| {
                GgmlError::NotGgml {
                    library: path.clone(),
                    symbol: $name,
                }
            })?;
            *s
        }};
    }
    let fns = Fns {
        get_type_traits: sym!("ggml_get_type_traits"),
        type_name: sym!("ggml_type_name"),
        blck_size: sym!("ggml_blck_size"),
        type_size: sym!("ggml_type_size"),
        is_quantized: sym!("ggml_is_quantized"),
        quantize_requires_imatrix: sym!("ggml_quantize_requires_imatrix"),
        quantize_chunk: sym!("ggml_quantize_chunk"),
        validate_row_data: sym!("ggml_validate_row_data"),
    };
    let text = |name: &[u8]| -> Option<String> {
        // SAFETY: ggml_version and ggml_commit take nothing and return a pointer to a
        // static NUL-terminated string (ggml.c); older ggml lacks them.
        let f: libloading::Symbol<unsafe extern "C" fn() -> *const c_char> =
            unsafe { lib.get(name) }.ok()?;
        let p = unsafe { f() };
        // SAFETY: non-null, static and NUL-terminated (above).
        (!p.is_null()).then(|| unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
    };
    let version = text(b"ggml_version\0");
    let commit = text(b"ggml_commit\0");
    Ok(Loaded {
        _lib: lib,
        path,
        found,
        version,
        commit,
        fns,
    })
}

/// The file the dynamic loader mapped for `lib` (a bare name resolves to a path).
fn loaded_path(lib: &libloading::Library) -> Option<PathBuf> {
    // SAFETY: a symbol every ggml exports; only its address is used.
    let f: libloading::Symbol<unsafe extern "C" fn()> =
        unsafe { lib.get(b"ggml_get_type_traits\0") }.ok()?;
    let addr = *f as *const c_void;
    library_of(addr).map(|(file, _)| file)
}

/// The file holding the code or data at `addr`, and where that file is mapped.
pub(super) fn library_of(addr: *const c_void) -> Option<(PathBuf, usize)> {
    let mut info: libc::Dl_info = unsafe { std::mem::zeroed() };
    // SAFETY: dladdr only reads the loader's tables and fills `info`; it accepts any address.
    if unsafe { libc::dladdr(addr, &mut info) } == 0 || info.dli_fname.is_null() {
        return None;
    }
    // SAFETY: dli_fname is a NUL-terminated string owned by the loader, valid while the
    // library stays loaded (we only copy it).
    let name = unsafe { CStr::from_ptr(info.dli_fname) };
    use std::os::unix::ffi::OsStrExt;
    Some((
        PathBuf::from(std::ffi::OsStr::from_bytes(name.to_bytes())),
        info.dli_fbase as usize,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_without_the_library_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let e = match find(Some(dir.path())) {
            Err(e) => e,
            Ok(_) => panic!("an empty directory loaded"),
        };
        assert!(
            matches!(e, GgmlError::NotLoaded { ref library, .. } if library == dir.path()),
            "{e}"
        );
    }

    #[test]
    fn a_library_that_is_not_ggml_is_refused_naming_a_missing_function() {
        // libc is loaded in every process and exports none of ggml's functions.
        let libc = [
            "/lib/x86_64-linux-gnu/libc.so.6",
            "/usr/lib/libc.so.6",
            "/lib64/libc.so.6",
        ]
        .into_iter()
        .map(Path::new)
        .find(|p| p.is_file());
        let Some(libc) = libc else { return };
        let e = open(libc, Found::Flag).err().expect("libc is not ggml");
        assert!(
            matches!(
                e,
                GgmlError::NotGgml {
                    symbol: "ggml_get_type_traits",
                    ..
                }
            ),
            "{e}"
        );
    }

    #[test]
    fn a_file_that_is_no_library_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join(LIB_NAME);
        std::fs::write(&f, b"not an ELF file").unwrap();
        let e = find(Some(dir.path())).err().expect("a text file loaded");
        assert!(matches!(e, GgmlError::NotLoaded { .. }), "{e}");
    }
}
