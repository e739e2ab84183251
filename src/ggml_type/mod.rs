//! The ggml tensor type tables: which type ids exist and how many bytes a block (and a row) of
//! each takes, for the two programs whose files we read.
//!
//! Mainline llama.cpp (`mainline.rs`) and ik_llama.cpp (`ik.rs`) agree on most ids, but not all:
//! ik has its own types (ids 97-99 and 133 up), keeps ids mainline removed (31-33) and reuses
//! one (36), lacks some of mainline's (34, 35, 40, 42), and sizes Q8_K (15) differently. An
//! id's meaning can therefore depend on the file's [`Flavour`]; [`classify_id`] says which ids
//! decide a flavour (those only one program defines) and which need one (Q8_K). The reader (`gguf::read`) decides a file's flavour;
//! everything after it works with resolved [`GgmlType`]s.
//!
//! Ids that neither table defines are unknown on purpose: guessing a size would corrupt data.

use std::fmt;

mod ik;
mod mainline;

/// Which program's type table a file is read with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Flavour {
    /// Mainline llama.cpp / ggml.
    Mainline,
    /// ik_llama.cpp, the fork with its own quant types (IQ2_KS, IQ4_KS, IQ2_KT, ...).
    Ik,
}

impl Flavour {
    /// The name `--flavour` takes: `mainline` or `ik`.
    pub fn arg(self) -> &'static str {
        match self {
            Flavour::Mainline => "mainline",
            Flavour::Ik => "ik",
        }
    }

    /// The program, as a user knows it: `llama.cpp` or `ik_llama.cpp`.
    pub fn program(self) -> &'static str {
        match self {
            Flavour::Mainline => "llama.cpp",
            Flavour::Ik => "ik_llama.cpp",
        }
    }
}

impl fmt::Display for Flavour {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.arg())
    }
}

impl std::str::FromStr for Flavour {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "mainline" | "llama.cpp" => Ok(Flavour::Mainline),
            "ik" | "ik_llama.cpp" => Ok(Flavour::Ik),
            _ => Err(format!(
                "unknown flavour '{s}': expected 'mainline' or 'ik'"
            )),
        }
    }
}

/// Which programs define a type with this id and this byte layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Origin {
    /// Both, identically: llama.cpp and ik_llama.cpp load it.
    Both,
    /// Only mainline llama.cpp.
    Mainline,
    /// Only ik_llama.cpp.
    Ik,
}

impl Origin {
    /// The programs that load a tensor of a type of this origin.
    pub fn loaded_by(self) -> &'static str {
        match self {
            Origin::Both => "llama.cpp and ik_llama.cpp",
            Origin::Mainline => "llama.cpp only",
            Origin::Ik => "ik_llama.cpp only",
        }
    }
}

/// What a type id tells about a file's flavour.
///
/// A file can only be for a program that defines every id it uses: an id only one program
/// defines decides the flavour. Only an id both define differently leaves it open.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdClass {
    /// The same type, with the same layout, in both tables.
    Shared,
    /// A type only mainline llama.cpp defines (TQ1_0, TQ2_0, NVFP4, Q2_0): ik_llama.cpp has
    /// no type with this id, so a file that has it is mainline's.
    MainlineOnly,
    /// A type only ik_llama.cpp defines (its own ranges 97 and up, and 31-33 and 36, which
    /// mainline removed): a file that has it is ik_llama.cpp's.
    IkOnly,
    /// Both tables define the id, differently (Q8_K: 292 bytes in mainline, 296 in ik): its
    /// meaning depends on the flavour, which must come from elsewhere.
    Contested,
    /// Neither table defines it.
    Unknown,
}

/// How the id `id` bears on a file's flavour.
pub fn classify_id(id: u32) -> IdClass {
    match (mainline::get(id), ik::get(id)) {
        (None, None) => IdClass::Unknown,
        (Some(m), Some(k)) if m.same_bytes(k) => IdClass::Shared,
        (Some(_), Some(_)) => IdClass::Contested,
        (Some(_), None) => IdClass::MainlineOnly,
        (None, Some(_)) => IdClass::IkOnly,
    }
}

