//! Test harness: real etcd and real PostgreSQL under real `regent` processes on loopback ports,
//! in temporary directories. Everything started here is killed when the harness is dropped.
#![allow(dead_code)]

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const REGENT: &str = env!("CARGO_BIN_EXE_regent");

/// Serialize the heavy cluster tests (the machine has two cores).
pub static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// A test that cannot run on this machine (no root, no Docker, no PyPI, ...): it says so loudly
/// on stderr and is recorded under `target/tmp/regent-skipped/`, so that `scripts/test` counts
/// it on its last line as skipped, never as passed. With `REGENT_REQUIRE_ALL=1` (CI, where
/// everything is installed), the test fails instead.
pub fn skip(test: &str, why: &str) {
    if std::env::var("REGENT_REQUIRE_ALL").is_ok_and(|v| v == "1") {
        panic!("{test} cannot run here: {why} (REGENT_REQUIRE_ALL=1: every test must run)");
    }
    let bar = "!".repeat(78);
    eprintln!("{bar}\n{test}: SKIPPED: {why}\n{bar}");
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("regent-skipped");
    let _ = std::fs::create_dir_all(&dir);
    let _ = std::fs::write(dir.join(format!("{test}.txt")), format!("{test}: {why}\n"));
}

/// A test that needs hardware this machine's kernel lacks (a watchdog device): it is
/// skipped loudly and counted like [`skip`], but not failed under `REGENT_REQUIRE_ALL=1`,
/// since no package can install it (docs/testing.md).
pub fn skip_no_hardware(test: &str, why: &str) {
    let bar = "!".repeat(78);
    eprintln!("{bar}\n{test}: SKIPPED (no such hardware here): {why}\n{bar}");
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("regent-skipped");
    let _ = std::fs::create_dir_all(&dir);
    let _ = std::fs::write(dir.join(format!("{test}.txt")), format!("{test}: {why}\n"));
}

/// True when running as root; otherwise the test is [`skip`]ped for `why`.
pub fn root_or_skip(test: &str, why: &str) -> bool {
    let root = nix::unistd::Uid::effective().is_root();
    if !root {
        skip(test, why);
    }
    root
}

/// A free loopback TCP port.
pub fn free_port() -> u16 {
    // Bind port 0 and release it; collisions are avoided by also skipping ports handed out
    // earlier in this process.
    static USED: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    loop {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
        let p = l.local_addr().expect("local addr").port();
        let mut used = USED.lock().unwrap_or_else(|e| e.into_inner());
        if !used.contains(&p) {
            used.push(p);
            return p;
        }
    }
}

/// Poll `f` until it returns Some or the deadline passes.
pub fn wait_for<T>(what: &str, timeout: Duration, f: impl FnMut() -> Option<T>) -> T {
    wait_for_or(what, timeout, f, String::new)
}

/// [`wait_for`] whose timeout message ends with what `why` says (the last answers seen).
pub fn wait_for_or<T>(
    what: &str,
    timeout: Duration,
    mut f: impl FnMut() -> Option<T>,
    why: impl FnOnce() -> String,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}\n{}", why());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn bin_dir() -> PathBuf {
    let mut best: Option<(u32, PathBuf)> = None;
    if let Ok(it) = std::fs::read_dir("/usr/lib/postgresql") {
        for e in it.flatten() {
            if let Ok(v) = e.file_name().to_string_lossy().parse::<u32>() {
                let p = e.path().join("bin");
                if p.join("postgres").exists() && best.as_ref().is_none_or(|(b, _)| v > *b) {
                    best = Some((v, p));
                }
            }
        }
    }
    best.map(|(_, p)| p)
        .expect("PostgreSQL binaries under /usr/lib/postgresql/*/bin")
}

pub fn is_root() -> bool {
    nix::unistd::Uid::effective().is_root()
}

/// A temporary directory others may enter (PostgreSQL's programs run as `postgres` under root).
pub fn open_tempdir() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().expect("tmp");
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    tmp
}

