//! Replica topology from Patroni's tags, with real etcd, PostgreSQL and `regent` processes:
//! a new replica clones from a running replica tagged `clonefrom`, a replica tagged
//! `replicatefrom` streams from that member through a slot kept there (the leader keeps and
//! advances its slot too), and falls back to the leader when its cascade source stops; the
//! permanent slots of `slots` live on the leader and its replicas (`ignore_slots`,
//! `member_slots_ttl`) and survive a failover.

mod support;

use nix::sys::signal::Signal;
use std::time::Duration;
use support::*;

/// Add `lines` (YAML, indented under `tags:`) to a node's configuration before it starts.
fn tag(node: &Node, lines: &str) {
    let text = std::fs::read_to_string(&node.config).expect("read config");
    let tagged = text.replacen(
        "  nofailover: false\n",
        &format!("  nofailover: false\n{lines}"),
        1,
    );
    assert_ne!(
        text, tagged,
        "the test config has no tags section to extend"
    );
    std::fs::write(&node.config, tagged).expect("write config");
}

/// The application names streaming from the server at `port` through a member slot (a
/// pg_basebackup in progress streams too, on a temporary slot).
fn streaming_from(port: u16) -> Vec<String> {
    psql(
        port,
        "SELECT coalesce(string_agg(r.application_name, ',' ORDER BY r.application_name), '') \
         FROM pg_stat_replication r JOIN pg_replication_slots s ON s.active_pid = r.pid \
         WHERE r.state = 'streaming' AND NOT s.temporary",
    )
    .map(|s| {
        s.split(',')
            .filter(|n| !n.is_empty())
            .map(String::from)
            .collect()
    })
    .unwrap_or_default()
}

fn wait_streaming_set(port: u16, want: &[&str], what: &str) {
    wait_for(what, Duration::from_secs(90), || {
        (streaming_from(port) == want).then_some(())
    });
}

/// A slot's restart LSN as a number, from the server at `port`.
fn slot_restart_lsn(port: u16, slot: &str) -> Option<i64> {
    psql(
        port,
        &format!(
            "SELECT (restart_lsn - '0/0')::bigint FROM pg_replication_slots WHERE slot_name = '{slot}'"
        ),
    )
    .ok()?
    .parse()
    .ok()
}

fn current_lsn(port: u16) -> i64 {
    psql(port, "SELECT (pg_current_wal_lsn() - '0/0')::bigint")
        .expect("current WAL position")
        .parse()
        .expect("a number")
}

#[test]
fn clonefrom_and_replicatefrom_make_a_cascade_that_falls_back_to_the_leader() {
    let _serial = serial();
    let mut c = Cluster::new(3, NodeSpec::default());
    tag(&c.nodes[1], "  clonefrom: true\n");
    tag(&c.nodes[2], "  replicatefrom: pg2\n");
    let (p1, p2, p3) = (c.nodes[0].pg_port, c.nodes[1].pg_port, c.nodes[2].pg_port);

    c.nodes[0].start();
    assert_eq!(
        c.wait_leader(Duration::from_secs(90)),
        0,
        "pg1 bootstraps alone"
    );
    c.nodes[1].start();
    wait_streaming_set(p1, &["pg2"], "pg2 streaming from the leader pg1");
    psql(p1, "CREATE TABLE cascade_probe (id int primary key)").expect("create table");
    // A new replica picks its clone source from the member keys: wait for pg2's to say it runs.
    wait_for(
        "pg2's member key: a running replica",
        Duration::from_secs(30),
        || {
            let v: serde_json::Value =
                serde_json::from_str(&c.etcd.get("/service/test/members/pg2")?).ok()?;
            (v["state"] == "running" && v["role"] == "replica").then_some(())
        },
    );

    c.nodes[2].start();
    wait_streaming_set(p2, &["pg3"], "pg3 streaming from pg2 (replicatefrom)");
    let log = c.nodes[2].log();
    assert!(
        log.contains("cloning a replica from pg2, a replica tagged clonefrom"),
        "pg3 did not clone from pg2, the clonefrom replica:\n{log}"
    );
    assert_eq!(
        streaming_from(p1),
        vec!["pg2".to_string()],
        "pg3 must not stream from pg1"
    );
    // pg3 streams through its own slot on pg2.
    wait_for("pg3's slot on pg2, active", Duration::from_secs(30), || {
        (psql(
            p2,
            "SELECT active FROM pg_replication_slots WHERE slot_name = 'pg3'",
        )
        .ok()?
            == "t")
            .then_some(())
    });

    // Writes on the leader reach pg3 through pg2, and the leader's idle slot for pg3
    // follows what pg3 reports instead of holding WAL back for ever.
    let before = slot_restart_lsn(p1, "pg3").expect("the leader keeps a slot for pg3");
    psql(
        p1,
        "INSERT INTO cascade_probe SELECT generate_series(1, 1000); SELECT pg_switch_wal()",
    )
    .expect("write on the leader");
    let written = current_lsn(p1);
    wait_for("the rows on pg3", Duration::from_secs(60), || {
        (psql(p3, "SELECT count(*) FROM cascade_probe").ok()? == "1000").then_some(())
    });
    wait_for(
        "the leader's slot for pg3 advanced",
        Duration::from_secs(60),
        || {
            let l = slot_restart_lsn(p1, "pg3")?;
            (l > before && l >= written - 16 * 1024 * 1024).then_some(l)
        },
    );

    // The cascade source stops: pg3 streams from the leader.
    c.nodes[1].signal(Signal::SIGTERM);
    assert!(
        c.nodes[1].wait_exit(Duration::from_secs(60)).is_some(),
        "pg2 stops"
    );
    wait_streaming_set(
        p1,
        &["pg3"],
        "pg3 streaming from the leader after pg2 stopped",
    );
    psql(p1, "INSERT INTO cascade_probe VALUES (1001)").expect("write on the leader");
    wait_for("the new row on pg3", Duration::from_secs(30), || {
        (psql(p3, "SELECT count(*) FROM cascade_probe").ok()? == "1001").then_some(())
    });

    // pg2 comes back: pg3 returns under it.
    c.nodes[1].start();
    wait_streaming_set(p2, &["pg3"], "pg3 back under pg2");
    assert_eq!(streaming_from(p1), vec!["pg2".to_string()]);
    c.nodes.iter_mut().for_each(|n| n.kill_all());
}

