//! Reading router files: NumPy's `.npy` and `.safetensors`, each checked as a chain of small
//! steps (magic, header bounds, a key given once, data that ends where the file ends), and
//! their values decoded to F32 with the first one that is not a finite F32 noted, for the
//! caller to refuse by file, tensor and element.

use std::collections::HashSet;
use std::fmt;
use std::io::Read;
use std::path::Path;

use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};

use crate::assemble::AssembleError;

/// The first element that is not a finite F32: (position, the value as stored).
type FirstBad = Option<(u64, String)>;

/// A tensor read from a file: shape (outermost first, as NumPy writes it) and values.
pub(super) struct Array {
    pub(super) shape: Vec<u64>,
    pub(super) values: Vec<f32>,
    /// The first element that is not a finite F32.
    pub(super) bad: FirstBad,
}

/// The file's bytes: a regular file only (`/dev/zero` would never end).
pub(super) fn read_bytes(path: &Path) -> Result<Vec<u8>, AssembleError> {
    let (mut file, meta) = crate::input::open_regular(path)?;
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.read_to_end(&mut bytes)
        .map_err(|source| AssembleError::Io {
            path: path.to_path_buf(),
            source,
        })?;
    Ok(bytes)
}

/// Element count of a shape, bounded by the bytes available (`None`: too many).
fn count(shape: &[u64], width: usize, available: usize) -> Option<usize> {
    let n = shape.iter().try_fold(1u64, |a, &d| a.checked_mul(d))?;
    let bytes = n.checked_mul(width as u64)?;
    (bytes <= available as u64).then_some(n as usize)
}

/// The values of `data`, and the first one that is not a finite F32 (an F64 is judged
/// after conversion, so `1e300` is refused as the infinity it would become).
fn decode(dtype: &str, data: &[u8]) -> Result<(Vec<f32>, FirstBad), String> {
    let mut bad = None;
    let mut note = |i: usize, v: f32, shown: &dyn Fn() -> String| {
        if !v.is_finite() && bad.is_none() {
            bad = Some((i as u64, shown()));
        }
        v
    };
    let values = match dtype {
        "f4" | "F32" => data
            .chunks_exact(4)
            .enumerate()
            .map(|(i, c)| {
                let v = f32::from_le_bytes(c.try_into().expect("4 bytes"));
                note(i, v, &|| v.to_string())
            })
            .collect(),
        "f8" | "F64" => data
            .chunks_exact(8)
            .enumerate()
            .map(|(i, c)| {
                let x = f64::from_le_bytes(c.try_into().expect("8 bytes"));
                note(i, x as f32, &|| {
                    if x.is_finite() {
                        format!("the F64 {x:e}, beyond F32's range")
                    } else {
                        x.to_string()
                    }
                })
            })
            .collect(),
        "f2" | "F16" => data
            .chunks_exact(2)
            .enumerate()
            .map(|(i, c)| {
                let v = f16_to_f32(u16::from_le_bytes([c[0], c[1]]));
                note(i, v, &|| v.to_string())
            })
            .collect(),
        "BF16" => data
            .chunks_exact(2)
            .enumerate()
            .map(|(i, c)| {
                let v = f32::from_bits((u16::from_le_bytes([c[0], c[1]]) as u32) << 16);
                note(i, v, &|| v.to_string())
            })
            .collect(),
        other => {
            return Err(format!(
                "values of type {other} (use F32, F16, BF16 or F64)"
            ));
        }
    };
    Ok((values, bad))
}

fn width(dtype: &str) -> usize {
    match dtype {
        "f8" | "F64" => 8,
        "f2" | "F16" | "BF16" => 2,
        _ => 4,
    }
}

/// IEEE half to single precision (exact).
pub(super) fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h >> 15) as u32) << 31;
    let exp = ((h >> 10) & 0x1f) as u32;
    let frac = (h & 0x3ff) as u32;
    let bits = match (exp, frac) {
        (0, 0) => sign,
        (0, f) => {
            // Subnormal: normalise.
            let shift = f.leading_zeros() - 21;
            let f = (f << shift) & 0x3ff;
            sign | ((113 - shift) << 23) | (f << 13)
        }
        (0x1f, f) => sign | 0x7f80_0000 | (f << 13),
        (e, f) => sign | ((e + 112) << 23) | (f << 13),
    };
    f32::from_bits(bits)
}