/// chown to the `postgres` OS user when running as root.
pub fn chown_pg(p: &Path) {
    if is_root() {
        let u = nix::unistd::User::from_name("postgres")
            .expect("look up user postgres")
            .expect("the `postgres` OS user exists (Debian's postgresql package creates it)");
        nix::unistd::chown(p, Some(u.uid), Some(u.gid)).expect("chown to postgres");
    }
}

/// `REGENT`, or, when the user that `as_user` (a `setpriv ... --` prefix) runs as cannot
/// execute it there (a checkout under a private home directory), a copy of it beside `dir`.
fn reachable_as(as_user: &[String], dir: &Path) -> String {
    let ok = Command::new(&as_user[0])
        .args(&as_user[1..])
        .args(["test", "-x", REGENT])
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        return REGENT.to_string();
    }
    let copy = dir.parent().unwrap_or(dir).join("regent-for-other-user");
    if !copy.exists() {
        std::fs::copy(REGENT, &copy).expect("copy the regent binary where other users reach it");
        std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    copy.display().to_string()
}

pub struct Etcd {
    pub child: Option<Child>,
    pub client_port: u16,
    peer_port: u16,
    dir: PathBuf,
}

impl Etcd {
    pub fn start(dir: &Path) -> Etcd {
        let mut e = Etcd {
            child: None,
            client_port: free_port(),
            peer_port: free_port(),
            dir: dir.join("etcd"),
        };
        e.spawn();
        e
    }

