//! Recipes: which parent each tensor (or each expert) of the child comes from, and how the
//! child's metadata is made. Parsed from TOML files and `--take` arguments; knows nothing of
//! files or tensors beyond their names.

use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};

use regex::Regex;
use serde::Deserialize;

use crate::gguf::{OwnedValue, ValueType};
use crate::roles::{self, Role};

pub mod mix;

pub use mix::MixSpec;

#[derive(Debug, thiserror::Error)]
pub enum RecipeError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Toml { path: PathBuf, message: String },
    #[error("{origin}: bad regex '{pattern}': {message}")]
    BadRegex {
        origin: String,
        pattern: String,
        message: String,
    },
    #[error(
        "{origin}: bad {what} '{text}': expected a list of numbers and ranges such as \"3-60\" or \"0-63,128-191\""
    )]
    BadRange {
        origin: String,
        what: &'static str,
        text: String,
    },
    #[error(
        "{origin}: '{text}' is not of the form REGEX=PARENT or REGEX=PARENT:experts=RANGES[:router]"
    )]
    BadTake { origin: String, text: String },
    #[error("{origin}: metadata.set '{key}': {message}")]
    BadValue {
        origin: String,
        key: String,
        message: String,
    },
    /// A mix rule's `mix`, `threshold`, `type` or `imatrix` is wrong.
    #[error("{origin}: {message}")]
    BadMix {
        /// The rule (`recipe.toml rule #2`).
        origin: String,
        /// What is wrong, with the value and the fix.
        message: String,
    },
}

/// A set of indices (layers or experts) written as `"3-60"` or `"0-63,128-191"`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexSet {
    pub ranges: Vec<RangeInclusive<u64>>,
    pub text: String,
}

impl IndexSet {
    pub fn parse(text: &str) -> Option<IndexSet> {
        let mut ranges = Vec::new();
        for part in text.split(',') {
            let part = part.trim();
            let (a, b) = match part.split_once('-') {
                Some((a, b)) => (a.trim().parse().ok()?, b.trim().parse().ok()?),
                None => {
                    let v = part.parse().ok()?;
                    (v, v)
                }
            };
            if a > b {
                return None;
            }
            ranges.push(a..=b);
        }
        Some(IndexSet {
            ranges,
            text: text.to_string(),
        })
    }

    pub fn contains(&self, i: u64) -> bool {
        self.ranges.iter().any(|r| r.contains(&i))
    }

    pub fn max(&self) -> u64 {
        self.ranges.iter().map(|r| *r.end()).max().unwrap_or(0)
    }
}

/// One rule: tensors whose name the regex finds (and whose role is `role`, if given) come
/// from `from`, or, for a mix rule, are computed from several parents (`mix`).
#[derive(Clone, Debug)]
pub struct Rule {
    /// Searched in the tensor name; `None` for a rule by role only.
    pub pattern: Option<Regex>,
    /// Only tensors of this role (see [`roles`]): covers every layout of it, such as
    /// separate and fused routed experts.
    pub role: Option<Role>,
    /// The parent the selected tensors (or experts) come from; empty for a mix rule.
    pub from: String,
    /// A mix rule: the selected tensors (or experts) are the weighted sum of parents,
    /// requantized (see [`crate::mix`]).
    pub mix: Option<MixSpec>,
    /// Only tensors of blocks `blk.N.` with N in this set.
    pub layers: Option<IndexSet>,
    /// Only these experts of stacked expert tensors; the others fall through to later rules.
    pub experts: Option<IndexSet>,
    /// With `experts`: the router rows and router bias of the same experts follow.
    pub router: bool,
    /// A rule that matches nothing is an error unless it is optional.
    pub optional: bool,
    /// Where the rule was written, for messages: `--take #1`, `recipe rule #3`.
    pub origin: String,
}

/// Where the chat template comes from.
#[derive(Clone, Debug, PartialEq)]
pub enum ChatTemplate {
    Parent(String),
    File(PathBuf),
}

