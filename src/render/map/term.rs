//! A map in the terminal, for a quick look: one line per layer, one block character per
//! expert (or per few experts, the farthest of them, when a panel is wider than the
//! terminal), then one per role of the other tensors. With colors (24-bit escapes, the
//! SVG's colors) when asked, else shades and letters.

use std::fmt::Write as _;

use super::scene::{cell_color, ramp, role_abbrev, tick_label, ticks};
use super::{Cell, Map, MapKind, combine};
use crate::render::values::number;

/// How to draw in the terminal.
#[derive(Clone, Copy, Debug)]
pub struct TermOptions {
    /// Columns available.
    pub width: usize,
    /// Use 24-bit color escapes.
    pub color: bool,
}

const SHADES: [char; 4] = ['░', '▒', '▓', '█'];
const LABEL: usize = 6;

/// The letter of each parent: its name's first character, or its number if two names
/// start alike.
fn letters(parents: &[String]) -> Vec<char> {
    let first: Vec<char> = parents
        .iter()
        .map(|p| p.chars().next().unwrap_or('?'))
        .collect();
    let unique = first
        .iter()
        .enumerate()
        .all(|(i, c)| !first[..i].contains(c) && !"=~*!?·".contains(*c));
    if unique {
        first
    } else {
        (1..=parents.len())
            .map(|i| char::from_digit((i % 36) as u32, 36).unwrap_or('?'))
            .collect()
    }
}

/// Several cells shown as one: the largest distance, or the combined parents.
fn merge(cells: &[Cell]) -> Cell {
    let mut out = Cell::Empty;
    for c in cells {
        out = match (out, c) {
            (o, Cell::Empty) => o,
            (Cell::Empty, c) => c.clone(),
            (
                Cell::Distance {
                    distance: a,
                    cosine: ca,
                },
                Cell::Distance {
                    distance: b,
                    cosine: cb,
                },
            ) => {
                if b.is_nan() || *b > a {
                    Cell::Distance {
                        distance: *b,
                        cosine: *cb,
                    }
                } else {
                    Cell::Distance {
                        distance: a,
                        cosine: ca,
                    }
                }
            }
            (d @ Cell::Distance { .. }, Cell::NotCompared) => d,
            (Cell::NotCompared, d) => d.clone(),
            (o, c) => combine(o, c.clone()),
        };
    }
    out
}

fn paint(s: &mut String, rgb: [u8; 3], ch: char) {
    let _ = write!(s, "\x1b[38;2;{};{};{}m{ch}\x1b[0m", rgb[0], rgb[1], rgb[2]);
}

/// One cell as one character (with its color escape when `color`).
fn glyph(s: &mut String, c: &Cell, max: f64, letters: &[char], color: bool) {
    let plain = match c {
        Cell::Empty => ' ',
        Cell::NotCompared => '?',
        Cell::Distance { distance, .. } if *distance == 0.0 => '·',
        Cell::Distance { distance, .. } if distance.is_nan() => '!',
        Cell::Distance { distance, .. } => {
            let t = if max > 0.0 { distance / max } else { 1.0 };
            SHADES[((t * 4.0).ceil() as usize).clamp(1, 4) - 1]
        }
        Cell::Parents(p) if p.is_empty() => '!',
        Cell::Parents(p) if p.len() == 1 => letters[p[0]],
        Cell::Parents(_) => '=',
        Cell::Mixed => '~',
        Cell::Various => '*',
    };
    match cell_color(c, max) {
        Some(rgb) if color && !matches!(c, Cell::NotCompared | Cell::Distance { .. }) => {
            paint(s, rgb, '█')
        }
        Some(rgb) if color && matches!(c, Cell::Distance { distance, .. } if *distance > 0.0) => {
            paint(s, rgb, '█')
        }
        _ => s.push(plain),
    }
}

