//! Recipes: which parent each tensor (or each expert) of the child comes from, and how the
//! child's metadata is made. Parsed from TOML files and `--take` arguments; knows nothing of
//! files or tensors beyond their names.

use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};

use regex::Regex;
use serde::Deserialize;

use crate::gguf::{OwnedValue, ValueType};
use crate::input::{self, InputError};
use crate::roles::{self, Role};

pub mod mix;

pub use mix::MixSpec;

/// The largest recipe file read: real recipes are a few KB, so anything near this is the
/// wrong file.
pub const MAX_RECIPE_BYTES: u64 = 1 << 20;
/// The largest chat template file read (`[metadata] chat_template = { file = ... }`):
/// llama.cpp's templates are a few KB; DeepSeek's is under 4 KB.
pub const MAX_CHAT_TEMPLATE_BYTES: u64 = 1 << 20;

/// Errors in a recipe file or a `--take` rule. Each names where the mistake is (file and
/// line, or `--take #N`) and says what would be valid.
#[derive(Debug, thiserror::Error)]
pub enum RecipeError {
    /// The recipe file could not be read, or is too large or not UTF-8.
    #[error(transparent)]
    Input(#[from] InputError),
    /// A rule with neither `match` nor `role`.
    #[error("{origin}: a rule needs `match` (a regex), `role`, or both")]
    RuleSelectsNothing {
        /// Where the rule was written.
        origin: String,
    },
    /// A `role` that is not one of the roles.
    #[error("{origin}: unknown role '{role}'; roles are: {valid}")]
    UnknownRole {
        /// Where the rule was written.
        origin: String,
        /// The role as written.
        role: String,
        /// The valid names.
        valid: String,
    },
    /// TOML syntax, or a value of the wrong TOML type; `line` and `col` are 1-based (0 when
    /// the parser gave no position).
    #[error("{}: {message}{hint}", at(.path, *.line, *.col))]
    Toml {
        /// The recipe file.
        path: PathBuf,
        /// Line of the error.
        line: usize,
        /// Column of the error, in characters.
        col: usize,
        /// The parser's message, on one line.
        message: String,
        /// How to fix a common cause, or empty.
        hint: &'static str,
    },
    /// A key the recipe format does not have (a typo, most often).
    #[error(
        "{}: unknown field '{}' in {table} ({})",
        at(.path, *.line, *.col),
        short_pattern(.field),
        did_you_mean(.suggestion.as_deref(), .valid)
    )]
    UnknownField {
        /// The recipe file.
        path: PathBuf,
        /// Line of the field (1-based; 0 when the parser gave no position).
        line: usize,
        /// Column of the field, in characters (1-based; 0 when the parser gave no position).
        col: usize,
        /// The field as written.
        field: String,
        /// The table it is in (`[[rules]]`, `[recipe]`, ...).
        table: &'static str,
        /// The fields that table has.
        valid: Vec<String>,
        /// The valid field closest to the one written, if one is close enough.
        suggestion: Option<String>,
    },
    /// `router` without `experts`, in a recipe or a `--take` rule.
    #[error(
        "{origin}: router needs experts: the router rows and bias that follow are those of the experts the rule takes; add experts (experts = \"0-63\", or :experts=0-63 in --take)"
    )]
    RouterWithoutExperts {
        /// Where the rule was written.
        origin: String,
    },
    /// `chat_template` with both or neither of `from` and `file`.
    #[error(
        "{path}: metadata.chat_template takes exactly one of `from` (a parent) or `file` (a path)"
    )]
    ChatTemplateSource {
        /// The recipe file.
        path: PathBuf,
    },
    /// A regex that does not compile; `message` is one line, and the pattern is shown cut
    /// to its first 80 characters.
    #[error("{origin}: bad regex '{}': {message}", short_pattern(.pattern))]
    BadRegex {
        /// Where the rule was written.
        origin: String,
        /// The regex as written.
        pattern: String,
        /// What is wrong, and where in the pattern.
        message: String,
    },
    /// A `layers` or `experts` value that is not a list of numbers and ranges.
    #[error(
        "{origin}: bad {what} '{}': expected a list of numbers and ranges such as \"3-60\" or \"0-63,128-191\"",
        short_pattern(.text)
    )]
    BadRange {
        /// Where the rule was written.
        origin: String,
        /// Which value: `layers` or `experts`.
        what: &'static str,
        /// The value as written.
        text: String,
    },
    /// A `--take` rule with no `=PARENT` where the split rule finds one.
    #[error(
        "{origin}: '{}' is not of the form {TAKE_FORM} (PARENT: letters, digits, '_', '.', '-')",
        short_pattern(.text)
    )]
    BadTake {
        /// Which `--take` it is (`--take #N`).
        origin: String,
        /// The argument as given.
        text: String,
    },
    /// A `--take` option that does not exist.
    #[error(
        "{origin}: unknown option '{}'{}; the options are {TAKE_OPTIONS}",
        short_pattern(.option),
        .suggestion.as_ref().map(|s| format!(" (did you mean '{s}'?)")).unwrap_or_default()
    )]
    UnknownTakeOption {
        /// Which `--take` it is (`--take #N`).
        origin: String,
        /// The option's name as written.
        option: String,
        /// The valid option closest to it, if one is close enough.
        suggestion: Option<String>,
    },
    /// A known `--take` option used wrongly: without its value, with a value it does not
    /// take, twice, or empty.
    #[error(
        "{origin}: option '{}' {problem}; the options are {TAKE_OPTIONS}",
        short_pattern(.option)
    )]
    BadTakeOption {
        /// Which `--take` it is (`--take #N`).
        origin: String,
        /// The option as written.
        option: String,
        /// What is wrong with it, with an example where one helps.
        problem: &'static str,
    },
    /// A `metadata.set` type that does not exist.
    #[error(
        "{origin}: metadata.set '{}': unknown type '{}'; valid types: {}",
        short_pattern(.key),
        short_pattern(.found),
        SET_TYPES.join(" ")
    )]
    UnknownType {
        /// The recipe's `[metadata]` table.
        origin: String,
        /// The key being set.
        key: String,
        /// The type as written.
        found: String,
    },
    /// A `metadata.set` value that does not fit its type, or a key the writer owns.
    #[error("{origin}: metadata.set '{}': {message}", short_pattern(.key))]
    BadValue {
        /// The recipe's `[metadata]` table.
        origin: String,
        /// The key being set.
        key: String,
        /// What is wrong with the value or the key.
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

/// The form of a `--take` rule, for messages and help.
pub const TAKE_FORM: &str = "REGEX=PARENT[:experts=RANGES][:layers=RANGES][:router]";
const TAKE_OPTIONS: &str = "experts=RANGES, layers=RANGES, router";
/// The value types `metadata.set` accepts.
const SET_TYPES: &[&str] = &[
    "u8", "i8", "u16", "i16", "u32", "i32", "u64", "i64", "f32", "f64", "bool", "string",
];

/// `path:line:col`, or `path` when the position is not known.
fn at(path: &Path, line: usize, col: usize) -> String {
    if line == 0 {
        path.display().to_string()
    } else {
        format!("{}:{line}:{col}", path.display())
    }
}

/// `did you mean 'x'?`, or the list of valid names when nothing is close.
fn did_you_mean(suggestion: Option<&str>, valid: &[String]) -> String {
    match suggestion {
        Some(s) => format!("did you mean '{s}'?"),
        None => format!("valid fields: {}", valid.join(", ")),
    }
}

/// A user's text (a pattern, a key, a range) cut to its first 80 characters (with `…`) and
/// kept on one line, for messages: a generated regex can be hundreds of KB.
pub fn short_pattern(pattern: &str) -> String {
    const SHOWN: usize = 80;
    let mut out: String = pattern
        .chars()
        .take(SHOWN)
        .flat_map(|c| match c {
            '\n' => vec!['\\', 'n'],
            '\r' => vec!['\\', 'r'],
            c => vec![c],
        })
        .collect();
    if pattern.chars().nth(SHOWN).is_some() {
        out.push('…');
    }
    out
}

/// Levenshtein distance, for suggestions among a handful of short names.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diag = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let next = (diag + usize::from(ca != cb))
                .min(row[j] + 1)
                .min(row[j + 1] + 1);
            diag = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}

