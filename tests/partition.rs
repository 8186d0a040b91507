//! A real network partition of the leader, built from Linux network namespaces.
//!
//! Topology (all names carry this process's pid, so concurrent runs do not collide):
//!
//! ```text
//!   root namespace: the test ("client"), bridge rg<pid>br with 10.213.X.254/24
//!     ├─ veth ─ rg<pid>-e   etcd                    10.213.X.10
//!     ├─ veth ─ rg<pid>-n1  regent pg1 (+PG, guard) 10.213.X.11
//!     ├─ veth ─ rg<pid>-n2  regent pg2              10.213.X.12
//!     └─ veth ─ rg<pid>-n3  regent pg3              10.213.X.13
//! ```
//!
//! The partition is a set of iptables DROP rules inside the leader's namespace against the etcd
//! address and both peers, in both directions; the client keeps reaching every node, so it sees
//! exactly what an application next to the leader would see.
//!
//! Needs root (namespaces, veths, a bridge, iptables). Without it the test is counted as
//! skipped (`support::skip`), never as passed; under `REGENT_REQUIRE_ALL=1` (CI) it fails.

mod support;

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use support::*;

const TTL: u64 = 10;
const ETCD_HOST: u8 = 10;
const ROOT_HOST: u8 = 254;
const ETCD_PORT: u16 = 2379;
const API_PORT: u16 = 8008;
const PG_PORT: u16 = 5432;
const NODES: usize = 3;

