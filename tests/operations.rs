//! Operator actions on a running three-node cluster of real `regent` processes: a planned
//! switchover through the `failover` key (as `patronictl` writes it when the REST API is not
//! used), maintenance mode, a leader that hands over when its health policy fails it, and a
//! policy swapped while the cluster runs.

mod support;

use std::time::{Duration, Instant};
use support::*;

fn table(c: &Cluster, leader: usize) {
    psql(
        c.nodes[leader].pg_port,
        "CREATE TABLE IF NOT EXISTS split_brain_probe (t timestamptz); \
         CREATE TABLE IF NOT EXISTS acked (id int primary key)",
    )
    .expect("create tables");
}

fn healthy(spec: NodeSpec) -> (Cluster, usize) {
    let mut c = Cluster::new(3, spec);
    c.start_all();
    let leader = c.wait_leader(Duration::from_secs(90));
    c.wait_streaming(leader, 2, Duration::from_secs(90));
    table(&c, leader);
    (c, leader)
}

fn ports(c: &Cluster) -> Vec<u16> {
    c.nodes.iter().map(|n| n.pg_port).collect()
}

fn leader_key(c: &Cluster) -> Option<String> {
    c.etcd.get("/service/test/leader")
}

/// Every acknowledged id is on the node at `port`.
fn assert_no_ack_lost(port: u16, acks: &[(Instant, i64, usize)]) {
    let want: std::collections::BTreeSet<i64> = acks.iter().map(|a| a.1).collect();
    let got: std::collections::BTreeSet<i64> = psql(port, "SELECT id FROM acked")
        .expect("read acked")
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    let lost: Vec<&i64> = want.difference(&got).collect();
    assert!(lost.is_empty(), "acknowledged writes lost: {lost:?}");
}

fn wait_replica_streaming_from(c: &Cluster, node: usize, leader: usize) {
    let app = c.nodes[node].name.clone();
    wait_for(
        &format!("{app} to stream from {}", c.nodes[leader].name),
        Duration::from_secs(60),
        || {
            let n = psql(
                c.nodes[leader].pg_port,
                &format!(
                    "SELECT count(*) FROM pg_stat_replication WHERE application_name = '{app}' \
                     AND state = 'streaming'"
                ),
            )
            .ok()?;
            (n == "1").then_some(())
        },
    );
}

fn set_config(c: &Cluster, patch: impl Fn(&mut serde_json::Map<String, serde_json::Value>)) {
    let raw = c.etcd.get("/service/test/config").expect("config key");
    let mut v: serde_json::Value = serde_json::from_str(&raw).expect("config JSON");
    if let Some(m) = v.as_object_mut() {
        patch(m);
    }
    c.etcd.put("/service/test/config", &v.to_string());
}

