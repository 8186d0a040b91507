//! `regent ctl` against three real `regent` nodes over real etcd and PostgreSQL.
//!
//! `ctl_reads_and_edits_the_cluster` needs etcd and `GET /patroni` only. The other tests drive
//! the cluster through the REST API's mutating endpoints (`POST /switchover`, `/failover`,
//! `/restart`, `/reinitialize`, `/reload`, `PATCH /config`) and the HA loop's handling of them.

mod support;

use serde_json::Value;
use std::time::Duration;
use support::ctl::*;
use support::*;

const TTL: u64 = 10;

fn cfg(c: &Cluster) -> String {
    c.nodes[0].config.display().to_string()
}

/// `regent ctl -c <node1's config> ARGS...`.
fn ctl(c: &Cluster, args: &[&str]) -> Ran {
    let config = cfg(c);
    let mut all = vec!["-c", config.as_str()];
    all.extend_from_slice(args);
    regent_ctl(&all)
}

fn member_key(c: &Cluster, name: &str) -> Value {
    serde_json::from_str(
        &c.etcd
            .get(&format!("/service/test/members/{name}"))
            .expect("member key"),
    )
    .expect("member JSON")
}

fn dcs_config(c: &Cluster) -> Value {
    serde_json::from_str(&c.etcd.get("/service/test/config").expect("config key"))
        .expect("config JSON")
}

