//! The header parser's passes, in file order: the preamble (magic, version, counts), the
//! key/values, the alignment they set, the tensor infos, their types resolved with the
//! flavour every id decides, and the data section's layout (contiguous padded offsets, every
//! tensor inside the file). Each pass reads through the bounded [`Cursor`].

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use super::cursor::{Cursor, Stop, What};
use super::{GgufFile, KeyValue, MAX_TENSOR_NAME, TensorInfo};
use crate::ggml_type::Flavour;
use crate::gguf::GgufError;
use crate::gguf::flavour::{self, FlavourBasis};
use crate::gguf::value::{ValueRef, ValueType};
use crate::layout::{self, DEFAULT_ALIGNMENT, MAX_DIMS};

/// A tensor info as stored, before its type id is resolved.
struct RawInfo {
    name: String,
    dims: Vec<u64>,
    type_id: u32,
    offset: u64,
}

/// Entries in file order, and each one's position by name.
type Indexed<T> = (Vec<T>, HashMap<String, usize>);

/// Parse a header from `buf`, a prefix of a file of `file_len` bytes.
pub(super) fn parse(
    path: &Path,
    buf: &[u8],
    file_len: u64,
    given: Option<Flavour>,
) -> Result<GgufFile, Stop> {
    let mut c = Cursor {
        path,
        buf,
        file_len,
        pos: 0,
    };
    let (version, tensor_count, kv_count) = preamble(&mut c)?;
    let (kvs, kv_index) = key_values(&mut c, kv_count)?;
    let alignment = alignment(path, buf, &kvs, &kv_index)?;
    let (raw, tensor_index) = tensor_infos(&mut c, tensor_count)?;
    let (tensors, flavour, flavour_basis) = resolve_types(path, raw, given)?;
    let header_end = c.offset();
    let data_offset = layout::pad_to(header_end, alignment).ok_or(GgufError::SizeOverflow {
        path: path.to_path_buf(),
        tensor: "<header>".into(),
        dims: vec![header_end],
    })?;
    check_data_layout(path, &tensors, data_offset, alignment, file_len)?;

    Ok(GgufFile {
        path: path.to_path_buf(),
        version,
        // Filled in by the caller, which owns the buffer.
        header: Arc::from(Vec::new()),
        info_end: header_end,
        kvs,
        kv_index,
        tensors,
        tensor_index,
        alignment,
        data_offset,
        file_len,
        flavour,
        flavour_basis,
        identity: None,
        remote: None,
    })
}

/// How many entries of `min_size` bytes to reserve room for: only what the bytes already
/// read could hold, as the file-size check still lets a count claim the (mostly tensor
/// data) rest of a 50 GB shard.
fn reserve(c: &Cursor, count: u64, min_size: u64) -> usize {
    count.min((c.buf.len() / min_size as usize) as u64) as usize
}

/// The magic, the version (2 or 3), and the tensor and key/value counts, each checked
/// against the bytes the file has left. Returns (version, tensor count, key/value count).
fn preamble(c: &mut Cursor) -> Result<(u32, u64, u64), Stop> {
    let path = c.path;
    let magic = c.take(4, What("magic", None))?;
    if magic != b"GGUF" {
        return Err(GgufError::BadMagic {
            path: path.to_path_buf(),
            found: magic.try_into().expect("4 bytes"),
        }
        .into());
    }
    let version = c.u32(What("version", None))?;
    if !(2..=3).contains(&version) {
        return Err(GgufError::UnsupportedVersion {
            path: path.to_path_buf(),
            found: version,
        }
        .into());
    }
    let tensor_count = c.u64(What("tensor count", None))?;
    let kv_count = c.u64(What("key/value count", None))?;
    // A key/value needs at least a key length, a type and a 1-byte value; a tensor info at
    // least a name length, n_dims, type and offset.
    c.check_count(What("the key/value count", None), kv_count, 8 + 4 + 1)?;
    c.check_count(What("the tensor count", None), tensor_count, 8 + 4 + 4 + 8)?;
    Ok((version, tensor_count, kv_count))
}

