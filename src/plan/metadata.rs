//! The child's metadata: the metadata parent's key/values as raw bytes, the recipe's edits,
//! the parents recorded as `general.base_model.*`, and the recipe itself in `splice.recipe`.
//! Also the split keys each output shard carries.

use super::{
    KEY_CHAT_TEMPLATE, KEY_SPLICE_RECIPE, Parent, PlanError, PlanValue, PlannedTensor, Source,
    SplitOptions, parents,
};
use crate::ftype;
use crate::gguf::model::{KEY_SET_ID, KEY_SPLIT_COUNT, KEY_SPLIT_NO, KEY_SPLIT_TENSORS_COUNT};
use crate::gguf::{OwnedValue, ValueRef, ValueType};
use crate::recipe::{ChatTemplate, Recipe};

/// Set `key` to `value`: in place if the key is there (keeping its position), else at the end.
pub(crate) fn set_kv<'p>(kvs: &mut Vec<(String, PlanValue<'p>)>, key: &str, value: PlanValue<'p>) {
    match kvs.iter_mut().find(|(k, _)| k == key) {
        Some(slot) => slot.1 = value,
        None => kvs.push((key.to_string(), value)),
    }
}

/// `contributes[i]`: parent i gives the child at least one tensor byte.
pub(super) fn plan_metadata<'p>(
    parents: &'p [Parent],
    base: usize,
    recipe: &Recipe,
    contributes: &[bool],
    warnings: &mut Vec<String>,
) -> Result<Vec<(String, PlanValue<'p>)>, PlanError> {
    let names: Vec<&str> = parents.iter().map(|p| p.name.as_str()).collect();
    let meta = match &recipe.metadata.from {
        Some(m) => parents::index_of(parents, m, "metadata.from")?,
        None => base,
    };
    let mut kvs = inherited(&parents[meta]);

    let name = recipe.metadata.name.clone().unwrap_or_else(|| {
        let base_name = parents[base]
            .model
            .get("general.name")
            .and_then(|v| v.as_str())
            .unwrap_or(&parents[base].name);
        format!("{base_name} (gguf-splice of {})", names.join(" + "))
    });
    set_kv(
        &mut kvs,
        "general.name",
        PlanValue::Owned(OwnedValue::string(&name)),
    );

    match &recipe.metadata.chat_template {
        None => {}
        Some(ChatTemplate::Parent(p)) => {
            let i = parents::index_of(parents, p, "metadata.chat_template")?;
            let v = parents[i].model.get(KEY_CHAT_TEMPLATE).ok_or_else(|| {
                PlanError::ChatTemplate(format!("parent '{p}' has no {KEY_CHAT_TEMPLATE}"))
            })?;
            set_kv(&mut kvs, KEY_CHAT_TEMPLATE, PlanValue::Parent(v));
        }
        Some(ChatTemplate::File(path)) => {
            let text = crate::input::read_text(
                path,
                "chat template",
                crate::recipe::MAX_CHAT_TEMPLATE_BYTES,
            )
            .map_err(PlanError::ChatTemplateFile)?;
            set_kv(
                &mut kvs,
                KEY_CHAT_TEMPLATE,
                PlanValue::Owned(OwnedValue::string(&text)),
            );
        }
    }

    record_parents(&mut kvs, parents);
    // quantize.imatrix.* describe the matrix the tensors were quantized with. When the
    // contributing parents used different ones, no single value is true of the child.
    let contributing: Vec<&Parent> = parents
        .iter()
        .zip(contributes)
        .filter(|(_, c)| **c)
        .map(|(p, _)| p)
        .collect();
    if let Some(first) = contributing.first()
        && contributing
            .iter()
            .any(|p| imatrix_keys(p) != imatrix_keys(first))
    {
        let before = kvs.len();
        kvs.retain(|(k, _)| !k.starts_with(IMATRIX_PREFIX));
        if kvs.len() != before {
            warnings.push(format!(
                "the parents were quantized with different importance matrices: {IMATRIX_PREFIX}* removed; each parent's is kept as general.base_model.N.imatrix.*"
            ));
        }
    }
    set_kv(
        &mut kvs,
        KEY_SPLICE_RECIPE,
        PlanValue::Owned(OwnedValue::string(&recipe_record(parents, recipe))),
    );

    for key in &recipe.metadata.remove {
        let before = kvs.len();
        kvs.retain(|(k, _)| k != key);
        if kvs.len() == before {
            warnings.push(format!("metadata.remove: key '{key}' is not in the child"));
        }
    }
    for (key, value) in &recipe.metadata.set {
        set_kv(&mut kvs, key, PlanValue::Owned(value.clone()));
    }
    Ok(kvs)
}