#[test]
fn ctl_reads_and_edits_the_cluster() {
    let _g = serial();
    let (mut c, leader) = Cluster::healthy(3, NodeSpec::default());
    let leader_name = c.nodes[leader].name.clone();
    let sysid = c.etcd.get("/service/test/initialize").expect("sysid");

    // list: the pretty table, then JSON checked field by field against the DCS.
    let pretty = ctl(&c, &["list"]).expect_ok("list");
    assert!(
        pretty
            .stdout
            .starts_with(&format!("+ Cluster: test ({sysid}) ")),
        "{}",
        pretty.stdout
    );
    assert!(
        pretty
            .stdout
            .contains("| Role    | State     | TL | Receive LSN | Lag | Replay LSN | Lag | Policy"),
        "{}",
        pretty.stdout
    );
    eprintln!("regent ctl list:\n{}", pretty.stdout);
    let rows = list_matches_dcs(
        &c.etcd,
        "regent ctl list -f json",
        || ctl(&c, &["list", "-f", "json"]),
        &["Policy"],
    );
    assert_eq!(rows.len(), 3);
    let json = ctl(&c, &["list", "--format", "json"])
        .expect_ok("list")
        .json();
    for row in json.as_array().expect("array") {
        let name = row["Member"].as_str().expect("name");
        assert_eq!(
            row["Policy"],
            member_key(&c, name)["policy"],
            "Policy is the member key's policy field"
        );
        let want_role = if name == leader_name {
            "Leader"
        } else {
            "Replica"
        };
        assert_eq!(row["Role"], want_role, "{row}");
    }

    // The same through --dcs-url and --scope, in YAML.
    let url = format!("etcd3://{}/service", c.etcd.endpoint());
    let yaml = regent_ctl(&["--dcs-url", &url, "--scope", "test", "list", "-f", "yaml"])
        .expect_ok("list via --dcs-url");
    let parsed: Value = serde_yaml::from_str(&yaml.stdout).expect("YAML");
    assert_eq!(parsed.as_array().map(Vec::len), Some(3), "{}", yaml.stdout);

    // version asks every member's GET /patroni.
    let v = ctl(&c, &["version"]).expect_ok("version");
    for n in &c.nodes {
        assert!(
            v.stdout.contains(&format!("{}: Regent ", n.name)) && v.stdout.contains("PostgreSQL 1"),
            "{}",
            v.stdout
        );
    }

    // show-config is the config key as YAML.
    let shown = ctl(&c, &["show-config"]).expect_ok("show-config");
    let shown: Value = serde_yaml::from_str(&shown.stdout).expect("YAML");
    assert_eq!(shown, dcs_config(&c));
    assert_eq!(shown["ttl"], TTL);

    // edit-config: refused without a terminal, refused when invalid, applied with --force.
    let before = dcs_config(&c);
    let r = ctl(&c, &["edit-config", "-s", "loop_wait=2"]);
    assert_eq!(r.code, Some(2), "{r:?}");
    assert!(r.stderr.contains("stdin is not a terminal"), "{r:?}");
    let r = ctl(&c, &["edit-config", "-s", "ttl=4", "--force"]);
    assert_eq!(r.code, Some(2), "{r:?}");
    assert!(r.stderr.contains("must be at least 5 seconds"), "{r:?}");
    assert_eq!(dcs_config(&c), before, "refused edits write nothing");
    // Timing Patroni takes is taken (issue 12 item 8): stored as given, with the warning the
    // nodes log; every node runs with the fitted values and says so in GET /patroni.
    let r = ctl(&c, &["edit-config", "-s", "retry_timeout=6", "--force"]).expect_ok("timing");
    let warning = format!(
        "the cluster's configuration: loop_wait {lw} + 2 × retry_timeout 6 exceeds ttl {TTL}: running with loop_wait 1 and retry_timeout 4 (as Patroni does)",
        lw = before["loop_wait"]
    );
    assert!(r.stderr.contains(&format!("warning: {warning}")), "{r:?}");
    assert_eq!(dcs_config(&c)["retry_timeout"], 6);
    c.wait_all_nodes("to report the fitted timing", |doc| {
        let timing = &doc["regent"]["timing"];
        timing["effective"]["retry_timeout"] == 4
            && timing["configured"]["retry_timeout"] == 6
            && timing["warning"]
                .as_str()
                .is_some_and(|w| w.starts_with(&warning))
    });
    let restore = format!("retry_timeout={}", before["retry_timeout"]);
    ctl(&c, &["edit-config", "-s", &restore, "--force", "-q"]).expect_ok("restore");
    assert_eq!(dcs_config(&c), before);
    c.wait_all_nodes("to drop the fitted timing", |doc| {
        doc.get("regent").is_none()
    });
    let r = ctl(
        &c,
        &[
            "edit-config",
            "-s",
            "pause=true",
            "-s",
            "maximum_lag_on_failover=2097152",
            "-p",
            "work_mem=8MB",
            "--force",
        ],
    )
    .expect_ok("edit-config");
    assert!(
        r.stdout.contains("+pause: true") && r.stdout.ends_with("Configuration changed\n"),
        "{}",
        r.stdout
    );
    let after = dcs_config(&c);
    assert_eq!(after["pause"], true);
    assert_eq!(after["maximum_lag_on_failover"], 2097152);
    assert_eq!(after["postgresql"]["parameters"]["work_mem"], "8MB");
    assert_eq!(after["postgresql"]["parameters"]["wal_keep_size"], "64MB");
    // Every node picks the change up from etcd: its status document reports the pause.
    c.wait_all_nodes("to report pause", |doc| doc["pause"] == true);
    let list = ctl(&c, &["list"]).expect_ok("list");
    assert!(
        list.stdout.ends_with(" Maintenance mode: on\n"),
        "{}",
        list.stdout
    );
    ctl(&c, &["edit-config", "-s", "pause=", "--force", "-q"]).expect_ok("unpause");
    assert!(dcs_config(&c).get("pause").is_none());
    c.wait_all_nodes("to drop pause", |doc| doc.get("pause").is_none());
    let r = ctl(&c, &["edit-config", "-s", "loop_wait=1", "--force"]).expect_ok("no-op");
    assert_eq!(r.stdout, "Not changed\n");

    // Errors that name the problem and the fix, with their exit codes.
    let r = ctl(&c, &["restart", "pg9", "--force"]);
    assert_eq!(r.code, Some(2), "{r:?}");
    assert!(
        r.stderr
            .contains("pg9 is not a member of cluster test; its members are: pg1, pg2, pg3"),
        "{r:?}"
    );
    let closed = free_port();
    let r = regent_ctl(&[
        "--dcs-url",
        &format!("etcd3://127.0.0.1:{closed}"),
        "--scope",
        "test",
        "list",
    ]);
    assert_eq!(r.code, Some(1), "{r:?}");
    assert!(
        r.stderr.contains(&format!("127.0.0.1:{closed}")) && r.stderr.contains("--dcs-url"),
        "{r:?}"
    );
    let r = regent_ctl(&["list"]);
    assert_eq!(r.code, Some(2), "{r:?}");
    assert!(r.stderr.contains("-c FILE"), "{r:?}");

    // history and topology after a crash failover.
    assert_eq!(
        ctl(&c, &["history", "-f", "json"])
            .expect_ok("history")
            .json(),
        serde_json::json!([])
    );
    c.nodes[leader].crash();
    let new = wait_for("a new leader", Duration::from_secs(TTL + 20), || {
        c.leader_key().filter(|l| *l != leader_name)
    });
    let h = wait_for("a history line", Duration::from_secs(15), || {
        let j = ctl(&c, &["history", "-f", "json"]).json();
        (j.as_array()?.len() == 1).then_some(j)
    });
    assert_eq!(h[0]["TL"], 1, "{h}");
    assert_eq!(h[0]["New Leader"], new.as_str(), "{h}");
    assert!(h[0]["LSN"].as_u64().is_some_and(|l| l > 0), "{h}");
    let pretty = ctl(&c, &["history"]).expect_ok("history");
    assert!(
        pretty.stdout.contains("| TL |") && pretty.stdout.contains(&new),
        "{}",
        pretty.stdout
    );
    let topo = ctl(&c, &["topology"]).expect_ok("topology");
    let first_row = topo.stdout.lines().nth(3).unwrap_or_default().to_string();
    assert!(
        first_row.starts_with(&format!("| {new} ")),
        "the leader comes first: {}",
        topo.stdout
    );
    assert!(topo.stdout.contains("| + "), "{}", topo.stdout);
}

