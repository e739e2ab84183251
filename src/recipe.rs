//! Recipes: which parent each tensor (or each expert) of the child comes from, and how the
//! child's metadata is made. Parsed from TOML files and `--take` arguments; knows nothing of
//! files or tensors beyond their names.

use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};

use regex::Regex;
use serde::Deserialize;

use crate::gguf::{OwnedValue, ValueType};
use crate::input::{self, InputError};

/// The largest recipe file read: real recipes are a few KB, so anything near this is the
/// wrong file.
pub const MAX_RECIPE_BYTES: u64 = 1 << 20;
/// The largest chat template file read (`[metadata] chat_template = { file = ... }`):
/// llama.cpp's templates are a few KB; DeepSeek's is under 4 KB.
pub const MAX_CHAT_TEMPLATE_BYTES: u64 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum RecipeError {
    /// The recipe file could not be read, or is too large or not UTF-8.
    #[error(transparent)]
    Input(#[from] InputError),
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

/// One rule: tensors whose name the regex finds come from `from`.
#[derive(Clone, Debug)]
pub struct Rule {
    pub pattern: Regex,
    pub from: String,
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
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    #[serde(rename = "match")]
    pattern: String,
    from: String,
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
        let text = input::read_text(path, "recipe", MAX_RECIPE_BYTES)?;
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
            rules.push(Rule {
                pattern: compile(&origin, &r.pattern)?,
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
                from: r.from,
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
        pattern: compile(origin, &caps[1])?,
        from: caps[2].to_string(),
        layers: None,
        experts,
        router,
        optional: false,
        origin: origin.to_string(),
    })
}

/// The block number of a tensor name `blk.N.…`.
pub fn layer_of(name: &str) -> Option<u64> {
    name.strip_prefix("blk.")?.split('.').next()?.parse().ok()
}

impl Rule {
    /// Whether the rule's regex and layer filter select this tensor name.
    pub fn selects(&self, name: &str) -> bool {
        if !self.pattern.is_match(name) {
            return false;
        }
        match &self.layers {
            None => true,
            Some(set) => layer_of(name).is_some_and(|l| set.contains(l)),
        }
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
        assert_eq!(r.pattern.as_str(), "ffn_(up|down)_exps");
        assert_eq!(r.from, "r1");
        let r = parse_take(r"a=b\.c=v3:experts=0-127:router", "t").unwrap();
        assert_eq!(r.pattern.as_str(), r"a=b\.c");
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
        assert_eq!(layer_of("token_embd.weight"), None);
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
