//! Remote parents when the network or the server misbehaves, through the fault-injecting
//! proxy in front of a real nginx: every fault ends in a child byte-identical to the local
//! splice, or in a clear error with nothing at the output path. `--resume` after a kill (by
//! the writer's test hook, no timing) or after giving up continues without fetching again
//! what was written. Skipped by a plain `cargo test` when nginx is missing.

// Errors carry the file, expected and found values; built once per failed run.
#![allow(clippy::result_large_err)]

use std::os::unix::process::ExitStatusExt;
use std::process::Output;

use crate::common::{assert_exit, assert_ok, chimera_preset, names, stderr, strs};
use crate::proxy::Fault;
use crate::server::{Server, comparable, server};

/// The R1T chimera of the two fixtures, spliced locally (the reference).
fn reference(s: &Server) -> Vec<u8> {
    let out = s.out("reference.gguf");
    if !out.exists() {
        let pv = format!("v3={}", s.local("v3-q3mix.gguf"));
        let pr = format!("r1={}", s.local("r1-iq2mix.gguf"));
        let o = s.run(&[
            "splice",
            "--parent",
            &pv,
            "--parent",
            &pr,
            "--recipe",
            &chimera_preset(),
            "-o",
            out.to_str().unwrap(),
            "-q",
        ]);
        assert_ok(&o);
    }
    std::fs::read(out).unwrap()
}

/// The same chimera from the remote parents into `name`, with more arguments and env.
fn splice(s: &Server, name: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    let pv = format!("v3={}", s.hf("v3-q3mix.gguf"));
    let pr = format!("r1={}", s.hf("r1-iq2mix.gguf"));
    let out = s.out(name).display().to_string();
    let mut all = vec!["splice", "--parent", &pv, "--parent", &pr, "-o", &out, "-q"];
    let preset = chimera_preset();
    all.extend(["--recipe", preset.as_str()]);
    all.extend(args);
    s.run_env(&all, env)
}

/// Nothing of the run is at the output path, whatever it left hidden beside it.
#[track_caller]
fn nothing_at(s: &Server, name: &str) {
    assert!(!s.out(name).exists(), "{name} exists after a failed run");
}

#[track_caller]
fn identical(s: &Server, name: &str) {
    reference(s);
    assert!(
        comparable(&s.out(name)) == comparable(&s.out("reference.gguf")),
        "{name} differs from the local splice (but for its record of the parents' URLs)"
    );
}

#[test]
fn transient_503s_are_retried() {
    let Some(s) = server("transient_503s_are_retried") else {
        return;
    };
    for k in 1..=3 {
        s.proxy.on_data_request(k, Fault::Status503);
    }
    let o = splice(&s, "c.gguf", &[], &[]);
    assert_ok(&o);
    identical(&s, "c.gguf");
    let n503 = s.proxy.log().iter().filter(|r| r.status == 503).count();
    assert_eq!(n503, 3);
}

#[test]
fn a_dropped_connection_resumes_from_its_last_byte() {
    let Some(s) = server("a_dropped_connection_resumes_from_its_last_byte") else {
        return;
    };
    s.proxy.on_data_request(1, Fault::DropAfter(1000));
    let o = splice(&s, "c.gguf", &["--connections", "1"], &[]);
    assert_ok(&o);
    identical(&s, "c.gguf");
    let data: Vec<_> = s.proxy.log().into_iter().filter(|r| r.data).collect();
    let (first, next) = (&data[0], &data[1]);
    assert_eq!(first.body, 1000);
    let (a, b) = first.range.unwrap();
    assert_eq!(next.file, first.file);
    assert_eq!(next.range, Some((a + 1000, b)), "{data:?}");
}