/// `regent ctl switchover` to a named candidate, then `failover` to another.
/// Needs `POST /switchover` and `POST /failover` (patroni.md §1.6) and the HA core's manual
/// switchover.
#[test]
fn ctl_switchover_and_failover() {
    let _g = serial();
    let (c, leader) = Cluster::healthy(3, NodeSpec::default());
    let old = c.nodes[leader].name.clone();
    let candidate = c
        .nodes
        .iter()
        .map(|n| n.name.clone())
        .find(|n| *n != old)
        .expect("a replica");
    let r = ctl(&c, &["switchover", "--candidate", &candidate, "--force"]);
    assert!(r.ok(), "switchover: {r:?}");
    assert!(
        r.stdout
            .contains(&format!("Successfully switched over to \"{candidate}\"")),
        "{r:?}"
    );
    wait_for("the candidate to lead", Duration::from_secs(30), || {
        (c.leader_key()? == candidate && c.node(&candidate).http_get("/primary")?.0 == 200)
            .then_some(())
    });
    let third = c
        .nodes
        .iter()
        .map(|n| n.name.clone())
        .find(|n| *n != old && *n != candidate)
        .expect("a third node");
    wait_for(
        "the old leader to stream again",
        Duration::from_secs(60),
        || (c.node(&old).http_get("/replica")?.0 == 200).then_some(()),
    );
    let r = ctl(&c, &["failover", "--candidate", &third, "--force"]);
    assert!(r.ok(), "failover: {r:?}");
    wait_for(
        "the failover candidate to lead",
        Duration::from_secs(30),
        || {
            (c.leader_key()? == third && c.node(&third).http_get("/primary")?.0 == 200)
                .then_some(())
        },
    );
    let h = ctl(&c, &["history", "-f", "json"])
        .expect_ok("history")
        .json();
    assert_eq!(h.as_array().map(Vec::len), Some(2), "{h}");
}

/// `regent ctl pause --wait` / `resume --wait`. Needs `PATCH /config` and members that publish
/// `pause: true` in their member keys while paused.
#[test]
fn ctl_pause_and_resume() {
    let _g = serial();
    let (c, _) = Cluster::healthy(3, NodeSpec::default());
    let r = ctl(&c, &["pause", "--wait"]);
    assert!(r.ok(), "pause: {r:?}");
    assert!(
        r.stdout.contains("Success: cluster management is paused"),
        "{r:?}"
    );
    assert_eq!(dcs_config(&c)["pause"], true);
    for n in &c.nodes {
        assert_eq!(member_key(&c, &n.name)["pause"], true, "{}", n.name);
    }
    let r = ctl(&c, &["pause"]);
    assert_eq!(r.code, Some(1), "already paused: {r:?}");
    assert!(r.stderr.contains("Cluster is already paused"), "{r:?}");
    let r = ctl(&c, &["resume", "--wait"]);
    assert!(r.ok(), "resume: {r:?}");
    assert!(dcs_config(&c).get("pause").is_none());
}

fn postmaster_start(port: u16) -> Option<String> {
    psql(port, "SELECT pg_postmaster_start_time()").ok()
}

/// `regent ctl restart` and `reload`. Needs `POST /restart` (200 once PostgreSQL is back) and
/// `POST /reload` (202).
#[test]
fn ctl_restart_and_reload() {
    let _g = serial();
    let (c, leader) = Cluster::healthy(3, NodeSpec::default());
    let replica = &c.nodes[(leader + 1) % 3];
    let before = postmaster_start(replica.pg_port).expect("start time");
    let r = ctl(&c, &["restart", &replica.name, "--force"]);
    assert!(r.ok(), "restart: {r:?}");
    assert!(
        r.stdout
            .contains(&format!("Success: restart on member {}", replica.name)),
        "{r:?}"
    );
    wait_for("a new postmaster", Duration::from_secs(30), || {
        postmaster_start(replica.pg_port).filter(|t| *t != before)
    });
    let r = ctl(&c, &["reload", "--force"]);
    assert!(r.ok(), "reload: {r:?}");
    for n in &c.nodes {
        assert!(
            r.stdout.contains(&format!("for member {} ", n.name)),
            "{r:?}"
        );
    }
}

/// `regent ctl reinit --wait`. Needs `POST /reinitialize` and the HA core's re-clone.
#[test]
fn ctl_reinit() {
    let _g = serial();
    let (c, leader) = Cluster::healthy(3, NodeSpec::default());
    let replica = &c.nodes[(leader + 1) % 3];
    let marker = replica.dir.join("data/regent-test-marker");
    std::fs::write(&marker, "old data directory").expect("marker");
    let r = ctl(&c, &["reinit", &replica.name, "--force", "--wait"]);
    assert!(r.ok(), "reinit: {r:?}");
    assert!(
        r.stdout
            .contains(&format!("Reinitialize is completed on: {}", replica.name)),
        "{r:?}"
    );
    assert!(!marker.exists(), "the data directory was cloned afresh");
    wait_for(
        "the replica to stream again",
        Duration::from_secs(60),
        || (replica.http_get("/replica")?.0 == 200).then_some(()),
    );
}