/// NumPy's `.npy`: magic, version, header length, a Python dict literal, then the data,
/// which must end where the file ends.
pub(super) fn read_npy(bytes: &[u8]) -> Result<Array, String> {
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err("not a NumPy .npy file (no \\x93NUMPY magic)".into());
    }
    let (hlen, start): (usize, usize) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (
            u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes")) as usize,
            12,
        ),
        v => return Err(format!(".npy version {v} is not supported")),
    };
    let header = bytes
        .get(start..start.saturating_add(hlen))
        .ok_or("the .npy header runs past the end of the file")?;
    let header = std::str::from_utf8(header).map_err(|_| "the .npy header is not text")?;
    let field = |key: &str| -> Option<&str> {
        let at = header.find(&format!("'{key}'"))? + key.len() + 2;
        Some(header[at..].trim_start().strip_prefix(':')?.trim_start())
    };
    let descr = field("descr")
        .and_then(|r| r.strip_prefix('\'')?.split('\'').next())
        .ok_or("the .npy header has no 'descr'")?;
    let dtype = match descr {
        "<f4" | "<f8" | "<f2" => &descr[1..],
        other => {
            return Err(format!(
                "values of type '{other}' (use little-endian <f4, <f8 or <f2)"
            ));
        }
    };
    if field("fortran_order").is_some_and(|r| r.starts_with("True")) {
        return Err(
            "the array is in Fortran order; save it in C order (np.ascontiguousarray)".into(),
        );
    }
    let shape_text = field("shape")
        .and_then(|r| r.strip_prefix('(')?.split(')').next())
        .ok_or("the .npy header has no 'shape'")?;
    let shape: Vec<u64> = shape_text
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().map_err(|_| format!("bad shape ({shape_text})")))
        .collect::<Result<_, _>>()?;
    let data = &bytes[start + hlen..];
    let n = count(&shape, width(dtype), data.len())
        .ok_or_else(|| format!("shape {shape:?} needs more data than the file holds"))?;
    let used = n * width(dtype);
    if data.len() > used {
        return Err(format!(
            "{} bytes after the data of shape {shape:?} (<{dtype}, {used} bytes): not one array as np.save writes it",
            data.len() - used
        ));
    }
    let (values, bad) = decode(dtype, data)?;
    Ok(Array { shape, values, bad })
}

/// One tensor's entry in a `.safetensors` header; a field given twice is refused.
#[derive(Deserialize)]
struct Entry {
    dtype: String,
    shape: Vec<u64>,
    data_offsets: [u64; 2],
}

/// A `.safetensors` header: its tensors in file order. A key given twice, at either level,
/// is refused (a JSON reader would keep one of them silently).
struct Header(Vec<(String, Entry)>);

/// An object whose values are not needed (`__metadata__`), checked for repeated keys.
struct UniqueKeys;

fn once<E: de::Error>(seen: &mut HashSet<String>, key: &str) -> Result<(), E> {
    if seen.insert(key.to_string()) {
        Ok(())
    } else {
        Err(E::custom(format!("key '{key}' is given twice")))
    }
}

impl<'de> Deserialize<'de> for UniqueKeys {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = UniqueKeys;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<UniqueKeys, A::Error> {
                let mut seen = HashSet::new();
                while let Some(k) = m.next_key::<String>()? {
                    once(&mut seen, &k)?;
                    m.next_value::<IgnoredAny>()?;
                }
                Ok(UniqueKeys)
            }
        }
        d.deserialize_map(V)
    }
}

impl<'de> Deserialize<'de> for Header {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Header;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object of tensors")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Header, A::Error> {
                let mut seen = HashSet::new();
                let mut out = Vec::new();
                while let Some(k) = m.next_key::<String>()? {
                    once(&mut seen, &k)?;
                    if k == "__metadata__" {
                        m.next_value::<UniqueKeys>()?;
                        continue;
                    }
                    let entry = m
                        .next_value::<Entry>()
                        .map_err(|e| de::Error::custom(format!("'{k}': {e}")))?;
                    out.push((k, entry));
                }
                Ok(Header(out))
            }
        }
        d.deserialize_map(V)
    }
}

/// The tensors of a `.safetensors` file: an 8-byte header length, a JSON header, the data.
pub(super) fn read_safetensors(bytes: &[u8]) -> Result<Vec<(String, Array)>, String> {
    let len = bytes
        .get(..8)
        .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
        .ok_or("not a .safetensors file (too short)")?;
    let end = 8usize
        .checked_add(usize::try_from(len).map_err(|_| "header length too large")?)
        .filter(|&e| e <= bytes.len())
        .ok_or("the .safetensors header runs past the end of the file")?;
    let Header(header) =
        serde_json::from_slice(&bytes[8..end]).map_err(|e| format!("bad header: {e}"))?;
    let data = &bytes[end..];
    let mut out = Vec::new();
    for (name, t) in header {
        let [a, b] = t.data_offsets;
        let raw = data
            .get(a as usize..b as usize)
            .filter(|_| a <= b)
            .ok_or(format!("'{name}': data_offsets past the end of the file"))?;
        let w = width(&t.dtype);
        let n = count(&t.shape, w, raw.len());
        if n.map(|n| n * w) != Some(raw.len()) {
            return Err(format!(
                "'{name}': {} bytes do not hold shape {:?} of {}",
                raw.len(),
                t.shape,
                t.dtype
            ));
        }
        let (values, bad) = decode(&t.dtype, raw).map_err(|e| format!("'{name}': {e}"))?;
        out.push((
            name,
            Array {
                shape: t.shape,
                values,
                bad,
            },
        ));
    }
    Ok(out)
}
