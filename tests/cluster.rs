//! Three-node clusters of real `regent` processes over real etcd and real PostgreSQL.
//!
//! Each test builds its own cluster on loopback ports in a temporary directory; the heavy tests
//! run one at a time.

mod support;

use nix::sys::signal::Signal;
use std::time::{Duration, Instant};
use support::*;

const TTL: u64 = 10;

/// Bootstrap three nodes and wait for a leader with two streaming replicas.
fn healthy_cluster() -> (Cluster, usize) {
    healthy_cluster_with(NodeSpec::default())
}

fn healthy_cluster_with(spec: NodeSpec) -> (Cluster, usize) {
    let mut c = Cluster::new(3, spec);
    c.start_all();
    let leader = c.wait_leader(Duration::from_secs(90));
    c.wait_streaming(leader, 2, Duration::from_secs(90));
    psql(
        c.nodes[leader].pg_port,
        "CREATE TABLE IF NOT EXISTS split_brain_probe (t timestamptz); \
         CREATE TABLE IF NOT EXISTS acked (id int primary key)",
    )
    .expect("create tables");
    (c, leader)
}

/// Write rows 1..=n one by one on `port`, each acknowledged.
fn write_rows(port: u16, from: i32, to: i32) {
    for i in from..=to {
        psql(port, &format!("INSERT INTO acked VALUES ({i})")).expect("acknowledged insert");
    }
}

fn count_rows(port: u16) -> Option<i64> {
    psql(port, "SELECT count(*) FROM acked").ok()?.parse().ok()
}

/// Wait for the replica at `port` to have `n` rows in `acked`.
fn wait_rows(port: u16, n: i64, timeout: Duration) {
    wait_for(&format!("{n} rows on port {port}"), timeout, || {
        (count_rows(port)? >= n).then_some(())
    });
}

fn others(c: &Cluster, not: usize) -> Vec<usize> {
    (0..c.nodes.len()).filter(|i| *i != not).collect()
}

/// The index of a node other than `old` that accepts writes.
fn wait_new_writable(c: &Cluster, old: usize, timeout: Duration) -> usize {
    wait_for("a new writable leader", timeout, || {
        c.writable().into_iter().find(|i| *i != old)
    })
}

/// Old node back as a streaming replica that serves the new leader's data.
fn assert_rejoins(c: &Cluster, old: usize, leader: usize, expect_rows: i64) {
    let port = c.nodes[old].pg_port;
    wait_for(
        "the old leader to run as a replica",
        Duration::from_secs(90),
        || (psql(port, "SELECT pg_is_in_recovery()").ok()? == "t").then_some(()),
    );
    let app = c.nodes[old].name.clone();
    wait_for("the old leader to stream", Duration::from_secs(60), || {
        let n = psql(
            c.nodes[leader].pg_port,
            &format!(
                "SELECT count(*) FROM pg_stat_replication WHERE application_name = '{app}' AND state = 'streaming'"
            ),
        )
        .ok()?;
        (n == "1").then_some(())
    });
    wait_rows(port, expect_rows, Duration::from_secs(30));
    // The REST view is refreshed once per loop.
    wait_for(
        "the rejoined node to report itself a healthy replica on /replica",
        Duration::from_secs(10),
        || (c.nodes[old].http_get("/replica")?.0 == 200).then_some(()),
    );
}

