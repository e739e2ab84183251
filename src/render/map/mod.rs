//! Maps: where two models differ, or where a child's experts came from, as a picture.
//!
//! A [`Map`] is the data behind the picture: one panel per stacked routed-expert tensor
//! (`ffn_gate_exps`, `ffn_up_exps`, `ffn_down_exps`, or fused `ffn_gate_up_exps`), a grid of
//! layers x experts, and a strip of layers x roles for every other tensor. Each cell is a
//! distance (`diff --values`, [`Map::from_values`]) or the parents an expert matches byte
//! for byte (`verify`, [`Map::from_verify`]). It is drawn as SVG ([`map_svg`]), PNG
//! ([`map_png`]) or terminal block characters ([`map_term`]), and written as JSON
//! ([`Map::to_json`]).

#![warn(missing_docs)]

mod png;
mod scene;
mod svg;
mod term;

use std::collections::HashSet;

use serde_json::{Value, json};

use crate::compare::{Sources, ValueStatus, ValuesReport, VerifyReport};
use crate::roles::{self, Class, Role, unit};

pub use png::{MAX_PNG_SCALE, Png, map_png};
pub use svg::map_svg;
pub use term::{TermOptions, map_term};

/// One cell of a map.
#[derive(Clone, Debug, PartialEq)]
pub enum Cell {
    /// No tensor here (a layer without this tensor or role).
    Empty,
    /// Values compared: the relative distance and the cosine.
    Distance {
        /// `‖A − B‖ / ‖B‖`.
        distance: f64,
        /// `⟨A, B⟩ / (‖A‖ ‖B‖)`.
        cosine: f64,
    },
    /// The values were not compared (a type ggml cannot dequantize, another shape, only in
    /// one model).
    NotCompared,
    /// Byte-equal to these parents (indices into [`MapKind::Provenance`]'s parents, in
    /// order); empty: to none.
    Parents(Vec<usize>),
    /// Made by a mix rule: matches no parent, as expected.
    Mixed,
    /// A strip cell whose tensors come from different parents.
    Various,
}

/// What a map shows.
#[derive(Clone, Debug, PartialEq)]
pub enum MapKind {
    /// `diff --values`: distances of A from B.
    Distance {
        /// Model A (first file).
        a: String,
        /// Model B, the reference.
        b: String,
    },
    /// `verify`: which parent each expert matches.
    Provenance {
        /// The child (first file).
        child: String,
        /// The parents' names, in command-line order.
        parents: Vec<String>,
    },
}

/// The layers x experts grid of one stacked expert tensor.
#[derive(Clone, Debug, PartialEq)]
pub struct Panel {
    /// The tensor's name without its block and `.weight`: `ffn_gate_exps`.
    pub name: String,
    /// Experts (columns).
    pub experts: u64,
    /// Per map row ([`Map::rows`]), per expert.
    pub cells: Vec<Vec<Cell>>,
}

/// A map: expert panels and the strip of other tensors, over the same rows.
#[derive(Clone, Debug, PartialEq)]
pub struct Map {
    /// What the cells hold.
    pub kind: MapKind,
    /// The rows: tensors outside blocks (`None`, if any), then every block in order.
    pub rows: Vec<Option<u64>>,
    /// One panel per stacked expert tensor name, gate before up before down.
    pub panels: Vec<Panel>,
    /// The strip's columns: the roles of the other tensors, in [`Role::ALL`] order.
    pub roles: Vec<Role>,
    /// The strip: per row, per role; several tensors of one role pooled (distances) or
    /// combined (parents).
    pub strip: Vec<Vec<Cell>>,
}

/// Per tensor, what the map needs: its class, whether it is a stacked expert tensor, and
/// its cells (one per expert, or one).
struct Item<'a> {
    name: &'a str,
    class: Class,
    cells: Vec<Cell>,
}

/// The companions among `names` (`.scale`, `.bias`, ... beside a `.weight` of the list): a
/// map shows units by their weight. A companion's bytes from another parent than its
/// weight's make `verify` fail on their own (its torn units), and a `.scale` is part of its
/// weight's values in `diff --values`.
fn companions<'a>(names: impl Iterator<Item = &'a str> + Clone) -> HashSet<&'a str> {
    let all: HashSet<&str> = names.clone().collect();
    names
        .filter(|n| unit::head_name(n).is_some_and(|h| all.contains(h.as_str())))
        .collect()
}

