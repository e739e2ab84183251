//! A map laid out once as rectangles and text ([`Scene`]), which the SVG and PNG writers
//! only draw; and the colors, shared with the terminal grid.
//!
//! Text is ASCII and measured in the PNG's bitmap fonts (6 x 10 and 7 x 13 pixels), so both
//! pictures have the same layout.

use super::{Cell, Map, MapKind, Panel};
use crate::render::values::number;
use crate::roles::Role;

/// An RGB color.
pub(crate) type Rgb = [u8; 3];

/// How text is aligned on its x.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Anchor {
    Start,
    Middle,
    End,
}

/// Two text sizes: labels and the title.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Size {
    Small,
    Large,
}

impl Size {
    /// Advance of one character, pixels.
    pub(crate) fn char_width(self) -> u32 {
        match self {
            Size::Small => 6,
            Size::Large => 7,
        }
    }
}

/// What a scene is made of.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Item {
    /// A filled rectangle, with an outline and a tooltip if given.
    Rect {
        x: u32,
        y: u32,
        w: u32,
        h: u32,
        fill: Rgb,
        stroke: Option<Rgb>,
        title: Option<String>,
    },
    /// Text whose baseline starts (or is centered, or ends) at (x, y).
    Text {
        x: u32,
        y: u32,
        text: String,
        size: Size,
        anchor: Anchor,
    },
}

/// A laid-out picture.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Scene {
    pub(crate) width: u32,
    pub(crate) height: u32,
    pub(crate) items: Vec<Item>,
}

pub(crate) const WHITE: Rgb = [255, 255, 255];
const FRAME: Rgb = [160, 160, 160];
/// Distance exactly 0: the values are equal.
pub(crate) const IDENTICAL: Rgb = [217, 217, 217];
/// Not compared: pale red, apart from white (no tensor there) and the ramp.
pub(crate) const NOT_COMPARED: Rgb = [250, 200, 200];
/// Several parents (identical in them).
pub(crate) const SEVERAL: Rgb = [170, 170, 170];
/// No parent: the alarm.
pub(crate) const NONE: Rgb = [0, 0, 0];
/// Made by a mix rule.
pub(crate) const MIXED: Rgb = [148, 103, 189];
/// A strip cell whose tensors come from different parents.
pub(crate) const VARIOUS: Rgb = [110, 110, 110];

/// Okabe and Ito's palette for parents, distinguishable with color-blindness.
const PARENTS: [Rgb; 7] = [
    [0, 114, 178],
    [230, 159, 0],
    [0, 158, 115],
    [204, 121, 167],
    [86, 180, 233],
    [213, 94, 0],
    [240, 228, 66],
];

/// Viridis at 0, 1/8, ..., 1: perceptually even, dark (close) to bright (far).
const VIRIDIS: [Rgb; 9] = [
    [68, 1, 84],
    [71, 44, 122],
    [59, 81, 139],
    [44, 113, 142],
    [33, 144, 141],
    [39, 173, 129],
    [92, 200, 99],
    [170, 220, 50],
    [253, 231, 37],
];

/// The color of parent `i`.
pub(crate) fn parent_color(i: usize) -> Rgb {
    PARENTS[i % PARENTS.len()]
}

/// Viridis at `t` in [0, 1].
pub(crate) fn ramp(t: f64) -> Rgb {
    let t = if t.is_nan() { 1.0 } else { t.clamp(0.0, 1.0) };
    let x = t * (VIRIDIS.len() - 1) as f64;
    let i = (x.floor() as usize).min(VIRIDIS.len() - 2);
    let f = x - i as f64;
    let (a, b) = (VIRIDIS[i], VIRIDIS[i + 1]);
    [0, 1, 2].map(|k| (a[k] as f64 + (b[k] as f64 - a[k] as f64) * f).round() as u8)
}

