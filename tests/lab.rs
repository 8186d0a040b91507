//! The docker-compose lab (`docker-compose.yml`), for real.
//!
//! The images are built offline, as on a machine without an image registry:
//! `docker/build-base-image.sh` debootstraps the base image (cached across runs), and the lab
//! image takes this build's `regent` binary (`REGENT=prebuilt`). The lab then comes up under a
//! project name of its own, and the test crashes (`docker kill`), stops (`docker stop`) and
//! partitions (`docker network disconnect`) the leader while a writer writes through HAProxy,
//! and hot-swaps a policy file on the host. Finally `down -v` must leave nothing behind.
//!
//! How the test reaches the lab:
//! - HAProxy and each node's REST API through the ports the compose file publishes on
//!   127.0.0.1 (picked free here, so the test never collides with a lab a user runs);
//! - each node's PostgreSQL with `docker exec <node> psql` on the node's own Unix socket. That
//!   path does not use the `cluster` network, so it still sees a node that the partition cut
//!   off (a node's published ports go away with its only network): this is how the
//!   split-brain watch knows whether the isolated old leader still accepts writes.
//!
//! Skipped, with a loud message, only where there is no Docker engine. Everything the test
//! creates is removed when it ends, failed or not; leftovers of an earlier run whose process is
//! gone are removed at the start.

mod support;

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::{REGENT, free_port, http_get, http_request_at, skip, wait_for};

/// Projects of this test are named `regent-labtest-<pid>-<unix seconds>`.
const PROJECT_PREFIX: &str = "regent-labtest-";
const BASE_IMAGE: &str = "regent-lab-base:bookworm";
/// The superuser password of docker/node*.yml.
const PG_PASSWORD: &str = "postgres-secret";
const PSQL: &str = "/usr/lib/postgresql/15/bin/psql";
const NODES: usize = 3;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the repository root above host/")
        .to_path_buf()
}

/// Run a command to completion within `timeout` (killed after it). None: did not start or
/// did not finish in time.
fn run_for(cmd: &mut Command, timeout: Duration) -> Option<Output> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .ok()?;
    // Drain the pipes on threads so a chatty child never blocks on a full pipe.
    let mut out = child.stdout.take()?;
    let mut err = child.stderr.take()?;
    let t_out = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = std::io::Read::read_to_end(&mut out, &mut b);
        b
    });
    let t_err = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = std::io::Read::read_to_end(&mut err, &mut b);
        b
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Ok(Some(s)) = child.try_wait() {
            break Some(s);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let stdout = t_out.join().unwrap_or_default();
    let stderr = t_err.join().unwrap_or_default();
    status.map(|status| Output {
        status,
        stdout,
        stderr,
    })
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).trim().to_string()
}