/// What `id` means in `flavour`'s table, for messages: a type name, or "no type".
pub fn meaning(id: u32, flavour: Flavour) -> String {
    let (layout, removed) = match flavour {
        Flavour::Mainline => (mainline::get(id), mainline::removed_name(id)),
        Flavour::Ik => (ik::get(id), ik::removed_name(id)),
    };
    match (layout, removed) {
        (Some(l), _) => {
            let mut s = format!(
                "{} ({} bytes per {} elements",
                l.name, l.type_size, l.block_size
            );
            if l.row_meta > 0 {
                s += &format!(", plus {} bytes a row", l.row_meta);
            }
            s + ")"
        }
        (None, Some(old)) => format!("no type ({old} was removed)"),
        (None, None) => "no type".into(),
    }
}

/// Byte layout of one type: elements and bytes per block, bytes of metadata at the start of
/// every row, rows stored interleaved, and for I2_S a per-tensor tail.
#[derive(Debug)]
struct Layout {
    name: &'static str,
    block_size: u64,
    type_size: u64,
    /// Bytes before the blocks of each row (ik's `row_meta_size`: a row scale).
    row_meta: u64,
    /// Rows interleaved in groups of this many (ik's `_R4`, `_R8`, `_R16` types), else 1.
    rows: u64,
    /// I2_S only: the data is `elements / 4` bytes and then this many bytes of scale; the
    /// tensor cannot be cut into rows.
    tail: Option<u64>,
}

impl Layout {
    const fn blocks(name: &'static str, block_size: u64, type_size: u64) -> Layout {
        Layout {
            name,
            block_size,
            type_size,
            row_meta: 0,
            rows: 1,
            tail: None,
        }
    }

    const fn meta(mut self, row_meta: u64) -> Layout {
        self.row_meta = row_meta;
        self
    }

    const fn rows(mut self, rows: u64) -> Layout {
        self.rows = rows;
        self
    }

    const fn i2s(name: &'static str, tail: u64) -> Layout {
        let mut l = Layout::blocks(name, 1, 1);
        l.tail = Some(tail);
        l
    }

    /// Whether tensors of the two layouts have the same bytes for the same shape (names
    /// aside: ik calls mainline's Q1_0 `Q1_0_G128`).
    fn same_bytes(&self, o: &Layout) -> bool {
        (
            self.block_size,
            self.type_size,
            self.row_meta,
            self.rows,
            self.tail,
        ) == (o.block_size, o.type_size, o.row_meta, o.rows, o.tail)
    }
}

/// A ggml tensor type that this build knows the layout of, resolved for a flavour.
///
/// Two types are equal when they have the same id and the same bytes: a Q4_K read from a
/// mainline file equals one read from an ik_llama.cpp file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GgmlType {
    id: u32,
    origin: Origin,
}

impl GgmlType {
    /// F32.
    pub const F32: GgmlType = GgmlType::both(0);
    /// F16.
    pub const F16: GgmlType = GgmlType::both(1);
    /// Q8_0.
    pub const Q8_0: GgmlType = GgmlType::both(8);
    /// Q3_K.
    pub const Q3_K: GgmlType = GgmlType::both(11);
    /// Q4_K.
    pub const Q4_K: GgmlType = GgmlType::both(12);
    /// IQ2_XXS.
    pub const IQ2_XXS: GgmlType = GgmlType::both(16);
    /// BF16.
    pub const BF16: GgmlType = GgmlType::both(30);
    /// ik_llama.cpp's IQ4_KS (256 elements in 136 bytes, plus a 4-byte scale a row).
    pub const IQ4_KS: GgmlType = GgmlType::ik_only(144);
    /// ik_llama.cpp's IQ2_KS (256 elements in 70 bytes, plus a 2-byte scale a row).
    pub const IQ2_KS: GgmlType = GgmlType::ik_only(145);
    /// ik_llama.cpp's IQ3_K (256 elements in 110 bytes, no row metadata).
    pub const IQ3_K: GgmlType = GgmlType::ik_only(138);