/// The key/values: non-empty unique keys, known value types, each value kept as a range of
/// the buffer (its bytes skipped, never decoded).
fn key_values(c: &mut Cursor, kv_count: u64) -> Result<Indexed<KeyValue>, Stop> {
    let path = c.path;
    let mut kvs = Vec::with_capacity(reserve(c, kv_count, 13));
    let mut kv_index = HashMap::with_capacity(reserve(c, kv_count, 13));
    for _ in 0..kv_count {
        let at = c.offset();
        let key = c.string(What("key", None))?;
        if key.is_empty() {
            return Err(GgufError::EmptyKey {
                path: path.to_path_buf(),
                offset: at,
            }
            .into());
        }
        if kv_index.contains_key(&key) {
            return Err(GgufError::DuplicateKey {
                path: path.to_path_buf(),
                key,
                offset: at,
            }
            .into());
        }
        let type_at = c.offset();
        let type_id = c.u32(What("value type", Some(&key)))?;
        let ty = ValueType::from_id(type_id).ok_or_else(|| GgufError::UnknownValueType {
            path: path.to_path_buf(),
            key: key.clone(),
            offset: type_at,
            found: type_id,
        })?;
        let start = c.pos;
        c.skip_value(&key, ty, 0)?;
        kv_index.insert(key.clone(), kvs.len());
        kvs.push(KeyValue {
            key,
            ty,
            raw: start..c.pos,
        });
    }
    Ok((kvs, kv_index))
}

/// `general.alignment` (a u32 power of two), or 32 when the key is absent.
fn alignment(
    path: &Path,
    buf: &[u8],
    kvs: &[KeyValue],
    kv_index: &HashMap<String, usize>,
) -> Result<u64, Stop> {
    let Some(&i) = kv_index.get("general.alignment") else {
        return Ok(DEFAULT_ALIGNMENT);
    };
    let kv = &kvs[i];
    let value = ValueRef {
        ty: kv.ty,
        raw: &buf[kv.raw.clone()],
    };
    // ggml requires the u32 type, as well as a non-zero power of two.
    if kv.ty != ValueType::U32 {
        return Err(GgufError::BadKeyValue {
            path: path.to_path_buf(),
            key: kv.key.clone(),
            expected: "type u32".into(),
            found: format!("type {}", kv.ty),
        }
        .into());
    }
    let a = value.as_u64().expect("u32 decodes");
    if !a.is_power_of_two() {
        return Err(GgufError::BadAlignment {
            path: path.to_path_buf(),
            found: a,
        }
        .into());
    }
    Ok(a)
}