/// `docker ARGS`, which must succeed; returns stdout.
fn docker(args: &[&str]) -> String {
    let out = run_for(Command::new("docker").args(args), Duration::from_secs(120))
        .unwrap_or_else(|| panic!("docker {args:?} did not finish within 120 s"));
    assert!(
        out.status.success(),
        "docker {args:?} failed: {}",
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// `docker ARGS`, allowed to fail (cleanup, probes).
fn docker_quiet(args: &[&str]) -> Option<String> {
    let out = run_for(Command::new("docker").args(args), Duration::from_secs(60))?;
    out.status.success().then(|| text(&out.stdout))
}

fn lines(s: &str) -> Vec<String> {
    s.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect()
}

/// `docker compose` (v2) if the plugin is there, else `docker-compose` (v1).
fn compose_command() -> Option<Vec<String>> {
    let ok = |prog: &str, args: &[&str]| {
        run_for(Command::new(prog).args(args), Duration::from_secs(30))
            .is_some_and(|o| o.status.success())
    };
    if ok("docker", &["compose", "version"]) {
        Some(vec!["docker".into(), "compose".into()])
    } else if ok("docker-compose", &["version"]) {
        Some(vec!["docker-compose".into()])
    } else {
        None
    }
}

/// Remove what runs of this test left behind whose process no longer exists (a run killed
/// before its cleanup could run). Runs of other live processes are left alone.
fn remove_stale_runs() {
    let fmt = "{{.Label \"com.docker.compose.project\"}}";
    let filter = "label=com.docker.compose.project";
    let mut projects = BTreeSet::new();
    for kind in [
        vec!["ps", "-a"],
        vec!["network", "ls"],
        vec!["volume", "ls"],
    ] {
        let mut args = kind.clone();
        args.extend(["--filter", filter, "--format", fmt]);
        projects.extend(lines(&docker_quiet(&args).unwrap_or_default()));
    }
    for p in projects {
        let Some(rest) = p.strip_prefix(PROJECT_PREFIX) else {
            continue;
        };
        let pid = rest.split('-').next().and_then(|s| s.parse::<u32>().ok());
        if pid.is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists()) {
            continue;
        }
        eprintln!("lab: removing the leftovers of an earlier run: project {p}");
        remove_project_objects(&p);
    }
}

/// Remove every container, network and volume labelled with compose project `p`, and its
/// images, with plain docker commands (works whatever state compose left).
fn remove_project_objects(p: &str) {
    let label = format!("label=com.docker.compose.project={p}");
    let ids = lines(&docker_quiet(&["ps", "-aq", "--filter", &label]).unwrap_or_default());
    if !ids.is_empty() {
        let mut args = vec!["rm", "-f", "-v"];
        args.extend(ids.iter().map(String::as_str));
        docker_quiet(&args);
    }
    for (kind, list) in [("network", "ls"), ("volume", "ls")] {
        let ids = lines(&docker_quiet(&[kind, list, "-q", "--filter", &label]).unwrap_or_default());
        for id in ids {
            docker_quiet(&[kind, "rm", &id]);
        }
    }
    for image in [
        format!("regent-lab:{p}"),
        format!("regent-lab-prometheus:{p}"),
    ] {
        docker_quiet(&["rmi", &image]);
    }
}

// -------------------------------------------------------------------------------------------
// The lab
// -------------------------------------------------------------------------------------------

struct Lab {
    compose: Vec<String>,
    project: String,
    env: Vec<(String, String)>,
    /// Each node's published REST port (node1..3 at 0..2).
    api: [u16; NODES],
    write_port: u16,
    read_port: u16,
    network: String,
    policies: PathBuf,
    _tmp: tempfile::TempDir,
}

impl Lab {
    fn new(compose: Vec<String>) -> Lab {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let project = format!("{PROJECT_PREFIX}{}-{secs}", std::process::id());
        let tmp = tempfile::Builder::new()
            .prefix("regent-lab-")
            .tempdir()
            .expect("tempdir");
        // The nodes' policies_dir: a copy of the repository's policies/, so that the test can
        // replace a file in it without touching the repository.
        let policies = tmp.path().join("policies");
        std::fs::create_dir(&policies).expect("mkdir policies");
        for e in std::fs::read_dir(root().join("policies")).expect("read policies/") {
            let e = e.expect("dir entry");
            let name = e.file_name();
            let name = name.to_string_lossy();
            if name.ends_with(".wasm") || name.ends_with(".toml") {
                std::fs::copy(e.path(), policies.join(&*name)).expect("copy a policy");
            }
        }
        let api = [free_port(), free_port(), free_port()];
        let (write_port, read_port) = (free_port(), free_port());
        let mut env: Vec<(String, String)> = vec![
            ("REGENT_LAB_TAG".into(), project.clone()),
            ("REGENT_LAB_PREFIX".into(), project.clone()),
            ("REGENT_LAB_BASE".into(), BASE_IMAGE.into()),
            ("REGENT_LAB_BUILDER".into(), BASE_IMAGE.into()),
            ("REGENT_LAB_REGENT".into(), "prebuilt".into()),
            ("REGENT_LAB_BINARY".into(), "target/lab/regent".into()),
            ("REGENT_LAB_POLICIES".into(), policies.display().to_string()),
            ("REGENT_LAB_BIND".into(), "127.0.0.1".into()),
            ("REGENT_LAB_PORT_WRITE".into(), write_port.to_string()),
            ("REGENT_LAB_PORT_READ".into(), read_port.to_string()),
            ("REGENT_LAB_PORT_STATS".into(), free_port().to_string()),
            ("REGENT_LAB_PORT_PROMETHEUS".into(), free_port().to_string()),
        ];
        for (i, p) in api.iter().enumerate() {
            env.push((format!("REGENT_LAB_PORT_NODE{}", i + 1), p.to_string()));
        }
        Lab {
            compose,
            network: format!("{project}-cluster"),
            project,
            env,
            api,
            write_port,
            read_port,
            policies,
            _tmp: tmp,
        }
    }

    fn compose_cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.compose[0]);
        c.args(&self.compose[1..])
            .arg("--project-name")
            .arg(&self.project)
            .arg("--file")
            .arg(root().join("docker-compose.yml"))
            .arg("--env-file")
            .arg(root().join("docker/offline.env"))
            .args(args)
            .current_dir(root())
            // Only the default services (a caller's COMPOSE_PROFILES would add Prometheus).
            .env_remove("COMPOSE_PROFILES")
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        c
    }

    /// A compose command that must succeed within `timeout`; returns stdout + stderr.
    fn compose(&self, args: &[&str], timeout: Duration) -> String {
        let out = run_for(&mut self.compose_cmd(args), timeout)
            .unwrap_or_else(|| panic!("compose {args:?} did not finish within {timeout:?}"));
        let all = format!("{}\n{}", text(&out.stdout), text(&out.stderr));
        assert!(out.status.success(), "compose {args:?} failed:\n{all}");
        all
    }

    fn container(&self, i: usize) -> String {
        format!("{}-node{}", self.project, i + 1)
    }

    fn name(i: usize) -> String {
        format!("node{}", i + 1)
    }

    fn rest(&self, i: usize, path: &str) -> Option<(u16, String)> {
        http_get(self.api[i], path)
    }

    fn rest_json(&self, i: usize, path: &str) -> Option<Value> {
        let (_, body) = self.rest(i, path)?;
        serde_json::from_str(&body).ok()
    }

    /// The node whose `/primary` answers 200 (through its published REST port).
    fn leader(&self) -> Option<usize> {
        (0..NODES).find(|&i| self.rest(i, "/primary").is_some_and(|(s, _)| s == 200))
    }

    /// The leader, once both other nodes stream from it and one of them is the published
    /// synchronous standby. Until then (for a few seconds after every
    /// failover) only the leader is eligible in synchronous mode, so a fault injected earlier
    /// would leave the cluster waiting for the old leader, in Regent as in Patroni.
    fn wait_settled(&self, timeout: Duration) -> usize {
        wait_for(
            "a leader with two streaming replicas, one of them synchronous",
            timeout,
            || {
                let l = self.leader()?;
                let st = self.rest_json(l, "/patroni")?;
                let streaming = st["replication"]
                    .as_array()?
                    .iter()
                    .filter(|r| r["state"] == "streaming")
                    .count();
                let sync = (0..NODES).filter(|&i| i != l).any(|i| {
                    self.rest_json(i, "/patroni")
                        .is_some_and(|r| r["sync_standby"] == true)
                });
                (streaming == NODES - 1 && sync).then_some(l)
            },
        )
    }

    /// Node `i` runs as a replica that streams from `leader`.
    fn wait_replica_of(&self, i: usize, leader: usize, timeout: Duration) {
        let me = Lab::name(i);
        wait_for(
            &format!("{me} to stream from {} as a replica", Lab::name(leader)),
            timeout,
            || {
                let st = self.rest_json(i, "/patroni")?;
                (st["role"] == "replica" && st["state"] == "running").then_some(())?;
                let l = self.rest_json(leader, "/patroni")?;
                l["replication"]
                    .as_array()?
                    .iter()
                    .any(|r| r["application_name"] == me.as_str() && r["state"] == "streaming")
                    .then_some(())
            },
        )
    }

    /// SQL on node `i` over its local socket, through `docker exec` (no network involved).
    fn psql(&self, i: usize, sql: &str) -> Result<String, String> {
        let c = self.container(i);
        let out = run_for(
            Command::new("docker").args([
                "exec",
                "-e",
                "PGCONNECT_TIMEOUT=2",
                "-e",
                "PGOPTIONS=-c statement_timeout=2000",
                &c,
                PSQL,
                "-h",
                "/var/lib/regent",
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-XAtq",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                sql,
            ]),
            Duration::from_secs(10),
        )
        .ok_or_else(|| format!("docker exec psql on {c} did not finish within 10 s"))?;
        if out.status.success() {
            Ok(text(&out.stdout))
        } else {
            Err(text(&out.stderr))
        }
    }

    /// Node `i` accepts a write right now (committed locally: the question is whether it runs
    /// as a writable primary, not whether a synchronous standby confirms).
    fn writable(&self, i: usize) -> bool {
        self.psql(
            i,
            "SET synchronous_commit = local; \
             INSERT INTO split_brain_probe VALUES (now()) RETURNING 1",
        )
        .is_ok_and(|s| s == "1")
    }

    /// Each node's address on the `cluster` network (what `inet_server_addr()` shows).
    fn addresses(&self) -> BTreeMap<String, usize> {
        let mut out = BTreeMap::new();
        for i in 0..NODES {
            let fmt = format!(
                "{{{{with index .NetworkSettings.Networks \"{}\"}}}}{{{{.IPAddress}}}}{{{{end}}}}",
                self.network
            );
            if let Some(ip) = docker_quiet(&["inspect", "-f", &fmt, &self.container(i)])
                && !ip.is_empty()
            {
                out.insert(ip, i);
            }
        }
        out
    }

    /// Every acknowledged id is on node `i` (the leader).
    fn assert_no_acked_write_lost(&self, i: usize, acks: &[Ack]) {
        let present: BTreeSet<i64> = self
            .psql(i, "SELECT id FROM acked")
            .expect("read the acked table on the leader")
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect();
        let lost: Vec<i64> = acks
            .iter()
            .map(|a| a.id)
            .filter(|id| !present.contains(id))
            .collect();
        assert!(
            lost.is_empty(),
            "{} acknowledged writes are missing on the leader {}: {:?}",
            lost.len(),
            Lab::name(i),
            &lost[..lost.len().min(20)]
        );
    }

    /// GET /policy: the digest of policy `name` on node `i`, and its rank-candidates calls.
    fn policy(&self, i: usize, name: &str) -> Option<(String, u64)> {
        let v = self.rest_json(i, "/policy")?;
        let p = v["policies"]
            .as_array()?
            .iter()
            .find(|p| p["name"] == name)?;
        Some((
            p["digest"].as_str()?.to_string(),
            p["calls"]["rank_candidates"].as_u64().unwrap_or(0),
        ))
    }

    fn dump_logs(&self) {
        if let Some(out) = run_for(
            &mut self.compose_cmd(&[
                "logs",
                "--no-color",
                "--tail",
                "80",
                "node1",
                "node2",
                "node3",
                "haproxy",
            ]),
            Duration::from_secs(60),
        ) {
            eprintln!("===== lab logs (the last 80 lines of each node and HAProxy) =====");
            eprintln!("{}", String::from_utf8_lossy(&out.stdout));
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.dump_logs();
        }
        let _ = run_for(
            &mut self.compose_cmd(&[
                "down",
                "--volumes",
                "--remove-orphans",
                "--rmi",
                "all",
                "--timeout",
                "10",
            ]),
            Duration::from_secs(180),
        );
        // Whatever compose did not remove (a failed `down`), and the images.
        remove_project_objects(&self.project);
        // The build stage of the image (untagged; docker/Dockerfile labels it).
        docker_quiet(&[
            "image",
            "prune",
            "--force",
            "--filter",
            "label=org.regent.lab.stage=build",
        ]);
    }
}

