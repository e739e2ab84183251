//! The Slurm job array of `contrib/slurm/chimera-array.sbatch`, for real: the test brings up
//! a single-node Slurm in a temporary directory (munged with a key and socket of its own,
//! slurmctld and slurmd in the foreground on free local ports, no cgroups, state and spool
//! in the directory), submits the array over a small manifest with `sbatch --wait`, and
//! compares every shard with a single-process `splice`. The daemons are killed at the end,
//! on failure too. Needs the Debian packages slurmctld, slurmd, slurm-client and munge
//! (`Oracle::Slurm`; .ci/run installs them) and root, as SlurmUser.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;
use crate::nginx::free_port;
use gguf_splice::ggml_type::GgmlType;

/// How long the daemons may take to come up, and the array to run.
const STARTUP: Duration = Duration::from_secs(60);
const ARRAY: Duration = Duration::from_secs(240);

/// The daemons of one test cluster, killed (in reverse order) when dropped.
struct Cluster {
    dir: PathBuf,
    conf: PathBuf,
    daemons: Vec<(&'static str, Child)>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Jobs still running (a failed test) are cancelled while the controller is up.
        let _ = self
            .command("scancel")
            .args(["--full", "--user=root"])
            .output();
        // SIGTERM lets slurmctld stop its helper (slurmscriptd); SIGKILL if one lingers.
        for (_, child) in self.daemons.iter_mut().rev() {
            // SAFETY: kill has no memory-safety preconditions; the pid is our own child's,
            // not yet waited for, so it cannot have been reused.
            unsafe {
                libc::kill(child.id() as i32, libc::SIGTERM);
            }
            let start = Instant::now();
            while child.try_wait().ok().flatten().is_none() {
                if start.elapsed() > Duration::from_secs(10) {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

impl Cluster {
    /// A client or daemon command that reads this cluster's slurm.conf.
    fn command(&self, name: &str) -> Command {
        let mut c = Command::new(find_program(name).unwrap_or_else(|| name.into()));
        c.env("SLURM_CONF", &self.conf);
        c
    }

    fn spawn(&mut self, name: &'static str, args: &[&str]) {
        let log =
            |ext: &str| std::fs::File::create(self.dir.join(format!("{name}.{ext}"))).unwrap();
        let child = self
            .command(name)
            .args(args)
            .stdin(Stdio::null())
            .stdout(log("out"))
            .stderr(log("err"))
            .spawn()
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        self.daemons.push((name, child));
    }

    /// Every log of the cluster and its jobs, for a failure message.
    fn logs(&self) -> String {
        let mut out = String::new();
        let mut entries: Vec<PathBuf> = std::fs::read_dir(&self.dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| {
                p.extension()
                    .is_some_and(|e| ["out", "err", "log"].contains(&e.to_str().unwrap()))
            })
            .collect();
        entries.sort();
        for p in entries {
            let mut text = String::new();
            let _ = std::fs::File::open(&p).and_then(|mut f| f.read_to_string(&mut text));
            let tail: Vec<&str> = text.lines().rev().take(40).collect();
            out.push_str(&format!("==> {} <==\n", p.display()));
            for l in tail.into_iter().rev() {
                out.push_str(l);
                out.push('\n');
            }
        }
        out
    }

    /// Fail, with the logs, if a daemon has exited.
    fn check_alive(&mut self) {
        let dead: Vec<String> = self
            .daemons
            .iter_mut()
            .filter_map(|(n, c)| c.try_wait().unwrap().map(|s| format!("{n} exited: {s}")))
            .collect();
        assert!(dead.is_empty(), "{dead:?}\n{}", self.logs());
    }
}

/// The host name slurmd registers under: the short name, as `hostname -s`.
fn short_hostname() -> String {
    let o = Command::new("hostname").output().unwrap();
    let full = String::from_utf8(o.stdout).unwrap();
    full.trim().split('.').next().unwrap().to_string()
}

/// Poll `ready` every 100 ms until it holds or `limit` passes.
fn wait_for(
    cluster: &mut Cluster,
    what: &str,
    limit: Duration,
    mut ready: impl FnMut(&Cluster) -> bool,
) {
    let start = Instant::now();
    while !ready(cluster) {
        cluster.check_alive();
        assert!(
            start.elapsed() < limit,
            "{what}: not ready after {limit:?}\n{}",
            cluster.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// munged, slurmctld and slurmd of a one-node cluster in `dir`: the node has the machine's
/// host name, 2 CPUs and a little memory; processes are tracked through /proc, not cgroups.
fn start_cluster(dir: &Path) -> Cluster {
    for sub in ["state", "spool"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
    }
    let key = dir.join("munge.key");
    let mut bytes = vec![0u8; 1024];
    std::fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(&mut bytes)
        .unwrap();
    std::fs::write(&key, &bytes).unwrap();
    // munged refuses a key that others can read.
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let socket = dir.join("munge.socket");
    let host = short_hostname();
    let (ctld_port, slurmd_port) = (free_port(), free_port());
    let d = dir.display();
    let conf = dir.join("slurm.conf");
    std::fs::write(
        &conf,
        format!(
            "ClusterName=splicetest
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={socket}
StateSaveLocation={d}/state
SlurmdSpoolDir={d}/spool
SlurmctldPidFile={d}/slurmctld.pid
SlurmdPidFile={d}/slurmd.pid
SlurmctldLogFile={d}/slurmctld.log
SlurmdLogFile={d}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SwitchType=switch/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
MailProg=/bin/true
KillWait=5
NodeName={host} NodeAddr=127.0.0.1 CPUs=2 RealMemory=2000 State=UNKNOWN
PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP
",
            socket = socket.display()
        ),
    )
    .unwrap();
    let mut cluster = Cluster {
        dir: dir.to_path_buf(),
        conf: conf.clone(),
        daemons: Vec::new(),
    };
    let arg = |name: &str, p: PathBuf| format!("--{name}={}", p.display());
    cluster.spawn(
        "munged",
        &[
            "--foreground",
            "--force",
            &arg("key-file", key),
            &arg("socket", socket.clone()),
            &arg("pid-file", dir.join("munged.pid")),
            &arg("seed-file", dir.join("munged.seed")),
            &arg("log-file", dir.join("munged.log")),
        ],
    );
    wait_for(&mut cluster, "munged", STARTUP, |_| socket.exists());
    let conf = conf.display().to_string();
    cluster.spawn("slurmctld", &["-D", "-f", &conf]);
    cluster.spawn("slurmd", &["-D", "-f", &conf, "-N", &host]);
    wait_for(&mut cluster, "node idle", STARTUP, |c| {
        c.command("sinfo")
            .args(["-h", "-N", "-o", "%T"])
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "idle")
    });
    cluster
}

#[test]
fn a_slurm_job_array_makes_the_same_shards_as_splice() {
    if !have(
        "a_slurm_job_array_makes_the_same_shards_as_splice",
        &[Oracle::Slurm],
    ) {
        return;
    }
    let s = setup(GgmlType::IQ2_XXS);
    let farm = s.dir.path().join("farm");
    std::fs::create_dir(&farm).unwrap();
    let manifest = farm.join("farm.toml");
    std::fs::write(
        &manifest,
        format!(
            "[parents]\nv3 = '{}'\nr1 = '{}'\n\n\
             [[children]]\noutput = 'chimera.gguf'\nrecipe = 'deepseek-r1t-chimera'\n\
             split_max_tensors = 9\n\n\
             [[children]]\noutput = 'reverse.gguf'\nrecipe = 'deepseek-r1t-chimera-reverse'\n\
             parents = ['v3=r1', 'r1=v3']\n",
            s.v3.display(),
            s.r1.display()
        ),
    )
    .unwrap();

    // The same children, each by one splice process.
    let reference = s.dir.path().join("ref");
    std::fs::create_dir(&reference).unwrap();
    let out = |n: &str| reference.join(n).display().to_string();
    assert_ok(&s.splice(&[
        "--recipe",
        &chimera_preset(),
        "-o",
        &out("chimera.gguf"),
        "--split-max-tensors",
        "9",
        "-q",
    ]));
    let reverse = repo().join("mappings/deepseek-r1t-chimera-reverse.toml");
    assert_ok(&run(&[
        "splice",
        "--parent",
        &format!("v3={}", s.r1.display()),
        "--parent",
        &format!("r1={}", s.v3.display()),
        "--recipe",
        reverse.to_str().unwrap(),
        "-o",
        &out("reverse.gguf"),
        "-q",
    ]));

    let slurm_dir = tempfile::Builder::new()
        .prefix("gguf-splice-slurm")
        .tempdir()
        .unwrap();
    let mut cluster = start_cluster(slurm_dir.path());
    let script = repo().join("contrib/slurm/chimera-array.sbatch");
    let mut submit = cluster
        .command("bash")
        .arg(&script)
        .arg(&manifest)
        .args([
            "--wait",
            "--time=5",
            &format!("--output={}/task-%A_%a.log", slurm_dir.path().display()),
        ])
        .env("GGUF_SPLICE", BIN)
        .env("CHIMERA_PARALLEL", "2")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(status) = submit.try_wait().unwrap() {
            break status;
        }
        cluster.check_alive();
        assert!(
            start.elapsed() < ARRAY,
            "the array did not finish in {ARRAY:?}\n{}",
            cluster.logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let o = submit.wait_with_output().unwrap();
    assert!(
        status.success(),
        "sbatch: {status}\n{}\n{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        stderr(&o),
        cluster.logs()
    );
    assert!(stderr(&o).contains("4 jobs, array 0-3%2"), "{}", stderr(&o));

    // Every task ran, and said so in JSON lines.
    let logs: Vec<String> = std::fs::read_dir(slurm_dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with("task-")
        })
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect();
    assert_eq!(logs.len(), 4, "{}", cluster.logs());
    for l in &logs {
        assert!(l.contains(r#""event":"done""#), "{l}");
    }

    // Byte for byte the single-process outputs, and nothing else.
    let mut names: Vec<String> = std::fs::read_dir(&farm)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n != "farm.toml")
        .collect();
    names.sort();
    let mut want: Vec<String> = std::fs::read_dir(&reference)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    want.sort();
    assert_eq!(names, want);
    for n in &want {
        assert_eq!(
            std::fs::read(farm.join(n)).unwrap(),
            std::fs::read(reference.join(n)).unwrap(),
            "{n}"
        );
    }
    assert_ok(&run(&["batch", manifest.to_str().unwrap(), "--status"]));
    drop(cluster);
}
