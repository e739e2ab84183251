//! Fault injection for tests of output safety: failures and kills at chosen steps, so a test
//! can stop a run at every step deterministically, without timing. Never set in normal use.
//!
//! `GGUF_SPLICE_TEST_FAIL_AT=rename:3,rename:6` makes the 3rd and 6th rename of a run fail
//! with EPERM (what an immutable file gives); `GGUF_SPLICE_TEST_KILL_AT=rename:2` sends the
//! process SIGKILL right before its 2nd rename. `GGUF_SPLICE_TEST_PAUSE_AT=shard:1` with
//! `GGUF_SPLICE_TEST_PAUSE_FILE=F` creates `F` at that step and waits until the test removes
//! it, so a test can act (start a racing run, create a file) at that exact point and then let
//! the run go on. Steps are counted from 1, per kind:
//! - `shard`: before writing output shard N's data (after its temporary file exists);
//! - `rename`: every rename while publishing or rolling back, in the order they happen;
//! - `journal`: after the Nth completed remote range is recorded in the resume journal.

use std::sync::atomic::{AtomicU64, Ordering};

/// Environment variable: steps at which to fail with EPERM.
pub const FAIL_AT: &str = "GGUF_SPLICE_TEST_FAIL_AT";
/// Environment variable: steps at which to SIGKILL the process.
pub const KILL_AT: &str = "GGUF_SPLICE_TEST_KILL_AT";
/// Environment variable: steps at which to pause until [`PAUSE_FILE`] is removed.
pub const PAUSE_AT: &str = "GGUF_SPLICE_TEST_PAUSE_AT";
/// Environment variable: the file a paused run creates, and waits to see removed.
pub const PAUSE_FILE: &str = "GGUF_SPLICE_TEST_PAUSE_FILE";

/// The kinds of step a hook can stop at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Step {
    Shard,
    Rename,
    Journal,
}

impl Step {
    fn name(self) -> &'static str {
        match self {
            Step::Shard => "shard",
            Step::Rename => "rename",
            Step::Journal => "journal",
        }
    }
}

/// The hooks of one run, read from the environment, and how many steps of each kind passed.
#[derive(Debug, Default)]
pub(super) struct Hooks {
    fail: Vec<(String, u64)>,
    kill: Vec<(String, u64)>,
    pause: Vec<(String, u64)>,
    pause_file: Option<std::path::PathBuf>,
    shards: AtomicU64,
    renames: AtomicU64,
    journal: AtomicU64,
}

fn parse(var: &str) -> Vec<(String, u64)> {
    let Ok(v) = std::env::var(var) else {
        return Vec::new();
    };
    v.split(',')
        .filter_map(|s| {
            let (kind, n) = s.trim().split_once(':')?;
            Some((kind.to_string(), n.parse().ok()?))
        })
        .collect()
}

impl Hooks {
    /// The hooks the environment asks for (none in normal use).
    pub(super) fn from_env() -> Hooks {
        Hooks {
            fail: parse(FAIL_AT),
            kill: parse(KILL_AT),
            pause: parse(PAUSE_AT),
            pause_file: std::env::var_os(PAUSE_FILE).map(Into::into),
            ..Hooks::default()
        }
    }

    /// Count a step of `kind`; kill the process or return an error if a hook names it.
    pub(super) fn step(&self, kind: Step) -> std::io::Result<()> {
        let counter = match kind {
            Step::Shard => &self.shards,
            Step::Rename => &self.renames,
            Step::Journal => &self.journal,
        };
        let n = counter.fetch_add(1, Ordering::Relaxed) + 1;
        let hit = |list: &[(String, u64)]| list.iter().any(|(k, at)| k == kind.name() && *at == n);
        if hit(&self.kill) {
            // SAFETY: raise has no memory-safety preconditions; SIGKILL ends the process
            // here, as `kill -9` from outside would.
            unsafe {
                libc::raise(libc::SIGKILL);
            }
        }
        if let Some(file) = &self.pause_file
            && hit(&self.pause)
        {
            std::fs::write(file, std::process::id().to_string())?;
            // Waiting for the test, which removes the file when it has done its part.
            while file.exists() {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        }
        if hit(&self.fail) {
            return Err(std::io::Error::from_raw_os_error(libc::EPERM));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_are_counted_per_kind_and_fail_where_asked() {
        let h = Hooks {
            fail: vec![("rename".into(), 2)],
            ..Hooks::default()
        };
        assert!(h.step(Step::Shard).is_ok());
        assert!(h.step(Step::Rename).is_ok());
        assert!(h.step(Step::Shard).is_ok());
        let e = h.step(Step::Rename).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EPERM));
        assert!(h.step(Step::Rename).is_ok());
    }
}
