//! Mix rules: `mix = { r1 = 0.75, v3 = 0.25 }` instead of `from`, with the optional
//! `threshold`, `type` and `imatrix` keys. Parsed and checked here; what a mix computes is
//! [`crate::mix`]'s business.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde::de::{MapAccess, Visitor};

use super::RecipeError;
use crate::ggml_type::GgmlType;

/// What a mix rule asks for.
#[derive(Clone, Debug, PartialEq)]
pub struct MixSpec {
    /// Parents and their weights, in the order written (the order they are summed in).
    /// Used as given: weights that do not sum to 1 scale the result (the plan warns).
    pub weights: Vec<(String, f64)>,
    /// Mix only tensors (or experts, under an `experts` filter) whose relative distance
    /// from the base, `‖P − B‖ / ‖B‖`, reaches this for some parent P; keep the base's bytes
    /// below it.
    pub threshold: Option<f64>,
    /// The output type; `None`: the base's type for each tensor.
    pub out_type: Option<GgmlType>,
    /// An importance matrix (GGUF or legacy `.dat`), relative paths resolved against the
    /// recipe's directory.
    pub imatrix: Option<PathBuf>,
}

impl MixSpec {
    /// `mix r1 0.75 + v3 0.25`, for reports.
    pub fn label(&self) -> String {
        let parts: Vec<String> = self
            .weights
            .iter()
            .map(|(p, w)| format!("{p} {w}"))
            .collect();
        format!("mix {}", parts.join(" + "))
    }

    /// The parents with a non-zero weight, in order, weights rounded to f32.
    pub fn effective(&self) -> Vec<(&str, f32)> {
        self.weights
            .iter()
            .filter(|(_, w)| *w != 0.0)
            .map(|(p, w)| (p.as_str(), *w as f32))
            .collect()
    }
}

/// A TOML table of parent = weight, kept in written order.
#[derive(Debug, Default)]
pub(super) struct WeightTable(Vec<(String, toml::Value)>);

impl<'de> Deserialize<'de> for WeightTable {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = WeightTable;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a table of parent = weight, such as { r1 = 0.75, v3 = 0.25 }")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<WeightTable, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = m.next_entry::<String, toml::Value>()? {
                    out.push((k, v));
                }
                Ok(WeightTable(out))
            }
        }
        d.deserialize_map(V)
    }
}

/// The mix keys of one rule, as written.
pub(super) struct MixKeys {
    pub mix: Option<WeightTable>,
    pub threshold: Option<f64>,
    pub ty: Option<String>,
    pub imatrix: Option<PathBuf>,
    pub router: bool,
}

/// The `from` of a rule that has `from` (a pick) or `mix`: exactly one of the two.
pub(super) fn source(
    origin: &str,
    from: Option<String>,
    mix: Option<&MixSpec>,
) -> Result<String, RecipeError> {
    match (from, mix) {
        (Some(f), None) => Ok(f),
        (None, Some(_)) => Ok(String::new()),
        (Some(_), Some(_)) => Err(RecipeError::BadMix {
            origin: origin.to_string(),
            message: "a rule takes `from` one parent or a `mix` of several, not both".into(),
        }),
        (None, None) => Err(RecipeError::BadMix {
            origin: origin.to_string(),
            message: "a rule needs `from` (a parent) or `mix` (parents and weights)".into(),
        }),
    }
}