/// The map as terminal text.
pub fn map_term(map: &Map, opts: &TermOptions) -> String {
    let max = map.max_distance();
    let parents: &[String] = match &map.kind {
        MapKind::Provenance { parents, .. } => parents,
        MapKind::Distance { .. } => &[],
    };
    let letters = letters(parents);
    let mut out = String::new();
    let _ = match &map.kind {
        MapKind::Distance { a, b } => writeln!(out, "distance |A - B| / |B|; A: {a}; B: {b}"),
        MapKind::Provenance { child, .. } => writeln!(out, "sources of {child}"),
    };

    // Columns per panel: every expert if it fits, else bins of a few experts.
    let strip = map.roles.len();
    let panels = map.panels.len().max(1);
    let room = opts
        .width
        .saturating_sub(LABEL + 1 + strip * 5 + 2 * panels)
        .max(panels * 8);
    let per_panel = room / panels;
    let bins: Vec<usize> = map
        .panels
        .iter()
        // A power of two, so a column's experts are a round range (0-7, 8-15, ...).
        .map(|p| {
            (p.experts as usize)
                .div_ceil(per_panel.max(1))
                .max(1)
                .next_power_of_two()
        })
        .collect();
    let widths: Vec<usize> = map
        .panels
        .iter()
        .zip(&bins)
        .map(|(p, b)| {
            (p.experts as usize)
                .div_ceil(*b)
                .max(p.name.chars().count())
        })
        .collect();

    let mut head = format!("{:>LABEL$} ", "layer");
    for (p, w) in map.panels.iter().zip(&widths) {
        let _ = write!(head, "{:<w$}  ", p.name);
    }
    for r in &map.roles {
        let _ = write!(head, "{:<5}", role_abbrev(*r));
    }
    let _ = writeln!(out, "{}", head.trim_end());
    for (i, _) in map.rows.iter().enumerate() {
        let mut line = format!("{:>LABEL$} ", map.row_label(i));
        for ((p, b), w) in map.panels.iter().zip(&bins).zip(&widths) {
            let row = &p.cells[i];
            let mut n = 0;
            for chunk in row.chunks(*b) {
                glyph(&mut line, &merge(chunk), max, &letters, opts.color);
                n += 1;
            }
            let _ = write!(line, "{:pad$}  ", "", pad = w - n);
        }
        for c in &map.strip[i] {
            glyph(&mut line, c, max, &letters, opts.color);
            line.push_str("    ");
        }
        let _ = writeln!(out, "{}", line.trim_end());
    }

    // Legend.
    let mut legend = String::new();
    if let Some(b) = bins.iter().copied().max().filter(|b| *b > 1) {
        let how = match map.kind {
            MapKind::Distance { .. } => "the farthest",
            MapKind::Provenance { .. } => "combined",
        };
        let _ = writeln!(out, "(one column: up to {b} experts, {how} shown)");
    }
    match &map.kind {
        MapKind::Distance { .. } => {
            glyph(
                &mut legend,
                &Cell::Distance {
                    distance: 0.0,
                    cosine: 1.0,
                },
                max,
                &letters,
                opts.color,
            );
            legend.push_str(" 0 (equal)  ");
            if opts.color {
                for t in ticks(max) {
                    paint(
                        &mut legend,
                        ramp(if max > 0.0 { t / max } else { 0.0 }),
                        '█',
                    );
                    let _ = write!(legend, " {}  ", tick_label(t));
                }
            } else {
                for (k, s) in SHADES.iter().enumerate() {
                    let _ = write!(legend, "{s} <= {}  ", number(max * (k + 1) as f64 / 4.0));
                }
            }
            legend.push_str("? not compared");
        }
        MapKind::Provenance { .. } => {
            for (i, p) in parents.iter().enumerate() {
                glyph(
                    &mut legend,
                    &Cell::Parents(vec![i]),
                    max,
                    &letters,
                    opts.color,
                );
                let _ = write!(legend, " {p}  ");
            }
            for (c, what) in [
                (Cell::Parents((0..parents.len()).collect()), "several"),
                (Cell::Mixed, "mixed"),
                (Cell::Various, "various"),
                (Cell::Parents(vec![]), "no parent"),
            ] {
                glyph(&mut legend, &c, max, &letters, opts.color);
                let _ = write!(legend, " {what}  ");
            }
        }
    }
    let _ = writeln!(out, "{}", legend.trim_end());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parent_letters_are_distinct() {
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(letters(&names(&["v3", "r1"])), ['v', 'r']);
        assert_eq!(letters(&names(&["r1", "r1b"])), ['1', '2']);
    }

    #[test]
    fn bins_show_the_farthest_expert() {
        let d = |x: f64| Cell::Distance {
            distance: x,
            cosine: 1.0,
        };
        assert_eq!(merge(&[d(0.1), d(0.3), Cell::NotCompared]), d(0.3));
        assert_eq!(merge(&[Cell::Empty, Cell::Empty]), Cell::Empty);
        assert_eq!(
            merge(&[Cell::Parents(vec![0]), Cell::Parents(vec![1])]),
            Cell::Various
        );
    }
}