#[test]
fn three_nodes_bootstrap_one_leader_two_streaming_replicas() {
    let _g = serial();
    let (c, leader) = healthy_cluster();
    let leaders: Vec<usize> = (0..3)
        .filter(|i| {
            c.nodes[*i]
                .http_get("/leader")
                .is_some_and(|(s, _)| s == 200)
        })
        .collect();
    assert_eq!(
        leaders,
        vec![leader],
        "exactly one node holds the leader key"
    );
    assert_eq!(
        c.etcd.get("/service/test/leader").as_deref(),
        Some(c.nodes[leader].name.as_str()),
        "the leader key holds the plain member name, Patroni style"
    );
    let init = c
        .etcd
        .get("/service/test/initialize")
        .expect("initialize key");
    assert!(init.len() >= 10 && init.chars().all(|ch| ch.is_ascii_digit()));
    let member: serde_json::Value = serde_json::from_str(
        &c.etcd
            .get(&format!("/service/test/members/{}", c.nodes[leader].name))
            .expect("member key"),
    )
    .expect("member JSON");
    assert_eq!(member["role"], "primary");
    assert_eq!(
        member["api_url"],
        format!("http://127.0.0.1:{}/patroni", c.nodes[leader].api_port)
    );
    write_rows(c.nodes[leader].pg_port, 1, 10);
    for r in others(&c, leader) {
        assert_eq!(
            psql(c.nodes[r].pg_port, "SELECT pg_is_in_recovery()").as_deref(),
            Ok("t")
        );
        wait_rows(c.nodes[r].pg_port, 10, Duration::from_secs(20));
        assert_eq!(c.nodes[r].http_get("/replica").map(|(s, _)| s), Some(200));
        assert_eq!(c.nodes[r].http_get("/primary").map(|(s, _)| s), Some(503));
        let slots = psql(
            c.nodes[leader].pg_port,
            &format!(
                "SELECT count(*) FROM pg_replication_slots WHERE slot_name = '{}' AND active",
                c.nodes[r].name
            ),
        );
        assert_eq!(
            slots.as_deref(),
            Ok("1"),
            "replica streams through its slot"
        );
    }
}

#[test]
fn leader_host_crash_fails_over_within_ttl_and_old_leader_rejoins() {
    let _g = serial();
    let (mut c, old) = healthy_cluster();
    let port = c.nodes[old].pg_port;
    write_rows(port, 1, 200);
    for r in others(&c, old) {
        wait_rows(c.nodes[r].pg_port, 200, Duration::from_secs(20));
    }
    let t0 = Instant::now();
    c.nodes[old].crash();
    let new = wait_new_writable(&c, old, Duration::from_secs(TTL + 10));
    let took = t0.elapsed();
    eprintln!("crash failover: new leader writable after {took:?}");
    if took > Duration::from_secs(TTL + 2) {
        c.dump_logs();
    }
    assert!(
        took <= Duration::from_secs(TTL + 2),
        "failover took {took:?}, more than ttl + 2 s"
    );
    assert_eq!(
        count_rows(c.nodes[new].pg_port),
        Some(200),
        "no acknowledged write lost"
    );
    write_rows(c.nodes[new].pg_port, 201, 210);
    c.nodes[old].start();
    assert_rejoins(&c, old, new, 210);
}

#[test]
fn leader_sigterm_hands_over_within_3s_and_old_leader_rejoins() {
    let _g = serial();
    let (mut c, old) = healthy_cluster();
    write_rows(c.nodes[old].pg_port, 1, 50);
    let t0 = Instant::now();
    c.nodes[old].signal(Signal::SIGTERM);
    let new = wait_new_writable(&c, old, Duration::from_secs(15));
    let took = t0.elapsed();
    eprintln!("graceful switchover on SIGTERM: new leader writable after {took:?}");
    if took > Duration::from_secs(3) {
        c.dump_logs();
    }
    assert!(took <= Duration::from_secs(3), "took {took:?}");
    assert_eq!(count_rows(c.nodes[new].pg_port), Some(50));
    let status = c.nodes[old].wait_exit(Duration::from_secs(30));
    assert!(
        status.is_some_and(|s| s.success()),
        "regent exits cleanly on SIGTERM"
    );
    assert!(
        c.nodes[old].postmaster_pid().is_none(),
        "PostgreSQL stopped"
    );
    write_rows(c.nodes[new].pg_port, 51, 60);
    c.nodes[old].start();
    assert_rejoins(&c, old, new, 60);
}

