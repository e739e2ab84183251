//! Recipe errors and how they are worded: where the mistake is (file:line:col or `--take
//! #N`), patterns cut short for one-line messages, and the closest valid name ("did you
//! mean ...?").

use std::path::{Path, PathBuf};

use super::{SET_TYPES, TAKE_FORM, TAKE_OPTIONS};
use crate::input::InputError;

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
        "{origin}: '{}' is not of the form {TAKE_FORM} (PARENT: letters, digits, '_', '.', '-'; REGEX may be empty only with role=ROLE)",
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

/// `path:line:col`, or `path` when the position is not known.
pub(crate) fn at(path: &Path, line: usize, col: usize) -> String {
    if line == 0 {
        path.display().to_string()
    } else {
        format!("{}:{line}:{col}", path.display())
    }
}

/// `did you mean 'x'?`, or the list of valid names when nothing is close.
pub(crate) fn did_you_mean(suggestion: Option<&str>, valid: &[String]) -> String {
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
pub(super) fn edit_distance(a: &str, b: &str) -> usize {
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
pub(super) fn closest<'a>(word: &str, valid: impl IntoIterator<Item = &'a str>) -> Option<String> {
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

/// A regex error in one line. The regex crate's message spans several lines and repeats the
/// whole pattern; the syntax error's kind and position are taken from regex-syntax instead
/// (the parser the regex crate uses, with the same defaults).
pub(super) fn regex_error(pattern: &str, e: &regex::Error) -> String {
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
pub(super) fn toml_error(path: &Path, text: &str, e: &toml::de::Error) -> RecipeError {
    let (line, col) = toml_position(text, e);
    let message = toml_message(e);
    if let Some((field, valid, suggestion)) = unknown_field(&message) {
        return RecipeError::UnknownField {
            path: path.to_path_buf(),
            line,
            col,
            suggestion,
            table: table_of(&valid),
            field,
            valid,
        };
    }
    let (message, hint) = explain(text, e, message);
    RecipeError::Toml {
        path: path.to_path_buf(),
        line,
        col,
        message,
        hint,
    }
}

/// Where a TOML error is: line and column (in characters), 1-based; `(0, 0)` when the
/// parser gave no position. Shared with batch manifests, so errors read the same in both.
pub(crate) fn toml_position(text: &str, e: &toml::de::Error) -> (usize, usize) {
    let Some(span) = e.span() else {
        return (0, 0);
    };
    let before = &text[..char_boundary(text, span.start.min(text.len()))];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (
        before.matches('\n').count() + 1,
        before[line_start..].chars().count() + 1,
    )
}

/// The parser's `message`, with how to fix a common cause (an escape such as `\.` in a
/// double-quoted regex), or an empty hint.
pub(crate) fn explain(text: &str, e: &toml::de::Error, message: String) -> (String, &'static str) {
    if !(message.starts_with("missing escaped value") || message.contains("escape")) {
        return (message, "");
    }
    let start = e.span().map_or(0, |s| s.start.min(text.len()));
    let escape: String = text[char_boundary(text, start.saturating_sub(1))..]
        .chars()
        .take(2)
        .collect();
    (
        format!("'{escape}' is not a TOML escape in a double-quoted string"),
        "; write regexes in single quotes ('...'), which TOML takes literally",
    )
}

/// A TOML parser's message on one line (without the excerpt of the file it quotes).
pub(crate) fn toml_message(e: &toml::de::Error) -> String {
    e.message().lines().collect::<Vec<_>>().join("; ")
}

/// An unknown field in serde's message (`unknown field `x`, expected one of `a`, `b``, or
/// `expected `a` or `b``): the field, the valid fields, and the closest valid one if close
/// enough.
pub(crate) fn unknown_field(message: &str) -> Option<(String, Vec<String>, Option<String>)> {
    if !message.starts_with("unknown field `") {
        return None;
    }
    let mut names = message.split('`').skip(1).step_by(2).map(str::to_string);
    let field = names.next().unwrap_or_default();
    let valid: Vec<String> = names.collect();
    let suggestion = closest(&field, valid.iter().map(String::as_str));
    Some((field, valid, suggestion))
}

/// The largest char boundary of `text` at or before `i`.
pub(super) fn char_boundary(text: &str, mut i: usize) -> usize {
    i = i.min(text.len());
    while !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// Which table of a recipe has these valid fields (for "unknown field 'x' in [[rules]]").
pub(super) fn table_of(valid: &[String]) -> &'static str {
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