#[test]
fn an_expired_redirect_target_is_resolved_again() {
    let Some(s) = server("an_expired_redirect_target_is_resolved_again") else {
        return;
    };
    s.proxy.on_data_request(2, Fault::ExpireTargets);
    let o = splice(&s, "c.gguf", &["--connections", "1"], &[]);
    assert_ok(&o);
    identical(&s, "c.gguf");
    let log = s.proxy.log();
    let at = log
        .iter()
        .position(|r| r.status == 403)
        .expect("a 403 for the expired target");
    assert_eq!(log[at].listener, "cdn");
    assert_eq!(log[at + 1].listener, "hub", "resolved again: {log:?}");
    assert_eq!(log[at + 1].range, log[at].range);
}

#[test]
fn a_server_that_ignores_range_is_a_clear_error() {
    let Some(s) = server("a_server_that_ignores_range_is_a_clear_error") else {
        return;
    };
    // While copying: the header reads went fine, the first data request answers 200 (one
    // connection, so nothing else was fetched before).
    s.proxy.on_data_request(1, Fault::IgnoreRange);
    let o = splice(&s, "c.gguf", &["--connections", "1"], &[]);
    assert_exit(&o, 4);
    assert!(
        stderr(&o).contains("ignores Range requests") && !stderr(&o).contains("--resume"),
        "{}",
        stderr(&o)
    );
    nothing_at(&s, "c.gguf");
    // Nothing was fetched: no resume state is kept either.
    assert!(names(s.out.path()).iter().all(|n| !n.contains(".resume.")));

    // From the first request: not a byte of the 200's body is used, and the connection is
    // dropped, not drained (a file much larger than the socket buffers is not sent whole).
    s.proxy.reset();
    let big = s.out("big.bin");
    std::fs::write(&big, vec![7u8; 64 << 20]).unwrap();
    s.add_raw(&big);
    s.proxy.ignore_range_always(true);
    let o = s.run(&["inspect", &s.hf("big.bin")]);
    assert_exit(&o, 4);
    assert!(
        stderr(&o).contains("answered 200 with the whole file"),
        "{}",
        stderr(&o)
    );
    let served = s.proxy.served("big.bin", false);
    assert!(
        served < 32 << 20,
        "{served} bytes of a 64 MiB file were sent"
    );
}

#[test]
fn a_file_changed_since_planning_aborts_with_nothing_written() {
    let Some(s) = server("a_file_changed_since_planning_aborts_with_nothing_written") else {
        return;
    };
    s.proxy
        .on_data_request(2, Fault::Change(s.served("r1-iq2mix.gguf")));
    let o = splice(&s, "c.gguf", &["--connections", "1"], &[]);
    assert_exit(&o, 4);
    let e = stderr(&o);
    assert!(
        e.contains("r1-iq2mix.gguf") && e.contains("changed on the server") && e.contains("ETag"),
        "{e}"
    );
    nothing_at(&s, "c.gguf");
    // The fetched bytes are worthless: no resume state is kept.
    assert!(
        names(s.out.path()).iter().all(|n| !n.contains(".resume.")),
        "{:?}",
        names(s.out.path())
    );
}

#[test]
fn giving_up_keeps_what_was_fetched_and_resume_finishes() {
    let Some(s) = server("giving_up_keeps_what_was_fetched_and_resume_finishes") else {
        return;
    };
    // Eight 503s in a row for one range: the run gives up after its 8 attempts.
    for k in 4..=11 {
        s.proxy.on_data_request(k, Fault::Status503);
    }
    let o = splice(&s, "c.gguf", &["--connections", "1"], &[]);
    assert_exit(&o, 4);
    let e = stderr(&o);
    assert!(
        e.contains("gave up after 8 attempts") && e.contains("--resume"),
        "{e}"
    );
    nothing_at(&s, "c.gguf");
    let served_before =
        s.proxy.served("r1-iq2mix.gguf", true) + s.proxy.served("v3-q3mix.gguf", true);
    assert!(served_before > 0);

    s.proxy.reset();
    let o = splice(&s, "c.gguf", &["--resume", "--json"], &[]);
    assert_ok(&o);
    identical(&s, "c.gguf");
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let resumed = j["resumed_bytes"].as_u64().unwrap();
    assert_eq!(resumed, served_before, "every byte fetched before was kept");
    assert!(names(s.out.path()).iter().all(|n| !n.contains(".resume.")));
}