#[test]
fn regent_sigkill_on_leader_never_two_writable_primaries() {
    let _g = serial();
    let (mut c, old) = healthy_cluster();
    let mon = SplitBrainMonitor::start(
        c.nodes
            .iter()
            .map(|n| (n.name.clone(), n.pg_port))
            .collect(),
    );
    // Kill only the supervisor: PostgreSQL and the guard keep running.
    c.nodes[old].signal(Signal::SIGKILL);
    let _ = c.nodes[old].wait_exit(Duration::from_secs(5));
    let new = wait_new_writable(&c, old, Duration::from_secs(TTL + 15));
    std::thread::sleep(Duration::from_secs(2)); // observe a little past the takeover
    let bad = mon.finish();
    assert!(bad.is_empty(), "two writable nodes at: {bad:?}");
    assert!(
        c.nodes[old].postmaster_pid().is_none()
            || psql(c.nodes[old].pg_port, "SELECT pg_is_in_recovery()").as_deref() != Ok("f"),
        "the orphaned primary was fenced"
    );
    write_rows(c.nodes[new].pg_port, 1, 5);
    c.nodes[old].start();
    assert_rejoins(&c, old, new, 5);
}

#[test]
fn regent_sigstop_on_leader_never_two_writable_primaries() {
    let _g = serial();
    let (c, old) = healthy_cluster();
    let mon = SplitBrainMonitor::start(
        c.nodes
            .iter()
            .map(|n| (n.name.clone(), n.pg_port))
            .collect(),
    );
    c.nodes[old].signal(Signal::SIGSTOP);
    let new = wait_new_writable(&c, old, Duration::from_secs(TTL + 15));
    std::thread::sleep(Duration::from_secs(TTL)); // frozen for longer than ttl
    c.nodes[old].signal(Signal::SIGCONT);
    write_rows(c.nodes[new].pg_port, 1, 5);
    assert_rejoins(&c, old, new, 5);
    let bad = mon.finish();
    assert!(bad.is_empty(), "two writable nodes at: {bad:?}");
}

#[test]
fn etcd_frozen_leader_stops_writes_before_ttl() {
    let _g = serial();
    let (c, leader) = healthy_cluster();
    let port = c.nodes[leader].pg_port;
    let t0 = Instant::now();
    c.etcd.signal(Signal::SIGSTOP);
    let stopped_after = wait_for(
        "the leader to stop taking writes",
        Duration::from_secs(TTL + 5),
        || {
            psql(port, "INSERT INTO split_brain_probe VALUES (now())")
                .is_err()
                .then(|| t0.elapsed())
        },
    );
    c.etcd.signal(Signal::SIGCONT);
    eprintln!("etcd frozen: leader stopped taking writes after {stopped_after:?}");
    assert!(
        stopped_after < Duration::from_secs(TTL),
        "writes stopped only after {stopped_after:?}"
    );
    // With etcd back, the cluster elects a leader again.
    let l = c.wait_leader(Duration::from_secs(60));
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
}

