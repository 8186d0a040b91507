//! Quorum commit (`synchronous_mode: quorum`, issue 15.2) on three real `regent` nodes over
//! real etcd and PostgreSQL: the leader waits for `ANY 1` of both replicas and publishes them
//! with quorum 1; with one standby's WAL receiver stopped, a crash of the leader promotes the
//! standby that caught up, with every acknowledged commit; and the lagging standby, left alone,
//! is never promoted, while the former leader that holds every commit is, once it returns.

mod support;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::time::{Duration, Instant};
use support::*;

const TTL: u64 = 10;

/// The `sync` key, as JSON.
fn sync_key(c: &Cluster) -> Option<serde_json::Value> {
    serde_json::from_str(&c.etcd.get("/service/test/sync")?).ok()
}

fn count_rows(port: u16) -> Option<i64> {
    psql(port, "SELECT count(*) FROM acked").ok()?.parse().ok()
}

/// Ids `from..=to` written one by one on `port`; each must be acknowledged.
fn write_acked(port: u16, from: i64, to: i64) -> Vec<i64> {
    let ids: Vec<i64> = (from..=to).collect();
    for i in &ids {
        psql(port, &format!("INSERT INTO acked VALUES ({i})"))
            .unwrap_or_else(|e| panic!("insert {i}: {e}"));
    }
    ids
}

/// Every acknowledged id is on the node at `port`.
fn assert_has_all(port: u16, acked: &[i64]) {
    let have: Vec<i64> = psql(port, "SELECT id FROM acked ORDER BY id")
        .expect("read acked")
        .lines()
        .filter_map(|l| l.parse().ok())
        .collect();
    let lost: Vec<&i64> = acked.iter().filter(|i| !have.contains(i)).collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged commits lost: {lost:?}",
        lost.len()
    );
}

/// Send `sig` to the WAL receiver of the node at `port`.
fn signal_walreceiver(port: u16, sig: Signal) -> i32 {
    let pid: i32 = wait_for("a WAL receiver", Duration::from_secs(30), || {
        psql(port, "SELECT pid FROM pg_stat_wal_receiver")
            .ok()?
            .parse()
            .ok()
    });
    kill(Pid::from_raw(pid), sig).expect("signal the WAL receiver");
    pid
}

