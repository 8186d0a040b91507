//! A standby cluster (`standby_cluster`), with real etcd, PostgreSQL and `regent` processes: a
//! second cluster bootstraps its standby leader from the first cluster's primary (through a
//! permanent slot there), its other member streams from that standby leader, nothing in it is
//! writable, a lost standby leader is replaced by the replica (which then follows the remote),
//! and removing the section with `PATCH /config` promotes the standby leader.

mod support;

use std::time::{Duration, Instant};
use support::*;

/// The role a node's `GET /patroni` reports.
fn role(n: &Node) -> Option<String> {
    let (_, body) = n.http_get("/patroni")?;
    let doc: serde_json::Value = serde_json::from_str(&body).ok()?;
    Some(doc["role"].as_str()?.to_string())
}

fn in_recovery(port: u16) -> Option<bool> {
    psql(port, "SELECT pg_is_in_recovery()")
        .ok()
        .map(|s| s == "t")
}

/// Wait until the row `id` of `t` is visible at `port`.
fn wait_row(port: u16, id: i32, what: &str) {
    wait_for(what, Duration::from_secs(60), || {
        psql(port, &format!("SELECT count(*) FROM t WHERE id = {id}"))
            .ok()
            .filter(|s| s == "1")
            .map(|_| ())
    });
}

/// The application names streaming from the server at `port` through a slot matching
/// `slot_filter` (SQL on `s`, `pg_replication_slots`), comma-separated.
fn streams_through(port: u16, slot_filter: &str) -> Option<String> {
    psql(
        port,
        &format!(
            "SELECT string_agg(r.application_name, ',') FROM pg_stat_replication r \
             JOIN pg_replication_slots s ON s.active_pid = r.pid \
             WHERE r.state = 'streaming' AND {slot_filter}"
        ),
    )
    .ok()
}

/// Which node of `nodes` reports itself the standby leader (running).
fn standby_leader(nodes: &[Node]) -> Option<usize> {
    nodes
        .iter()
        .position(|n| role(n).as_deref() == Some("standby_leader"))
}

