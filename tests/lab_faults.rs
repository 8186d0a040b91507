//! `regent lab fault` and `lab compare` with the faults beyond a crash, end to end on one
//! three-node lab in synchronous mode: `partition` (root only: cgroups and iptables),
//! `lag-replica`, `break-replication` and `kill-postgres`, each followed by the lab healthy
//! again; then `compare` over two of them. Bad input is refused with nothing started.
//!
//! Without root the partition parts cannot run: they print a loud SKIPPED, and fail when
//! `REGENT_REQUIRE_ALL=1` (CI sets it, and runs as root).

mod support;

use std::time::{Duration, Instant};
use support::lab::{LabDir, stderr};

fn is_root() -> bool {
    nix::unistd::Uid::effective().is_root()
}

/// Say loudly that a part did not run, and count it as skipped (`support::skip`); fail instead
/// when everything must run.
fn skipped(what: &str) {
    support::skip(what, "it needs root (cgroups and iptables)");
}

/// Wait until `lab status` says healthy, restarting the node that a fault took down.
fn healed(lab: &LabDir) -> serde_json::Value {
    let st = lab.status();
    for (i, n) in st["nodes"].as_array().expect("nodes").iter().enumerate() {
        if n["process"] == "stopped" {
            lab.ok(&["fault", "restart-node", &(i + 1).to_string()]);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let st = lab.status();
        if st["healthy"] == true {
            return st;
        }
        assert!(Instant::now() < deadline, "the lab is healthy again: {st}");
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The lab's firewall rules and cgroups: none may be left after a fault.
fn leftovers(lab: &LabDir) -> Vec<String> {
    let text = std::fs::read_to_string(lab.dir.join("lab.json")).unwrap_or_default();
    let st: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
    let id = st["id"].as_str().unwrap_or("?").to_string();
    let mut out = Vec::new();
    let rules = std::process::Command::new("iptables")
        .args(["-w", "-S"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    out.extend(
        rules
            .lines()
            .filter(|l| l.contains(&format!("regent-{}", &id[..id.len().min(16)])))
            .map(str::to_string),
    );
    for root in ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"] {
        let p = std::path::Path::new(root).join(format!("regent-lab-{id}"));
        if p.exists() {
            out.push(p.display().to_string());
        }
    }
    out
}

#[test]
fn lab_faults_partition_lag_break_kill_postgres_and_compare() {
    let lab = LabDir::new("regent-lab-faults-");

    // Bad input: one error line, nothing started.
    let o = lab.run(&["fault", "lag-replica"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("there is no lab"), "{}", stderr(&o));
    let o = lab.run(&["fault", "unplug-the-rack"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let o = lab.run(&[
        "compare",
        "--policies",
        "builtin",
        "--faults",
        "kill-leader,unplug",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("unplug"), "{}", stderr(&o));
    if !is_root() {
        for args in [
            &["fault", "partition", "12"][..],
            &["compare", "--policies", "builtin", "--faults", "partition"][..],
        ] {
            let o = lab.run(args);
            assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
            assert!(stderr(&o).contains("needs root"), "{}", stderr(&o));
        }
    }
    assert!(!lab.dir.exists(), "bad input starts nothing");

    let out = lab.ok(&["up", "--sync"]);
    assert!(out.contains("node1 leads"), "{out}");

    // A partition longer than the lease: the leader is fenced and a replica takes over; once
    // healed, the old leader rejoins and nothing of the partition is left.
    if is_root() {
        let out = lab.ok(&["fault", "partition", "12"]);
        assert!(out.contains("node1 cut off from etcd"), "{out}");
        assert!(out.contains("node1 stops accepting writes"), "{out}");
        assert!(out.contains("no split brain"), "{out}");
        let winner = out
            .lines()
            .find_map(|l| l.strip_prefix("recovered "))
            .and_then(|l| l.split(": ").nth(1))
            .and_then(|l| l.split_whitespace().next())
            .expect("a recovered line naming the winner");
        assert_ne!(winner, "node1", "{out}");
        assert_eq!(leftovers(&lab), Vec::<String>::new());
        let st = healed(&lab);
        assert_eq!(st["leader"], winner, "{st}");
    } else {
        skipped("lab fault partition");
    }

    // A replica left behind, then the leader crashes: the lagging one is not promoted.
    let leader = healed(&lab)["leader"].as_str().expect("leader").to_string();
    let out = lab.ok(&["fault", "lag-replica"]);
    assert!(out.contains("walreceiver"), "{out}");
    assert!(
        out.contains(&format!("SIGKILL to {leader}'s process group")),
        "{out}"
    );
    assert!(out.contains("no split brain"), "{out}");
    let lagging = out
        .lines()
        .find_map(|l| l.split_once(" was not promoted: ").map(|(n, _)| n))
        .expect("the report names the lagging replica")
        .to_string();
    assert!(
        out.contains("exceeds maximum_lag_on_failover 1048576"),
        "the winner's election left it out for its lag: {out}"
    );
    assert!(out.contains(&format!("{lagging} healed: SIGCONT")), "{out}");
    let st = healed(&lab);
    assert_ne!(st["leader"], lagging.as_str(), "{st}");

    // Replication broken on a replica: reported unhealthy, and not promoted.
    let out = lab.ok(&["fault", "break-replication"]);
    assert!(
        out.contains("reported unhealthy")
            && out.contains("GET /readiness 503, /replica?replication_state=streaming 503"),
        "{out}"
    );
    assert!(out.contains("/health 200"), "{out}");
    assert!(out.contains(" was not promoted: "), "{out}");
    assert!(out.contains("no split brain"), "{out}");
    assert!(!out.contains("WRONG"), "{out}");
    healed(&lab);

    // PostgreSQL crashes under the leader's regent: it comes back, the cluster recovers.
    let out = lab.ok(&["fault", "kill-postgres"]);
    assert!(out.contains("SIGKILL to node"), "{out}");
    assert!(out.contains("recovered "), "{out}");
    assert!(out.contains("no split brain"), "{out}");
    healed(&lab);

    // compare over two of the new faults.
    let faults = if is_root() {
        "partition,lag-replica"
    } else {
        skipped("lab compare --faults partition");
        "lag-replica,break-replication"
    };
    let out = lab.ok(&[
        "compare",
        "--policies",
        "builtin",
        "--faults",
        faults,
        "--runs",
        "1",
        "--fault-seconds",
        "12",
        "--format",
        "json",
    ]);
    let cmp: serde_json::Value = serde_json::from_str(&out).expect("compare JSON");
    let results = cmp["faults"].as_array().expect("faults");
    assert_eq!(results.len(), 2, "{cmp}");
    for (f, name) in results.iter().zip(faults.split(',')) {
        assert_eq!(f["fault"], name, "{f}");
        let r = &f["policies"][0]["runs"][0];
        assert_eq!(r["error"], serde_json::Value::Null, "{r}");
        assert_ne!(r["winner"], r["old_leader"], "{r}");
        assert_eq!(r["split_brain"], serde_json::json!([]), "{r}");
        assert!(r["failover_ms"].as_f64().is_some_and(|m| m > 0.0), "{r}");
        if name != "partition" {
            let note = r["note"].as_str().expect("a note on the lagging replica");
            assert!(note.contains("not promoted: lag "), "{r}");
        }
    }
    assert_eq!(leftovers(&lab), Vec::<String>::new());
    let st = lab.status();
    assert_eq!(st["healthy"], true, "{st}");
}
