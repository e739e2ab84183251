//! Test support: assembles GGUF bytes by hand, field by field, without the crate's writer, so
//! tests of the reader and writer have an independent oracle. It also records where each
//! field sits, so corruption tests can break exactly one of them.
//!
//! Tensor data made by [`marker_data`] encodes parent, tensor and slice in every 8-byte word,
//! so a test can tell where any byte of a spliced child came from.

use crate::ggml_type::GgmlType;

/// Where the fields of one assembled file are.
#[derive(Clone, Debug, Default)]
pub struct FieldMap {
    pub kv_key_len_at: Vec<usize>,
    pub kv_type_at: Vec<usize>,
    pub kv_value_at: Vec<usize>,
    pub tensor_name_len_at: Vec<usize>,
    pub tensor_n_dims_at: Vec<usize>,
    pub tensor_dims_at: Vec<usize>,
    pub tensor_type_at: Vec<usize>,
    pub tensor_offset_at: Vec<usize>,
    pub data_offset: usize,
}

#[derive(Clone, Debug)]
struct RawTensor {
    name: String,
    dims: Vec<u64>,
    type_id: u32,
    data: Vec<u8>,
}

/// A GGUF assembled by hand.
#[derive(Clone, Debug)]
pub struct GgufBuilder {
    pub version: u32,
    kvs: Vec<(String, u32, Vec<u8>)>,
    tensors: Vec<RawTensor>,
    alignment: u64,
}

impl Default for GgufBuilder {
    fn default() -> Self {
        Self::new()
    }
}

fn string_bytes(s: &str) -> Vec<u8> {
    let mut v = (s.len() as u64).to_le_bytes().to_vec();
    v.extend_from_slice(s.as_bytes());
    v
}

impl GgufBuilder {
    pub fn new() -> Self {
        GgufBuilder {
            version: 3,
            kvs: Vec::new(),
            tensors: Vec::new(),
            alignment: 32,
        }
    }

    /// A key with any type id and raw value bytes.
    pub fn kv_raw(mut self, key: &str, type_id: u32, raw: Vec<u8>) -> Self {
        self.kvs.push((key.to_string(), type_id, raw));
        self
    }

    pub fn kv_u32(self, key: &str, v: u32) -> Self {
        if key == "general.alignment" {
            let mut s = self.kv_raw(key, 4, v.to_le_bytes().to_vec());
            s.alignment = v as u64;
            return s;
        }
        self.kv_raw(key, 4, v.to_le_bytes().to_vec())
    }

    pub fn kv_u16(self, key: &str, v: u16) -> Self {
        self.kv_raw(key, 2, v.to_le_bytes().to_vec())
    }

    pub fn kv_i32(self, key: &str, v: i32) -> Self {
        self.kv_raw(key, 5, v.to_le_bytes().to_vec())
    }

    pub fn kv_f32(self, key: &str, v: f32) -> Self {
        self.kv_raw(key, 6, v.to_le_bytes().to_vec())
    }

    pub fn kv_str(self, key: &str, v: &str) -> Self {
        self.kv_raw(key, 8, string_bytes(v))
    }

    pub fn kv_str_array(self, key: &str, items: &[&str]) -> Self {
        let mut raw = 8u32.to_le_bytes().to_vec();
        raw.extend_from_slice(&(items.len() as u64).to_le_bytes());
        for s in items {
            raw.extend_from_slice(&string_bytes(s));
        }
        self.kv_raw(key, 9, raw)
    }

    pub fn kv_i32_array(self, key: &str, items: &[i32]) -> Self {
        let mut raw = 5u32.to_le_bytes().to_vec();
        raw.extend_from_slice(&(items.len() as u64).to_le_bytes());
        for v in items {
            raw.extend_from_slice(&v.to_le_bytes());
        }
        self.kv_raw(key, 9, raw)
    }

    /// A tensor with explicit data bytes (their length is not checked against the shape).
    pub fn tensor_raw(mut self, name: &str, dims: &[u64], type_id: u32, data: Vec<u8>) -> Self {
        self.tensors.push(RawTensor {
            name: name.to_string(),
            dims: dims.to_vec(),
            type_id,
            data,
        });
        self
    }

    /// A tensor whose data is [`marker_data`] for (`parent`, its index).
    pub fn tensor(self, name: &str, dims: &[u64], ty: GgmlType, parent: u8) -> Self {
        let index = self.tensors.len() as u16;
        let data = marker_data(ty, dims, parent, index);
        self.tensor_raw(name, dims, ty.id(), data)
    }

    pub fn build(&self) -> Vec<u8> {
        self.build_with_map().0
    }

    /// Assemble the canonical file: v3 header, key/values, tensor infos with contiguous
    /// padded offsets, zero padding, data with each tensor padded.
    pub fn build_with_map(&self) -> (Vec<u8>, FieldMap) {
        let mut out = Vec::new();
        let mut map = FieldMap::default();
        out.extend_from_slice(b"GGUF");
        out.extend_from_slice(&self.version.to_le_bytes());
        out.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        out.extend_from_slice(&(self.kvs.len() as u64).to_le_bytes());
        for (key, type_id, raw) in &self.kvs {
            map.kv_key_len_at.push(out.len());
            out.extend_from_slice(&string_bytes(key));
            map.kv_type_at.push(out.len());
            out.extend_from_slice(&type_id.to_le_bytes());
            map.kv_value_at.push(out.len());
            out.extend_from_slice(raw);
        }
        let pad = |n: u64| n.div_ceil(self.alignment) * self.alignment;
        let mut offset = 0u64;
        for t in &self.tensors {
            map.tensor_name_len_at.push(out.len());
            out.extend_from_slice(&string_bytes(&t.name));
            map.tensor_n_dims_at.push(out.len());
            out.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
            map.tensor_dims_at.push(out.len());
            for d in &t.dims {
                out.extend_from_slice(&d.to_le_bytes());
            }
            map.tensor_type_at.push(out.len());
            out.extend_from_slice(&t.type_id.to_le_bytes());
            map.tensor_offset_at.push(out.len());
            out.extend_from_slice(&offset.to_le_bytes());
            offset = pad(offset + t.data.len() as u64);
        }
        out.resize(pad(out.len() as u64) as usize, 0);
        map.data_offset = out.len();
        for t in &self.tensors {
            out.extend_from_slice(&t.data);
            out.resize(pad(out.len() as u64) as usize, 0);
        }
        (out, map)
    }
}

/// Tensor bytes in which each 8-byte word says where it came from: `[parent, tensor lo,
/// tensor hi, slice lo, slice hi, word b0, b1, b2]`, where slice is the index along the
/// outermost dimension (the expert of a stacked expert tensor). Sizes follow `ty`'s blocks.
pub fn marker_data(ty: GgmlType, dims: &[u64], parent: u8, tensor: u16) -> Vec<u8> {
    let n_bytes = crate::layout::tensor_bytes(ty, dims).expect("test shape is valid") as usize;
    let slices = dims.last().copied().unwrap_or(1).max(1) as usize;
    let per_slice = n_bytes / slices;
    let mut data = Vec::with_capacity(n_bytes);
    for i in 0..n_bytes {
        let slice = i.checked_div(per_slice).unwrap_or(0);
        let word = i / 8;
        let b = match i % 8 {
            0 => parent,
            1 => tensor as u8,
            2 => (tensor >> 8) as u8,
            3 => slice as u8,
            4 => (slice >> 8) as u8,
            5 => word as u8,
            6 => (word >> 8) as u8,
            _ => (word >> 16) as u8,
        };
        data.push(b);
    }
    data
}