#[derive(Clone, Debug, Default)]
pub struct MetadataSpec {
    /// The parent whose key/values the child starts from; the base when `None`.
    pub from: Option<String>,
    pub name: Option<String>,
    pub chat_template: Option<ChatTemplate>,
    pub set: Vec<(String, OwnedValue)>,
    pub remove: Vec<String>,
}

#[derive(Clone, Debug, Default)]
pub struct Recipe {
    /// Parent names the recipe expects to be given.
    pub parents: Vec<String>,
    pub base: Option<String>,
    pub rules: Vec<Rule>,
    pub metadata: MetadataSpec,
    /// The recipe as the user wrote it (file text plus `--take` lines), stored in the child.
    pub text: String,
    /// Let one layer's expert matrices (gate, up, down) come from different parents
    /// (`[recipe] allow_partial_experts = true` or `--allow-partial-experts`).
    pub allow_partial_experts: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RecipeFile {
    #[serde(default)]
    recipe: RecipeHead,
    #[serde(default)]
    rules: Vec<RuleFile>,
    #[serde(default)]
    metadata: MetadataFile,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RecipeHead {
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    parents: Vec<String>,
    base: Option<String>,
    #[serde(default)]
    allow_partial_experts: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    #[serde(rename = "match")]
    pattern: Option<String>,
    role: Option<String>,
    from: Option<String>,
    mix: Option<mix::WeightTable>,
    threshold: Option<f64>,
    #[serde(rename = "type")]
    ty: Option<String>,
    imatrix: Option<PathBuf>,
    layers: Option<String>,
    experts: Option<String>,
    #[serde(default)]
    router: bool,
    #[serde(default)]
    optional: bool,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct MetadataFile {
    from: Option<String>,
    name: Option<String>,
    chat_template: Option<ChatTemplateFile>,
    #[serde(default)]
    set: Vec<SetFile>,
    #[serde(default)]
    remove: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChatTemplateFile {
    from: Option<String>,
    file: Option<PathBuf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetFile {
    key: String,
    #[serde(rename = "type")]
    ty: String,
    value: toml::Value,
}

fn compile(origin: &str, pattern: &str) -> Result<Regex, RecipeError> {
    Regex::new(pattern).map_err(|e| RecipeError::BadRegex {
        origin: origin.to_string(),
        pattern: pattern.to_string(),
        message: e.to_string(),
    })
}

fn index_set(origin: &str, what: &'static str, text: &str) -> Result<IndexSet, RecipeError> {
    IndexSet::parse(text).ok_or_else(|| RecipeError::BadRange {
        origin: origin.to_string(),
        what,
        text: text.to_string(),
    })
}

impl Recipe {
    /// Parse a recipe file. A chat template file is resolved relative to the recipe.
    pub fn from_file(path: &Path) -> Result<Recipe, RecipeError> {
        let text = std::fs::read_to_string(path).map_err(|source| RecipeError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Recipe::from_toml(&text, path)
    }

    pub fn from_toml(text: &str, path: &Path) -> Result<Recipe, RecipeError> {
        let file: RecipeFile = toml::from_str(text).map_err(|e| RecipeError::Toml {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        let _ = file.recipe.description;
        let mut rules = Vec::with_capacity(file.rules.len());
        for (i, r) in file.rules.into_iter().enumerate() {
            let origin = format!("{} rule #{}", path.display(), i + 1);
            if r.router && r.experts.is_none() {
                return Err(RecipeError::Toml {
                    path: path.to_path_buf(),
                    message: format!("{origin}: `router = true` needs `experts`"),
                });
            }
            if r.pattern.is_none() && r.role.is_none() {
                return Err(RecipeError::Toml {
                    path: path.to_path_buf(),
                    message: format!("{origin}: a rule needs `match` (a regex), `role`, or both"),
                });
            }
            let mix = mix::parse(
                &origin,
                path,
                mix::MixKeys {
                    mix: r.mix,
                    threshold: r.threshold,
                    ty: r.ty,
                    imatrix: r.imatrix,
                    router: r.router,
                },
            )?;
            let from = mix::source(&origin, path, r.from, mix.as_ref())?;
            let role = match &r.role {
                None => None,
                Some(k) => Some(Role::from_key(k).ok_or_else(|| RecipeError::Toml {
                    path: path.to_path_buf(),
                    message: format!("{origin}: unknown role '{k}'; roles are: {}", Role::keys()),
                })?),
            };
            rules.push(Rule {
                pattern: r
                    .pattern
                    .as_deref()
                    .map(|p| compile(&origin, p))
                    .transpose()?,
                role,
                layers: r
                    .layers
                    .map(|l| index_set(&origin, "layers", &l))
                    .transpose()?,
                experts: r
                    .experts
                    .map(|e| index_set(&origin, "experts", &e))
                    .transpose()?,
                router: r.router,
                optional: r.optional,
                from,
                mix,
                origin,
            });
        }
        let origin = format!("{} [metadata]", path.display());
        let chat_template = match file.metadata.chat_template {
            None => None,
            Some(ChatTemplateFile {
                from: Some(p),
                file: None,
            }) => Some(ChatTemplate::Parent(p)),
            Some(ChatTemplateFile {
                from: None,
                file: Some(f),
            }) => Some(ChatTemplate::File(
                path.parent().unwrap_or(Path::new(".")).join(f),
            )),
            Some(_) => {
                return Err(RecipeError::Toml {
                    path: path.to_path_buf(),
                    message: "metadata.chat_template takes exactly one of `from` or `file`".into(),
                });
            }
        };
        let mut set = Vec::new();
        for s in file.metadata.set {
            let bad = |message: String| RecipeError::BadValue {
                origin: origin.clone(),
                key: s.key.clone(),
                message,
            };
            let ty = ValueType::from_name(&s.ty)
                .filter(|t| *t != ValueType::Array)
                .ok_or_else(|| bad(format!("unknown type '{}'", s.ty)))?;
            let value = OwnedValue::parse_typed(ty, &s.value).map_err(bad)?;
            // Keys the writer owns, or that would make a file no reader accepts.
            if s.key.is_empty() {
                return Err(bad("empty key".into()));
            }
            if s.key.starts_with("split.") {
                return Err(bad(
                    "split.* keys are written by --split-max-size / --split-max-tensors".into(),
                ));
            }
            if s.key == "general.alignment"
                && !(ty == ValueType::U32
                    && value.as_ref().as_u64().is_some_and(u64::is_power_of_two))
            {
                return Err(bad("general.alignment must be a u32 power of two".into()));
            }
            set.push((s.key, value));
        }
        Ok(Recipe {
            parents: file.recipe.parents,
            base: file.recipe.base,
            rules,
            metadata: MetadataSpec {
                from: file.metadata.from,
                name: file.metadata.name,
                chat_template,
                set,
                remove: file.metadata.remove,
            },
            text: text.to_string(),
            allow_partial_experts: file.recipe.allow_partial_experts,
        })
    }

    /// Put command-line `--take` rules before the recipe's own, in the order given.
    pub fn prepend_takes(&mut self, takes: &[String]) -> Result<(), RecipeError> {
        let mut rules = Vec::with_capacity(takes.len());
        for (i, t) in takes.iter().enumerate() {
            rules.push(parse_take(t, &format!("--take #{}", i + 1))?);
        }
        if !takes.is_empty() {
            let lines: Vec<String> = takes.iter().map(|t| format!("# --take '{t}'")).collect();
            self.text = format!("{}\n{}", lines.join("\n"), self.text);
        }
        rules.append(&mut self.rules);
        self.rules = rules;
        Ok(())
    }
}

/// `REGEX=PARENT`, `REGEX=PARENT:experts=0-127` or `REGEX=PARENT:experts=0-127:router`.
/// The regex may itself hold `=` or `:`; the parent name is the part after the last `=`
/// that is followed by a plain name.
pub fn parse_take(text: &str, origin: &str) -> Result<Rule, RecipeError> {
    let shape = Regex::new(r"^(?s)(.+?)=([A-Za-z0-9_.-]+)(?::experts=([0-9,\- ]+))?(:router)?$")
        .expect("static regex");
    let caps = shape.captures(text).ok_or_else(|| RecipeError::BadTake {
        origin: origin.to_string(),
        text: text.to_string(),
    })?;
    let experts = caps
        .get(3)
        .map(|m| index_set(origin, "experts", m.as_str()))
        .transpose()?;
    let router = caps.get(4).is_some();
    if router && experts.is_none() {
        return Err(RecipeError::BadTake {
            origin: origin.to_string(),
            text: text.to_string(),
        });
    }
    Ok(Rule {
        pattern: Some(compile(origin, &caps[1])?),
        role: None,
        from: caps[2].to_string(),
        mix: None,
        layers: None,
        experts,
        router,
        optional: false,
        origin: origin.to_string(),
    })
}

impl Rule {
    /// Whether the rule's regex, role and layer filter select this tensor name.
    pub fn selects(&self, name: &str) -> bool {
        if self.pattern.as_ref().is_some_and(|p| !p.is_match(name)) {
            return false;
        }
        let class = roles::classify(name);
        if self.role.is_some_and(|r| r != class.role) {
            return false;
        }
        match &self.layers {
            None => true,
            Some(set) => class.layer.is_some_and(|l| set.contains(l)),
        }
    }

    /// Where the rule takes from, for reports: the parent, or `mix r1 0.75 + v3 0.25`.
    pub fn source_label(&self) -> String {
        match &self.mix {
            Some(m) => m.label(),
            None => self.from.clone(),
        }
    }

    /// What the rule selects, for reports: `/regex/`, `role routed_experts`, or both.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(r) = self.role {
            parts.push(format!("role {}", r.key()));
        }
        if let Some(p) = &self.pattern {
            parts.push(format!("/{}/", p.as_str()));
        }
        if let Some(l) = &self.layers {
            parts.push(format!("layers {}", l.text));
        }
        parts.join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_sets() {
        let s = IndexSet::parse("3-5, 9").unwrap();
        assert!(s.contains(3) && s.contains(5) && s.contains(9));
        assert!(!s.contains(6) && !s.contains(2));
        assert_eq!(s.max(), 9);
        assert!(IndexSet::parse("5-3").is_none());
        assert!(IndexSet::parse("a").is_none());
        assert!(IndexSet::parse("").is_none());
    }

    #[test]
    fn takes_split_at_the_last_plain_name() {
        let r = parse_take(r"ffn_(up|down)_exps=r1", "t").unwrap();
        assert_eq!(r.pattern.as_ref().unwrap().as_str(), "ffn_(up|down)_exps");
        assert_eq!(r.from, "r1");
        let r = parse_take(r"a=b\.c=v3:experts=0-127:router", "t").unwrap();
        assert_eq!(r.pattern.as_ref().unwrap().as_str(), r"a=b\.c");
        assert_eq!(r.from, "v3");
        assert_eq!(r.experts.unwrap().ranges, vec![0..=127]);
        assert!(r.router);
        assert!(matches!(
            parse_take("no-equals-sign", "t"),
            Err(RecipeError::BadTake { .. })
        ));
        assert!(matches!(
            parse_take("x=r1:router", "t"),
            Err(RecipeError::BadTake { .. })
        ));
        assert!(matches!(
            parse_take("(=r1", "t"),
            Err(RecipeError::BadRegex { .. })
        ));
    }

    #[test]
    fn rules_filter_by_layer() {
        let mut r = parse_take("exps=r1", "t").unwrap();
        r.layers = IndexSet::parse("3-60");
        assert!(r.selects("blk.3.ffn_up_exps.weight"));
        assert!(!r.selects("blk.2.ffn_up_exps.weight"));
        assert!(!r.selects("blk.3.attn_q_a.weight"));
    }

    #[test]
    fn rules_by_role_cover_every_layout() {
        let text = "[[rules]]\nrole = 'routed_experts'\nfrom = 'r1'\nlayers = '1-2'\n";
        let r = Recipe::from_toml(text, Path::new("x")).unwrap();
        let rule = &r.rules[0];
        assert_eq!(rule.role, Some(Role::RoutedExperts));
        for n in [
            "ffn_gate_exps",
            "ffn_up_exps",
            "ffn_down_exps",
            "ffn_gate_up_exps",
        ] {
            assert!(rule.selects(&format!("blk.1.{n}.weight")), "{n}");
        }
        assert!(!rule.selects("blk.0.ffn_up_exps.weight"), "layer filter");
        assert!(!rule.selects("blk.1.ffn_up_shexp.weight"));
        assert!(!rule.selects("blk.1.ffn_gate_inp.weight"));
        assert_eq!(rule.describe(), "role routed_experts layers 1-2");
        // Role and regex together: both must hold.
        let text = "[[rules]]\nrole = 'attention'\nmatch = '_b\\.'\nfrom = 'r1'\n";
        let rule = &Recipe::from_toml(text, Path::new("x")).unwrap().rules[0];
        assert!(rule.selects("blk.1.attn_k_b.weight"));
        assert!(!rule.selects("blk.1.attn_q_a.weight"));
        for bad in [
            "[[rules]]\nrole = 'experts'\nfrom = 'r1'\n",
            "[[rules]]\nfrom = 'r1'\n",
        ] {
            let e = Recipe::from_toml(bad, Path::new("x")).unwrap_err();
            assert!(matches!(e, RecipeError::Toml { .. }), "{bad}");
        }
    }

    #[test]
    fn parses_a_recipe_file() {
        let text = r#"
            [recipe]
            parents = ["v3", "r1"]
            base = "v3"
            [[rules]]
            match = 'ffn_(gate|up|down)_exps\.weight$'
            from = "r1"
            layers = "3-60"
            [metadata]
            name = "Chimera"
            chat_template = { from = "r1" }
            remove = ["general.url"]
            [[metadata.set]]
            key = "general.quantized_by"
            type = "string"
            value = "me"
        "#;
        let r = Recipe::from_toml(text, Path::new("m/x.toml")).unwrap();
        assert_eq!(r.base.as_deref(), Some("v3"));
        assert_eq!(r.rules.len(), 1);
        assert_eq!(r.rules[0].origin, "m/x.toml rule #1");
        assert_eq!(
            r.metadata.chat_template,
            Some(ChatTemplate::Parent("r1".into()))
        );
        assert_eq!(r.metadata.set[0].1, OwnedValue::string("me"));

        let bad = Recipe::from_toml("[[rules]]\nmatch='x'\nfrom='a'\nfrmo='b'", Path::new("x"));
        assert!(matches!(bad, Err(RecipeError::Toml { .. })));
        for set in [
            "key='k'\ntype='u8'\nvalue=300",
            "key=''\ntype='u8'\nvalue=3",
            "key='split.count'\ntype='u16'\nvalue=3",
            "key='general.alignment'\ntype='u16'\nvalue=32",
            "key='general.alignment'\ntype='u32'\nvalue=48",
        ] {
            let bad = Recipe::from_toml(&format!("[[metadata.set]]\n{set}"), Path::new("x"));
            assert!(matches!(bad, Err(RecipeError::BadValue { .. })), "{set}");
        }
        let ok = Recipe::from_toml(
            "[[metadata.set]]\nkey='general.alignment'\ntype='u32'\nvalue=64",
            Path::new("x"),
        );
        assert!(ok.is_ok());
        let bad = Recipe::from_toml(
            "[[rules]]\nmatch='x'\nfrom='a'\nrouter=true",
            Path::new("x"),
        );
        assert!(matches!(bad, Err(RecipeError::Toml { .. })));
    }
}