#[test]
fn a_killed_run_resumes_without_fetching_again() {
    let Some(s) = server("a_killed_run_resumes_without_fetching_again") else {
        return;
    };
    let kill = [("GGUF_SPLICE_TEST_KILL_AT", "journal:3")];
    let o = splice(&s, "c.gguf", &["--connections", "1"], &kill);
    assert_eq!(o.status.signal(), Some(libc::SIGKILL), "{}", stderr(&o));
    nothing_at(&s, "c.gguf");
    let journal = s.out(".c.gguf.resume.journal");
    let text = std::fs::read_to_string(&journal).unwrap();
    let recorded: u64 = text
        .lines()
        .filter_map(|l| {
            let w: Vec<&str> = l.split(' ').collect();
            (w[0] == "done").then(|| w[3].parse::<u64>().unwrap() - w[2].parse::<u64>().unwrap())
        })
        .sum();
    assert_eq!(text.lines().filter(|l| l.starts_with("done")).count(), 3);
    // Without --resume the state is not silently thrown away.
    let o = splice(&s, "c.gguf", &[], &[]);
    assert_exit(&o, 4);
    assert!(stderr(&o).contains("pass --resume"), "{}", stderr(&o));
    // Another plan cannot continue it.
    let o = splice(&s, "c.gguf", &["--resume", "--take", "token_embd=r1"], &[]);
    assert_exit(&o, 4);
    assert!(stderr(&o).contains("cannot resume"), "{}", stderr(&o));

    let data =
        |s: &Server| s.proxy.served("r1-iq2mix.gguf", true) + s.proxy.served("v3-q3mix.gguf", true);
    s.proxy.reset();
    let o = splice(&s, "c.gguf", &["--resume", "--json"], &[]);
    assert_ok(&o);
    identical(&s, "c.gguf");
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["resumed_bytes"].as_u64().unwrap(), recorded);
    let resumed_run = data(&s);
    // The resumed run fetched exactly what the journal did not have.
    s.proxy.reset();
    assert_ok(&splice(&s, "d.gguf", &[], &[]));
    assert_eq!(resumed_run + recorded, data(&s));
    assert!(names(s.out.path()).iter().all(|n| !n.contains(".resume.")));
}

/// The journal is not trusted (issue 19): a line appended by hand (bytes never fetched, a
/// range past the output, 100 bytes inside a tensor) or a damaged header makes `--resume`
/// refuse, naming the journal as damaged, with nothing published; the journal as written
/// resumes.
#[test]
fn a_damaged_or_edited_journal_is_refused() {
    let Some(s) = server("a_damaged_or_edited_journal_is_refused") else {
        return;
    };
    let kill = [("GGUF_SPLICE_TEST_KILL_AT", "journal:2")];
    let o = splice(&s, "c.gguf", &["--connections", "1"], &kill);
    assert_eq!(o.status.signal(), Some(libc::SIGKILL), "{}", stderr(&o));
    let journal = s.out(".c.gguf.resume.journal");
    let written = std::fs::read_to_string(&journal).unwrap();
    let header = written.lines().next().unwrap().to_string();
    for edited in [
        format!("{written}done 0 0 268730048\n"),
        format!("{written}done 0 0 999999999999\n"),
        format!("{written}done 0 4096 4196\n"),
        written.replacen("\"set_id\"", "\"set_iX\"", 1),
        format!("{}{}", &written[..written.len() / 2], "\x00\x00\x00\n"),
        written.replacen(&header, "garbage", 1),
    ] {
        std::fs::write(&journal, &edited).unwrap();
        let o = splice(&s, "c.gguf", &["--resume"], &[]);
        assert_exit(&o, 4);
        let e = stderr(&o);
        assert!(
            e.contains("it is damaged") && e.contains("delete"),
            "{edited}: {e}"
        );
        nothing_at(&s, "c.gguf");
    }
    // A torn last line (a crash while appending) is cut off, not damage.
    std::fs::write(&journal, format!("{written}done 0 12")).unwrap();
    let o = splice(&s, "c.gguf", &["--resume"], &[]);
    assert_ok(&o);
    identical(&s, "c.gguf");
    assert!(names(s.out.path()).iter().all(|n| !n.contains(".resume.")));
}