/// The slots of the server at `port`: `name type` lines.
fn slots_on(port: u16) -> Vec<String> {
    psql(
        port,
        "SELECT coalesce(string_agg(slot_name || ' ' || slot_type, ',' ORDER BY slot_name), '') \
         FROM pg_replication_slots",
    )
    .map(|s| {
        s.split(',')
            .filter(|n| !n.is_empty())
            .map(String::from)
            .collect()
    })
    .unwrap_or_default()
}

#[test]
fn permanent_slots_live_on_the_leader_and_its_replicas_and_survive_a_failover() {
    let _serial = serial();
    let spec = NodeSpec {
        parameters: vec![("wal_level".into(), "logical".into())],
        ..NodeSpec::default()
    };
    let mut c = Cluster::new(3, spec);
    for n in &c.nodes {
        set_config(
            n,
            "bootstrap.dcs.slots",
            "{keep_me: {type: physical}, cdc: {type: logical, database: postgres, plugin: test_decoding}}",
        );
        set_config(n, "bootstrap.dcs.ignore_slots", "[{name: manual}]");
        set_config(n, "bootstrap.dcs.member_slots_ttl", "0");
    }
    c.start_all();
    let leader = c.wait_leader(Duration::from_secs(90));
    c.wait_streaming(leader, 2, Duration::from_secs(90));
    let lp = c.nodes[leader].pg_port;
    let replicas: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
    wait_for(
        "the permanent slots on the leader",
        Duration::from_secs(30),
        || {
            let s = slots_on(lp);
            (s.contains(&"keep_me physical".to_string()) && s.contains(&"cdc logical".to_string()))
                .then_some(())
        },
    );
    for r in &replicas {
        wait_for("keep_me on a replica", Duration::from_secs(30), || {
            slots_on(c.nodes[*r].pg_port)
                .contains(&"keep_me physical".to_string())
                .then_some(())
        });
    }
    // A slot ignore_slots names stays; another one nobody wants goes (member_slots_ttl 0).
    psql(lp, "SELECT pg_create_physical_replication_slot('manual'); SELECT pg_create_physical_replication_slot('stray')")
        .expect("create slots by hand");
    wait_for("the stray slot dropped", Duration::from_secs(30), || {
        (!slots_on(lp).contains(&"stray physical".to_string())).then_some(())
    });
    assert!(slots_on(lp).contains(&"manual physical".to_string()));

    // The leader's permanent slot advances (a consumer); the replicas' copies follow /status.
    psql(lp, "CREATE TABLE slot_probe (i int); INSERT INTO slot_probe SELECT generate_series(1, 1000); SELECT pg_switch_wal()")
        .expect("write");
    psql(
        lp,
        "SELECT pg_replication_slot_advance('keep_me', pg_current_wal_lsn())",
    )
    .expect("advance on the leader");
    let target = slot_restart_lsn(lp, "keep_me").expect("keep_me on the leader");
    for r in &replicas {
        wait_for(
            "a replica's keep_me follows the leader's",
            Duration::from_secs(30),
            || (slot_restart_lsn(c.nodes[*r].pg_port, "keep_me")? >= target).then_some(()),
        );
    }

    // The leader crashes: the new one serves keep_me from where it was, and creates cdc.
    c.nodes[leader].crash();
    let new = wait_for("a new leader", Duration::from_secs(60), || {
        c.leader().filter(|l| *l != leader)
    });
    let np = c.nodes[new].pg_port;
    wait_for("cdc on the new leader", Duration::from_secs(30), || {
        slots_on(np)
            .contains(&"cdc logical".to_string())
            .then_some(())
    });
    assert!(slot_restart_lsn(np, "keep_me").expect("keep_me on the new leader") >= target);
    c.nodes.iter_mut().for_each(|n| n.kill_all());
}
