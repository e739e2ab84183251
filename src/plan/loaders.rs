//! Which programs can load the child, told by the origins of its tensor types: a child with a
//! type only ik_llama.cpp defines loads only there, one with a type only mainline defines only
//! in llama.cpp, and one with both kinds nowhere (refused). And the limits those programs'
//! loaders put on a file, checked against the child: every limit a child can hit is here.

use super::{PlanError, PlanValue, PlannedTensor};
use crate::ggml_type::{self, GgmlType, IdClass, Origin};
use crate::roles::cut::is_stacked_experts;

/// llama.cpp's `LLAMA_MAX_EXPERTS`: 1024 in build 11434 (`src/llama-hparams.h`, raised for
/// Kimi K3; older builds had 512, 256 or 160). `load_hparams` asserts
/// `n_expert <= LLAMA_MAX_EXPERTS` (`src/llama-model.cpp`), so a child with more experts per
/// layer aborts at load.
pub const LLAMA_MAX_EXPERTS: u64 = 1024;

/// ik_llama.cpp's `LLAMA_MAX_EXPERTS`: 512 ("Qwen3 Next") in `src/llama-hparams.cpp` of the
/// PyPI sdist `ik-llama-cpp-python` 0.1.5, which the tests build (earlier ik trees had 384
/// and 256), asserted the same way in its `llm_load_hparams`.
pub const IK_LLAMA_MAX_EXPERTS: u64 = 512;

/// ik_llama.cpp's default `GGML_MAX_CONTEXTS` (`ggml/include/ggml.h`, 0.1.5; a build can
/// raise it with `-DGGML_MAX_CONTEXTS=N`). Its ggml keeps contexts in a fixed table of this
/// many, and its model loader holds one for every shard while it loads, plus the model's own:
/// a model in this many files or more cannot load (measured with a CPU build: 63 files load,
/// 64 fail with "failed to create context"). Mainline ggml has no such table.
pub const IK_GGML_MAX_CONTEXTS: usize = 64;

/// ggml's `GGML_MAX_NAME` (64 in both programs): `gguf.cpp` refuses a file with a tensor name
/// of this many bytes or more. Parents are read with the same rule.
pub const GGML_MAX_NAME: u64 = crate::gguf::read::MAX_TENSOR_NAME;

/// What a plan does with a child that has more experts per layer than a program that would
/// load it accepts ([`LLAMA_MAX_EXPERTS`], [`IK_LLAMA_MAX_EXPERTS`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OverLimit {
    /// Refuse the plan: `assemble`, which chose the count.
    Refuse,
    /// Say so among the plan's warnings: `assemble --force-expert-count`, and splices, whose
    /// count is their base's.
    Warn,
}

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

/// A program's expert limit.
fn max_experts(program: Origin) -> u64 {
    match program {
        Origin::Ik => IK_LLAMA_MAX_EXPERTS,
        _ => LLAMA_MAX_EXPERTS,
    }
}