/// The color of a cell; `None` for an empty one. Distances are scaled to `max`.
pub(crate) fn cell_color(c: &Cell, max: f64) -> Option<Rgb> {
    Some(match c {
        Cell::Empty => return None,
        Cell::Distance { distance, .. } if *distance == 0.0 => IDENTICAL,
        Cell::Distance { distance, .. } => ramp(if max > 0.0 { distance / max } else { 1.0 }),
        Cell::NotCompared => NOT_COMPARED,
        Cell::Parents(p) if p.is_empty() => NONE,
        Cell::Parents(p) if p.len() == 1 => parent_color(p[0]),
        Cell::Parents(_) => SEVERAL,
        Cell::Mixed => MIXED,
        Cell::Various => VARIOUS,
    })
}

/// A short column label for a strip role.
pub(crate) fn role_abbrev(r: Role) -> &'static str {
    match r {
        Role::Embeddings => "emb",
        Role::Attention => "attn",
        Role::Norms => "norm",
        Role::DenseFfn => "ffn",
        Role::Router => "rtr",
        Role::SharedExperts => "shx",
        Role::RoutedExperts => "exp",
        Role::Output => "out",
        Role::Other => "oth",
    }
}

/// What a cell says, for tooltips.
pub(crate) fn cell_text(map: &Map, c: &Cell) -> String {
    let parents: &[String] = match &map.kind {
        MapKind::Provenance { parents, .. } => parents,
        MapKind::Distance { .. } => &[],
    };
    match c {
        Cell::Empty => String::new(),
        Cell::Distance { distance, cosine } => {
            format!("distance {}, cosine {}", number(*distance), number(*cosine))
        }
        Cell::NotCompared => "not compared".into(),
        Cell::Parents(p) if p.is_empty() => "matches no parent".into(),
        Cell::Parents(p) => {
            let names: Vec<&str> = p.iter().map(|&i| parents[i].as_str()).collect();
            format!("from {}", names.join(" = "))
        }
        Cell::Mixed => "mixed (a mix rule makes it)".into(),
        Cell::Various => "from different parents".into(),
    }
}

/// Ticks for a scale from 0 to `max`: 0 and multiples of a round step.
pub(crate) fn ticks(max: f64) -> Vec<f64> {
    if max <= 0.0 || !max.is_finite() {
        return vec![0.0];
    }
    let raw = max / 4.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    (0..)
        .map(|k| k as f64 * step)
        .take_while(|t| *t <= max * (1.0 + 1e-9))
        .collect()
}

/// A tick's number without trailing zeros: `0.5`, not `0.5000`.
pub(crate) fn tick_label(t: f64) -> String {
    let s = number(t);
    if s.contains('.') && !s.contains('e') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

const MARGIN: u32 = 12;
const LABEL_W: u32 = 42;
const GAP: u32 = 18;
const STRIP_W: u32 = 30;
const LINE: u32 = 14;

fn text(x: u32, y: u32, s: impl Into<String>, size: Size, anchor: Anchor) -> Item {
    Item::Text {
        x,
        y,
        text: s.into(),
        size,
        anchor,
    }
}

fn width_of(s: &str, size: Size) -> u32 {
    s.chars().count() as u32 * size.char_width()
}

/// Lay out `map`: the header, then the grid's row labels, a panel per stacked-experts
/// tensor and the strip of other tensors, then the key.
pub(crate) fn layout(map: &Map) -> Scene {
    let mut items = Vec::new();
    let (width, header_end) = header(map, &mut items);
    let mut grid = Grid::below(map, header_end, items);
    grid.row_labels();
    let mut x = MARGIN + LABEL_W;
    for p in &map.panels {
        x = grid.panel(p, x);
    }
    if !map.roles.is_empty() {
        x = grid.strip(x);
    }
    grid.key(width.max(x - GAP + MARGIN))
}

/// The title and the lines naming the files; returns the width they need and the last
/// line's baseline.
fn header(map: &Map, items: &mut Vec<Item>) -> (u32, u32) {
    let mut y = MARGIN + 13;
    let (title, lines) = match &map.kind {
        MapKind::Distance { a, b } => (
            "gguf-splice diff --values: relative distance |A - B| / |B| of the values".to_string(),
            vec![format!("A: {a}"), format!("B: {b} (the reference)")],
        ),
        MapKind::Provenance { child, parents } => (
            "gguf-splice verify: the parent each expert and tensor matches byte for byte"
                .to_string(),
            vec![
                format!("child: {child}"),
                format!("parents: {}", parents.join(", ")),
            ],
        ),
    };
    let mut width = MARGIN + width_of(&title, Size::Large);
    items.push(text(MARGIN, y, title, Size::Large, Anchor::Start));
    for l in lines {
        y += LINE;
        width = width.max(MARGIN + width_of(&l, Size::Small));
        items.push(text(MARGIN, y, l, Size::Small, Anchor::Start));
    }
    (width, y)
}

/// Big cells get a white seam, so single experts stand apart; small ones touch.
fn seam(size: u32) -> u32 {
    u32::from(size >= 8)
}

/// The grid's geometry, shared by the steps that draw into it, and the items drawn so far.
struct Grid<'m> {
    map: &'m Map,
    /// The largest distance, which the ramp is scaled to.
    max: f64,
    cell_h: u32,
    /// The panel titles' baseline.
    top: u32,
    /// The first row's top.
    y0: u32,
    grid_h: u32,
    items: Vec<Item>,
}

