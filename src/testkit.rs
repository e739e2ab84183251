//! Test support: assembles GGUF bytes by hand, field by field, without the crate's writer, so
//! tests of the reader and writer have an independent oracle. It also records where each
//! field sits, so corruption tests can break exactly one of them.
//!
//! Tensor data made by [`marker_data`] encodes parent, tensor and slice in every 8-byte word,
//! so a test can tell where any byte of a spliced child came from.

use crate::ggml_type::GgmlType;

/// Where the fields of one assembled file are: byte offsets from the file's start, one entry
/// per key/value or tensor info in order, so a corruption test can overwrite exactly one.
#[derive(Clone, Debug, Default)]
pub struct FieldMap {
    /// Each key's u64 length prefix.
    pub kv_key_len_at: Vec<usize>,
    /// Each value's u32 type id.
    pub kv_type_at: Vec<usize>,
    /// Each value's first byte.
    pub kv_value_at: Vec<usize>,
    /// Each tensor name's u64 length prefix.
    pub tensor_name_len_at: Vec<usize>,
    /// Each tensor's u32 dimension count.
    pub tensor_n_dims_at: Vec<usize>,
    /// Each tensor's first u64 dimension.
    pub tensor_dims_at: Vec<usize>,
    /// Each tensor's u32 type id.
    pub tensor_type_at: Vec<usize>,
    /// Each tensor's u64 data offset.
    pub tensor_offset_at: Vec<usize>,
    /// The start of the data section.
    pub data_offset: usize,
}

#[derive(Clone, Debug)]
struct RawTensor {
    name: String,
    dims: Vec<u64>,
    type_id: u32,
    data: Vec<u8>,
    /// Data size when the bytes are not held (synthetic headers for benchmarks).
    declared: Option<u64>,
}

/// A GGUF assembled by hand. Nothing is validated, so tests can build broken files on
/// purpose.
#[derive(Clone, Debug)]
pub struct GgufBuilder {
    /// The version written in the header (3 unless a test wants another).
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
    /// An empty v3 file: no keys, no tensors, the default 32-byte alignment.
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

    /// A `u32` key. `general.alignment` also sets the alignment the tensors are laid out at.
    pub fn kv_u32(self, key: &str, v: u32) -> Self {
        if key == "general.alignment" {
            let mut s = self.kv_raw(key, 4, v.to_le_bytes().to_vec());
            s.alignment = v as u64;
            return s;
        }
        self.kv_raw(key, 4, v.to_le_bytes().to_vec())
    }

    /// A `u16` key.
    pub fn kv_u16(self, key: &str, v: u16) -> Self {
        self.kv_raw(key, 2, v.to_le_bytes().to_vec())
    }

    /// An `i32` key.
    pub fn kv_i32(self, key: &str, v: i32) -> Self {
        self.kv_raw(key, 5, v.to_le_bytes().to_vec())
    }

    /// An `f32` key.
    pub fn kv_f32(self, key: &str, v: f32) -> Self {
        self.kv_raw(key, 6, v.to_le_bytes().to_vec())
    }

    /// A string key.
    pub fn kv_str(self, key: &str, v: &str) -> Self {
        self.kv_raw(key, 8, string_bytes(v))
    }

    /// An array-of-strings key (a tokenizer's tokens or merges).
    pub fn kv_str_array(self, key: &str, items: &[&str]) -> Self {
        let mut raw = 8u32.to_le_bytes().to_vec();
        raw.extend_from_slice(&(items.len() as u64).to_le_bytes());
        for s in items {
            raw.extend_from_slice(&string_bytes(s));
        }
        self.kv_raw(key, 9, raw)
    }

    /// An array-of-`i32` key (a tokenizer's token types).
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
            declared: None,
        });
        self
    }

    /// A tensor whose data is `n_bytes` long but not held: only the header is meaningful.
    pub fn tensor_declared(mut self, name: &str, dims: &[u64], type_id: u32, n_bytes: u64) -> Self {
        self.tensors.push(RawTensor {
            name: name.to_string(),
            dims: dims.to_vec(),
            type_id,
            data: Vec::new(),
            declared: Some(n_bytes),
        });
        self
    }

    /// A tensor whose data is [`marker_data`] for (`parent`, its index).
    pub fn tensor(self, name: &str, dims: &[u64], ty: GgmlType, parent: u8) -> Self {
        let index = self.tensors.len() as u16;
        let data = marker_data(ty, dims, parent, index);
        self.tensor_raw(name, dims, ty.id(), data)
    }

    /// The file's bytes; see [`GgufBuilder::build_with_map`].
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
            offset = pad(offset + t.declared.unwrap_or(t.data.len() as u64));
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
/// slice lo, word lo, parent | 0x80, tensor hi, slice hi, word hi]`, where slice is the index
/// along the outermost dimension (the expert of a stacked expert tensor). The parent is in
/// both halves so that even 4-byte slices (one F32 router bias element) differ by parent.
/// Sizes follow `ty`'s blocks.
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
            2 => slice as u8,
            3 => word as u8,
            4 => parent | 0x80,
            5 => (tensor >> 8) as u8,
            6 => (slice >> 8) as u8,
            _ => (word >> 8) as u8,
        };
        data.push(b);
    }
    data
}

