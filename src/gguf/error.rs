//! Errors of the GGUF container layer. Each variant names the file and, where there is one,
//! the key or tensor, the byte offset, and what was expected and found.

use std::path::PathBuf;

use crate::ggml_type::Flavour;

/// Why a GGUF file or shard set cannot be read. Every variant names the file; `path` is the
/// URL for a remote file.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    /// Reading the file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file being read.
        path: PathBuf,
        /// The system's error.
        #[source]
        source: std::io::Error,
    },

    /// The file could not be opened, or is not a regular file.
    #[error(transparent)]
    Input(#[from] crate::input::InputError),

    /// The file does not start with the four bytes `GGUF`.
    #[error(
        "{path}: not a GGUF file: expected magic \"GGUF\" (47 47 55 46), found {}",
        show_magic(found)
    )]
    BadMagic {
        /// The file being read.
        path: PathBuf,
        /// Its first four bytes.
        found: [u8; 4],
    },

    /// The header's version is not 2 or 3.
    #[error("{path}: unsupported GGUF version {found} (this tool reads versions 2 and 3)")]
    UnsupportedVersion {
        /// The file being read.
        path: PathBuf,
        /// The version it declares.
        found: u32,
    },

    /// A declared count (of keys, tensors or array items) is more than the rest of the file
    /// could hold, even at the smallest size per item.
    #[error(
        "{path}: at byte {offset}: {what} declares {count} items, but the {remaining} bytes left in the file can hold at most {max}"
    )]
    CountTooLarge {
        /// The file being read.
        path: PathBuf,
        /// What the count counts (`the tensor count`, `array of 'KEY'`).
        what: String,
        /// Byte offset in the file from which `remaining` is counted.
        offset: u64,
        /// The count as declared.
        count: u64,
        /// Bytes of the file from `offset` to its end.
        remaining: u64,
        /// The most items of the smallest size that fit in `remaining` bytes.
        max: u64,
    },

    /// A string's declared length runs past the end of the file.
    #[error(
        "{path}: at byte {offset}: a string of {len} bytes runs past the end of the file ({remaining} bytes left)"
    )]
    StringPastEnd {
        /// The file being read.
        path: PathBuf,
        /// Byte offset in the file of the string's length field.
        offset: u64,
        /// The declared length in bytes.
        len: u64,
        /// Bytes of the file left after the length field.
        remaining: u64,
    },

    /// The file ends before an item of the header does (or, for a header parsed from memory,
    /// the bytes given end before the header does).
    #[error(
        "{path}: truncated: {what} at byte {offset} needs {needed} bytes, the file has {file_len}"
    )]
    Truncated {
        /// The file being read.
        path: PathBuf,
        /// The item being read (`tensor count`, `value of 'KEY'`, `header`).
        what: String,
        /// Byte offset in the file where the item starts.
        offset: u64,
        /// Bytes the item needs from `offset`.
        needed: u64,
        /// The file's length in bytes (for a header parsed from memory, the bytes given).
        file_len: u64,
    },

    /// The header did not end within [`MAX_HEADER_BYTES`](super::read::MAX_HEADER_BYTES):
    /// a length field is damaged or hostile.
    #[error(
        "{path}: the header (key/values and tensor infos) is longer than {max} bytes; a length field is damaged"
    )]
    HeaderTooLarge {
        /// The file being read.
        path: PathBuf,
        /// The limit in bytes.
        max: u64,
    },

    /// A key or a tensor name is not valid UTF-8.
    #[error("{path}: at byte {offset}: {what} is not valid UTF-8")]
    NotUtf8 {
        /// The file being read.
        path: PathBuf,
        /// Which it is: `key` or `tensor name`.
        what: String,
        /// Byte offset in the file of the string's length field.
        offset: u64,
    },

    /// A key/value pair has an empty key.
    #[error("{path}: at byte {offset}: empty key")]
    EmptyKey {
        /// The file being read.
        path: PathBuf,
        /// Byte offset in the file where the key/value pair starts.
        offset: u64,
    },

    /// Two key/value pairs have the same key.
    #[error("{path}: at byte {offset}: duplicate key '{key}'")]
    DuplicateKey {
        /// The file being read.
        path: PathBuf,
        /// The repeated key.
        key: String,
        /// Byte offset in the file where its second pair starts.
        offset: u64,
    },

    /// A value's (or array element's) type id is not one of GGUF's 13 value types.
    #[error("{path}: key '{key}' at byte {offset}: unknown value type {found} (known: 0 to 12)")]
    UnknownValueType {
        /// The file being read.
        path: PathBuf,
        /// The key whose value it is.
        key: String,
        /// Byte offset in the file of the value's type id (for an array's element type, where
        /// the array starts).
        offset: u64,
        /// The type id as stored.
        found: u32,
    },

    /// A value holds arrays of arrays nested deeper than
    /// [`MAX_ARRAY_DEPTH`](super::read::MAX_ARRAY_DEPTH).
    #[error("{path}: key '{key}' at byte {offset}: arrays nested deeper than {max} levels")]
    NestingTooDeep {
        /// The file being read.
        path: PathBuf,
        /// The key whose value it is.
        key: String,
        /// Byte offset in the file of the array that is one level too deep.
        offset: u64,
        /// The deepest nesting allowed.
        max: usize,
    },

    /// A key that the reader interprets (`general.alignment`, the `split.*` keys) has a
    /// value of the wrong type.
    #[error("{path}: key '{key}': expected {expected}, found {found}")]
    BadKeyValue {
        /// The file being read.
        path: PathBuf,
        /// The key.
        key: String,
        /// What the value must be (`type u32`, `a non-negative integer`).
        expected: String,
        /// The value's type, or a summary of the value.
        found: String,
    },

    /// `general.alignment` is not a power of two (zero included).
    #[error("{path}: general.alignment must be a power of two, found {found}")]
    BadAlignment {
        /// The file being read.
        path: PathBuf,
        /// The alignment the file declares.
        found: u64,
    },

    /// Two tensor infos of one file have the same name.
    #[error("{path}: at byte {offset}: duplicate tensor name '{name}'")]
    DuplicateTensor {
        /// The file being read.
        path: PathBuf,
        /// The repeated name.
        name: String,
        /// Byte offset in the file where the second tensor info starts.
        offset: u64,
    },

    /// A tensor name is 64 bytes or longer, which ggml cannot hold.
    #[error(
        "{path}: at byte {offset}: tensor name '{name}' is {len} bytes; ggml allows at most 63"
    )]
    TensorNameTooLong {
        /// The file being read.
        path: PathBuf,
        /// The name.
        name: String,
        /// Byte offset in the file where the tensor info starts.
        offset: u64,
        /// The name's length in bytes.
        len: u64,
    },

    /// A tensor declares more than 4 dimensions.
    #[error("{path}: tensor '{tensor}': {found} dimensions; ggml allows at most 4")]
    TooManyDims {
        /// The file being read.
        path: PathBuf,
        /// The tensor's name.
        tensor: String,
        /// The number of dimensions it declares.
        found: u32,
    },

    /// A tensor's type id is defined by neither llama.cpp nor ik_llama.cpp.
    #[error(
        "{path}: tensor '{tensor}': unknown ggml type id {id}: neither llama.cpp nor ik_llama.cpp defines it, and its size cannot be guessed"
    )]
    UnknownType {
        /// The file being read.
        path: PathBuf,
        /// The tensor's name.
        tensor: String,
        /// The type id as stored.
        id: u32,
    },

    /// A tensor's type id means different types to llama.cpp and ik_llama.cpp, and no
    /// other tensor shows which program the file is for.
    #[error(
        "{path}: tensor '{tensor}': type id {id} means {mainline} to llama.cpp but {ik} to ik_llama.cpp, and no tensor of the file has a type only one of them defines; say which program the file is for with --flavour mainline or --flavour ik"
    )]
    AmbiguousType {
        /// The file being read.
        path: PathBuf,
        /// The first tensor with such an id.
        tensor: String,
        /// The type id as stored.
        id: u32,
        /// What the id means in mainline's table.
        mainline: String,
        /// What the id means in ik_llama.cpp's table.
        ik: String,
    },

    /// A tensor's type id is not in the type table the file is read with, though the other
    /// program defines it.
    #[error(
        "{path}: tensor '{tensor}': type id {id} is no {} type (the file is read as {} because {basis}); to {other} it is {other_meaning}",
        flavour.program(), flavour.program()
    )]
    NotInFlavour {
        /// The file being read.
        path: PathBuf,
        /// The tensor's name.
        tensor: String,
        /// The type id as stored.
        id: u32,
        /// The type table the file is read with.
        flavour: Flavour,
        /// Why the file is read with that flavour.
        basis: String,
        /// The other program.
        other: &'static str,
        /// What the id means there.
        other_meaning: String,
    },

    /// A tensor's first dimension is not a whole number of its type's blocks.
    #[error(
        "{path}: tensor '{tensor}': ne[0] = {ne0} is not a multiple of the {ty} block size {block_size}"
    )]
    NotBlockMultiple {
        /// The file being read.
        path: PathBuf,
        /// The tensor's name.
        tensor: String,
        /// The tensor's type name.
        ty: String,
        /// Its first (innermost) dimension, in elements.
        ne0: u64,
        /// Elements per block of the type.
        block_size: u64,
    },

    /// A tensor's element count or byte size is past what ggml's signed 64-bit sizes hold,
    /// or the next offset or the data section's start overflows.
    #[error("{path}: tensor '{tensor}': size of shape {dims:?} overflows")]
    SizeOverflow {
        /// The file being read.
        path: PathBuf,
        /// The tensor's name, or `<header>` when the data section's start overflows.
        tensor: String,
        /// The tensor's shape (for `<header>`, the header's length in bytes).
        dims: Vec<u64>,
    },

    /// A tensor's data does not start where the previous one's ends, padded to the
    /// alignment (the first at 0).
    #[error(
        "{path}: tensor '{tensor}': data offset {found}, expected {expected} (tensors must follow each other in info order, each padded to the alignment)"
    )]
    BadOffset {
        /// The file being read.
        path: PathBuf,
        /// The tensor's name.
        tensor: String,
        /// The offset it must have, relative to the data section.
        expected: u64,
        /// The offset it declares, relative to the data section.
        found: u64,
    },

    /// A tensor's data ends past the end of the file.
    #[error(
        "{path}: tensor '{tensor}': data ends at byte {end}, past the end of the file ({file_len} bytes)"
    )]
    DataPastEnd {
        /// The file being read.
        path: PathBuf,
        /// The tensor's name.
        tensor: String,
        /// Byte offset in the file just past its data (`u64::MAX` if that overflows).
        end: u64,
        /// The file's length in bytes.
        file_len: u64,
    },

    /// A shard of a split model is not found under the name llama.cpp gives it.
    #[error("{path}: split model shard {expected} of {count} is missing (expected {missing})")]
    ShardMissing {
        /// The shard the model was opened with.
        path: PathBuf,
        /// The file name the missing shard should have.
        missing: PathBuf,
        /// Its number (1-based).
        expected: u64,
        /// Shards in the set.
        count: u64,
    },

    /// A shard's file name or `split.*` keys disagree with the rest of the set.
    #[error("{path}: {what}: expected {expected}, found {found}")]
    ShardMismatch {
        /// The shard at fault.
        path: PathBuf,
        /// What disagrees: a `split.*` key, or the file name.
        what: String,
        /// What the set requires.
        expected: String,
        /// What the shard has (`no such key` for a missing key).
        found: String,
    },

    /// Two shards of a set carry different `splice.set_id`s: they were written by two runs.
    #[error(
        "{other} and {first} are shards of different runs (splice.set_id {other_id} and {first_id}); use a set written by one run"
    )]
    MixedSet {
        /// The first shard that carries a set id.
        first: PathBuf,
        /// Its set id, summarized.
        first_id: String,
        /// A later shard with another set id.
        other: PathBuf,
        /// That set id, summarized.
        other_id: String,
    },

    /// Two shards of a set hold a tensor of the same name.
    #[error("tensor '{name}' is in two shards: {first} and {second}")]
    DuplicateTensorAcrossShards {
        /// The tensor's name.
        name: String,
        /// The earlier shard that holds it.
        first: PathBuf,
        /// The later shard that holds it again.
        second: PathBuf,
    },

    /// A remote file could not be read (the source layer's error names the URL and range).
    #[error(transparent)]
    Remote(#[from] crate::source::SourceError),
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