impl<'m> Grid<'m> {
    /// The grid of `map` under a header whose last baseline is `header_end`.
    fn below(map: &'m Map, header_end: u32, items: Vec<Item>) -> Self {
        let rows = map.rows.len().max(1) as u32;
        let cell_h = (480 / rows).clamp(4, 16);
        let top = header_end + LINE + 8;
        Grid {
            map,
            max: map.max_distance(),
            cell_h,
            top,
            y0: top + 6,
            grid_h: rows * cell_h,
            items,
        }
    }

    /// Small text at (x, y).
    fn label(&mut self, x: u32, y: u32, s: impl Into<String>, anchor: Anchor) {
        self.items.push(text(x, y, s, Size::Small, anchor));
    }

    fn row_name(&self, i: usize) -> String {
        match self.map.rows[i] {
            Some(l) => format!("blk.{l}"),
            None => "outside blocks".to_string(),
        }
    }

    /// "layer" and the labels of as many rows as fit.
    fn row_labels(&mut self) {
        let x = MARGIN + LABEL_W - 6;
        self.label(x, self.top, "layer", Anchor::End);
        let label_every = 11u32.div_ceil(self.cell_h) as usize;
        for i in (0..self.map.rows.len()).step_by(label_every) {
            let yy = self.y0 + i as u32 * self.cell_h + self.cell_h / 2 + 4;
            let label = self.map.row_label(i);
            self.label(x, yy, label, Anchor::End);
        }
    }

    /// One tensor's experts as columns at `x`, with expert ticks; returns the next panel's x.
    fn panel(&mut self, p: &Panel, x: u32) -> u32 {
        let (cell_h, y0, grid_h) = (self.cell_h, self.y0, self.grid_h);
        let cell_w = (768 / p.experts.max(1) as u32).clamp(2, 16);
        let w = cell_w * p.experts as u32;
        self.label(x, self.top, p.name.clone(), Anchor::Start);
        self.items.push(frame(x, y0, w, grid_h));
        for (i, row) in p.cells.iter().enumerate() {
            for (e, c) in row.iter().enumerate() {
                let Some(fill) = cell_color(c, self.max) else {
                    continue;
                };
                let title = format!(
                    "{} {} expert {e}: {}",
                    self.row_name(i),
                    p.name,
                    cell_text(self.map, c)
                );
                self.items.push(Item::Rect {
                    x: x + e as u32 * cell_w,
                    y: y0 + i as u32 * cell_h,
                    w: cell_w - seam(cell_w),
                    h: cell_h - seam(cell_h),
                    fill,
                    stroke: None,
                    title: Some(title),
                });
            }
        }
        // Expert ticks: 0 and multiples of a power of two far enough apart for labels.
        let step = (0..)
            .map(|k| 1u64 << k)
            .find(|s| *s as u32 * cell_w >= 32)
            .unwrap_or(1);
        let ty = y0 + grid_h + 12;
        for e in (0..p.experts).step_by(step as usize) {
            let tx = x + e as u32 * cell_w + cell_w / 2;
            self.label(tx, ty, e.to_string(), Anchor::Middle);
        }
        self.label(x + w / 2, ty + LINE, "expert", Anchor::Middle);
        x + w.max(width_of(&p.name, Size::Small)) + GAP
    }