/// The valid name closest to `word`, if one is close enough to be what was meant: at most
/// two edits (and no more than half the word), or `word` is a prefix of it.
fn closest<'a>(word: &str, valid: impl IntoIterator<Item = &'a str>) -> Option<String> {
    let word_lower = word.to_ascii_lowercase();
    valid
        .into_iter()
        .map(|v| (edit_distance(&word_lower, v), v))
        .filter(|&(d, v)| {
            (d <= 2 && 2 * d <= word.len()) || (word.len() >= 3 && v.starts_with(&word_lower))
        })
        .min_by_key(|&(d, _)| d)
        .map(|(_, v)| v.to_string())
}

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

/// A regex error in one line. The regex crate's message spans several lines and repeats the
/// whole pattern; the syntax error's kind and position are taken from regex-syntax instead
/// (the parser the regex crate uses, with the same defaults).
fn regex_error(pattern: &str, e: &regex::Error) -> String {
    let at = |kind: &dyn std::fmt::Display, span: &regex_syntax::ast::Span| {
        format!("{kind} (at character {})", span.start.column)
    };
    if let regex::Error::CompiledTooBig(limit) = e {
        return format!("it compiles to more than {limit} bytes; make it simpler");
    }
    match regex_syntax::Parser::new().parse(pattern) {
        Err(regex_syntax::Error::Parse(e)) => at(e.kind(), e.span()),
        Err(regex_syntax::Error::Translate(e)) => at(e.kind(), e.span()),
        // Not expected (same parser, same defaults): keep the message's own error line.
        _ => {
            let text = e.to_string();
            let line = text
                .lines()
                .rev()
                .find_map(|l| l.strip_prefix("error: "))
                .unwrap_or_else(|| text.lines().last().unwrap_or(""));
            line.to_string()
        }
    }
}

