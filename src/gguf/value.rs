//! Metadata values. They are kept as the raw little-endian bytes read from the file and only
//! decoded on request, so a 129 280-token vocabulary costs one byte range, not 129 280 strings.

use std::fmt;

/// GGUF metadata value types, with their on-disk ids.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ValueType {
    /// Unsigned 8-bit integer.
    U8 = 0,
    /// Signed 8-bit integer.
    I8 = 1,
    /// Unsigned 16-bit integer.
    U16 = 2,
    /// Signed 16-bit integer.
    I16 = 3,
    /// Unsigned 32-bit integer.
    U32 = 4,
    /// Signed 32-bit integer.
    I32 = 5,
    /// 32-bit float.
    F32 = 6,
    /// One byte, 0 or 1.
    Bool = 7,
    /// A u64 byte length, then UTF-8 bytes (no terminator).
    String = 8,
    /// An element type id (u32), a u64 count, then the elements (nested arrays allowed).
    Array = 9,
    /// Unsigned 64-bit integer.
    U64 = 10,
    /// Signed 64-bit integer.
    I64 = 11,
    /// 64-bit float.
    F64 = 12,
}

impl ValueType {
    /// The type with this on-disk id; `None` for ids GGUF does not define, which a reader
    /// must reject since it cannot know the value's size.
    pub fn from_id(id: u32) -> Option<ValueType> {
        use ValueType::*;
        Some(match id {
            0 => U8,
            1 => I8,
            2 => U16,
            3 => I16,
            4 => U32,
            5 => I32,
            6 => F32,
            7 => Bool,
            8 => String,
            9 => Array,
            10 => U64,
            11 => I64,
            12 => F64,
            _ => return None,
        })
    }

    /// Bytes of one value of a fixed-size type; `None` for strings and arrays.
    pub fn fixed_size(self) -> Option<u64> {
        use ValueType::*;
        match self {
            U8 | I8 | Bool => Some(1),
            U16 | I16 => Some(2),
            U32 | I32 | F32 => Some(4),
            U64 | I64 | F64 => Some(8),
            String | Array => None,
        }
    }

    /// The fewest bytes one value of this type can take (strings and arrays carry a length).
    pub fn min_size(self) -> u64 {
        match self {
            ValueType::String => 8,
            ValueType::Array => 12,
            t => t.fixed_size().unwrap_or(1),
        }
    }

    /// The lowercase name used in recipes and reports (`u32`, `string`, ...).
    pub fn name(self) -> &'static str {
        use ValueType::*;
        match self {
            U8 => "u8",
            I8 => "i8",
            U16 => "u16",
            I16 => "i16",
            U32 => "u32",
            I32 => "i32",
            F32 => "f32",
            Bool => "bool",
            String => "string",
            Array => "array",
            U64 => "u64",
            I64 => "i64",
            F64 => "f64",
        }
    }

    /// The type a recipe names (`type = "u32"`), by [`ValueType::name`].
    pub fn from_name(name: &str) -> Option<ValueType> {
        (0..=12)
            .filter_map(ValueType::from_id)
            .find(|t| t.name() == name)
    }
}

impl fmt::Display for ValueType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.name())
    }
}

/// A borrowed, already validated metadata value: its type and its raw bytes (for an array:
/// element type, count and elements, exactly as in the file).
///
/// Invariant: `raw` is exactly one well-formed value of type `ty`, every length in it in
/// bounds. The decoders below index without checking on the strength of it, so only the
/// container (whose reader has validated the bytes) builds one; others read it through
/// [`ValueRef::ty`] and [`ValueRef::raw`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ValueRef<'a> {
    pub(super) ty: ValueType,
    pub(super) raw: &'a [u8],
}

/// A decoded scalar value, widened so callers match on kind rather than on width.
#[derive(Clone, Debug, PartialEq)]
pub enum Scalar<'a> {
    /// Any unsigned integer type.
    Uint(u64),
    /// Any signed integer type.
    Int(i64),
    /// `f32` or `f64`.
    Float(f64),
    /// A boolean.
    Bool(bool),
    /// A string, borrowed from the file's bytes.
    Str(&'a str),
}

fn le_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a[..b.len()].copy_from_slice(b);
    u64::from_le_bytes(a)
}