    /// The strip of other tensors at `x`, a column per role; returns the x after it.
    fn strip(&mut self, x: u32) -> u32 {
        let (map, cell_h, y0, grid_h) = (self.map, self.cell_h, self.y0, self.grid_h);
        let w = STRIP_W * map.roles.len() as u32;
        self.items.push(frame(x, y0, w, grid_h));
        for (k, role) in map.roles.iter().enumerate() {
            let cx = x + k as u32 * STRIP_W;
            for (i, row) in map.strip.iter().enumerate() {
                let c = &row[k];
                let Some(fill) = cell_color(c, self.max) else {
                    continue;
                };
                let title = format!("{} {}: {}", self.row_name(i), role, cell_text(map, c));
                self.items.push(Item::Rect {
                    x: cx,
                    y: y0 + i as u32 * cell_h,
                    w: STRIP_W - 1,
                    h: cell_h - seam(cell_h),
                    fill,
                    stroke: None,
                    title: Some(title),
                });
            }
            let ty = y0 + grid_h + 12;
            let label = role_abbrev(*role);
            self.label(cx + STRIP_W / 2, ty, label, Anchor::Middle);
        }
        self.label(x, self.top, "other tensors", Anchor::Start);
        x + w.max(width_of("other tensors", Size::Small)) + GAP
    }

    /// The key under the grid (a distance map's color bar, then a swatch per color), the
    /// note, and the picture's size, at least `width` wide.
    fn key(mut self, mut width: u32) -> Scene {
        let mut y = self.y0 + self.grid_h + 12 + LINE + 20;
        let mut lx = MARGIN;
        if let MapKind::Distance { .. } = self.map.kind {
            lx = self.color_bar(lx, y);
        }
        for (color, label) in legend(self.map, self.max) {
            self.items.push(Item::Rect {
                x: lx,
                y: y - 10,
                w: 12,
                h: 12,
                fill: color,
                stroke: Some(FRAME),
                title: None,
            });
            self.label(lx + 16, y, label.clone(), Anchor::Start);
            lx += 16 + width_of(&label, Size::Small) + 14;
            if lx > width.max(600) {
                lx = MARGIN;
                y += LINE + 4;
            }
        }
        y += 32;
        let note = note(self.map);
        self.label(MARGIN, y, note.clone(), Anchor::Start);
        width = width.max(lx).max(MARGIN + width_of(&note, Size::Small)) + MARGIN;
        Scene {
            width,
            height: y + MARGIN,
            items: self.items,
        }
    }

    /// A color bar with ticks at `lx`, on the key's baseline `y`; returns the x after it.
    fn color_bar(&mut self, lx: u32, y: u32) -> u32 {
        let max = self.max;
        let bar_w = 256u32;
        for k in 0..bar_w {
            self.items.push(Item::Rect {
                x: lx + k,
                y: y - 10,
                w: 1,
                h: 12,
                fill: ramp(k as f64 / (bar_w - 1) as f64),
                stroke: None,
                title: None,
            });
        }
        for t in ticks(max) {
            let tx = lx + (t / if max > 0.0 { max } else { 1.0 } * (bar_w - 1) as f64) as u32;
            self.label(tx, y + 14, tick_label(t), Anchor::Middle);
        }
        lx + bar_w + 16
    }
}

/// The line under the key: what the row `-` and the strip's column labels mean, for the
/// rows and columns this map has (the routed experts are the panels, never a column).
pub(crate) fn note(map: &Map) -> String {
    let mut parts = Vec::new();
    if map.rows.contains(&None) {
        parts.push("row -: tensors outside blocks".to_string());
    }
    if !map.roles.is_empty() {
        let columns: Vec<String> = map
            .roles
            .iter()
            .map(|r| format!("{} {}", role_abbrev(*r), r.label()))
            .collect();
        parts.push(format!("other tensors: {}", columns.join(", ")));
    }
    parts.join("; ")
}