    fn spawn(&mut self) {
        let log = std::fs::File::create(self.dir.with_extension("log")).expect("etcd log");
        let child = Command::new("etcd")
            .args(regent::lab::spec::etcd_args(
                "e0",
                &self.dir,
                self.client_port,
                self.peer_port,
            ))
            .stdout(log.try_clone().expect("dup"))
            .stderr(log)
            .spawn()
            .expect("start etcd (Debian package etcd-server)");
        self.child = Some(child);
        // etcd accepts connections a moment before it serves them: wait for an answer.
        wait_for("etcd to serve", Duration::from_secs(20), || {
            self.etcdctl(&["endpoint", "health"])
                .ok()
                .filter(|o| o.status.success())
        });
    }

    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().map(|c| c.id() as i32).unwrap_or(0)
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), sig);
    }

    fn etcdctl(&self, args: &[&str]) -> std::io::Result<std::process::Output> {
        Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .args([
                "--endpoints",
                &self.endpoint(),
                "--dial-timeout=2s",
                "--command-timeout=3s",
            ])
            .args(args)
            .output()
    }

    /// etcdctl put of one key.
    pub fn put(&self, key: &str, value: &str) {
        let out = self.etcdctl(&["put", key, value]).expect("run etcdctl");
        assert!(
            out.status.success(),
            "etcdctl put {key}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The lease `key` is attached to and the seconds etcd says that lease has left
    /// (`etcdctl lease timetolive`); `None` when the key is missing or has no lease.
    pub fn lease_left(&self, key: &str) -> Option<(i64, i64)> {
        let out = self.etcdctl(&["get", key, "-w", "json"]).ok()?;
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        let lease = v["kvs"][0]["lease"].as_i64().filter(|l| *l != 0)?;
        let out = self
            .etcdctl(&["lease", "timetolive", &format!("{lease:x}"), "-w", "json"])
            .ok()?;
        let t: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        Some((lease, t["ttl"].as_i64()?))
    }

    /// etcdctl get of one key (raw value), via the etcdctl binary.
    pub fn get(&self, key: &str) -> Option<String> {
        let out = self.etcdctl(&["get", "--print-value-only", key]).ok()?;
        let s = String::from_utf8_lossy(&out.stdout).trim().to_string();
        (out.status.success() && !s.is_empty()).then_some(s)
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGCONT,
            );
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub struct NodeSpec {
    pub ttl: u64,
    pub loop_wait: u64,
    pub retry_timeout: u64,
    pub extra_tags: String,
    pub synchronous_mode: bool,
    /// Appended to the node's YAML as is (e.g. a `regent:` section).
    pub extra_yaml: String,
    /// `postgresql.authentication.replication.password`.
    pub replication_password: String,
    /// More `postgresql.parameters`, YAML values written as is.
    pub parameters: Vec<(String, String)>,
}

impl Default for NodeSpec {
    fn default() -> Self {
        NodeSpec {
            ttl: 10,
            loop_wait: 1,
            retry_timeout: 3,
            extra_tags: String::new(),
            synchronous_mode: false,
            extra_yaml: String::new(),
            replication_password: "rep-pass".into(),
            parameters: Vec::new(),
        }
    }
}

/// Where a node listens and whom its pg_hba trusts; `netns`: run it inside that network namespace.
pub struct NodeNet {
    pub host: String,
    pub api_port: u16,
    pub pg_port: u16,
    pub hba_cidr: String,
    pub netns: Option<String>,
}

pub struct Node {
    pub name: String,
    pub dir: PathBuf,
    pub config: PathBuf,
    /// The address the REST API and PostgreSQL listen on.
    pub host: String,
    pub api_port: u16,
    pub pg_port: u16,
    pub netns: Option<String>,
    pub child: Option<Child>,
    /// Set before `start`: the `regent` process runs with this open-file limit (soft and
    /// hard), as a host with a low `ulimit -n` would run it.
    pub open_files: Option<u64>,
    /// Set before `start`: the `regent` process runs as this OS user (through `setpriv`, with
    /// that user's groups), as an operator would run it as the PostgreSQL OS user.
    pub run_as: Option<String>,
    /// Set before `start`: more environment variables for the `regent` process (e.g.
    /// Patroni's `PATRONI_*` configuration variables).
    pub env: Vec<(String, String)>,
    starts: u32,
}

impl Node {
    /// A node on loopback with free ports.
    pub fn new(base: &Path, name: &str, etcd: &[String], spec: &NodeSpec) -> Node {
        let net = NodeNet {
            host: "127.0.0.1".into(),
            api_port: free_port(),
            pg_port: free_port(),
            hba_cidr: "127.0.0.1/32".into(),
            netns: None,
        };
        Node::new_on(base, name, etcd, spec, net)
    }

    /// A node listening on `net.host` (started inside `net.netns` when set).
    pub fn new_on(base: &Path, name: &str, etcd: &[String], spec: &NodeSpec, net: NodeNet) -> Node {
        let dir = base.join(name);
        std::fs::create_dir_all(&dir).expect("node dir");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        chown_pg(&dir);
        let NodeNet {
            host,
            api_port,
            pg_port,
            hba_cidr,
            netns,
        } = net;
        let config = dir.join("regent.yml");
        let hba = [
            "local all all trust".to_string(),
            format!("host all all {hba_cidr} md5"),
            format!("host replication replicator {hba_cidr} md5"),
        ];
        let data = dir.join("data");
        let bin = bin_dir();
        let tags = format!("  nofailover: false\n{}\n", spec.extra_tags);
        let tail = format!("{}\n", spec.extra_yaml);
        let mut parameters = vec![("shared_buffers", "16MB"), ("max_connections", "30")];
        parameters.extend(
            spec.parameters
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str())),
        );
        let yaml = regent::lab::spec::NodeYaml {
            scope: "test",
            name,
            host: &host,
            api_port,
            pg_port,
            etcd,
            ttl: spec.ttl,
            loop_wait: spec.loop_wait,
            retry_timeout: spec.retry_timeout,
            synchronous_mode: spec.synchronous_mode,
            pg_hba: &hba,
            data_dir: &data,
            bin_dir: &bin,
            os_user: None,
            superuser_password: "secret",
            replication_password: &spec.replication_password,
            api_auth: None,
            dcs_parameters: &[],
            parameters: &parameters,
            tags: &tags,
            tail: &tail,
        }
        .render();
        std::fs::write(&config, yaml).expect("write config");
        Node {
            name: name.to_string(),
            dir,
            config,
            host,
            api_port,
            pg_port,
            netns,
            child: None,
            open_files: None,
            run_as: None,
            env: Vec::new(),
            starts: 0,
        }
    }

    /// Start `regent run` in its own process group (so the group can be killed as a "host").
    pub fn start(&mut self) {
        self.starts += 1;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("regent.log"))
            .expect("log");
        // `prlimit` sets the limit and then runs regent in its own process (same pid).
        let mut argv: Vec<String> = Vec::new();
        if let Some(ns) = &self.netns {
            argv.extend(["ip", "netns", "exec", ns.as_str()].map(String::from));
        }
        if let Some(n) = self.open_files {
            argv.extend([
                "prlimit".to_string(),
                format!("--nofile={n}:{n}"),
                "--".into(),
            ]);
        }
        let mut exe = REGENT.to_string();
        if let Some(user) = &self.run_as {
            let as_user = [
                "setpriv".to_string(),
                format!("--reuid={user}"),
                format!("--regid={user}"),
                "--init-groups".into(),
                "--".into(),
            ];
            exe = reachable_as(&as_user, &self.dir);
            argv.extend(as_user);
        }
        argv.push(exe);
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..]);
        let child = cmd
            .arg("run")
            .arg(&self.config)
            .env("REGENT_LOG", "info,regent=debug")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup"))
            .stderr(log)
            .process_group(0)
            .spawn()
            .expect("spawn regent");
        self.child = Some(child);
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().map(|c| c.id() as i32).unwrap_or(0)
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), sig);
    }

    /// SIGKILL the whole process group: regent, its PostgreSQL and its guard (a host crash).
    pub fn crash(&mut self) {
        let pid = self.pid();
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
        if let Some(mut c) = self.child.take() {
            let _ = c.wait();
        }
        // Anything that escaped the group (it should not) goes too.
        self.kill_postgres();
    }

    pub fn kill_postgres(&self) {
        if let Some(pid) = self.postmaster_pid() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }

    pub fn postmaster_pid(&self) -> Option<i32> {
        let t = std::fs::read_to_string(self.dir.join("data/postmaster.pid")).ok()?;
        let pid: i32 = t.lines().next()?.trim().parse().ok()?;
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None)
            .ok()
            .map(|_| pid)
    }

    /// Wait for the regent process to exit; returns its exit status.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        let c = self.child.as_mut()?;
        loop {
            if let Ok(Some(s)) = c.try_wait() {
                self.child = None;
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("regent.log")).unwrap_or_default()
    }

    pub fn http_get(&self, path: &str) -> Option<(u16, String)> {
        http_get_at(&self.host, self.api_port, path)
    }

    /// `PATCH /config` with `body`; the status code.
    pub fn patch_config(&self, body: &str) -> Option<u16> {
        http_request_at(
            &self.host,
            self.api_port,
            "PATCH",
            "/config",
            Some(body),
            Duration::from_secs(5),
        )
        .map(|(s, _)| s)
    }

    fn guard_pid(&self) -> Option<i32> {
        let t = std::fs::read_to_string(self.dir.join(format!("{}.regent-guard.pid", self.name)))
            .ok()?;
        t.trim().parse().ok()
    }

    /// Kill everything of this node (used on drop).
    pub fn kill_all(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGCONT,
            );
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            let _ = c.wait();
        }
        if let Some(g) = self.guard_pid() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(g),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        self.kill_postgres();
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.dump_logs();
        }
        for n in &mut self.nodes {
            n.kill_all();
        }
        if std::env::var_os("REGENT_KEEP_TMP").is_some() {
            eprintln!("keeping {}", self.tmp.path().display());
            let _ = std::mem::replace(&mut self.tmp, tempfile::tempdir().expect("tempdir")).keep();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill_all();
    }
}

