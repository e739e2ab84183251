//! Progress on stderr for the commands that copy (`splice`, `batch`): a bar on a terminal,
//! JSON lines for farm dashboards (`--progress json`), or nothing.
//!
//! A JSON line is one object: `event` (`start`, `progress`, `done`, `skipped`), `job` (the
//! batch job number, or null), `child`, `shard` and `shards` (1-based shard of the child,
//! or null for a whole child), `bytes_done`, `bytes_total` (tensor bytes), `rate` (bytes
//! per second since the start) and `elapsed` (seconds). `progress` lines come at most once
//! a second; `start` and `done` always.

use std::cell::{Cell, RefCell};
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use clap::ValueEnum;
use serde_json::json;

/// How progress is shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ProgressMode {
    /// A bar when stderr is a terminal, else nothing.
    Auto,
    /// A bar.
    Bar,
    /// JSON lines on stderr.
    Json,
    /// Nothing.
    None,
}

/// What one stream of progress is about: a whole child, or one shard job of a batch.
pub struct Task {
    /// The batch job number.
    pub job: Option<usize>,
    /// The child (its label in a batch, its output path for `splice`).
    pub child: String,
    /// (shard, shards), 1-based, for a job of one shard.
    pub shard: Option<(usize, usize)>,
    /// Tensor bytes to copy.
    pub total: u64,
}

struct Running {
    task: Task,
    started: Instant,
    last_line: Instant,
    done: u64,
}

/// Reports the progress of one task at a time.
pub struct Progress {
    json: bool,
    bar: indicatif::ProgressBar,
    running: RefCell<Option<Running>>,
    /// Lines written, for the throttle test.
    lines: Cell<usize>,
}

/// Least time between two `progress` lines.
const JSON_INTERVAL: Duration = Duration::from_secs(1);

impl Progress {
    /// A reporter for `mode`; `quiet` turns the automatic bar off (JSON lines stay: asked for).
    pub fn new(mode: ProgressMode, quiet: bool) -> Progress {
        let show_bar = match mode {
            ProgressMode::Bar => true,
            ProgressMode::Auto => !quiet && std::io::stderr().is_terminal(),
            ProgressMode::Json | ProgressMode::None => false,
        };
        let bar = if show_bar {
            let bar = indicatif::ProgressBar::new(0);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{msg} {bar:40} {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}",
                )
                .expect("static template"),
            );
            bar
        } else {
            indicatif::ProgressBar::hidden()
        };
        Progress {
            json: mode == ProgressMode::Json,
            bar,
            running: RefCell::new(None),
            lines: Cell::new(0),
        }
    }

    /// A task starts.
    pub fn start(&self, task: Task) {
        self.bar.reset();
        self.bar.set_length(task.total);
        self.bar.set_message(match (task.job, task.shard) {
            (Some(j), Some((s, n))) => format!("job {j} {} {s}/{n}", task.child),
            _ => String::new(),
        });
        let now = Instant::now();
        *self.running.borrow_mut() = Some(Running {
            task,
            started: now,
            last_line: now,
            done: 0,
        });
        self.line("start");
    }

    /// `done` tensor bytes of the current task are copied.
    pub fn update(&self, done: u64) {
        self.bar.set_position(done);
        let due = {
            let mut r = self.running.borrow_mut();
            let Some(r) = r.as_mut() else { return };
            r.done = done;
            let due = r.last_line.elapsed() >= JSON_INTERVAL;
            if due {
                r.last_line = Instant::now();
            }
            due
        };
        if due {
            self.line("progress");
        }
    }

    /// The current task ended: `done` (written) or `skipped` (already complete).
    pub fn finish(&self, event: &str) {
        if event == "done"
            && let Some(r) = self.running.borrow_mut().as_mut()
        {
            r.done = r.task.total;
        }
        self.line(event);
        self.bar.finish_and_clear();
        *self.running.borrow_mut() = None;
    }

    fn line(&self, event: &str) {
        if !self.json {
            return;
        }
        let r = self.running.borrow();
        let Some(r) = r.as_ref() else { return };
        let elapsed = r.started.elapsed().as_secs_f64();
        let v = json!({
            "event": event,
            "job": r.task.job,
            "child": r.task.child,
            "shard": r.task.shard.map(|s| s.0),
            "shards": r.task.shard.map(|s| s.1),
            "bytes_done": r.done,
            "bytes_total": r.task.total,
            "rate": if elapsed > 0.0 { r.done as f64 / elapsed } else { 0.0 },
            "elapsed": elapsed,
        });
        // One write per line, so lines of concurrent jobs sharing a log never interleave.
        let mut line = v.to_string();
        line.push('\n');
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
        self.lines.set(self.lines.get() + 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_lines_are_throttled_but_start_and_done_always_come() {
        let p = Progress::new(ProgressMode::Json, false);
        p.start(Task {
            job: Some(3),
            child: "#1 (c.gguf)".into(),
            shard: Some((2, 3)),
            total: 100,
        });
        for done in 0..100 {
            p.update(done);
        }
        p.finish("done");
        assert_eq!(p.lines.get(), 2, "start and done within one second");
    }
}