/// Without `ETag` or `Last-Modified`, a parent rewritten in place (same size, same header,
/// other tensor bytes, as a requantization with another imatrix) cannot be told from the one
/// fetched before: `--resume` refuses and says why, instead of mixing old and new bytes; a
/// run that fails keeps nothing it could not resume from (issue 19).
#[test]
fn resume_without_validators_is_refused() {
    let Some(s) = server("resume_without_validators_is_refused") else {
        return;
    };
    s.proxy.strip_validators(true);
    let kill = [("GGUF_SPLICE_TEST_KILL_AT", "journal:2")];
    let o = splice(&s, "c.gguf", &["--connections", "1"], &kill);
    assert_eq!(o.status.signal(), Some(libc::SIGKILL), "{}", stderr(&o));
    // The tensor bytes change; size and header stay.
    for name in ["r1-iq2mix.gguf", "v3-q3mix.gguf"] {
        let path = s.served(name);
        let data_from = gguf_splice::gguf::GgufFile::open(&path)
            .unwrap()
            .data_offset as usize;
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[data_from..].iter_mut().for_each(|b| *b ^= 0x5A);
        std::fs::write(&path, bytes).unwrap();
    }
    // With or without --resume, the run says that resuming cannot work, and why.
    for resume in [&["--resume"][..], &[]] {
        let o = splice(&s, "c.gguf", resume, &[]);
        assert_exit(&o, 4);
        let e = stderr(&o);
        assert!(
            e.contains("without an ETag or Last-Modified") && e.contains("delete"),
            "{e}"
        );
        nothing_at(&s, "c.gguf");
    }

    // A run that gives up keeps nothing: it could not be resumed.
    for name in names(s.out.path()) {
        std::fs::remove_file(s.out(&name)).unwrap();
    }
    s.proxy.reset();
    for k in 4..=11 {
        s.proxy.on_data_request(k, Fault::Status503);
    }
    let o = splice(&s, "c.gguf", &["--connections", "1"], &[]);
    assert_exit(&o, 4);
    assert!(!stderr(&o).contains("--resume"), "{}", stderr(&o));
    assert!(names(s.out.path()).iter().all(|n| !n.contains(".resume.")));
}

/// A run that fails at publishing keeps what it fetched (issue 19): here the output appears
/// while the run fetches (made at a hook point), so publishing without --force is refused;
/// the journal and part files stay, and `--resume --force` finishes without fetching again.
#[test]
fn a_run_refused_at_publishing_keeps_its_download() {
    let Some(s) = server("a_run_refused_at_publishing_keeps_its_download") else {
        return;
    };
    let pv = format!("v3={}", s.hf("v3-q3mix.gguf"));
    let pr = format!("r1={}", s.hf("r1-iq2mix.gguf"));
    let out = s.out("c.gguf");
    let o_str = out.display().to_string();
    let preset = chimera_preset();
    let args = [
        "splice", "--parent", &pv, "--parent", &pr, "--recipe", &preset, "-o", &o_str, "-q",
    ];
    let (child, flag) = s.start_paused(&args, "shard:1");
    std::fs::write(&out, b"another file").unwrap();
    std::fs::remove_file(&flag).unwrap();
    let o = child.wait_with_output().unwrap();
    assert_exit(&o, 4);
    let e = stderr(&o);
    assert!(e.contains("--force") && e.contains("--resume"), "{e}");
    assert_eq!(std::fs::read(&out).unwrap(), b"another file");
    let kept = names(s.out.path());
    assert!(
        kept.contains(&".c.gguf.resume.journal".to_string()),
        "{kept:?}"
    );
    assert!(
        kept.contains(&".c.gguf.resume.part".to_string()),
        "{kept:?}"
    );

    s.proxy.reset();
    let o = splice(&s, "c.gguf", &["--resume", "--force"], &[]);
    assert_ok(&o);
    identical(&s, "c.gguf");
    assert_eq!(
        s.proxy.served("r1-iq2mix.gguf", true) + s.proxy.served("v3-q3mix.gguf", true),
        0,
        "nothing fetched again"
    );
    assert!(names(s.out.path()).iter().all(|n| !n.contains(".resume.")));
}

