//! Which programs can load the child, told by the origins of its tensor types: a child with a
//! type only ik_llama.cpp defines loads only there, one with a type only mainline defines only
//! in llama.cpp, and one with both kinds nowhere (refused).

use super::{PlanError, PlannedTensor};
use crate::ggml_type::{self, GgmlType, IdClass, Origin};

/// The programs that load the child, and the types that decide it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Loaders {
    /// [`Origin::Both`]: llama.cpp and ik_llama.cpp; otherwise the only one.
    pub origin: Origin,
    /// The child's types that only that program defines, by name, in first-seen order.
    pub own_types: Vec<&'static str>,
    /// Whether a reader can tell the child's flavour from its type ids alone (false when its
    /// only ik-only type is one whose id mainline defines differently: ik's Q8_K).
    pub self_describing: bool,
}

impl Loaders {
    /// "ik_llama.cpp only (IQ4_KS, IQ2_KS)" and the like.
    pub fn describe(&self) -> String {
        if self.own_types.is_empty() {
            self.origin.loaded_by().to_string()
        } else {
            format!(
                "{} ({})",
                self.origin.loaded_by(),
                self.own_types.join(", ")
            )
        }
    }
}

/// The child's loaders; an error when its types come from both programs' own tables.
pub(super) fn loaders(
    tensors: &[PlannedTensor],
    warnings: &mut Vec<String>,
) -> Result<Loaders, PlanError> {
    let first = |o: Origin| tensors.iter().find(|t| t.info.ty.origin() == o);
    if let (Some(ik), Some(main)) = (first(Origin::Ik), first(Origin::Mainline)) {
        return Err(PlanError::FlavoursMixed {
            ik_tensor: ik.info.name.clone(),
            ik_type: ik.info.ty.name().into(),
            mainline_tensor: main.info.name.clone(),
            mainline_type: main.info.ty.name().into(),
        });
    }
    let origin = [Origin::Ik, Origin::Mainline]
        .into_iter()
        .find(|&o| first(o).is_some())
        .unwrap_or(Origin::Both);
    let mut own_types: Vec<&'static str> = Vec::new();
    let mut own: Vec<GgmlType> = Vec::new();
    for t in tensors.iter().filter(|t| t.info.ty.origin() == origin) {
        if origin != Origin::Both && !own.contains(&t.info.ty) {
            own.push(t.info.ty);
            own_types.push(t.info.ty.name());
        }
    }
    let self_describing = origin != Origin::Ik
        || own
            .iter()
            .any(|t| ggml_type::classify_id(t.id()) == IdClass::IkOnly);
    let l = Loaders {
        origin,
        own_types,
        self_describing,
    };
    if origin == Origin::Ik {
        let mut w = format!(
            "the child has types only ik_llama.cpp defines ({}): only ik_llama.cpp loads it, mainline llama.cpp refuses it",
            l.own_types.join(", ")
        );
        if !self_describing {
            w += "; its type ids alone do not tell, so read it back with --flavour ik";
        }
        warnings.push(w);
    }
    Ok(l)
}