/// Panel order: gate, fused gate/up, up, down, then anything else, by name.
fn panel_order(name: &str) -> (u8, String) {
    let rank = match roles::classify(&format!("blk.0.{name}.weight")).matrix {
        Some(roles::ExpertMatrix::Gate) => 0,
        Some(roles::ExpertMatrix::GateUp) => 1,
        Some(roles::ExpertMatrix::Up) => 2,
        Some(roles::ExpertMatrix::Down) => 3,
        None => 4,
    };
    (rank, name.to_string())
}

/// The panel name of a stacked expert tensor.
fn panel_name(name: &str) -> String {
    let rest = roles::split_block(name).1;
    rest.strip_suffix(".weight").unwrap_or(rest).to_string()
}

impl Map {
    /// Lay out `items` (model order) into rows, panels and the strip; `strip_cell` makes a
    /// strip cell from the items of one (row, role).
    fn build(kind: MapKind, items: &[Item], strip_cell: impl Fn(&[&Item]) -> Cell) -> Map {
        let mut rows: Vec<Option<u64>> = items.iter().map(|i| i.class.layer).collect();
        rows.sort_unstable();
        rows.dedup();
        let row_of = |l: Option<u64>| rows.binary_search(&l).expect("row of every item");
        let stacked = |i: &Item| roles::cut::is_stacked_experts(i.name);

        let mut names: Vec<String> = items
            .iter()
            .filter(|i| stacked(i))
            .map(|i| panel_name(i.name))
            .collect();
        names.sort_by_key(|n| panel_order(n));
        names.dedup();
        let panels: Vec<Panel> = names
            .into_iter()
            .map(|name| {
                let mine: Vec<&Item> = items
                    .iter()
                    .filter(|i| stacked(i) && panel_name(i.name) == name)
                    .collect();
                let experts = mine.iter().map(|i| i.cells.len() as u64).max().unwrap_or(0);
                let mut cells = vec![vec![Cell::Empty; experts as usize]; rows.len()];
                for i in mine {
                    let row = &mut cells[row_of(i.class.layer)];
                    for (e, c) in i.cells.iter().enumerate() {
                        row[e] = c.clone();
                    }
                }
                Panel {
                    name,
                    experts,
                    cells,
                }
            })
            .collect();

        let others: Vec<&Item> = items.iter().filter(|i| !stacked(i)).collect();
        let roles: Vec<Role> = Role::ALL
            .into_iter()
            .filter(|r| others.iter().any(|i| i.class.role == *r))
            .collect();
        let strip: Vec<Vec<Cell>> = rows
            .iter()
            .map(|&layer| {
                roles
                    .iter()
                    .map(|&role| {
                        let here: Vec<&Item> = others
                            .iter()
                            .filter(|i| i.class.layer == layer && i.class.role == role)
                            .copied()
                            .collect();
                        if here.is_empty() {
                            Cell::Empty
                        } else {
                            strip_cell(&here)
                        }
                    })
                    .collect()
            })
            .collect();
        Map {
            kind,
            rows,
            panels,
            roles,
            strip,
        }
    }

    /// The map of `diff --values`: each expert's distance; a strip cell is the pooled
    /// distance of its tensors (as the report's summary by layer and role).
    pub fn from_values(r: &ValuesReport) -> Map {
        let companion = companions(r.tensors.iter().map(|t| t.name.as_str()));
        let items: Vec<Item> = r
            .tensors
            .iter()
            .filter(|t| !companion.contains(t.name.as_str()))
            .map(|t| {
                let cells = match &t.status {
                    ValueStatus::Compared {
                        experts: Some(e), ..
                    } => e.iter().map(distance_cell).collect(),
                    ValueStatus::Compared { whole, .. } => vec![distance_cell(whole)],
                    ValueStatus::NotCompared(_) => {
                        let n = if roles::cut::is_stacked_experts(&t.name) {
                            t.dims
                                .last()
                                .copied()
                                .unwrap_or(1)
                                .min(roles::cut::MAX_EXPERTS)
                        } else {
                            1
                        };
                        vec![Cell::NotCompared; n as usize]
                    }
                };
                Item {
                    name: &t.name,
                    class: t.class,
                    cells,
                }
            })
            .collect();
        let pooled = r.by_layer_role();
        let kind = MapKind::Distance {
            a: r.a.paths[0].display().to_string(),
            b: r.b.paths[0].display().to_string(),
        };
        Map::build(kind, &items, |here| {
            let (layer, role) = (here[0].class.layer, here[0].class.role);
            pooled
                .iter()
                .find(|(l, r, _)| *l == layer && *r == role)
                .map_or(Cell::NotCompared, |(_, _, p)| distance_cell(&p.sums))
        })
    }

