//! Parsing and validating one GGUF file's header (key/values and tensor infos).
//!
//! The parser works on a byte buffer holding a prefix of the file. Every declared count and
//! length is checked against the bytes the *file* has left before anything is allocated, so a
//! hostile header cannot make us allocate more than the file's size justifies. When the prefix
//! is too short but the file is long enough, the parse stops with `NeedMore` and the caller
//! reads a longer prefix; tensor data is never read. The parser's passes (preamble,
//! key/values, alignment, tensor infos, types, data layout) are in `read/parse.rs`.

use std::collections::HashMap;
use std::io::Read;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::GgufError;
use super::flavour::FlavourBasis;
use super::value::{ValueRef, ValueType};
use crate::ggml_type::{Flavour, GgmlType};
use crate::source::{Http, HttpFile, Source, SourceError};
use cursor::Stop;
use parse::parse;

/// ggml's GGML_MAX_NAME: tensor names must be shorter than this.
pub const MAX_TENSOR_NAME: u64 = 64;
/// Arrays of arrays are legal in the spec; we carry them raw but cap the depth.
pub const MAX_ARRAY_DEPTH: usize = 4;

/// One key/value pair: its key, and the value's raw bytes as a range of the header buffer.
#[derive(Clone, Debug)]
pub struct KeyValue {
    /// The key, unique within its file.
    pub key: String,
    /// The value's type (for an array, `Array`; its element type is in the raw bytes).
    pub ty: ValueType,
    raw: Range<usize>,
}

/// One tensor info: name, shape (`dims[0]` innermost), type, and where its bytes are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorInfo {
    /// The tensor's name, unique within its file (at most 63 bytes).
    pub name: String,
    /// The shape in elements, innermost dimension first (at most 4 dimensions).
    pub dims: Vec<u64>,
    /// The element type, resolved with the file's type table.
    pub ty: GgmlType,
    /// Offset relative to the start of the data section, as stored in the file.
    pub offset: u64,
    /// Size of the tensor's data in bytes, without padding.
    pub n_bytes: u64,
}

/// A parsed, validated GGUF file. Holds the header bytes (not the tensor data).
///
/// Cloning shares the header bytes (a DeepSeek vocabulary is several MB), so one parent read
/// once can be handed to many plans (`batch`).
#[derive(Clone, Debug)]
pub struct GgufFile {
    /// The file (or, for a remote file, its URL).
    pub path: PathBuf,
    /// The GGUF version in the header: 2 or 3.
    pub version: u32,
    header: Arc<[u8]>,
    /// Where the tensor infos end (the header before its padding).
    info_end: u64,
    kvs: Vec<KeyValue>,
    kv_index: HashMap<String, usize>,
    tensors: Vec<TensorInfo>,
    tensor_index: HashMap<String, usize>,
    /// Alignment of the data section and of each tensor in it, in bytes: a power of two
    /// (`general.alignment`, or 32 when the key is absent).
    pub alignment: u64,
    /// Absolute offset of the data section.
    pub data_offset: u64,
    /// The file's length in bytes.
    pub file_len: u64,
    /// The type table the tensor types were read with.
    pub flavour: Flavour,
    /// Why that table.
    pub flavour_basis: FlavourBasis,
    /// Device, inode, size, modification and status-change times when the header was read
    /// from disk, so a writer can tell that the file it copies from is still the same one.
    pub identity: Option<FileIdentity>,
    /// The remote file the header was read from (by HTTP range requests), kept open for
    /// reading its tensors; `None` for a local file.
    pub remote: Option<Arc<HttpFile>>,
}

/// What tells a file apart from a rewritten or replaced one, as `fstat` reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileIdentity {
    /// The device that holds the file.
    pub dev: u64,
    /// The file's inode number on that device.
    pub ino: u64,
    /// The file's length in bytes.
    pub len: u64,
    /// Modification time (seconds, nanoseconds); users can set it back (`touch -d`).
    pub mtime: (i64, i64),
    /// Status-change time (seconds, nanoseconds): the kernel sets it on every write and
    /// attribute change, and no system call lets a user set it.
    pub ctime: (i64, i64),
}