/// The tensor infos as stored: names short enough and unique, at most [`MAX_DIMS`]
/// dimensions; type ids not yet resolved.
fn tensor_infos(c: &mut Cursor, tensor_count: u64) -> Result<Indexed<RawInfo>, Stop> {
    let path = c.path;
    let mut raw = Vec::with_capacity(reserve(c, tensor_count, 24));
    let mut tensor_index = HashMap::with_capacity(reserve(c, tensor_count, 24));
    for _ in 0..tensor_count {
        let at = c.offset();
        let name = c.string(What("tensor name", None))?;
        if name.len() as u64 >= MAX_TENSOR_NAME {
            return Err(GgufError::TensorNameTooLong {
                path: path.to_path_buf(),
                len: name.len() as u64,
                name,
                offset: at,
            }
            .into());
        }
        if tensor_index.contains_key(&name) {
            return Err(GgufError::DuplicateTensor {
                path: path.to_path_buf(),
                name,
                offset: at,
            }
            .into());
        }
        let n_dims = c.u32(What("n_dims", Some(&name)))?;
        if n_dims as usize > MAX_DIMS {
            return Err(GgufError::TooManyDims {
                path: path.to_path_buf(),
                tensor: name,
                found: n_dims,
            }
            .into());
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        for _ in 0..n_dims {
            dims.push(c.u64(What("shape", Some(&name)))?);
        }
        let type_id = c.u32(What("type", Some(&name)))?;
        let offset = c.u64(What("offset", Some(&name)))?;
        tensor_index.insert(name.clone(), raw.len());
        raw.push(RawInfo {
            name,
            dims,
            type_id,
            offset,
        });
    }
    Ok((raw, tensor_index))
}

/// The flavour (which table the type ids are read with, or `given`), then each tensor's
/// type, a whole number of blocks in its rows and a size ggml can hold.
fn resolve_types(
    path: &Path,
    raw: Vec<RawInfo>,
    given: Option<Flavour>,
) -> Result<(Vec<TensorInfo>, Flavour, FlavourBasis), Stop> {
    // Which table the type ids are read with needs every tensor's id: the first id only one
    // program defines may come after a contested one.
    let ids = raw.iter().map(|t| (t.name.as_str(), t.type_id));
    let (flavour, flavour_basis) = flavour::decide_flavour(path, ids, given)?;
    let mut tensors = Vec::with_capacity(raw.len());
    for RawInfo {
        name,
        dims,
        type_id,
        offset,
    } in raw
    {
        let ty = flavour::resolve_type(path, &name, type_id, flavour, &flavour_basis)?;
        let ne0 = dims.first().copied().unwrap_or(1);
        if ne0 % ty.block_size() != 0 {
            return Err(GgufError::NotBlockMultiple {
                path: path.to_path_buf(),
                tensor: name,
                ty: ty.name().into(),
                ne0,
                block_size: ty.block_size(),
            }
            .into());
        }
        // ggml stores ne as int64: it refuses a negative dimension and any product past
        // INT64_MAX.
        let n_bytes = Some(())
            .filter(|_| dims.iter().all(|&d| d <= i64::MAX as u64))
            .and_then(|_| layout::element_count(&dims))
            .filter(|&n| n <= i64::MAX as u64)
            .and_then(|_| layout::tensor_bytes(ty, &dims))
            .filter(|&n| n <= i64::MAX as u64)
            .ok_or_else(|| GgufError::SizeOverflow {
                path: path.to_path_buf(),
                tensor: name.clone(),
                dims: dims.clone(),
            })?;
        tensors.push(TensorInfo {
            name,
            dims,
            ty,
            offset,
            n_bytes,
        });
    }
    Ok((tensors, flavour, flavour_basis))
}

/// Offsets must be the contiguous padded sequence, and the data must be in the file.
fn check_data_layout(
    path: &Path,
    tensors: &[TensorInfo],
    data_offset: u64,
    alignment: u64,
    file_len: u64,
) -> Result<(), GgufError> {
    let mut expected = 0u64;
    for t in tensors {
        if t.offset != expected {
            return Err(GgufError::BadOffset {
                path: path.to_path_buf(),
                tensor: t.name.clone(),
                expected,
                found: t.offset,
            });
        }
        let end = data_offset
            .checked_add(t.offset)
            .and_then(|o| o.checked_add(t.n_bytes));
        match end {
            Some(end) if end <= file_len => {}
            _ => {
                return Err(GgufError::DataPastEnd {
                    path: path.to_path_buf(),
                    tensor: t.name.clone(),
                    end: end.unwrap_or(u64::MAX),
                    file_len,
                });
            }
        }
        expected = t
            .offset
            .checked_add(t.n_bytes)
            .and_then(|o| layout::pad_to(o, alignment))
            .ok_or_else(|| GgufError::SizeOverflow {
                path: path.to_path_buf(),
                tensor: t.name.clone(),
                dims: t.dims.clone(),
            })?;
    }
    Ok(())
}