#[test]
fn quorum_commit_keeps_every_acknowledged_commit_when_the_leader_crashes_with_a_standby_lagging() {
    let _g = serial();
    let (mut c, leader) = Cluster::healthy(3, NodeSpec::default());
    let lport = c.nodes[leader].pg_port;
    psql(
        lport,
        "CREATE TABLE acked (id bigint primary key); CREATE TABLE split_brain_probe (t timestamptz)",
    )
    .expect("create tables");
    let quorum = r#"{"synchronous_mode": "quorum", "synchronous_node_count": 1}"#;
    assert_eq!(c.nodes[leader].patch_config(quorum), Some(200));
    let mut replicas: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
    replicas.sort_by_key(|i| c.nodes[*i].name.clone());
    let (a, b) = (
        c.nodes[replicas[0]].name.clone(),
        c.nodes[replicas[1]].name.clone(),
    );

    // PostgreSQL waits for any one of both replicas; the key names both with quorum 1.
    let want = format!(r#"ANY 1 ("{a}","{b}")"#);
    wait_for_or(
        "synchronous_standby_names = ANY 1 of both replicas",
        Duration::from_secs(30),
        || (psql(lport, "SHOW synchronous_standby_names").ok()? == want).then_some(()),
        || format!("{:?}", psql(lport, "SHOW synchronous_standby_names")),
    );
    let key = wait_for_or(
        "the sync key with both replicas and quorum 1",
        Duration::from_secs(30),
        || {
            let k = sync_key(&c)?;
            (k["leader"] == c.nodes[leader].name.as_str()
                && k["quorum"] == 1
                && k["sync_standby"] == format!("{a},{b}").as_str())
            .then_some(k)
        },
        || format!("{:?}", sync_key(&c)),
    );
    eprintln!("sync key: {key}; synchronous_standby_names: {want}");
    assert_eq!(
        psql(
            lport,
            "SELECT string_agg(sync_state, ',' ORDER BY application_name) FROM pg_stat_replication"
        )
        .as_deref(),
        Ok("quorum,quorum")
    );
    // Both are quorum standbys to the REST API, not synchronous ones.
    for &r in &replicas {
        wait_for("/quorum to answer 200", Duration::from_secs(15), || {
            (c.nodes[r].http_get("/quorum")?.0 == 200).then_some(())
        });
        assert_eq!(c.nodes[r].http_get("/sync").map(|(s, _)| s), Some(503));
        let (_, doc) = c.nodes[r].http_get("/patroni").expect("GET /patroni");
        assert!(doc.contains(r#""quorum_standby":true"#), "{doc}");
    }
    let (_, cluster) = c.nodes[leader].http_get("/cluster").expect("GET /cluster");
    let cluster: serde_json::Value = serde_json::from_str(&cluster).expect("JSON");
    let roles: Vec<&str> = cluster["members"]
        .as_array()
        .expect("members")
        .iter()
        .filter_map(|m| m["role"].as_str())
        .collect();
    assert_eq!(
        roles.iter().filter(|r| **r == "quorum_standby").count(),
        2,
        "{roles:?}"
    );

    // One standby stops receiving WAL; commits go on, acknowledged by the other.
    let (lag, fresh) = (replicas[0], replicas[1]);
    let receiver = signal_walreceiver(c.nodes[lag].pg_port, Signal::SIGSTOP);
    let started = Instant::now();
    let mut acked = write_acked(lport, 1, 200);
    eprintln!(
        "200 commits acknowledged in {:?} with {a}'s WAL receiver stopped",
        started.elapsed()
    );
    let behind = count_rows(c.nodes[lag].pg_port).expect("count on the lagging standby");
    assert!(behind < 200, "{a} was meant to lag, but has {behind} rows");

    // The leader's host crashes: the standby that caught up takes over with every commit.
    c.nodes[leader].crash();
    let new = wait_for(
        "a new writable leader",
        Duration::from_secs(TTL + 20),
        || c.writable().into_iter().find(|i| *i != leader),
    );
    assert_eq!(
        new, fresh,
        "the lagging standby {a} (with {behind} of 200 rows) was promoted"
    );
    assert_has_all(c.nodes[new].pg_port, &acked);
    eprintln!("{b} promoted with all 200 acknowledged commits; {a} had {behind}");

    // With the former leader gone and the other standby not streaming, the new leader's key
    // names nobody: only it may be promoted, and its commits need no standby.
    wait_for_or(
        "the new leader's sync key naming nobody",
        Duration::from_secs(30),
        || {
            let k = sync_key(&c)?;
            (k["leader"] == b.as_str() && k["sync_standby"].is_null()).then_some(())
        },
        || format!("{:?}", sync_key(&c)),
    );

    // The former leader rejoins (rewound) and the stopped standby resumes: both are quorum
    // standbys of the new leader again.
    let old = c.nodes[leader].name.clone();
    kill(Pid::from_raw(receiver), Signal::SIGCONT).expect("resume the WAL receiver");
    c.nodes[leader].start();
    let nport = c.nodes[new].pg_port;
    let mut voters = [old.clone(), a.clone()];
    voters.sort();
    wait_for_or(
        "the new leader's key with both standbys and quorum 1",
        Duration::from_secs(120),
        || {
            let k = sync_key(&c)?;
            (k["leader"] == b.as_str()
                && k["quorum"] == 1
                && k["sync_standby"] == voters.join(",").as_str())
            .then_some(())
        },
        || format!("{:?}", sync_key(&c)),
    );

    // The same standby stops receiving again; the former leader acknowledges the commits.
    let receiver = signal_walreceiver(c.nodes[lag].pg_port, Signal::SIGSTOP);
    acked.extend(write_acked(nport, 201, 300));
    let behind = count_rows(c.nodes[lag].pg_port).expect("count on the lagging standby");
    assert!(behind < 300, "{a} was meant to lag, but has {behind} rows");

    // Both nodes holding the last commits crash: the lagging standby, alone, is a voter but
    // proves nothing, and must not be promoted.
    c.nodes[new].crash();
    c.nodes[leader].crash();
    kill(Pid::from_raw(receiver), Signal::SIGCONT).expect("resume the WAL receiver");
    let lag_port = c.nodes[lag].pg_port;
    let deadline = Instant::now() + Duration::from_secs(2 * TTL + 5);
    while Instant::now() < deadline {
        assert_eq!(
            psql(lag_port, "SELECT pg_is_in_recovery()").as_deref(),
            Ok("t"),
            "{a} was promoted without the acknowledged commits"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        c.nodes[lag].log().contains("not a synchronous standby"),
        "{a} does not say why it stays out of the election"
    );

    // The former leader returns with every commit; whoever is elected now holds them all.
    // (The lagging standby may win too: its WAL receiver, resumed, reads what the crashed
    // leader had already sent into its socket, and the returned node's vote shows it has
    // caught up.)
    c.nodes[leader].start();
    let back = wait_for("a writable leader", Duration::from_secs(90), || {
        c.writable().into_iter().next()
    });
    assert_has_all(c.nodes[back].pg_port, &acked);
    eprintln!(
        "{a} ({behind} rows replayed) stayed a replica alone; {old} returned and {} leads with all 300",
        c.nodes[back].name
    );
}