/// The shape of a synthetic `deepseek2` model (names and shapes as DeepSeek V3/R1 GGUFs have
/// them, with the newer attn_k_b / attn_v_b layout), for benchmarks.
#[derive(Clone, Copy, Debug)]
pub struct SynthSpec {
    /// Blocks (`block_count`).
    pub n_layer: u64,
    /// Leading dense blocks, without experts (`leading_dense_block_count`).
    pub n_dense: u64,
    /// Routed experts per MoE block (`expert_count`).
    pub n_expert: u64,
    /// Embedding width (`embedding_length`).
    pub n_embd: u64,
    /// Dense FFN width (`feed_forward_length`).
    pub n_ff: u64,
    /// Expert FFN width (`expert_feed_forward_length`).
    pub n_ff_exp: u64,
    /// Attention heads.
    pub n_head: u64,
    /// Query LoRA rank.
    pub q_lora: u64,
    /// Key/value LoRA rank.
    pub kv_lora: u64,
    /// Vocabulary size.
    pub vocab: u64,
    /// Type of the routed-expert tensors.
    pub expert_type: GgmlType,
    /// Type of most other matrices (norms and routers are F32, `output` Q6_K, `attn_k_b`
    /// Q8_0).
    pub other_type: GgmlType,
}

impl SynthSpec {
    /// DeepSeek-V3 / R1 as published: 61 layers (3 dense), 256 experts, n_embd 7168.
    pub fn deepseek_v3() -> SynthSpec {
        SynthSpec {
            n_layer: 61,
            n_dense: 3,
            n_expert: 256,
            n_embd: 7168,
            n_ff: 18432,
            n_ff_exp: 2048,
            n_head: 128,
            q_lora: 1536,
            kv_lora: 512,
            vocab: 129_280,
            expert_type: GgmlType::IQ2_XXS,
            other_type: GgmlType::Q4_K,
        }
    }

    /// (name, dims, type) of every tensor, in llama-quantize's order.
    pub fn tensors(&self) -> Vec<(String, Vec<u64>, GgmlType)> {
        let (f32_, q, e, q8) = (
            GgmlType::F32,
            self.other_type,
            self.expert_type,
            GgmlType::Q8_0,
        );
        let (d, h) = (self.n_embd, self.n_head);
        let mut t = vec![
            (
                "output.weight".to_string(),
                vec![d, self.vocab],
                GgmlType::from_id(14).unwrap(),
            ),
            ("output_norm.weight".into(), vec![d], f32_),
            ("token_embd.weight".into(), vec![d, self.vocab], q),
        ];
        for b in 0..self.n_layer {
            let p = |n: &str| format!("blk.{b}.{n}");
            t.push((p("attn_kv_a_mqa.weight"), vec![d, self.kv_lora + 64], q));
            t.push((p("attn_kv_a_norm.weight"), vec![self.kv_lora], f32_));
            t.push((p("attn_k_b.weight"), vec![128, self.kv_lora, h], q8));
            t.push((p("attn_norm.weight"), vec![d], f32_));
            t.push((p("attn_output.weight"), vec![h * 128, d], q));
            t.push((p("attn_q_a.weight"), vec![d, self.q_lora], q));
            t.push((p("attn_q_a_norm.weight"), vec![self.q_lora], f32_));
            t.push((p("attn_q_b.weight"), vec![self.q_lora, h * 192], q));
            t.push((p("attn_v_b.weight"), vec![self.kv_lora, 128, h], q));
            t.push((p("ffn_norm.weight"), vec![d], f32_));
            if b < self.n_dense {
                t.push((p("ffn_down.weight"), vec![self.n_ff, d], q));
                t.push((p("ffn_gate.weight"), vec![d, self.n_ff], q));
                t.push((p("ffn_up.weight"), vec![d, self.n_ff], q));
            } else {
                t.push((p("exp_probs_b.bias"), vec![self.n_expert], f32_));
                t.push((p("ffn_gate_inp.weight"), vec![d, self.n_expert], f32_));
                t.push((
                    p("ffn_down_exps.weight"),
                    vec![self.n_ff_exp, d, self.n_expert],
                    e,
                ));
                t.push((
                    p("ffn_gate_exps.weight"),
                    vec![d, self.n_ff_exp, self.n_expert],
                    e,
                ));
                t.push((
                    p("ffn_up_exps.weight"),
                    vec![d, self.n_ff_exp, self.n_expert],
                    e,
                ));
                t.push((p("ffn_down_shexp.weight"), vec![self.n_ff_exp, d], q));
                t.push((p("ffn_gate_shexp.weight"), vec![d, self.n_ff_exp], q));
                t.push((p("ffn_up_shexp.weight"), vec![d, self.n_ff_exp], q));
            }
        }
        t
    }