fn frame(x: u32, y: u32, w: u32, h: u32) -> Item {
    Item::Rect {
        x: x.saturating_sub(1),
        y: y.saturating_sub(1),
        w: w + 2,
        h: h + 2,
        fill: WHITE,
        stroke: Some(FRAME),
        title: None,
    }
}

/// The legend's swatches: the special cells of a distance map, or each parent and the
/// other provenance cells.
pub(crate) fn legend(map: &Map, max: f64) -> Vec<(Rgb, String)> {
    let mut v = swatches(map, max);
    // Cells left white: a layer without that tensor (a dense layer in an expert panel).
    if map.cells().any(|c| *c == Cell::Empty) {
        v.push((WHITE, "blank: the layer has no such tensor".into()));
    }
    v
}

fn swatches(map: &Map, max: f64) -> Vec<(Rgb, String)> {
    match &map.kind {
        MapKind::Distance { .. } => vec![
            (IDENTICAL, "0: equal values".to_string()),
            (NOT_COMPARED, "not compared".to_string()),
            (
                ramp(1.0),
                format!("{}: the largest on the map", number(max)),
            ),
        ],
        MapKind::Provenance { parents, .. } => {
            let mut v: Vec<(Rgb, String)> = parents
                .iter()
                .enumerate()
                .map(|(i, p)| (parent_color(i), p.clone()))
                .collect();
            v.push((SEVERAL, "several (identical in them)".into()));
            v.push((MIXED, "mixed".into()));
            v.push((VARIOUS, "various parents".into()));
            v.push((NONE, "no parent".into()));
            v
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round() {
        assert_eq!(ticks(1.4252), vec![0.0, 0.5, 1.0]);
        assert_eq!(ticks(0.0), vec![0.0]);
        let shown: Vec<String> = ticks(0.04).into_iter().map(tick_label).collect();
        assert_eq!(shown, ["0", "0.01", "0.02", "0.03", "0.04"]);
    }

    #[test]
    fn the_key_names_every_color_and_only_columns_that_exist() {
        let map = Map {
            kind: MapKind::Provenance {
                child: "c".into(),
                parents: vec!["v3".into(), "r1".into()],
            },
            rows: vec![None, Some(0), Some(1)],
            panels: vec![super::super::Panel {
                name: "ffn_up_exps".into(),
                experts: 2,
                cells: vec![
                    vec![Cell::Empty, Cell::Empty],
                    vec![Cell::Empty, Cell::Empty],
                    vec![Cell::Parents(vec![1]), Cell::Parents(vec![0])],
                ],
            }],
            roles: vec![Role::Attention, Role::DenseFfn],
            strip: vec![
                vec![Cell::Empty, Cell::Empty],
                vec![Cell::Parents(vec![0]), Cell::Parents(vec![0])],
                vec![Cell::Parents(vec![0]), Cell::Empty],
            ],
        };
        let key = legend(&map, 0.0);
        let colors: Vec<Rgb> = key.iter().map(|(c, _)| *c).collect();
        for c in map
            .cells()
            .filter_map(|c| cell_color(c, 0.0))
            .chain([WHITE])
        {
            assert!(colors.contains(&c), "{c:?} is not in the key {key:?}");
        }
        let note = note(&map);
        assert_eq!(
            note,
            "row -: tensors outside blocks; other tensors: attn attention, ffn dense FFN"
        );
        // A distance map: not compared is not white (white is a layer without the tensor).
        assert_ne!(NOT_COMPARED, WHITE);
    }

    #[test]
    fn ramp_ends_are_viridis_ends() {
        assert_eq!(ramp(0.0), VIRIDIS[0]);
        assert_eq!(ramp(1.0), VIRIDIS[8]);
        assert_eq!(ramp(f64::NAN), VIRIDIS[8]);
        assert_eq!(ramp(0.5), VIRIDIS[4]);
    }
}
