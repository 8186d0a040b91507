//! A node configured the way Patroni's documentation and container images configure one runs
//! unchanged under `regent run` (issue 12): settings in `PATRONI_*` variables on top of a
//! partial YAML file, one role for superuser and replication, tags written as strings,
//! `wal_keep_segments` (gone since PostgreSQL 13), and a data directory whose parents do not
//! exist yet. The same configuration with a Patroni key Regent cannot honour is refused in one
//! line.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::Duration;
use support::ctl::{patroni_venv, run};
use support::*;

const REGENT: &str = env!("CARGO_BIN_EXE_regent");

/// The file part: what a Patroni image ships, with everything node-specific left to the
/// environment.
fn patroni_yaml(extra: &str) -> String {
    format!(
        r#"bootstrap:
  dcs:
    ttl: 10
    loop_wait: 1
    retry_timeout: 3
    maximum_lag_on_failover: 1048576
    postgresql:
      use_pg_rewind: true
      parameters:
        wal_keep_segments: 8
        max_connections: 30
  initdb:
  - encoding: UTF8
  - data-checksums
  pg_hba:
  - local all all trust
  - host replication postgres 127.0.0.1/32 md5
  - host all all 127.0.0.1/32 md5
postgresql:
  bin_dir: {bin}
  parameters:
    shared_buffers: 16MB
tags:
  failover_priority: "1"
  nofailover: false
  noloadbalance: no
{extra}"#,
        bin = bin_dir().display()
    )
}