/// A TOML error in one line, with the position the parser gave, and for the common
/// mistakes, the fix: the closest valid field for a typo, single quotes for a regex.
fn toml_error(path: &Path, text: &str, e: &toml::de::Error) -> RecipeError {
    let start = e.span().map_or(0, |s| s.start.min(text.len()));
    let (line, col) = match e.span() {
        None => (0, 0),
        Some(_) => {
            let before = &text[..char_boundary(text, start)];
            let line_start = before.rfind('\n').map_or(0, |i| i + 1);
            (
                before.matches('\n').count() + 1,
                before[line_start..].chars().count() + 1,
            )
        }
    };
    let message = e.message().lines().collect::<Vec<_>>().join("; ");
    // serde: "unknown field `x`, expected one of `a`, `b`" (or "expected `a` or `b`").
    if message.starts_with("unknown field `") {
        let mut names = message.split('`').skip(1).step_by(2).map(str::to_string);
        let field = names.next().unwrap_or_default();
        let valid: Vec<String> = names.collect();
        return RecipeError::UnknownField {
            path: path.to_path_buf(),
            line,
            col,
            suggestion: closest(&field, valid.iter().map(String::as_str)),
            table: table_of(&valid),
            field,
            valid,
        };
    }
    let (message, hint) =
        if message.starts_with("missing escaped value") || message.contains("escape") {
            let escape: String = text[char_boundary(text, start.saturating_sub(1))..]
                .chars()
                .take(2)
                .collect();
            (
                format!("'{escape}' is not a TOML escape in a double-quoted string"),
                "; write regexes in single quotes ('...'), which TOML takes literally",
            )
        } else {
            (message, "")
        };
    RecipeError::Toml {
        path: path.to_path_buf(),
        line,
        col,
        message,
        hint,
    }
}