#[test]
fn quick_regent_restart_on_leader_costs_no_failover() {
    let _g = serial();
    let (mut c, leader) = healthy_cluster();
    let port = c.nodes[leader].pg_port;
    let timeline = psql(port, "SELECT timeline_id FROM pg_control_checkpoint()").expect("tl");
    let postmaster = c.nodes[leader].postmaster_pid().expect("postmaster runs");
    c.nodes[leader].signal(Signal::SIGKILL);
    let _ = c.nodes[leader].wait_exit(Duration::from_secs(5));
    c.nodes[leader].start();
    // Watch for longer than ttl: the lease of the killed process would have expired by then,
    // so the key must have moved to the new process's lease.
    let t0 = Instant::now();
    let mut writes = 0;
    while t0.elapsed() < Duration::from_secs(TTL + 5) {
        psql(port, "INSERT INTO acked VALUES (nextval('acked_seq'))")
            .or_else(|_| {
                psql(
                    port,
                    "CREATE SEQUENCE IF NOT EXISTS acked_seq; INSERT INTO acked VALUES (nextval('acked_seq'))",
                )
            })
            .expect("the primary keeps taking writes through the supervisor restart");
        writes += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(writes > 10);
    assert_eq!(
        c.leader(),
        Some(leader),
        "the same node is still the leader"
    );
    assert_eq!(
        c.nodes[leader].postmaster_pid(),
        Some(postmaster),
        "PostgreSQL was not restarted"
    );
    assert_eq!(
        psql(port, "SELECT timeline_id FROM pg_control_checkpoint()").as_deref(),
        Ok(timeline.as_str()),
        "no promotion happened anywhere"
    );
    for r in others(&c, leader) {
        assert_eq!(
            psql(c.nodes[r].pg_port, "SELECT pg_is_in_recovery()").as_deref(),
            Ok("t")
        );
    }
    assert_eq!(
        c.etcd.get("/service/test/leader").as_deref(),
        Some(c.nodes[leader].name.as_str())
    );
}

#[test]
fn synchronous_mode_promotes_only_the_synchronous_standby() {
    let _g = serial();
    let (mut c, leader) = healthy_cluster_with(NodeSpec {
        synchronous_mode: true,
        ..NodeSpec::default()
    });
    let lport = c.nodes[leader].pg_port;
    // The leader publishes a standby in /sync only once PostgreSQL reports it as `sync`.
    let sync_name = wait_for(
        "a synchronous standby in /sync",
        Duration::from_secs(30),
        || {
            let v: serde_json::Value =
                serde_json::from_str(&c.etcd.get("/service/test/sync")?).ok()?;
            (v["leader"] == c.nodes[leader].name.as_str()).then_some(())?;
            v["sync_standby"].as_str().map(str::to_string)
        },
    );
    let state = psql(
        lport,
        &format!(
            "SELECT sync_state FROM pg_stat_replication WHERE application_name = '{sync_name}'"
        ),
    );
    assert_eq!(state.as_deref(), Ok("sync"));
    let s = c
        .nodes
        .iter()
        .position(|n| n.name == sync_name)
        .expect("sync node");
    let a = (0..3)
        .find(|i| *i != leader && *i != s)
        .expect("async node");
    // `/sync` answers 200 on the synchronous standby once its loop has seen the key.
    wait_for(
        "/sync to answer 200 on the synchronous standby",
        Duration::from_secs(10),
        || (c.nodes[s].http_get("/sync")?.0 == 200).then_some(()),
    );
    assert_eq!(c.nodes[a].http_get("/sync").map(|(st, _)| st), Some(503));
    // Make the asynchronous replica the preferred candidate by priority: the policy must still
    // refuse it, because only the synchronous standby is certain to have every acknowledged commit.
    c.nodes[a].signal(Signal::SIGTERM);
    assert!(c.nodes[a].wait_exit(Duration::from_secs(30)).is_some());
    let cfg = std::fs::read_to_string(&c.nodes[a].config).expect("read config");
    std::fs::write(
        &c.nodes[a].config,
        cfg.replace(
            "  nofailover: false",
            "  nofailover: false\n  failover_priority: 10",
        ),
    )
    .expect("write config");
    c.nodes[a].start();
    c.wait_streaming(leader, 2, Duration::from_secs(60));
    write_rows(lport, 1, 100);
    c.nodes[leader].crash();
    let new = wait_new_writable(&c, leader, Duration::from_secs(TTL + 10));
    assert_eq!(new, s, "only the synchronous standby may be promoted");
    assert_eq!(
        count_rows(c.nodes[new].pg_port),
        Some(100),
        "no acknowledged commit lost"
    );
    // The new leader takes over /sync and makes the remaining replica its synchronous standby.
    wait_for(
        "the new leader to publish its synchronous standby",
        Duration::from_secs(30),
        || {
            let v: serde_json::Value =
                serde_json::from_str(&c.etcd.get("/service/test/sync")?).ok()?;
            (v["leader"] == c.nodes[new].name.as_str()
                && v["sync_standby"] == c.nodes[a].name.as_str())
            .then_some(())
        },
    );
}

/// The `sync` key's standbys, if the key is `leader`'s.
fn sync_key_members(c: &Cluster, leader: usize) -> Option<Vec<String>> {
    let v: serde_json::Value = serde_json::from_str(&c.etcd.get("/service/test/sync")?).ok()?;
    (v["leader"] == c.nodes[leader].name.as_str()).then_some(())?;
    let mut names: Vec<String> = v["sync_standby"]
        .as_str()
        .unwrap_or("")
        .split(',')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    names.sort();
    Some(names)
}

fn patch_config(c: &Cluster, node: usize, body: &str) {
    assert_eq!(
        c.nodes[node].patch_config(body),
        Some(200),
        "PATCH /config {body}"
    );
}

#[test]
fn synchronous_node_count_and_strict_mode_keep_commits_on_the_named_standbys() {
    let _g = serial();
    let (mut c, leader) = healthy_cluster_with(NodeSpec {
        synchronous_mode: true,
        ..NodeSpec::default()
    });
    let lport = c.nodes[leader].pg_port;
    let [r1, r2] = <[usize; 2]>::try_from(others(&c, leader)).expect("two replicas");
    let mut both = vec![c.nodes[r1].name.clone(), c.nodes[r2].name.clone()];
    both.sort();
    patch_config(&c, leader, r#"{"synchronous_node_count": 2}"#);
    // Both replicas become synchronous, and only then are both named in /sync.
    wait_for("both replicas in /sync", Duration::from_secs(30), || {
        (sync_key_members(&c, leader)? == both).then_some(())
    });
    let setting = psql(lport, "SHOW synchronous_standby_names").expect("show");
    assert!(setting.starts_with("2 ("), "{setting}");
    assert_eq!(
        psql(
            lport,
            "SELECT count(*) FROM pg_stat_replication WHERE sync_state = 'sync'"
        )
        .as_deref(),
        Ok("2"),
        "PostgreSQL waits for both standbys"
    );
    write_rows(lport, 1, 20);

    // A stopped standby leaves /sync, and commits go on with the other one.
    c.nodes[r2].signal(Signal::SIGTERM);
    assert!(c.nodes[r2].wait_exit(Duration::from_secs(30)).is_some());
    let only_r1 = vec![c.nodes[r1].name.clone()];
    wait_for(
        "/sync to shrink to one standby",
        Duration::from_secs(30),
        || (sync_key_members(&c, leader)? == only_r1).then_some(()),
    );
    wait_for(
        "synchronous_standby_names to name one standby",
        Duration::from_secs(30),
        || {
            let s = psql(lport, "SHOW synchronous_standby_names").ok()?;
            (s == format!("1 (\"{}\")", c.nodes[r1].name)).then_some(())
        },
    );
    write_rows(lport, 21, 30);

    // Strict mode: with no standby left, a commit waits instead of returning unreplicated.
    patch_config(&c, leader, r#"{"synchronous_mode_strict": true}"#);
    c.nodes[r1].signal(Signal::SIGTERM);
    assert!(c.nodes[r1].wait_exit(Duration::from_secs(30)).is_some());
    wait_for("/sync to name nobody", Duration::from_secs(30), || {
        sync_key_members(&c, leader)?.is_empty().then_some(())
    });
    wait_for(
        "synchronous_standby_names = '*'",
        Duration::from_secs(30),
        || (psql(lport, "SHOW synchronous_standby_names").ok()? == "*").then_some(()),
    );
    let mut insert = std::process::Command::new(bin_dir().join("psql"))
        .args([
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
        ])
        .args([
            "-p",
            &lport.to_string(),
            "-c",
            "INSERT INTO acked VALUES (31)",
        ])
        .env("PGPASSWORD", "secret")
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("psql");
    wait_for(
        "the commit to wait for a synchronous standby",
        Duration::from_secs(15),
        || {
            let n = psql(
                lport,
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'SyncRep'",
            )
            .ok()?;
            (n == "1").then_some(())
        },
    );
    assert!(
        insert.try_wait().expect("try_wait").is_none(),
        "the commit returned with no standby to replicate it"
    );
    // A standby comes back: the waiting commit returns, and the standby holds it.
    c.nodes[r1].start();
    let status = wait_for(
        "the waiting commit to return",
        Duration::from_secs(60),
        || insert.try_wait().ok()?,
    );
    assert!(status.success(), "the insert failed: {status}");
    wait_rows(c.nodes[r1].pg_port, 31, Duration::from_secs(30));
    assert_eq!(count_rows(lport), Some(31), "no commit lost or doubled");
    wait_for(
        "/sync to name the returned standby",
        Duration::from_secs(30),
        || (sync_key_members(&c, leader)? == only_r1).then_some(()),
    );
}

#[test]
fn a_synchronous_standby_tagged_nofailover_hands_the_role_to_one_that_can_take_over() {
    let _g = serial();
    let (c, leader) = healthy_cluster_with(NodeSpec {
        synchronous_mode: true,
        ..NodeSpec::default()
    });
    let first = wait_for("a synchronous standby", Duration::from_secs(30), || {
        let names = sync_key_members(&c, leader)?;
        (names.len() == 1).then(|| names[0].clone())
    });
    let x = c.nodes.iter().position(|n| n.name == first).expect("node");
    let y = (0..3)
        .find(|i| *i != leader && *i != x)
        .expect("other replica");
    // Tag it nofailover and reload: it could no longer take over, so the leader moves the
    // synchronous role to the replica that can.
    let cfg = std::fs::read_to_string(&c.nodes[x].config).expect("read config");
    std::fs::write(
        &c.nodes[x].config,
        cfg.replace("  nofailover: false", "  nofailover: true"),
    )
    .expect("write config");
    c.nodes[x].signal(Signal::SIGHUP);
    let other = vec![c.nodes[y].name.clone()];
    wait_for(
        "the other replica to become the synchronous standby",
        Duration::from_secs(30),
        || (sync_key_members(&c, leader)? == other).then_some(()),
    );
    let setting = psql(c.nodes[leader].pg_port, "SHOW synchronous_standby_names");
    assert_eq!(setting, Ok(format!("1 (\"{}\")", c.nodes[y].name)));
}

/// A synchronous standby that stops cleanly first has the leader stop waiting for it, so
/// commits do not hang until the leader's next loop notices (here loop_wait is 5 s).
#[test]
fn a_stopping_synchronous_standby_is_released_before_its_postgres_stops() {
    let _g = serial();
    let (mut c, leader) = healthy_cluster_with(NodeSpec {
        synchronous_mode: true,
        ttl: 20,
        loop_wait: 5,
        retry_timeout: 5,
        ..NodeSpec::default()
    });
    let first = wait_for("a synchronous standby", Duration::from_secs(60), || {
        let names = sync_key_members(&c, leader)?;
        (names.len() == 1).then(|| names[0].clone())
    });
    let s = c.nodes.iter().position(|n| n.name == first).expect("node");
    let other = (0..3).find(|i| *i != leader && *i != s).expect("other");
    c.nodes[s].signal(Signal::SIGTERM);
    assert!(c.nodes[s].wait_exit(Duration::from_secs(30)).is_some());
    // Its regent exits only after its PostgreSQL has stopped; by then the leader no longer
    // waits for it.
    let setting = psql(c.nodes[leader].pg_port, "SHOW synchronous_standby_names").expect("show");
    assert!(
        !setting.contains(&format!("\"{first}\"")),
        "the leader still waits for the stopped standby: {setting}"
    );
    assert!(
        c.nodes[s].log().contains("no longer a synchronous standby"),
        "the standby waited for the leader to release it"
    );
    // Commits go on, and the other replica takes the role.
    write_rows(c.nodes[leader].pg_port, 1, 5);
    let names = vec![c.nodes[other].name.clone()];
    wait_for(
        "the other replica to become the synchronous standby",
        Duration::from_secs(30),
        || (sync_key_members(&c, leader)? == names).then_some(()),
    );
}
