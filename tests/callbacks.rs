//! Patroni's script callbacks against real `regent` processes, etcd and PostgreSQL: a
//! recording script (written by the test) appends its arguments, a timestamp and its pid to a
//! file, and the tests read which callback ran when, with which ACTION ROLE SCOPE: `on_start`
//! at bootstrap, `on_reload` with the command a reload just read, `on_role_change` on a
//! switchover and a failover, `on_stop` at shutdown after `before_stop` (which sees PostgreSQL
//! still running), a slow callback killed by the next one while the leader keeps its key, and
//! `pre_promote` vetoing a promotion.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use support::*;

/// The recording script: `rec.sh NODE ACTION [ROLE SCOPE | DATA_DIR]`. It records
/// `TIMESTAMP NODE ACTION ... pg=up|down pid=PID` and prints `recorded NODE ACTION`; with a
/// file `slow-NODE-ACTION` beside it, it then sleeps 30 s (or the seconds the file holds) and
/// records `... end`;
/// `pre_promote` exits 1 while `veto-NODE` exists.
const SCRIPT: &str = r#"#!/bin/sh
dir=$(dirname "$0")
node=$1
action=$2
pg=""
case "$action" in
  before_stop|pre_promote)
    if [ -f "$3/postmaster.pid" ]; then pg="pg=up"; else pg="pg=down"; fi ;;
esac
echo "$(date +%s.%N) $node $action $3 $4 $5 $pg pid=$$" >> "$dir/record.log"
echo "recorded $node $action"
if [ -f "$dir/slow-$node-$action" ]; then
  secs=$(cat "$dir/slow-$node-$action")
  sleep "${secs:-30}"
  echo "$(date +%s.%N) $node $action end pid=$$" >> "$dir/record.log"
fi
if [ "$action" = pre_promote ] && [ -f "$dir/veto-$node" ]; then exit 1; fi
exit 0
"#;

/// One recorded call: the seconds since the epoch and the words after the timestamp.
#[derive(Debug, Clone)]
struct Call {
    at: f64,
    words: Vec<String>,
}

impl Call {
    fn is(&self, node: &str, action: &str) -> bool {
        self.words.first().map(String::as_str) == Some(node)
            && self.words.get(1).map(String::as_str) == Some(action)
    }
    fn pid(&self) -> Option<i32> {
        self.words
            .iter()
            .find_map(|w| w.strip_prefix("pid=")?.parse().ok())
    }
}

struct Recorder {
    dir: PathBuf,
}

