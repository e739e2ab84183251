//! Which parent each expert (or the whole) of one tensor comes from: the rules, tried in
//! order. A whole-tensor rule takes everything still unassigned and ends the walk; an expert
//! rule takes its experts and lets the others fall through to later rules, and what no rule
//! takes comes from the base. Pure: names and files are the caller's business.

use crate::recipe::IndexSet;

/// A rule that selects the tensor, as the owner walk sees it.
#[derive(Clone, Copy, Debug)]
pub struct Candidate<'r> {
    /// Index of the rule in the recipe.
    pub rule: usize,
    /// The parent the rule takes from.
    pub parent: usize,
    /// The experts it takes; `None`: the whole tensor (whatever is left of it).
    pub experts: Option<&'r IndexSet>,
}

/// The owner of every slice of a tensor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Owners {
    /// One parent for the whole tensor.
    Whole(usize),
    /// One parent per expert.
    Experts(Vec<usize>),
}

impl Owners {
    /// The owner of each of `count` experts.
    pub fn per_expert(&self, count: u64) -> Vec<usize> {
        match self {
            Owners::Whole(p) => vec![*p; count as usize],
            Owners::Experts(o) => o.clone(),
        }
    }

    /// Every parent that owns something, ascending.
    pub fn parents(&self) -> Vec<usize> {
        let mut v = match self {
            Owners::Whole(p) => vec![*p],
            Owners::Experts(o) => o.clone(),
        };
        v.sort_unstable();
        v.dedup();
        v
    }
}

/// Why the walk failed, for the rule at this index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OwnerError {
    /// An expert rule selected a tensor that is not cut by expert.
    NotExpertIndexed {
        /// The rule's index in the recipe.
        rule: usize,
    },
    /// An expert rule names experts the tensor does not have.
    OutOfRange {
        /// The rule's index in the recipe.
        rule: usize,
        /// Experts the tensor has.
        count: u64,
    },
}

/// The result of the walk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Assignment {
    /// Who owns what.
    pub owners: Owners,
    /// The rules that selected the tensor (each counts as a match).
    pub matched: Vec<usize>,
    /// The expert rules that actually took at least one expert.
    pub took_experts: Vec<usize>,
}

/// Walk `candidates` (in rule order) for a tensor of `experts` experts (`None`: not cut by
/// expert); what is left comes from `base`.
pub fn assign(
    candidates: &[Candidate],
    experts: Option<u64>,
    base: usize,
) -> Result<Assignment, OwnerError> {
    let mut slots: Option<Vec<Option<usize>>> = None;
    let mut whole = None;
    let mut matched = Vec::new();
    let mut took_experts = Vec::new();
    for c in candidates {
        matched.push(c.rule);
        match c.experts {
            None => {
                match slots.as_mut() {
                    Some(s) => s
                        .iter_mut()
                        .filter(|x| x.is_none())
                        .for_each(|x| *x = Some(c.parent)),
                    None => whole = Some(c.parent),
                }
                break;
            }
            Some(set) => {
                let Some(count) = experts else {
                    return Err(OwnerError::NotExpertIndexed { rule: c.rule });
                };
                if set.max() >= count {
                    return Err(OwnerError::OutOfRange {
                        rule: c.rule,
                        count,
                    });
                }
                let s = slots.get_or_insert_with(|| vec![None; count as usize]);
                let mut took = false;
                for (e, slot) in s.iter_mut().enumerate() {
                    if slot.is_none() && set.contains(e as u64) {
                        *slot = Some(c.parent);
                        took = true;
                    }
                }
                if took {
                    took_experts.push(c.rule);
                }
            }
        }
    }
    let owners = match slots {
        None => Owners::Whole(whole.unwrap_or(base)),
        Some(s) => {
            let o: Vec<usize> = s.into_iter().map(|x| x.unwrap_or(base)).collect();
            match o.first() {
                Some(&p) if o.iter().all(|&x| x == p) => Owners::Whole(p),
                _ => Owners::Experts(o),
            }
        }
    };
    Ok(Assignment {
        owners,
        matched,
        took_experts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(s: &str) -> IndexSet {
        IndexSet::parse(s).unwrap()
    }

    fn c(rule: usize, parent: usize, experts: Option<&IndexSet>) -> Candidate<'_> {
        Candidate {
            rule,
            parent,
            experts,
        }
    }

    #[test]
    fn nothing_selects_the_tensor_so_the_base_has_it() {
        let a = assign(&[], Some(4), 0).unwrap();
        assert_eq!(a.owners, Owners::Whole(0));
        assert!(a.matched.is_empty());
    }

    #[test]
    fn first_whole_rule_wins() {
        let a = assign(&[c(0, 1, None), c(1, 2, None)], None, 0).unwrap();
        assert_eq!(a.owners, Owners::Whole(1));
        assert_eq!(a.matched, vec![0], "the walk ends at the first whole rule");
    }

    #[test]
    fn expert_rules_fall_through() {
        let lo = set("0-1");
        let a = assign(&[c(0, 1, Some(&lo)), c(1, 2, None)], Some(4), 0).unwrap();
        assert_eq!(a.owners, Owners::Experts(vec![1, 1, 2, 2]));
        assert_eq!(a.matched, vec![0, 1]);
        assert_eq!(a.took_experts, vec![0]);
        // Without a later rule the rest is the base's.
        let a = assign(&[c(0, 1, Some(&lo))], Some(4), 0).unwrap();
        assert_eq!(a.owners, Owners::Experts(vec![1, 1, 0, 0]));
        assert_eq!(a.owners.parents(), vec![0, 1]);
    }

    #[test]
    fn an_earlier_rule_keeps_its_experts() {
        let (a_set, b_set) = (set("0-2"), set("1-3"));
        let a = assign(&[c(0, 1, Some(&a_set)), c(1, 2, Some(&b_set))], Some(4), 0).unwrap();
        assert_eq!(a.owners, Owners::Experts(vec![1, 1, 1, 2]));
        // A rule whose experts were all taken already took nothing.
        let all = set("0-3");
        let a = assign(&[c(0, 1, Some(&all)), c(1, 2, Some(&b_set))], Some(4), 0).unwrap();
        assert_eq!(a.owners, Owners::Whole(1), "every expert from one parent");
        assert_eq!(a.took_experts, vec![0]);
    }

    #[test]
    fn errors_name_the_rule() {
        let s = set("0-4");
        assert_eq!(
            assign(&[c(3, 1, Some(&s))], Some(4), 0),
            Err(OwnerError::OutOfRange { rule: 3, count: 4 })
        );
        assert_eq!(
            assign(&[c(2, 1, Some(&s))], None, 0),
            Err(OwnerError::NotExpertIndexed { rule: 2 })
        );
    }
}