// -------------------------------------------------------------------------------------------
// The writer: inserts through HAProxy's write port, one row every 20 ms, and records each
// acknowledged id, when, and which server acknowledged it.
// -------------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
struct Ack {
    id: i64,
    at: Instant,
    server: String,
}

/// A thread that runs until told to stop; stopped and joined on drop.
struct Background {
    stop: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Background {
    fn spawn(f: impl FnOnce(Arc<AtomicBool>) + Send + 'static) -> Background {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        Background {
            stop,
            handle: Some(std::thread::spawn(move || f(s))),
        }
    }

    fn join(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.join();
    }
}

struct Writer {
    acks: Arc<Mutex<Vec<Ack>>>,
    failures: Arc<AtomicU64>,
    thread: Background,
}

impl Writer {
    fn start(port: u16) -> Writer {
        let acks = Arc::new(Mutex::new(Vec::new()));
        let failures = Arc::new(AtomicU64::new(0));
        let (a, f) = (acks.clone(), failures.clone());
        let thread = Background::spawn(move |stop| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("tokio runtime");
            rt.block_on(write_loop(port, stop, a, f));
        });
        Writer {
            acks,
            failures,
            thread,
        }
    }

    fn acks(&self) -> Vec<Ack> {
        self.acks.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The first write acknowledged after `t0` by a server other than `old`.
    fn first_ack_after(&self, t0: Instant, old: &str) -> Option<Ack> {
        self.acks()
            .into_iter()
            .find(|a| a.at > t0 && a.server != old)
    }

    fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    fn finish(mut self) -> Vec<Ack> {
        self.thread.join();
        self.acks()
    }
}

