//! Recipes: which parent each tensor (or each expert) of the child comes from, and how the
//! child's metadata is made. Parsed from TOML files and `--take` arguments; knows nothing of
//! files or tensors beyond their names.

use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};

use regex::Regex;
use serde::Deserialize;

use crate::gguf::{OwnedValue, ValueType};
use crate::input;
use crate::roles::{self, Role};

mod error;
pub mod mix;
mod take;

pub use error::{RecipeError, short_pattern};
pub(crate) use error::{at, did_you_mean, explain, toml_message, toml_position, unknown_field};
use error::{regex_error, toml_error};
pub use mix::MixSpec;
pub use take::parse_take;

/// The largest recipe file read: real recipes are a few KB, so anything near this is the
/// wrong file.
pub const MAX_RECIPE_BYTES: u64 = 1 << 20;
/// The largest chat template file read (`[metadata] chat_template = { file = ... }`):
/// llama.cpp's templates are a few KB; DeepSeek's is under 4 KB.
pub const MAX_CHAT_TEMPLATE_BYTES: u64 = 1 << 20;

/// The form of a `--take` rule, for messages and help.
pub const TAKE_FORM: &str =
    "REGEX=PARENT[:role=ROLE][:experts=RANGES][:layers=RANGES][:router][:optional]";
const TAKE_OPTIONS: &str = "role=ROLE, experts=RANGES, layers=RANGES, router, optional";
/// The value types `metadata.set` accepts.
const SET_TYPES: &[&str] = &[
    "u8", "i8", "u16", "i16", "u32", "i32", "u64", "i64", "f32", "f64", "bool", "string",
];

/// A set of indices (layers or experts) written as `"3-60"` or `"0-63,128-191"`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexSet {
    /// The ranges as written, each non-empty.
    pub ranges: Vec<RangeInclusive<u64>>,
    /// The text as written, for messages and reports.
    pub text: String,
}

impl IndexSet {
    /// Parse `"3-60"`, `"0-63, 128-191"` or `"5"`; `None` for anything else (including an
    /// empty text or a range whose end is before its start).
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

    /// Whether `i` is in the set.
    pub fn contains(&self, i: u64) -> bool {
        self.ranges.iter().any(|r| r.contains(&i))
    }

    /// The largest index in the set.
    pub fn max(&self) -> u64 {
        self.ranges.iter().map(|r| *r.end()).max().unwrap_or(0)
    }

    /// The part of the set at or past `n`, written as ranges (`"5-9"`), if there is one.
    pub fn at_or_past(&self, n: u64) -> Option<String> {
        let parts: Vec<String> = self
            .ranges
            .iter()
            .filter(|r| *r.end() >= n)
            .map(|r| match (*r.start()).max(n) {
                a if a == *r.end() => a.to_string(),
                a => format!("{a}-{}", r.end()),
            })
            .collect();
        (!parts.is_empty()).then(|| parts.join(","))
    }
}

/// One rule: tensors whose name the regex finds (and whose role is `role`, if given) come
/// from `from`, or, for a mix rule, are computed from several parents (`mix`).
#[derive(Clone, Debug)]
pub struct Rule {
    /// Searched in the tensor name (not anchored), as llama.cpp's `--override-tensor`;
    /// `None` for a rule by role only.
    pub pattern: Option<Regex>,
    /// Only tensors of this role (see [`roles`]): covers every layout of it, such as
    /// separate and fused routed experts.
    pub role: Option<Role>,
    /// The name of the parent the tensors (or experts) come from; empty for a mix rule.
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
    /// The named parent's `tokenizer.chat_template`.
    Parent(String),
    /// A text file (resolved relative to the recipe), read up to [`MAX_CHAT_TEMPLATE_BYTES`].
    File(PathBuf),
}