/// Keys llama-quantize writes about the importance matrix it used.
const IMATRIX_PREFIX: &str = "quantize.imatrix.";

/// A parent's `quantize.imatrix.*` keys: (suffix, value), in file order.
fn imatrix_keys(p: &Parent) -> Vec<(String, ValueRef<'_>)> {
    let first = p.model.first();
    first
        .kvs()
        .iter()
        .filter_map(|kv| {
            kv.key
                .strip_prefix(IMATRIX_PREFIX)
                .map(|s| (s.to_string(), first.value(kv)))
        })
        .collect()
}

/// `Q4_K_M, model-Q4_K_M.gguf`: what tells quants of one model apart.
fn quant_label(p: &Parent) -> String {
    let file = recorded_file_name(p);
    match p
        .model
        .get("general.file_type")
        .and_then(|v| v.as_u64())
        .and_then(ftype::name)
    {
        Some(t) => format!("{t}, {file}"),
        None => file,
    }
}

/// The key/values a child inherits from `parent`: all but the split keys, the parent's own
/// record (`splice.*`, the set identity among them) and its `general.base_model.*`, raw and
/// in order.
pub(crate) fn inherited(parent: &Parent) -> Vec<(String, PlanValue<'_>)> {
    let first = parent.model.first();
    first
        .kvs()
        .iter()
        .filter(|kv| {
            !kv.key.starts_with("split.")
                && !kv.key.starts_with("splice.")
                && !kv.key.starts_with("general.base_model.")
        })
        .map(|kv| (kv.key.clone(), PlanValue::Parent(first.value(kv))))
        .collect()
}

/// Record the parents the way merges do (gguf-py's `general.base_model.*`): their count, and
/// each one's name (with its quant and file when parents share a name, as quants of one model
/// do), organization, repo URL and version where the parent has them, and the importance
/// matrix it was quantized with (`general.base_model.N.imatrix.*`).
pub(crate) fn record_parents<'p>(kvs: &mut Vec<(String, PlanValue<'p>)>, parents: &'p [Parent]) {
    set_kv(
        kvs,
        "general.base_model.count",
        PlanValue::Owned(OwnedValue::u32(parents.len() as u32)),
    );
    let own_names: Vec<&str> = parents
        .iter()
        .map(|p| {
            p.model
                .get("general.name")
                .and_then(|v| v.as_str())
                .unwrap_or(&p.name)
        })
        .collect();
    for (i, p) in parents.iter().enumerate() {
        let name = if own_names.iter().filter(|n| **n == own_names[i]).count() > 1 {
            format!("{} ({})", own_names[i], quant_label(p))
        } else {
            own_names[i].to_string()
        };
        set_kv(
            kvs,
            &format!("general.base_model.{i}.name"),
            PlanValue::Owned(OwnedValue::string(&name)),
        );
        for (from, to) in [
            ("general.organization", "organization"),
            ("general.repo_url", "repo_url"),
            ("general.version", "version"),
        ] {
            if let Some(v) = p.model.get(from).filter(|v| v.ty() == ValueType::String) {
                set_kv(
                    kvs,
                    &format!("general.base_model.{i}.{to}"),
                    PlanValue::Parent(v),
                );
            }
        }
        for (suffix, v) in imatrix_keys(p) {
            set_kv(
                kvs,
                &format!("general.base_model.{i}.imatrix.{suffix}"),
                PlanValue::Parent(v),
            );
        }
    }
}

/// What `splice.recipe` records: the parents' names and file names, then the recipe text.
fn recipe_record(parents: &[Parent], recipe: &Recipe) -> String {
    let mut out = made_by(parents);
    out.push_str(&recipe.text);
    out
}

/// The first lines of `splice.recipe`: the tool and version, and every parent's name and file
/// name.
pub(crate) fn made_by(parents: &[Parent]) -> String {
    let mut out = String::from("# made by gguf-splice ");
    out.push_str(env!("CARGO_PKG_VERSION"));
    out.push('\n');
    for p in parents {
        let file = recorded_file_name(p);
        out.push_str(&format!("# --parent {}={}\n", p.name, file));
    }
    out
}