/// One query on a new connection through HAProxy's `port`: the first column of the first
/// row, as text.
fn query_via(port: u16, sql: &str) -> Result<String, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        let conninfo = format!(
            "host=127.0.0.1 port={port} user=postgres password={PG_PASSWORD} dbname=postgres \
             connect_timeout=2"
        );
        let (client, conn) = tokio_postgres::connect(&conninfo, tokio_postgres::NoTls)
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let row = client
            .query_one(sql, &[])
            .await
            .map_err(|e| e.to_string())?;
        row.try_get::<_, String>(0).map_err(|e| e.to_string())
    })
}

async fn write_loop(
    port: u16,
    stop: Arc<AtomicBool>,
    acks: Arc<Mutex<Vec<Ack>>>,
    failures: Arc<AtomicU64>,
) {
    let conninfo = format!(
        "host=127.0.0.1 port={port} user=postgres password={PG_PASSWORD} dbname=postgres \
         connect_timeout=2"
    );
    let mut client: Option<tokio_postgres::Client> = None;
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut id: i64 = 0;
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        if client.is_none() {
            match tokio::time::timeout(
                Duration::from_secs(2),
                tokio_postgres::connect(&conninfo, tokio_postgres::NoTls),
            )
            .await
            {
                Ok(Ok((c, conn))) => {
                    tokio::spawn(conn);
                    client = Some(c);
                }
                _ => {
                    failures.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
            }
        }
        let Some(c) = client.as_ref() else { continue };
        id += 1;
        let r = tokio::time::timeout(
            Duration::from_secs(2),
            c.query_one(
                "INSERT INTO acked (id) VALUES ($1) RETURNING host(inet_server_addr())",
                &[&id],
            ),
        )
        .await;
        match r {
            Ok(Ok(row)) => {
                let server: String = row.get(0);
                acks.lock().unwrap_or_else(|e| e.into_inner()).push(Ack {
                    id,
                    at: Instant::now(),
                    server,
                });
            }
            _ => {
                failures.fetch_add(1, Ordering::Relaxed);
                client = None;
            }
        }
    }
}

// -------------------------------------------------------------------------------------------
// The split-brain watch: rounds of "which nodes accept a write", all nodes probed at once.
// -------------------------------------------------------------------------------------------

struct Round {
    at: Instant,
    writable: Vec<usize>,
}

/// Joined, not just told to stop, when dropped: its thread holds the `Lab`, whose drop
/// cleans up.
struct Watch {
    rounds: Arc<Mutex<Vec<Round>>>,
    thread: Background,
}

impl Watch {
    fn start(lab: &Arc<Lab>) -> Watch {
        let rounds = Arc::new(Mutex::new(Vec::new()));
        let (r, lab) = (rounds.clone(), lab.clone());
        let thread = Background::spawn(move |stop| {
            while !stop.load(Ordering::Relaxed) {
                let at = Instant::now();
                let writable = std::thread::scope(|sc| {
                    let hs: Vec<_> = (0..NODES)
                        .map(|i| {
                            let lab = &lab;
                            sc.spawn(move || lab.writable(i).then_some(i))
                        })
                        .collect();
                    hs.into_iter()
                        .filter_map(|h| h.join().ok().flatten())
                        .collect()
                });
                r.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(Round { at, writable });
            }
        });
        Watch { rounds, thread }
    }

    /// A round that started after `t` found node `i` writable.
    fn writable_since(&self, t: Instant, i: usize) -> bool {
        self.rounds
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .any(|r| r.at > t && r.writable.contains(&i))
    }

