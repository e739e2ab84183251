//! The parents' names, the one place their rules live: at least one parent, no name given
//! twice, every name a recipe expects given (a name given in another case is pointed out),
//! and a name looked up with the error that lists the names given. The planner, `assemble`
//! and `verify` ask here rather than each checking in its own way.

use super::{Parent, PlanError};

/// At least one parent, and no name given twice (rules could not say which one they mean).
pub fn check(parents: &[Parent]) -> Result<(), PlanError> {
    if parents.is_empty() {
        return Err(PlanError::NoParents);
    }
    for (i, p) in parents.iter().enumerate() {
        if parents[..i].iter().any(|q| q.name == p.name) {
            return Err(PlanError::DuplicateParent {
                name: p.name.clone(),
            });
        }
    }
    Ok(())
}

/// Every name in `expected` (a recipe's `parents = [...]`) is a parent's; the error for one
/// that is not names a parent given under it in another case (names are case-sensitive).
pub fn check_expected(parents: &[Parent], expected: &[String]) -> Result<(), PlanError> {
    for name in expected {
        if !parents.iter().any(|p| p.name == *name) {
            return Err(PlanError::MissingParent {
                name: name.clone(),
                given: parents
                    .iter()
                    .find(|p| p.name.eq_ignore_ascii_case(name))
                    .map(|p| p.name.clone()),
            });
        }
    }
    Ok(())
}

/// The index of the parent called `name`; `origin` is what named it (`--base`, `recipe
/// base`, `metadata.from`, a rule), for the error.
pub fn index_of(parents: &[Parent], name: &str, origin: &str) -> Result<usize, PlanError> {
    index_or_hint(parents, name, origin, String::new())
}

/// [`index_of`], with `hint` ending the error's message when there is no such parent.
pub(crate) fn index_or_hint(
    parents: &[Parent],
    name: &str,
    origin: &str,
    hint: String,
) -> Result<usize, PlanError> {
    let names: Vec<&str> = parents.iter().map(|p| p.name.as_str()).collect();
    index_in(&names, name, origin, hint)
}

/// The rule of [`index_of`] for parents known by name only, before any is opened (a batch
/// manifest's `[parents]`): the index of `name` in `names`, or the error that lists them.
pub fn index_of_name<S: AsRef<str>>(
    names: &[S],
    name: &str,
    origin: &str,
) -> Result<usize, PlanError> {
    index_in(names, name, origin, String::new())
}

fn index_in<S: AsRef<str>>(
    names: &[S],
    name: &str,
    origin: &str,
    hint: String,
) -> Result<usize, PlanError> {
    names
        .iter()
        .position(|n| n.as_ref() == name)
        .ok_or_else(|| PlanError::UnknownParent {
            origin: origin.to_string(),
            name: name.to_string(),
            known: names
                .iter()
                .map(AsRef::as_ref)
                .collect::<Vec<&str>>()
                .join(", "),
            hint,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ggml_type::GgmlType;
    use crate::gguf::Model;
    use crate::testkit::GgufBuilder;

    fn parents(names: &[&str]) -> (tempfile::TempDir, Vec<Parent>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.gguf");
        let bytes = GgufBuilder::new()
            .kv_str("general.architecture", "llama")
            .tensor("token_embd.weight", &[32, 2], GgmlType::F32, 1)
            .build();
        std::fs::write(&path, bytes).unwrap();
        let parents = names
            .iter()
            .map(|n| Parent {
                name: n.to_string(),
                model: Model::open(&path).unwrap(),
            })
            .collect();
        (dir, parents)
    }

    #[test]
    fn none_or_a_name_twice_is_refused() {
        assert!(matches!(check(&[]), Err(PlanError::NoParents)));
        let (_d, p) = parents(&["v3", "r1", "v3"]);
        assert!(matches!(check(&p), Err(PlanError::DuplicateParent { name }) if name == "v3"));
        let (_d, p) = parents(&["v3", "V3"]);
        assert!(check(&p).is_ok());
    }

    #[test]
    fn a_name_is_found_or_the_error_lists_the_names_given() {
        let (_d, p) = parents(&["v3", "r1"]);
        assert_eq!(index_of(&p, "r1", "--base").unwrap(), 1);
        let e = index_of(&p, "R1", "metadata.from").unwrap_err();
        assert!(
            matches!(&e, PlanError::UnknownParent { origin, name, known, hint }
                if origin == "metadata.from" && name == "R1" && known == "v3, r1" && hint.is_empty()),
            "{e:?}"
        );
        assert_eq!(
            e.to_string(),
            "metadata.from: no parent named 'R1' (parents given: v3, r1)"
        );
        assert_eq!(index_of_name(&["r1", "v3"], "v3", "child #1").unwrap(), 1);
        assert!(matches!(
            index_of_name(&["r1".to_string(), "v3".to_string()], "r9", "child #1"),
            Err(PlanError::UnknownParent { known, .. }) if known == "r1, v3"
        ));
        let e = index_or_hint(&p, "x", "--take #1", "; a hint".into()).unwrap_err();
        assert!(
            e.to_string().ends_with("(parents given: v3, r1); a hint"),
            "{e}"
        );
    }

    #[test]
    fn an_expected_name_given_in_another_case_is_pointed_out() {
        let (_d, p) = parents(&["V3", "r1"]);
        assert!(check_expected(&p, &["r1".into()]).is_ok());
        let e = check_expected(&p, &["r1".into(), "v3".into()]).unwrap_err();
        assert!(
            matches!(&e, PlanError::MissingParent { name, given: Some(g) } if name == "v3" && g == "V3"),
            "{e:?}"
        );
        assert!(matches!(
            check_expected(&p, &["x".into()]),
            Err(PlanError::MissingParent { given: None, .. })
        ));
    }
}
