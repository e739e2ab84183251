//! The bounded reader under the header parser: every read of a count, a string or a value is
//! checked against the bytes the *file* has left before anything is allocated, and a read
//! past the prefix in memory stops with [`Stop::NeedMore`] so the caller reads more.

use std::path::Path;

use super::MAX_ARRAY_DEPTH;
use crate::gguf::GgufError;
use crate::gguf::value::ValueType;

/// Why a parse of a prefix stopped.
pub(super) enum Stop {
    NeedMore,
    Fail(GgufError),
}

impl From<GgufError> for Stop {
    fn from(e: GgufError) -> Self {
        Stop::Fail(e)
    }
}

/// What is being read, for error messages; formatted only when an error is built, so the
/// hot loop over a vocabulary allocates nothing.
#[derive(Clone, Copy)]
pub(super) struct What<'a>(pub(super) &'static str, pub(super) Option<&'a str>);

impl std::fmt::Display for What<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.1 {
            Some(name) => write!(f, "{} of '{name}'", self.0),
            None => f.write_str(self.0),
        }
    }
}

/// A reading position in a prefix of the file.
pub(super) struct Cursor<'a> {
    pub(super) path: &'a Path,
    pub(super) buf: &'a [u8],
    pub(super) file_len: u64,
    pub(super) pos: usize,
}

impl<'a> Cursor<'a> {
    pub(super) fn offset(&self) -> u64 {
        self.pos as u64
    }

    pub(super) fn remaining_in_file(&self) -> u64 {
        self.file_len.saturating_sub(self.pos as u64)
    }

    pub(super) fn take(&mut self, n: u64, what: What<'_>) -> Result<&'a [u8], Stop> {
        if n > self.remaining_in_file() {
            return Err(Stop::Fail(GgufError::Truncated {
                path: self.path.to_path_buf(),
                what: what.to_string(),
                offset: self.offset(),
                needed: n,
                file_len: self.file_len,
            }));
        }
        let end = self.pos + n as usize;
        if end > self.buf.len() {
            return Err(Stop::NeedMore);
        }
        let bytes = &self.buf[self.pos..end];
        self.pos = end;
        Ok(bytes)
    }

    pub(super) fn u32(&mut self, what: What<'_>) -> Result<u32, Stop> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes(b.try_into().expect("4 bytes")))
    }

    pub(super) fn u64(&mut self, what: What<'_>) -> Result<u64, Stop> {
        let b = self.take(8, what)?;
        Ok(u64::from_le_bytes(b.try_into().expect("8 bytes")))
    }

    /// Check that `count` items of at least `min_size` bytes each can fit in what is left.
    pub(super) fn check_count(
        &self,
        what: What<'_>,
        count: u64,
        min_size: u64,
    ) -> Result<(), Stop> {
        let remaining = self.remaining_in_file();
        let max = remaining / min_size.max(1);
        if count > max {
            return Err(Stop::Fail(GgufError::CountTooLarge {
                path: self.path.to_path_buf(),
                what: what.to_string(),
                offset: self.offset(),
                count,
                remaining,
                max,
            }));
        }
        Ok(())
    }

    /// Skip a string, returning its bytes (without the length prefix).
    pub(super) fn string_bytes(&mut self, what: What<'_>) -> Result<&'a [u8], Stop> {
        let at = self.offset();
        let len = self.u64(what)?;
        if len > self.remaining_in_file() {
            return Err(Stop::Fail(GgufError::StringPastEnd {
                path: self.path.to_path_buf(),
                offset: at,
                len,
                remaining: self.remaining_in_file(),
            }));
        }
        self.take(len, what)
    }

    pub(super) fn string(&mut self, what: What<'_>) -> Result<String, Stop> {
        let at = self.offset();
        let bytes = self.string_bytes(what)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| {
            Stop::Fail(GgufError::NotUtf8 {
                path: self.path.to_path_buf(),
                what: what.to_string(),
                offset: at,
            })
        })
    }

    /// Skip over one value of type `ty`, validating it, without decoding or allocating.
    pub(super) fn skip_value(
        &mut self,
        key: &str,
        ty: ValueType,
        depth: usize,
    ) -> Result<(), Stop> {
        match ty {
            ValueType::String => {
                self.string_bytes(What("string value", Some(key)))?;
            }
            ValueType::Array => {
                let at = self.offset();
                if depth >= MAX_ARRAY_DEPTH {
                    return Err(Stop::Fail(GgufError::NestingTooDeep {
                        path: self.path.to_path_buf(),
                        key: key.to_string(),
                        offset: at,
                        max: MAX_ARRAY_DEPTH,
                    }));
                }
                let elem_id = self.u32(What("array type", Some(key)))?;
                let elem = ValueType::from_id(elem_id).ok_or_else(|| {
                    Stop::Fail(GgufError::UnknownValueType {
                        path: self.path.to_path_buf(),
                        key: key.to_string(),
                        offset: at,
                        found: elem_id,
                    })
                })?;
                let count = self.u64(What("array length", Some(key)))?;
                self.check_count(What("array", Some(key)), count, elem.min_size())?;
                match elem.fixed_size() {
                    // count * size fits: check_count bounded it by the file's length.
                    Some(size) => {
                        self.take(count * size, What("array", Some(key)))?;
                    }
                    None => {
                        for _ in 0..count {
                            self.skip_value(key, elem, depth + 1)?;
                        }
                    }
                }
            }
            t => {
                let size = t.fixed_size().expect("scalar types have a fixed size");
                self.take(size, What("value", Some(key)))?;
            }
        }
        Ok(())
    }
}