impl FileIdentity {
    /// The identity of a file from its metadata.
    pub fn of(meta: &std::fs::Metadata) -> FileIdentity {
        use std::os::unix::fs::MetadataExt;
        FileIdentity {
            dev: meta.dev(),
            ino: meta.ino(),
            len: meta.len(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        }
    }
}

/// Read a growing prefix of a file of `file_len` bytes until the header parses: `fill`
/// extends the buffer to the asked length (shorter only if the file shrank).
fn read_growing(
    path: &Path,
    file_len: u64,
    mut buf: Vec<u8>,
    first: u64,
    growth: u64,
    flavour: Option<Flavour>,
    mut fill: impl FnMut(&mut Vec<u8>, u64) -> Result<(), GgufError>,
) -> Result<GgufFile, GgufError> {
    let mut want = first.min(file_len).max(buf.len() as u64);
    loop {
        if (buf.len() as u64) < want {
            fill(&mut buf, want)?;
        }
        if (buf.len() as u64) < want {
            // The file shrank under us; parse what there is and report it truncated.
            return GgufFile::from_prefix_as(path, &buf, buf.len() as u64, flavour);
        }
        match parse(path, &buf, file_len, flavour) {
            Ok(f) => return Ok(f.with_header(buf)),
            Err(Stop::Fail(e)) => return Err(e),
            // Growing geometrically keeps the wasted re-parsing under the header's own size
            // and the buffer under `growth` times the header.
            // Real headers are a few MB (DeepSeek's 129 280-token vocabulary: 6 MB); one
            // that needs more is a damaged or hostile length field.
            Err(Stop::NeedMore) if want >= MAX_HEADER_BYTES => {
                return Err(GgufError::HeaderTooLarge {
                    path: path.to_path_buf(),
                    max: MAX_HEADER_BYTES,
                });
            }
            Err(Stop::NeedMore) => {
                want = want
                    .saturating_mul(growth)
                    .min(file_len)
                    .min(MAX_HEADER_BYTES)
            }
        }
    }
}

/// First read size: enough for most headers; DeepSeek-size vocabularies take a few rounds.
const FIRST_READ: u64 = 1 << 20;
/// First read of a remote file: small, so a small file's header costs little more than
/// itself; each further read asks for the next bytes only, the prefix growing fourfold (a
/// DeepSeek header of 5 MB takes five requests).
pub const REMOTE_FIRST_READ: u64 = 64 << 10;
/// The largest header (everything before the tensor data) we read: 16x DeepSeek's.
pub const MAX_HEADER_BYTES: u64 = 96 << 20;

impl GgufFile {
    /// Open and validate one GGUF file (one shard), detecting its flavour. Reads only the
    /// header.
    pub fn open(path: &Path) -> Result<GgufFile, GgufError> {
        GgufFile::open_as(path, None)
    }

    /// Open and validate one GGUF file (one shard), reading its type ids with `flavour`'s
    /// table, or the one detected from the ids when `None`. Reads only the header.
    pub fn open_as(path: &Path, flavour: Option<Flavour>) -> Result<GgufFile, GgufError> {
        let (mut file, meta) = crate::input::open_regular(path)?;
        let file_len = meta.len();
        let identity = Some(FileIdentity::of(&meta));
        let f = read_growing(
            path,
            file_len,
            Vec::new(),
            FIRST_READ,
            2,
            flavour,
            |buf, want| {
                (&mut file)
                    .take(want - buf.len() as u64)
                    .read_to_end(buf)
                    .map(drop)
                    .map_err(|e| GgufError::io(path, e))
            },
        )?;
        Ok(GgufFile { identity, ..f })
    }

    /// Open and validate one remote GGUF file by range requests for a growing prefix
    /// (see [`REMOTE_FIRST_READ`]); the file stays open for reading its tensors.
    pub fn open_url(http: &Arc<Http>, url: &str) -> Result<GgufFile, GgufError> {
        GgufFile::open_url_as(http, url, None)
    }

    /// [`GgufFile::open_url`] with `flavour`'s type table (`None`: detected).
    pub fn open_url_as(
        http: &Arc<Http>,
        url: &str,
        flavour: Option<Flavour>,
    ) -> Result<GgufFile, GgufError> {
        let (remote, first) = HttpFile::open(Arc::clone(http), url, REMOTE_FIRST_READ)?;
        let remote = Arc::new(remote);
        // The path shown in errors and reports (and recorded by name in a child): never with
        // the URL's user info or query.
        let path = Path::new(remote.url());
        let f = read_growing(
            path,
            remote.len(),
            first,
            REMOTE_FIRST_READ,
            4,
            flavour,
            |buf, want| {
                let have = buf.len();
                buf.resize(want as usize, 0);
                remote.read_exact_at(&mut buf[have..], have as u64)?;
                Ok(())
            },
        )?;
        Ok(GgufFile {
            remote: Some(remote),
            ..f
        })
    }