/// How the child's metadata is made from the metadata parent's.
#[derive(Clone, Debug, Default)]
pub struct MetadataSpec {
    /// The parent whose key/values the child starts from; the base when `None`.
    pub from: Option<String>,
    /// `general.name` of the child.
    pub name: Option<String>,
    /// Where `tokenizer.chat_template` comes from, when not from the metadata parent.
    pub chat_template: Option<ChatTemplate>,
    /// Keys set (added or replaced), in order.
    pub set: Vec<(String, OwnedValue)>,
    /// Keys removed.
    pub remove: Vec<String>,
}

/// A parsed recipe: parents, rules in order, and metadata edits.
#[derive(Clone, Debug, Default)]
pub struct Recipe {
    /// Parent names the recipe expects to be given.
    pub parents: Vec<String>,
    /// The parent whose tensor order and shapes the child has; the first given when `None`.
    pub base: Option<String>,
    /// Tried in order for each tensor; the first that selects it wins.
    pub rules: Vec<Rule>,
    /// How the child's metadata is made.
    pub metadata: MetadataSpec,
    /// The recipe as the user wrote it (file text plus `--take` lines), stored in the child.
    pub text: String,
    /// The `--take` rules put in front of the file's, as given (recorded in the child).
    pub takes: Vec<String>,
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
        message: regex_error(pattern, &e),
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

    /// Parse a recipe from its text; `path` is used in messages and to resolve a chat
    /// template file.
    pub fn from_toml(text: &str, path: &Path) -> Result<Recipe, RecipeError> {
        let file: RecipeFile = toml::from_str(text).map_err(|e| toml_error(path, text, &e))?;
        let _ = file.recipe.description;
        let mut rules = Vec::with_capacity(file.rules.len());
        for (i, r) in file.rules.into_iter().enumerate() {
            let origin = format!("{} rule #{}", path.display(), i + 1);
            if r.router && r.experts.is_none() {
                return Err(RecipeError::RouterWithoutExperts { origin });
            }
            if r.pattern.is_none() && r.role.is_none() {
                return Err(RecipeError::RuleSelectsNothing { origin });
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
            let from = mix::source(&origin, r.from, mix.as_ref())?;
            let role = match &r.role {
                None => None,
                Some(k) => Some(Role::from_key(k).ok_or_else(|| RecipeError::UnknownRole {
                    origin: origin.clone(),
                    role: short_pattern(k),
                    valid: Role::keys(),
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
                return Err(RecipeError::ChatTemplateSource {
                    path: path.to_path_buf(),
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
                .filter(|t| SET_TYPES.contains(&t.name()))
                .ok_or_else(|| RecipeError::UnknownType {
                    origin: origin.clone(),
                    key: s.key.clone(),
                    found: s.ty.clone(),
                })?;
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
            // The writer adds its own to every shard of a set: two in the first shard would
            // make a file every reader refuses (duplicate key).
            if s.key == crate::gguf::model::KEY_SET_ID {
                return Err(bad(format!(
                    "{} is written by gguf-splice, to every shard of a set",
                    s.key
                )));
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
            takes: Vec::new(),
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
            self.takes.splice(0..0, takes.iter().cloned());
        }
        rules.append(&mut self.rules);
        self.rules = rules;
        Ok(())
    }
}

impl Recipe {
    /// The recipe's own text: [`Recipe::text`] without the `--take` lines in front.
    pub fn file_text(&self) -> &str {
        if self.takes.is_empty() {
            return &self.text;
        }
        let lines: Vec<String> = self
            .takes
            .iter()
            .map(|t| format!("# --take '{t}'"))
            .collect();
        let prefix = format!("{}\n", lines.join("\n"));
        self.text.strip_prefix(&prefix).unwrap_or(&self.text)
    }
}

impl Rule {
    /// The layers this rule names that a model of `block_count` blocks (`blk.0` to
    /// `blk.{block_count - 1}`) does not have, written as ranges (`"5-9"`), if any. A planner
    /// that finds the rule took nothing blames these rather than the regex.
    pub fn layers_beyond(&self, block_count: u64) -> Option<String> {
        self.layers.as_ref()?.at_or_past(block_count)
    }

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
mod tests;
