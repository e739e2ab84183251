//! Writing GGUF v3: the header is encoded in memory (it holds metadata, never tensor data),
//! then tensor data is streamed into the file in info order, each tensor padded to the
//! alignment. Tensor bytes go file to file with `std::io::copy`, which uses
//! `copy_file_range` on Linux, so they never pass through a user-space buffer.

use std::fs::File;
use std::io::{self, Seek, SeekFrom, Write};

use super::read::TensorInfo;
use super::value::{ValueRef, ValueType};
use crate::layout::{self, DEFAULT_ALIGNMENT};

/// The GGUF version this crate writes.
pub const WRITE_VERSION: u32 = 3;

/// Give each tensor its offset in the data section (contiguous, padded to `alignment`, in
/// order) and return the data section's total size. `None` on overflow.
pub fn assign_offsets(tensors: &mut [TensorInfo], alignment: u64) -> Option<u64> {
    let mut next = 0u64;
    for t in tensors {
        t.offset = next;
        next = layout::pad_to(next.checked_add(t.n_bytes)?, alignment)?;
    }
    Some(next)
}

/// The alignment a list of key/values declares (`general.alignment`), or the default.
pub fn declared_alignment<'a>(mut kvs: impl Iterator<Item = (&'a str, ValueRef<'a>)>) -> u64 {
    kvs.find(|(k, v)| *k == "general.alignment" && v.ty == ValueType::U32)
        .and_then(|(_, v)| v.as_u64())
        .filter(|a| a.is_power_of_two())
        .unwrap_or(DEFAULT_ALIGNMENT)
}

fn put_string(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// Encode a complete v3 header padded to `alignment`. Values are written as the raw bytes
/// they carry; tensor offsets must come from [`assign_offsets`].
pub fn encode_header<'a>(
    kvs: &[(&'a str, ValueRef<'a>)],
    tensors: &[TensorInfo],
    alignment: u64,
) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(b"GGUF");
    out.extend_from_slice(&WRITE_VERSION.to_le_bytes());
    out.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
    out.extend_from_slice(&(kvs.len() as u64).to_le_bytes());
    for (key, value) in kvs {
        put_string(&mut out, key);
        out.extend_from_slice(&(value.ty as u32).to_le_bytes());
        out.extend_from_slice(value.raw);
    }
    for t in tensors {
        put_string(&mut out, &t.name);
        out.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
        for d in &t.dims {
            out.extend_from_slice(&d.to_le_bytes());
        }
        out.extend_from_slice(&t.ty.id().to_le_bytes());
        out.extend_from_slice(&t.offset.to_le_bytes());
    }
    let padded = layout::pad_to(out.len() as u64, alignment).expect("header fits in memory");
    out.resize(padded as usize, 0);
    out
}

/// Streams tensor data into an output file after its header, tracking the position so each
/// tensor lands at its planned offset.
pub struct DataWriter<'f> {
    out: &'f File,
    alignment: u64,
    /// Bytes written so far into the data section.
    written: u64,
}

const ZEROS: [u8; 4096] = [0; 4096];

impl<'f> DataWriter<'f> {
    /// `out` must be positioned right after a header from [`encode_header`].
    pub fn new(out: &'f File, alignment: u64) -> Self {
        DataWriter {
            out,
            alignment,
            written: 0,
        }
    }

    /// Bytes written so far into the data section: the offset the next tensor lands at, for
    /// the caller to check against the plan before it copies.
    pub fn position(&self) -> u64 {
        self.written
    }

    /// Copy `len` bytes starting at absolute offset `offset` of `src` into the output.
    pub fn copy_from(&mut self, src: &File, offset: u64, len: u64) -> io::Result<()> {
        let mut reader = src;
        reader.seek(SeekFrom::Start(offset))?;
        let copied = io::copy(&mut io::Read::take(reader, len), &mut self.out)?;
        if copied != len {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("expected {len} bytes at offset {offset}, the file ended after {copied}"),
            ));
        }
        self.written += len;
        Ok(())
    }

    /// Write bytes held in memory (tests, small generated tensors).
    pub fn write_bytes(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.write_all(bytes)?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    /// Pad with zeros up to the alignment, ending the current tensor.
    pub fn end_tensor(&mut self) -> io::Result<()> {
        let target = layout::pad_to(self.written, self.alignment).expect("padded size checked");
        let mut gap = target - self.written;
        while gap > 0 {
            let n = gap.min(ZEROS.len() as u64);
            self.out.write_all(&ZEROS[..n as usize])?;
            gap -= n;
        }
        self.written = target;
        Ok(())
    }
}

/// The length [`encode_header`] will produce, without encoding anything.
pub fn encoded_header_len<'a>(
    kvs: impl Iterator<Item = (&'a str, ValueRef<'a>)>,
    tensors: &[TensorInfo],
    alignment: u64,
) -> u64 {
    let kv_bytes: u64 = kvs
        .map(|(k, v)| 8 + k.len() as u64 + 4 + v.raw.len() as u64)
        .sum();
    let info_bytes: u64 = tensors
        .iter()
        .map(|t| 8 + t.name.len() as u64 + 4 + 8 * t.dims.len() as u64 + 4 + 8)
        .sum();
    layout::pad_to(4 + 4 + 8 + 8 + kv_bytes + info_bytes, alignment).expect("header fits in memory")
}
