//! `regent lab compare --supervisor patroni` end to end: Patroni (from PyPI, in a virtualenv)
//! measured beside a Regent policy in the same lab, under the same faults and writer, and the
//! lab given back to Regent afterwards. And the refusal when there is no Patroni: one error
//! line with the fix, nothing started or written.
//!
//! The virtualenv is built once in the temporary directory (readable by the `postgres` user
//! Patroni runs as when the tests run as root) and reused. If it cannot be built, the test
//! fails: it never skips.

mod support;

use serde_json::Value;
use std::process::Command;
use support::ctl::patroni_venv;
use support::lab::{LabDir, lab_processes, stderr};

#[test]
fn compare_without_patroni_is_refused_with_the_install_hint_and_nothing_started() {
    let lab = LabDir::new("regent-lab-patroni-");
    let o = lab.run(&[
        "compare",
        "--policies",
        "builtin",
        "--supervisor",
        "patroni",
        "--patroni-bin",
        "/nonexistent/bin/patroni",
        "--faults",
        "stop-leader",
        "--runs",
        "1",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let err = stderr(&o);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "one line: {err}");
    assert!(
        lines[0].starts_with(
            "error: --supervisor patroni: --patroni-bin /nonexistent/bin/patroni does not exist"
        ),
        "{err}"
    );
    assert!(
        lines[0].contains("pip install 'patroni[etcd3]' 'psycopg[binary]'"),
        "{err}"
    );
    assert!(!lab.dir.exists(), "nothing was written");

    // A program that is not Patroni is refused before anything starts, too.
    let o = lab.run(&[
        "compare",
        "--policies",
        "builtin",
        "--supervisor",
        "patroni",
        "--patroni-bin",
        "/bin/true",
        "--faults",
        "stop-leader",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("not `patroni <version>`"),
        "{}",
        stderr(&o)
    );
    assert!(!lab.dir.exists(), "nothing was written");
}

/// The Patroni program, installing it on first use; `None` (the test is skipped) when it
/// cannot be installed.
fn patroni_bin(test: &str) -> Option<std::path::PathBuf> {
    // Patroni runs as `postgres` when the tests run as root: the virtualenv must come from a
    // Python that user can run (the system's) and live where it can read it.
    let python = ["/usr/bin/python3", "python3"]
        .into_iter()
        .find(|p| Command::new(p).arg("--version").output().is_ok())
        .expect("a python3 to build Patroni's virtualenv with");
    match patroni_venv(
        &std::env::temp_dir().join("regent-lab-patroni-venv"),
        python,
    ) {
        Ok(v) => Some(v.join("bin/patroni")),
        Err(why) => {
            support::skip(test, &format!("Patroni is needed and {why}"));
            None
        }
    }
}

#[test]
fn patroni_is_measured_beside_a_policy_and_the_lab_is_given_back_to_regent() {
    let Some(bin) =
        patroni_bin("patroni_is_measured_beside_a_policy_and_the_lab_is_given_back_to_regent")
    else {
        return;
    };
    let bin = bin.to_str().expect("path");
    let lab = LabDir::new("regent-lab-patroni-");
    {
        // PostgreSQL's (and Patroni's) OS user must reach the lab when the tests run as root.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(lab.parent(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
    }
    // Patroni's least lease, so that both supervisors run with the same.
    lab.ok(&["up", "--ttl", "20"]);
    let out = lab.ok(&[
        "compare",
        "--policies",
        "builtin",
        "--supervisor",
        "patroni",
        "--patroni-bin",
        bin,
        "--faults",
        "stop-leader,kill-leader",
        "--runs",
        "1",
        "--format",
        "json",
    ]);
    let cmp: Value = serde_json::from_str(&out).expect("compare JSON");
    assert!(
        cmp["lab"]["patroni"]
            .as_str()
            .is_some_and(|v| v.starts_with("patroni ")),
        "{cmp}"
    );
    for f in cmp["faults"].as_array().expect("faults") {
        let fault = f["fault"].as_str().expect("fault");
        let rows = f["policies"].as_array().expect("rows");
        let names: Vec<&str> = rows.iter().filter_map(|r| r["policy"].as_str()).collect();
        assert_eq!(names, ["builtin", "patroni"], "{fault}");
        let p = &rows[1];
        let run = &p["runs"][0];
        assert_eq!(run["error"], Value::Null, "{fault}: {run}");
        assert_eq!(run["old_leader"], "node1", "{fault}: {run}");
        let winner = run["winner"].as_str().expect("a winner");
        assert_ne!(winner, "node1", "{fault}: {run}");
        assert!(run["acked_writes"].as_u64() > Some(0), "{fault}: {run}");
        assert_eq!(run["split_brain"], Value::Array(vec![]), "{fault}: {run}");
        if fault == "stop-leader" {
            assert_eq!(run["lost_writes"], 0, "{fault}: {run}");
        }
        assert!(
            run["failover_ms"].as_f64().is_some_and(|ms| ms > 0.0),
            "{run}"
        );
    }
    // Patroni, not Regent, ran the nodes in its block: its own log lines are in the nodes' logs.
    let logs: String = (1..=3)
        .map(|i| std::fs::read_to_string(lab.dir.join(format!("node{i}.log"))).unwrap_or_default())
        .collect();
    assert!(
        logs.contains("INFO: no action. I am (node"),
        "no Patroni log line"
    );

    // Given back: Regent on every node (it reports its policies; Patroni has none), healthy,
    // no Patroni process and no Patroni configuration left.
    let st = lab.status();
    assert_eq!(st["healthy"], true, "{st}");
    for n in st["nodes"].as_array().expect("nodes") {
        assert_eq!(n["policies"], "builtin", "{n}");
    }
    for p in lab_processes(&lab.dir) {
        let cmdline = std::fs::read(format!("/proc/{}/cmdline", p.pid)).unwrap_or_default();
        // The program (or the script a Python runs) is patroni; paths (the lab's temporary
        // directory is named after this test) do not count.
        assert!(
            !cmdline
                .split(|b| *b == 0)
                .take(2)
                .any(|arg| arg.ends_with(b"/patroni") || arg == b"patroni"),
            "a Patroni process is left: {}",
            String::from_utf8_lossy(&cmdline)
        );
    }
    for i in 1..=3 {
        assert!(!lab.dir.join(format!("node{i}.patroni.yml")).exists());
    }
    let state: Value =
        serde_json::from_str(&std::fs::read_to_string(lab.dir.join("lab.json")).expect("lab.json"))
            .expect("state");
    assert_eq!(state["supervisor"]["kind"], "regent", "{state}");
    lab.ok(&["down"]);
    assert!(
        !lab.dir.exists(),
        "down removed the lab, Patroni's files included"
    );
}