/// Size in bytes of the value of type `ty` at the start of `raw`. Only for bytes the reader
/// has already validated, where every length is known to fit.
fn value_len(ty: ValueType, raw: &[u8]) -> usize {
    match ty {
        ValueType::String => 8 + le_u64(&raw[..8]) as usize,
        ValueType::Array => {
            let elem = ValueType::from_id(le_u64(&raw[..4]) as u32).expect("validated array");
            let count = le_u64(&raw[4..12]) as usize;
            match elem.fixed_size() {
                Some(size) => 12 + count * size as usize,
                None => {
                    let mut pos = 12;
                    for _ in 0..count {
                        pos += value_len(elem, &raw[pos..]);
                    }
                    pos
                }
            }
        }
        t => t.fixed_size().expect("fixed type") as usize,
    }
}

impl<'a> ValueRef<'a> {
    /// The value's type.
    pub fn ty(&self) -> ValueType {
        self.ty
    }

    /// The value's bytes exactly as stored in the file (after the type id), for copying
    /// unchanged into a child.
    pub fn raw(&self) -> &'a [u8] {
        self.raw
    }

    /// Decode a scalar; `None` for arrays.
    pub fn scalar(&self) -> Option<Scalar<'a>> {
        let r = self.raw;
        use ValueType::*;
        Some(match self.ty {
            U8 | U16 | U32 | U64 => Scalar::Uint(le_u64(r)),
            I8 => Scalar::Int(r[0] as i8 as i64),
            I16 => Scalar::Int(i16::from_le_bytes([r[0], r[1]]) as i64),
            I32 => Scalar::Int(i32::from_le_bytes(r[..4].try_into().ok()?) as i64),
            I64 => Scalar::Int(i64::from_le_bytes(r[..8].try_into().ok()?)),
            F32 => Scalar::Float(f32::from_le_bytes(r[..4].try_into().ok()?) as f64),
            F64 => Scalar::Float(f64::from_le_bytes(r[..8].try_into().ok()?)),
            Bool => Scalar::Bool(r[0] != 0),
            String => Scalar::Str(std::str::from_utf8(&r[8..]).ok()?),
            Array => return None,
        })
    }

    /// The value as an unsigned integer, if it is a non-negative integer of any width.
    pub fn as_u64(&self) -> Option<u64> {
        match self.scalar()? {
            Scalar::Uint(v) => Some(v),
            Scalar::Int(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// The value as a float, if it is a number of any type (integers converted, possibly
    /// losing precision past 2^53).
    pub fn as_f64(&self) -> Option<f64> {
        match self.scalar()? {
            Scalar::Float(v) => Some(v),
            Scalar::Uint(v) => Some(v as f64),
            Scalar::Int(v) => Some(v as f64),
            _ => None,
        }
    }

    /// The value as text, if it is a string.
    pub fn as_str(&self) -> Option<&'a str> {
        match self.scalar()? {
            Scalar::Str(s) => Some(s),
            _ => None,
        }
    }

    /// Element type and count of an array.
    pub fn array_header(&self) -> Option<(ValueType, u64)> {
        if self.ty != ValueType::Array {
            return None;
        }
        let elem = ValueType::from_id(le_u64(&self.raw[..4]) as u32)?;
        Some((elem, le_u64(&self.raw[4..12])))
    }

    /// The elements of an array, each as its own `ValueRef`; walked lazily.
    pub fn array_items(&self) -> impl Iterator<Item = ValueRef<'a>> + 'a {
        let (elem, count) = self.array_header().unwrap_or((ValueType::U8, 0));
        let raw = self.raw;
        let mut pos = 12usize;
        (0..count).map(move |_| {
            let len = value_len(elem, &raw[pos..]);
            let item = ValueRef {
                ty: elem,
                raw: &raw[pos..pos + len],
            };
            pos += len;
            item
        })
    }

    /// A short human rendering: scalars in full (long strings cut), arrays as type, length and
    /// the first few items.
    pub fn summary(&self, max_items: usize) -> String {
        match self.array_header() {
            Some((elem, count)) => {
                let items: Vec<String> = self
                    .array_items()
                    .take(max_items)
                    .map(|v| v.summary(max_items))
                    .collect();
                let more = if count as usize > items.len() {
                    ", ..."
                } else {
                    ""
                };
                format!("[{elem}; {count}] [{}{more}]", items.join(", "))
            }
            None => match self.scalar() {
                Some(Scalar::Str(s)) => {
                    let cut: String = s.chars().take(80).collect();
                    let more = if cut.len() < s.len() { "..." } else { "" };
                    format!("{:?}{more}", cut)
                }
                Some(Scalar::Uint(v)) => v.to_string(),
                Some(Scalar::Int(v)) => v.to_string(),
                // Shortest text that reads back as the stored width (1e-6, not 9.99e-7...).
                Some(Scalar::Float(v)) if self.ty == ValueType::F32 => (v as f32).to_string(),
                Some(Scalar::Float(v)) => v.to_string(),
                Some(Scalar::Bool(v)) => v.to_string(),
                None => "<invalid>".to_string(),
            },
        }
    }

    /// The value as JSON: scalars decoded; arrays in full when `full_arrays`, else summarised.
    pub fn to_json(&self, full_arrays: bool) -> serde_json::Value {
        use serde_json::{Value, json};
        match self.array_header() {
            Some((elem, count)) => {
                let limit = if full_arrays { usize::MAX } else { 8 };
                let items: Vec<Value> = self
                    .array_items()
                    .take(limit)
                    .map(|v| v.to_json(full_arrays))
                    .collect();
                json!({"elem_type": elem.name(), "len": count, "items": items})
            }
            None => match self.scalar() {
                Some(Scalar::Str(s)) => json!(s),
                Some(Scalar::Uint(v)) => json!(v),
                Some(Scalar::Int(v)) => json!(v),
                Some(Scalar::Float(v)) => json!(v),
                Some(Scalar::Bool(v)) => json!(v),
                None => Value::Null,
            },
        }
    }
}

/// An owned value ready to be written: a type and its raw bytes.
///
/// Invariant, as for [`ValueRef`]: `raw` is one well-formed value of type `ty`. The fields
/// are private so that only the constructors below, which encode it, can make one.
#[derive(Clone, Debug, PartialEq)]
pub struct OwnedValue {
    ty: ValueType,
    raw: Vec<u8>,
}

impl OwnedValue {
    /// A string value.
    pub fn string(s: &str) -> Self {
        let mut raw = (s.len() as u64).to_le_bytes().to_vec();
        raw.extend_from_slice(s.as_bytes());
        OwnedValue {
            ty: ValueType::String,
            raw,
        }
    }

    /// A `u16` value.
    pub fn u16(v: u16) -> Self {
        OwnedValue {
            ty: ValueType::U16,
            raw: v.to_le_bytes().to_vec(),
        }
    }

    /// A `u32` value.
    pub fn u32(v: u32) -> Self {
        OwnedValue {
            ty: ValueType::U32,
            raw: v.to_le_bytes().to_vec(),
        }
    }

    /// A `i32` value.
    pub fn i32(v: i32) -> Self {
        OwnedValue {
            ty: ValueType::I32,
            raw: v.to_le_bytes().to_vec(),
        }
    }

    /// The value's type.
    pub fn ty(&self) -> ValueType {
        self.ty
    }

    /// Borrowed, to decode, show or write it like a value read from a file.
    pub fn as_ref(&self) -> ValueRef<'_> {
        ValueRef {
            ty: self.ty,
            raw: &self.raw,
        }
    }

    /// Encode a typed scalar given as text or TOML, for `metadata.set` in recipes.
    pub fn parse_typed(ty: ValueType, value: &toml::Value) -> Result<Self, String> {
        let raw = match (ty, value) {
            (ValueType::String, toml::Value::String(s)) => return Ok(OwnedValue::string(s)),
            (ValueType::Bool, toml::Value::Boolean(b)) => vec![*b as u8],
            (ValueType::F32, v) => f32_of(float_of(v)?)?.to_le_bytes().to_vec(),
            (ValueType::F64, v) => float_of(v)?.to_le_bytes().to_vec(),
            (t, toml::Value::Integer(i)) => {
                let i = *i;
                let out_of_range = || format!("{i} does not fit in {t}");
                match t {
                    ValueType::U8 => vec![u8::try_from(i).map_err(|_| out_of_range())?],
                    ValueType::I8 => i8::try_from(i)
                        .map_err(|_| out_of_range())?
                        .to_le_bytes()
                        .to_vec(),
                    ValueType::U16 => u16::try_from(i)
                        .map_err(|_| out_of_range())?
                        .to_le_bytes()
                        .to_vec(),
                    ValueType::I16 => i16::try_from(i)
                        .map_err(|_| out_of_range())?
                        .to_le_bytes()
                        .to_vec(),
                    ValueType::U32 => u32::try_from(i)
                        .map_err(|_| out_of_range())?
                        .to_le_bytes()
                        .to_vec(),
                    ValueType::I32 => i32::try_from(i)
                        .map_err(|_| out_of_range())?
                        .to_le_bytes()
                        .to_vec(),
                    ValueType::U64 => u64::try_from(i)
                        .map_err(|_| out_of_range())?
                        .to_le_bytes()
                        .to_vec(),
                    ValueType::I64 => i.to_le_bytes().to_vec(),
                    _ => return Err(format!("{t} values cannot be set from an integer")),
                }
            }
            (t, v) => return Err(format!("cannot store {} as {t}", v.type_str())),
        };
        Ok(OwnedValue { ty, raw })
    }
}