    /// A header with these tensors, the key hyperparameters and a full-size vocabulary with
    /// merges, assembled by hand like [`GgufBuilder`]. Returns (header bytes incl. padding,
    /// data section size).
    pub fn header(&self, name: &str) -> (Vec<u8>, u64) {
        let tokens: Vec<String> = (0..self.vocab).map(|i| format!("tok{i}")).collect();
        let merges: Vec<String> = (0..self.vocab - 1500)
            .map(|i| format!("t{} k{}", i % 977, i))
            .collect();
        let tok_refs: Vec<&str> = tokens.iter().map(String::as_str).collect();
        let merge_refs: Vec<&str> = merges.iter().map(String::as_str).collect();
        let types: Vec<i32> = (0..self.vocab).map(|i| if i < 3 { 3 } else { 1 }).collect();
        let mut b = GgufBuilder::new()
            .kv_str("general.architecture", "deepseek2")
            .kv_str("general.name", name)
            .kv_u32("deepseek2.block_count", self.n_layer as u32)
            .kv_u32("deepseek2.embedding_length", self.n_embd as u32)
            .kv_u32("deepseek2.feed_forward_length", self.n_ff as u32)
            .kv_u32("deepseek2.expert_feed_forward_length", self.n_ff_exp as u32)
            .kv_u32("deepseek2.expert_count", self.n_expert as u32)
            .kv_u32("deepseek2.leading_dense_block_count", self.n_dense as u32)
            .kv_u32("deepseek2.attention.head_count", self.n_head as u32)
            .kv_u32("deepseek2.attention.q_lora_rank", self.q_lora as u32)
            .kv_u32("deepseek2.attention.kv_lora_rank", self.kv_lora as u32)
            .kv_str("tokenizer.ggml.model", "gpt2")
            .kv_str_array("tokenizer.ggml.tokens", &tok_refs)
            .kv_i32_array("tokenizer.ggml.token_type", &types)
            .kv_str_array("tokenizer.ggml.merges", &merge_refs)
            .kv_u32("general.quantization_version", 2);
        let mut data_len = 0u64;
        for (n, dims, ty) in self.tensors() {
            let bytes = crate::layout::tensor_bytes(ty, &dims).expect("valid synthetic shape");
            b = b.tensor_declared(&n, &dims, ty.id(), bytes);
            data_len += bytes.div_ceil(32) * 32;
        }
        let (bytes, map) = b.build_with_map();
        (bytes[..map.data_offset].to_vec(), data_len)
    }

    /// Write a synthetic model file. With `fill`, every tensor byte is written (a pattern
    /// that depends on `seed`), so copies move real data; without, the data section is a
    /// sparse hole.
    pub fn write(&self, path: &std::path::Path, seed: u8, fill: bool) -> std::io::Result<u64> {
        use std::io::Write;
        let (header, data_len) = self.header(&format!("synthetic-{seed}"));
        let mut f = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
        f.write_all(&header)?;
        if fill {
            let block: Vec<u8> = (0..1u32 << 20)
                .map(|i| (i as u8) ^ seed.wrapping_mul(31))
                .collect();
            let mut left = data_len;
            while left > 0 {
                let n = left.min(block.len() as u64) as usize;
                f.write_all(&block[..n])?;
                left -= n as u64;
            }
        }
        let f = f.into_inner().map_err(|e| e.into_error())?;
        f.set_len(header.len() as u64 + data_len)?;
        Ok(header.len() as u64 + data_len)
    }
}
