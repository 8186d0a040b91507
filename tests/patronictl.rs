//! Patroni's own CLI, installed from PyPI into a virtualenv, against three real `regent` nodes.
//!
//! `patronictl_reads_and_edits_a_regent_cluster` needs etcd and `GET /patroni` only. The other
//! tests need the REST API's mutating endpoints (`POST /switchover`, `/failover`, `/restart`,
//! `/reinitialize`, `/reload`, `PATCH /config`) and the HA loop's handling of them.
//!
//! The virtualenv lives in `target/patronictl-venv` and is reused. If it cannot be created or
//! `pip install 'patroni[etcd3]'` fails, the tests fail: they never skip.

mod support;

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use support::ctl::*;
use support::*;

const TTL: u64 = 10;

fn venv_dir() -> PathBuf {
    let target = option_env!("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("patronictl-venv")
}

/// The patronictl executable, installing it on first use; `None` (the test is skipped) when it
/// cannot be installed.
fn patronictl_bin(test: &str) -> Option<PathBuf> {
    static INSTALL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _g = INSTALL.lock().unwrap_or_else(|p| p.into_inner());
    let python = std::env::var("REGENT_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    match patroni_venv(&venv_dir(), &python) {
        Ok(v) => Some(v.join("bin/patronictl")),
        Err(why) => {
            skip(test, &format!("patronictl is needed and {why}"));
            None
        }
    }
}

/// A patronictl config: etcd3 hosts, scope and namespace, nothing else.
fn write_config(c: &Cluster) -> PathBuf {
    let p = c.tmp.path().join("patronictl.yml");
    std::fs::write(
        &p,
        format!(
            "scope: test\nnamespace: /service/\netcd3:\n  hosts: {}\n",
            c.etcd.endpoint()
        ),
    )
    .expect("write patronictl config");
    p
}

struct Patronictl {
    bin: PathBuf,
    config: PathBuf,
}

impl Patronictl {
    fn new(c: &Cluster, test: &str) -> Option<Patronictl> {
        Some(Patronictl {
            bin: patronictl_bin(test)?,
            config: write_config(c),
        })
    }

    fn run(&self, args: &[&str]) -> Ran {
        run(Command::new(&self.bin)
            .arg("-c")
            .arg(&self.config)
            .args(args)
            .env("LC_ALL", "C.UTF-8")
            .env("LANG", "C.UTF-8"))
    }
}

fn dcs_config(c: &Cluster) -> Value {
    serde_json::from_str(&c.etcd.get("/service/test/config").expect("config key"))
        .expect("config JSON")
}

#[test]
fn patronictl_reads_and_edits_a_regent_cluster() {
    let _g = serial();
    let (mut c, leader) = Cluster::healthy(3, NodeSpec::default());
    let Some(p) = Patronictl::new(&c, "patronictl_reads_and_edits_a_regent_cluster") else {
        return;
    };
    let leader_name = c.nodes[leader].name.clone();
    let sysid = c.etcd.get("/service/test/initialize").expect("sysid");

    // list: the same rows as computed from the raw keys, and as regent ctl shows them.
    list_matches_dcs(
        &c.etcd,
        "patronictl list -f json",
        || p.run(&["list", "-f", "json"]),
        &[],
    );
    let regent_cfg = c.nodes[0].config.display().to_string();
    list_matches_dcs(
        &c.etcd,
        "regent ctl list -f json",
        || regent_ctl(&["-c", &regent_cfg, "list", "-f", "json"]),
        &["Policy"],
    );
    let pretty = p.run(&["list"]).expect_ok("patronictl list");
    eprintln!("patronictl list:\n{}", pretty.stdout);
    assert!(
        pretty
            .stdout
            .starts_with(&format!("+ Cluster: test ({sysid}) ")),
        "{}",
        pretty.stdout
    );
    for n in &c.nodes {
        let role = if n.name == leader_name {
            "Leader "
        } else {
            "Replica"
        };
        assert!(
            pretty.stdout.contains(&format!(
                "| {}    | 127.0.0.1:{} | {role} |",
                n.name, n.pg_port
            )),
            "{}",
            pretty.stdout
        );
    }
    let topo = p.run(&["topology"]).expect_ok("patronictl topology");
    assert!(
        topo.stdout
            .lines()
            .nth(3)
            .is_some_and(|l| l.starts_with(&format!("| {leader_name} "))),
        "{}",
        topo.stdout
    );

    // version: GET /patroni on every member.
    let v = p.run(&["version", "test"]).expect_ok("patronictl version");
    for n in &c.nodes {
        assert!(
            v.stdout.contains(&format!("{}: Patroni ", n.name))
                && v.stdout.contains("PostgreSQL 1"),
            "{}",
            v.stdout
        );
    }

    // show-config: the config key as YAML.
    let shown = p.run(&["show-config"]).expect_ok("patronictl show-config");
    let shown: Value = serde_yaml::from_str(&shown.stdout).expect("YAML");
    assert_eq!(shown, dcs_config(&c));

    // edit-config writes the key with CAS; every node picks the change up.
    let r = p
        .run(&[
            "edit-config",
            "-s",
            "pause=true",
            "-s",
            "maximum_lag_on_failover=2097152",
            "-p",
            "work_mem=8MB",
            "--force",
        ])
        .expect_ok("patronictl edit-config");
    assert!(r.stdout.contains("Configuration changed"), "{r:?}");
    let config = dcs_config(&c);
    assert_eq!(config["pause"], true);
    assert_eq!(config["maximum_lag_on_failover"], 2097152);
    assert_eq!(config["postgresql"]["parameters"]["work_mem"], "8MB");
    assert_eq!(config["ttl"], TTL, "the rest is kept");
    c.wait_all_nodes("to report pause", |d| d["pause"] == true);
    let listed = p.run(&["list"]).expect_ok("patronictl list");
    assert!(
        listed.stdout.contains(" Maintenance mode: on"),
        "{}",
        listed.stdout
    );
    // regent ctl reads what patronictl wrote.
    let shown = regent_ctl(&["-c", &regent_cfg, "show-config", "-f", "json"]).expect_ok("show");
    assert_eq!(shown.json(), config);
    p.run(&["edit-config", "-s", "pause=", "--force"])
        .expect_ok("patronictl edit-config");
    assert!(dcs_config(&c).get("pause").is_none());
    c.wait_all_nodes("to drop pause", |d| d.get("pause").is_none());

    // history after a crash failover, with the new leader listed.
    let h = p
        .run(&["history", "-f", "json"])
        .expect_ok("history")
        .json();
    assert_eq!(h, serde_json::json!([]));
    c.nodes[leader].crash();
    let new = wait_for("a new leader", Duration::from_secs(TTL + 20), || {
        c.leader_key().filter(|l| *l != leader_name)
    });
    let h = wait_for("a history line", Duration::from_secs(15), || {
        let j = p.run(&["history", "-f", "json"]).json();
        (j.as_array()?.len() == 1).then_some(j)
    });
    let raw: Value =
        serde_json::from_str(&c.etcd.get("/service/test/history").expect("history key"))
            .expect("history JSON");
    assert_eq!(h[0]["TL"], raw[0][0], "{h}");
    assert_eq!(h[0]["LSN"], raw[0][1], "{h}");
    assert_eq!(h[0]["Reason"], raw[0][2], "{h}");
    assert_eq!(h[0]["New Leader"], new.as_str(), "{h}");
    let pretty = p.run(&["history"]).expect_ok("history");
    assert!(pretty.stdout.contains(&new), "{}", pretty.stdout);
    // The new leader on timeline 2, the survivor following it, the crashed node's key gone
    // once its lease expires.
    wait_for(
        "the dead member's key to expire",
        Duration::from_secs(TTL + 10),
        || {
            c.etcd
                .get(&format!("/service/test/members/{leader_name}"))
                .is_none()
                .then_some(())
        },
    );
    let rows = list_matches_dcs(
        &c.etcd,
        "patronictl list -f json after the failover",
        || p.run(&["list", "-f", "json"]),
        &[],
    );
    assert_eq!(rows.len(), 2, "{rows:?}");
    let leader_row = rows
        .iter()
        .find(|r| r["Member"] == new.as_str())
        .expect("the new leader's row");
    assert_eq!(leader_row["Role"], "Leader");
    wait_for(
        "the new leader's key to say timeline 2",
        Duration::from_secs(15),
        || {
            let j = p.run(&["list", "-f", "json"]).json();
            let row = j
                .as_array()?
                .iter()
                .find(|r| r["Member"] == new.as_str())?
                .clone();
            (row["TL"] == 2).then_some(())
        },
    );
}

/// `patronictl switchover --force` to a named candidate, then `patronictl failover`.
/// Needs `POST /switchover`, `POST /failover` and the HA core's manual switchover.
#[test]
fn patronictl_switchover_and_failover() {
    let _g = serial();
    let (c, leader) = Cluster::healthy(3, NodeSpec::default());
    let Some(p) = Patronictl::new(&c, "patronictl_switchover_and_failover") else {
        return;
    };
    let old = c.nodes[leader].name.clone();
    let candidate = c.nodes[(leader + 1) % 3].name.clone();
    let third = c.nodes[(leader + 2) % 3].name.clone();
    let r = p.run(&["switchover", "--candidate", &candidate, "--force"]);
    assert!(
        r.ok()
            && r.stdout
                .contains(&format!("Successfully switched over to \"{candidate}\"")),
        "patronictl switchover: {r:?}"
    );
    wait_for("the candidate to lead", Duration::from_secs(30), || {
        (c.leader_key()? == candidate && c.node(&candidate).http_get("/primary")?.0 == 200)
            .then_some(())
    });
    wait_for(
        "the old leader to replicate",
        Duration::from_secs(60),
        || (c.node(&old).http_get("/replica")?.0 == 200).then_some(()),
    );
    let r = p.run(&["failover", "--candidate", &third, "--force"]);
    assert!(
        r.ok()
            && r.stdout
                .contains(&format!("Successfully failed over to \"{third}\"")),
        "patronictl failover: {r:?}"
    );
    wait_for(
        "the failover candidate to lead",
        Duration::from_secs(30),
        || {
            (c.leader_key()? == third && c.node(&third).http_get("/primary")?.0 == 200)
                .then_some(())
        },
    );
}

/// `patronictl pause --wait` / `resume --wait`. Needs `PATCH /config` and members that publish
/// `pause: true` in their member keys while paused.
#[test]
fn patronictl_pause_and_resume() {
    let _g = serial();
    let (c, _) = Cluster::healthy(3, NodeSpec::default());
    let Some(p) = Patronictl::new(&c, "patronictl_pause_and_resume") else {
        return;
    };
    let r = p.run(&["pause", "--wait"]);
    assert!(
        r.ok() && r.stdout.contains("Success: cluster management is paused"),
        "patronictl pause: {r:?}"
    );
    assert_eq!(dcs_config(&c)["pause"], true);
    for n in &c.nodes {
        let m: Value = serde_json::from_str(
            &c.etcd
                .get(&format!("/service/test/members/{}", n.name))
                .expect("member key"),
        )
        .expect("member JSON");
        assert_eq!(m["pause"], true, "{}: {m}", n.name);
    }
    let r = p.run(&["resume", "--wait"]);
    assert!(
        r.ok() && r.stdout.contains("Success: cluster management is resumed"),
        "patronictl resume: {r:?}"
    );
    assert!(dcs_config(&c).get("pause").is_none());
}

/// `patronictl restart` and `reload`. Needs `POST /restart` (200 once PostgreSQL is back) and
/// `POST /reload` (202).
#[test]
fn patronictl_restart_and_reload() {
    let _g = serial();
    let (c, leader) = Cluster::healthy(3, NodeSpec::default());
    let Some(p) = Patronictl::new(&c, "patronictl_restart_and_reload") else {
        return;
    };
    let replica = &c.nodes[(leader + 1) % 3];
    let start = |port| psql(port, "SELECT pg_postmaster_start_time()").ok();
    let before = start(replica.pg_port).expect("start time");
    let r = p.run(&["restart", "test", &replica.name, "--force"]);
    assert!(
        r.ok()
            && r.stdout
                .contains(&format!("Success: restart on member {}", replica.name)),
        "patronictl restart: {r:?}"
    );
    wait_for("a new postmaster", Duration::from_secs(30), || {
        start(replica.pg_port).filter(|t| *t != before)
    });
    let r = p.run(&["reload", "test", "--force"]);
    assert!(
        r.ok() && r.stdout.contains("Reload request received for member"),
        "patronictl reload: {r:?}"
    );
}

/// `patronictl reinit --wait`. Needs `POST /reinitialize` and the HA core's re-clone.
#[test]
fn patronictl_reinit() {
    let _g = serial();
    let (c, leader) = Cluster::healthy(3, NodeSpec::default());
    let Some(p) = Patronictl::new(&c, "patronictl_reinit") else {
        return;
    };
    let replica = &c.nodes[(leader + 1) % 3];
    let marker = replica.dir.join("data/regent-test-marker");
    std::fs::write(&marker, "old data directory").expect("marker");
    let r = p.run(&["reinit", "test", &replica.name, "--force", "--wait"]);
    assert!(
        r.ok()
            && r.stdout
                .contains(&format!("Reinitialize is completed on: {}", replica.name)),
        "patronictl reinit: {r:?}"
    );
    wait_for(
        "the replica to stream again from a fresh clone",
        Duration::from_secs(90),
        || (!marker.exists() && replica.http_get("/replica")?.0 == 200).then_some(()),
    );
}