/// One lock for every kind of run into an output (issue 19): while a remote run publishes
/// its shards (paused between two renames, no first shard visible yet), a local run into the
/// same output with --force is refused and touches nothing (it used to remove the remote
/// run's shards as "left by an interrupted run" and publish its own set); the remote run then
/// finishes with its own complete set.
#[test]
fn a_local_run_into_the_output_of_a_running_remote_run_is_refused() {
    let Some(s) = server("a_local_run_into_the_output_of_a_running_remote_run_is_refused") else {
        return;
    };
    let preset = chimera_preset();
    let split = ["--split-max-tensors", "20", "-q", "--force"];
    let args = |v3: String, r1: String, out: &str| -> Vec<String> {
        let o = s.out(out).display().to_string();
        let mut a: Vec<String> = ["splice", "--parent", &v3, "--parent", &r1, "-o", &o]
            .map(String::from)
            .to_vec();
        a.extend(["--recipe".to_string(), preset.clone()]);
        a.extend(split.map(String::from));
        a
    };
    let local = |out: &str| {
        let v3 = format!("v3={}", s.local("v3-q3mix.gguf"));
        let r1 = format!("r1={}", s.local("r1-iq2mix.gguf"));
        args(v3, r1, out)
    };
    let remote = args(
        format!("v3={}", s.hf("v3-q3mix.gguf")),
        format!("r1={}", s.hf("r1-iq2mix.gguf")),
        "c.gguf",
    );
    let shard = |p: &str, k: u32| format!("{p}-0000{k}-of-00003.gguf");
    assert_ok(&s.run(&strs(&local("ref.gguf"))));

    // Renames: new shard 2 is in place, the remote run stops before shard 3.
    let (child, flag) = s.start_paused(&strs(&remote), "rename:2");
    assert!(s.out(&shard("c", 2)).exists() && !s.out(&shard("c", 1)).exists());
    let placed = std::fs::read(s.out(&shard("c", 2))).unwrap();
    let o = s.run(&strs(&local("c.gguf")));
    assert_exit(&o, 4);
    let e = stderr(&o);
    assert!(e.contains("another gguf-splice run is writing"), "{e}");
    assert!(!e.contains("interrupted run"), "{e}");
    assert!(!s.out(&shard("c", 1)).exists(), "the local run published");
    assert_eq!(std::fs::read(s.out(&shard("c", 2))).unwrap(), placed);

    std::fs::remove_file(&flag).unwrap();
    let o = child.wait_with_output().unwrap();
    assert_ok(&o);
    for k in 1..=3 {
        assert!(
            comparable(&s.out(&shard("c", k))) == comparable(&s.out(&shard("ref", k))),
            "shard {k} differs from the local splice (but for its record of the parents' URLs)"
        );
    }
    let hidden: Vec<String> = names(s.out.path())
        .into_iter()
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(hidden.is_empty(), "hidden files left: {hidden:?}");
}