/// The child's experts per layer as a loader sees them: its `ARCH.expert_count`, or more if
/// a stacked expert tensor holds more.
fn expert_count(tensors: &[PlannedTensor], kvs: &[(String, PlanValue<'_>)]) -> u64 {
    let value = |key: &str| kvs.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_ref());
    let declared = value("general.architecture")
        .and_then(|a| a.as_str().map(|a| format!("{a}.expert_count")))
        .and_then(|key| value(&key))
        .and_then(|v| v.as_u64())
        .unwrap_or(0);
    tensors
        .iter()
        .filter(|t| is_stacked_experts(&t.info.name))
        .filter_map(|t| t.info.dims.last().copied())
        .fold(declared, u64::max)
}

/// Check the child against the limits of the programs that would load it: tensor names (always
/// refused: no program reads them), and experts per layer (refused when every program that
/// would load the child refuses that many, unless `experts` says warn; a warning when only
/// some do).
pub(super) fn check_limits(
    loaders: &Loaders,
    tensors: &[PlannedTensor],
    kvs: &[(String, PlanValue<'_>)],
    experts: OverLimit,
    warnings: &mut Vec<String>,
) -> Result<(), PlanError> {
    if let Some(t) = tensors
        .iter()
        .find(|t| t.info.name.len() as u64 >= GGML_MAX_NAME)
    {
        return Err(PlanError::NameTooLong {
            tensor: t.info.name.clone(),
            len: t.info.name.len(),
            max: GGML_MAX_NAME - 1,
        });
    }
    let count = expert_count(tensors, kvs);
    let programs: &[Origin] = match loaders.origin {
        Origin::Both => &[Origin::Mainline, Origin::Ik],
        Origin::Mainline => &[Origin::Mainline],
        Origin::Ik => &[Origin::Ik],
    };
    let (over, under): (Vec<Origin>, Vec<Origin>) =
        programs.iter().partition(|&&p| count > max_experts(p));
    let Some(&highest) = over.iter().max_by_key(|&&p| max_experts(p)) else {
        return Ok(());
    };
    let program = |p: Origin| match p {
        Origin::Ik => "ik_llama.cpp",
        _ => "llama.cpp",
    };
    if let Some(&p) = under.first() {
        warnings.push(format!(
            "{count} experts per layer: {} loads at most {} (LLAMA_MAX_EXPERTS), so only {} loads the child",
            program(highest),
            max_experts(highest),
            program(p)
        ));
        return Ok(());
    }
    let (limit, program) = (max_experts(highest), program(highest));
    match experts {
        OverLimit::Refuse => Err(PlanError::TooManyExperts {
            count,
            limit,
            program,
        }),
        OverLimit::Warn => {
            warnings.push(format!(
                "{count} experts per layer, but {program} loads at most {limit} (LLAMA_MAX_EXPERTS): the child loads only in a build whose limit was raised"
            ));
            Ok(())
        }
    }
}

/// Warn when the child is in more files than ik_llama.cpp, built with its default
/// [`IK_GGML_MAX_CONTEXTS`], opens, if ik_llama.cpp would load it. Only a warning: a build
/// can raise the limit.
pub(super) fn check_shards(loaders: &Loaders, shards: usize, warnings: &mut Vec<String>) {
    if loaders.origin != Origin::Mainline && shards >= IK_GGML_MAX_CONTEXTS {
        warnings.push(format!(
            "the child is {shards} files: ik_llama.cpp built with its default GGML_MAX_CONTEXTS ({IK_GGML_MAX_CONTEXTS}) cannot load a model in {IK_GGML_MAX_CONTEXTS} files or more (it holds a ggml context per file); split into fewer files, or build ik_llama.cpp with -DGGML_MAX_CONTEXTS=N"
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gguf::{OwnedValue, TensorInfo};
    use crate::roles::views::Conversion;

    fn tensor(name: &str, dims: &[u64], ty: GgmlType) -> PlannedTensor {
        PlannedTensor {
            info: TensorInfo {
                name: name.into(),
                dims: dims.to_vec(),
                ty,
                offset: 0,
                n_bytes: 0,
            },
            out_shard: 0,
            pieces: Vec::new(),
            conversion: Conversion::Same,
            mix: None,
        }
    }

    /// A child of `ty` with `experts` experts in its stacked tensor.
    fn child(ty: GgmlType, experts: u64) -> Vec<PlannedTensor> {
        vec![
            tensor("token_embd.weight", &[256, 8], GgmlType::Q4_K),
            tensor("blk.0.ffn_up_exps.weight", &[256, 2, experts], ty),
        ]
    }

    /// The child's keys: `llama.expert_count` = `declared`.
    fn kvs(declared: u32) -> Vec<(String, PlanValue<'static>)> {
        vec![
            (
                "general.architecture".into(),
                PlanValue::Owned(OwnedValue::string("llama")),
            ),
            (
                "llama.expert_count".into(),
                PlanValue::Owned(OwnedValue::u32(declared)),
            ),
        ]
    }

    fn check(
        tensors: &[PlannedTensor],
        declared: u32,
        experts: OverLimit,
    ) -> (Result<(), PlanError>, Vec<String>) {
        let mut warnings = Vec::new();
        let l = loaders(tensors, &mut warnings).unwrap();
        warnings.clear();
        let r = check_limits(&l, tensors, &kvs(declared), experts, &mut warnings);
        (r, warnings)
    }

    #[test]
    fn expert_counts_over_every_loaders_limit_are_refused_unless_forced() {
        let over = LLAMA_MAX_EXPERTS + 1;
        let (r, w) = check(&child(GgmlType::Q4_K, over), 8, OverLimit::Refuse);
        assert!(
            matches!(
                r,
                Err(PlanError::TooManyExperts {
                    count,
                    limit: LLAMA_MAX_EXPERTS,
                    program: "llama.cpp",
                }) if count == over
            ),
            "{r:?}"
        );
        assert!(w.is_empty());
        // Forced: a warning that says the same.
        let (r, w) = check(&child(GgmlType::Q4_K, over), 8, OverLimit::Warn);
        assert!(r.is_ok());
        assert!(
            w.len() == 1 && w[0].contains("loads at most 1024") && w[0].contains("llama.cpp"),
            "{w:?}"
        );
        // The key counts too, though the tensors hold fewer.
        let (r, _) = check(&child(GgmlType::Q4_K, 8), over as u32, OverLimit::Refuse);
        assert!(matches!(r, Err(PlanError::TooManyExperts { .. })), "{r:?}");
        // At llama.cpp's limit: not refused; over ik_llama.cpp's, which is said.
        let (r, w) = check(
            &child(GgmlType::Q4_K, LLAMA_MAX_EXPERTS),
            8,
            OverLimit::Refuse,
        );
        assert!(r.is_ok() && w.len() == 1, "{r:?} {w:?}");
    }

    #[test]
    fn ik_childrens_limit_is_ik_llamas() {
        let over = IK_LLAMA_MAX_EXPERTS + 1;
        let (r, _) = check(&child(GgmlType::IQ4_KS, over), 8, OverLimit::Refuse);
        assert!(
            matches!(
                r,
                Err(PlanError::TooManyExperts {
                    limit: IK_LLAMA_MAX_EXPERTS,
                    program: "ik_llama.cpp",
                    ..
                })
            ),
            "{r:?}"
        );
        // A child both programs load, over ik's limit only: llama.cpp still loads it.
        let (r, w) = check(&child(GgmlType::Q4_K, over), 8, OverLimit::Refuse);
        assert!(r.is_ok(), "{r:?}");
        assert!(
            w.len() == 1 && w[0].contains("so only llama.cpp loads the child"),
            "{w:?}"
        );
        let (r, w) = check(
            &child(GgmlType::IQ4_KS, IK_LLAMA_MAX_EXPERTS),
            8,
            OverLimit::Refuse,
        );
        assert!(r.is_ok() && w.is_empty(), "{r:?} {w:?}");
    }

    #[test]
    fn names_ggml_cannot_read_are_refused() {
        let at_limit = format!("blk.0.{}.weight", "x".repeat(GGML_MAX_NAME as usize - 13));
        assert_eq!(at_limit.len() as u64, GGML_MAX_NAME);
        let mut tensors = child(GgmlType::Q4_K, 8);
        tensors.push(tensor(&at_limit[1..], &[7], GgmlType::F32));
        let (r, _) = check(&tensors, 8, OverLimit::Refuse);
        assert!(r.is_ok(), "63 bytes is fine: {r:?}");
        tensors.push(tensor(&at_limit, &[7], GgmlType::F32));
        // Not even --force-expert-count lets it through: no program reads the file.
        let (r, _) = check(&tensors, 8, OverLimit::Warn);
        assert!(
            matches!(&r, Err(PlanError::NameTooLong { tensor, len: 64, max: 63 }) if *tensor == at_limit),
            "{r:?}"
        );
    }

    #[test]
    fn shard_sets_ik_cannot_open_are_said() {
        let mut warnings = Vec::new();
        let of = |ty: GgmlType| loaders(&child(ty, 8), &mut Vec::new()).unwrap();
        check_shards(&of(GgmlType::Q4_K), IK_GGML_MAX_CONTEXTS - 1, &mut warnings);
        assert!(warnings.is_empty());
        for ty in [GgmlType::Q4_K, GgmlType::IQ4_KS] {
            check_shards(&of(ty), IK_GGML_MAX_CONTEXTS, &mut warnings);
            assert!(
                warnings
                    .pop()
                    .is_some_and(|w| w.contains("GGML_MAX_CONTEXTS (64)")),
                "{ty}"
            );
        }
        // Mainline llama.cpp only: its ggml has no context table.
        let nvfp4 = GgmlType::from_id(40).unwrap();
        check_shards(&of(nvfp4), 1000, &mut warnings);
        assert!(warnings.is_empty(), "{warnings:?}");
    }
}
