//! `regent ctl` against three real `regent` nodes over real etcd and PostgreSQL.
//!
//! `ctl_reads_and_edits_the_cluster` needs etcd and `GET /patroni` only. The other tests drive
//! the cluster through the REST API's mutating endpoints (`POST /switchover`, `/failover`,
//! `/restart`, `/reinitialize`, `/reload`, `PATCH /config`) and the HA loop's handling of them.
//! `ctl_patronictl_habits` covers `query` and `dsn` (SQL on the members), `flush`, `remove`,
//! watching, `tsv`, cluster names on the command line and patronictl's config file locations.

mod support;

use serde_json::Value;
use std::io::{BufRead, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
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
            c.member_key(name)["policy"],
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
        assert_eq!(c.member_key(&n.name)["pause"], true, "{}", n.name);
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

/// `regent ctl -c <node1's config> ARGS...` with `input` on stdin.
fn ctl_with_input(c: &Cluster, args: &[&str], input: &str) -> Ran {
    let mut child = Command::new(support::REGENT)
        .arg("ctl")
        .args(["-c", &cfg(c)])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn regent ctl");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("write stdin");
    let out = child.wait_with_output().expect("wait");
    Ran {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `query`, `dsn`, `flush`, `remove`, `list -w`/`-f tsv`, cluster names as arguments, and
/// patronictl's config file locations, against three real nodes.
#[test]
fn ctl_patronictl_habits() {
    let _g = serial();
    let (c, leader) = Cluster::healthy(3, NodeSpec::default());
    let leader_node = &c.nodes[leader];
    let replica = &c.nodes[(leader + 1) % 3];

    // dsn: the leader's address, or a chosen member's.
    let r = ctl(&c, &["dsn"]).expect_ok("dsn");
    assert_eq!(
        r.stdout,
        format!("host=127.0.0.1 port={}\n", leader_node.pg_port)
    );
    let r = ctl(&c, &["dsn", "test", "-m", &replica.name]).expect_ok("dsn -m");
    assert_eq!(
        r.stdout,
        format!("host=127.0.0.1 port={}\n", replica.pg_port)
    );

    // query: tsv by default, logged in as the config's superuser; NULL prints as None.
    let r = ctl(
        &c,
        &[
            "query",
            "-c",
            "SELECT 1 AS one, NULL AS nothing, pg_is_in_recovery() AS rec",
        ],
    )
    .expect_ok("query");
    assert_eq!(r.stdout, "one\tnothing\trec\n1\tNone\tf\n");
    let r = ctl(
        &c,
        &[
            "query",
            "test",
            "-r",
            "replica",
            "-c",
            "SELECT pg_is_in_recovery()",
            "--format",
            "json",
        ],
    )
    .expect_ok("query a replica");
    assert_eq!(r.json(), serde_json::json!([{"pg_is_in_recovery": "t"}]));
    let r = ctl(
        &c,
        &[
            "query",
            "-m",
            &replica.name,
            "--delimiter",
            ";",
            "-c",
            "SELECT 'a' AS x, 'b' AS y; SELECT 2 AS z",
        ],
    )
    .expect_ok("last result");
    assert_eq!(r.stdout, "z\n2\n", "the last statement's rows");
    // A failing statement: patronictl's error row, with PostgreSQL's message, and exit 1.
    let r = ctl(&c, &["query", "-c", "SELECT * FROM no_such_table"]);
    assert_eq!(r.code, Some(1), "{r:?}");
    assert!(
        r.stdout.contains(
            "\tERROR, SQLSTATE: 42P01 (ERROR 42P01: relation \"no_such_table\" does not exist)"
        ),
        "{r:?}"
    );
    // --password asks on stdin; a wrong one is PostgreSQL's 28P01.
    let r = ctl_with_input(
        &c,
        &["query", "-U", "postgres", "--password", "-c", "SELECT 1"],
        "wrong\n",
    );
    assert_eq!(r.code, Some(1), "{r:?}");
    assert!(r.stdout.contains("SQLSTATE: 28P01"), "{r:?}");
    let r = ctl_with_input(
        &c,
        &[
            "query",
            "-U",
            "postgres",
            "--password",
            "-c",
            "SELECT 3 AS x",
        ],
        "secret\n",
    )
    .expect_ok("the right password");
    assert_eq!(r.stdout, "x\n3\n");

    // list -f tsv, and several clusters by name (one written by hand into etcd).
    let r = ctl(&c, &["list", "-f", "tsv"]).expect_ok("tsv");
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert!(
        lines[0].starts_with("Cluster\tMember\tHost\tRole\tState\tTL\t"),
        "{r:?}"
    );
    assert_eq!(lines.len(), 4, "{r:?}");
    assert!(
        lines[1..].iter().all(|l| l.starts_with("test\tpg")),
        "{r:?}"
    );
    c.etcd
        .put("/service/gone/initialize", "7000000000000000001");
    c.etcd.put("/service/gone/leader", "x1");
    c.etcd.put(
        "/service/gone/members/x1",
        r#"{"conn_url":"postgres://10.0.0.1:5432/postgres","api_url":"http://10.0.0.1:8008/patroni","state":"running","role":"primary"}"#,
    );
    c.etcd.put("/service/gone2/leader", "y1");
    let r = ctl(&c, &["list", "test", "gone", "-f", "json"]).expect_ok("two clusters");
    let docs: Vec<Value> = r
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON document per cluster"))
        .collect();
    assert_eq!(docs.len(), 2, "{r:?}");
    assert_eq!(docs[1][0]["Cluster"], "gone");
    assert_eq!(docs[1][0]["Member"], "x1");

    // list -t -w: the listing again every half second, a timestamp line above each.
    let mut child = Command::new(support::REGENT)
        .args(["ctl", "-c", &cfg(&c), "list", "-t", "-w", "0.5"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn list -w");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(15);
    let (mut stamps, mut tables) = (0, 0);
    while (stamps < 3 || tables < 3) && Instant::now() < deadline {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
            if line.len() == 19 && line.as_bytes()[10] == b' ' {
                stamps += 1;
            }
            if line.starts_with("+ Cluster: test (") {
                tables += 1;
            }
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        stamps >= 3 && tables >= 3,
        "watching printed {stamps} timestamps, {tables} tables"
    );

    // flush restart: a scheduled restart is dropped from the member.
    ctl(
        &c,
        &[
            "restart",
            "test",
            &replica.name,
            "--scheduled",
            "2099-01-01T00:00+00:00",
            "--force",
        ],
    )
    .expect_ok("schedule a restart");
    wait_for(
        "the scheduled restart in the member key",
        Duration::from_secs(15),
        || {
            c.member_key(&replica.name)
                .get("scheduled_restart")
                .map(|_| ())
        },
    );
    let r =
        ctl(&c, &["flush", "test", &replica.name, "restart", "--force"]).expect_ok("flush restart");
    assert_eq!(
        r.stdout,
        format!(
            "Success: flush scheduled restart for member {}\n",
            replica.name
        )
    );
    wait_for("the member key without it", Duration::from_secs(15), || {
        c.member_key(&replica.name)
            .get("scheduled_restart")
            .is_none()
            .then_some(())
    });

    // flush switchover: the scheduled switchover is deleted through the leader.
    ctl(
        &c,
        &[
            "switchover",
            "--candidate",
            &replica.name,
            "--scheduled",
            "2099-01-01T00:00+00:00",
            "--force",
        ],
    )
    .expect_ok("schedule a switchover");
    let scheduled = |c: &Cluster| {
        c.etcd
            .get("/service/test/failover")
            .and_then(|v| serde_json::from_str::<Value>(&v).ok())
            .is_some_and(|f| f.get("scheduled_at").is_some())
    };
    assert!(scheduled(&c));
    let r = ctl(&c, &["flush", "switchover"]).expect_ok("flush switchover");
    assert!(r.stdout.starts_with("Success: "), "{r:?}");
    assert!(!scheduled(&c));
    let r = ctl(&c, &["flush", "test", "switchover"]).expect_ok("nothing left");
    assert_eq!(r.stdout, "No pending scheduled switchover\n");

    // patronictl's config locations: PATRONICTL_CONFIG_FILE, then ~/.config/patroni/patronictl.yaml.
    let home = tempfile::tempdir().expect("home");
    let list_with = |vars: &[(&str, &str)]| {
        let mut cmd = Command::new(support::REGENT);
        cmd.args(["ctl", "list", "-f", "json"])
            .env_remove("REGENT_CONFIG")
            .env_remove("XDG_CONFIG_HOME")
            .env("HOME", home.path());
        for (k, v) in vars {
            cmd.env(k, v);
        }
        support::ctl::run(&mut cmd)
    };
    let r = list_with(&[]);
    assert_eq!(r.code, Some(2), "no config anywhere: {r:?}");
    let r = list_with(&[("PATRONICTL_CONFIG_FILE", &cfg(&c))]).expect_ok("PATRONICTL_CONFIG_FILE");
    assert_eq!(r.json().as_array().map(Vec::len), Some(3));
    let dir = home.path().join(".config/patroni");
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::write(
        dir.join("patronictl.yaml"),
        format!("scope: test\netcd3:\n  hosts: {}\n", c.etcd.endpoint()),
    )
    .expect("write patronictl.yaml");
    let r = list_with(&[]).expect_ok("the default patronictl.yaml");
    assert_eq!(r.json().as_array().map(Vec::len), Some(3));

    // remove: refused without the exact answers, then the cluster's keys (only its) are gone.
    let r = ctl_with_input(&c, &["remove", "gone"], "gone\nyes\n");
    assert_eq!(r.code, Some(2), "{r:?}");
    assert!(r.stderr.contains("\"Yes I am aware\""), "{r:?}");
    assert_eq!(c.etcd.get_prefix("/service/gone/").len(), 3);
    let r =
        ctl_with_input(&c, &["remove", "gone"], "gone\nYes I am aware\nx1\n").expect_ok("remove");
    assert!(
        r.stdout
            .starts_with("+ Cluster: gone (7000000000000000001) "),
        "{r:?}"
    );
    assert!(c.etcd.get_prefix("/service/gone/").is_empty());
    assert_eq!(c.etcd.get("/service/gone2/leader").as_deref(), Some("y1"));
    assert!(c.etcd.get("/service/test/leader").is_some());
}
