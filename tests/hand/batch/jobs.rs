//! One job at a time: `splice --shard`, `--progress json` events for batch, diff and verify,
//! and the Kubernetes example run as its pods would.

use super::*;

#[test]
fn splice_shard_writes_one_shard_of_one_child() {
    let s = setup(GgmlType::IQ2_XXS);
    let want = reference(&s);
    let out = s.dir.path().join("one");
    std::fs::create_dir(&out).unwrap();
    let o = out.join("chimera-late.gguf").display().to_string();
    let args = |k: &str| -> Vec<String> {
        [
            "--recipe",
            &chimera_preset(),
            "--take",
            LATE_TAKE,
            "-o",
            &o,
            "--split-max-tensors",
            "9",
            "--shard",
            k,
        ]
        .iter()
        .map(|a| a.to_string())
        .collect()
    };
    let splice = |k: &str| {
        let a = args(k);
        s.splice(&a.iter().map(String::as_str).collect::<Vec<_>>())
    };
    for k in ["3", "1"] {
        assert_ok(&splice(k));
        assert!(!out.join("chimera-late-00001-of-00003.gguf").exists());
    }
    let o2 = splice("2");
    assert_ok(&o2);
    assert!(
        stderr(&o2).contains("the child is complete"),
        "{}",
        stderr(&o2)
    );
    let o2 = splice("2");
    assert!(stderr(&o2).contains("already complete"), "{}", stderr(&o2));
    let got = snapshot(&out);
    assert_eq!(got.len(), 3, "{:?}", got.keys());
    for (name, bytes) in got {
        assert_eq!(bytes, want[&format!("late/{name}")], "{name}");
    }
    let o = splice("4");
    assert_exit(&o, 2);
    assert!(
        stderr(&o).contains("the child has 3 shards"),
        "{}",
        stderr(&o)
    );
}

/// The JSON objects among a command's stderr lines.
fn events(o: &Output) -> Vec<Value> {
    stderr(o)
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn progress_json_reports_every_job_as_lines_on_stderr() {
    let s = setup(GgmlType::IQ2_XXS);
    let (_, m) = farm(&s, "farm", &manifest(&s));
    let n = job_count(&m);
    let o = batch(&m, &["--progress", "json", "-q"]);
    assert_ok(&o);
    let ev = events(&o);
    let starts: Vec<&Value> = ev.iter().filter(|e| e["event"] == "start").collect();
    let dones: Vec<&Value> = ev.iter().filter(|e| e["event"] == "done").collect();
    assert_eq!((starts.len(), dones.len()), (n, n), "{}", stderr(&o));
    for (k, d) in dones.iter().enumerate() {
        assert_eq!(d["job"], k);
        assert_eq!(d["bytes_done"], d["bytes_total"]);
        assert!(d["bytes_total"].as_u64().unwrap() > 0);
        assert!(d["rate"].as_f64().unwrap() >= 0.0);
        assert!(d["shard"].as_u64().unwrap() >= 1);
        assert!(d["child"].as_str().unwrap().starts_with('#'));
    }
    // Again: every job is skipped.
    let o = batch(&m, &["--progress", "json", "-q"]);
    let ev = events(&o);
    assert_eq!(ev.iter().filter(|e| e["event"] == "skipped").count(), n);

    // splice: one child, no job number.
    let out = s.dir.path().join("p.gguf").display().to_string();
    let o = s.splice(&["-o", &out, "--progress", "json"]);
    assert_ok(&o);
    let ev = events(&o);
    assert_eq!(ev.first().unwrap()["event"], "start");
    let last = ev.last().unwrap();
    assert_eq!(last["event"], "done");
    assert!(last["job"].is_null() && last["shard"].is_null());
    assert_eq!(last["bytes_done"], last["bytes_total"]);
}

#[test]
fn the_kubernetes_example_runs_jobs_as_its_pods_would() {
    let s = setup(GgmlType::IQ2_XXS);
    let want = reference(&s);
    let (dir, m) = farm(&s, "farm", &manifest(&s));
    let yaml =
        std::fs::read_to_string(repo().join("contrib/k8s/chimera-indexed-job.yaml")).unwrap();
    assert!(yaml.contains("completionMode: Indexed"));
    let line = yaml
        .lines()
        .find_map(|l| l.trim().strip_prefix("command: "))
        .expect("a command line");
    let command: Vec<String> = serde_json::from_str(line).unwrap();
    assert_eq!(command[0], "gguf-splice");
    let args: Vec<&str> = command[1..]
        .iter()
        .map(|a| {
            if a == "/models/farm.toml" {
                m.as_str()
            } else {
                a
            }
        })
        .collect();
    let n = job_count(&m);
    for k in 0..n {
        let index = k.to_string();
        let o = run_env(&args, &[("JOB_COMPLETION_INDEX", &index)]);
        assert_ok(&o);
        assert!(stderr(&o).contains(r#""event":"done""#), "{}", stderr(&o));
    }
    assert_eq!(outputs(&dir), want);
    // Slurm's variable is read first; a bad or missing index is a usage error.
    let o = run_env(
        &args,
        &[("SLURM_ARRAY_TASK_ID", "0"), ("JOB_COMPLETION_INDEX", "x")],
    );
    assert_ok(&o);
    let o = run_env(&args, &[("SLURM_ARRAY_TASK_ID", "x")]);
    assert_exit(&o, 2);
    assert!(
        stderr(&o).contains("SLURM_ARRAY_TASK_ID='x'"),
        "{}",
        stderr(&o)
    );
    let o = run_env(&args, &[("SLURM_ARRAY_TASK_ID", &n.to_string())]);
    assert_exit(&o, 2);
    assert!(
        stderr(&o).contains(&format!("there is no job {n}")),
        "{}",
        stderr(&o)
    );
}

#[test]
fn progress_json_also_reports_diff_and_verify() {
    let s = setup(GgmlType::IQ2_XXS);
    let out = s.dir.path().join("c.gguf").display().to_string();
    assert_ok(&s.splice(&["--recipe", &chimera_preset(), "-o", &out, "-q"]));
    let v3 = s.v3.display().to_string();
    let diff = run(&["diff", &v3, &out, "--progress", "json"]);
    let verify = s.run(
        "verify",
        Some(&out),
        &["--recipe", &chimera_preset(), "--progress", "json"],
    );
    for o in [diff, verify] {
        assert_ok(&o);
        let ev = events(&o);
        assert_eq!(ev.first().unwrap()["event"], "start", "{}", stderr(&o));
        let last = ev.last().unwrap();
        assert_eq!(last["event"], "done");
        assert_eq!(last["child"], out.as_str());
        assert!(last["bytes_total"].as_u64().unwrap() > 0, "{last}");
        assert_eq!(last["bytes_done"], last["bytes_total"]);
    }
}
