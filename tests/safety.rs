//! Safety scenarios from the review of the HA loop: each runs real etcd, PostgreSQL and `regent`
//! processes on loopback and asserts what an operator must be able to rely on (one writable
//! primary, no acknowledged commit lost, a healthy leader left alone).

mod support;

use std::time::{Duration, Instant};
use support::*;

/// A healthy leader at the timings operators use (Patroni's defaults `ttl 30 / loop_wait 10 /
/// retry_timeout 10`, and `20 / 10 / 5`) keeps its postmaster for several loops: every renewal
/// succeeds and the guard never fences it. With a 2 s HTTP/2 ping, etcd closed the idle
/// connection after ~8 s (GOAWAY "too_many_pings"): every other renewal failed with "channel
/// closed" and the guard stopped the primary about every 16 s.
#[test]
fn a_leader_at_slow_timings_keeps_its_postmaster() {
    let _g = serial();
    let timings = [(30, 10, 10), (20, 10, 5)];
    let clusters: Vec<Cluster> = timings
        .iter()
        .map(|&(ttl, loop_wait, retry_timeout)| {
            let mut c = Cluster::new(
                1,
                NodeSpec {
                    ttl,
                    loop_wait,
                    retry_timeout,
                    ..NodeSpec::default()
                },
            );
            c.start_all();
            c
        })
        .collect();
    let pids: Vec<i32> = clusters
        .iter()
        .map(|c| {
            c.wait_leader(Duration::from_secs(90));
            wait_for("the leader's postmaster", Duration::from_secs(10), || {
                c.nodes[0].postmaster_pid()
            })
        })
        .collect();
    // Five loops at loop_wait 10: long enough for an idle connection to be closed several times.
    let watch = Instant::now();
    while watch.elapsed() < Duration::from_secs(50) {
        for ((c, pid), t) in clusters.iter().zip(&pids).zip(&timings) {
            let now = c.nodes[0].postmaster_pid();
            assert_eq!(
                now,
                Some(*pid),
                "timing {t:?}: the leader's postmaster changed after {:?}\n{}",
                watch.elapsed(),
                c.nodes[0].log()
            );
            assert_eq!(
                c.nodes[0].http_get("/primary").map(|(s, _)| s),
                Some(200),
                "timing {t:?}: the node stopped leading after {:?}",
                watch.elapsed()
            );
        }
        // Sampling, not synchronisation: the assertion is about every moment of the window.
        std::thread::sleep(Duration::from_secs(1));
    }
    for (c, t) in clusters.iter().zip(&timings) {
        let log = c.nodes[0].log();
        for bad in ["could not renew the etcd lease", "stopped the primary"] {
            assert!(
                !log.contains(bad),
                "timing {t:?}: the log says {bad:?}\n{log}"
            );
        }
    }
}

/// How many HA loops the node has finished (`regent_ha_loop_duration_seconds_count`).
fn loops(n: &Node) -> u64 {
    n.http_get("/metrics")
        .and_then(|(_, body)| {
            body.lines()
                .find(|l| l.starts_with("regent_ha_loop_duration_seconds_count"))
                .and_then(|l| l.rsplit(' ').next())
                .and_then(|v| v.parse::<f64>().ok())
        })
        .map_or(0, |v| v as u64)
}