/// A planned switchover to a named replica: writes stop for well under a second, no
/// acknowledged write is lost, and the old leader follows the new one without a rewind. Then
/// maintenance mode: a stopped primary is neither restarted nor replaced until `pause` is
/// lifted.
#[test]
fn switchover_is_fast_and_lossless_then_pause_stops_automation() {
    let _g = serial();
    let (c, old) = healthy(NodeSpec::default());
    let cand = (old + 1) % 3;
    let writer = Writer::start(ports(&c), 1);
    wait_for("the writer to get going", Duration::from_secs(10), || {
        (count_acked(&c, old)? >= 20).then_some(())
    });
    let t0 = Instant::now();
    c.etcd.put(
        "/service/test/failover",
        &format!(
            r#"{{"leader":"{}","member":"{}"}}"#,
            c.nodes[old].name, c.nodes[cand].name
        ),
    );
    wait_for(
        "the candidate to hold the leader key",
        Duration::from_secs(30),
        || (leader_key(&c)? == c.nodes[cand].name).then_some(()),
    );
    wait_for("writes on the new leader", Duration::from_secs(10), || {
        c.writable().contains(&cand).then_some(())
    });
    // Let the writer land a few more rows on the new leader.
    let settled = wait_for("writes to resume", Duration::from_secs(10), || {
        let n = count_acked(&c, cand)?;
        (n > 0).then_some(n)
    });
    let acks = writer.finish();
    let gap = longest_gap(&acks, t0);
    eprintln!(
        "switchover {} -> {}: key moved after {:?}; longest gap between acknowledged writes {:?} \
         ({} writes, {} rows on the new leader)",
        c.nodes[old].name,
        c.nodes[cand].name,
        t0.elapsed(),
        gap,
        acks.len(),
        settled
    );
    assert!(
        acks.iter().any(|a| a.2 == cand && a.0 > t0),
        "no write acknowledged by the new leader"
    );
    assert_no_ack_lost(c.nodes[cand].pg_port, &acks);
    assert!(
        c.etcd
            .get("/service/test/failover")
            .is_none_or(|v| v == "{}"),
        "the request is cleared"
    );
    wait_replica_streaming_from(&c, old, cand);
    assert!(
        !c.nodes[old].log().contains("rewinding the former primary"),
        "a clean hand-over needs no pg_rewind"
    );
    // No timeline divergence: the old leader replays the new leader's writes.
    psql(c.nodes[cand].pg_port, "INSERT INTO acked VALUES (-1)").expect("write");
    wait_for("the old leader to replay", Duration::from_secs(20), || {
        (psql(
            c.nodes[old].pg_port,
            "SELECT count(*) FROM acked WHERE id = -1",
        )
        .ok()?
            == "1")
            .then_some(())
    });

    // Maintenance mode.
    set_config(&c, |m| {
        m.insert("pause".into(), true.into());
    });
    wait_for(
        "every node to report pause",
        Duration::from_secs(15),
        || {
            c.nodes
                .iter()
                .all(|n| {
                    n.http_get("/patroni")
                        .is_some_and(|(_, b)| b.contains("\"pause\":true"))
                })
                .then_some(())
        },
    );
    let leader = cand;
    c.nodes[leader].kill_postgres();
    // Three loops (loop_wait = 1 s) with the postmaster down and the cluster paused: nothing
    // restarts it and no replica is promoted.
    let until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < until {
        assert!(
            c.writable().is_empty(),
            "a node accepts writes while paused"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        c.nodes[leader].postmaster_pid().is_none(),
        "paused: PostgreSQL is left stopped"
    );
    set_config(&c, |m| {
        m.remove("pause");
    });
    let new = wait_for(
        "a writable leader after resume",
        Duration::from_secs(30),
        || c.writable().first().copied(),
    );
    eprintln!("after resume: {} leads", c.nodes[new].name);
}

fn count_acked(c: &Cluster, node: usize) -> Option<i64> {
    psql(c.nodes[node].pg_port, "SELECT count(*) FROM acked")
        .ok()?
        .parse()
        .ok()
}

/// The policy directory of a test: the shipped policies, plus manifests written here.
fn policy_dir(c: &Cluster, manifests: &[(&str, &str)]) -> std::path::PathBuf {
    let dir = c.tmp.path().join("policies");
    std::fs::create_dir_all(&dir).expect("policies dir");
    let shipped = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
    for entry in std::fs::read_dir(&shipped).expect("read policies/") {
        let p = entry.expect("entry").path();
        if p.extension().is_some_and(|e| e == "wasm" || e == "toml") {
            std::fs::copy(&p, dir.join(p.file_name().expect("name"))).expect("copy policy");
        }
    }
    for (name, text) in manifests {
        std::fs::write(dir.join(format!("{name}.toml")), text).expect("write manifest");
    }
    dir
}

const CANARY_GUARD: &str = r#"
name = "replication-guard"
component = "replication-guard.wasm"
hooks = ["check-health"]
capabilities = ["sql-probe"]

[settings]
failures_before_failed = 2
probe = "canary"
role = "any"

# Fails on a node whose data directory holds a file `canary-failed` (node-local: not replicated).
[[probes]]
name = "canary"
sql = "SELECT pg_stat_file('canary-failed', true) IS NULL"
timeout_ms = 1000
"#;

/// A leader whose health policy judges it failed hands over to a healthy replica: a failover
/// trigger Patroni does not have. No acknowledged write is lost on the way.
#[test]
fn leader_failed_by_its_health_policy_hands_over() {
    let _g = serial();
    let mut c = Cluster::new(3, NodeSpec::default());
    let dir = policy_dir(&c, &[("replication-guard", CANARY_GUARD)]);
    for n in &mut c.nodes {
        let mut text = std::fs::read_to_string(&n.config).expect("config");
        text.push_str(&format!(
            "regent:\n  policies_dir: {}\n  policies: [replication-guard]\n  failed_loops_before_handover: 2\n",
            dir.display()
        ));
        std::fs::write(&n.config, text).expect("config");
    }
    c.start_all();
    let old = c.wait_leader(Duration::from_secs(90));
    c.wait_streaming(old, 2, Duration::from_secs(90));
    table(&c, old);
    let writer = Writer::start(ports(&c), 1);
    wait_for("the writer to get going", Duration::from_secs(10), || {
        (count_acked(&c, old)? >= 10).then_some(())
    });
    let t0 = Instant::now();
    std::fs::write(c.nodes[old].dir.join("data/canary-failed"), "").expect("canary file");
    let new = wait_for(
        "another node to hold the leader key",
        Duration::from_secs(30),
        || {
            let l = leader_key(&c)?;
            c.nodes
                .iter()
                .position(|n| n.name == l)
                .filter(|i| *i != old)
        },
    );
    wait_for("writes on the new leader", Duration::from_secs(10), || {
        c.writable().contains(&new).then_some(())
    });
    wait_for("writes to resume", Duration::from_secs(10), || {
        (count_acked(&c, new)? > 0).then_some(())
    });
    let acks = writer.finish();
    eprintln!(
        "health hand-over {} -> {} after {:?}; longest write gap {:?}",
        c.nodes[old].name,
        c.nodes[new].name,
        t0.elapsed(),
        longest_gap(&acks, t0)
    );
    assert!(
        c.nodes[old].log().contains("handing over to"),
        "the old leader logged why it handed over"
    );
    assert_no_ack_lost(c.nodes[new].pg_port, &acks);
    wait_replica_streaming_from(&c, old, new);
    // The old leader stays failed (the file is local): it runs on as a replica, which its
    // status document says from its next loop on.
    let deadline = Instant::now() + Duration::from_secs(15);
    let st = loop {
        let st = c.nodes[old]
            .http_get("/patroni")
            .map(|(_, b)| b)
            .unwrap_or_default();
        if st.contains("\"role\":\"replica\"") || Instant::now() > deadline {
            break st;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(st.contains("\"role\":\"replica\""), "old leader: {st}");
}

/// Three nodes in two zones; pg1 (zone a) leads. With the built-in rules the next election
/// goes to pg2 (zone b, higher failover_priority); after the cluster swaps to `zone-aware`
/// while running (config edited, SIGHUP, no restart), the same election goes to pg3, which
/// shares the former leader's zone.
#[test]
fn swapping_the_policy_while_running_changes_the_next_winner() {
    let _g = serial();
    let mut c = Cluster::new(3, NodeSpec::default());
    let dir = policy_dir(&c, &[]);
    let zone = ["a", "b", "a"];
    let priority = [1, 3, 2];
    for (i, n) in c.nodes.iter_mut().enumerate() {
        let text = std::fs::read_to_string(&n.config).expect("config");
        let text = text.replace(
            "tags:\n  nofailover: false\n",
            &format!(
                "tags:\n  nofailover: false\n  zone: {}\n  failover_priority: {}\n",
                zone[i], priority[i]
            ),
        );
        std::fs::write(
            &n.config,
            format!(
                "{text}regent:\n  policies_dir: {}\n  policies: [patroni-default]\n",
                dir.display()
            ),
        )
        .expect("config");
    }
    // pg1 bootstraps alone, so that it leads.
    c.nodes[0].start();
    wait_for("pg1 to lead", Duration::from_secs(60), || {
        (c.leader()? == 0).then_some(())
    });
    c.nodes[1].start();
    c.nodes[2].start();
    c.wait_streaming(0, 2, Duration::from_secs(90));
    table(&c, 0);

    let winner = |c: &mut Cluster| -> usize {
        // Equal WAL on both replicas, then the leader dies.
        psql(
            c.nodes[0].pg_port,
            "INSERT INTO acked VALUES (1) ON CONFLICT DO NOTHING",
        )
        .expect("write");
        let lsn = psql(c.nodes[0].pg_port, "SELECT pg_current_wal_lsn()").expect("lsn");
        for i in [1, 2] {
            wait_for("replicas to catch up", Duration::from_secs(20), || {
                let ok = psql(
                    c.nodes[i].pg_port,
                    &format!("SELECT pg_last_wal_replay_lsn() >= '{lsn}'"),
                )
                .ok()?;
                (ok == "t").then_some(())
            });
        }
        c.nodes[0].crash();
        let w = wait_for("a new leader", Duration::from_secs(40), || {
            let l = leader_key(c)?;
            c.nodes.iter().position(|n| n.name == l).filter(|i| *i != 0)
        });
        c.nodes[0].start();
        wait_replica_streaming_from(c, 0, w);
        w
    };
    let first = winner(&mut c);
    assert_eq!(
        c.nodes[first].name, "pg2",
        "the built-in rules pick the higher priority"
    );

    // Back to pg1 as leader, by a switchover (once the leader sees it as a healthy replica).
    wait_for("pg1 to serve as a replica", Duration::from_secs(30), || {
        (c.nodes[0].http_get("/replica")?.0 == 200).then_some(())
    });
    c.etcd.put(
        "/service/test/failover",
        &format!(r#"{{"leader":"{}","member":"pg1"}}"#, c.nodes[first].name),
    );
    wait_for("pg1 to lead again", Duration::from_secs(30), || {
        (leader_key(&c)? == "pg1" && c.writable() == vec![0]).then_some(())
    });
    wait_replica_streaming_from(&c, 1, 0);
    wait_replica_streaming_from(&c, 2, 0);

    // Swap the policy on every node while they run.
    for n in &c.nodes {
        let text = std::fs::read_to_string(&n.config).expect("config");
        std::fs::write(
            &n.config,
            text.replace("policies: [patroni-default]", "policies: [zone-aware]"),
        )
        .expect("config");
        n.signal(nix::sys::signal::Signal::SIGHUP);
    }
    wait_for(
        "every node to run zone-aware",
        Duration::from_secs(15),
        || {
            c.nodes
                .iter()
                .all(|n| {
                    n.http_get("/policy").is_some_and(|(_, b)| {
                        b.contains("zone-aware") && !b.contains("patroni-default")
                    })
                })
                .then_some(())
        },
    );
    let second = winner(&mut c);
    assert_eq!(
        c.nodes[second].name, "pg3",
        "zone-aware keeps the primary in the former leader's zone"
    );
}

/// The whole cluster restarts at once, and the former leader, which holds WAL the others
/// never received, cannot win (`nofailover`): it starts read-only while there is no leader,
/// another node wins, and it must be rewound before it follows the new leader (following
/// without a rewind leaves a replica that never streams: it forked off the new timeline).
#[test]
fn full_restart_rewinds_a_former_primary_that_diverged_before_it_follows() {
    let _g = serial();
    let (mut c, old) = healthy(NodeSpec::default());
    let replicas: Vec<usize> = (0..3).filter(|i| *i != old).collect();
    for &r in &replicas {
        c.nodes[r].signal(nix::sys::signal::Signal::SIGTERM);
        assert!(c.nodes[r].wait_exit(Duration::from_secs(30)).is_some());
    }
    // Acknowledged by the old leader alone (asynchronous replication, replicas gone).
    for i in 1..=20 {
        psql(
            c.nodes[old].pg_port,
            &format!("INSERT INTO acked VALUES ({i})"),
        )
        .expect("write");
    }
    c.nodes[old].signal(nix::sys::signal::Signal::SIGTERM);
    assert!(c.nodes[old].wait_exit(Duration::from_secs(30)).is_some());
    let text = std::fs::read_to_string(&c.nodes[old].config).expect("config");
    std::fs::write(
        &c.nodes[old].config,
        text.replace("  nofailover: false\n", "  nofailover: true\n"),
    )
    .expect("config");
    c.start_all();
    let new = wait_for("a new leader", Duration::from_secs(60), || {
        let l = leader_key(&c)?;
        c.nodes.iter().position(|n| n.name == l)
    });
    assert_ne!(new, old, "nofailover: the old leader does not lead");
    wait_replica_streaming_from(&c, old, new);
    psql(c.nodes[new].pg_port, "INSERT INTO acked VALUES (-7)").expect("write");
    wait_for(
        "the old leader to replay the new leader's write",
        Duration::from_secs(30),
        || {
            (psql(
                c.nodes[old].pg_port,
                "SELECT count(*) FROM acked WHERE id = -7",
            )
            .ok()?
                == "1")
                .then_some(())
        },
    );
    let log = c.nodes[old].log();
    assert!(
        log.contains("pg_rewind finished"),
        "the diverged former primary was rewound before following"
    );
    assert!(
        !log.contains("on the same timeline"),
        "pg_rewind ran against a leader still on the old timeline"
    );
}