impl Recorder {
    /// Writes the script into a directory whose name has a space (the command line quotes
    /// it: split as a shell would).
    fn new(base: &Path) -> Recorder {
        let dir = base.join("cb scripts");
        std::fs::create_dir_all(&dir).expect("script dir");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).expect("chmod");
        let script = dir.join("rec.sh");
        std::fs::write(&script, SCRIPT).expect("write script");
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        Recorder { dir }
    }

    fn command(&self, node: &str, tail: &str) -> String {
        format!("'{}' {node}{tail}", self.dir.join("rec.sh").display())
    }

    /// Give `node` every callback, `pre_promote` and `before_stop`, in its YAML.
    fn configure(&self, node: &Node) {
        let text = std::fs::read_to_string(&node.config).expect("read config");
        let mut doc: serde_yaml::Value = serde_yaml::from_str(&text).expect("parse config");
        let data = node.dir.join("data");
        let mut cbs = serde_yaml::Mapping::new();
        for a in [
            "on_start",
            "on_stop",
            "on_restart",
            "on_reload",
            "on_role_change",
        ] {
            cbs.insert(a.into(), self.command(&node.name, "").into());
        }
        let pg = doc
            .get_mut("postgresql")
            .and_then(|v| v.as_mapping_mut())
            .expect("postgresql section");
        pg.insert("callbacks".into(), serde_yaml::Value::Mapping(cbs));
        for key in ["pre_promote", "before_stop"] {
            pg.insert(
                key.into(),
                self.command(&node.name, &format!(" {key} {}", data.display()))
                    .into(),
            );
        }
        std::fs::write(
            &node.config,
            serde_yaml::to_string(&doc).expect("render config"),
        )
        .expect("write config");
    }

    /// Set `postgresql.callbacks.<action>` of `node` to `command` in its YAML.
    fn set_callback(&self, node: &Node, action: &str, command: &str) {
        let text = std::fs::read_to_string(&node.config).expect("read config");
        let mut doc: serde_yaml::Value = serde_yaml::from_str(&text).expect("parse config");
        let cbs = doc
            .get_mut("postgresql")
            .and_then(|v| v.get_mut("callbacks"))
            .and_then(|v| v.as_mapping_mut())
            .expect("callbacks section");
        cbs.insert(action.into(), command.into());
        std::fs::write(
            &node.config,
            serde_yaml::to_string(&doc).expect("render config"),
        )
        .expect("write config");
    }

    fn calls(&self) -> Vec<Call> {
        std::fs::read_to_string(self.dir.join("record.log"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let mut w = l.split_whitespace();
                let at = w.next()?.parse().ok()?;
                Some(Call {
                    at,
                    words: w.map(String::from).collect(),
                })
            })
            .collect()
    }

    fn flag(&self, name: &str, on: bool) {
        self.flag_with(name, on, "");
    }

    fn flag_with(&self, name: &str, on: bool, content: &str) {
        let p = self.dir.join(name);
        if on {
            std::fs::write(p, content).expect("flag");
        } else {
            let _ = std::fs::remove_file(p);
        }
    }

    /// Wait for a call matching `pred` recorded after `n` calls; returns it.
    fn wait(&self, what: &str, from: usize, pred: impl Fn(&Call) -> bool) -> Call {
        wait_for_or(
            what,
            Duration::from_secs(60),
            || self.calls().into_iter().skip(from).find(|c| pred(c)),
            || format!("recorded: {:#?}", self.calls()),
        )
    }
}

fn expect_words(c: &Call, words: &[&str]) {
    let got: Vec<&str> = c
        .words
        .iter()
        .map(String::as_str)
        .take(words.len())
        .collect();
    assert_eq!(got, words, "{c:?}");
}

/// A cluster of `n` nodes with the recording callbacks, healthy.
fn cluster(n: usize) -> (Cluster, Recorder, usize) {
    let mut c = Cluster::new(n, NodeSpec::default());
    let rec = Recorder::new(c.tmp.path());
    for node in &c.nodes {
        rec.configure(node);
    }
    c.start_all();
    let leader = c.wait_leader(Duration::from_secs(90));
    c.wait_streaming(leader, n - 1, Duration::from_secs(90));
    (c, rec, leader)
}

fn process_alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        !s.rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z')
    })
}