/// Insert rows into `acked` on `port` every 100 ms until writes have failed for 3 s in a row
/// or `until` has passed; the time of the last acknowledged insert.
fn last_write(port: u16, until: Instant) -> Option<Instant> {
    let mut last_ok: Option<Instant> = None;
    let mut failing_since: Option<Instant> = None;
    let mut id = 1_000_000;
    while Instant::now() < until {
        id += 1;
        match psql(port, &format!("INSERT INTO acked VALUES ({id})")) {
            Ok(_) => {
                last_ok = Some(Instant::now());
                failing_since = None;
            }
            Err(_) => {
                let since = *failing_since.get_or_insert_with(Instant::now);
                if since.elapsed() > Duration::from_secs(3) {
                    break;
                }
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    last_ok
}

/// Item 1 of the safety review: the write deadline must come from the TTL etcd granted the
/// lease that carries the leader key, not from the configured `ttl`. After `PATCH /config
/// {"ttl": 30}` on a cluster at ttl 10, keep-alives still renew the old lease to 10 s; a leader
/// whose deadline assumed 30 s kept taking writes for ~25 s after etcd stopped answering,
/// long after its leader key could have expired and another node been promoted. Here etcd is
/// frozen and every acknowledged write must come before the leader key's lease can expire.
#[test]
fn a_raised_ttl_never_lets_the_leader_write_past_its_lease() {
    let _g = serial();
    let (c, leader) = Cluster::healthy(
        1,
        NodeSpec {
            ttl: 10,
            loop_wait: 1,
            retry_timeout: 3,
            ..NodeSpec::default()
        },
    );
    let n = &c.nodes[leader];
    psql(n.pg_port, "CREATE TABLE acked (id int primary key)").expect("create table");
    assert_eq!(n.patch_config(r#"{"ttl": 30}"#), Some(200));
    let seen = loops(n);
    wait_for(
        "three loops after the change",
        Duration::from_secs(30),
        || (loops(n) >= seen + 3).then_some(()),
    );
    let (lease, left) = c
        .etcd
        .lease_left("/service/test/leader")
        .expect("the leader key is on a lease");
    // etcd reports whole seconds left: the lease is gone at most a second after this.
    let expiry = Instant::now() + Duration::from_secs(u64::try_from(left).unwrap_or(0) + 1);
    c.etcd.signal(nix::sys::signal::Signal::SIGSTOP);
    let last = last_write(n.pg_port, expiry + Duration::from_secs(5));
    c.etcd.signal(nix::sys::signal::Signal::SIGCONT);
    let last = last.expect("the leader took writes before etcd froze");
    assert!(
        last <= expiry,
        "the leader acknowledged a write {:?} after its leader key's lease {lease:x} \
         ({left} s left when etcd froze) could have expired",
        last.duration_since(expiry)
    );
}

/// A healthy three-node cluster in synchronous mode: (the cluster, the leader, its synchronous
/// standby, the asynchronous replica), with tables `acked` and `split_brain_probe` created and
/// replicated to both replicas.
fn synchronous_cluster() -> (Cluster, usize, usize, usize) {
    let (c, leader) = Cluster::healthy(
        3,
        NodeSpec {
            synchronous_mode: true,
            ..NodeSpec::default()
        },
    );
    let leader_name = c.nodes[leader].name.clone();
    let sync_name = wait_for(
        "a synchronous standby in /sync",
        Duration::from_secs(30),
        || {
            let v: serde_json::Value =
                serde_json::from_str(&c.etcd.get("/service/test/sync")?).ok()?;
            (v["leader"] == leader_name.as_str()).then_some(())?;
            v["sync_standby"].as_str().map(str::to_string)
        },
    );
    let s = c
        .nodes
        .iter()
        .position(|n| n.name == sync_name)
        .expect("sync node");
    let a = (0..3)
        .find(|i| *i != leader && *i != s)
        .expect("async node");
    psql(
        c.nodes[leader].pg_port,
        "CREATE TABLE acked (id int primary key); CREATE TABLE split_brain_probe (t timestamptz)",
    )
    .expect("create tables");
    wait_for(
        "the tables on both replicas",
        Duration::from_secs(30),
        || {
            [s, a]
                .iter()
                .all(|i| {
                    psql(
                        c.nodes[*i].pg_port,
                        "SELECT count(*) FROM pg_class WHERE relname = 'split_brain_probe'",
                    )
                    .is_ok_and(|n| n == "1")
                })
                .then_some(())
        },
    );
    (c, leader, s, a)
}

/// Item 3 of the safety review: in synchronous mode a manual failover to the asynchronous
/// replica, after the leader crashed, must not promote it while it lacks commits that the
/// synchronous standby acknowledged. The asynchronous replica's walsender is frozen while rows
/// are committed (the synchronous standby acknowledges them), then the leader crashes and an
/// operator asks for a failover to the lagging replica. Regent used to answer "Successfully
/// failed over" and lose those rows; the request must be refused (412, naming the standby and
/// the gap) and the synchronous standby take over with every row.
#[test]
fn a_manual_failover_in_synchronous_mode_never_loses_acknowledged_commits() {
    let _g = serial();
    let (mut c, leader, s, a) = synchronous_cluster();
    let lport = c.nodes[leader].pg_port;
    let sync_name = c.nodes[s].name.clone();
    let a_name = c.nodes[a].name.clone();
    let walsender: i32 = psql(
        lport,
        &format!("SELECT pid FROM pg_stat_replication WHERE application_name = '{a_name}'"),
    )
    .expect("walsender pid")
    .parse()
    .expect("a pid");
    let stop =
        |sig| nix::sys::signal::kill(nix::unistd::Pid::from_raw(walsender), sig).expect("signal");
    stop(nix::sys::signal::Signal::SIGSTOP);
    for id in 1..=50 {
        psql(lport, &format!("INSERT INTO acked VALUES ({id})")).expect("commit");
    }
    c.nodes[leader].crash();
    let (status, body) = http_request_at(
        &c.nodes[a].host,
        c.nodes[a].api_port,
        "POST",
        "/failover",
        Some(&format!(r#"{{"candidate": "{a_name}"}}"#)),
        Duration::from_secs(60),
    )
    .expect("an answer to POST /failover");
    assert_eq!(
        status, 412,
        "a failover to the lagging replica must be refused: {body}"
    );
    assert!(
        body.contains(&sync_name),
        "the answer names the standby: {body}"
    );
    let new = wait_new_writable(&c, leader, Duration::from_secs(40));
    assert_eq!(new, s, "only the synchronous standby may be promoted");
    assert_eq!(
        psql(c.nodes[new].pg_port, "SELECT count(*) FROM acked").as_deref(),
        Ok("50"),
        "no acknowledged commit lost"
    );
}

/// The index of a node other than `old` that accepts a write, once one does.
fn wait_new_writable(c: &Cluster, old: usize, timeout: Duration) -> usize {
    wait_for("a new writable leader", timeout, || {
        c.writable().into_iter().find(|i| *i != old)
    })
}

/// Item 4 of the safety review: a second process started with a copy of a running node's
/// configuration (other ports, an empty data directory) must refuse to start, as Patroni does
/// ("Can't start; there is already a node named ..."), and must never touch the leader key.
/// Regent's impostor used to release the real leader's key ("data directory is empty but the
/// leader key has my name"), demoting the real leader.
#[test]
fn a_second_node_with_the_same_name_refuses_to_start() {
    let _g = serial();
    let (c, leader) = Cluster::healthy(1, NodeSpec::default());
    let real = &c.nodes[leader];
    let postmaster = real.postmaster_pid().expect("the leader's postmaster");
    let key_before = c
        .etcd
        .lease_left("/service/test/leader")
        .expect("leader key")
        .0;
    let other = tempfile::Builder::new()
        .prefix("regent-it-dup-")
        .tempdir()
        .expect("tempdir");
    std::fs::set_permissions(
        other.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod");
    let mut dup = Node::new(
        other.path(),
        &real.name,
        &[c.etcd.endpoint()],
        &NodeSpec::default(),
    );
    dup.start();
    let status = dup.wait_exit(Duration::from_secs(30));
    let log = dup.log();
    assert!(
        status.is_some_and(|s| !s.success()),
        "the second {} did not exit with an error ({status:?}):\n{log}",
        real.name
    );
    assert!(
        log.contains(&format!("already a node named '{}'", real.name)),
        "the refusal names the node:\n{log}"
    );
    assert_eq!(
        c.etcd.lease_left("/service/test/leader").map(|(l, _)| l),
        Some(key_before),
        "the leader key is untouched"
    );
    assert_eq!(
        real.postmaster_pid(),
        Some(postmaster),
        "the leader kept running"
    );
    assert_eq!(real.http_get("/primary").map(|(s, _)| s), Some(200));
}

/// Whether the node at `port` accepts a write right now.
fn writable_at(port: u16) -> bool {
    psql(
        port,
        "INSERT INTO split_brain_probe VALUES (now()) RETURNING 1",
    )
    .is_ok_and(|s| s == "1")
}

/// Item 2 of the safety review: PostgreSQL starts writable only while the node holds the leader
/// key on a live lease. A hand-over whose target never confirms the last WAL is aborted and the
/// old leader starts again; here its lease is revoked while it waits, so the leader key is gone
/// and the old leader must come back read-only (the next loop decides). Regent used to start it
/// as primary regardless, with no leader key.
#[test]
fn an_aborted_hand_over_without_the_lease_starts_read_only() {
    let _g = serial();
    let (c, leader) = Cluster::healthy(2, NodeSpec::default());
    let target = 1 - leader;
    let (l, t) = (&c.nodes[leader], &c.nodes[target]);
    psql(l.pg_port, "CREATE TABLE split_brain_probe (t timestamptz)").expect("create table");
    wait_for("the table on the replica", Duration::from_secs(30), || {
        psql(
            t.pg_port,
            "SELECT count(*) FROM pg_class WHERE relname = 'split_brain_probe'",
        )
        .ok()
        .filter(|n| n == "1")
    });
    // The target stops receiving: it will never confirm the shutdown checkpoint.
    let receiver: i32 = psql(t.pg_port, "SELECT pid FROM pg_stat_wal_receiver")
        .expect("walreceiver")
        .parse()
        .expect("a pid");
    let signal = |sig| {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(receiver), sig);
    };
    signal(nix::sys::signal::Signal::SIGSTOP);
    let (lease, _) = c
        .etcd
        .lease_left("/service/test/leader")
        .expect("leader key");
    let body = format!(r#"{{"leader": "{}", "candidate": "{}"}}"#, l.name, t.name);
    let (host, api) = (l.host.clone(), l.api_port);
    let request = std::thread::spawn(move || {
        http_request_at(
            &host,
            api,
            "POST",
            "/switchover",
            Some(&body),
            Duration::from_secs(60),
        )
    });
    wait_for(
        "the leader to stop PostgreSQL for the hand-over",
        Duration::from_secs(20),
        || l.postmaster_pid().is_none().then_some(()),
    );
    let revoked = std::process::Command::new("etcdctl")
        .args(["--endpoints", &c.etcd.endpoint(), "lease", "revoke"])
        .arg(format!("{lease:x}"))
        .output()
        .expect("etcdctl lease revoke");
    assert!(revoked.status.success(), "{revoked:?}");
    // The hand-over waits 5 s for the target, then gives up. Watch the old leader from then
    // on: whenever it takes a write, the leader key must be its own.
    let watch = Instant::now();
    while watch.elapsed() < Duration::from_secs(15) {
        if writable_at(l.pg_port) {
            let key = c.etcd.get("/service/test/leader");
            assert_eq!(
                key.as_deref(),
                Some(l.name.as_str()),
                "{} took a write without holding the leader key, {:?} after its lease was revoked",
                l.name,
                watch.elapsed()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    signal(nix::sys::signal::Signal::SIGCONT);
    let _ = request.join();
}

/// Item 7 of the safety review: the fencing guard outlives a SIGTERM (a service manager stopping
/// regent's process group): while a deadline is armed, only the guard stands between a frozen
/// or dead supervisor and a primary past its lease.
#[test]
fn the_fencing_guard_ignores_sigterm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("n.regent-guard.state");
    let pidfile = dir.path().join("n.regent-guard.pid");
    // Armed far ahead, owned by this test process: the guard has something to guard.
    std::fs::write(
        &state,
        format!("armed {} {}\n", u64::MAX / 2, std::process::id()),
    )
    .expect("state");
    let mut guard = std::process::Command::new(REGENT)
        .arg("guard")
        .arg("--state")
        .arg(&state)
        .arg("--pidfile")
        .arg(&pidfile)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start regent guard");
    wait_for("the guard's pid file", Duration::from_secs(10), || {
        std::fs::read_to_string(&pidfile)
            .ok()
            .filter(|p| p.trim() == guard.id().to_string())
    });
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(guard.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("SIGTERM");
    // A negative: the guard must still run a while later. SIGTERM's default action is
    // immediate, so half a second is ample.
    std::thread::sleep(Duration::from_millis(500));
    let exited = guard.try_wait().expect("try_wait");
    let _ = guard.kill();
    let _ = guard.wait();
    assert!(exited.is_none(), "the guard died of SIGTERM: {exited:?}");
}

/// Item 6b of the safety review: an asynchronous replica that received WAL past the point where
/// the new leader's timeline forked off must be rewound and stream again, and serve no reads
/// meanwhile. The synchronous standby's walsender is frozen, so a commit waits for it while its
/// WAL reaches the asynchronous replica; the leader crashes and the synchronous standby (without
/// that WAL) is promoted. Regent used to leave the diverged replica "following" the new leader
/// forever, never streaming, with `/replica` answering 200.
#[test]
fn a_replica_past_the_fork_point_is_rewound_and_serves_no_reads_meanwhile() {
    let _g = serial();
    let (mut c, leader, s, a) = synchronous_cluster();
    let lport = c.nodes[leader].pg_port;
    let sync_name = c.nodes[s].name.clone();
    let a_name = c.nodes[a].name.clone();
    let sync_sender: i32 = psql(
        lport,
        &format!("SELECT pid FROM pg_stat_replication WHERE application_name = '{sync_name}'"),
    )
    .expect("walsender")
    .parse()
    .expect("pid");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(sync_sender),
        nix::sys::signal::Signal::SIGSTOP,
    )
    .expect("SIGSTOP");
    // This commit waits for the frozen synchronous standby; its WAL reaches the async replica.
    let before: String = psql(lport, "SELECT pg_current_wal_lsn()").expect("lsn");
    let blocked = std::thread::spawn(move || {
        psql(lport, "INSERT INTO acked SELECT generate_series(1, 1000)")
    });
    wait_for(
        "the asynchronous replica to receive the unacknowledged commit",
        Duration::from_secs(30),
        || {
            psql(
                c.nodes[a].pg_port,
                &format!("SELECT pg_last_wal_receive_lsn() > '{before}'"),
            )
            .ok()
            .filter(|t| t == "t")
        },
    );
    c.nodes[leader].crash();
    let _ = blocked.join();
    let new = wait_for(
        "the synchronous standby to take over",
        Duration::from_secs(40),
        || c.writable().into_iter().find(|i| *i == s),
    );
    assert_eq!(new, s);
    let streaming = |c: &Cluster| {
        psql(
            c.nodes[s].pg_port,
            &format!(
                "SELECT count(*) FROM pg_stat_replication WHERE application_name = '{a_name}' AND state = 'streaming'"
            ),
        )
        .is_ok_and(|n| n == "1")
    };
    // The replica's loop publishes what it saw last: once it has run twice since the new
    // leader took over, it must not serve reads until it streams from the new leader.
    let seen = loops(&c.nodes[a]);
    wait_for("two loops on the replica", Duration::from_secs(30), || {
        (loops(&c.nodes[a]) >= seen + 2).then_some(())
    });
    let started = Instant::now();
    while !streaming(&c) {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{a_name} never streams from the new leader:\n{}",
            c.nodes[a].log()
        );
        if let Some((200, _)) = c.nodes[a].http_get("/replica") {
            assert!(
                streaming(&c),
                "{a_name} answers /replica 200 while it cannot stream from the new leader"
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    wait_for(
        "/replica 200 once it streams",
        Duration::from_secs(10),
        || (c.nodes[a].http_get("/replica")?.0 == 200).then_some(()),
    );
}

/// Item 11 of the safety review: a replica whose PostgreSQL cannot start (here its own
/// configuration loads a library that does not exist) must not re-clone in a loop, moving a
/// full copy aside each time until the disk is full. At most one copy is moved aside for the
/// cause, starts back off, and the cause (the PostgreSQL log's last lines) shows in the REST
/// API and in the member key's state ("start failed").
#[test]
fn a_replica_that_cannot_start_backs_off_and_reports_why() {
    let _g = serial();
    let mut c = Cluster::new(1, NodeSpec::default());
    c.start_all();
    c.wait_leader(Duration::from_secs(90));
    let mut broken = Node::new(
        c.tmp.path(),
        "pg2",
        &[c.etcd.endpoint()],
        &NodeSpec {
            parameters: vec![(
                "shared_preload_libraries".into(),
                "regent_no_such_library".into(),
            )],
            ..NodeSpec::default()
        },
    );
    broken.start();
    let moved = |n: &Node| {
        std::fs::read_dir(&n.dir)
            .map(|it| {
                it.flatten()
                    .filter(|e| e.file_name().to_string_lossy().contains("regent-moved"))
                    .count()
            })
            .unwrap_or(0)
    };
    // Long enough for a dozen loops at loop_wait 1: before, every loop moved a copy aside.
    let watch = Instant::now();
    while watch.elapsed() < Duration::from_secs(40) {
        assert!(
            moved(&broken) <= 1,
            "{} copies of the data directory moved aside after {:?}",
            moved(&broken),
            watch.elapsed()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let (_, doc) = broken.http_get("/patroni").expect("/patroni answers");
    assert!(
        doc.contains("regent_no_such_library"),
        "the status document names the cause: {doc}"
    );
    let member = c.etcd.get("/service/test/members/pg2").expect("member key");
    assert!(
        member.contains("\"start failed\""),
        "the member key says start failed: {member}"
    );
    assert!(
        broken
            .child
            .as_mut()
            .is_some_and(|ch| ch.try_wait().ok().flatten().is_none())
    );
}

/// Item 1 of the safety review: the cluster's `config` key is validated on every read like a
/// local file. A `ttl` no lease should have, written straight into etcd (the REST API and
/// `ctl edit-config` refuse it), is logged and ignored: the leader keeps its lease's TTL.
#[test]
fn a_bad_config_key_in_etcd_is_logged_and_ignored() {
    let _g = serial();
    let (c, leader) = Cluster::healthy(1, NodeSpec::default());
    let n = &c.nodes[leader];
    assert_eq!(n.patch_config(r#"{"ttl": 1000000000}"#), Some(400));
    let current = c.etcd.get("/service/test/config").expect("config key");
    let mut bad: serde_json::Value = serde_json::from_str(&current).expect("json");
    bad["ttl"] = serde_json::json!(1_000_000_000u64);
    c.etcd.put("/service/test/config", &bad.to_string());
    let seen = loops(n);
    wait_for(
        "three loops after the write",
        Duration::from_secs(30),
        || (loops(n) >= seen + 3).then_some(()),
    );
    let (_, left) = c
        .etcd
        .lease_left("/service/test/leader")
        .expect("the leader key is on a lease");
    assert!(
        left <= 10,
        "the leader's lease took the bad ttl: {left} s left"
    );
    assert!(
        n.log().contains("the cluster's config key cannot be used"),
        "the refusal is logged:\n{}",
        n.log()
    );
}

/// Item 9 of the safety review: a policy's SQL probes run as an unprivileged role, never as
/// the superuser. A read-only transaction still allows `COPY ... TO PROGRAM` (a shell as the
/// PostgreSQL OS user), `pg_promote()` and `pg_terminate_backend()`; from a probe, all three
/// must fail. The test guest reports its probes' results in its health verdict.
#[test]
fn sql_probes_cannot_run_programs_promote_or_terminate_backends() {
    let _g = serial();
    let mut c = Cluster::new(1, NodeSpec::default());
    let dir = c.tmp.path().join("policies");
    std::fs::create_dir_all(&dir).expect("policy dir");
    std::fs::copy(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/test-guest.wasm"),
        dir.join("test-guest.wasm"),
    )
    .expect("copy the test guest");
    let marker = c.tmp.path().join("copy-to-program-ran");
    std::fs::write(
        dir.join("test-guest.toml"),
        format!(
            "name = \"test-guest\"\ncomponent = \"test-guest.wasm\"\nhooks = [\"check-health\", \"rank-candidates\"]\n\
             capabilities = [\"sql-probe\"]\n\n\
             [[probes]]\nname = \"program\"\nsql = \"COPY (SELECT 1) TO PROGRAM 'touch {}'\"\ntimeout_ms = 400\n\n\
             [[probes]]\nname = \"promote\"\nsql = \"SELECT pg_promote(false)\"\ntimeout_ms = 400\n\n\
             [[probes]]\nname = \"terminate\"\nsql = \"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'regent-victim'\"\ntimeout_ms = 400\n",
            marker.display()
        ),
    )
    .expect("manifest");
    let cfg = std::fs::read_to_string(&c.nodes[0].config).expect("config");
    std::fs::write(
        &c.nodes[0].config,
        format!(
            "{cfg}\nregent:\n  policies_dir: {}\n  policies: [test-guest]\n",
            dir.display()
        ),
    )
    .expect("config");
    c.start_all();
    let leader = c.wait_leader(Duration::from_secs(90));
    let n = &c.nodes[leader];
    // A superuser session the probe would like to end.
    let mut victim = std::process::Command::new(bin_dir().join("psql"))
        .args([
            "-X",
            "-q",
            "-h",
            "127.0.0.1",
            "-p",
            &n.pg_port.to_string(),
            "-U",
            "postgres",
        ])
        .args(["-c", "SELECT pg_sleep(600)"])
        .env("PGPASSWORD", "secret")
        .env("PGAPPNAME", "regent-victim")
        .spawn()
        .expect("psql");
    let victim_running = || {
        psql(
            n.pg_port,
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'regent-victim'",
        )
        .is_ok_and(|x| x == "1")
    };
    wait_for("the victim session", Duration::from_secs(10), || {
        victim_running().then_some(())
    });
    // Results from a loop that ran after the victim connected.
    let seen = loops(n);
    wait_for(
        "two loops with the victim connected",
        Duration::from_secs(30),
        || (loops(n) >= seen + 2).then_some(()),
    );
    let (_, body) = n.http_get("/patroni").expect("/patroni");
    let doc: serde_json::Value = serde_json::from_str(&body).expect("json");
    let verdict = doc["policy"]["health"]["reason"]
        .as_str()
        .unwrap_or_else(|| panic!("no health verdict with the probes' results: {doc}"))
        .to_string();
    let victim_survived = victim_running();
    let _ = victim.kill();
    let _ = victim.wait();
    assert!(!marker.exists(), "COPY TO PROGRAM ran a program: {verdict}");
    for probe in ["program", "promote"] {
        let part = verdict
            .split(';')
            .find(|p| p.contains(&format!("{probe}=")))
            .unwrap_or_else(|| panic!("no result for {probe}: {verdict}"));
        assert!(
            part.contains("permission denied") || part.contains("must be superuser"),
            "probe {probe} was allowed: {part}"
        );
    }
    assert!(
        victim_survived,
        "a probe terminated a superuser's session: {verdict}"
    );
}

/// Item 10 of the safety review: the REST API must never cost the HA loop its file descriptors.
/// Regent runs with an open-file limit of 256 (as `ulimit -n` on a small host); one client
/// opens 400 connections to the leader's REST port, each sending a request line and a header
/// but never the end of its headers, and keeps them open for several TTLs. The API used to
/// accept them all, without a header timeout: the process ran out of descriptors, could not
/// read its data directory, took that for a foreign directory and exited, and the guard
/// stopped the primary. Now at most `MAX_CONNECTIONS` (100) are served at once, the rest wait
/// in the kernel's accept queue, and a connection that does not complete its headers within
/// the header timeout is closed.
#[test]
fn many_idle_rest_connections_never_cost_the_leader_its_lease() {
    use std::io::{Read, Write};
    let _g = serial();
    let mut c = Cluster::new(1, NodeSpec::default());
    c.nodes[0].open_files = Some(256);
    c.start_all();
    c.wait_leader(Duration::from_secs(90));
    let n = &c.nodes[0];
    let postmaster = wait_for("the leader's postmaster", Duration::from_secs(10), || {
        n.postmaster_pid()
    });
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], n.api_port));
    let opened = Instant::now();
    let mut idle = Vec::new();
    for _ in 0..400 {
        let Ok(mut s) = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
            continue;
        };
        if s.write_all(b"GET /primary HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            .is_ok()
        {
            idle.push(s);
        }
    }
    // A health check while they are open (it waits its turn in the accept queue).
    let (host, port) = (n.host.clone(), n.api_port);
    let probe = std::thread::spawn(move || {
        let sent = Instant::now();
        let answer = http_request_at(
            &host,
            port,
            "GET",
            "/primary",
            None,
            Duration::from_secs(40),
        );
        (answer.map(|(s, _)| s), sent.elapsed())
    });
    // Several TTLs (10 s) at loop_wait 1: the leader keeps its lease and its postmaster.
    while opened.elapsed() < Duration::from_secs(30) {
        let exited = c.nodes[0].wait_exit(Duration::ZERO);
        let node = &c.nodes[0];
        assert!(
            exited.is_none(),
            "regent exited ({exited:?}) {:?} after the connections were opened\n{}",
            opened.elapsed(),
            node.log()
        );
        assert_eq!(
            node.postmaster_pid(),
            Some(postmaster),
            "the leader's postmaster changed {:?} after the connections were opened\n{}",
            opened.elapsed(),
            node.log()
        );
        assert_eq!(
            c.leader_key().as_deref(),
            Some("pg1"),
            "the leader key is gone {:?} after the connections were opened\n{}",
            opened.elapsed(),
            node.log()
        );
        std::thread::sleep(Duration::from_secs(1));
    }
    assert!(idle.len() > 300, "only {} connections opened", idle.len());
    let (status, waited) = probe.join().expect("probe");
    let node = &c.nodes[0];
    eprintln!(
        "/primary answered {status:?} after {waited:?}, {} idle connections open",
        idle.len()
    );
    assert_eq!(
        status,
        Some(200),
        "/primary did not answer 200 while the idle connections were open (after {waited:?})\n{}",
        node.log()
    );
    // The server closed the connections that never completed their headers.
    let closed = idle
        .iter()
        .filter(|s| {
            let mut s: &std::net::TcpStream = s;
            let _ = s.set_read_timeout(Some(Duration::from_millis(100)));
            let mut buf = [0u8; 512];
            // Closed: end of file (after whatever the server sent) or a reset; open: no data.
            loop {
                match s.read(&mut buf) {
                    Ok(0) => return true,
                    Ok(_) => {}
                    Err(e) => {
                        return !matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        );
                    }
                }
            }
        })
        .count();
    assert_eq!(
        closed,
        idle.len(),
        "the server left connections without complete headers open for 30 s"
    );
    drop(idle);
    wait_for("/primary to answer 200", Duration::from_secs(10), || {
        node.http_get("/primary")
            .filter(|(s, _)| *s == 200)
            .map(|_| ())
    });
    assert_eq!(node.postmaster_pid(), Some(postmaster));
    let log = node.log();
    assert!(
        c.nodes[0].wait_exit(Duration::ZERO).is_none(),
        "regent exited\n{log}"
    );
    for bad in ["Too many open files", "stopped the primary"] {
        assert!(!log.contains(bad), "the log says {bad:?}\n{log}");
    }
}

/// A replication password with every character PostgreSQL's parsers treat specially (`'`, `\`,
/// `"`, `=`, spaces, a tab, a line break, non-ASCII) reaches PostgreSQL intact through each way
/// regent hands it over: the `CREATE ROLE ... PASSWORD` literal (with `standard_conforming_strings`
/// off, so a plain `'...'` would read `\` as an escape), `PGPASSWORD` for pg_basebackup, and
/// `primary_conninfo` in `regent.conf`, which the replica's server reads with the configuration
/// file's scanner and its walreceiver with libpq's conninfo parser. The replica streams only if
/// all of them agree. Before: `regent.conf` doubled only `'`, so the server refused the file
/// ("syntax error") or read a different password.
#[test]
fn a_replication_password_full_of_quotes_and_backslashes_reaches_postgresql_intact() {
    let _g = serial();
    let password = "it's a \\ back\\slash = \"quoted\" ü\ttab\nline \\'";
    let mut c = Cluster::new(
        2,
        NodeSpec {
            replication_password: password.into(),
            parameters: vec![("standard_conforming_strings".into(), "off".into())],
            ..NodeSpec::default()
        },
    );
    c.start_all();
    let leader = c.wait_leader(Duration::from_secs(90));
    let replica = 1 - leader;
    let streaming = (|| {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            let n = psql(
                c.nodes[leader].pg_port,
                // The walreceiver on the member slot, not pg_basebackup's WAL stream.
                "SELECT count(*) FROM pg_stat_replication r JOIN pg_replication_slots s \
                 ON s.active_pid = r.pid WHERE r.state = 'streaming' AND NOT s.temporary",
            );
            if n.as_deref().is_ok_and(|n| n != "0") {
                return true;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        false
    })();
    if !streaming {
        c.dump_logs();
        let node = &c.nodes[replica];
        let pg_log = node.dir.join(format!("{}-postgresql.log", node.name));
        let text = std::fs::read_to_string(&pg_log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(20).collect();
        eprintln!("===== {} (last 20 lines) =====", pg_log.display());
        for l in tail.into_iter().rev() {
            eprintln!("{l}");
        }
    }
    assert!(
        streaming,
        "the replica {} never streamed with the configured password (logs above)",
        c.nodes[replica].name
    );
    // What the replica's server read from regent.conf, as libpq will parse it.
    let conninfo = psql(c.nodes[replica].pg_port, "SHOW primary_conninfo").expect("SHOW");
    eprintln!(
        "{} streams; primary_conninfo as its server read it: {conninfo:?}",
        c.nodes[replica].name
    );
    let quoted = format!(
        "password='{}'",
        password.replace('\\', "\\\\").replace('\'', "\\'")
    );
    assert!(
        conninfo.contains(&quoted),
        "primary_conninfo as the server read it: {conninfo:?}, expected it to hold {quoted:?}"
    );
}

/// The uid a process runs as (`/proc/<pid>/status`, real uid).
fn uid_of(pid: i32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Safety review item 8: running `regent` as the PostgreSQL OS user is the recommended setup
/// (as with Patroni): whatever a database superuser can do as that user (`COPY ... TO
/// PROGRAM`), root is out of reach. A cluster whose every `regent` runs as `postgres`, in
/// directories `postgres` owns, bootstraps and a replica streams; regent, its guard and
/// PostgreSQL all run as `postgres`, and every file they made is `postgres`'s.
#[test]
fn a_cluster_runs_with_regent_as_the_postgresql_os_user() {
    if !root_or_skip(
        "a_cluster_runs_with_regent_as_the_postgresql_os_user",
        "needs root to start regent as the `postgres` OS user (run the tests as root, as .ci/run does)",
    ) {
        return;
    }
    let pg = nix::unistd::User::from_name("postgres")
        .expect("look up user postgres")
        .expect("the `postgres` OS user exists (Debian's postgresql package creates it)");
    let _g = serial();
    let mut c = Cluster::new(2, NodeSpec::default());
    for n in &mut c.nodes {
        n.run_as = Some("postgres".into());
    }
    c.start_all();
    let leader = c.wait_leader(Duration::from_secs(90));
    c.wait_streaming(leader, 1, Duration::from_secs(90));
    let replica = 1 - leader;
    psql(
        c.nodes[leader].pg_port,
        "CREATE TABLE as_postgres (v int); INSERT INTO as_postgres VALUES (1)",
    )
    .expect("write on the leader");
    wait_for("the row on the replica", Duration::from_secs(30), || {
        psql(c.nodes[replica].pg_port, "SELECT v FROM as_postgres")
            .ok()
            .filter(|v| v == "1")
    });
    let uid = pg.uid.as_raw();
    for n in &c.nodes {
        let guard = std::fs::read_to_string(n.dir.join(format!("{}.regent-guard.pid", n.name)))
            .ok()
            .and_then(|t| t.trim().parse::<i32>().ok());
        let procs = [
            ("regent", Some(n.pid())),
            ("its guard", guard),
            ("its postmaster", n.postmaster_pid()),
        ];
        for (what, pid) in procs {
            let pid = pid.unwrap_or_else(|| panic!("{}: no pid for {what}", n.name));
            assert_eq!(uid_of(pid), Some(uid), "{}: {what} ({pid}) runs as", n.name);
        }
        // Everything in the node's directory but what the harness wrote is postgres's.
        let mut foreign = Vec::new();
        let mut stack = vec![n.dir.clone()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).expect("read_dir").flatten() {
                let p = e.path();
                let Ok(m) = std::fs::symlink_metadata(&p) else {
                    continue;
                };
                let harness = p == n.config || p == n.dir.join("regent.log");
                if !harness && std::os::unix::fs::MetadataExt::uid(&m) != uid {
                    foreign.push(p.clone());
                }
                if m.is_dir() {
                    stack.push(p);
                }
            }
        }
        assert!(
            foreign.is_empty(),
            "{}: not postgres's: {foreign:?}",
            n.name
        );
    }
    eprintln!(
        "regent as postgres (uid {uid}): {} leads, {} streams",
        c.nodes[leader].name, c.nodes[replica].name
    );
}
