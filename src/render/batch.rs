//! The reports of `batch`: the per-child summary table, the job list and the shard status.
//! Shards are numbered from 1 as in the file names; jobs from 0 as array indices.

use std::fmt::Write as _;

use serde_json::{Value, json};

use super::human_bytes;
use crate::batch::{Batch, BatchError, ChildSummary, Job, ShardStatus};
use crate::compare::VerifyReport;
use crate::execute::ShardState;
use crate::plan::Plan;

/// `3` when every shard is covered, else `2,3 of 3` (1-based).
fn shards_text(s: &ChildSummary) -> String {
    if s.shards.len() == s.shard_count {
        return s.shard_count.to_string();
    }
    let list: Vec<String> = s.shards.iter().map(|i| (i + 1).to_string()).collect();
    format!("{} of {}", list.join(","), s.shard_count)
}

fn by_parent_text(s: &ChildSummary) -> String {
    let parts: Vec<String> = s
        .bytes_by_parent
        .iter()
        .map(|(p, b)| format!("{p} {}", human_bytes(*b)))
        .collect();
    parts.join(", ")
}

fn outcome_text(s: &ChildSummary) -> String {
    let mut parts = Vec::new();
    if s.written > 0 {
        parts.push(format!("{} written", s.written));
    }
    if s.skipped > 0 {
        parts.push(format!("{} already complete", s.skipped));
    }
    if !s.complete {
        parts.push("set not yet complete".into());
    }
    parts.join(", ")
}

/// The summary table: child, shards, size, bytes per parent, and (unless `planned_only`,
/// the dry run's table) time and what the jobs did.
pub fn batch_summary_text(rows: &[ChildSummary], planned_only: bool) -> String {
    let child_w = rows.iter().map(|r| r.child.len()).max().unwrap_or(5).max(5);
    let mut out = String::new();
    let parent_w = rows
        .iter()
        .map(|r| by_parent_text(r).len())
        .max()
        .unwrap_or(0)
        .max(15);
    let mut line = format!(
        "{:<child_w$}  {:>9}  {:>11}  {:<parent_w$}",
        "child", "shards", "size", "bytes by parent"
    );
    if !planned_only {
        let _ = write!(line, "  {:>9}  result", "time");
    }
    let _ = writeln!(out, "{}", line.trim_end());
    for r in rows {
        let mut line = format!(
            "{:<child_w$}  {:>9}  {:>11}  {:<parent_w$}",
            r.child,
            shards_text(r),
            human_bytes(r.bytes),
            by_parent_text(r)
        );
        if !planned_only {
            let _ = write!(line, "  {:>7.1} s  {}", r.seconds, outcome_text(r));
        }
        let _ = writeln!(out, "{}", line.trim_end());
    }
    let bytes: u64 = rows.iter().map(|r| r.bytes).sum();
    let _ = write!(
        out,
        "{} {}, {}",
        rows.len(),
        if rows.len() == 1 { "child" } else { "children" },
        human_bytes(bytes)
    );
    if !planned_only {
        let secs: f64 = rows.iter().map(|r| r.seconds).sum();
        let _ = write!(out, ", {secs:.1} s");
    }
    out.push('\n');
    out
}

/// The summary as JSON: `{"children": [...], "bytes": N, "seconds": S}`.
pub fn batch_summary_json(rows: &[ChildSummary], planned_only: bool) -> Value {
    let children: Vec<Value> = rows
        .iter()
        .map(|r| {
            let mut v = json!({
                "child": r.child,
                "output": r.output,
                "shard_count": r.shard_count,
                "shards": r.shards.iter().map(|s| s + 1).collect::<Vec<_>>(),
                "bytes": r.bytes,
                "bytes_by_parent": r.bytes_by_parent.iter()
                    .map(|(p, b)| json!({"parent": p, "bytes": b}))
                    .collect::<Vec<_>>(),
            });
            if !planned_only {
                v["written"] = json!(r.written);
                v["skipped"] = json!(r.skipped);
                v["seconds"] = json!(r.seconds);
                v["complete"] = json!(r.complete);
            }
            v
        })
        .collect();
    let mut v = json!({
        "children": children,
        "bytes": rows.iter().map(|r| r.bytes).sum::<u64>(),
    });
    if !planned_only {
        v["seconds"] = json!(rows.iter().map(|r| r.seconds).sum::<f64>());
    }
    v
}

/// The job list: job number, child, shard, size and path.
pub fn jobs_text(batch: &Batch, plans: &[Plan], jobs: &[Job]) -> String {
    let child_w = batch
        .children
        .iter()
        .map(|c| c.spec.label.len())
        .max()
        .unwrap_or(5)
        .max(5);
    let mut out = format!(
        "{:>5}  {:<child_w$}  {:>11}  {:>11}  path\n",
        "job", "child", "shard", "size"
    );
    for j in jobs {
        let shard = &plans[j.child].shards[j.shard];
        let _ = writeln!(
            out,
            "{:>5}  {:<child_w$}  {:>11}  {:>11}  {}",
            j.index,
            batch.children[j.child].spec.label,
            format!("{} of {}", j.shard + 1, j.shards),
            human_bytes(shard.file_len()),
            shard.path.display()
        );
    }
    out
}

