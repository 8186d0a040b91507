//! Broken policies in a running three-node cluster of real `regent` processes: a policy that
//! loops, traps or eats memory in the middle of an election, and component files replaced by
//! garbage or by a build against another WIT version. The supervisors keep their loops on
//! schedule, the built-in rules decide, a leader is elected, and the faults are reported in
//! `GET /policy` and `GET /metrics`.

mod support;

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use support::*;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/policies")
        .join(name)
}

/// Node `node`'s own policy directory with the `faulty` fixture in `mode`.
fn faulty_dir(c: &Cluster, node: &str, mode: &str) -> PathBuf {
    let dir = c.tmp.path().join(format!("policies-{node}"));
    std::fs::create_dir_all(&dir).expect("policy dir");
    std::fs::copy(fixture("faulty.wasm"), dir.join("faulty.wasm")).expect("copy faulty.wasm");
    arm(&dir, mode, "pg2");
    dir
}

/// Write the manifest (renamed into place): the fault strikes only in views that hold member
/// `when` (an election among the survivors that include it), so that the load-time
/// self-test passes.
fn arm(dir: &Path, mode: &str, when: &str) {
    let tmp = dir.join(".faulty.toml.new");
    std::fs::write(
        &tmp,
        format!(
            "name = \"faulty\"\ncomponent = \"faulty.wasm\"\nhooks = [\"rank-candidates\"]\n\
             capabilities = []\n\n[settings]\nmode = \"{mode}\"\nwhen_member = \"{when}\"\n"
        ),
    )
    .expect("write faulty.toml");
    std::fs::rename(&tmp, dir.join("faulty.toml")).expect("rename faulty.toml");
}

/// How many reloads of the `faulty` policy succeeded on `n`.
fn reloads_ok(n: &Node) -> u64 {
    policy(n).map_or(0, |p| {
        p["policies"][0]["reloads"]["ok"].as_u64().unwrap_or(0)
    })
}

fn policy(n: &Node) -> Option<Value> {
    let (s, body) = n.http_get("/policy")?;
    (s == 200).then(|| serde_json::from_str(&body).ok())?
}

/// The `faulty` policy's entry in `GET /policy`.
fn faulty(n: &Node) -> Value {
    policy(n)
        .and_then(|p| p["policies"].as_array()?.first().cloned())
        .unwrap_or(Value::Null)
}

/// (name, REST port) of `nodes`.
fn rest_ports(c: &Cluster, nodes: &[usize]) -> Vec<(String, u16)> {
    nodes
        .iter()
        .map(|&i| (c.nodes[i].name.clone(), c.nodes[i].api_port))
        .collect()
}

