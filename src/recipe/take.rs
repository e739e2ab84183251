//! `--take` rules: `REGEX=PARENT[:OPTION]...` from the command line, parsed into the same
//! [`Rule`] a recipe's `[[rules]]` makes: one grammar, so a hint that names a recipe field
//! (`optional = true`, `role = "routed_experts"`) has its `--take` spelling (`:optional`,
//! `:role=routed_experts`).

use super::error::closest;
use super::{RecipeError, Role, Rule, compile, index_set};

/// The options, as the recipe fields of the same names.
const OPTIONS: [&str; 5] = ["role", "experts", "layers", "router", "optional"];

/// Parse a `--take` rule: `REGEX=PARENT[:OPTION]...`, with the options `role=ROLE`,
/// `experts=RANGES`, `layers=RANGES`, `router` (which needs `experts`) and `optional`, as the
/// recipe fields of the same names. With `role`, the regex may be empty
/// (`=r1:role=routed_experts`), as a recipe rule may have a role and no pattern.
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
        .filter(|&i| !escaped(i))
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
    let (mut experts, mut layers, mut router, mut optional) = (None, None, false, false);
    let mut role = None;
    for option in text[name_end..].split(':').skip(1) {
        let (key, value) = match option.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (option, None),
        };
        let flag = match key {
            "router" => Some(&mut router),
            "optional" => Some(&mut optional),
            _ => None,
        };
        if let Some(flag) = flag {
            if value.is_some() {
                return Err(bad(key, "takes no value"));
            }
            if *flag {
                return Err(bad(key, "is given twice"));
            }
            *flag = true;
            continue;
        }
        let slot = match key {
            "experts" => &mut experts,
            "layers" => &mut layers,
            "role" => {
                let Some(value) = value else {
                    return Err(bad(key, "needs a value, as in role=routed_experts"));
                };
                if role.is_some() {
                    return Err(bad(key, "is given twice"));
                }
                role = Some(
                    Role::from_key(value).ok_or_else(|| RecipeError::UnknownRole {
                        origin: origin.to_string(),
                        role: super::short_pattern(value),
                        valid: Role::keys(),
                    })?,
                );
                continue;
            }
            "" => return Err(bad(option, "is empty (a ':' with nothing after it)")),
            _ => {
                return Err(RecipeError::UnknownTakeOption {
                    origin: origin.to_string(),
                    option: key.to_string(),
                    suggestion: closest(key, OPTIONS),
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
    // An empty regex is allowed only beside a role: alone, it would select every tensor,
    // which is what the base gives anyway (and most likely a typo).
    let pattern = match &text[..eq] {
        "" if role.is_some() => None,
        "" => {
            return Err(RecipeError::BadTake {
                origin: origin.to_string(),
                text: text.to_string(),
            });
        }
        regex => Some(compile(origin, regex)?),
    };
    Ok(Rule {
        pattern,
        role,
        from: text[eq + 1..name_end].to_string(),
        mix: None,
        layers,
        experts,
        router,
        optional,
        origin: origin.to_string(),
    })
}