/// A minimal HTTP/1.0 GET against 127.0.0.1:port (status, body).
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    http_get_at("127.0.0.1", port, path)
}

/// A minimal HTTP/1.0 GET against host:port (status, body); `host` is an IP address.
pub fn http_get_at(host: &str, port: u16, path: &str) -> Option<(u16, String)> {
    http_request_at(host, port, "GET", path, None, Duration::from_secs(2))
}

/// One HTTP/1.1 request (with a JSON body, if any) against host:port; (status, body).
/// `timeout` bounds the wait for the answer.
pub fn http_request_at(
    host: &str,
    port: u16,
    method: &str,
    path: &str,
    json: Option<&str>,
    timeout: Duration,
) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let ip: std::net::IpAddr = host.parse().ok()?;
    let mut s = std::net::TcpStream::connect_timeout(
        &std::net::SocketAddr::from((ip, port)),
        Duration::from_millis(500),
    )
    .ok()?;
    s.set_read_timeout(Some(timeout)).ok()?;
    let body = json.unwrap_or("");
    let content = match json {
        Some(b) => format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            b.len()
        ),
        None => String::new(),
    };
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{content}Connection: close\r\n\r\n{body}"
    )
    .ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let status: u16 = buf.split_whitespace().nth(1)?.parse().ok()?;
    let body = buf.split_once("\r\n\r\n").map(|(_, b)| b.to_string())?;
    Some((status, body))
}

