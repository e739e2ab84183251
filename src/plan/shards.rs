//! Output shards: the tensor list cut as llama-gguf-split cuts it, each tensor's offset in
//! its shard, and each shard's header size and path.

use std::path::Path;

use super::metadata::shard_kvs;
use super::{OutShard, PlanError, PlanValue, PlannedTensor, SplitOptions};
use crate::gguf::TensorInfo;
use crate::gguf::model::shard_path;
use crate::gguf::read::MAX_HEADER_BYTES;
use crate::gguf::write::{assign_offsets, declared_alignment, encoded_header_len};
use crate::layout::{self, DEFAULT_ALIGNMENT};

/// The most shards a child may have: `split.count` is a u16.
pub const MAX_SHARDS: usize = u16::MAX as usize;

/// A `--split-max-size` value: `48G`, `500M` (decimal units, as llama-gguf-split), or a
/// plain byte count. The error says what was expected.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let (num, mult) = match s.as_bytes().last() {
        Some(b'G') => (&s[..s.len() - 1], 1_000_000_000),
        Some(b'M') => (&s[..s.len() - 1], 1_000_000),
        _ => (s, 1),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("'{s}' is not a size such as 48G or 500M"))?;
    if n == 0 {
        return Err("size must be positive".into());
    }
    n.checked_mul(mult)
        .ok_or_else(|| format!("'{s}' is too large"))
}

/// Cut the tensor list into shards as llama-gguf-split does (a new shard when the next
/// tensor would pass the size limit, or every N tensors), then give every tensor its offset.
pub(super) fn assign_shards(
    tensors: &mut [PlannedTensor],
    kvs: &[(String, PlanValue<'_>)],
    set_id: &str,
    output: &Path,
    split: SplitOptions,
) -> Result<Vec<OutShard>, PlanError> {
    let mut bounds = vec![0usize];
    let mut current = 0u64;
    for (i, t) in tensors.iter().enumerate() {
        let padded = layout::pad_to(t.info.n_bytes, DEFAULT_ALIGNMENT).ok_or_else(|| {
            PlanError::Overflow {
                tensor: t.info.name.clone(),
            }
        })?;
        let start = *bounds.last().expect("non-empty");
        let full_by_size = split.max_bytes.is_some_and(|m| current + padded > m) && i > start;
        let full_by_count = split.max_tensors.is_some_and(|m| i - start >= m.max(1));
        if full_by_size || full_by_count {
            bounds.push(i);
            current = 0;
        }
        current += padded;
    }
    bounds.push(tensors.len());
    let count = bounds.len() - 1;
    // split.count and split.no are u16 in every reader (llama.cpp, gguf-py): 65 535 is the
    // format's limit, below the 99 999 that five-digit shard names could count.
    if count > MAX_SHARDS {
        return Err(PlanError::TooManyShards {
            count,
            max: MAX_SHARDS,
        });
    }
    let prefix = output
        .to_str()
        .map(|s| s.strip_suffix(".gguf").unwrap_or(s).to_string())
        .unwrap_or_else(|| output.display().to_string());

    let mut shards = Vec::with_capacity(count);
    for i in 0..count {
        let range = bounds[i]..bounds[i + 1];
        let shard_kv = shard_kvs(kvs, set_id, i, count, tensors.len());
        let kv_refs = shard_kv.iter().map(|(k, v)| (k.as_str(), v.as_ref()));
        let alignment = declared_alignment(kv_refs.clone());
        let mut infos: Vec<TensorInfo> = tensors[range.clone()]
            .iter()
            .map(|t| t.info.clone())
            .collect();
        let data_len =
            assign_offsets(&mut infos, alignment).ok_or_else(|| PlanError::Overflow {
                tensor: "<data section>".into(),
            })?;
        for (t, info) in tensors[range.clone()].iter_mut().zip(&infos) {
            t.info.offset = info.offset;
            t.out_shard = i;
        }
        let header_len = encoded_header_len(kv_refs, &infos, alignment);
        let path = if split.is_split() {
            shard_path(&prefix, i as u64 + 1, count as u64)
        } else {
            output.to_path_buf()
        };
        if header_len > MAX_HEADER_BYTES {
            return Err(PlanError::HeaderTooLarge {
                path,
                len: header_len,
                max: MAX_HEADER_BYTES,
            });
        }
        shards.push(OutShard {
            path,
            tensors: range,
            alignment,
            header_len,
            data_len,
        });
    }
    Ok(shards)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_decimal_like_gguf_split() {
        assert_eq!(parse_size("48G"), Ok(48_000_000_000));
        assert_eq!(parse_size("500M"), Ok(500_000_000));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("0G").is_err());
        assert!(parse_size("12T").is_err());
        assert!(parse_size("99999999999G").is_err());
    }
}
