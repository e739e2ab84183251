//! Progress on stderr for the long commands (`splice`, `batch`, `diff`, `verify`): a bar on
//! a terminal, JSON lines for farm dashboards (`--progress json`), or nothing.
//!
//! A JSON line is one object: `event` (`start`, `progress`, `done`, `skipped`), `job` (the
//! batch job number, or null), `child`, `shard` and `shards` (1-based shard of the child,
//! or null for a whole child), `bytes_done`, `bytes_total` (tensor bytes copied, or compared
//! for `diff` and `verify`), `rate` (bytes per second since the start) and `elapsed`
//! (seconds). `progress` lines come at most once
//! a second; `start` and `done` always.

use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use clap::ValueEnum;
use serde_json::json;

/// How progress is shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ProgressMode {
    /// A bar when stderr is a terminal, else nothing.
    Auto,
    /// A bar; a bar is drawn only on a terminal: elsewhere a note says so and nothing more is
    /// shown (use json for logs).
    Bar,
    /// JSON lines on stderr, for logs and dashboards.
    Json,
    /// Nothing.
    None,
}

/// What one stream of progress is about: a whole child, or one shard job of a batch.
pub struct Task {
    /// The batch job number.
    pub job: Option<usize>,
    /// The child (its label in a batch, its output path for `splice`, the model checked for
    /// `diff` and `verify`).
    pub child: String,
    /// Shown before the bar.
    pub message: String,
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

/// Reports the progress of one task at a time; updates may come from several threads (the
/// comparisons of `diff` and `verify` run in parallel).
pub struct Progress {
    json: bool,
    bar: indicatif::ProgressBar,
    running: Mutex<Option<Running>>,
    /// Lines written, for the throttle test.
    lines: AtomicUsize,
}

/// Least time between two `progress` lines.
const JSON_INTERVAL: Duration = Duration::from_secs(1);

impl Progress {
    /// A reporter for `mode`; `quiet` turns the automatic bar off (JSON lines stay: asked for).
    pub fn new(mode: ProgressMode, quiet: bool) -> Progress {
        let terminal = std::io::stderr().is_terminal();
        if mode == ProgressMode::Bar && !terminal {
            super::say(format_args!(
                "note: --progress bar draws only on a terminal, and stderr is not one: no progress is shown (--progress json writes lines a log can keep)"
            ));
        }
        let show_bar = match mode {
            ProgressMode::Bar => terminal,
            ProgressMode::Auto => !quiet && terminal,
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
            running: Mutex::new(None),
            lines: AtomicUsize::new(0),
        }
    }

    /// A task starts.
    pub fn start(&self, task: Task) {
        self.bar.reset();
        self.bar.set_length(task.total);
        self.bar.set_message(task.message.clone());
        let now = Instant::now();
        *self.lock() = Some(Running {
            task,
            started: now,
            last_line: now,
            done: 0,
        });
        self.line("start");
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Running>> {
        // A panic elsewhere while holding the lock leaves the data usable for a display.
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `done` tensor bytes of the current task are copied.
    pub fn update(&self, done: u64) {
        self.update_of(done, None);
    }

    /// `done` of `total` bytes, for work whose total is known only as it runs.
    pub fn update_total(&self, done: u64, total: u64) {
        self.update_of(done, Some(total));
    }

    fn update_of(&self, done: u64, total: Option<u64>) {
        if let Some(t) = total {
            self.bar.set_length(t);
        }
        self.bar.set_position(done);
        let due = {
            let mut r = self.lock();
            let Some(r) = r.as_mut() else { return };
            r.done = done;
            if let Some(t) = total {
                r.task.total = t;
            }
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
            && let Some(r) = self.lock().as_mut()
        {
            r.done = r.task.total;
        }
        self.line(event);
        self.bar.finish_and_clear();
        *self.lock() = None;
    }

    fn line(&self, event: &str) {
        if !self.json {
            return;
        }
        let r = self.lock();
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
        self.lines.fetch_add(1, Ordering::Relaxed);
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
            message: String::new(),
            shard: Some((2, 3)),
            total: 100,
        });
        for done in 0..100 {
            p.update(done);
        }
        p.finish("done");
        assert_eq!(
            p.lines.load(Ordering::Relaxed),
            2,
            "start and done within one second"
        );
    }
}