    /// The map of `verify`: the parents each expert (and each other tensor) matches byte
    /// for byte; tensors a mix rule makes are [`Cell::Mixed`].
    pub fn from_verify(r: &VerifyReport) -> Map {
        let companion = companions(r.tensors.iter().map(|t| t.name.as_str()));
        let parents: Vec<String> = r.parents.iter().map(|(n, _)| n.clone()).collect();
        let index = |names: &[String]| -> Vec<usize> {
            let mut v: Vec<usize> = names
                .iter()
                .filter_map(|n| parents.iter().position(|p| p == n))
                .collect();
            v.sort_unstable();
            v
        };
        let items: Vec<Item> = r
            .tensors
            .iter()
            .filter(|t| !companion.contains(t.name.as_str()))
            .map(|t| {
                let cell = |names: &[String]| {
                    if names.is_empty() && t.mixed {
                        Cell::Mixed
                    } else {
                        Cell::Parents(index(names))
                    }
                };
                let stacked = roles::cut::is_stacked_experts(&t.name);
                let count = t.dims.last().copied().unwrap_or(1);
                let cells = match &t.sources {
                    Sources::Whole(p) if stacked => vec![cell(p); count as usize],
                    Sources::Whole(p) => vec![cell(p)],
                    Sources::Experts(_) => {
                        let per: Vec<Cell> = (0..count)
                            .map(|e| cell(t.sources.expert(e).unwrap_or(&[])))
                            .collect();
                        if stacked {
                            per
                        } else {
                            vec![per.into_iter().fold(Cell::Empty, combine)]
                        }
                    }
                };
                Item {
                    name: &t.name,
                    class: roles::classify(&t.name),
                    cells,
                }
            })
            .collect();
        let kind = MapKind::Provenance {
            child: r.child.paths[0].display().to_string(),
            parents,
        };
        Map::build(kind, &items, |here| {
            here.iter()
                .flat_map(|i| i.cells.iter().cloned())
                .fold(Cell::Empty, combine)
        })
    }

    /// Every cell, panels first.
    pub fn cells(&self) -> impl Iterator<Item = &Cell> {
        self.panels
            .iter()
            .flat_map(|p| p.cells.iter().flatten())
            .chain(self.strip.iter().flatten())
    }

    /// The largest finite distance on the map (0 if none): the top of the color scale.
    pub fn max_distance(&self) -> f64 {
        self.cells()
            .filter_map(|c| match c {
                Cell::Distance { distance, .. } if distance.is_finite() => Some(*distance),
                _ => None,
            })
            .fold(0.0, f64::max)
    }

    /// The label of row `i`: `-` for tensors outside blocks, else the block number.
    pub fn row_label(&self, i: usize) -> String {
        self.rows[i].map_or("-".to_string(), |l| l.to_string())
    }

    /// The map as JSON: rows, panels and strip with every cell (`null`: empty;
    /// `{"distance", "cosine"}`, `{"parents": [names]}`, `{"mixed": true}`,
    /// `{"various": true}` or `{"not_compared": true}`).
    pub fn to_json(&self) -> Value {
        let parents: &[String] = match &self.kind {
            MapKind::Provenance { parents, .. } => parents,
            MapKind::Distance { .. } => &[],
        };
        let cell = |c: &Cell| match c {
            Cell::Empty => Value::Null,
            Cell::Distance { distance, cosine } => json!({
                "distance": distance.is_finite().then_some(*distance),
                "cosine": cosine.is_finite().then_some(*cosine),
            }),
            Cell::NotCompared => json!({"not_compared": true}),
            Cell::Parents(p) => {
                json!({"parents": p.iter().map(|&i| &parents[i]).collect::<Vec<_>>()})
            }
            Cell::Mixed => json!({"mixed": true}),
            Cell::Various => json!({"various": true}),
        };
        let grid = |rows: &[Vec<Cell>]| -> Vec<Vec<Value>> {
            rows.iter().map(|r| r.iter().map(cell).collect()).collect()
        };
        let mut v = match &self.kind {
            MapKind::Distance { a, b } => json!({
                "kind": "distance", "a": a, "b": b, "scale_max": self.max_distance(),
            }),
            MapKind::Provenance { child, parents } => json!({
                "kind": "provenance", "child": child, "parents": parents,
            }),
        };
        v["rows"] = json!(self.rows);
        v["panels"] = json!(
            self.panels
                .iter()
                .map(|p| json!({"name": p.name, "experts": p.experts, "cells": grid(&p.cells)}))
                .collect::<Vec<_>>()
        );
        v["strip"] = json!({
            "roles": self.roles.iter().map(|r| r.key()).collect::<Vec<_>>(),
            "cells": grid(&self.strip),
        });
        v
    }
}

