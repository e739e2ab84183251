//! Hostile and mistaken inputs to the binary: files that are not regular files, files too big
//! to be what they claim, short files, and the one-line messages and exit codes that say so.
//! Commands that could block or read without end run under a watchdog (and a memory limit),
//! so a regression fails the test instead of hanging it.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;
use gguf_splice::ggml_type::GgmlType;
use gguf_splice::gguf::Model;
use gguf_splice::plan::{self, Parent, PlanError, SplitOptions};
use gguf_splice::recipe::Recipe;

mod messages;

const WATCHDOG: Duration = Duration::from_secs(30);

/// A started command; its output goes to unnamed temporary files, so a long message cannot
/// fill a pipe and stall it.
struct Running {
    child: std::process::Child,
    stdout: std::fs::File,
    stderr: std::fs::File,
}

/// Start the binary with a 4 GiB address-space limit, so a runaway read fails fast instead of
/// eating the machine's memory.
fn spawn(args: &[String]) -> Running {
    use std::os::unix::process::CommandExt;
    let (stdout, stderr) = (tempfile::tempfile().unwrap(), tempfile::tempfile().unwrap());
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(stdout.try_clone().unwrap())
        .stderr(stderr.try_clone().unwrap());
    // SAFETY: setrlimit is async-signal-safe and touches only the child's own limits.
    unsafe {
        cmd.pre_exec(|| {
            let lim = libc::rlimit {
                rlim_cur: 4 << 30,
                rlim_max: 4 << 30,
            };
            if libc::setrlimit(libc::RLIMIT_AS, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    Running {
        child: cmd.spawn().expect("binary starts"),
        stdout,
        stderr,
    }
}

/// Everything a file received, from its start.
fn contents(mut f: std::fs::File) -> Vec<u8> {
    use std::io::{Read, Seek};
    let mut v = Vec::new();
    f.rewind().unwrap();
    f.read_to_end(&mut v).unwrap();
    v
}

/// Run several commands at once; each must end within the watchdog's time. A command still
/// running then is killed and the test fails naming it.
fn run_all(cmds: &[Vec<String>]) -> Vec<Output> {
    let mut running: Vec<Running> = cmds.iter().map(|c| spawn(c)).collect();
    let deadline = Instant::now() + WATCHDOG;
    let mut hung = Vec::new();
    while running
        .iter_mut()
        .any(|r| r.child.try_wait().unwrap().is_none())
    {
        if Instant::now() > deadline {
            for (r, cmd) in running.iter_mut().zip(cmds) {
                if r.child.try_wait().unwrap().is_none() {
                    let _ = r.child.kill();
                    hung.push(cmd.join(" "));
                }
            }
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let outputs: Vec<Output> = running
        .into_iter()
        .map(|mut r| Output {
            status: r.child.wait().unwrap(),
            stdout: contents(r.stdout),
            stderr: contents(r.stderr),
        })
        .collect();
    assert!(
        hung.is_empty(),
        "still running after {WATCHDOG:?}: {hung:#?}"
    );
    outputs
}

fn args(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

/// The command failed with `code` and one line on stderr, which is returned.
#[track_caller]
fn one_line_error(o: &Output, code: i32) -> String {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(code), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(!err.contains("panicked"), "{err}");
    err
}

/// More of the hand-built pair for these tests.
impl Setup {
    /// `splice --parent v3=.. --parent r1=.. ARGS -o DIR/child.gguf --dry-run`
    fn dry_run(&self, more: &[&str]) -> Vec<String> {
        let mut a = args(&[
            "splice",
            "--parent",
            &format!("v3={}", self.v3.display()),
            "--parent",
            &format!("r1={}", self.r1.display()),
            "-o",
            &self.path("child.gguf").display().to_string(),
            "--dry-run",
        ]);
        a.extend(args(more));
        a
    }
}

fn mkfifo(path: &Path) {
    let st = Command::new("mkfifo").arg(path).status().unwrap();
    assert!(st.success());
}

#[test]
fn fifos_and_devices_are_refused_without_blocking_or_reading() {
    let s = setup(GgmlType::Q3_K);
    let fifo = s.path("fifo");
    mkfifo(&fifo);
    let fifo = fifo.display().to_string();
    let v3 = s.v3.display().to_string();
    let with_template = |name: &str, file: &str| {
        s.recipe(
            name,
            &format!("[metadata]\nchat_template = {{ file = '{file}' }}\n"),
        )
    };
    let fifo_template = with_template("fifo-template.toml", &fifo);
    let zero_template = with_template("zero-template.toml", "/dev/zero");
    let cmds = vec![
        args(&["inspect", &fifo]),
        args(&["diff", &fifo, &v3]),
        args(&["diff", &v3, &fifo]),
        args(&[
            "splice",
            "--parent",
            &format!("a={fifo}"),
            "-o",
            &s.path("o.gguf").display().to_string(),
        ]),
        s.dry_run(&["--recipe", &fifo]),
        s.dry_run(&["--recipe", "/dev/zero"]),
        s.dry_run(&["--recipe", &fifo_template]),
        s.dry_run(&["--recipe", &zero_template]),
        args(&["verify", &fifo, "--parent", &format!("v3={v3}")]),
        args(&["verify", &v3, "--parent", &format!("v3={fifo}")]),
        args(&[
            "verify",
            &v3,
            "--parent",
            &format!("v3={v3}"),
            "--recipe",
            &fifo,
        ]),
    ];
    for (o, cmd) in run_all(&cmds).iter().zip(&cmds) {
        // Not a regular file: an I/O error (4), said in one line that names the file.
        let err = one_line_error(o, 4);
        assert!(err.contains("not a regular file"), "{cmd:?}: {err}");
        assert!(
            err.contains(&fifo) || err.contains("/dev/zero"),
            "{cmd:?}: {err}"
        );
    }
}

#[test]
fn recipes_and_templates_over_their_caps_are_refused_as_bad_input() {
    let s = setup(GgmlType::Q3_K);
    // A regular file one byte over the 1 MiB caps.
    let big = s.path("big.txt");
    std::fs::File::create(&big)
        .unwrap()
        .set_len((1 << 20) + 1)
        .unwrap();
    let big_template = s.recipe(
        "big-template.toml",
        &format!(
            "[metadata]\nchat_template = {{ file = '{}' }}\n",
            big.display()
        ),
    );
    let cmds = vec![
        s.dry_run(&["--recipe", &big.display().to_string()]),
        s.dry_run(&["--recipe", &big_template]),
    ];
    for (o, cmd) in run_all(&cmds).iter().zip(&cmds) {
        let err = one_line_error(o, 3);
        assert!(
            err.contains(&big.display().to_string()) && err.contains("1 MiB"),
            "{cmd:?}: {err}"
        );
    }
    // At the cap, the template is accepted.
    std::fs::write(&big, vec![b'x'; 1 << 20]).unwrap();
    let o = &run_all(&[s.dry_run(&["--recipe", &big_template])])[0];
    assert!(o.status.success(), "{}", stderr(o));
}

#[test]
fn exit_codes_follow_content_3_io_4() {
    let s = setup(GgmlType::Q3_K);
    // Content: a recipe that is not UTF-8.
    let latin1 = s
        .file("latin1.toml", b"[recipe]\ndescription = \"caf\xe9\"\n")
        .display()
        .to_string();
    let o = run(&s
        .dry_run(&["--recipe", &latin1])
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>());
    let err = one_line_error(&o, 3);
    assert!(err.contains("UTF-8") && err.contains(&latin1), "{err}");
    // I/O: a chat template file that does not exist.
    let missing = s.recipe(
        "missing-template.toml",
        "[metadata]\nchat_template = { file = 'no-such-template.jinja' }\n",
    );
    let o = run(&s
        .dry_run(&["--recipe", &missing])
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>());
    let err = one_line_error(&o, 4);
    assert!(err.contains("no-such-template.jinja"), "{err}");
    // I/O: a recipe file that is not there, or cannot be looked at (here: a path through a
    // file; permissions behave alike), is a file problem like any other, not a usage error,
    // and the error says what stopped it.
    let through_file = format!("{}/r.toml", s.v3.display());
    let no_such = s.path("no-such-recipe.toml").display().to_string();
    for (recipe, says) in [
        (&no_such, "no such file, and no preset of that name"),
        (&through_file, "Not a directory"),
    ] {
        let o = run(&s
            .dry_run(&["--recipe", recipe])
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>());
        let err = one_line_error(&o, 4);
        assert!(err.contains(recipe.as_str()) && err.contains(says), "{err}");
    }
}

#[test]
fn an_empty_parent_path_is_a_usage_error() {
    let s = setup(GgmlType::Q3_K);
    let o = run(&[
        "splice",
        "--parent",
        "a=",
        "-o",
        s.path("o.gguf").to_str().unwrap(),
    ]);
    let err = one_line_error(&o, 2);
    assert!(
        err.contains("--parent 'a='") && err.contains("empty path"),
        "{err}"
    );
}

/// A parent that claims 16 TiB of tensor data, cut to 4 KiB: every command refuses it at once
/// (the reader checks each tensor's end against the file's length), whether it is a single
/// file or the second shard of a set.
#[test]
fn files_shorter_than_their_declared_data_are_refused_at_once() {
    use gguf_splice::testkit::GgufBuilder;
    let s = setup(GgmlType::Q3_K);
    let claims = |b: GgufBuilder| {
        b.kv_str("general.architecture", "deepseek2")
            .tensor_declared(
                "blk.0.ffn_up_exps.weight",
                &[1 << 20, 1 << 20, 4],
                GgmlType::F32.id(),
                16 << 40,
            )
    };
    let short = |path: &Path, b: GgufBuilder| {
        let f = std::fs::File::create(path).unwrap();
        std::io::Write::write_all(&mut &f, &b.build()).unwrap();
        f.set_len(4096).unwrap();
        path.display().to_string()
    };
    let single = short(&s.path("short.gguf"), claims(GgufBuilder::new()));
    // A two-shard set whose second shard is the short one.
    let split = |no: u16| {
        GgufBuilder::new()
            .kv_u16("split.no", no)
            .kv_u16("split.count", 2)
            .kv_i32("split.tensors.count", 2)
    };
    let first = s.path("set-00001-of-00002.gguf");
    std::fs::write(
        &first,
        split(0)
            .kv_str("general.architecture", "deepseek2")
            .tensor("a", &[4], GgmlType::F32, 1)
            .build(),
    )
    .unwrap();
    short(&s.path("set-00002-of-00002.gguf"), claims(split(1)));
    let first = first.display().to_string();
    let v3 = s.v3.display().to_string();
    let cmds = vec![
        args(&["diff", &single, &v3]),
        args(&["diff", &v3, &first]),
        args(&["verify", &single, "--parent", &format!("v3={v3}")]),
        args(&["verify", &v3, "--parent", &format!("v3={first}")]),
    ];
    for (o, cmd) in run_all(&cmds).iter().zip(&cmds) {
        let err = one_line_error(o, 3);
        assert!(
            err.contains("past the end of the file") && err.contains("4096 bytes"),
            "{cmd:?}: {err}"
        );
    }
}

/// A child header the reader would refuse (over 96 MiB) is refused when planning, before
/// anything is written.
#[test]
fn a_child_header_the_reader_would_refuse_is_not_written() {
    let s = setup(GgmlType::Q3_K);
    let big = "x".repeat(95 << 20);
    let v3 = parent(V3, GgmlType::Q3_K).kv_str("big.key", &big).build();
    std::fs::write(&s.v3, v3).unwrap();
    std::fs::write(s.path("t.jinja"), vec![b't'; 1 << 20]).unwrap();
    let recipe = s.recipe(
        "r.toml",
        "[metadata]\nchat_template = { file = 't.jinja' }\n",
    );
    let out = s.path("child.gguf");
    let mut cmd = s.dry_run(&["--recipe", &recipe]);
    cmd.retain(|a| a != "--dry-run");
    let o = &run_all(&[cmd])[0];
    let err = one_line_error(o, 3);
    assert!(err.contains("96 MiB"), "{err}");
    assert!(!out.exists());
    let parents = [Parent {
        name: "v3".into(),
        model: Model::open(&s.v3).unwrap(),
    }];
    let recipe = Recipe::from_file(Path::new(&recipe)).unwrap();
    assert!(matches!(
        plan::build(&parents, &recipe, &out, SplitOptions::default()),
        Err(PlanError::HeaderTooLarge { len, max, .. }) if len > max && max == 96 << 20
    ));
}

#[test]
fn long_names_patterns_and_layers_are_shortened_in_plan_errors() {
    let s = setup(GgmlType::Q3_K);
    let long = "z".repeat(200_000);
    let layers: Vec<String> = (5..50_000).map(|l| l.to_string()).collect();
    let recipes = [
        // A valid regex that matches nothing.
        format!("[[rules]]\nmatch = '{long}'\nfrom = 'r1'\n"),
        // A parent that was not given, as a rule's and as the recipe's.
        format!("[[rules]]\nmatch = 'exps'\nfrom = '{long}'\n"),
        format!("[recipe]\nbase = '{long}'\n"),
        format!("[recipe]\nparents = ['v3', '{long}']\n"),
        // Layers the model does not have.
        format!(
            "[[rules]]\nmatch = 'exps'\nfrom = 'r1'\nlayers = '{}'\n",
            layers.join(",")
        ),
    ];
    let cmds: Vec<Vec<String>> = recipes
        .iter()
        .enumerate()
        .map(|(i, text)| s.dry_run(&["--recipe", &s.recipe(&format!("r{i}.toml"), text)]))
        .collect();
    for (o, text) in run_all(&cmds).iter().zip(&recipes) {
        let err = one_line_error(o, 3);
        assert!(
            err.len() < 600 && err.contains('…'),
            "{} bytes for {}…: {}…",
            err.len(),
            &text[..40],
            &err[..err.len().min(300)]
        );
    }
}

/// Issue 8 item 7: a sparse child (a few KB on disk) whose stacked expert tensor claims
/// 2^31 experts. Its per-expert tables must be bounded like the plan's: `verify` and `diff`
/// end at once, under a 1 GB address-space limit, where a table of 2^31 entries (tens of
/// GB) would abort the process.
#[test]
fn a_child_claiming_billions_of_experts_is_checked_in_bounded_memory() {
    use gguf_splice::testkit::GgufBuilder;
    let s = setup(GgmlType::Q3_K);
    let experts: u64 = 1 << 31;
    let model = |n: u64| {
        GgufBuilder::new()
            .kv_str("general.architecture", "deepseek2")
            .tensor_declared(
                "blk.0.ffn_gate_exps.weight",
                &[1, 1, n],
                GgmlType::F32.id(),
                4 * n,
            )
    };
    let sparse = |name: &str, n: u64| {
        let (bytes, map) = model(n).build_with_map();
        let path = s.path(name);
        let f = std::fs::File::create(&path).unwrap();
        std::io::Write::write_all(&mut &f, &bytes).unwrap();
        f.set_len(map.data_offset as u64 + 4 * n).unwrap();
        path.display().to_string()
    };
    let child = sparse("child.gguf", experts);
    // A parent of another shape: nothing is compared byte for byte, so the run is quick.
    let parent = sparse("parent.gguf", 4);
    let map = s.path("m.json").display().to_string();
    for cmd in [
        vec!["verify", &child, "--parent", &format!("a={parent}")],
        vec!["diff", &child, &parent],
        // A map would hold a cell per expert: refused, not allocated.
        vec![
            "verify",
            &child,
            "--parent",
            &format!("a={parent}"),
            "--map",
            &map,
        ],
    ] {
        let o = Command::new("bash")
            .arg("-c")
            .arg("ulimit -v 1000000; exec \"$0\" \"$@\"")
            .arg(BIN)
            .args(&cmd)
            .output()
            .unwrap();
        let code = match (cmd[0], cmd.contains(&"--map")) {
            ("verify", true) => 2,
            ("verify", false) => 1,
            _ => 0,
        };
        assert_eq!(o.status.code(), Some(code), "{cmd:?}: {}", stderr(&o));
        if code == 2 {
            assert!(
                stderr(&o).contains("a map draws at most 65536"),
                "{}",
                stderr(&o)
            );
            assert!(!std::path::Path::new(&map).exists());
        }
        assert!(!stderr(&o).contains("memory allocation"), "{}", stderr(&o));
    }
}