/// Run SQL with psql against a node (as the superuser over TCP). Returns trimmed stdout.
pub fn psql(port: u16, sql: &str) -> Result<String, String> {
    psql_at("127.0.0.1", port, sql)
}

/// Run SQL with psql against host:port (as the superuser over TCP). Returns trimmed stdout.
pub fn psql_at(host: &str, port: u16, sql: &str) -> Result<String, String> {
    let conninfo =
        format!("host={host} port={port} user=postgres dbname=postgres connect_timeout=2");
    psql_conninfo(&conninfo, "secret", sql)
}

/// Run SQL with psql on a libpq connection string, with `password`. Returns trimmed stdout.
pub fn psql_conninfo(conninfo: &str, password: &str, sql: &str) -> Result<String, String> {
    let out = Command::new(bin_dir().join("psql"))
        .args([
            "-X",
            "-q",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            conninfo,
            "-c",
            sql,
        ])
        .env("PGPASSWORD", password)
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

/// The whole test cluster.
pub struct Cluster {
    pub tmp: tempfile::TempDir,
    pub etcd: Etcd,
    pub nodes: Vec<Node>,
}

impl Cluster {
    pub fn new(n: usize, spec: NodeSpec) -> Cluster {
        let tmp = tempfile::Builder::new()
            .prefix("regent-it-")
            .tempdir()
            .expect("tempdir");
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        let etcd = Etcd::start(tmp.path());
        let eps = vec![etcd.endpoint()];
        let nodes = (1..=n)
            .map(|i| Node::new(tmp.path(), &format!("pg{i}"), &eps, &spec))
            .collect();
        Cluster { tmp, etcd, nodes }
    }

    pub fn start_all(&mut self) {
        for n in &mut self.nodes {
            n.start();
        }
    }

    /// Index of the node whose `/primary` answers 200.
    pub fn leader(&self) -> Option<usize> {
        self.nodes
            .iter()
            .position(|n| n.http_get("/primary").is_some_and(|(s, _)| s == 200))
    }

    pub fn wait_leader(&self, timeout: Duration) -> usize {
        wait_for("a leader", timeout, || self.leader())
    }

    /// Which nodes accept a write right now.
    pub fn writable(&self) -> Vec<usize> {
        self.nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| {
                psql(
                    n.pg_port,
                    "INSERT INTO split_brain_probe VALUES (now()) RETURNING 1",
                )
                .is_ok_and(|s| s == "1")
            })
            .map(|(i, _)| i)
            .collect()
    }

    /// Wait until `count` replicas stream from the leader through their member slots (a
    /// pg_basebackup in progress also shows as streaming, but on a temporary slot).
    pub fn wait_streaming(&self, leader: usize, count: usize, timeout: Duration) {
        wait_for(&format!("{count} streaming replicas"), timeout, || {
            let n = psql(
                self.nodes[leader].pg_port,
                "SELECT count(*) FROM pg_stat_replication r JOIN pg_replication_slots s \
                     ON s.active_pid = r.pid WHERE r.state = 'streaming' AND NOT s.temporary",
            )
            .ok()?
            .parse::<usize>()
            .ok()?;
            (n >= count).then_some(())
        });
    }

    pub fn dump_logs(&self) {
        for n in &self.nodes {
            let log = n.log();
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            eprintln!("===== {} regent.log (last 60 lines) =====", n.name);
            for l in tail.into_iter().rev() {
                eprintln!("{l}");
            }
        }
    }
}