/// While `f` runs, every node of `targets` answers `/liveness` with 200 (its HA loop keeps
/// running) each time it is asked.
fn alive_throughout<T>(targets: Vec<(String, u16)>, f: impl FnOnce() -> T) -> T {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let s2 = stop.clone();
    let watcher = std::thread::spawn(move || {
        let mut bad = Vec::new();
        while !s2.load(std::sync::atomic::Ordering::Relaxed) {
            for (name, port) in &targets {
                match http_get(*port, "/liveness") {
                    Some((200, _)) => {}
                    other => bad.push(format!("{name}: {other:?}")),
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bad
    });
    let out = f();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let bad = watcher.join().expect("liveness watcher");
    assert!(bad.is_empty(), "a HA loop stalled: {bad:?}");
    out
}

fn new_leader(c: &Cluster, old: usize, timeout: Duration) -> usize {
    wait_for("a new leader", timeout, || {
        let l = c.etcd.get("/service/test/leader")?;
        c.nodes
            .iter()
            .position(|n| n.name == l)
            .filter(|i| *i != old)
    })
}

#[test]
fn broken_policies_never_stop_the_loop_and_the_built_in_rules_decide() {
    let _g = serial();
    let mut c = Cluster::new(3, NodeSpec::default());
    let modes = ["loop", "trap", "oom"];
    let dirs: Vec<PathBuf> = (0..3)
        .map(|i| faulty_dir(&c, &c.nodes[i].name, modes[i]))
        .collect();
    for (n, dir) in c.nodes.iter_mut().zip(&dirs) {
        let mut text = std::fs::read_to_string(&n.config).expect("config");
        text.push_str(&format!(
            "regent:\n  policies_dir: {}\n  policies: [faulty]\n",
            dir.display()
        ));
        std::fs::write(&n.config, text).expect("config");
    }
    // pg1 bootstraps alone, so that it leads and is in the first election's view.
    c.nodes[0].start();
    wait_for("pg1 to lead", Duration::from_secs(60), || {
        (c.leader()? == 0).then_some(())
    });
    c.nodes[1].start();
    c.nodes[2].start();
    c.wait_streaming(0, 2, Duration::from_secs(90));

    // Election 1: pg1 crashes; pg2's policy traps and pg3's runs out of memory.
    let t0 = Instant::now();
    let second = alive_throughout(rest_ports(&c, &[1, 2]), || {
        c.nodes[0].crash();
        new_leader(&c, 0, Duration::from_secs(40))
    });
    eprintln!(
        "election with trapping / out-of-memory policies: {} leads after {:?}",
        c.nodes[second].name,
        t0.elapsed()
    );
    for (i, kind, stderr) in [(1, "trap", "mode=trap"), (2, "out-of-memory", "")] {
        let f = faulty(&c.nodes[i]);
        assert!(
            f["faults"]["count"].as_u64().unwrap_or(0) >= 1,
            "{}: {f}",
            c.nodes[i].name
        );
        assert_eq!(
            f["faults"]["last"]["kind"], kind,
            "{}: {f}",
            c.nodes[i].name
        );
        assert!(
            f["faults"]["last"]["stderr"]
                .as_str()
                .unwrap_or_default()
                .contains(stderr),
            "the guest's stderr is in the fault report: {f}"
        );
    }
    let (_, metrics) = c.nodes[1].http_get("/metrics").expect("GET /metrics");
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("regent_policy_faults_total{") && l.contains("kind=\"trap\"")),
        "the fault is counted in /metrics"
    );

    // Election 2: pg1 is back (its policy loops until the deadline); the new leader crashes.
    c.nodes[0].start();
    wait_for("pg1 to serve as a replica", Duration::from_secs(90), || {
        (c.nodes[0].http_get("/replica")?.0 == 200).then_some(())
    });
    let survivors: Vec<usize> = (0..3).filter(|i| *i != second).collect();
    // Arm every survivor's policy for the next election: its view holds the survivor that
    // is not pg1.
    let when = c.nodes[*survivors.iter().find(|i| **i != 0).expect("a survivor")]
        .name
        .clone();
    for &i in &survivors {
        let before = reloads_ok(&c.nodes[i]);
        arm(&dirs[i], modes[i], &when);
        wait_for("the new manifest to serve", Duration::from_secs(10), || {
            (reloads_ok(&c.nodes[i]) > before).then_some(())
        });
    }
    let t0 = Instant::now();
    let third = alive_throughout(rest_ports(&c, &survivors), || {
        c.nodes[second].crash();
        new_leader(&c, second, Duration::from_secs(40))
    });
    eprintln!(
        "election with a looping policy: {} leads after {:?}",
        c.nodes[third].name,
        t0.elapsed()
    );
    let f = faulty(&c.nodes[0]);
    assert_eq!(f["faults"]["last"]["kind"], "deadline", "pg1: {f}");
    let took = f["faults"]["last"]["elapsed_ms"]
        .as_f64()
        .unwrap_or(f64::MAX);
    assert!(took < 1_000.0, "the loop was cut off at its deadline: {f}");

    // Hot reloads of broken files on a running node: refused, the old version keeps serving.
    let n = survivors
        .iter()
        .copied()
        .find(|i| *i != third)
        .expect("a replica");
    let node = &c.nodes[n];
    let before = faulty(node)["digest"].clone();
    let dir = &dirs[n];
    for (file, needle) in [
        ("garbage.wasm", "faulty.wasm"),
        ("wrong-version.wasm", "regent:policy"),
    ] {
        let failed_before = policy(node).map_or(0, |p| {
            p["policies"][0]["reloads"]["failed"].as_u64().unwrap_or(0)
        });
        let tmp = dir.join(".faulty.wasm.new");
        std::fs::copy(fixture(file), &tmp).expect("copy the broken file");
        std::fs::rename(&tmp, dir.join("faulty.wasm")).expect("rename into place");
        let err = wait_for(
            &format!("{file} to be refused"),
            Duration::from_secs(10),
            || {
                let p = policy(node)?;
                let r = &p["policies"][0]["reloads"];
                (r["failed"].as_u64()? > failed_before)
                    .then(|| r["last_error"].as_str().unwrap_or_default().to_string())
            },
        );
        assert!(err.contains(needle), "{file}: {err}");
        assert_eq!(
            faulty(node)["digest"],
            before,
            "{file}: the previous version keeps serving"
        );
        assert_eq!(node.http_get("/liveness").map(|r| r.0), Some(200));
    }
}

fn repo_policy(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../policies")
        .join(name)
}

/// `node`'s own policy directory holding `replication-guard` with a probe that takes
/// `sleep_s` seconds and may take `timeout_ms`.
fn slow_health_dir(c: &Cluster, node: &str, sleep_s: u64, timeout_ms: u64) -> PathBuf {
    let dir = c.tmp.path().join(format!("policies-{node}"));
    std::fs::create_dir_all(&dir).expect("policy dir");
    std::fs::copy(
        repo_policy("replication-guard.wasm"),
        dir.join("replication-guard.wasm"),
    )
    .expect("copy replication-guard.wasm");
    std::fs::write(
        dir.join("replication-guard.toml"),
        format!(
            "name = \"replication-guard\"\ncomponent = \"replication-guard.wasm\"\n\
             hooks = [\"check-health\"]\ncapabilities = [\"sql-probe\"]\n\n\
             [settings]\nfailures_before_failed = 3\nprobe = \"slow\"\nrole = \"any\"\n\n\
             [[probes]]\nname = \"slow\"\nsql = \"SELECT 1 FROM pg_sleep({sleep_s})\"\n\
             timeout_ms = {timeout_ms}\n"
        ),
    )
    .expect("write replication-guard.toml");
    dir
}

fn use_policies(n: &Node, dir: &Path, names: &str) {
    let mut text = std::fs::read_to_string(&n.config).expect("config");
    text.push_str(&format!(
        "regent:\n  policies_dir: {}\n  policies: [{names}]\n",
        dir.display()
    ));
    std::fs::write(&n.config, text).expect("config");
}

/// A health check that takes longer than the lease: the manifest fits the ttl the node
/// starts with (60 s), then `ttl` drops to 10 s on the running cluster, and every health
/// check's SQL probe (`pg_sleep(15)`, allowed 16 s) outlasts the new lease. The loop waits for
/// the verdict no longer than its share of the lease, so the leader keeps its key (the same
/// holder, without a gap) and its postmaster, and the stall is reported as a policy fault.
/// Before: the loop waited the whole 15 s of each check, the lease expired, the guard fenced
/// the primary and the leader key went.
#[test]
fn a_health_check_that_outlasts_the_lease_never_costs_the_leader_its_key() {
    let _g = serial();
    let mut c = Cluster::new(
        1,
        NodeSpec {
            ttl: 60,
            loop_wait: 1,
            retry_timeout: 3,
            ..NodeSpec::default()
        },
    );
    let dir = slow_health_dir(&c, "pg1", 15, 16_000);
    use_policies(&c.nodes[0], &dir, "replication-guard");
    c.nodes[0].start();
    wait_for("pg1 to lead", Duration::from_secs(120), || {
        (c.leader()? == 0).then_some(())
    });
    let postmaster = c.nodes[0].postmaster_pid().expect("pg1's postmaster");
    let (status, body) = http_request_at(
        "127.0.0.1",
        c.nodes[0].api_port,
        "PATCH",
        "/config",
        Some(r#"{"ttl": 10}"#),
        Duration::from_secs(10),
    )
    .expect("PATCH /config");
    assert_eq!(status, 200, "PATCH /config ttl 10: {body}");
    // The loop applies the change when it next reads the cluster: wait until the leader key
    // sits on a lease of the new ttl.
    wait_for(
        "the leader key on a 10 s lease",
        Duration::from_secs(90),
        || {
            let (_, left) = c.etcd.lease_left("/service/test/leader")?;
            (left <= 10).then_some(())
        },
    );
    // Three times the new ttl: without a bound, the first slow check after the change ends
    // the lease.
    let t0 = Instant::now();
    let mut lost = Vec::new();
    while t0.elapsed() < Duration::from_secs(30) {
        let holder = c.leader_key();
        if holder.as_deref() != Some("pg1") {
            lost.push(format!("{:?}: leader key {holder:?}", t0.elapsed()));
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    if !lost.is_empty() {
        c.dump_logs();
    }
    assert!(lost.is_empty(), "pg1 lost its leader key: {lost:?}");
    assert_eq!(
        c.nodes[0].postmaster_pid(),
        Some(postmaster),
        "pg1's postmaster was never stopped"
    );
    let p = policy(&c.nodes[0]).expect("GET /policy");
    let f = &p["policies"][0]["faults"];
    assert_eq!(f["last"]["kind"], "stalled", "{p}");
    assert!(
        c.nodes[0].log().contains("the built-in rules"),
        "the stall is logged"
    );
}

/// A manifest whose `deadline_ms` cannot fit the lease is refused when the node starts, with
/// an error that names the key, the value and the fix. Before: 10 s per call was accepted
/// with a 10 s ttl.
#[test]
fn a_policy_deadline_that_does_not_fit_the_ttl_is_refused_at_load() {
    let _g = serial();
    let mut c = Cluster::new(1, NodeSpec::default());
    let dir = c.tmp.path().join("policies-pg1");
    std::fs::create_dir_all(&dir).expect("policy dir");
    std::fs::copy(repo_policy("zone-aware.wasm"), dir.join("zone-aware.wasm")).expect("copy");
    std::fs::write(
        dir.join("zone-aware.toml"),
        "name = \"zone-aware\"\ncomponent = \"zone-aware.wasm\"\n\
         hooks = [\"rank-candidates\"]\ndeadline_ms = 10000\n",
    )
    .expect("manifest");
    use_policies(&c.nodes[0], &dir, "zone-aware");
    c.nodes[0].start();
    let status = c.nodes[0].wait_exit(Duration::from_secs(30));
    let log = c.nodes[0].log();
    assert!(
        status.is_some_and(|s| !s.success()),
        "regent run refused the policy: {status:?}\n{log}"
    );
    for needle in ["deadline_ms", "10000", "ttl 10"] {
        assert!(log.contains(needle), "missing {needle:?} in:\n{log}");
    }
}