#[test]
fn a_standby_cluster_follows_a_remote_primary_fails_over_and_is_promoted_by_removing_the_section() {
    // The source cluster: one node, with a permanent slot for the standby cluster.
    let mut a = Cluster::new(1, NodeSpec::default());
    set_config(
        &a.nodes[0],
        "bootstrap.dcs.slots",
        "{standby_b: {type: physical}}",
    );
    a.start_all();
    a.wait_leader(Duration::from_secs(90));
    let source = a.nodes[0].pg_port;
    psql(source, "CREATE TABLE t (id int primary key)").expect("create table");
    psql(source, "INSERT INTO t VALUES (1)").expect("insert 1");

    // The standby cluster: two nodes in their own scope, in the same etcd.
    let eps = vec![a.etcd.endpoint()];
    let base = a.tmp.path().join("standby");
    std::fs::create_dir_all(&base).expect("standby dir");
    chown_pg(&base);
    let mut b: Vec<Node> = ["sb1", "sb2"]
        .iter()
        .map(|name| Node::new(&base, name, &eps, &NodeSpec::default()))
        .collect();
    for n in &b {
        set_config(n, "scope", "standby");
        set_config(
            n,
            "bootstrap.dcs.standby_cluster",
            &format!("{{host: 127.0.0.1, port: {source}, primary_slot_name: standby_b}}"),
        );
    }
    for n in &mut b {
        n.start();
    }
    let leader = wait_for(
        "a standby leader in the standby cluster",
        Duration::from_secs(90),
        || standby_leader(&b),
    );
    let replica = 1 - leader;
    let (lp, rp) = (b[leader].pg_port, b[replica].pg_port);
    wait_row(lp, 1, "the standby leader to hold row 1");
    wait_row(rp, 1, "the standby cluster's replica to hold row 1");
    // The standby leader streams from the source through the permanent slot; the replica
    // streams from the standby leader through its member slot.
    wait_for(
        "the standby leader to stream through slot standby_b",
        Duration::from_secs(30),
        || streams_through(source, "s.slot_name = 'standby_b'").filter(|s| *s == b[leader].name),
    );
    wait_for(
        "the replica to stream from the standby leader",
        Duration::from_secs(30),
        || streams_through(lp, "NOT s.temporary").filter(|s| *s == b[replica].name),
    );
    // Nothing in the standby cluster is writable, and its REST API says what it is.
    for n in &b {
        assert_eq!(in_recovery(n.pg_port), Some(true), "{} is writable", n.name);
        assert!(
            psql(n.pg_port, "INSERT INTO t VALUES (99)").is_err(),
            "{} took a write",
            n.name
        );
    }
    assert_eq!(
        b[leader].http_get("/standby-leader").map(|r| r.0),
        Some(200)
    );
    assert_eq!(b[leader].http_get("/leader").map(|r| r.0), Some(200));
    assert_eq!(b[leader].http_get("/primary").map(|r| r.0), Some(503));
    assert_eq!(
        b[replica].http_get("/standby-leader").map(|r| r.0),
        Some(503)
    );
    psql(source, "INSERT INTO t VALUES (2)").expect("insert 2");
    wait_row(rp, 2, "row 2 to reach the standby cluster's replica");

    // The standby leader's host dies: the replica takes the key and follows the remote.
    let lost = Instant::now();
    b[leader].crash();
    wait_for(
        "the replica to become the standby leader",
        Duration::from_secs(60),
        || (role(&b[replica]).as_deref() == Some("standby_leader")).then_some(()),
    );
    let took_over = lost.elapsed();
    psql(source, "INSERT INTO t VALUES (3)").expect("insert 3");
    wait_row(
        rp,
        3,
        "row 3 to reach the new standby leader from the source",
    );
    assert_eq!(
        in_recovery(rp),
        Some(true),
        "the new standby leader was promoted"
    );
    eprintln!(
        "standby cluster: {} became the standby leader {:.1} s after {}'s host died",
        b[replica].name,
        took_over.as_secs_f64(),
        b[leader].name
    );

    // The old standby leader comes back as a replica of the new one.
    b[leader].start();
    wait_row(lp, 3, "the former standby leader to catch up as a replica");
    wait_for(
        "the former standby leader to report itself a replica",
        Duration::from_secs(60),
        || (role(&b[leader]).as_deref() == Some("replica")).then_some(()),
    );

    // Removing the section promotes the standby leader; the source cluster is untouched.
    let patched = http_request_at(
        "127.0.0.1",
        b[replica].api_port,
        "PATCH",
        "/config",
        Some(r#"{"standby_cluster": null}"#),
        Duration::from_secs(5),
    )
    .expect("PATCH /config answers");
    assert_eq!(patched.0, 200, "{}", patched.1);
    let asked = Instant::now();
    wait_for(
        "the standby leader to be promoted",
        Duration::from_secs(60),
        || {
            psql(rp, "INSERT INTO t VALUES (4) RETURNING 1")
                .ok()
                .filter(|s| s == "1")
        },
    );
    eprintln!(
        "standby cluster: {} accepted writes {:.1} s after standby_cluster was removed",
        b[replica].name,
        asked.elapsed().as_secs_f64()
    );
    wait_for(
        "the promoted leader to report itself primary",
        Duration::from_secs(30),
        || (role(&b[replica]).as_deref() == Some("primary")).then_some(()),
    );
    wait_row(lp, 4, "the other member to follow the promoted leader");
    assert_eq!(
        in_recovery(lp),
        Some(true),
        "two primaries in the promoted cluster"
    );
    assert_eq!(in_recovery(source), Some(false));
    assert!(
        psql(source, "SELECT count(*) FROM t WHERE id = 4").is_ok_and(|s| s == "0"),
        "a write of the promoted cluster reached the source"
    );
    for n in &mut b {
        n.kill_all();
    }
}