/// Watches every node's writability in the background and records any moment at which two
/// or more nodes accepted a write in the same round.
/// Moments (since the monitor started) at which more than one node accepted a write.
pub type Overlaps = Vec<(Duration, Vec<String>)>;

pub struct SplitBrainMonitor {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    handle: Option<std::thread::JoinHandle<Overlaps>>,
}

impl SplitBrainMonitor {
    pub fn start(ports: Vec<(String, u16)>) -> SplitBrainMonitor {
        SplitBrainMonitor::start_at(
            ports
                .into_iter()
                .map(|(name, port)| (name, "127.0.0.1".to_string(), port))
                .collect(),
        )
    }

    /// Like `start`, for nodes at (name, host, port).
    pub fn start_at(targets: Vec<(String, String, u16)>) -> SplitBrainMonitor {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let s2 = stop.clone();
        let handle = std::thread::spawn(move || {
            let t0 = Instant::now();
            let mut bad = Vec::new();
            while !s2.load(std::sync::atomic::Ordering::Relaxed) {
                let writable: Vec<String> = std::thread::scope(|sc| {
                    let hs: Vec<_> = targets
                        .iter()
                        .map(|(name, host, port)| {
                            sc.spawn(move || {
                                psql_at(
                                    host,
                                    *port,
                                    "INSERT INTO split_brain_probe VALUES (now()) RETURNING 1",
                                )
                                .is_ok_and(|s| s == "1")
                                .then(|| name.clone())
                            })
                        })
                        .collect();
                    hs.into_iter()
                        .filter_map(|h| h.join().ok().flatten())
                        .collect()
                });
                if writable.len() > 1 {
                    bad.push((t0.elapsed(), writable));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            bad
        });
        SplitBrainMonitor {
            stop,
            handle: Some(handle),
        }
    }

    /// Stop and return the moments with more than one writable node.
    pub fn finish(mut self) -> Overlaps {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.handle
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default()
    }
}

/// Writes numbered rows continuously to whichever node accepts them (trying the last one that
/// did first), and records when each write was acknowledged and by whom.
pub struct Writer {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    handle: Option<std::thread::JoinHandle<Vec<(Instant, i64, usize)>>>,
}

impl Writer {
    /// Needs a table `acked (id int primary key)`; ids start at `first`.
    pub fn start(ports: Vec<u16>, first: i64) -> Writer {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let s2 = stop.clone();
        let handle = std::thread::spawn(move || {
            let mut acks = Vec::new();
            let mut id = first;
            let mut at = 0usize;
            while !s2.load(std::sync::atomic::Ordering::Relaxed) {
                let mut done = false;
                for k in 0..ports.len() {
                    let i = (at + k) % ports.len();
                    if psql(ports[i], &format!("INSERT INTO acked VALUES ({id})")).is_ok() {
                        acks.push((Instant::now(), id, i));
                        at = i;
                        done = true;
                        break;
                    }
                }
                if done {
                    id += 1;
                } else {
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
            acks
        });
        Writer {
            stop,
            handle: Some(handle),
        }
    }

    /// Stop; every acknowledged write as (when, id, node index).
    pub fn finish(mut self) -> Vec<(Instant, i64, usize)> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.handle
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default()
    }
}

/// The longest time between two consecutive acknowledged writes at or after `from`.
pub fn longest_gap(acks: &[(Instant, i64, usize)], from: Instant) -> Duration {
    acks.windows(2)
        .filter(|w| w[1].0 >= from)
        .map(|w| w[1].0.duration_since(w[0].0))
        .max()
        .unwrap_or_default()
}

pub mod ctl;
pub mod lab;

impl Etcd {
    /// Every key under `prefix` with its raw value (etcdctl get --prefix), sorted by key.
    pub fn get_prefix(&self, prefix: &str) -> Vec<(String, String)> {
        let out = self
            .etcdctl(&["get", "--prefix", prefix])
            .expect("run etcdctl");
        assert!(out.status.success(), "etcdctl get --prefix {prefix} failed");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let lines: Vec<&str> = text.lines().collect();
        let mut kvs: Vec<(String, String)> = lines
            .chunks(2)
            .filter(|c| c.len() == 2)
            .map(|c| (c[0].to_string(), c[1].to_string()))
            .collect();
        kvs.sort();
        kvs
    }
}

impl Cluster {
    /// Wait (15 s at most) until every node's `GET /patroni` document satisfies `pred`.
    pub fn wait_all_nodes(&self, what: &str, pred: impl Fn(&serde_json::Value) -> bool) {
        for n in &self.nodes {
            wait_for(
                &format!("{} {what}", n.name),
                Duration::from_secs(15),
                || {
                    let (_, body) = n.http_get("/patroni")?;
                    let doc: serde_json::Value = serde_json::from_str(&body).ok()?;
                    pred(&doc).then_some(())
                },
            );
        }
    }

    /// Start `n` nodes and wait for a leader with `n - 1` streaming replicas.
    pub fn healthy(n: usize, spec: NodeSpec) -> (Cluster, usize) {
        let mut c = Cluster::new(n, spec);
        c.start_all();
        let leader = c.wait_leader(Duration::from_secs(90));
        c.wait_streaming(leader, n - 1, Duration::from_secs(90));
        // Streaming on the leader's side comes a loop before each replica reports itself
        // running: wait for that too, so that switchover candidates look healthy.
        wait_for(
            "every replica to report itself healthy",
            Duration::from_secs(30),
            || {
                (0..n)
                    .filter(|i| *i != leader)
                    .all(|i| {
                        c.nodes[i]
                            .http_get("/replica")
                            .is_some_and(|(s, _)| s == 200)
                    })
                    .then_some(())
            },
        );
        (c, leader)
    }

    /// The node called `name`.
    pub fn node(&self, name: &str) -> &Node {
        self.nodes
            .iter()
            .find(|n| n.name == name)
            .unwrap_or_else(|| panic!("no node {name}"))
    }

    /// Member `name`'s key in etcd, as JSON.
    pub fn member_key(&self, name: &str) -> serde_json::Value {
        serde_json::from_str(
            &self
                .etcd
                .get(&format!("/service/test/members/{name}"))
                .expect("member key"),
        )
        .expect("member JSON")
    }

    /// The leader key's value.
    pub fn leader_key(&self) -> Option<String> {
        self.etcd.get("/service/test/leader")
    }
}

/// Set `path` (dotted) to `value` (YAML) in a node's configuration before it starts.
pub fn set_config(node: &Node, path: &str, value: &str) {
    let text = std::fs::read_to_string(&node.config).expect("read config");
    let mut doc: serde_yaml::Value = serde_yaml::from_str(&text).expect("config is YAML");
    let parts: Vec<&str> = path.split('.').collect();
    let (last, parents) = parts.split_last().expect("a path");
    let mut at = &mut doc;
    for p in parents {
        at = at
            .as_mapping_mut()
            .expect("a mapping")
            .entry((*p).into())
            .or_insert(serde_yaml::Value::Mapping(Default::default()));
    }
    at.as_mapping_mut().expect("a mapping").insert(
        (*last).into(),
        serde_yaml::from_str(value).expect("value is YAML"),
    );
    std::fs::write(&node.config, serde_yaml::to_string(&doc).expect("YAML")).expect("write");
}