/// The job list as JSON: `{"count": N, "jobs": [...]}`.
pub fn jobs_json(batch: &Batch, plans: &[Plan], jobs: &[Job]) -> Value {
    let list: Vec<Value> = jobs
        .iter()
        .map(|j| {
            let shard = &plans[j.child].shards[j.shard];
            json!({
                "job": j.index,
                "child": batch.children[j.child].spec.label,
                "output": plans[j.child].shards[0].path,
                "shard": j.shard + 1,
                "shards": j.shards,
                "path": shard.path,
                "bytes": shard.file_len(),
            })
        })
        .collect();
    json!({"count": jobs.len(), "jobs": list})
}

fn state_word(s: &ShardState) -> &'static str {
    match s {
        ShardState::Complete => "complete",
        ShardState::Staged => "staged",
        ShardState::Missing => "missing",
        ShardState::Differs { .. } => "differs",
    }
}

fn state_detail(s: &ShardState) -> String {
    match s {
        ShardState::Staged => " (complete; put in place when the other shards are complete)".into(),
        ShardState::Differs {
            what,
            expected,
            found,
        } => format!(" ({what}: expected {expected}, found {found})"),
        _ => String::new(),
    }
}

/// Whether every shard of the batch is complete and in place.
pub fn batch_complete(status: &[ShardStatus]) -> bool {
    status.iter().all(|s| s.state == ShardState::Complete)
}

/// The status of every shard, child by child, and whether the batch is complete.
pub fn status_text(batch: &Batch, status: &[ShardStatus]) -> String {
    let mut out = String::new();
    for (i, c) in batch.children.iter().enumerate() {
        let mine: Vec<&ShardStatus> = status.iter().filter(|s| s.job.child == i).collect();
        let done = mine
            .iter()
            .filter(|s| s.state == ShardState::Complete)
            .count();
        let verdict = if done == mine.len() {
            "complete".to_string()
        } else {
            format!("{done} of {} shards in place", mine.len())
        };
        let _ = writeln!(out, "{}: {verdict}", c.spec.label);
        for s in mine {
            let _ = writeln!(
                out,
                "  job {:>4}  shard {} of {}  {:<8}  {}{}",
                s.job.index,
                s.job.shard + 1,
                s.job.shards,
                state_word(&s.state),
                s.path.display(),
                state_detail(&s.state)
            );
        }
    }
    let done = status
        .iter()
        .filter(|s| s.state == ShardState::Complete)
        .count();
    let _ = writeln!(
        out,
        "{}: {done} of {} shards in place",
        if batch_complete(status) {
            "complete"
        } else {
            "incomplete"
        },
        status.len()
    );
    out
}

/// The status as JSON: `{"complete": bool, "children": [{..., "shards": [...]}]}`.
pub fn status_json(batch: &Batch, status: &[ShardStatus]) -> Value {
    let children: Vec<Value> = batch
        .children
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let mine: Vec<&ShardStatus> = status.iter().filter(|s| s.job.child == i).collect();
            let shards: Vec<Value> = mine
                .iter()
                .map(|s| {
                    let mut v = json!({
                        "job": s.job.index,
                        "shard": s.job.shard + 1,
                        "path": s.path,
                        "state": state_word(&s.state),
                    });
                    if let ShardState::Differs {
                        what,
                        expected,
                        found,
                    } = &s.state
                    {
                        v["what"] = json!(what);
                        v["expected"] = json!(expected);
                        v["found"] = json!(found);
                    }
                    v
                })
                .collect();
            json!({
                "child": c.spec.label,
                "complete": mine.iter().all(|s| s.state == ShardState::Complete),
                "shards": shards,
            })
        })
        .collect();
    json!({"complete": batch_complete(status), "children": children})
}
/// `batch --verify`'s text: one line per child, `verified`, `MISMATCH` with its verify
/// report, or `not verified` for a child whose check failed (its error is said apart).
pub fn batch_verify_text(batch: &Batch, verdicts: &[Result<VerifyReport, BatchError>]) -> String {
    let mut out = String::new();
    for (c, v) in batch.children.iter().zip(verdicts) {
        let label = &c.spec.label;
        let _ = match v {
            Ok(r) if r.passed() => writeln!(out, "{label}: verified"),
            Ok(r) => write!(out, "{label}: MISMATCH\n{}", super::verify_text(r)),
            Err(_) => writeln!(out, "{label}: not verified (error above)"),
        };
    }
    out
}

/// `batch --verify --json`: each child's verify report, or `{child, error}`.
pub fn batch_verify_json(batch: &Batch, verdicts: &[Result<VerifyReport, BatchError>]) -> Value {
    Value::Array(
        batch
            .children
            .iter()
            .zip(verdicts)
            .map(|(c, v)| match v {
                Ok(r) => super::verify_json(r),
                Err(e) => json!({"child": c.spec.label, "error": e.to_string()}),
            })
            .collect(),
    )
}