/// `v` as an f32, refusing a finite value that would become infinite or a non-zero value
/// that would become zero. Infinities and NaN are stored when written as such (TOML's `inf`,
/// `-inf`, `nan`): they are values a user can mean, not accidents of range.
fn f32_of(v: f64) -> Result<f32, String> {
    let f = v as f32;
    if v.is_finite() && f.is_infinite() {
        return Err(format!(
            "{v:e} does not fit in f32 (largest: {:e}); use type = \"f64\"",
            f32::MAX
        ));
    }
    if v != 0.0 && f == 0.0 {
        return Err(format!(
            "{v:e} is too small for f32 (it would be stored as 0; smallest: {:e}); use type = \"f64\"",
            f32::from_bits(1)
        ));
    }
    Ok(f)
}

fn float_of(v: &toml::Value) -> Result<f64, String> {
    match v {
        toml::Value::Float(f) => Ok(*f),
        toml::Value::Integer(i) => Ok(*i as f64),
        other => Err(format!("expected a number, found {}", other.type_str())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn string_array(items: &[&str]) -> Vec<u8> {
        let mut raw = 8u32.to_le_bytes().to_vec();
        raw.extend_from_slice(&(items.len() as u64).to_le_bytes());
        for s in items {
            raw.extend_from_slice(&(s.len() as u64).to_le_bytes());
            raw.extend_from_slice(s.as_bytes());
        }
        raw
    }

    #[test]
    fn decodes_scalars_from_raw_bytes() {
        let v = ValueRef {
            ty: ValueType::I16,
            raw: &(-5i16).to_le_bytes(),
        };
        assert_eq!(v.scalar(), Some(Scalar::Int(-5)));
        assert_eq!(v.as_u64(), None);
        let s = OwnedValue::string("deepseek2");
        assert_eq!(s.as_ref().as_str(), Some("deepseek2"));
    }

    #[test]
    fn walks_string_arrays_lazily() {
        let raw = string_array(&["a", "bc", ""]);
        let v = ValueRef {
            ty: ValueType::Array,
            raw: &raw,
        };
        assert_eq!(v.array_header(), Some((ValueType::String, 3)));
        let items: Vec<_> = v.array_items().map(|i| i.as_str().unwrap()).collect();
        assert_eq!(items, ["a", "bc", ""]);
        assert_eq!(v.summary(2), "[string; 3] [\"a\", \"bc\", ...]");
    }

    #[test]
    fn typed_values_check_ranges() {
        let v = OwnedValue::parse_typed(ValueType::U16, &toml::Value::Integer(70000));
        assert!(v.is_err());
        let v = OwnedValue::parse_typed(ValueType::U32, &toml::Value::Integer(7)).unwrap();
        assert_eq!(v.raw, 7u32.to_le_bytes());
        let v = OwnedValue::parse_typed(ValueType::F32, &toml::Value::Float(0.5)).unwrap();
        assert_eq!(v.raw, 0.5f32.to_le_bytes());
        assert!(
            OwnedValue::parse_typed(ValueType::Bool, &toml::Value::String("x".into())).is_err()
        );
        // f32 refuses what it cannot hold instead of storing inf or 0.
        let f32_of = |v: f64| OwnedValue::parse_typed(ValueType::F32, &toml::Value::Float(v));
        assert_eq!(
            f32_of(1e300).unwrap_err(),
            "1e300 does not fit in f32 (largest: 3.4028235e38); use type = \"f64\""
        );
        assert!(f32_of(-1e39).is_err() && f32_of(1e-50).is_err());
        assert_eq!(
            f32_of(f64::from(f32::MAX)).unwrap().raw,
            f32::MAX.to_le_bytes()
        );
        assert_eq!(f32_of(1e-45).unwrap().raw, f32::from_bits(1).to_le_bytes());
        // Written as infinity or NaN, they are stored.
        assert_eq!(
            f32_of(f64::INFINITY).unwrap().raw,
            f32::INFINITY.to_le_bytes()
        );
        assert!(f32::from_le_bytes(f32_of(f64::NAN).unwrap().raw.try_into().unwrap()).is_nan());
    }
}