/// Run a command; stdout on success, a readable error otherwise.
fn run(cmd: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(cmd)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{cmd} {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "`{cmd} {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn must(cmd: &str, args: &[&str]) -> String {
    run(cmd, args).unwrap_or_else(|e| panic!("{e}"))
}

fn pid_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// `rg<pid><suffix>` with one of this test's suffixes → the pid.
fn our_pattern(name: &str, suffixes: &[String]) -> Option<u32> {
    let rest = name.strip_prefix("rg")?;
    let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
    let (num, suffix) = rest.split_at(digits);
    let pid = num.parse().ok()?;
    suffixes.iter().any(|s| s == suffix).then_some(pid)
}

fn ns_suffixes() -> Vec<String> {
    let mut v = vec!["-e".to_string()];
    v.extend((1..=NODES).map(|i| format!("-n{i}")));
    v
}

fn link_suffixes() -> Vec<String> {
    let mut v = vec!["br".to_string()];
    v.extend(ns_suffixes().into_iter().map(|s| format!("{s}h")));
    v
}

/// Left over by an earlier run of this test: the run's pid is gone (or is ours, reused).
fn stale(pid: u32) -> bool {
    pid == std::process::id() || !pid_alive(pid)
}

/// SIGKILL every process in a namespace and wait (bounded) until none is left.
fn kill_netns_pids(ns: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let pids: Vec<i32> = run("ip", &["netns", "pids", ns])
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect();
        if pids.is_empty() || Instant::now() >= deadline {
            return;
        }
        for p in pids {
            let _ = kill(Pid::from_raw(p), Signal::SIGCONT);
            let _ = kill(Pid::from_raw(p), Signal::SIGKILL);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn forward_rule(bridge: &str) -> Vec<String> {
    ["FORWARD", "-i", bridge, "-o", bridge, "-j", "ACCEPT"]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

/// Remove what an earlier, killed run of this test left behind (only names of this test's
/// pattern whose run is gone).
fn remove_stale() {
    for line in run("ip", &["netns", "list"]).unwrap_or_default().lines() {
        let Some(ns) = line.split_whitespace().next() else {
            continue;
        };
        if our_pattern(ns, &ns_suffixes()).is_some_and(stale) {
            eprintln!("removing stale network namespace {ns}");
            kill_netns_pids(ns);
            let _ = run("ip", &["netns", "del", ns]);
        }
    }
    let links = run("ip", &["-o", "link", "show"]).unwrap_or_default();
    for line in links.lines() {
        let Some(name) = line.split(": ").nth(1) else {
            continue;
        };
        let name = name.split('@').next().unwrap_or(name);
        if our_pattern(name, &link_suffixes()).is_some_and(stale) {
            eprintln!("removing stale link {name}");
            let _ = run("ip", &["link", "del", name]);
        }
    }
    let rules = run("iptables", &["-w", "-S", "FORWARD"]).unwrap_or_default();
    for line in rules.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        if let ["-A", "FORWARD", "-i", i, "-o", o, "-j", "ACCEPT"] = words[..]
            && i == o
            && our_pattern(i, &["br".to_string()]).is_some_and(stale)
        {
            eprintln!("removing stale FORWARD rule for {i}");
            let mut args = vec!["-w".to_string(), "-D".to_string()];
            args.extend(forward_rule(i));
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let _ = run("iptables", &args);
        }
    }
}

/// A free 10.213.X.0/24 (X from the pid, skipping any /24 the root namespace already uses).
fn pick_subnet() -> String {
    let used = format!(
        "{}\n{}",
        run("ip", &["-4", "-o", "addr", "show"]).unwrap_or_default(),
        run("ip", &["-4", "route", "show"]).unwrap_or_default()
    );
    let start = std::process::id() % 200;
    (0..200)
        .map(|k| format!("10.213.{}", 20 + (start + k) % 200))
        .find(|s| !used.contains(&format!("{s}.")))
        .expect("a free 10.213.X.0/24")
}

/// Everything this test creates in the kernel and every process it starts. Dropping it (also
/// on panic) kills the processes, then deletes namespaces, veths, the bridge and the rule.
struct Lab {
    tag: String,
    bridge: String,
    subnet: String,
    /// iptables flavour usable inside the namespaces (`iptables` or `iptables-legacy`).
    ipt: String,
    namespaces: Vec<String>,
    host_veths: Vec<String>,
    bridge_made: bool,
    forward_rule: bool,
    etcd: Option<Child>,
    nodes: Vec<Node>,
    tmp: Option<tempfile::TempDir>,
}

impl Lab {
    fn ip(&self, host: u8) -> String {
        format!("{}.{host}", self.subnet)
    }

    fn etcd_ns(&self) -> String {
        format!("{}-e", self.tag)
    }

    fn node_ns(&self, i: usize) -> String {
        format!("{}-n{}", self.tag, i + 1)
    }

    fn node_ip(&self, i: usize) -> String {
        self.ip(11 + i as u8)
    }

    fn in_ns(&self, ns: &str, args: &[&str]) -> Result<String, String> {
        let mut a = vec!["netns", "exec", ns];
        a.extend_from_slice(args);
        run("ip", &a)
    }

    /// Build the bridge, the namespaces and their links; start etcd; create (not start) nodes.
    fn create() -> Lab {
        remove_stale();
        let tag = format!("rg{}", std::process::id());
        let mut lab = Lab {
            bridge: format!("{tag}br"),
            tag,
            subnet: pick_subnet(),
            ipt: "iptables".into(),
            namespaces: Vec::new(),
            host_veths: Vec::new(),
            bridge_made: false,
            forward_rule: false,
            etcd: None,
            nodes: Vec::new(),
            tmp: None,
        };
        let br = lab.bridge.clone();
        run("ip", &["link", "add", &br, "type", "bridge"]).unwrap_or_else(|e| {
            panic!("cannot create bridge {br} (needs CAP_NET_ADMIN in the root namespace): {e}")
        });
        lab.bridge_made = true;
        let root_cidr = format!("{}/24", lab.ip(ROOT_HOST));
        must("ip", &["addr", "add", &root_cidr, "dev", &br]);
        must("ip", &["link", "set", &br, "up"]);
        // With br_netfilter loaded, frames crossing the bridge traverse the root namespace's
        // iptables FORWARD chain, whose policy may be DROP (Docker sets it). Let this bridge's
        // own traffic through; the rule names only our bridge and is removed on drop.
        let nf = std::fs::read_to_string("/proc/sys/net/bridge/bridge-nf-call-iptables")
            .unwrap_or_default();
        if nf.trim() == "1" {
            let mut args = vec!["-w".to_string(), "-I".to_string()];
            args.extend(forward_rule(&br));
            args.insert(3, "1".into());
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            must("iptables", &args);
            lab.forward_rule = true;
        }
        let mut all = vec![(lab.etcd_ns(), lab.ip(ETCD_HOST))];
        all.extend((0..NODES).map(|i| (lab.node_ns(i), lab.node_ip(i))));
        for (ns, ip) in &all {
            run("ip", &["netns", "add", ns]).unwrap_or_else(|e| {
                panic!("cannot create network namespace {ns} (`ip netns add` not permitted?): {e}")
            });
            lab.namespaces.push(ns.clone());
            let host_end = format!("{ns}h");
            let ns_end = format!("{ns}c");
            must(
                "ip",
                &[
                    "link", "add", &host_end, "type", "veth", "peer", "name", &ns_end,
                ],
            );
            lab.host_veths.push(host_end.clone());
            must("ip", &["link", "set", &ns_end, "netns", ns]);
            must("ip", &["link", "set", &host_end, "master", &br]);
            must("ip", &["link", "set", &host_end, "up"]);
            let cidr = format!("{ip}/24");
            for args in [
                vec!["ip", "link", "set", "lo", "up"],
                vec!["ip", "addr", "add", &cidr, "dev", &ns_end],
                vec!["ip", "link", "set", &ns_end, "up"],
            ] {
                lab.in_ns(ns, &args).unwrap_or_else(|e| panic!("{e}"));
            }
        }
        // iptables inside a namespace: the nft flavour, or the legacy one where nft fails.
        let probe_ns = lab.node_ns(0);
        lab.ipt = ["iptables", "iptables-legacy"]
            .into_iter()
            .find(|ipt| lab.in_ns(&probe_ns, &[ipt, "-w", "-S"]).is_ok())
            .unwrap_or_else(|| {
                panic!(
                    "neither iptables nor iptables-legacy works inside a network namespace: {:?}",
                    lab.in_ns(&probe_ns, &["iptables", "-w", "-S"])
                )
            })
            .to_string();

        let tmp = tempfile::Builder::new()
            .prefix("regent-netns-")
            .tempdir()
            .expect("tempdir");
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        lab.start_etcd(tmp.path());
        let eps = vec![format!("{}:{ETCD_PORT}", lab.ip(ETCD_HOST))];
        let cidr = format!("{}.0/24", lab.subnet);
        for i in 0..NODES {
            let net = NodeNet {
                host: lab.node_ip(i),
                api_port: API_PORT,
                pg_port: PG_PORT,
                hba_cidr: cidr.clone(),
                netns: Some(lab.node_ns(i)),
            };
            let n = Node::new_on(
                tmp.path(),
                &format!("pg{}", i + 1),
                &eps,
                &NodeSpec::default(),
                net,
            );
            lab.nodes.push(n);
        }
        lab.tmp = Some(tmp);
        lab
    }

    fn start_etcd(&mut self, dir: &Path) {
        let ip = self.ip(ETCD_HOST);
        let client = format!("http://{ip}:{ETCD_PORT}");
        let peer = "http://127.0.0.1:2380";
        let log = std::fs::File::create(dir.join("etcd.log")).expect("etcd log");
        let data = dir.join("etcd").display().to_string();
        let child = Command::new("ip")
            .args(["netns", "exec", &self.etcd_ns(), "etcd"])
            .args(["--name", "e0", "--data-dir", &data])
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", peer])
            .args(["--initial-advertise-peer-urls", peer])
            .args(["--initial-cluster", &format!("e0={peer}")])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup"))
            .stderr(log)
            .process_group(0)
            .spawn()
            .expect("start etcd inside its namespace");
        self.etcd = Some(child);
        let addr: std::net::SocketAddr = format!("{ip}:{ETCD_PORT}").parse().expect("addr");
        wait_for(
            "etcd to listen in its namespace",
            Duration::from_secs(20),
            || std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(300)).ok(),
        );
        // Namespace to namespace across the bridge (fails if the root FORWARD chain drops it).
        for i in 0..NODES {
            let ns = self.node_ns(i);
            let ep = format!("--endpoints={ip}:{ETCD_PORT}");
            let mut last = String::new();
            let ok = (0..20).any(|_| {
                match self.in_ns(
                    &ns,
                    &["etcdctl", &ep, "--dial-timeout=1s", "endpoint", "health"],
                ) {
                    Ok(_) => true,
                    Err(e) => {
                        last = e;
                        false
                    }
                }
            });
            assert!(
                ok,
                "etcd at {ip} is not reachable from namespace {ns} across bridge {}: {last}",
                self.bridge
            );
        }
    }

    fn start_nodes(&mut self) {
        for n in &mut self.nodes {
            n.start();
        }
    }

    fn psql(&self, i: usize, sql: &str) -> Result<String, String> {
        psql_at(&self.nodes[i].host, PG_PORT, sql)
    }

    fn writable(&self, i: usize) -> bool {
        self.psql(
            i,
            "INSERT INTO split_brain_probe VALUES (now()) RETURNING 1",
        )
        .is_ok_and(|s| s == "1")
    }

    fn leader(&self) -> Option<usize> {
        (0..NODES).find(|i| {
            self.nodes[*i]
                .http_get("/primary")
                .is_some_and(|(s, _)| s == 200)
        })
    }

    /// Same criterion as `Cluster::wait_streaming`: streaming through a member (non-temporary) slot.
    fn wait_streaming(&self, leader: usize, count: usize, timeout: Duration) {
        wait_for(&format!("{count} streaming replicas"), timeout, || {
            let n = self
                .psql(
                    leader,
                    "SELECT count(*) FROM pg_stat_replication r JOIN pg_replication_slots s \
                     ON s.active_pid = r.pid WHERE r.state = 'streaming' AND NOT s.temporary",
                )
                .ok()?
                .parse::<usize>()
                .ok()?;
            (n >= count).then_some(())
        });
    }

    /// Cut node `i` off from etcd and both peers (both directions), atomically.
    fn partition(&self, i: usize) {
        let mut rules = String::from(
            "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n",
        );
        let mut cut = vec![self.ip(ETCD_HOST)];
        cut.extend((0..NODES).filter(|j| *j != i).map(|j| self.node_ip(j)));
        for ip in &cut {
            rules.push_str(&format!("-A INPUT -s {ip}/32 -j DROP\n"));
            rules.push_str(&format!("-A OUTPUT -d {ip}/32 -j DROP\n"));
        }
        rules.push_str("COMMIT\n");
        let restore = format!("{}-restore", self.ipt);
        let mut c = Command::new("ip")
            .args(["netns", "exec", &self.node_ns(i), &restore, "-w"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn iptables-restore");
        c.stdin
            .take()
            .expect("stdin")
            .write_all(rules.as_bytes())
            .expect("write rules");
        let out = c.wait_with_output().expect("iptables-restore");
        assert!(
            out.status.success(),
            "{restore} in {} failed: {}",
            self.node_ns(i),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn heal(&self, i: usize) {
        let ns = self.node_ns(i);
        self.in_ns(&ns, &[&self.ipt, "-w", "-F"])
            .unwrap_or_else(|e| panic!("{e}"));
        let left = self
            .in_ns(&ns, &[&self.ipt, "-w", "-S"])
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(!left.contains("DROP"), "rules left after flush: {left}");
    }

    fn dump_logs(&self) {
        let Some(tmp) = &self.tmp else { return };
        let mut files = vec![tmp.path().join("etcd.log")];
        for n in &self.nodes {
            files.push(n.dir.join("regent.log"));
            files.push(n.dir.join(format!("{}-postgresql.log", n.name)));
        }
        for f in files {
            let text = std::fs::read_to_string(&f).unwrap_or_default();
            // The probes' rejected INSERTs would drown everything else.
            let lines: Vec<&str> = text
                .lines()
                .filter(|l| {
                    !l.contains("split_brain_probe") && !l.contains("read-only transaction")
                })
                .collect();
            eprintln!("===== {} (last 60 lines) =====", f.display());
            for l in &lines[lines.len().saturating_sub(60)..] {
                eprintln!("{l}");
            }
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.dump_logs();
        }
        for n in &mut self.nodes {
            n.kill_all();
        }
        if let Some(mut c) = self.etcd.take() {
            let _ = killpg(Pid::from_raw(c.id() as i32), Signal::SIGKILL);
            let _ = c.wait();
        }
        for ns in &self.namespaces {
            kill_netns_pids(ns);
            if let Err(e) = run("ip", &["netns", "del", ns]) {
                eprintln!("cleanup: {e}");
            }
        }
        let links = run("ip", &["-o", "link", "show"]).unwrap_or_default();
        for l in &self.host_veths {
            if links.contains(&format!(": {l}@")) {
                let _ = run("ip", &["link", "del", l]);
            }
        }
        if self.bridge_made
            && let Err(e) = run("ip", &["link", "del", &self.bridge])
        {
            eprintln!("cleanup: {e}");
        }
        if self.forward_rule {
            let mut args = vec!["-w".to_string(), "-D".to_string()];
            args.extend(forward_rule(&self.bridge));
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            if let Err(e) = run("iptables", &args) {
                eprintln!("cleanup: {e}");
            }
        }
        // Nodes go before their directory does.
        self.nodes.clear();
        if let Some(tmp) = self.tmp.take()
            && std::env::var_os("REGENT_KEEP_TMP").is_some()
        {
            eprintln!("keeping {}", tmp.keep().display());
        }
    }
}

#[test]
fn leader_partitioned_from_etcd_and_peers_stops_writes_then_rejoins() {
    // One lab at a time: both build their bridge and namespaces from this process's id.
    let _serial = support::serial();
    if !support::root_or_skip(
        "leader_partitioned_from_etcd_and_peers_stops_writes_then_rejoins",
        "needs root: it creates network namespaces, veth pairs, a bridge and iptables rules (run the tests as root, as .ci/run does)",
    ) {
        return;
    }
    let started = Instant::now();
    let mut lab = Lab::create();
    lab.start_nodes();
    let old = wait_for("a leader", Duration::from_secs(90), || lab.leader());
    lab.wait_streaming(old, 2, Duration::from_secs(90));
    lab.psql(
        old,
        "CREATE TABLE IF NOT EXISTS split_brain_probe (t timestamptz); \
         CREATE TABLE IF NOT EXISTS acked (id int primary key)",
    )
    .expect("create tables");
    let old_name = lab.nodes[old].name.clone();
    eprintln!(
        "cluster ready after {:?}: leader {old_name} at {} (subnet {}.0/24, {})",
        started.elapsed(),
        lab.node_ip(old),
        lab.subnet,
        lab.ipt
    );
    let mon = SplitBrainMonitor::start_at(
        lab.nodes
            .iter()
            .map(|n| (n.name.clone(), n.host.clone(), PG_PORT))
            .collect(),
    );

    let t0 = Instant::now();
    lab.partition(old);
    let stopped_after = wait_for(
        "the partitioned leader to stop taking writes",
        Duration::from_secs(TTL + 10),
        || (!lab.writable(old)).then(|| t0.elapsed()),
    );
    eprintln!("partition: old leader {old_name} stopped taking writes after {stopped_after:?}");
    assert!(
        stopped_after < Duration::from_secs(TTL),
        "the partitioned leader took writes for {stopped_after:?}, not less than ttl ({TTL} s)"
    );
    // Safety review item 6c: the deadline is the backstop, not the plan. The leader stops as
    // soon as it cannot renew its lease within retry_timeout: at most a loop_wait later,
    // plus the renewal attempt, plus a fast stop.
    let spec = NodeSpec::default();
    let bound =
        Duration::from_secs(spec.loop_wait + spec.retry_timeout) + Duration::from_millis(1500);
    assert!(
        stopped_after <= bound,
        "the partitioned leader took writes for {stopped_after:?}, more than loop_wait + \
         retry_timeout (+1.5 s) = {bound:?}: it waited for its lease deadline"
    );
    // Each node's last answer, so a timeout says why no replica counted as the new leader.
    let answers = std::cell::RefCell::new(vec![String::new(); NODES]);
    let new = wait_for_or(
        "a replica to take over",
        Duration::from_secs(TTL + 30),
        || {
            (0..NODES).filter(|i| *i != old).find(|i| {
                let answer = lab.psql(
                    *i,
                    "INSERT INTO split_brain_probe VALUES (now()) RETURNING 1",
                );
                let ok = answer.as_ref().is_ok_and(|s| s == "1");
                answers.borrow_mut()[*i] = format!(
                    "{}: {:?}; /patroni {:?}",
                    lab.nodes[*i].name,
                    answer,
                    lab.nodes[*i].http_get("/patroni")
                );
                ok
            })
        },
        || answers.borrow().join("\n"),
    );
    let new_name = lab.nodes[new].name.clone();
    eprintln!(
        "partition: new leader {new_name} accepted writes after {:?}",
        t0.elapsed()
    );
    assert!(
        !lab.writable(old),
        "the partitioned old leader is writable again"
    );

    let t_heal = Instant::now();
    lab.heal(old);
    lab.psql(new, "INSERT INTO acked VALUES (1)")
        .expect("write on the new leader after the heal");
    wait_for(
        "the old leader to run as a replica",
        Duration::from_secs(90),
        || (lab.psql(old, "SELECT pg_is_in_recovery()").ok()? == "t").then_some(()),
    );
    wait_for(
        "the old leader to stream from the new one",
        Duration::from_secs(60),
        || {
            let n = lab
                .psql(
                    new,
                    &format!(
                        "SELECT count(*) FROM pg_stat_replication \
                         WHERE application_name = '{old_name}' AND state = 'streaming'"
                    ),
                )
                .ok()?;
            (n == "1").then_some(())
        },
    );
    wait_for(
        "the old leader to serve the row written after the heal",
        Duration::from_secs(30),
        || {
            (lab.psql(old, "SELECT count(*) FROM acked WHERE id = 1")
                .ok()?
                == "1")
                .then_some(())
        },
    );
    wait_for(
        "the old leader to report a healthy replica on /replica",
        Duration::from_secs(10),
        || (lab.nodes[old].http_get("/replica")?.0 == 200).then_some(()),
    );
    eprintln!(
        "heal: old leader {old_name} streams from {new_name} and serves new rows after {:?}",
        t_heal.elapsed()
    );
    let bad = mon.finish();
    assert!(bad.is_empty(), "two writable nodes at: {bad:?}");
    for n in &mut lab.nodes {
        let exited = n.child.as_mut().and_then(|c| c.try_wait().ok().flatten());
        assert!(exited.is_none(), "regent {} exited: {exited:?}", n.name);
    }
    eprintln!("total {:?}", started.elapsed());
}

/// Failsafe mode on, the leader cut off from etcd and both peers: its round of
/// `POST /failsafe` fails, so it demotes (at the latest when its last deadline passes, 8 s
/// after its last renewal at ttl 10); the replicas never accepted a round, so one of them takes
/// the key once it expires, after that deadline: never two writable primaries.
#[test]
fn failsafe_leader_partitioned_alone_demotes_before_a_replica_takes_over() {
    // One lab at a time: both build their bridge and namespaces from this process's id.
    let _serial = support::serial();
    if !support::root_or_skip(
        "failsafe_leader_partitioned_alone_demotes_before_a_replica_takes_over",
        "needs root: it creates network namespaces, veth pairs, a bridge and iptables rules (run the tests as root, as .ci/run does)",
    ) {
        return;
    }
    let mut lab = Lab::create();
    lab.start_nodes();
    let old = wait_for("a leader", Duration::from_secs(90), || lab.leader());
    lab.wait_streaming(old, 2, Duration::from_secs(90));
    lab.psql(
        old,
        "CREATE TABLE IF NOT EXISTS split_brain_probe (t timestamptz)",
    )
    .expect("create table");
    let patch = http_request_at(
        &lab.nodes[old].host,
        API_PORT,
        "PATCH",
        "/config",
        Some(r#"{"failsafe_mode": true}"#),
        Duration::from_secs(5),
    );
    assert_eq!(patch.as_ref().map(|r| r.0), Some(200), "{patch:?}");
    for n in &lab.nodes {
        wait_for(
            &format!("{} to serve the failsafe key", n.name),
            Duration::from_secs(30),
            || {
                let (s, body) = n.http_get("/failsafe")?;
                let doc: serde_json::Value = serde_json::from_str(&body).ok()?;
                (s == 200 && doc.as_object()?.len() == NODES).then_some(())
            },
        );
    }
    let mon = SplitBrainMonitor::start_at(
        lab.nodes
            .iter()
            .map(|n| (n.name.clone(), n.host.clone(), PG_PORT))
            .collect(),
    );
    let t0 = Instant::now();
    lab.partition(old);
    // When the last write was acknowledged (not when the first refusal came back).
    let last_ok = std::cell::Cell::new(Duration::ZERO);
    let stopped_after = wait_for(
        "the partitioned leader to stop taking writes",
        Duration::from_secs(TTL + 10),
        || {
            if lab.writable(old) {
                last_ok.set(t0.elapsed());
                None
            } else {
                Some(last_ok.get())
            }
        },
    );
    let new = wait_for(
        "a replica to take over",
        Duration::from_secs(TTL + 30),
        || (0..NODES).filter(|i| *i != old).find(|i| lab.writable(*i)),
    );
    let took_over_after = t0.elapsed();
    eprintln!(
        "failsafe partition: old leader {} acknowledged its last write {stopped_after:?} after the cut; {} took writes after {took_over_after:?}",
        lab.nodes[old].name, lab.nodes[new].name
    );
    assert!(
        !lab.writable(old),
        "the partitioned old leader is writable again"
    );
    lab.heal(old);
    let bad = mon.finish();
    if !bad.is_empty() {
        lab.dump_logs();
    }
    assert!(bad.is_empty(), "two writable nodes at: {bad:?}");
    // ttl − margin at ttl 10 s.
    assert!(
        stopped_after < Duration::from_secs(8),
        "the partitioned leader took writes for {stopped_after:?}, past its last deadline"
    );
    assert!(took_over_after > stopped_after);
}