    const fn both(id: u32) -> GgmlType {
        GgmlType {
            id,
            origin: Origin::Both,
        }
    }

    const fn ik_only(id: u32) -> GgmlType {
        GgmlType {
            id,
            origin: Origin::Ik,
        }
    }

    /// The type `id` means in `flavour`'s table, or `None` when that table has no such id.
    pub fn lookup(id: u32, flavour: Flavour) -> Option<GgmlType> {
        let own = match flavour {
            Flavour::Mainline => mainline::get(id),
            Flavour::Ik => ik::get(id),
        };
        own?;
        let origin = match classify_id(id) {
            IdClass::Shared => Origin::Both,
            _ => match flavour {
                Flavour::Mainline => Origin::Mainline,
                Flavour::Ik => Origin::Ik,
            },
        };
        Some(GgmlType { id, origin })
    }

    /// The type with this id in mainline ggml's table.
    pub fn from_id(id: u32) -> Option<GgmlType> {
        GgmlType::lookup(id, Flavour::Mainline)
    }

    /// The type with this name (`Q4_K`, `IQ2_XXS`, `iq4_ks`), case-insensitive: mainline's
    /// first, then ik_llama.cpp's.
    pub fn from_name(name: &str) -> Option<GgmlType> {
        [Flavour::Mainline, Flavour::Ik]
            .into_iter()
            .flat_map(GgmlType::all_of)
            .find(|t| t.name().eq_ignore_ascii_case(name))
    }

    /// Every type mainline ggml defines, by id.
    pub fn all() -> impl Iterator<Item = GgmlType> {
        GgmlType::all_of(Flavour::Mainline)
    }

    /// Every type `flavour`'s table defines, by id.
    pub fn all_of(flavour: Flavour) -> Box<dyn Iterator<Item = GgmlType>> {
        match flavour {
            Flavour::Mainline => Box::new(
                (0..mainline::TABLE.len() as u32)
                    .filter_map(move |id| GgmlType::lookup(id, flavour)),
            ),
            Flavour::Ik => Box::new(
                ik::TABLE
                    .iter()
                    .filter_map(move |(id, _)| GgmlType::lookup(*id, flavour)),
            ),
        }
    }

    fn layout(self) -> &'static Layout {
        match self.origin {
            Origin::Both | Origin::Mainline => mainline::get(self.id),
            Origin::Ik => ik::get(self.id),
        }
        .expect("GgmlType is only built from ids present in its table")
    }

    /// The id stored in files.
    pub fn id(self) -> u32 {
        self.id
    }

    /// Which programs define this type.
    pub fn origin(self) -> Origin {
        self.origin
    }

    /// The name as ggml spells it, upper case (`Q4_K`, `IQ4_KS`).
    pub fn name(self) -> &'static str {
        self.layout().name
    }

    /// Elements per block.
    pub fn block_size(self) -> u64 {
        self.layout().block_size
    }

    /// Bytes per block.
    pub fn type_size(self) -> u64 {
        self.layout().type_size
    }

    /// Bytes of metadata at the start of every row, before its blocks (ik_llama.cpp's row
    /// scales); 0 for most types.
    pub fn row_meta_bytes(self) -> u64 {
        self.layout().row_meta
    }

    /// Rows are stored interleaved in groups of this many (1: not interleaved).
    pub fn interleaved_rows(self) -> u64 {
        self.layout().rows
    }

    /// For I2_S: the bytes of per-tensor scale after the packed values. Such a tensor is
    /// `elements / 4 + tail` bytes and has no row layout.
    pub fn tensor_tail_bytes(self) -> Option<u64> {
        self.layout().tail
    }

    /// Whether the type is a block-quantized one (as opposed to a plain float or int type).
    pub fn is_quantized(self) -> bool {
        self.block_size() > 1 || self.tensor_tail_bytes().is_some()
    }
}

impl fmt::Display for GgmlType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.name())
    }
}

#[cfg(test)]
mod tests;
