//! The watchdog (`watchdog.mode`, `device`) with real etcd, PostgreSQL and `regent`: in
//! `required` mode a node without a usable device never leads, and one whose device cannot
//! be armed releases the leader key instead of promoting; with a real `/dev/watchdog` (the
//! softdog module) the leader arms it and disarms it when it stops.

mod support;

use nix::sys::signal::Signal;
use std::time::{Duration, Instant};
use support::*;

/// Two nodes: pg1 with `watchdog` set to `wd` (YAML), pg2 without one.
fn cluster_with_watchdog_on_pg1(wd: &str) -> Cluster {
    let c = Cluster::new(2, NodeSpec::default());
    set_config(&c.nodes[0], "watchdog", wd);
    c
}

/// `GET /patroni` of node `i`, as JSON.
fn patroni(c: &Cluster, i: usize) -> Option<serde_json::Value> {
    let (status, body) = c.nodes[i].http_get("/patroni")?;
    (status == 200).then(|| serde_json::from_str(&body).ok())?
}

/// pg2 leads with pg1 streaming from it; then pg2 crashes, and for 2 × ttl pg1 must never
/// become writable. Returns pg1's log.
fn pg1_never_takes_over(mut c: Cluster) -> String {
    c.nodes[0].start();
    // pg1 cannot lead: it never bootstraps the cluster.
    wait_for(
        "pg1 to report watchdog_failed",
        Duration::from_secs(30),
        || (patroni(&c, 0)?["watchdog_failed"] == true).then_some(()),
    );
    c.nodes[1].start();
    assert_eq!(
        c.wait_leader(Duration::from_secs(90)),
        1,
        "pg2 bootstraps and leads"
    );
    c.wait_streaming(1, 1, Duration::from_secs(90));
    psql(
        c.nodes[1].pg_port,
        "CREATE TABLE split_brain_probe (t timestamptz)",
    )
    .expect("table");
    wait_for("pg1 to replay the table", Duration::from_secs(30), || {
        psql(c.nodes[0].pg_port, "SELECT count(*) FROM split_brain_probe").ok()
    });
    c.nodes[1].crash();
    let until = Instant::now() + Duration::from_secs(2 * 10);
    while Instant::now() < until {
        assert!(
            c.writable().is_empty(),
            "pg1 became writable without a usable watchdog:\n{}",
            c.nodes[0].log()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(
        psql(c.nodes[0].pg_port, "SELECT pg_is_in_recovery()").as_deref(),
        Ok("t")
    );
    let log = c.nodes[0].log();
    c.nodes.iter_mut().for_each(|n| n.kill_all());
    log
}

#[test]
fn required_watchdog_without_a_device_never_leads() {
    let _serial = serial();
    let c = cluster_with_watchdog_on_pg1("{mode: required, device: /nonexistent/watchdog}");
    let log = pg1_never_takes_over(c);
    assert!(!log.contains("promoting PostgreSQL"), "{log}");
}

#[test]
fn required_watchdog_that_cannot_be_armed_releases_the_key() {
    let _serial = serial();
    let c = Cluster::new(2, NodeSpec::default());
    // A writable file: usable to open, but no watchdog (its ioctls fail), so arming fails.
    let fake = c.tmp.path().join("not-a-watchdog");
    std::fs::write(&fake, "").expect("fake device");
    chown_pg(&fake);
    set_config(
        &c.nodes[0],
        "watchdog",
        &format!("{{mode: required, device: {}}}", fake.display()),
    );
    let log = pg1_never_takes_over(c);
    assert!(
        log.contains("the watchdog could not be armed: not bootstrapping"),
        "pg1 never tried to arm its watchdog before bootstrapping:\n{log}"
    );
    // A ttl after its failed arming it may race again; winning, it gives the key back.
    assert!(
        log.contains("the watchdog could not be armed: releasing the leader key"),
        "pg1 did not release the key it could not use:\n{log}"
    );
    assert!(!log.contains("promoting PostgreSQL"), "{log}");
}

#[test]
fn a_real_watchdog_is_armed_while_leading_and_disarmed_on_stop() {
    const TEST: &str = "a_real_watchdog_is_armed_while_leading_and_disarmed_on_stop";
    let dev = std::path::Path::new("/dev/watchdog");
    if !dev.exists() || nix::unistd::access(dev, nix::unistd::AccessFlags::W_OK).is_err() {
        skip_no_hardware(
            TEST,
            "no writable /dev/watchdog (load the softdog module: modprobe softdog)",
        );
        return;
    }
    let _serial = serial();
    let mut c = Cluster::new(1, NodeSpec::default());
    set_config(
        &c.nodes[0],
        "watchdog",
        "{mode: required, safety_margin: 5}",
    );
    c.nodes[0].start();
    c.wait_leader(Duration::from_secs(90));
    wait_for("the watchdog armed", Duration::from_secs(30), || {
        c.nodes[0].log().contains("watchdog armed").then_some(())
    });
    c.nodes[0].signal(Signal::SIGTERM);
    assert!(c.nodes[0].wait_exit(Duration::from_secs(60)).is_some());
    assert!(
        c.nodes[0].log().contains("watchdog disarmed"),
        "{}",
        c.nodes[0].log()
    );
}
