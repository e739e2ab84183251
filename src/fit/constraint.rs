//! `fit --recipe R`: which parents a unit may come from. R is a recipe's `[[rules]]` whose
//! `from` may list several parents (`from = ["r1q2", "r1q3"]`): the first rule that selects
//! a tensor (by `match`, `role` and `layers`, exactly as in a recipe) limits its unit to
//! those parents, and fit chooses among them; a unit no rule selects may come from any
//! parent. "Routed experts from the R1 quants, everything else from the V3 quants, sizes
//! chosen by fit" is two rules.
//!
//! The selection is parsed by the recipe parser itself (each rule with its first parent), so
//! a regex, role or layer range means here what it means in `splice`. Rules that cut below a
//! unit (`experts`, `router`) or compute (`mix`) are refused: fit takes units whole.

use std::path::Path;

use super::FitError;
use crate::input;
use crate::recipe::{MAX_RECIPE_BYTES, Recipe, RecipeError, Rule};
use crate::roles::unit::Units;

/// The parsed constraint: rules in order, each with the parents it allows.
#[derive(Clone, Debug, Default)]
pub struct Constraint {
    rules: Vec<(Rule, Vec<String>)>,
}

/// Keys a constraint rule may have.
const KEYS: &[&str] = &["match", "role", "layers", "from", "optional"];

impl Constraint {
    /// Read a constraint file (see the module comment).
    pub fn from_file(path: &Path) -> Result<Constraint, FitError> {
        let text = input::read_text(path, "recipe", MAX_RECIPE_BYTES).map_err(RecipeError::from)?;
        Constraint::from_toml(&text, path)
    }

    /// Parse a constraint from its text; `path` names it in messages.
    pub fn from_toml(text: &str, path: &Path) -> Result<Constraint, FitError> {
        let bad = |origin: String, what: String| FitError::BadConstraint { origin, what };
        let mut doc: toml::Table = toml::from_str(text).map_err(|e| {
            bad(
                path.display().to_string(),
                e.message().lines().next().unwrap_or("not TOML").to_string(),
            )
        })?;
        let rules = match doc.remove("rules") {
            None => Vec::new(),
            Some(toml::Value::Array(a)) => a,
            Some(_) => {
                return Err(bad(
                    path.display().to_string(),
                    "rules must be [[rules]] tables".into(),
                ));
            }
        };
        if let Some(k) = doc.keys().next() {
            return Err(bad(
                path.display().to_string(),
                format!("[{k}]: fit --recipe takes [[rules]] only (match, role, layers, from)"),
            ));
        }
        let mut lists = Vec::new();
        let mut single = toml::Table::new();
        let mut plain = Vec::new();
        for (i, r) in rules.into_iter().enumerate() {
            let origin = format!("{} rule #{}", path.display(), i + 1);
            let toml::Value::Table(mut t) = r else {
                return Err(bad(origin, "not a table".into()));
            };
            if let Some(k) = t.keys().find(|k| !KEYS.contains(&k.as_str())) {
                return Err(bad(
                    origin,
                    format!(
                        "'{k}' is not for fit, which takes whole tensors: use {}",
                        KEYS.join(", ")
                    ),
                ));
            }
            let list: Vec<String> = match t.remove("from") {
                Some(toml::Value::String(s)) => vec![s],
                Some(toml::Value::Array(a)) => a
                    .into_iter()
                    .map(|v| match v {
                        toml::Value::String(s) => Ok(s),
                        _ => Err(bad(origin.clone(), "from lists parent names".into())),
                    })
                    .collect::<Result<_, _>>()?,
                _ => {
                    return Err(bad(
                        origin,
                        "from = \"NAME\" or from = [\"A\", \"B\"] is required".into(),
                    ));
                }
            };
            if list.is_empty() {
                return Err(bad(origin, "from lists no parent".into()));
            }
            t.insert("from".into(), toml::Value::String(list[0].clone()));
            plain.push(toml::Value::Table(t));
            lists.push(list);
        }
        single.insert("rules".into(), toml::Value::Array(plain));
        let recipe = Recipe::from_toml(&toml::to_string(&single).unwrap_or_default(), path)?;
        Ok(Constraint {
            rules: recipe.rules.into_iter().zip(lists).collect(),
        })
    }

    /// Check that every parent a rule lists is one of `names`.
    pub fn check_parents(&self, names: &[&str]) -> Result<(), FitError> {
        for (rule, list) in &self.rules {
            if let Some(n) = list.iter().find(|n| !names.contains(&n.as_str())) {
                return Err(FitError::BadConstraint {
                    origin: rule.origin.clone(),
                    what: format!("no parent '{n}' (parents: {})", names.join(", ")),
                });
            }
        }
        Ok(())
    }

    /// The parents a unit of `tensors` may come from: for each of its weights, the first
    /// rule that selects it; parents all those rules allow. `None`: no rule selects it.
    pub fn allowed(&self, units: &Units, tensors: &[String]) -> Option<Vec<String>> {
        let mut out: Option<Vec<String>> = None;
        for t in tensors.iter().filter(|t| !units.is_companion(t)) {
            let Some((_, list)) = self.rules.iter().find(|(r, _)| r.selects(t)) else {
                continue;
            };
            out = Some(match out {
                None => list.clone(),
                Some(prev) => prev.into_iter().filter(|p| list.contains(p)).collect(),
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_and_refusals() {
        let c = Constraint::from_toml(
            r#"
            [[rules]]
            role = "routed_experts"
            from = ["r1q2", "r1q3"]
            [[rules]]
            match = "."
            from = "v3q4"
            "#,
            Path::new("c.toml"),
        )
        .unwrap();
        let units = Units::default();
        let one = |n: &str| vec![n.to_string()];
        assert_eq!(
            c.allowed(&units, &one("blk.3.ffn_up_exps.weight")),
            Some(vec!["r1q2".to_string(), "r1q3".to_string()])
        );
        assert_eq!(
            c.allowed(&units, &one("blk.3.attn_q_b.weight")),
            Some(one("v3q4"))
        );
        assert!(c.check_parents(&["r1q2", "r1q3", "v3q4"]).is_ok());
        assert!(matches!(
            c.check_parents(&["r1q2", "v3q4"]),
            Err(FitError::BadConstraint { .. })
        ));
        for bad in [
            "[[rules]]\nrole = \"routed_experts\"\nexperts = \"0-3\"\nfrom = \"a\"\n",
            "[[rules]]\nmatch = \".\"\n",
            "[[rules]]\nmatch = \".\"\nfrom = []\n",
            "[metadata]\nname = \"x\"\n",
        ] {
            assert!(
                matches!(
                    Constraint::from_toml(bad, Path::new("c.toml")),
                    Err(FitError::BadConstraint { .. })
                ),
                "{bad}"
            );
        }
        // What the recipe parser refuses, it refuses here too.
        assert!(matches!(
            Constraint::from_toml("[[rules]]\nrole = \"nope\"\nfrom = \"a\"\n", Path::new("c")),
            Err(FitError::Recipe(RecipeError::UnknownRole { .. }))
        ));
    }
}
