//! Failsafe mode (`failsafe_mode: true`) against a real etcd and PostgreSQL: a three-node
//! cluster at `ttl: 10`, `loop_wait: 1`, `retry_timeout: 3` (margin 2 s: a deadline is the
//! renewal's send time + 8 s).
//!
//! - etcd frozen with SIGSTOP for 2 × ttl: the leader keeps taking writes (every member accepts
//!   its `POST /failsafe`), one primary throughout, and when etcd resumes the leader holds the
//!   key again without a PostgreSQL restart;
//! - etcd frozen and one replica's regent frozen: the leader stops taking writes before the
//!   deadline its last renewal earned;
//! - failsafe mode off: `POST /failsafe` and `GET /failsafe` answer 502; on: the leader refuses
//!   a `POST /failsafe` (500), a replica accepts it, `GET /failsafe` serves the key.
//!
//! The partition of the leader alone with failsafe mode on is in `tests/partition.rs` (it needs
//! the network namespaces built there).

mod support;

use nix::sys::signal::Signal;
use std::time::{Duration, Instant};
use support::*;

const TTL: u64 = 10;
/// `ttl − margin` at ttl 10 s: how long a renewal (or an accepted round) keeps a leader writable.
const DEADLINE_AFTER: Duration = Duration::from_secs(8);

/// The log without its ANSI colour codes (`accepted=true` is written as coloured parts).
fn plain(log: &str) -> String {
    let mut out = String::with_capacity(log.len());
    let mut chars = log.chars();
    while let Some(ch) = chars.next() {
        if ch == '\x1b' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(ch);
        }
    }
    out
}

fn post(node: &Node, path: &str, body: &str) -> Option<(u16, String)> {
    http_request_at(
        &node.host,
        node.api_port,
        "POST",
        path,
        Some(body),
        Duration::from_secs(5),
    )
}

