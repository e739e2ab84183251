//! `inspect`: a model's metadata, tensors and totals.

use std::fmt::Write as _;

use serde_json::{Value, json};

use super::{
    Totals, human_bytes, plural_count, table_row, tensor_row, totals, totals_json, totals_text,
};
use crate::ftype;
use crate::ggml_type::Origin;
use crate::gguf::{Model, ValueRef};
use crate::roles;
use crate::roles::unit::Units;

/// Hyperparameters worth showing first: the `{arch}.*` keys.
fn hyperparameters(model: &Model) -> Vec<(String, ValueRef<'_>)> {
    let Some(arch) = model.architecture() else {
        return Vec::new();
    };
    let prefix = format!("{arch}.");
    model
        .first()
        .kvs()
        .iter()
        .filter(|kv| kv.key.starts_with(&prefix))
        .map(|kv| (kv.key.clone(), model.first().value(kv)))
        .collect()
}

/// A value's text, with `general.file_type` named (`15 = Q4_K_M`).
fn value_text(key: &str, v: ValueRef<'_>) -> String {
    match (key, v.as_u64()) {
        ("general.file_type", Some(n)) => ftype::label(n),
        _ => v.summary(4),
    }
}

/// Which programs load the model, from its tensor types' origins.
fn loaded_by(model: &Model) -> Origin {
    let mut origins = model.tensors().map(|t| t.info.ty.origin());
    origins.find(|&o| o != Origin::Both).unwrap_or(Origin::Both)
}

/// A model's tensor bytes totalled by type and by group.
fn model_totals(model: &Model) -> (Totals, Totals) {
    let by_type = totals(
        model
            .tensors()
            .map(|t| (t.info.ty.name().to_string(), t.info.n_bytes)),
    );
    let by_group = totals(
        model
            .tensors()
            .map(|t| (roles::role_of(&t.info.name), t.info.n_bytes)),
    );
    (by_type, by_group)
}

/// `inspect --json`: files, architecture, hyperparameters, every key (arrays summarised),
/// every tensor with its absolute offset, and totals by type and group.
pub fn inspect_json(model: &Model) -> Value {
    let first = model.first();
    let units = Units::of(model);
    let kvs: Vec<Value> = first
        .kvs()
        .iter()
        .map(|kv| {
            json!({"key": kv.key, "type": kv.ty.name(), "value": first.value(kv).to_json(false)})
        })
        .collect();
    let tensors: Vec<Value> = model
        .tensors()
        .map(|t| {
            json!({
                "name": t.info.name, "type": t.info.ty.name(), "type_id": t.info.ty.id(),
                "shape": t.info.dims, "bytes": t.info.n_bytes, "shard": t.shard + 1,
                "offset": t.file_offset,
                "group": roles::role_of(&t.info.name).label(),
                "companion_of": units.head(&t.info.name),
            })
        })
        .collect();
    let (by_type, by_group) = model_totals(model);
    json!({
        "files": model.shards().iter().map(|s| json!({
            "path": s.path, "version": s.version, "bytes": s.file_len,
            "alignment": s.alignment, "data_offset": s.data_offset,
        })).collect::<Vec<_>>(),
        "architecture": model.architecture(),
        "flavour": model.flavour().arg(),
        "flavour_basis": model.flavour_basis().to_string(),
        "loadable_by": loaded_by(model).loaded_by(),
        // Typed, as the metadata list: numbers stay numbers.
        "hyperparameters": hyperparameters(model)
            .into_iter()
            .map(|(k, v)| (k, v.to_json(false)))
            .collect::<serde_json::Map<_, _>>(),
        "file_type": first
            .get("general.file_type")
            .and_then(|v| v.as_u64())
            .map(|n| json!({"id": n, "name": ftype::name(n)})),
        "metadata": kvs,
        "tensors": tensors,
        "totals_by_type": totals_json(&by_type),
        "totals_by_group": totals_json(&by_group),
        "tensor_bytes": model.data_bytes(),
        "output_tied_to_token_embd": roles::output_is_tied(model),
    })
}

/// `inspect`'s text report: files, hyperparameters, metadata, the tensor table and totals.
pub fn inspect_text(model: &Model) -> String {
    let mut out = String::new();
    let first = model.first();
    for s in model.shards() {
        let _ = writeln!(
            out,
            "file: {} (GGUF v{}, {}, {})",
            s.path.display(),
            s.version,
            human_bytes(s.file_len),
            plural_count(s.tensors().len(), "tensor")
        );
    }
    let _ = writeln!(
        out,
        "architecture: {}",
        model.architecture().unwrap_or("(none)")
    );
    let _ = writeln!(
        out,
        "flavour: {} ({}); loadable by {}",
        model.flavour().arg(),
        model.flavour_basis(),
        loaded_by(model).loaded_by()
    );
    for (k, v) in hyperparameters(model) {
        let _ = writeln!(out, "  {k} = {}", v.summary(4));
    }
    let _ = writeln!(out, "\nmetadata ({} keys):", first.kvs().len());
    for kv in first.kvs() {
        let _ = writeln!(
            out,
            "  {:<40} {:<6} {}",
            kv.key,
            kv.ty.name(),
            value_text(&kv.key, first.value(kv))
        );
    }
    let _ = writeln!(out, "\ntensors ({}):", model.tensor_count());
    let _ = writeln!(
        out,
        "{}",
        table_row(["name", "type", "shape", "bytes", "shard", "offset"])
    );
    for t in model.tensors() {
        let _ = writeln!(out, "{}", tensor_row(t.info, t.shard, t.file_offset));
    }
    let (by_type, by_group) = model_totals(model);
    totals_text(&mut out, "totals by type", &by_type);
    totals_text(&mut out, "totals by group", &by_group);
    let units = Units::of(model);
    if units.count() > 0 {
        let _ = writeln!(
            out,
            "companions: {} tensors (.scale, .input_scale, .bias, ... beside a STEM.weight), counted in their weight's group; they go wherever their weight goes",
            units.count()
        );
    }
    let _ = writeln!(out, "\ntensor data: {}", human_bytes(model.data_bytes()));
    if roles::output_is_tied(model) {
        let _ = writeln!(
            out,
            "output head: tied to token_embd.weight (the model has no output.weight)"
        );
    }
    out
}