/// Patroni's variables for node `n`.
fn patroni_env(node: &Node, etcd: &str) -> Vec<(String, String)> {
    let api = format!("127.0.0.1:{}", node.api_port);
    let pg = format!("127.0.0.1:{}", node.pg_port);
    let data = node.dir.join("pg").join("15").join("data");
    [
        ("PATRONI_NAME", node.name.as_str()),
        ("PATRONI_SCOPE", "dropin"),
        ("PATRONI_ETCD3_HOSTS", etcd),
        ("PATRONI_RESTAPI_LISTEN", &api),
        ("PATRONI_RESTAPI_CONNECT_ADDRESS", &api),
        ("PATRONI_POSTGRESQL_LISTEN", &pg),
        ("PATRONI_POSTGRESQL_CONNECT_ADDRESS", &pg),
        ("PATRONI_POSTGRESQL_DATA_DIR", &data.display().to_string()),
        ("PATRONI_SUPERUSER_USERNAME", "postgres"),
        ("PATRONI_SUPERUSER_PASSWORD", "secret"),
        ("PATRONI_REPLICATION_USERNAME", "postgres"),
        ("PATRONI_REPLICATION_PASSWORD", "secret"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

#[test]
fn a_patroni_configured_cluster_bootstraps_fails_over_and_rejoins_under_regent() {
    let _g = serial();
    let mut c = Cluster::new(3, NodeSpec::default());
    let etcd = c.etcd.endpoint();
    for n in &mut c.nodes {
        std::fs::write(&n.config, patroni_yaml("")).expect("write patroni.yml");
        n.env = patroni_env(n, &etcd);
    }
    // The data directory's parents do not exist: created as the PostgreSQL OS user.
    assert!(!c.nodes[0].dir.join("pg").exists());
    c.start_all();
    let leader = c.wait_leader(Duration::from_secs(90));
    c.wait_streaming(leader, 2, Duration::from_secs(90));
    let lp = c.nodes[leader].pg_port;
    // One role for superuser and replication: created by initdb, altered to replicate.
    assert_eq!(
        psql(
            lp,
            "SELECT rolsuper AND rolreplication FROM pg_roles WHERE rolname = 'postgres'"
        ),
        Ok("t".into())
    );
    // wal_keep_segments became wal_keep_size (8 × 16 MB) on PostgreSQL 13+.
    assert_eq!(psql(lp, "SHOW wal_keep_size"), Ok("128MB".into()));
    let data = c.nodes[leader].dir.join("pg/15/data");
    let mode = std::fs::metadata(&data)
        .expect("data dir")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o700, "{}", data.display());
    // The member key is under the scope from PATRONI_SCOPE, with the string tag cast.
    let member = c
        .etcd
        .get(&format!("/service/dropin/members/{}", c.nodes[leader].name))
        .expect("member key");
    let member: serde_json::Value = serde_json::from_str(&member).expect("member json");
    assert_eq!(member["tags"]["failover_priority"], 1, "{member}");

    // Fail over: the leader's host dies; another node leads, the old one rejoins.
    psql(
        lp,
        "CREATE TABLE dropin (v int); INSERT INTO dropin VALUES (1)",
    )
    .expect("write");
    c.wait_streaming(leader, 2, Duration::from_secs(30));
    c.nodes[leader].crash();
    let new = wait_for("a new leader", Duration::from_secs(60), || {
        c.leader().filter(|l| *l != leader)
    });
    let np = c.nodes[new].pg_port;
    assert_eq!(psql(np, "SELECT count(*) FROM dropin"), Ok("1".into()));
    psql(np, "INSERT INTO dropin VALUES (2)").expect("write on the new leader");
    c.nodes[leader].start();
    c.wait_streaming(new, 2, Duration::from_secs(90));
    let old = c.nodes[leader].pg_port;
    wait_for(
        "the old leader to replay the new write",
        Duration::from_secs(30),
        || (psql(old, "SELECT count(*) FROM dropin").ok()? == "2").then_some(()),
    );
}

#[test]
fn the_same_configuration_with_a_key_regent_cannot_honour_is_refused_in_one_line() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let node = Node::new(
        tmp.path(),
        "pg1",
        &["127.0.0.1:1".into()],
        &NodeSpec::default(),
    );
    let mut env = patroni_env(&node, "127.0.0.1:1");
    env.push(("PATRONI_LOG_LEVEL".into(), "INFO".into()));
    let file = tmp.path().join("patroni.yml");
    let run = |yaml: &str, sub: &str| {
        std::fs::write(&file, yaml).expect("write");
        Command::new(REGENT)
            .args([sub, &file.display().to_string()])
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .output()
            .expect("run regent")
    };
    // Without the key the configuration is valid (the data directory's parent is missing,
    // which is fine).
    let ok = run(&patroni_yaml(""), "validate-config");
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    for (extra, key) in [("citus:\n  group: 0\n  database: citus\n", "citus")] {
        let yaml = patroni_yaml(extra);
        for sub in ["validate-config", "run"] {
            let out = run(&yaml, sub);
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success(), "{sub} {key}: {err}");
            let line = err
                .lines()
                .find(|l| l.starts_with("error:"))
                .unwrap_or_else(|| panic!("{sub} {key}: no error line in {err}"));
            assert!(
                line.contains(&format!(
                    "{key}: Patroni setting not supported by Regent yet"
                )),
                "{line}"
            );
        }
    }
}

/// A Patroni process run as the PostgreSQL OS user, stopped as an operator stops it (SIGTERM:
/// Patroni stops PostgreSQL, then exits).
struct Patroni {
    child: std::process::Child,
}

impl Patroni {
    fn start(venv: &std::path::Path, node: &Node, env: &[(String, String)]) -> Patroni {
        let log = std::fs::File::create(node.dir.join("patroni.log")).expect("log");
        let child = Command::new("setpriv")
            .args([
                "--reuid=postgres",
                "--regid=postgres",
                "--init-groups",
                "--",
            ])
            .arg(venv.join("bin/patroni"))
            .arg(&node.config)
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            // Patroni writes its pgpass file in the home directory unless told otherwise.
            .env("HOME", &node.dir)
            .stdout(log.try_clone().expect("dup"))
            .stderr(log)
            .spawn()
            .expect("start patroni");
        Patroni { child }
    }

