//! The journal's lines and their checks: the header and `done` lines with their checksums,
//! and reading a journal back, which trusts nothing in it (see the parent module).

use std::fs::File;
use std::ops::Range;

use serde_json::{Value, json};

use super::{VERSION, merge};

/// A journal larger than this is not one this program wrote (a line per 16 MiB job).
const MAX_JOURNAL_BYTES: u64 = 64 << 20;

/// FNV-1a, 64 bits: a checksum against damage, not against forgery.
fn checksum(parts: &[&str]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for &b in p.as_bytes().iter().chain(b"\n") {
            h = (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    format!("{h:016x}")
}

/// The journal's first line for `header`, and its checksum.
pub(super) fn header_line(header: &Value) -> (String, String) {
    let json = header.to_string();
    let check = checksum(&[&json]);
    (format!("{json} {check}\n"), check)
}

/// A `done` line, chained to the header's checksum.
pub(super) fn done_line(header_check: &str, shard: usize, range: &Range<u64>) -> String {
    let body = format!("done {shard} {} {}", range.start, range.end);
    let check = checksum(&[header_check, &body]);
    format!("{body} {check}\n")
}

/// Why a journal cannot be trusted: the line (1-based) and what is wrong with it.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Damage {
    pub line: usize,
    pub why: String,
}

/// What a journal holds, once checked.
#[derive(Debug)]
pub(super) struct Read {
    pub header: Value,
    /// The header's checksum, which `done` lines chain to.
    pub check: String,
    /// Per shard, completed ranges, merged.
    pub done: Vec<Vec<Range<u64>>>,
    /// Bytes up to the end of the last complete line (a torn line after it is cut off).
    pub valid_len: u64,
}

/// Read and check a journal against the plan's remote `jobs` (per shard): the outer error
/// is the system's, the inner one says where the journal is damaged.
pub(super) fn read_journal(
    f: &File,
    jobs: &[Vec<Range<u64>>],
) -> std::io::Result<Result<Read, Damage>> {
    use std::io::Read as _;
    let mut bytes = Vec::new();
    f.take(MAX_JOURNAL_BYTES + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_JOURNAL_BYTES {
        return Ok(Err(Damage {
            line: 0,
            why: format!("it is larger than {MAX_JOURNAL_BYTES} bytes"),
        }));
    }
    Ok(check_journal(&bytes, jobs))
}

/// [`read_journal`] on the journal's bytes.
fn check_journal(bytes: &[u8], jobs: &[Vec<Range<u64>>]) -> Result<Read, Damage> {
    let damage = |line: usize, why: &str| Damage {
        line,
        why: why.to_string(),
    };
    // A crash while appending leaves a last line without its newline: cut it off.
    let valid_len = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let text = std::str::from_utf8(&bytes[..valid_len])
        .map_err(|e| damage(0, &format!("it is not text (byte {})", e.valid_up_to())))?;
    let mut lines = text.lines();
    let first = lines
        .next()
        .ok_or_else(|| damage(1, "it has no header line"))?;
    let (header, check) = match first.rsplit_once(' ') {
        Some((json, check)) if checksum(&[json]) == check => {
            let header =
                serde_json::from_str(json).map_err(|_| damage(1, "the header is not JSON"))?;
            (header, check.to_string())
        }
        // A journal of another version (1 had no checksum) is not damaged: its version
        // differs, which the header comparison says.
        _ => match serde_json::from_str::<Value>(first) {
            Ok(h) if h.get("version").is_some_and(|v| *v != json!(VERSION)) => (h, String::new()),
            _ => return Err(damage(1, "the header's checksum does not match")),
        },
    };
    let mut done = vec![Vec::new(); jobs.len()];
    if header["version"] != json!(VERSION) {
        return Ok(Read {
            header,
            check,
            done,
            valid_len: valid_len as u64,
        });
    }
    for (n, line) in lines.enumerate() {
        let n = n + 2;
        let (body, sum) = line
            .rsplit_once(' ')
            .ok_or_else(|| damage(n, "not a `done` line"))?;
        if checksum(&[&check, body]) != sum {
            return Err(damage(n, "its checksum does not match"));
        }
        let w: Vec<&str> = body.split(' ').collect();
        let num = |s: &str| s.parse::<u64>().map_err(|_| damage(n, "not a `done` line"));
        if w.len() != 4 || w[0] != "done" {
            return Err(damage(n, "not a `done` line"));
        }
        let (shard, start, end) = (num(w[1])?, num(w[2])?, num(w[3])?);
        let Some(shard_jobs) = usize::try_from(shard).ok().and_then(|s| jobs.get(s)) else {
            return Err(damage(n, &format!("the output has no shard {shard}")));
        };
        // Jobs are sorted by offset: the range must be exactly one of them.
        let is_job = shard_jobs
            .binary_search_by_key(&start, |j| j.start)
            .is_ok_and(|k| shard_jobs[k].end == end);
        if !is_job {
            return Err(damage(
                n,
                &format!(
                    "bytes {start}-{end} of shard {shard} are not one remote job of this plan"
                ),
            ));
        }
        done[shard as usize].push(start..end);
    }
    Ok(Read {
        header,
        check,
        done: done.into_iter().map(merge).collect(),
        valid_len: valid_len as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A journal of `lines` (`done` lines given as (shard, start, end), checksummed) after a
    /// version-2 header.
    fn journal(done: &[(usize, u64, u64)]) -> (String, String) {
        let (mut text, check) = header_line(&json!({"version": VERSION, "set_id": "x"}));
        for &(s, a, b) in done {
            text.push_str(&done_line(&check, s, &(a..b)));
        }
        (text, check)
    }

    fn jobs() -> Vec<Vec<Range<u64>>> {
        vec![vec![100..200, 200..300, 400..500], vec![64..128]]
    }

    #[test]
    fn done_lines_are_read_and_a_torn_last_line_is_cut_off() {
        let (mut text, _) = journal(&[(0, 100, 200), (1, 64, 128), (0, 200, 300)]);
        let whole = text.len() as u64;
        text.push_str("done 0 400 5");
        let r = check_journal(text.as_bytes(), &jobs()).unwrap();
        assert_eq!(r.header["version"], VERSION);
        assert_eq!(r.done, vec![vec![100..300], vec![64..128]]);
        assert_eq!(r.valid_len, whole);
    }

    #[test]
    fn lines_that_are_not_one_job_of_the_plan_are_damage() {
        // Each is checksummed as this program would write it: the check against the plan
        // is what refuses it.
        for (bad, what) in [
            ((0, 0, 268_730_048), "not one remote job"),
            ((0, 0, 999_999_999_999), "not one remote job"),
            ((0, 120, 220), "not one remote job"),
            ((0, 100, 150), "not one remote job"),
            ((2, 0, 10), "no shard 2"),
        ] {
            let (text, _) = journal(&[(0, 100, 200), bad]);
            let e = check_journal(text.as_bytes(), &jobs()).unwrap_err();
            assert_eq!(e.line, 3, "{bad:?}");
            assert!(e.why.contains(what), "{bad:?}: {}", e.why);
        }
    }

    #[test]
    fn edited_or_foreign_lines_and_headers_are_damage() {
        let (text, _) = journal(&[(0, 100, 200)]);
        // A line appended by hand, as the old format wrote it.
        let e = check_journal(format!("{text}done 0 0 268730048\n").as_bytes(), &jobs());
        assert_eq!(e.unwrap_err().line, 3);
        // A line of another journal (chained to another header).
        let other = done_line("0000000000000000", 0, &(200..300));
        let e = check_journal(format!("{text}{other}").as_bytes(), &jobs());
        assert!(e.unwrap_err().why.contains("checksum"));
        // A damaged header is named as damaged, not as another version.
        let e = check_journal(text.replacen("set_id", "set_iX", 1).as_bytes(), &jobs());
        assert_eq!(e.unwrap_err().line, 1);
        let e = check_journal(b"\x00\x00garbage\n", &jobs()).unwrap_err();
        assert_eq!(e.line, 1);
        // A journal of version 1 (no checksums) is read as one of another version.
        let r = check_journal(b"{\"version\":1}\ndone 0 0 10\n", &jobs()).unwrap();
        assert_eq!(r.header["version"], 1);
    }
}
