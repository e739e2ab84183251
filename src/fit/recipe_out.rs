//! The recipe a fit writes: an ordinary recipe, one rule per run of units that take the same
//! tensor (or a layer's routed experts) from the same parent, each commented with its bytes
//! and estimated error. `fit -o` plans the child from exactly this text, so `splice --recipe`
//! with the written file makes the same bytes.

use std::collections::HashMap;
use std::fmt::Write as _;

use super::estimate::{Estimate, FitUnit};
use crate::plan::Parent;
use crate::roles::{self, Role};

/// What a rule selects.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Selects {
    /// A tensor (its weight) by name, in the layers of the group: `^blk\.\d+\.STEM$`.
    Block(String),
    /// One tensor outside blocks, by its whole name.
    Name(String),
    /// The routed experts of the layers of the group (every layout, with companions).
    RoutedExperts,
}

/// One rule of the written recipe.
struct Group {
    selects: Selects,
    parent: usize,
    layers: Vec<u64>,
    units: usize,
    bytes: u64,
    error: f64,
}

fn selects(unit: &FitUnit) -> Selects {
    let head = &unit.tensors[0];
    let (layer, rest) = roles::split_block(head);
    if unit.role == Role::RoutedExperts && unit.label.ends_with(" routed experts") {
        return Selects::RoutedExperts;
    }
    match layer {
        Some(_) => Selects::Block(rest.to_string()),
        None => Selects::Name(head.to_string()),
    }
}

/// `[0, 1, 2, 5]` -> `"0-2,5"`.
pub fn layer_ranges(layers: &[u64]) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut i = 0;
    while i < layers.len() {
        let mut j = i;
        while j + 1 < layers.len() && layers[j + 1] == layers[j] + 1 {
            j += 1;
        }
        parts.push(if i == j {
            layers[i].to_string()
        } else {
            format!("{}-{}", layers[i], layers[j])
        });
        i = j + 1;
    }
    parts.join(",")
}

/// A TOML string for `s`.
fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// What the header of the written recipe says about how it was made.
pub struct Header<'a> {
    /// The budget, in bytes.
    pub budget: u64,
    /// How the estimate was made, one line.
    pub estimate: &'a str,
}

/// The recipe text of `choice` (for each unit, the index of its candidate taken).
pub fn recipe_text(
    parents: &[Parent],
    est: &Estimate,
    choice: &[usize],
    header: &Header,
) -> String {
    let mut groups: Vec<Group> = Vec::new();
    let mut index: HashMap<(Selects, usize), usize> = HashMap::new();
    let (mut bytes, mut error) = (0u64, 0f64);
    for (unit, &c) in est.units.iter().zip(choice) {
        let cand = &unit.candidates[c];
        bytes += cand.bytes;
        error += cand.error;
        let key = (selects(unit), cand.parent);
        let g = match index.get(&key) {
            Some(&g) => g,
            None => {
                index.insert(key.clone(), groups.len());
                groups.push(Group {
                    selects: key.0,
                    parent: key.1,
                    layers: Vec::new(),
                    units: 0,
                    bytes: 0,
                    error: 0.0,
                });
                groups.len() - 1
            }
        };
        let g = &mut groups[g];
        g.layers.extend(unit.layer);
        g.units += 1;
        g.bytes += cand.bytes;
        g.error += cand.error;
    }

    let mut out = String::new();
    let _ = writeln!(
        out,
        "# gguf-splice fit: budget {} bytes; tensor data {bytes} bytes; estimated error {error:.6e}",
        header.budget
    );
    let _ = writeln!(out, "# estimate: {}", header.estimate);
    let _ = writeln!(
        out,
        "# Each rule: units taken, their bytes (padded) and estimated error.\n"
    );
    let names: Vec<String> = parents.iter().map(|p| toml_str(&p.name)).collect();
    let _ = writeln!(out, "[recipe]");
    let _ = writeln!(out, "parents = [{}]", names.join(", "));
    let _ = writeln!(out, "base = {}", names[0]);
    for g in &groups {
        let _ = writeln!(
            out,
            "\n# {} unit{}, {} bytes, estimated error {:.6e}",
            g.units,
            if g.units == 1 { "" } else { "s" },
            g.bytes,
            g.error
        );
        let _ = writeln!(out, "[[rules]]");
        match &g.selects {
            Selects::Block(stem) => {
                let re = format!(r"^blk\.\d+\.{}$", regex::escape(stem));
                let _ = writeln!(out, "match = {}", toml_str(&re));
                let _ = writeln!(out, "layers = {}", toml_str(&layer_ranges(&g.layers)));
            }
            Selects::Name(name) => {
                let re = format!("^{}$", regex::escape(name));
                let _ = writeln!(out, "match = {}", toml_str(&re));
            }
            Selects::RoutedExperts => {
                let _ = writeln!(out, "role = \"{}\"", Role::RoutedExperts.key());
                let _ = writeln!(out, "layers = {}", toml_str(&layer_ranges(&g.layers)));
            }
        }
        let _ = writeln!(out, "from = {}", names[g.parent]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_runs() {
        assert_eq!(layer_ranges(&[0, 1, 2, 5, 7, 8]), "0-2,5,7-8");
        assert_eq!(layer_ranges(&[3]), "3");
        assert_eq!(layer_ranges(&[]), "");
    }
}