/// Check a rule's mix keys. `Ok(None)`: not a mix rule (and no mix-only key is set).
pub(super) fn parse(
    origin: &str,
    recipe: &Path,
    keys: MixKeys,
) -> Result<Option<MixSpec>, RecipeError> {
    let bad = |message: String| RecipeError::BadMix {
        origin: origin.to_string(),
        message,
    };
    let Some(table) = keys.mix else {
        for (key, set) in [
            ("threshold", keys.threshold.is_some()),
            ("type", keys.ty.is_some()),
            ("imatrix", keys.imatrix.is_some()),
        ] {
            if set {
                return Err(bad(format!(
                    "`{key}` belongs to a mix rule; add `mix = {{ PARENT = WEIGHT, ... }}` or remove `{key}`"
                )));
            }
        }
        return Ok(None);
    };
    if keys.router {
        return Err(bad(
            "`router = true` makes router rows follow picked experts; a mix rule mixes what it selects: select the router with a rule of its own".into(),
        ));
    }
    if table.0.is_empty() {
        return Err(bad(
            "`mix` names no parent; write e.g. mix = { r1 = 0.75, v3 = 0.25 }".into(),
        ));
    }
    let mut weights = Vec::with_capacity(table.0.len());
    for (parent, v) in table.0 {
        let w = match v {
            toml::Value::Float(f) => f,
            toml::Value::Integer(i) => i as f64,
            other => {
                return Err(bad(format!(
                    "weight of '{parent}' is {}, expected a number such as 0.75",
                    other.type_str()
                )));
            }
        };
        if !w.is_finite() {
            return Err(bad(format!(
                "weight of '{parent}' is {w}; weights must be finite"
            )));
        }
        weights.push((parent, w));
    }
    if weights.iter().all(|(_, w)| *w == 0.0) {
        return Err(bad(
            "every weight is 0; give at least one parent a weight".into()
        ));
    }
    if let Some(t) = keys.threshold
        && !(t.is_finite() && t >= 0.0)
    {
        return Err(bad(format!(
            "threshold {t}: expected a relative distance >= 0, such as 0.02"
        )));
    }
    let out_type = match keys.ty {
        None => None,
        Some(name) => Some(GgmlType::from_name(&name).ok_or_else(|| {
            bad(format!(
                "unknown type '{name}'; write a ggml type name such as Q4_K, Q6_K, Q8_0, IQ4_XS or F32"
            ))
        })?),
    };
    let imatrix = keys
        .imatrix
        .map(|p| recipe.parent().unwrap_or(Path::new(".")).join(p));
    Ok(Some(MixSpec {
        weights,
        threshold: keys.threshold,
        out_type,
        imatrix,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recipe::Recipe;

    fn rule(body: &str) -> Result<Recipe, RecipeError> {
        Recipe::from_toml(
            &format!("[[rules]]\nrole = 'routed_experts'\n{body}"),
            Path::new("dir/x.toml"),
        )
    }

    #[test]
    fn parses_a_mix_rule_in_written_order() {
        let r = rule(
            "mix = { v3 = 0.25, r1 = 0.75, zz = 0 }\nthreshold = 0.02\ntype = 'q4_k'\nimatrix = 'r1.imatrix.gguf'",
        )
        .unwrap();
        let m = r.rules[0].mix.as_ref().unwrap();
        let names: Vec<&str> = m.weights.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(names, ["v3", "r1", "zz"], "written order, not sorted");
        assert_eq!(m.effective(), vec![("v3", 0.25f32), ("r1", 0.75f32)]);
        assert_eq!(m.threshold, Some(0.02));
        assert_eq!(m.out_type, GgmlType::from_name("Q4_K"));
        assert_eq!(m.imatrix.as_deref(), Some(Path::new("dir/r1.imatrix.gguf")));
        assert_eq!(r.rules[0].from, "");
        assert_eq!(r.rules[0].source_label(), "mix v3 0.25 + r1 0.75 + zz 0");
        // Integers are weights too.
        let r = rule("mix = { r1 = 1, v3 = 0 }").unwrap();
        assert_eq!(
            r.rules[0].mix.as_ref().unwrap().effective(),
            vec![("r1", 1.0f32)]
        );
    }

    #[test]
    fn refuses_bad_mix_rules() {
        for body in [
            "mix = {}",
            "mix = { r1 = 'a' }",
            "mix = { r1 = 0, v3 = 0.0 }",
            "mix = { r1 = nan }",
            "mix = { r1 = inf, v3 = 0.5 }",
            "mix = { r1 = 0.5 }\nthreshold = -1",
            "mix = { r1 = 0.5 }\ntype = 'Q9_K'",
            "mix = { r1 = 0.5 }\nfrom = 'v3'",
            "mix = { r1 = 0.5 }\nexperts = '0-3'\nrouter = true",
            "from = 'r1'\nthreshold = 0.1",
            "from = 'r1'\ntype = 'Q4_K'",
            "from = 'r1'\nimatrix = 'x'",
        ] {
            let e = rule(body).unwrap_err();
            assert!(matches!(e, RecipeError::BadMix { .. }), "{body}: {e}");
        }
        // Neither: the error says what a rule needs.
        let e = rule("").unwrap_err();
        assert!(
            matches!(&e, RecipeError::BadMix { message, .. } if message.contains("needs `from`")),
            "{e}"
        );
    }
}