fn distance_cell(s: &crate::distance::Sums) -> Cell {
    Cell::Distance {
        distance: s.distance(),
        cosine: s.cosine(),
    }
}

/// Two provenance cells as one: matching no parent wins (it is what must be seen), then a
/// mix; otherwise the parents both match, or [`Cell::Various`] if there are none.
pub(crate) fn combine(acc: Cell, next: Cell) -> Cell {
    use Cell::*;
    match (acc, next) {
        (Empty, c) | (c, Empty) => c,
        (Parents(p), _) | (_, Parents(p)) if p.is_empty() => Parents(p),
        (Mixed, _) | (_, Mixed) => Mixed,
        (Parents(a), Parents(b)) => {
            let both: Vec<usize> = a.iter().copied().filter(|x| b.contains(x)).collect();
            if both.is_empty() {
                Various
            } else {
                Parents(both)
            }
        }
        _ => Various,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provenance_cells_combine() {
        use Cell::*;
        let p = |v: &[usize]| Parents(v.to_vec());
        assert_eq!(combine(Empty, p(&[0])), p(&[0]));
        assert_eq!(combine(p(&[0, 1]), p(&[0])), p(&[0]));
        assert_eq!(combine(p(&[1]), p(&[0])), Various);
        assert_eq!(combine(Various, p(&[0])), Various);
        assert_eq!(combine(p(&[0]), Mixed), Mixed);
        assert_eq!(combine(Mixed, p(&[])), p(&[]));
        assert_eq!(combine(p(&[]), Various), p(&[]));
    }

    /// A DeepSeek-V3-sized map: 61 blocks (3 dense), 256 experts, three panels.
    pub(crate) fn deepseek_map() -> Map {
        let rows: Vec<Option<u64>> = std::iter::once(None).chain((0..61).map(Some)).collect();
        let panels = ["ffn_gate_exps", "ffn_up_exps", "ffn_down_exps"]
            .iter()
            .map(|n| Panel {
                name: n.to_string(),
                experts: 256,
                cells: rows
                    .iter()
                    .map(|r| match r {
                        Some(l) if *l >= 3 => (0..256)
                            .map(|e| Cell::Distance {
                                distance: (l * 256 + e) as f64 / 16000.0,
                                cosine: 0.9,
                            })
                            .collect(),
                        _ => vec![Cell::Empty; 256],
                    })
                    .collect(),
            })
            .collect();
        let roles = vec![Role::Embeddings, Role::Attention, Role::Norms, Role::Router];
        let strip = rows
            .iter()
            .map(|_| {
                vec![
                    Cell::Distance {
                        distance: 0.0,
                        cosine: 1.0
                    };
                    4
                ]
            })
            .collect();
        Map {
            kind: MapKind::Distance {
                a: "a.gguf".into(),
                b: "b.gguf".into(),
            },
            rows,
            panels,
            roles,
            strip,
        }
    }

    #[test]
    fn a_deepseek_sized_map_fits_a_screen_or_two() {
        let map = deepseek_map();
        let svg = map_svg(&map);
        // A tooltip per cell: 58 layers x 256 experts x 3 panels, and the strip's.
        assert_eq!(svg.matches("<title>").count(), 58 * 256 * 3 + 62 * 4);
        let png = map_png(&map, None).unwrap();
        let size = u32::from_be_bytes(png.bytes[16..20].try_into().unwrap());
        assert_eq!((size, png.width, png.scale), (png.width, size, 1));
        assert!((1000..3200).contains(&size), "width {size}");
        // Scaled: each pixel as 2 x 2.
        let twice = map_png(&map, Some(2)).unwrap();
        assert_eq!((twice.width, twice.height), (2 * png.width, 2 * png.height));
        let grid = map_term(
            &map,
            &TermOptions {
                width: 120,
                color: false,
            },
        );
        assert!(grid.lines().all(|l| l.chars().count() <= 120), "{grid}");
        assert!(grid.contains("up to 16 experts"), "{grid}");
    }

    #[test]
    fn panels_are_ordered_gate_up_down() {
        let mut names = vec!["ffn_down_exps", "ffn_up_exps", "ffn_gate_exps"];
        names.sort_by_key(|n| panel_order(n));
        assert_eq!(names, ["ffn_gate_exps", "ffn_up_exps", "ffn_down_exps"]);
        assert_eq!(
            panel_name("blk.3.ffn_gate_up_exps.weight"),
            "ffn_gate_up_exps"
        );
        assert_eq!(panel_name("blk.3.ffn_down_exps.bias"), "ffn_down_exps.bias");
    }
}