/// Bootstrap, a reload that changes a callback, a slow `on_restart` outliving the lease while the leader keeps its key and then
/// killed by the next callback, a switchover, and a shutdown.
#[test]
fn callbacks_run_on_bootstrap_restart_switchover_and_shutdown() {
    let _g = serial();
    let (mut c, rec, leader) = cluster(2);
    let replica = 1 - leader;
    let (ln, rn) = (c.nodes[leader].name.clone(), c.nodes[replica].name.clone());

    // Bootstrap: on_start with the role and the scope on each node.
    let s = rec.wait("the leader's on_start", 0, |k| k.is(&ln, "on_start"));
    expect_words(&s, &[&ln, "on_start", "primary", "test"]);
    let s = rec.wait("the replica's on_start", 0, |k| k.is(&rn, "on_start"));
    expect_words(&s, &[&rn, "on_start", "replica", "test"]);

    // A reload runs on_reload, with the command the reload just read.
    let relabelled = format!("{ln}-reloaded");
    rec.set_callback(&c.nodes[leader], "on_reload", &rec.command(&relabelled, ""));
    let n = rec.calls().len();
    let r = http_request_at(
        "127.0.0.1",
        c.nodes[leader].api_port,
        "POST",
        "/reload",
        None,
        Duration::from_secs(30),
    );
    assert!(r.as_ref().is_some_and(|(s, _)| *s < 300), "reload: {r:?}");
    let s = rec.wait("on_reload with the new command", n, |k| {
        k.is(&relabelled, "on_reload")
    });
    expect_words(&s, &[&relabelled, "on_reload", "primary", "test"]);

    // A slow on_restart on the leader: the loop goes on and keeps the key for longer than
    // the ttl (10 s) while the script sleeps.
    rec.flag(&format!("slow-{ln}-on_restart"), true);
    let n = rec.calls().len();
    let r = http_request_at(
        "127.0.0.1",
        c.nodes[leader].api_port,
        "POST",
        "/restart",
        Some("{}"),
        Duration::from_secs(60),
    );
    assert!(r.as_ref().is_some_and(|(s, _)| *s == 200), "restart: {r:?}");
    let slow = rec.wait("the slow on_restart", n, |k| k.is(&ln, "on_restart"));
    expect_words(&slow, &[&ln, "on_restart", "primary", "test"]);
    let slow_pid = slow.pid().expect("pid");
    let key = c.leader_key();
    let watch_from = Instant::now();
    let mut checks = 0;
    while watch_from.elapsed() < Duration::from_secs(15) {
        assert_eq!(
            c.leader_key(),
            key,
            "the leader key changed while a callback slept"
        );
        assert!(process_alive(slow_pid), "the slow callback died early");
        checks += 1;
        std::thread::sleep(Duration::from_millis(500));
    }
    println!(
        "leader key held by {ln} for {:?} ({checks} checks) while on_restart slept",
        watch_from.elapsed()
    );
    // The next callback (on_restart again) kills the sleeping one, with its `sleep`.
    rec.flag(&format!("slow-{ln}-on_restart"), false);
    let n = rec.calls().len();
    let r = http_request_at(
        "127.0.0.1",
        c.nodes[leader].api_port,
        "POST",
        "/restart",
        Some("{}"),
        Duration::from_secs(60),
    );
    assert!(r.as_ref().is_some_and(|(s, _)| *s == 200), "restart: {r:?}");
    rec.wait("the second on_restart", n, |k| k.is(&ln, "on_restart"));
    wait_for(
        "the slow callback to be killed",
        Duration::from_secs(10),
        || (!process_alive(slow_pid)).then_some(()),
    );
    let log = c.nodes[leader].log();
    assert!(
        log.contains("killing the callback still running"),
        "the kill is not logged"
    );
    assert!(
        log.contains(&format!("recorded {ln} on_restart")),
        "the script's output is not logged"
    );
    assert!(
        !rec.calls()
            .iter()
            .any(|k| k.is(&ln, "on_restart") && k.words.get(2).map(String::as_str) == Some("end")),
        "the killed callback finished: {:#?}",
        rec.calls()
    );

    // Switchover: pre_promote (PostgreSQL up) then on_role_change primary on the candidate;
    // on_role_change replica on the old leader, and no on_start after it.
    c.wait_all_nodes("running", |d| d["state"] == "running");
    wait_for(
        "the replica to report healthy",
        Duration::from_secs(30),
        || {
            c.nodes[replica]
                .http_get("/replica")
                .is_some_and(|(s, _)| s == 200)
                .then_some(())
        },
    );
    let n = rec.calls().len();
    c.etcd.put(
        "/service/test/failover",
        &format!(r#"{{"leader":"{ln}","member":"{rn}"}}"#),
    );
    let pre = rec.wait("the candidate's pre_promote", n, |k| {
        k.is(&rn, "pre_promote")
    });
    assert!(pre.words.iter().any(|w| w == "pg=up"), "{pre:?}");
    let up = rec.wait("the new leader's on_role_change", n, |k| {
        k.is(&rn, "on_role_change")
    });
    expect_words(&up, &[&rn, "on_role_change", "primary", "test"]);
    assert!(pre.at <= up.at, "pre_promote after the promotion");
    let down = rec.wait("the old leader's on_role_change", n, |k| {
        k.is(&ln, "on_role_change")
    });
    expect_words(&down, &[&ln, "on_role_change", "replica", "test"]);
    c.wait_streaming(replica, 1, Duration::from_secs(60));
    assert!(
        !rec.calls().iter().skip(n).any(|k| k.is(&ln, "on_start")),
        "on_start after a demotion: {:#?}",
        rec.calls()
    );

    // Shutdown of the new leader: before_stop while PostgreSQL runs, then on_stop primary.
    let n = rec.calls().len();
    c.nodes[replica].signal(nix::sys::signal::Signal::SIGTERM);
    c.nodes[replica].wait_exit(Duration::from_secs(60));
    let bs = rec.wait("before_stop", n, |k| k.is(&rn, "before_stop"));
    assert!(bs.words.iter().any(|w| w == "pg=up"), "{bs:?}");
    let stop = rec.wait("on_stop", n, |k| k.is(&rn, "on_stop"));
    expect_words(&stop, &[&rn, "on_stop", "primary", "test"]);
    assert!(bs.at <= stop.at, "before_stop after on_stop");
    println!("recorded calls: {:#?}", rec.calls());
}

/// `pre_promote` exiting 1 vetoes the promotion after the leader crashed: the node never runs
/// as primary and releases the key; once the script exits 0, a later attempt promotes it,
/// although the script takes 9 s, past the write deadline of a lease not renewed meanwhile
/// (ttl 10 s less the 2 s margin).
#[test]
fn pre_promote_vetoes_a_failover_until_it_succeeds() {
    let _g = serial();
    let (mut c, rec, leader) = cluster(2);
    let replica = 1 - leader;
    let rn = c.nodes[replica].name.clone();
    rec.flag(&format!("veto-{rn}"), true);
    let n = rec.calls().len();
    let crashed = Instant::now();
    c.nodes[leader].crash();
    let first = rec.wait("a vetoed pre_promote", n, |k| k.is(&rn, "pre_promote"));
    // The veto holds: the node stays a replica while it backs off and tries again.
    let second = rec.wait("a second pre_promote", n, |k| {
        k.is(&rn, "pre_promote") && k.at > first.at
    });
    let gap = second.at - first.at;
    assert!(
        gap >= 9.0,
        "raced again {gap:.1} s after the veto (ttl 10 s)"
    );
    assert_eq!(
        psql(c.nodes[replica].pg_port, "SELECT pg_is_in_recovery()").as_deref(),
        Ok("t"),
        "promoted despite the veto"
    );
    assert!(
        !rec.calls().iter().any(|k| k.is(&rn, "on_role_change")),
        "{:#?}",
        rec.calls()
    );
    assert!(
        c.node(&rn)
            .log()
            .contains("pre_promote script exited with 1"),
        "the veto is not logged"
    );
    // The script succeeds from now on, slowly: a later attempt promotes.
    rec.flag_with(&format!("slow-{rn}-pre_promote"), true, "9");
    rec.flag(&format!("veto-{rn}"), false);
    let up = rec.wait("on_role_change primary", n, |k| k.is(&rn, "on_role_change"));
    expect_words(&up, &[&rn, "on_role_change", "primary", "test"]);
    let last = rec
        .calls()
        .into_iter()
        .rev()
        .find(|k| {
            k.is(&rn, "pre_promote")
                && k.at < up.at
                && k.words.get(2).map(String::as_str) != Some("end")
        })
        .expect("the pre_promote before the promotion");
    assert!(
        up.at - last.at >= 9.0,
        "promoted {:.1} s after pre_promote started",
        up.at - last.at
    );
    wait_for("the node to accept writes", Duration::from_secs(30), || {
        (psql(c.nodes[replica].pg_port, "SELECT pg_is_in_recovery()").ok()? == "f").then_some(())
    });
    println!(
        "vetoed at {:.1} s and {:.1} s after the crash; pre_promote started again at {:.1} s \
         and ran {:.1} s; promoted {:.1} s after the crash",
        first.at - unix_at(crashed),
        second.at - unix_at(crashed),
        last.at - unix_at(crashed),
        up.at - last.at,
        up.at - unix_at(crashed)
    );
}

/// The Unix time (s) of an `Instant` in the past.
fn unix_at(t: Instant) -> f64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default();
    now - t.elapsed().as_secs_f64()
}
