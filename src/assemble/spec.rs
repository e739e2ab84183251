//! The assembly's options as the command line writes them: which experts, in which order
//! (`--experts 'a:0-63,b:0-63'`, `--keep 'a:0-127'`), and where the router of an MoE made
//! from dense models comes from (`--router random:SEED|uniform|FILE`). Parsing only: whether
//! the parents have those experts is checked by the planner.

use std::path::PathBuf;

/// One group of an experts list: a parent and its experts, in the order written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExpertGroup {
    /// The parent's name (`--parent NAME=PATH`).
    pub parent: String,
    /// Its experts in order; `None`: all of them (a dense parent: its one expert).
    pub experts: Option<Vec<u64>>,
}

/// An ordered experts list: `a:0-63,b:0-63` (a's experts 0-63, then b's 0-63), `a,b,b` (all
/// of a's experts, then all of b's twice), `a:3,a:0-2` (a reordered). A part without a name
/// continues the group before it: `a:0-3,8,b` is a's 0-3 and 8, then all of b.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExpertList {
    /// The groups, in output order.
    pub groups: Vec<ExpertGroup>,
    /// The text as written, for messages and the recipe record.
    pub text: String,
}

/// The largest expert index or run an experts list may name (bounds what a typo can allocate).
const MAX_INDEX: u64 = crate::roles::cut::MAX_EXPERTS;

impl ExpertList {
    /// Parse an experts list; the error says what is wrong with which part.
    pub fn parse(text: &str) -> Result<ExpertList, String> {
        let mut groups: Vec<ExpertGroup> = Vec::new();
        for part in text.split(',').map(str::trim) {
            if part.is_empty() {
                return Err("an empty part (two commas, or a comma at an end)".into());
            }
            let (name, range) = match part.split_once(':') {
                Some((n, r)) => (Some(n.trim()), Some(r.trim())),
                None if part.bytes().all(|b| b.is_ascii_digit() || b == b'-') => (None, Some(part)),
                None => (Some(part), None),
            };
            if let Some(name) = name {
                if name.is_empty() {
                    return Err(format!("'{part}' has no parent name before ':'"));
                }
                groups.push(ExpertGroup {
                    parent: name.to_string(),
                    experts: None,
                });
            }
            let Some(range) = range else { continue };
            let Some(group) = groups.last_mut() else {
                return Err(format!(
                    "'{part}' names experts before any parent: write NAME:{part}"
                ));
            };
            let (a, b) = match range.split_once('-') {
                Some((a, b)) => (a.trim(), b.trim()),
                None => (range, range),
            };
            let num = |s: &str| {
                s.parse::<u64>()
                    .ok()
                    .filter(|&v| v < MAX_INDEX)
                    .ok_or_else(|| format!("'{s}' in '{part}' is not an expert number"))
            };
            let (a, b) = (num(a)?, num(b)?);
            if a > b {
                return Err(format!(
                    "'{part}' runs backwards; to reorder, list parts in the order wanted: {}:{b},{}:{a}",
                    group.parent, group.parent
                ));
            }
            group.experts.get_or_insert_with(Vec::new).extend(a..=b);
        }
        Ok(ExpertList {
            groups,
            text: text.to_string(),
        })
    }

    /// The parents named, in order of first mention.
    pub fn parents(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for g in &self.groups {
            if !out.contains(&g.parent.as_str()) {
                out.push(&g.parent);
            }
        }
        out
    }
}

/// Where the router of an MoE assembled from dense parents comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RouterSpec {
    /// Seeded pseudo-random rows (see [`router`](super::router) for the generator).
    Random(u64),
    /// All rows zero: every expert scores the same.
    Uniform,
    /// Rows from a `.npy` or `.safetensors` file (see [`router`](super::router)).
    File(PathBuf),
}

impl RouterSpec {
    /// `random:SEED`, `uniform`, or a path.
    pub fn parse(text: &str) -> Result<RouterSpec, String> {
        if text == "uniform" {
            return Ok(RouterSpec::Uniform);
        }
        if let Some(seed) = text.strip_prefix("random:") {
            return seed.parse().map(RouterSpec::Random).map_err(|_| {
                format!("'{seed}' is not a seed: write random:N with N a whole number")
            });
        }
        if text == "random" {
            return Err("random needs a seed, so the router can be made again: random:N".into());
        }
        if text.is_empty() {
            return Err("empty: give random:SEED, uniform, or a .npy/.safetensors file".into());
        }
        Ok(RouterSpec::File(PathBuf::from(text)))
    }

    /// How reports name it: `random:7`, `uniform`, `file gates.npy`.
    pub fn describe(&self) -> String {
        match self {
            RouterSpec::Random(s) => format!("random:{s}"),
            RouterSpec::Uniform => "uniform".into(),
            RouterSpec::File(p) => format!("file {}", p.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(parent: &str, experts: Option<Vec<u64>>) -> ExpertGroup {
        ExpertGroup {
            parent: parent.into(),
            experts,
        }
    }

    #[test]
    fn experts_lists_keep_their_order() {
        let l = ExpertList::parse("a:0-2,b:1").unwrap();
        assert_eq!(
            l.groups,
            vec![g("a", Some(vec![0, 1, 2])), g("b", Some(vec![1]))]
        );
        let l = ExpertList::parse("a, b ,b").unwrap();
        assert_eq!(l.groups, vec![g("a", None), g("b", None), g("b", None)]);
        assert_eq!(l.parents(), vec!["a", "b"]);
        let l = ExpertList::parse("a:3,a:0-1,5").unwrap();
        assert_eq!(
            l.groups,
            vec![g("a", Some(vec![3])), g("a", Some(vec![0, 1, 5]))]
        );
    }

    #[test]
    fn bad_experts_lists_say_what_is_wrong() {
        for (text, says) in [
            ("a:3-1", "backwards"),
            ("0-3", "before any parent"),
            ("a:x", "not an expert number"),
            ("a,,b", "empty part"),
            (":1", "no parent name"),
            ("a:99999999", "not an expert number"),
        ] {
            let e = ExpertList::parse(text).unwrap_err();
            assert!(e.contains(says), "{text}: {e}");
        }
    }

    #[test]
    fn router_specs() {
        assert_eq!(RouterSpec::parse("random:7"), Ok(RouterSpec::Random(7)));
        assert_eq!(RouterSpec::parse("uniform"), Ok(RouterSpec::Uniform));
        assert_eq!(
            RouterSpec::parse("g.npy"),
            Ok(RouterSpec::File("g.npy".into()))
        );
        assert!(RouterSpec::parse("random").unwrap_err().contains("seed"));
        assert!(RouterSpec::parse("random:x").is_err());
        assert_eq!(RouterSpec::Random(3).describe(), "random:3");
    }
}