    fn stop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while std::time::Instant::now() < deadline {
            if self.child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Patroni {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The operator's move the issue names: a node of a running Patroni cluster is stopped and
/// started again with `regent run` on the same file and the same environment. It joins the
/// Patroni leader as a streaming replica; Patroni's own `patronictl switchover` then makes the
/// Regent node the leader, and the Patroni node follows it.
#[test]
fn a_patroni_node_switched_to_regent_run_joins_its_cluster_and_can_lead_it() {
    let _g = serial();
    let mut c = Cluster::new(2, NodeSpec::default());
    // Patroni runs as `postgres`: its virtualenv must be made with a Python that user can
    // run (the system's), and live where it can reach it.
    let python = ["/usr/bin/python3", "python3"]
        .into_iter()
        .find(|p| Command::new(p).arg("--version").output().is_ok())
        .expect("a python3");
    let venv = match patroni_venv(&c.tmp.path().join("patroni-venv"), python) {
        Ok(v) => v,
        Err(why) => {
            skip(
                "a_patroni_node_switched_to_regent_run_joins_its_cluster_and_can_lead_it",
                &format!("Patroni is needed and {why}"),
            );
            return;
        }
    };
    let etcd = c.etcd.endpoint();
    let envs: Vec<Vec<(String, String)>> = c
        .nodes
        .iter()
        .map(|n| {
            std::fs::write(&n.config, patroni_yaml("")).expect("write patroni.yml");
            let mut env = patroni_env(n, &etcd);
            for (k, v) in &mut env {
                if k == "PATRONI_POSTGRESQL_DATA_DIR" {
                    *v = n.dir.join("data").display().to_string();
                }
            }
            env
        })
        .collect();
    let mut first = Patroni::start(&venv, &c.nodes[0], &envs[0]);
    let leader = c.wait_leader(Duration::from_secs(90));
    assert_eq!(leader, 0, "the first Patroni node bootstraps");
    let mut second = Patroni::start(&venv, &c.nodes[1], &envs[1]);
    c.wait_streaming(0, 1, Duration::from_secs(90));
    let lp = c.nodes[0].pg_port;
    psql(
        lp,
        "CREATE TABLE mixed (v int); INSERT INTO mixed VALUES (1)",
    )
    .expect("write");

    // The switch: stop Patroni on the second node, start regent run with the same file and
    // environment.
    second.stop();
    c.nodes[1].env = envs[1].clone();
    c.nodes[1].start();
    c.wait_streaming(0, 1, Duration::from_secs(90));
    psql(lp, "INSERT INTO mixed VALUES (2)").expect("write on the Patroni leader");
    let rp = c.nodes[1].pg_port;
    wait_for(
        "the Regent replica to replay the Patroni leader's writes",
        Duration::from_secs(30),
        || (psql(rp, "SELECT count(*) FROM mixed").ok()? == "2").then_some(()),
    );
    wait_for(
        "the Regent node to say it is a healthy replica",
        Duration::from_secs(30),
        || c.nodes[1].http_get("/replica").filter(|(s, _)| *s == 200),
    );

    // Patroni's own tool hands the leadership to the Regent node; the Patroni node follows.
    let r = run(Command::new(venv.join("bin/patronictl"))
        .args([
            "--dcs-url",
            &format!("etcd3://{etcd}"),
            "switchover",
            "dropin",
            "--leader",
            &c.nodes[0].name,
            "--candidate",
            &c.nodes[1].name,
            "--force",
        ])
        .env("LC_ALL", "C.UTF-8")
        .env("LANG", "C.UTF-8"));
    assert!(r.ok(), "patronictl switchover to the Regent node: {r:?}");
    wait_for("the Regent node to lead", Duration::from_secs(60), || {
        (psql(rp, "SELECT NOT pg_is_in_recovery()").ok()? == "t").then_some(())
    });
    psql(rp, "INSERT INTO mixed VALUES (3)").expect("write on the Regent leader");
    wait_for(
        "the Patroni node to follow the Regent leader",
        Duration::from_secs(60),
        || (psql(lp, "SELECT count(*) FROM mixed").ok()? == "3").then_some(()),
    );
    first.stop();
}