    /// Where this file's bytes are read from: the local file (opened again, read-only) or
    /// the remote file opened when the header was read.
    pub fn open_source(&self) -> Result<Source, SourceError> {
        match &self.remote {
            Some(r) => Ok(Source::Http(Arc::clone(r))),
            // Not a plain open: a file swapped for a FIFO since its header was read must not
            // block the copy or the comparison.
            None => crate::input::open_regular(&self.path)
                .map(|(file, _)| Source::Local {
                    file,
                    path: self.path.clone(),
                })
                .map_err(|e| SourceError::Read {
                    path: self.path.clone(),
                    range: 0..0,
                    source: match e {
                        crate::input::InputError::Io { source, .. } => source,
                        other => std::io::Error::other(other.to_string()),
                    },
                }),
        }
    }

    /// Parse a header from bytes in memory that are the whole file, or a prefix of a file of
    /// `file_len` bytes. A prefix too short to hold the header is reported as truncated.
    pub fn from_prefix(path: &Path, bytes: &[u8], file_len: u64) -> Result<GgufFile, GgufError> {
        GgufFile::from_prefix_as(path, bytes, file_len, None)
    }

    /// [`GgufFile::from_prefix`] with the flavour given (`None`: detected).
    pub fn from_prefix_as(
        path: &Path,
        bytes: &[u8],
        file_len: u64,
        flavour: Option<Flavour>,
    ) -> Result<GgufFile, GgufError> {
        match parse(path, bytes, file_len, flavour) {
            Ok(f) => Ok(f.with_header(bytes.to_vec())),
            Err(Stop::Fail(e)) => Err(e),
            Err(Stop::NeedMore) => Err(GgufError::Truncated {
                path: path.to_path_buf(),
                what: "header".into(),
                offset: bytes.len() as u64,
                needed: 1,
                file_len: bytes.len() as u64,
            }),
        }
    }

    /// Parse a whole file held in memory (tests, fuzzing).
    pub fn from_bytes(path: &Path, bytes: &[u8]) -> Result<GgufFile, GgufError> {
        Self::from_prefix(path, bytes, bytes.len() as u64)
    }

    /// [`GgufFile::from_bytes`] with the flavour given (`None`: detected).
    pub fn from_bytes_as(
        path: &Path,
        bytes: &[u8],
        flavour: Option<Flavour>,
    ) -> Result<GgufFile, GgufError> {
        Self::from_prefix_as(path, bytes, bytes.len() as u64, flavour)
    }

    /// Keep the header bytes (values are ranges into them), dropping any tensor data read.
    fn with_header(mut self, mut bytes: Vec<u8>) -> Self {
        bytes.truncate(self.data_offset.min(bytes.len() as u64) as usize);
        // The prefix read may be up to four times the header (remote reads grow fourfold):
        // give the rest back before the next file is read.
        bytes.shrink_to_fit();
        self.header = Arc::from(bytes);
        self
    }

    /// Every key/value pair, in file order.
    pub fn kvs(&self) -> &[KeyValue] {
        &self.kvs
    }

    /// Every tensor info, in file order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    /// The value of a key/value pair of this file, borrowing the header's bytes.
    pub fn value(&self, kv: &KeyValue) -> ValueRef<'_> {
        ValueRef {
            ty: kv.ty,
            raw: &self.header[kv.raw.clone()],
        }
    }

    /// The value of `key`, if the file has it.
    pub fn get(&self, key: &str) -> Option<ValueRef<'_>> {
        self.kv_index.get(key).map(|&i| self.value(&self.kvs[i]))
    }

    /// The info of the tensor named `name`, if the file has it.
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensor_index.get(name).map(|&i| &self.tensors[i])
    }

    /// Absolute file offset of a tensor's first byte.
    pub fn tensor_file_offset(&self, t: &TensorInfo) -> u64 {
        // Validated at parse time: data_offset + offset + n_bytes <= file_len.
        self.data_offset + t.offset
    }
}

mod cursor;
mod digest;
mod parse;
#[cfg(test)]
mod tests;