/// A healthy 3-node cluster with the test tables; failsafe mode switched on when `on`, and
/// the `failsafe` key naming all three nodes served by every node.
fn cluster(on: bool) -> (Cluster, usize) {
    let (c, leader) = Cluster::healthy(3, NodeSpec::default());
    psql(
        c.nodes[leader].pg_port,
        "CREATE TABLE IF NOT EXISTS split_brain_probe (t timestamptz); \
         CREATE TABLE IF NOT EXISTS acked (id int primary key)",
    )
    .expect("create tables");
    if on {
        let l = &c.nodes[leader];
        let r = http_request_at(
            &l.host,
            l.api_port,
            "PATCH",
            "/config",
            Some(r#"{"failsafe_mode": true}"#),
            Duration::from_secs(5),
        );
        assert_eq!(r.as_ref().map(|r| r.0), Some(200), "PATCH /config: {r:?}");
        for n in &c.nodes {
            wait_for(
                &format!("{} to serve the failsafe key", n.name),
                Duration::from_secs(30),
                || {
                    let (s, body) = n.http_get("/failsafe")?;
                    let doc: serde_json::Value = serde_json::from_str(&body).ok()?;
                    (s == 200 && doc.as_object()?.len() == 3).then_some(())
                },
            );
        }
    }
    (c, leader)
}

#[test]
fn failsafe_endpoints_answer_as_patroni_does() {
    let _g = serial();
    let (c, leader) = cluster(false);
    let replica = (leader + 1) % 3;
    let body =
        r#"{"name": "pg9", "conn_url": "postgres://x/postgres", "api_url": "http://x/patroni"}"#;
    assert_eq!(
        c.nodes[leader].http_get("/failsafe").map(|r| r.0),
        Some(502)
    );
    assert_eq!(
        post(&c.nodes[replica], "/failsafe", body).map(|r| r.0),
        Some(502)
    );
    drop(c);

    let (c, leader) = cluster(true);
    let replica = (leader + 1) % 3;
    let (s, key) = c.nodes[replica]
        .http_get("/failsafe")
        .expect("GET /failsafe");
    let key: serde_json::Value = serde_json::from_str(&key).expect("JSON");
    eprintln!("GET /failsafe: {s} {key}");
    for n in &c.nodes {
        assert_eq!(
            key[&n.name].as_str(),
            Some(format!("http://{}:{}/patroni", n.host, n.api_port).as_str()),
            "{key}"
        );
    }
    assert_eq!(
        c.etcd
            .get("/service/test/failsafe")
            .map(|v| serde_json::from_str::<serde_json::Value>(&v).ok()),
        Some(Some(key.clone())),
        "the key in etcd is what GET /failsafe serves"
    );
    assert_eq!(
        post(&c.nodes[leader], "/failsafe", body),
        Some((500, "Running as a leader".into()))
    );
    let accepted = http_request_raw(&c.nodes[replica], "/failsafe", body);
    eprintln!("POST /failsafe on a replica: {accepted}");
    assert!(accepted.starts_with("HTTP/1.1 200"), "{accepted}");
    assert!(accepted.ends_with("\r\n\r\nAccepted"), "{accepted}");
    assert!(
        accepted
            .lines()
            .any(|l| l.to_ascii_lowercase().starts_with("lsn: ")),
        "no lsn header: {accepted}"
    );
}

/// The whole answer (status line, headers, body) of a POST with a JSON body.
fn http_request_raw(node: &Node, path: &str, body: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect((node.host.as_str(), node.api_port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read");
    out
}

#[test]
fn etcd_frozen_for_two_ttl_failsafe_leader_keeps_taking_writes_and_its_key() {
    let _g = serial();
    let (c, leader) = cluster(true);
    let name = c.nodes[leader].name.clone();
    let postmaster = c.nodes[leader].postmaster_pid().expect("postmaster");
    let ports: Vec<u16> = c.nodes.iter().map(|n| n.pg_port).collect();
    let mon = SplitBrainMonitor::start(
        c.nodes
            .iter()
            .map(|n| (n.name.clone(), n.pg_port))
            .collect(),
    );
    let writer = Writer::start(ports, 1);
    wait_for("a first write", Duration::from_secs(10), || {
        (psql(c.nodes[leader].pg_port, "SELECT count(*) > 0 FROM acked").ok()? == "t").then_some(())
    });

    let t0 = Instant::now();
    c.etcd.signal(Signal::SIGSTOP);
    let active = wait_for(
        "the leader to report failsafe mode active",
        Duration::from_secs(15),
        || {
            let (_, body) = c.nodes[leader].http_get("/patroni")?;
            let doc: serde_json::Value = serde_json::from_str(&body).ok()?;
            (doc["failsafe_mode_is_active"] == true).then(|| t0.elapsed())
        },
    );
    // The fault lasts 2 × ttl.
    std::thread::sleep(Duration::from_secs(2 * TTL).saturating_sub(t0.elapsed()));
    let frozen_for = t0.elapsed();
    c.etcd.signal(Signal::SIGCONT);
    let t1 = Instant::now();
    let back = wait_for(
        "the leader to hold the leader key again",
        Duration::from_secs(30),
        || (c.leader_key()? == name).then(|| t1.elapsed()),
    );
    // Writes go on for a ttl after etcd returned (the expired lease is revoked in that time,
    // and the key taken again), and the key is the leader's at the end.
    wait_for(
        "a ttl after etcd returned",
        Duration::from_secs(TTL + 5),
        || (t1.elapsed() > Duration::from_secs(TTL)).then_some(()),
    );
    let key_after = c.leader_key();
    let acks = writer.finish();
    let bad = mon.finish();
    let during: Vec<_> = acks
        .iter()
        .filter(|a| a.0 >= t0 && a.0 <= t0 + frozen_for)
        .collect();
    let gap = longest_gap(&acks, t0);
    let last_during = during.last().map(|a| a.0.duration_since(t0));
    eprintln!(
        "etcd frozen {frozen_for:?}: failsafe active after {active:?}; {} writes acknowledged while frozen, the last {last_during:?} after the freeze; longest write gap {gap:?}; leader key back {back:?} after SIGCONT; overlaps {bad:?}",
        during.len()
    );
    let log = plain(&c.nodes[leader].log());
    if !bad.is_empty() || gap > Duration::from_secs(3) {
        c.dump_logs();
    }
    assert!(bad.is_empty(), "two writable nodes at: {bad:?}");
    assert_eq!(key_after.as_deref(), Some(name.as_str()), "the leader key");
    assert!(
        acks.iter().filter(|a| a.0 >= t0).all(|a| a.2 == leader),
        "a write went to another node"
    );
    assert!(
        last_during.is_some_and(|d| d > Duration::from_secs(TTL + 5)),
        "writes stopped during the freeze: last {last_during:?}"
    );
    assert!(gap < Duration::from_secs(3), "longest write gap {gap:?}");
    assert_eq!(
        c.nodes[leader].postmaster_pid(),
        Some(postmaster),
        "PostgreSQL was restarted"
    );
    assert!(
        log.lines()
            .any(|l| l.contains("failsafe round") && l.contains("accepted=true")),
        "no accepted failsafe round in the leader's log"
    );
}

#[test]
fn etcd_frozen_and_a_replica_unreachable_leader_stops_before_its_deadline() {
    let _g = serial();
    let (c, leader) = cluster(true);
    let replica = (leader + 1) % 3;
    let port = c.nodes[leader].pg_port;
    let mon = SplitBrainMonitor::start(
        c.nodes
            .iter()
            .map(|n| (n.name.clone(), n.pg_port))
            .collect(),
    );
    c.nodes[replica].signal(Signal::SIGSTOP);
    // The leader renewed at the latest just before the freeze: its deadline is at most 8 s on.
    let t0 = Instant::now();
    c.etcd.signal(Signal::SIGSTOP);
    // When the last write was acknowledged (not when the first refusal came back).
    let last_ok = std::cell::Cell::new(Duration::ZERO);
    let stopped_after = wait_for(
        "the leader to stop taking writes",
        Duration::from_secs(TTL + 5),
        || {
            if psql(port, "INSERT INTO split_brain_probe VALUES (now())").is_ok() {
                last_ok.set(t0.elapsed());
                None
            } else {
                Some(last_ok.get())
            }
        },
    );
    c.etcd.signal(Signal::SIGCONT);
    c.nodes[replica].signal(Signal::SIGCONT);
    eprintln!(
        "etcd frozen and {} frozen: the leader acknowledged its last write {stopped_after:?} after the freeze (its deadline at most {DEADLINE_AFTER:?} after)",
        c.nodes[replica].name
    );
    let log = plain(&c.nodes[leader].log());
    let l = c.wait_leader(Duration::from_secs(90));
    wait_for(
        "a writable leader after etcd returns",
        Duration::from_secs(60),
        || {
            psql(
                c.nodes[l].pg_port,
                "INSERT INTO split_brain_probe VALUES (now())",
            )
            .ok()
        },
    );
    let bad = mon.finish();
    assert!(bad.is_empty(), "two writable nodes at: {bad:?}");
    assert!(
        stopped_after < DEADLINE_AFTER,
        "the leader took writes for {stopped_after:?}, past its last deadline"
    );
    // No round was accepted: the leader demoted on the refused round, or the guard fenced it
    // at the deadline its last renewal earned, whichever came first.
    let accepted: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("failsafe round") && l.contains("accepted=true"))
        .collect();
    assert!(accepted.is_empty(), "a round was accepted: {accepted:?}");
}
