//! Errors of the GGUF container layer. Each variant names the file and, where there is one,
//! the key or tensor, the byte offset, and what was expected and found.

use std::path::PathBuf;

use crate::ggml_type::Flavour;

#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The file could not be opened, or is not a regular file.
    #[error(transparent)]
    Input(#[from] crate::input::InputError),

    #[error(
        "{path}: not a GGUF file: expected magic \"GGUF\" (47 47 55 46), found {}",
        show_magic(found)
    )]
    BadMagic { path: PathBuf, found: [u8; 4] },

    #[error("{path}: unsupported GGUF version {found} (this tool reads versions 2 and 3)")]
    UnsupportedVersion { path: PathBuf, found: u32 },

    #[error(
        "{path}: at byte {offset}: {what} declares {count} items, but the {remaining} bytes left in the file can hold at most {max}"
    )]
    CountTooLarge {
        path: PathBuf,
        what: String,
        offset: u64,
        count: u64,
        remaining: u64,
        max: u64,
    },

    #[error(
        "{path}: at byte {offset}: a string of {len} bytes runs past the end of the file ({remaining} bytes left)"
    )]
    StringPastEnd {
        path: PathBuf,
        offset: u64,
        len: u64,
        remaining: u64,
    },

    #[error(
        "{path}: truncated: {what} at byte {offset} needs {needed} bytes, the file has {file_len}"
    )]
    Truncated {
        path: PathBuf,
        what: String,
        offset: u64,
        needed: u64,
        file_len: u64,
    },

    #[error(
        "{path}: the header (key/values and tensor infos) is longer than {max} bytes; a length field is damaged"
    )]
    HeaderTooLarge { path: PathBuf, max: u64 },

    #[error("{path}: at byte {offset}: {what} is not valid UTF-8")]
    NotUtf8 {
        path: PathBuf,
        what: String,
        offset: u64,
    },

    #[error("{path}: at byte {offset}: empty key")]
    EmptyKey { path: PathBuf, offset: u64 },

    #[error("{path}: at byte {offset}: duplicate key '{key}'")]
    DuplicateKey {
        path: PathBuf,
        key: String,
        offset: u64,
    },

    #[error("{path}: key '{key}' at byte {offset}: unknown value type {found} (known: 0 to 12)")]
    UnknownValueType {
        path: PathBuf,
        key: String,
        offset: u64,
        found: u32,
    },

    #[error("{path}: key '{key}' at byte {offset}: arrays nested deeper than {max} levels")]
    NestingTooDeep {
        path: PathBuf,
        key: String,
        offset: u64,
        max: usize,
    },

    #[error("{path}: key '{key}': expected {expected}, found {found}")]
    BadKeyValue {
        path: PathBuf,
        key: String,
        expected: String,
        found: String,
    },

    #[error("{path}: general.alignment must be a power of two, found {found}")]
    BadAlignment { path: PathBuf, found: u64 },

    #[error("{path}: at byte {offset}: duplicate tensor name '{name}'")]
    DuplicateTensor {
        path: PathBuf,
        name: String,
        offset: u64,
    },

    #[error(
        "{path}: at byte {offset}: tensor name '{name}' is {len} bytes; ggml allows at most 63"
    )]
    TensorNameTooLong {
        path: PathBuf,
        name: String,
        offset: u64,
        len: u64,
    },

    #[error("{path}: tensor '{tensor}': {found} dimensions; ggml allows at most 4")]
    TooManyDims {
        path: PathBuf,
        tensor: String,
        found: u32,
    },

    #[error(
        "{path}: tensor '{tensor}': unknown ggml type id {id}: neither llama.cpp nor ik_llama.cpp defines it, and its size cannot be guessed"
    )]
    UnknownType {
        path: PathBuf,
        tensor: String,
        id: u32,
    },

    #[error(
        "{path}: tensor '{tensor}': type id {id} means {mainline} to llama.cpp but {ik} to ik_llama.cpp, and no tensor of the file has a type only ik_llama.cpp defines; say which program the file is for with --flavour mainline or --flavour ik"
    )]
    AmbiguousType {
        path: PathBuf,
        tensor: String,
        id: u32,
        /// What the id means in mainline's table.
        mainline: String,
        /// What the id means in ik_llama.cpp's table.
        ik: String,
    },

    #[error(
        "{path}: tensor '{tensor}': type id {id} is no {} type (the file is read as {} because {basis}); to {other} it is {other_meaning}",
        flavour.program(), flavour.program()
    )]
    NotInFlavour {
        path: PathBuf,
        tensor: String,
        id: u32,
        flavour: Flavour,
        /// Why the file is read with that flavour.
        basis: String,
        /// The other program.
        other: &'static str,
        /// What the id means there.
        other_meaning: String,
    },

    #[error(
        "{path}: tensor '{tensor}': ne[0] = {ne0} is not a multiple of the {ty} block size {block_size}"
    )]
    NotBlockMultiple {
        path: PathBuf,
        tensor: String,
        ty: String,
        ne0: u64,
        block_size: u64,
    },

    #[error("{path}: tensor '{tensor}': size of shape {dims:?} overflows")]
    SizeOverflow {
        path: PathBuf,
        tensor: String,
        dims: Vec<u64>,
    },

    #[error(
        "{path}: tensor '{tensor}': data offset {found}, expected {expected} (tensors must follow each other in info order, each padded to the alignment)"
    )]
    BadOffset {
        path: PathBuf,
        tensor: String,
        expected: u64,
        found: u64,
    },

    #[error(
        "{path}: tensor '{tensor}': data ends at byte {end}, past the end of the file ({file_len} bytes)"
    )]
    DataPastEnd {
        path: PathBuf,
        tensor: String,
        end: u64,
        file_len: u64,
    },

    #[error("{path}: split model shard {expected} of {count} is missing (expected {missing})")]
    ShardMissing {
        path: PathBuf,
        missing: PathBuf,
        expected: u64,
        count: u64,
    },

    #[error("{path}: {what}: expected {expected}, found {found}")]
    ShardMismatch {
        path: PathBuf,
        what: String,
        expected: String,
        found: String,
    },

    #[error(
        "{other} and {first} are shards of different runs (splice.set_id {other_id} and {first_id}); use a set written by one run"
    )]
    MixedSet {
        first: PathBuf,
        first_id: String,
        other: PathBuf,
        other_id: String,
    },

    #[error("tensor '{name}' is in two shards: {first} and {second}")]
    DuplicateTensorAcrossShards {
        name: String,
        first: PathBuf,
        second: PathBuf,
    },
}

impl GgufError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        GgufError::Io {
            path: path.into(),
            source,
        }
    }
}

/// Four magic bytes as text and hex: `"# gg" (23 20 67 67)`; bytes that are not printable
/// ASCII are escaped in the text (`\x00`).
fn show_magic(bytes: &[u8; 4]) -> String {
    let hex: Vec<String> = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("\"{}\" ({})", bytes.escape_ascii(), hex.join(" "))
}