/// The largest char boundary of `text` at or before `i`.
fn char_boundary(text: &str, mut i: usize) -> usize {
    i = i.min(text.len());
    while !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// Which table of a recipe has these valid fields (for "unknown field 'x' in [[rules]]").
fn table_of(valid: &[String]) -> &'static str {
    let has = |f: &str| valid.iter().any(|v| v == f);
    if has("match") {
        "[[rules]]"
    } else if has("chat_template") {
        "[metadata]"
    } else if has("file") {
        "metadata.chat_template"
    } else if has("key") {
        "[[metadata.set]]"
    } else if has("description") {
        "[recipe]"
    } else if has("rules") {
        "the recipe's top level"
    } else {
        "the recipe"
    }
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

/// Parse a `--take` rule: `REGEX=PARENT[:OPTION]...`, with the options `experts=RANGES`,
/// `layers=RANGES` and `router` (which needs `experts`), as the recipe fields of the same
/// names.
///
/// The regex may itself hold `=` and `:`. The rule is split at the first `=` that is followed
/// by a parent name (letters, digits, `_`, `.`, `-`) and then either the end or a `:`; the
/// regex is what comes before it, and the options follow the name, each after a `:`. An `=`
/// written `\=` is never a split point, so a regex that must hold `=NAME:` can say `\=NAME:`
/// (the regex reads `\=` as `=`).
pub fn parse_take(text: &str, origin: &str) -> Result<Rule, RecipeError> {
    let is_name = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-');
    let escaped = |i: usize| text[..i].bytes().rev().take_while(|&b| b == b'\\').count() % 2 == 1;
    let split = text
        .match_indices('=')
        .map(|(i, _)| i)
        .filter(|&i| i > 0 && !escaped(i))
        .find_map(|i| {
            let rest = &text[i + 1..];
            let name_len = rest.find(|c: char| !is_name(c)).unwrap_or(rest.len());
            (name_len > 0 && (name_len == rest.len() || rest[name_len..].starts_with(':')))
                .then_some((i, i + 1 + name_len))
        });
    let Some((eq, name_end)) = split else {
        return Err(RecipeError::BadTake {
            origin: origin.to_string(),
            text: text.to_string(),
        });
    };
    let bad = |option: &str, problem| RecipeError::BadTakeOption {
        origin: origin.to_string(),
        option: option.to_string(),
        problem,
    };
    let (mut experts, mut layers, mut router) = (None, None, false);
    for option in text[name_end..].split(':').skip(1) {
        let (key, value) = match option.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (option, None),
        };
        let slot = match key {
            "experts" => &mut experts,
            "layers" => &mut layers,
            "router" if value.is_some() => return Err(bad(key, "takes no value")),
            "router" if router => return Err(bad(key, "is given twice")),
            "router" => {
                router = true;
                continue;
            }
            "" => return Err(bad(option, "is empty (a ':' with nothing after it)")),
            _ => {
                return Err(RecipeError::UnknownTakeOption {
                    origin: origin.to_string(),
                    option: key.to_string(),
                    suggestion: closest(key, ["experts", "layers", "router"]),
                });
            }
        };
        let Some(value) = value else {
            return Err(bad(key, "needs a value, as in experts=0-63 or layers=3-60"));
        };
        if slot.is_some() {
            return Err(bad(key, "is given twice"));
        }
        let what = if key == "experts" {
            "experts"
        } else {
            "layers"
        };
        *slot = Some(index_set(origin, what, value)?);
    }
    if router && experts.is_none() {
        return Err(RecipeError::RouterWithoutExperts {
            origin: origin.to_string(),
        });
    }
    Ok(Rule {
        pattern: Some(compile(origin, &text[..eq])?),
        role: None,
        from: text[eq + 1..name_end].to_string(),
        mix: None,
        layers,
        experts,
        router,
        optional: false,
        origin: origin.to_string(),
    })
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