/// The parent's first file as the child records it: a local file by its name, a remote one
/// by the last segment of its URL's path, never with the URL's user info, query or fragment
/// (a signature in `?X-Amz-Signature=…` must not end up in a file people share).
fn recorded_file_name(p: &Parent) -> String {
    let path = p.model.path();
    if p.model.shards()[0].remote.is_some() {
        return crate::source::url::file_name(&path.to_string_lossy());
    }
    path.file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// A hash (FNV-1a, 128 bits) of everything that decides the output bytes: metadata, tensors
/// and where each byte range comes from, the split options, and the parents' file sizes.
/// Deterministic, so the same parents and recipe still give the same bytes.
pub(super) fn set_id(
    parents: &[Parent],
    kvs: &[(String, PlanValue<'_>)],
    tensors: &[PlannedTensor],
    imatrices: &[crate::mix::Imatrix],
    split: SplitOptions,
) -> String {
    struct Fnv(u128);
    const PRIME: u128 = 0x0000000001000000000000000000013B;
    impl Fnv {
        fn bytes(&mut self, b: &[u8]) {
            self.u64(b.len() as u64);
            for &x in b {
                self.0 = (self.0 ^ x as u128).wrapping_mul(PRIME);
            }
        }
        fn u64(&mut self, v: u64) {
            for &x in &v.to_le_bytes() {
                self.0 = (self.0 ^ x as u128).wrapping_mul(PRIME);
            }
        }
    }
    let mut h = Fnv(0x6c62272e07bb014262b821756295c58d);
    for (k, v) in kvs {
        let v = v.as_ref();
        h.bytes(k.as_bytes());
        h.u64(v.ty() as u64);
        h.bytes(v.raw());
    }
    for t in tensors {
        h.bytes(t.info.name.as_bytes());
        h.u64(t.info.ty.id() as u64);
        t.info.dims.iter().for_each(|&d| h.u64(d));
        for p in &t.pieces {
            match &p.source {
                Source::Parent(b) => [b.parent as u64, b.shard as u64, b.offset, p.len]
                    .into_iter()
                    .for_each(|v| h.u64(v)),
                Source::Made(m) => h.bytes(&m.bytes),
                Source::Mix(job) => {
                    // Everything that decides the computed bytes.
                    h.u64(p.len);
                    h.bytes(b"mix");
                    for i in &job.inputs {
                        [i.parent as u64, i.weight.to_bits() as u64, i.ty.id() as u64]
                            .into_iter()
                            .for_each(|v| h.u64(v));
                        for s in &i.spans {
                            [s.shard as u64, s.offset, s.len]
                                .into_iter()
                                .for_each(|v| h.u64(v));
                        }
                        if let Some(scales) = &i.scales {
                            h.bytes(b"scales");
                            scales.iter().for_each(|s| h.u64(s.to_bits() as u64));
                        }
                    }
                    [
                        job.out_type.id() as u64,
                        job.n_per_row,
                        job.rows,
                        job.first_row,
                        job.rows_per_matrix,
                    ]
                    .into_iter()
                    .for_each(|v| h.u64(v));
                    if let Some(u) = &job.imatrix {
                        h.u64(u.file as u64);
                        h.bytes(u.entry.as_bytes());
                    }
                }
            }
        }
    }
    h.u64(split.max_bytes.unwrap_or(0));
    h.u64(split.max_tensors.unwrap_or(0) as u64);
    for p in parents {
        p.model.shards().iter().for_each(|s| h.u64(s.file_len));
    }
    for m in imatrices {
        h.bytes(m.path().as_os_str().as_encoded_bytes());
        h.u64(std::fs::metadata(m.path()).map_or(0, |md| md.len()));
    }
    format!("{:032x}", h.0)
}

/// The key/values of output shard `i` of `count`: all metadata and the split keys on the
/// first shard, only the split keys on the others (llama-gguf-split's layout); and in every
/// shard the set identity, so a reader can refuse shards of different runs.
pub fn shard_kvs<'a>(
    kvs: &'a [(String, PlanValue<'a>)],
    set_id: &str,
    i: usize,
    count: usize,
    total_tensors: usize,
) -> Vec<(String, PlanValue<'a>)> {
    let mut out: Vec<(String, PlanValue<'a>)> = if i == 0 { kvs.to_vec() } else { Vec::new() };
    if count > 1 {
        out.push((
            KEY_SPLIT_NO.into(),
            PlanValue::Owned(OwnedValue::u16(i as u16)),
        ));
        out.push((
            KEY_SPLIT_COUNT.into(),
            PlanValue::Owned(OwnedValue::u16(count as u16)),
        ));
        out.push((
            KEY_SPLIT_TENSORS_COUNT.into(),
            PlanValue::Owned(OwnedValue::i32(total_tensors as i32)),
        ));
        out.push((
            KEY_SET_ID.into(),
            PlanValue::Owned(OwnedValue::string(set_id)),
        ));
    }
    out
}