    fn finish(mut self) -> Vec<Round> {
        self.thread.join();
        std::mem::take(&mut *self.rounds.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

// -------------------------------------------------------------------------------------------

/// What the test measured, printed at the end (and as it goes).
#[derive(Default)]
struct Report(Vec<(String, String)>);

impl Report {
    fn add(&mut self, what: &str, value: String) {
        eprintln!("lab: {what}: {value}");
        self.0.push((what.to_string(), value));
    }
    fn time(&mut self, what: &str, d: Duration) {
        self.add(what, format!("{:.2} s", d.as_secs_f64()));
    }
}

/// A failover as seen from outside, measured from `t0`: when another node's `/primary`
/// answered 200, and when HAProxy delivered the first write that another node acknowledged.
/// `addresses`: the nodes' addresses taken before the fault.
struct Failover {
    new_leader: usize,
    rest: Duration,
    writes: Duration,
}

fn watch_failover(
    lab: &Lab,
    w: &Writer,
    (t0, old): (Instant, usize),
    addresses: &BTreeMap<String, usize>,
    timeout: Duration,
) -> Failover {
    let old_ip = address_of(addresses, old);
    let mut rest = None;
    let first = wait_for(
        "writes through HAProxy to resume on another node",
        timeout,
        || {
            if rest.is_none()
                && (0..NODES)
                    .filter(|&i| i != old)
                    .any(|i| lab.rest(i, "/primary").is_some_and(|(s, _)| s == 200))
            {
                rest = Some(t0.elapsed());
            }
            w.first_ack_after(t0, &old_ip)
        },
    );
    let new_leader = *addresses
        .get(&first.server)
        .unwrap_or_else(|| panic!("{} acknowledged a write: not a lab node", first.server));
    assert_ne!(new_leader, old, "the new leader is another node");
    let writes = first.at.duration_since(t0);
    Failover {
        new_leader,
        rest: rest.unwrap_or(writes),
        writes,
    }
}

/// Node `i`'s address in `addresses`.
fn address_of(addresses: &BTreeMap<String, usize>, i: usize) -> String {
    addresses
        .iter()
        .find(|(_, n)| **n == i)
        .map(|(ip, _)| ip.clone())
        .expect("the node's address on the cluster network")
}

/// A copy of a WebAssembly component with one custom section appended: a new file, hence a
/// new digest, with the same behaviour (custom sections are not executed). The section is
/// under 128 bytes, so each length is a one-byte LEB128.
fn with_custom_section(wasm: &[u8], name: &str, payload: &[u8]) -> Vec<u8> {
    let content_len = 1 + name.len() + payload.len();
    assert!(content_len < 128, "a short custom section");
    let mut out = wasm.to_vec();
    out.push(0); // section id 0: custom
    out.push(content_len as u8);
    out.push(name.len() as u8);
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(payload);
    out
}

fn sha256_hex(b: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

/// This build's regent, stripped, at target/lab/regent (inside the image's build context).
fn stage_binary() {
    let dir = root().join("target/lab");
    std::fs::create_dir_all(&dir).expect("mkdir target/lab");
    let tmp = dir.join(format!(".regent.{}", std::process::id()));
    let stripped = Command::new("strip")
        .arg("-o")
        .arg(&tmp)
        .arg(REGENT)
        .status()
        .is_ok_and(|s| s.success());
    if !stripped {
        std::fs::copy(REGENT, &tmp).expect("copy the regent binary");
    }
    std::fs::rename(&tmp, dir.join("regent")).expect("move the regent binary into place");
}

/// `docker start` the old leader `old`: it rejoins as a replica of `leader`.
fn start_as_replica(lab: &Lab, report: &mut Report, old: usize, leader: usize, what: &str) {
    let t = Instant::now();
    docker(&["start", &lab.container(old)]);
    lab.wait_replica_of(old, leader, Duration::from_secs(120));
    report.time(
        &format!("docker start -> the {what} leader streams as a replica"),
        t.elapsed(),
    );
}

/// `docker kill` the leader: a crash. Writes resume on another node; the old leader comes back
/// as a replica after `docker start`. Returns the new leader.
fn crash_leader(lab: &Lab, w: &Writer, report: &mut Report, old: usize) -> usize {
    let addresses = lab.addresses();
    let t0 = Instant::now();
    docker(&["kill", &lab.container(old)]);
    let f = watch_failover(lab, w, (t0, old), &addresses, Duration::from_secs(60));
    report.time(
        "docker kill leader -> another node answers /primary 200",
        f.rest,
    );
    report.time(
        "docker kill leader -> writes resume through HAProxy",
        f.writes,
    );
    report.add("leader after the kill", Lab::name(f.new_leader));
    lab.assert_no_acked_write_lost(f.new_leader, &w.acks());
    start_as_replica(lab, report, old, f.new_leader, "killed");
    f.new_leader
}

/// Replace zone-aware.wasm in the mounted policies directory by rename-into-place, with a
/// new build (the same code plus a custom section): every node must serve the new digest
/// within 5 s. Returns the new digest.
fn swap_policy(lab: &Lab, report: &mut Report) -> String {
    let path = lab.policies.join("zone-aware.wasm");
    let before = std::fs::read(&path).expect("read zone-aware.wasm");
    let new = with_custom_section(&before, "regent-lab-test", lab.project.as_bytes());
    let (old_digest, new_digest) = (sha256_hex(&before), sha256_hex(&new));
    for i in 0..NODES {
        assert_eq!(
            lab.policy(i, "zone-aware").map(|p| p.0).as_deref(),
            Some(old_digest.as_str()),
            "{} serves the repository's zone-aware.wasm before the swap",
            Lab::name(i)
        );
    }
    let tmp = lab.policies.join(".zone-aware.wasm.new");
    std::fs::write(&tmp, &new).expect("write the new component");
    let t0 = Instant::now();
    std::fs::rename(&tmp, &path).expect("rename the new component into place");
    let mut seen = [None; NODES];
    wait_for(
        "every node to serve the new zone-aware digest",
        Duration::from_secs(5),
        || {
            for (i, s) in seen.iter_mut().enumerate() {
                if s.is_none()
                    && lab
                        .policy(i, "zone-aware")
                        .is_some_and(|p| p.0 == new_digest)
                {
                    *s = Some(t0.elapsed());
                }
            }
            seen.iter().all(Option::is_some).then_some(())
        },
    );
    report.add(
        "policy file replaced on the host -> new digest on node1 / node2 / node3",
        seen.iter()
            .map(|d| format!("{} ms", d.unwrap_or_default().as_millis()))
            .collect::<Vec<_>>()
            .join(" / "),
    );
    // `regent ctl list` (inside a node, against the lab's etcd) shows the new digest on every
    // member, from the member keys.
    let short = format!("zone-aware@{}", &new_digest[..8]);
    let listed = wait_for(
        "regent ctl list to show the new digest on every member",
        Duration::from_secs(10),
        || {
            let out = docker_quiet(&[
                "exec",
                &lab.container(0),
                "regent",
                "ctl",
                "-c",
                "/etc/regent/regent.yml",
                "list",
                "-f",
                "json",
            ])?;
            let rows: Value = serde_json::from_str(&out).ok()?;
            let rows = rows.as_array()?;
            (rows.len() == NODES
                && rows
                    .iter()
                    .all(|r| r["Policy"].as_str().is_some_and(|p| p.contains(&short))))
            .then_some(rows.len())
        },
    );
    report.add(
        "regent ctl list: members showing the new policy digest",
        format!("{listed} of {NODES} ({short})"),
    );
    new_digest
}

/// `docker stop` the leader: a clean hand-over. Writes resume within 3 s, and the election
/// was ranked by the policy version `digest`. Returns the new leader.
fn stop_leader(lab: &Lab, w: &Writer, report: &mut Report, old: usize, digest: &str) -> usize {
    let addresses = lab.addresses();
    let t0 = Instant::now();
    let container = lab.container(old);
    let stopper = std::thread::spawn(move || {
        let t = Instant::now();
        docker(&["stop", "--time", "30", &container]);
        t.elapsed()
    });
    let f = watch_failover(lab, w, (t0, old), &addresses, Duration::from_secs(30));
    let stop_took = stopper.join().expect("docker stop");
    report.time(
        "docker stop leader -> another node answers /primary 200",
        f.rest,
    );
    report.time(
        "docker stop leader -> writes resume through HAProxy",
        f.writes,
    );
    report.time(
        "docker stop itself (the old leader's clean shutdown)",
        stop_took,
    );
    report.add("leader after the stop", Lab::name(f.new_leader));
    assert!(
        f.writes <= Duration::from_secs(3),
        "after docker stop, writes resumed only after {:?} (must be within 3 s)",
        f.writes
    );
    let (served, calls) = lab
        .policy(f.new_leader, "zone-aware")
        .expect("GET /policy on the new leader");
    assert_eq!(served, digest, "the new leader serves the replaced policy");
    assert!(
        calls >= 1,
        "the replaced zone-aware ranked the election on the new leader (calls: {calls})"
    );
    lab.assert_no_acked_write_lost(f.new_leader, &w.acks());
    explain_election(lab, report, old, f.new_leader);
    start_as_replica(lab, report, old, f.new_leader, "stopped");
    f.new_leader
}

/// `regent ctl explain` inside a node tells why `new_leader` won the election after `old` left:
/// the record names the former leader and the policy that ranked it.
fn explain_election(lab: &Lab, report: &mut Report, old: usize, new_leader: usize) {
    let container = lab.container(new_leader);
    let ctl = |args: &[&str]| {
        let mut full = vec![
            "exec",
            container.as_str(),
            "regent",
            "ctl",
            "-c",
            "/etc/regent/regent.yml",
        ];
        full.extend(args);
        docker_quiet(&full)
    };
    let record: Value = wait_for(
        "the new leader's election record",
        Duration::from_secs(10),
        || {
            let v: Value = serde_json::from_str(&ctl(&["-f", "json", "explain"])?).ok()?;
            (v["winner"] == Lab::name(new_leader)).then_some(v)
        },
    );
    assert_eq!(record["view"]["former_leader"], Lab::name(old), "{record}");
    assert!(
        record["policy"]
            .as_str()
            .is_some_and(|p| p.contains("zone-aware@")),
        "{record}"
    );
    // docker/nodeN.yml: zones a, b, a. The former leader's member key is gone by the time of
    // the election after a graceful stop; its zone comes from what the winner last saw of it.
    let zone = ["a", "b", "a"][old];
    assert_eq!(record["view"]["former_leader_zone"], zone, "{record}");
    let text = ctl(&["explain"]).expect("regent ctl explain");
    assert!(
        text.contains(&format!("former leader {} (zone {zone})", Lab::name(old))),
        "{text}"
    );
    report.add(
        "regent ctl explain (after docker stop)",
        text.lines().next().unwrap_or_default().to_string(),
    );
}

/// `docker network disconnect` the leader from the `cluster` network: it must stop accepting
/// writes before another node starts to, and never accept one again while cut off; after
/// `docker network connect` it streams as a replica. Returns the new leader.
fn partition_leader(lab: &Arc<Lab>, w: &Writer, report: &mut Report, old: usize) -> usize {
    let old_ip = address_of(&lab.addresses(), old);
    let watch = Watch::start(lab);
    let t = Instant::now();
    wait_for(
        "a watch round with the leader writable",
        Duration::from_secs(20),
        || watch.writable_since(t, old).then_some(()),
    );
    let t0 = Instant::now();
    docker(&["network", "disconnect", &lab.network, &lab.container(old)]);
    let new_leader = wait_for("a new leader", Duration::from_secs(60), || {
        (0..NODES)
            .filter(|&i| i != old)
            .find(|&i| lab.rest(i, "/primary").is_some_and(|(s, _)| s == 200))
    });
    let t = Instant::now();
    wait_for(
        "a watch round with the new leader writable",
        Duration::from_secs(30),
        || watch.writable_since(t, new_leader).then_some(()),
    );
    let rounds = watch.finish();
    let both: Vec<String> = rounds
        .iter()
        .filter(|r| r.writable.len() > 1)
        .map(|r| {
            let at = r.at.saturating_duration_since(t0).as_secs_f64();
            format!("{at:.2} s: {:?}", r.writable)
        })
        .collect();
    assert!(
        both.is_empty(),
        "two nodes accepted writes at once: {both:?}"
    );
    let after: Vec<&Round> = rounds.iter().filter(|r| r.at > t0).collect();
    let fenced = after
        .iter()
        .position(|r| !r.writable.contains(&old))
        .expect("the isolated leader stopped accepting writes");
    let promoted = after
        .iter()
        .position(|r| r.writable.iter().any(|&i| i != old))
        .expect("the watch saw another node accept writes");
    assert!(
        after[fenced..].iter().all(|r| !r.writable.contains(&old)),
        "the isolated old leader accepted writes again after it had stopped"
    );
    assert!(
        fenced < promoted,
        "the isolated leader must stop accepting writes before another node accepts them"
    );
    report.time(
        "partition -> the isolated leader stops accepting writes",
        after[fenced].at.duration_since(t0),
    );
    report.time(
        "partition -> a new leader accepts writes",
        after[promoted].at.duration_since(t0),
    );
    report.add(
        "split-brain watch",
        format!("{} rounds, never two writable nodes", rounds.len()),
    );
    let resumed = wait_for(
        "writes through HAProxy to resume on another node",
        Duration::from_secs(30),
        || w.first_ack_after(t0, &old_ip),
    );
    report.time(
        "partition -> writes resume through HAProxy",
        resumed.at.duration_since(t0),
    );
    report.add("leader after the partition", Lab::name(new_leader));
    let t = Instant::now();
    // Every config names the nodes by service name: reconnect under it.
    docker(&[
        "network",
        "connect",
        "--alias",
        &Lab::name(old),
        &lab.network,
        &lab.container(old),
    ]);
    lab.wait_replica_of(old, new_leader, Duration::from_secs(120));
    report.time(
        "reconnect -> the old leader streams as a replica",
        t.elapsed(),
    );
    new_leader
}

/// A planned switchover through the REST API (`POST /switchover` to the leader, as patronictl
/// sends it) to the synchronous standby: measured as writers see it through HAProxy.
/// Returns the new leader.
fn switchover_leader(lab: &Lab, w: &Writer, report: &mut Report, old: usize) -> usize {
    let cluster = lab.rest_json(old, "/cluster").expect("GET /cluster");
    let candidate = cluster["members"]
        .as_array()
        .and_then(|ms| {
            ms.iter()
                .find(|m| m["role"] == "sync_standby")
                .and_then(|m| m["name"].as_str())
                .map(str::to_string)
        })
        .expect("a synchronous standby to switch over to");
    let addresses = lab.addresses();
    let t0 = Instant::now();
    let body = format!(
        r#"{{"leader":"{}","candidate":"{candidate}"}}"#,
        Lab::name(old)
    );
    let (status, text) = http_request_at(
        "127.0.0.1",
        lab.api[old],
        "POST",
        "/switchover",
        Some(&body),
        Duration::from_secs(40),
    )
    .expect("POST /switchover answered");
    let answered = t0.elapsed();
    assert_eq!(status, 200, "POST /switchover: {text}");
    let f = watch_failover(lab, w, (t0, old), &addresses, Duration::from_secs(30));
    assert_eq!(
        Lab::name(f.new_leader),
        candidate,
        "the requested candidate leads"
    );
    let acks = w.acks();
    let gap = acks
        .windows(2)
        .filter(|p| p[1].at >= t0)
        .map(|p| p[1].at.duration_since(p[0].at))
        .max()
        .unwrap_or_default();
    report.time("POST /switchover -> answered 200", answered);
    report.time(
        "POST /switchover -> writes resume through HAProxy on the candidate",
        f.writes,
    );
    report.time(
        "switchover: longest gap between acknowledged writes through HAProxy",
        gap,
    );
    lab.assert_no_acked_write_lost(f.new_leader, &acks);
    lab.wait_replica_of(old, f.new_leader, Duration::from_secs(60));
    f.new_leader
}

/// `down -v`: no container, network or volume of the project is left.
fn down(lab: &Lab, report: &mut Report) {
    let t = Instant::now();
    lab.compose(&["down", "--volumes"], Duration::from_secs(180));
    report.time("down -v", t.elapsed());
    let label = format!("label=com.docker.compose.project={}", lab.project);
    for (what, args) in [
        ("containers", vec!["ps", "-aq", "--filter", &label]),
        ("networks", vec!["network", "ls", "-q", "--filter", &label]),
        ("volumes", vec!["volume", "ls", "-q", "--filter", &label]),
    ] {
        let left = docker(&args);
        assert!(left.is_empty(), "down -v left {what} behind: {left}");
    }
    let nets = docker(&["network", "ls", "--format", "{{.Name}}"]);
    assert!(
        !lines(&nets).contains(&lab.network),
        "down -v left the network {} behind",
        lab.network
    );
}

#[test]
fn docker_compose_lab() {
    let docker_ok = run_for(
        Command::new("docker").args(["info", "--format", "{{.ServerVersion}}"]),
        Duration::from_secs(30),
    )
    .is_some_and(|o| o.status.success());
    if !docker_ok {
        skip(
            "docker_compose_lab",
            "no Docker engine here (`docker info` failed); the docker-compose lab test needs Docker and docker compose (or docker-compose)",
        );
        return;
    }
    let compose = compose_command()
        .expect("Docker is here but neither `docker compose` nor `docker-compose` works");
    let started = Instant::now();
    let mut report = Report::default();
    report.add("compose", compose.join(" "));
    remove_stale_runs();

    // Images, offline: the base from Debian packages (cached), then the lab image with this
    // build's regent.
    let t = Instant::now();
    let out = run_for(
        Command::new("bash").arg(root().join("docker/build-base-image.sh")),
        Duration::from_secs(1200),
    )
    .expect("docker/build-base-image.sh did not finish within 20 minutes");
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "docker/build-base-image.sh failed");
    report.time(
        "base image (debootstrap; cached when unchanged)",
        t.elapsed(),
    );
    stage_binary();
    let lab = Arc::new(Lab::new(compose));
    report.add("project", lab.project.clone());
    let t = Instant::now();
    lab.compose(&["build", "node1"], Duration::from_secs(600));
    report.time("lab image build (prebuilt regent)", t.elapsed());

    let t = Instant::now();
    lab.compose(&["up", "-d"], Duration::from_secs(300));
    let leader = lab.wait_settled(Duration::from_secs(180));
    report.time(
        "up -d -> a leader, two streaming replicas, one synchronous",
        t.elapsed(),
    );
    report.add("first leader", Lab::name(leader));
    wait_for(
        "every node's health check to pass",
        Duration::from_secs(60),
        || {
            (0..NODES)
                .all(|i| {
                    docker_quiet(&[
                        "inspect",
                        "-f",
                        "{{.State.Health.Status}}",
                        &lab.container(i),
                    ])
                    .is_some_and(|s| s == "healthy")
                })
                .then_some(())
        },
    );
    lab.psql(
        leader,
        "CREATE TABLE acked (id bigint PRIMARY KEY, at timestamptz DEFAULT now()); \
         CREATE TABLE split_brain_probe (t timestamptz)",
    )
    .expect("create the test tables");
    // Reads on HAProxy's read port reach the replicas, both of them in turn.
    let addresses = lab.addresses();
    let mut readers = BTreeSet::new();
    wait_for(
        "reads through HAProxy on both replicas",
        Duration::from_secs(30),
        || {
            let r = query_via(
                lab.read_port,
                "SELECT pg_is_in_recovery()::text || ' ' || host(inet_server_addr())",
            )
            .ok()?;
            let (in_recovery, ip) = r.split_once(' ')?;
            assert_eq!(in_recovery, "true", "HAProxy's read port reached a primary");
            readers.insert(*addresses.get(ip)?);
            (readers.len() == NODES - 1).then_some(())
        },
    );
    let writer = Writer::start(lab.write_port);
    let first = wait_for(
        "the first write through HAProxy",
        Duration::from_secs(30),
        || writer.acks().first().cloned(),
    );
    assert_eq!(
        addresses.get(&first.server),
        Some(&leader),
        "HAProxy's write port reaches the leader"
    );

    let leader = crash_leader(&lab, &writer, &mut report, leader);
    let digest = swap_policy(&lab, &mut report);
    lab.wait_settled(Duration::from_secs(60));
    let leader = stop_leader(&lab, &writer, &mut report, leader, &digest);
    lab.wait_settled(Duration::from_secs(60));
    let leader = partition_leader(&lab, &writer, &mut report, leader);
    lab.wait_settled(Duration::from_secs(60));
    let leader = switchover_leader(&lab, &writer, &mut report, leader);

    let failures = writer.failures();
    let acks = writer.finish();
    lab.assert_no_acked_write_lost(leader, &acks);
    report.add(
        "writes through HAProxy",
        format!(
            "{} acknowledged, none lost; {failures} attempts failed (during the failovers)",
            acks.len()
        ),
    );
    down(&lab, &mut report);
    report.time("the whole test", started.elapsed());
    eprintln!("lab: ===== measured =====");
    for (k, v) in &report.0 {
        eprintln!("lab:   {k}: {v}");
    }
}
