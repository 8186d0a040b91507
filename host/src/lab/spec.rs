//! What a lab is made of: its settings (checked once, from the command line), the ports it
//! uses, where its files live in the lab directory, and the files generated from them: each
//! node's Patroni-style YAML and HAProxy's configuration. Nothing here starts a process or
//! touches the filesystem.

use super::LabError;
use crate::config::TimingFit;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The cluster name (`scope`) of every lab.
pub(crate) const SCOPE: &str = "lab";
/// The PostgreSQL superuser the lab's nodes, writer and probes use.
pub(crate) const SUPERUSER: &str = "postgres";
/// The replication role.
pub(crate) const REPLICATION_USER: &str = "replicator";
/// The REST API's Basic-auth user (the password is the lab's).
pub(crate) const API_USER: &str = "lab";
/// The most nodes a lab runs.
pub(crate) const MAX_NODES: usize = 9;
/// The nodes' `maximum_lag_on_failover` (bytes): small, so that the `lag-replica` fault
/// needs only a few MB of WAL to leave a replica out of the election.
pub(crate) const MAXIMUM_LAG_ON_FAILOVER: u64 = 1_048_576;
/// The table the writer fills: one row per acknowledged write.
pub(crate) const WRITES_TABLE: &str = "regent_lab_writes";
/// The table the split-brain probes write to.
pub(crate) const PROBE_TABLE: &str = "regent_lab_probe";

/// A lab's settings, as recorded in its state file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Settings {
    pub(crate) nodes: usize,
    pub(crate) ttl: u64,
    pub(crate) loop_wait: u64,
    pub(crate) retry_timeout: u64,
    pub(crate) synchronous_mode: bool,
    /// The policies every node runs, in order; empty: the built-in rules.
    pub(crate) policies: Vec<String>,
    /// The `zone` tag of each node.
    pub(crate) zones: Vec<String>,
    /// The `failover_priority` tag of each node.
    pub(crate) priorities: Vec<i64>,
    pub(crate) haproxy: bool,
    /// The PostgreSQL programs.
    pub(crate) bin_dir: PathBuf,
    /// The OS user PostgreSQL runs as (`postgresql.os_user`), set when the lab runs as root.
    pub(crate) os_user: Option<String>,
}

/// The settings as given on the command line; `None`: the default (or, for a lab that exists,
/// what it was created with).
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Requested {
    pub(crate) nodes: Option<usize>,
    pub(crate) ttl: Option<u64>,
    pub(crate) loop_wait: Option<u64>,
    pub(crate) retry_timeout: Option<u64>,
    pub(crate) synchronous_mode: Option<bool>,
    pub(crate) policies: Option<Vec<String>>,
    pub(crate) zones: Option<Vec<String>>,
    pub(crate) priorities: Option<Vec<i64>>,
    pub(crate) haproxy: Option<bool>,
}

pub(crate) const DEFAULT_NODES: usize = 3;
pub(crate) const DEFAULT_TTL: u64 = 10;
pub(crate) const DEFAULT_LOOP_WAIT: u64 = 1;
pub(crate) const DEFAULT_RETRY_TIMEOUT: u64 = 3;
const DEFAULT_ZONES: [&str; 2] = ["a", "b"];

/// `builtin` in a policy list: the built-in rules (no policy plugin).
pub(crate) const BUILTIN: &str = "builtin";

/// A name made of letters, digits, `-`, `_` and `.` (so that it needs no quoting anywhere).
fn plain_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// A policy list from the command line: names, or `builtin` alone (the built-in rules).
pub(crate) fn policy_list(flag: &str, names: &[String]) -> Result<Vec<String>, LabError> {
    let names: Vec<String> = names
        .iter()
        .map(|n| n.trim().to_string())
        .filter(|n| !n.is_empty())
        .collect();
    for n in &names {
        if !plain_name(n) {
            return Err(LabError::Usage(format!(
                "{flag}: {n:?} is not a policy name; a name is the file name of its manifest without .toml (letters, digits, -, _), e.g. {flag} zone-aware"
            )));
        }
    }
    if names.iter().any(|n| n == BUILTIN) {
        if names.len() > 1 {
            return Err(LabError::Usage(format!(
                "{flag}: `{BUILTIN}` (the built-in rules) cannot be combined with other policies; give either {flag} {BUILTIN} or a list of policy names"
            )));
        }
        return Ok(Vec::new());
    }
    Ok(names)
}

/// `list` repeated to `n` entries (a shorter list repeats from its start).
fn per_node<T: Clone>(list: &[T], n: usize) -> Vec<T> {
    list.iter().cycle().take(n).cloned().collect()
}

impl Requested {
    /// The settings of a new lab: the requested values over the defaults, checked.
    pub(crate) fn settings(
        &self,
        bin_dir: PathBuf,
        os_user: Option<String>,
    ) -> Result<Settings, LabError> {
        let nodes = self.nodes.unwrap_or(DEFAULT_NODES);
        if !(1..=MAX_NODES).contains(&nodes) {
            return Err(LabError::Usage(format!(
                "--nodes {nodes}: a lab runs 1 to {MAX_NODES} nodes; use e.g. --nodes 3"
            )));
        }
        let ttl = self.ttl.unwrap_or(DEFAULT_TTL);
        let loop_wait = self.loop_wait.unwrap_or(DEFAULT_LOOP_WAIT);
        let retry_timeout = self.retry_timeout.unwrap_or(DEFAULT_RETRY_TIMEOUT);
        // A fit is taken; `prepare` says so.
        check_timing(ttl, loop_wait, retry_timeout)?;
        let policies = match &self.policies {
            Some(p) => policy_list("--policies", p)?,
            None => Vec::new(),
        };
        let zones: Vec<String> = match &self.zones {
            Some(z) => z.iter().map(|s| s.trim().to_string()).collect(),
            None => DEFAULT_ZONES.iter().map(|s| s.to_string()).collect(),
        };
        if zones.is_empty() || zones.iter().any(|z| !plain_name(z)) {
            return Err(LabError::Usage(format!(
                "--zones {}: give one zone name per node (letters, digits, -, _, .; a shorter list repeats), e.g. --zones a,b,a",
                zones.join(",")
            )));
        }
        let priorities = self.priorities.clone().unwrap_or_else(|| vec![1]);
        if priorities.is_empty() || priorities.iter().any(|p| *p < 0) {
            return Err(LabError::Usage(format!(
                "--priorities {}: give one failover priority per node, 0 or more (0: never promote; a shorter list repeats), e.g. --priorities 1,3,2",
                priorities
                    .iter()
                    .map(i64::to_string)
                    .collect::<Vec<_>>()
                    .join(",")
            )));
        }
        Ok(Settings {
            nodes,
            ttl,
            loop_wait,
            retry_timeout,
            synchronous_mode: self.synchronous_mode.unwrap_or(false),
            policies,
            zones: per_node(&zones, nodes),
            priorities: per_node(&priorities, nodes),
            haproxy: self.haproxy.unwrap_or(false),
            bin_dir,
            os_user,
        })
    }

    /// The flags that ask for something other than what `existing` was created with.
    pub(crate) fn conflicts(&self, existing: &Settings) -> Vec<String> {
        let n = existing.nodes;
        let list = |v: &[String]| v.join(",");
        let numbers = |v: &[i64]| list(&v.iter().map(i64::to_string).collect::<Vec<_>>());
        let s = |v: &dyn ToString| v.to_string();
        let flags: [(&str, Option<String>, String); 8] = [
            ("--nodes", self.nodes.map(|v| s(&v)), s(&n)),
            ("--ttl", self.ttl.map(|v| s(&v)), s(&existing.ttl)),
            (
                "--loop-wait",
                self.loop_wait.map(|v| s(&v)),
                s(&existing.loop_wait),
            ),
            (
                "--retry-timeout",
                self.retry_timeout.map(|v| s(&v)),
                s(&existing.retry_timeout),
            ),
            (
                "--sync",
                self.synchronous_mode.map(|v| s(&v)),
                s(&existing.synchronous_mode),
            ),
            (
                "--zones",
                self.zones.as_ref().map(|z| list(&per_node(z, n))),
                list(&existing.zones),
            ),
            (
                "--priorities",
                self.priorities.as_ref().map(|p| numbers(&per_node(p, n))),
                numbers(&existing.priorities),
            ),
            (
                "--haproxy",
                self.haproxy.map(|v| s(&v)),
                s(&existing.haproxy),
            ),
        ];
        flags
            .into_iter()
            .filter_map(|(flag, asked, has)| {
                asked
                    .filter(|a| *a != has)
                    .map(|a| format!("{flag} {a} (the lab has {has})"))
            })
            .collect()
    }
}

/// The timing rule the nodes apply ([`crate::config::validate_dynamic`]), with the lab's flag
/// names: what a node would refuse is refused; timing that breaks `loop_wait + 2 ×
/// retry_timeout <= ttl` is taken, as Patroni takes it, and the returned fit is what the nodes
/// run with (and warn about).
pub(crate) fn check_timing(
    ttl: u64,
    loop_wait: u64,
    retry_timeout: u64,
) -> Result<Option<TimingFit>, LabError> {
    let doc =
        serde_json::json!({"ttl": ttl, "loop_wait": loop_wait, "retry_timeout": retry_timeout});
    crate::config::validate_dynamic(&doc)
        .map(|d| d.timing_adjusted)
        .map_err(|e| {
            LabError::Usage(format!(
                "--ttl {ttl} --loop-wait {loop_wait} --retry-timeout {retry_timeout}: {e}"
            ))
        })
}

/// The ports of one node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct NodePorts {
    pub(crate) api: u16,
    pub(crate) pg: u16,
}

/// HAProxy's listeners: writes (to the leader), reads (to the replicas), statistics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct HaproxyPorts {
    pub(crate) write: u16,
    pub(crate) read: u16,
    pub(crate) stats: u16,
}

/// Every port of a lab (all on 127.0.0.1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Ports {
    pub(crate) etcd_client: u16,
    pub(crate) etcd_peer: u16,
    pub(crate) nodes: Vec<NodePorts>,
    pub(crate) haproxy: Option<HaproxyPorts>,
}

/// How many ports a lab with `base` needs above it: etcd at base and base+1, the REST APIs
/// from base+10, PostgreSQL from base+20, HAProxy at base+30..32.
const BASE_SPAN: u16 = 32;

impl Ports {
    /// Ports drawn from `next` (e.g. free ports from the OS), in a fixed order.
    pub(crate) fn assign(nodes: usize, haproxy: bool, mut next: impl FnMut() -> u16) -> Ports {
        let etcd_client = next();
        let etcd_peer = next();
        let nodes = (0..nodes)
            .map(|_| NodePorts {
                api: next(),
                pg: next(),
            })
            .collect();
        let haproxy = haproxy.then(|| HaproxyPorts {
            write: next(),
            read: next(),
            stats: next(),
        });
        Ports {
            etcd_client,
            etcd_peer,
            nodes,
            haproxy,
        }
    }

    /// The fixed layout from `--base-port B`: etcd B and B+1, node i's REST API B+10+i and
    /// PostgreSQL B+20+i (i from 0), HAProxy B+30 (writes), B+31 (reads), B+32 (statistics).
    pub(crate) fn from_base(base: u16, nodes: usize, haproxy: bool) -> Result<Ports, LabError> {
        if base < 1024 || base.checked_add(BASE_SPAN).is_none() {
            return Err(LabError::Usage(format!(
                "--base-port {base}: the lab uses the ports from it up to {BASE_SPAN} above it; choose a base from 1024 to {}",
                u16::MAX - BASE_SPAN
            )));
        }
        let i = |k: usize| u16::try_from(k).unwrap_or(0);
        Ok(Ports {
            etcd_client: base,
            etcd_peer: base + 1,
            nodes: (0..nodes)
                .map(|k| NodePorts {
                    api: base + 10 + i(k),
                    pg: base + 20 + i(k),
                })
                .collect(),
            haproxy: haproxy.then_some(HaproxyPorts {
                write: base + 30,
                read: base + 31,
                stats: base + 32,
            }),
        })
    }

    /// Every port with what it is for.
    pub(crate) fn all(&self) -> Vec<(String, u16)> {
        let mut out = vec![
            ("etcd (clients)".to_string(), self.etcd_client),
            ("etcd (peers)".to_string(), self.etcd_peer),
        ];
        for (i, n) in self.nodes.iter().enumerate() {
            out.push((format!("{} (REST API)", node_name(i)), n.api));
            out.push((format!("{} (PostgreSQL)", node_name(i)), n.pg));
        }
        if let Some(h) = self.haproxy {
            out.push(("HAProxy (writes)".into(), h.write));
            out.push(("HAProxy (reads)".into(), h.read));
            out.push(("HAProxy (statistics)".into(), h.stats));
        }
        out
    }
}

/// The name of node `i` (from 0): `node1`, `node2`, ...
pub(crate) fn node_name(i: usize) -> String {
    format!("node{}", i + 1)
}

/// A node given on the command line (`2` or `node2`) as its index, checked against `nodes`.
pub(crate) fn parse_node(s: &str, nodes: usize) -> Result<usize, LabError> {
    let t = s.trim();
    let digits = t.strip_prefix("node").unwrap_or(t);
    match digits.parse::<usize>() {
        Ok(n) if (1..=nodes).contains(&n) => Ok(n - 1),
        _ => Err(LabError::Usage(format!(
            "no node {s:?} in this lab: its nodes are node1 to node{nodes} (give 1 to {nodes} or node1 to node{nodes})"
        ))),
    }
}

/// Where everything of a lab lives, inside its directory.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Layout {
    pub(crate) dir: PathBuf,
}

impl Layout {
    pub(crate) fn state(&self) -> PathBuf {
        self.dir.join("lab.json")
    }
    pub(crate) fn lock(&self) -> PathBuf {
        self.dir.join("lab.lock")
    }
    pub(crate) fn etcd_data(&self) -> PathBuf {
        self.dir.join("etcd")
    }
    pub(crate) fn etcd_log(&self) -> PathBuf {
        self.dir.join("etcd.log")
    }
    pub(crate) fn config(&self, i: usize) -> PathBuf {
        self.dir.join(format!("{}.yml", node_name(i)))
    }
    /// Node `i`'s Patroni configuration, while Patroni supervises it (see `lab::patroni`).
    pub(crate) fn patroni_config(&self, i: usize) -> PathBuf {
        self.dir.join(format!("{}.patroni.yml", node_name(i)))
    }
    pub(crate) fn log(&self, i: usize) -> PathBuf {
        self.dir.join(format!("{}.log", node_name(i)))
    }
    /// The node's own directory: the data directory's parent, owned by PostgreSQL's OS user.
    pub(crate) fn node_dir(&self, i: usize) -> PathBuf {
        self.dir.join(node_name(i))
    }
    pub(crate) fn data_dir(&self, i: usize) -> PathBuf {
        self.node_dir(i).join("data")
    }
    pub(crate) fn haproxy_config(&self) -> PathBuf {
        self.dir.join("haproxy.cfg")
    }
    pub(crate) fn haproxy_log(&self) -> PathBuf {
        self.dir.join("haproxy.log")
    }
    /// The lab's copy of the policies (watched by every node).
    pub(crate) fn policies(&self) -> PathBuf {
        self.dir.join("policies")
    }

    /// Every file and directory a lab of `nodes` nodes may create in its directory: what
    /// `down` removes, and nothing else.
    pub(crate) fn owned_entries(&self, nodes: usize) -> Vec<PathBuf> {
        let mut v = vec![
            self.etcd_data(),
            self.etcd_log(),
            self.haproxy_config(),
            self.haproxy_log(),
            self.policies(),
        ];
        for i in 0..nodes {
            v.push(self.config(i));
            v.push(self.patroni_config(i));
            v.push(self.log(i));
            v.push(self.node_dir(i));
        }
        v
    }
}

/// A string as a YAML scalar: plain when it reads back as the same string, else
/// double-quoted (JSON's escaping is valid YAML).
fn yq(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
        && !s.starts_with(['-', '.'])
        && s.parse::<f64>().is_err()
        && !matches!(
            s.to_ascii_lowercase().as_str(),
            "true" | "false" | "yes" | "no" | "on" | "off" | "y" | "n" | "null" | "nan" | "inf"
        );
    if plain {
        s.to_string()
    } else {
        serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
    }
}

fn yp(p: &Path) -> String {
    yq(&p.display().to_string())
}

/// A node's configuration for a cluster on one machine: the lab's nodes, and the
/// integration tests' (`tests/support`), which build theirs with it too.
#[derive(Debug, Clone)]
pub struct NodeYaml<'a> {
    /// The cluster's name (`scope`).
    pub scope: &'a str,
    /// The member name.
    pub name: &'a str,
    /// The address the REST API and PostgreSQL listen on (and are reached at).
    pub host: &'a str,
    /// The REST API's port.
    pub api_port: u16,
    /// PostgreSQL's port.
    pub pg_port: u16,
    /// etcd endpoints, `host:port` each.
    pub etcd: &'a [String],
    /// `bootstrap.dcs.ttl`, in seconds.
    pub ttl: u64,
    /// `bootstrap.dcs.loop_wait`, in seconds.
    pub loop_wait: u64,
    /// `bootstrap.dcs.retry_timeout`, in seconds.
    pub retry_timeout: u64,
    /// `bootstrap.dcs.synchronous_mode`.
    pub synchronous_mode: bool,
    /// `bootstrap.pg_hba`.
    pub pg_hba: &'a [String],
    /// `postgresql.data_dir`.
    pub data_dir: &'a Path,
    /// `postgresql.bin_dir`.
    pub bin_dir: &'a Path,
    /// `postgresql.os_user`.
    pub os_user: Option<&'a str>,
    /// The password of the superuser, `postgres`.
    pub superuser_password: &'a str,
    /// The password of the replication user, `replicator`.
    pub replication_password: &'a str,
    /// `restapi.authentication` (user, password).
    pub api_auth: Option<(&'a str, &'a str)>,
    /// `postgresql.parameters`.
    pub parameters: &'a [(&'a str, &'a str)],
    /// `bootstrap.dcs.postgresql.parameters`, besides `wal_keep_size`: the cluster-wide ones
    /// (Patroni takes `max_connections` and its kind only from there).
    pub dcs_parameters: &'a [(&'a str, &'a str)],
    /// The lines under `tags:`, indented by two spaces, each ending in a newline.
    pub tags: &'a str,
    /// Appended as is (a `regent:` section, say).
    pub tail: &'a str,
}

impl NodeYaml<'_> {
    /// The configuration file's text.
    pub fn render(&self) -> String {
        let addr = |port: u16| {
            if self.host.contains(':') {
                format!("[{}]:{port}", self.host)
            } else {
                format!("{}:{port}", self.host)
            }
        };
        let mut y = format!(
            "scope: {}\nnamespace: /service/\nname: {}\n",
            yq(self.scope),
            yq(self.name)
        );
        y += &format!(
            "restapi:\n  listen: {a}\n  connect_address: {a}\n",
            a = addr(self.api_port)
        );
        if let Some((user, pw)) = self.api_auth {
            y += &format!(
                "  authentication:\n    username: {}\n    password: {}\n",
                yq(user),
                yq(pw)
            );
        }
        y += &format!("etcd3:\n  hosts: [{}]\n", self.etcd.join(", "));
        y += &format!(
            "bootstrap:\n  dcs:\n    ttl: {}\n    loop_wait: {}\n    retry_timeout: {}\n    maximum_lag_on_failover: {}\n    synchronous_mode: {}\n",
            self.ttl,
            self.loop_wait,
            self.retry_timeout,
            MAXIMUM_LAG_ON_FAILOVER,
            self.synchronous_mode
        );
        y += "    postgresql:\n      use_pg_rewind: true\n      use_slots: true\n      parameters:\n        wal_keep_size: 64MB\n";
        for (k, v) in self.dcs_parameters {
            y += &format!("        {k}: {v}\n");
        }
        y += "  initdb:\n    - encoding: UTF8\n    - data-checksums\n  pg_hba:\n";
        for l in self.pg_hba {
            y += &format!("    - {l}\n");
        }
        y += &format!(
            "postgresql:\n  listen: {a}\n  connect_address: {a}\n  data_dir: {}\n  bin_dir: {}\n",
            yp(self.data_dir),
            yp(self.bin_dir),
            a = addr(self.pg_port)
        );
        if let Some(u) = self.os_user {
            y += &format!("  os_user: {}\n", yq(u));
        }
        y += &format!(
            "  authentication:\n    superuser:\n      username: {SUPERUSER}\n      password: {}\n    replication:\n      username: {REPLICATION_USER}\n      password: {}\n",
            yq(self.superuser_password),
            yq(self.replication_password)
        );
        y += "  parameters:\n";
        for (k, v) in self.parameters {
            y += &format!("    {k}: {v}\n");
        }
        // These nodes are killed and frozen on purpose: a watchdog armed here would reset the
        // machine.
        y += "watchdog:\n  mode: off\n";
        y += "tags:\n";
        y += self.tags;
        y += self.tail;
        y
    }
}

/// The YAML of the lab's node `i`: loopback addresses, the lab's timing, password, tags and
/// policies.
pub(crate) fn node_yaml(
    layout: &Layout,
    settings: &Settings,
    ports: &Ports,
    password: &str,
    i: usize,
) -> String {
    let name = node_name(i);
    let NodePorts { api, pg } = ports.nodes[i];
    let etcd = [format!("127.0.0.1:{}", ports.etcd_client)];
    let hba = [
        "local all all peer".to_string(),
        "host all all 127.0.0.1/32 scram-sha-256".to_string(),
        format!("host replication {REPLICATION_USER} 127.0.0.1/32 scram-sha-256"),
    ];
    let tags = format!(
        "  zone: {}\n  failover_priority: {}\n",
        yq(&settings.zones[i]),
        settings.priorities[i]
    );
    let tail = format!(
        "regent:\n  policies_dir: {}\n  policies: [{}]\n",
        yp(&layout.policies()),
        settings.policies.join(", ")
    );
    let body = NodeYaml {
        scope: SCOPE,
        name: &name,
        host: "127.0.0.1",
        api_port: api,
        pg_port: pg,
        etcd: &etcd,
        ttl: settings.ttl,
        loop_wait: settings.loop_wait,
        retry_timeout: settings.retry_timeout,
        synchronous_mode: settings.synchronous_mode,
        pg_hba: &hba,
        data_dir: &layout.data_dir(i),
        bin_dir: &settings.bin_dir,
        os_user: settings.os_user.as_deref(),
        superuser_password: password,
        replication_password: password,
        api_auth: Some((API_USER, password)),
        parameters: &[("shared_buffers", "16MB"), ("max_connections", "40")],
        // In the cluster's configuration too: Patroni (`compare --supervisor patroni`) runs
        // the primary with it from there, and a standby needs at least the primary's.
        dcs_parameters: &[("max_connections", "40")],
        tags: &tags,
        tail: &tail,
    }
    .render();
    format!(
        "# Node {name} of the regent lab in {dir}, written by `regent lab up`.\n\
         # Tags, parameters and policies can change while it runs: edit this file, then\n\
         # `kill -HUP <pid>` (see `regent lab status`) or `regent ctl -c {config} reload {name}`.\n{body}",
        dir = layout.dir.display(),
        config = layout.config(i).display(),
    )
}

/// The arguments of a single-member etcd on loopback (the lab's, and the tests').
pub fn etcd_args(name: &str, data_dir: &Path, client_port: u16, peer_port: u16) -> Vec<String> {
    let client = format!("http://127.0.0.1:{client_port}");
    let peer = format!("http://127.0.0.1:{peer_port}");
    [
        "--name",
        name,
        "--data-dir",
        &data_dir.display().to_string(),
        "--listen-client-urls",
        &client,
        "--advertise-client-urls",
        &client,
        "--listen-peer-urls",
        &peer,
        "--initial-advertise-peer-urls",
        &peer,
        "--initial-cluster",
        &format!("{name}={peer}"),
        "--initial-cluster-state",
        "new",
    ]
    .into_iter()
    .map(str::to_string)
    .collect()
}

/// HAProxy in front of the nodes as Patroni documents it: writes go to the node whose
/// `OPTIONS /primary` answers 200, reads to those whose `OPTIONS /replica` does. Checks run
/// every 500 ms.
pub(crate) fn haproxy_config(ports: &Ports) -> Option<String> {
    let h = ports.haproxy?;
    let servers: String = ports
        .nodes
        .iter()
        .enumerate()
        .map(|(i, n)| {
            format!(
                "    server {} 127.0.0.1:{} maxconn 100 check port {}\n",
                node_name(i),
                n.pg,
                n.api
            )
        })
        .collect();
    let listen = |name: &str, port: u16, check: &str, balance: &str| {
        format!(
            "listen {name}\n    bind 127.0.0.1:{port}\n{balance}    option httpchk OPTIONS {check}\n    http-check expect status 200\n    default-server inter 500ms fall 2 rise 1 on-marked-down shutdown-sessions\n{servers}\n"
        )
    };
    Some(format!(
        "# HAProxy of the regent lab, written by `regent lab up`.\nglobal\n    maxconn 200\n\ndefaults\n    mode tcp\n    timeout connect 500ms\n    retries 3\n    option redispatch 1\n    timeout client 30m\n    timeout server 30m\n    timeout check 500ms\n\nlisten stats\n    mode http\n    bind 127.0.0.1:{stats}\n    stats enable\n    stats uri /\n    stats refresh 2s\n\n{}{}",
        listen("primary", h.write, "/primary", ""),
        listen("replicas", h.read, "/replica", "    balance roundrobin\n"),
        stats = h.stats,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(req: &Requested) -> Settings {
        req.settings(PathBuf::from("/usr/lib/postgresql/15/bin"), None)
            .expect("valid settings")
    }

    fn usage(e: LabError) -> String {
        match e {
            LabError::Usage(m) => m,
            other => panic!("expected a usage error, got {other:?}"),
        }
    }

    #[test]
    fn defaults_are_three_nodes_in_two_zones_with_fast_timing() {
        let s = settings(&Requested::default());
        assert_eq!(s.nodes, 3);
        assert_eq!((s.ttl, s.loop_wait, s.retry_timeout), (10, 1, 3));
        assert_eq!(s.zones, ["a", "b", "a"]);
        assert_eq!(s.priorities, [1, 1, 1]);
        assert!(s.policies.is_empty());
        assert!(!s.synchronous_mode && !s.haproxy);
    }

    #[test]
    fn bad_settings_name_the_flag_and_the_fix() {
        let e = usage(
            Requested {
                nodes: Some(0),
                ..Requested::default()
            }
            .settings(PathBuf::from("/b"), None)
            .expect_err("0 nodes"),
        );
        assert!(
            e.starts_with("--nodes 0:") && e.contains("--nodes 3"),
            "{e}"
        );
        // Timing Patroni takes is taken (the nodes run with fitted values), as by the nodes.
        let s = Requested {
            ttl: Some(6),
            retry_timeout: Some(3),
            ..Requested::default()
        }
        .settings(PathBuf::from("/b"), None)
        .expect("timing Patroni takes");
        assert_eq!((s.ttl, s.loop_wait, s.retry_timeout), (6, 1, 3), "as given");
        let fit = check_timing(20, 2, 10).expect("taken").expect("fitted");
        assert_eq!(
            (fit.effective.loop_wait, fit.effective.retry_timeout),
            (1, 9)
        );
        let e = usage(check_timing(4, 1, 1).expect_err("ttl 4"));
        assert!(
            e.starts_with("--ttl 4 --loop-wait 1 --retry-timeout 1: ttl"),
            "{e}"
        );
        let e = usage(check_timing(30, 0, 1).expect_err("loop_wait 0"));
        assert!(e.contains("loop_wait"), "{e}");
        assert_eq!(check_timing(5, 1, 2).expect("fits"), None);
        let e = usage(
            Requested {
                zones: Some(vec!["a".into(), "b c".into()]),
                ..Requested::default()
            }
            .settings(PathBuf::from("/b"), None)
            .expect_err("zone with a space"),
        );
        assert!(e.starts_with("--zones a,b c:"), "{e}");
        let e = usage(
            Requested {
                priorities: Some(vec![1, -1]),
                ..Requested::default()
            }
            .settings(PathBuf::from("/b"), None)
            .expect_err("negative priority"),
        );
        assert!(e.starts_with("--priorities 1,-1:"), "{e}");
    }

    #[test]
    fn policy_lists_take_names_or_builtin_alone() {
        let l = |v: &[&str]| {
            policy_list(
                "--policies",
                &v.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            )
        };
        assert_eq!(
            l(&["zone-aware", " event-journal"]).expect("names"),
            ["zone-aware", "event-journal"]
        );
        assert!(l(&["builtin"]).expect("builtin").is_empty());
        assert!(
            usage(l(&["builtin", "zone-aware"]).expect_err("mixed")).contains("cannot be combined")
        );
        assert!(usage(l(&["../x"]).expect_err("path")).contains("not a policy name"));
    }

    #[test]
    fn short_lists_repeat_per_node() {
        let s = settings(&Requested {
            nodes: Some(5),
            zones: Some(vec!["x".into(), "y".into(), "z".into()]),
            priorities: Some(vec![2, 1]),
            ..Requested::default()
        });
        assert_eq!(s.zones, ["x", "y", "z", "x", "y"]);
        assert_eq!(s.priorities, [2, 1, 2, 1, 2]);
    }

    #[test]
    fn conflicts_list_only_flags_that_differ() {
        let s = settings(&Requested::default());
        let same = Requested {
            nodes: Some(3),
            zones: Some(vec!["a".into(), "b".into()]),
            ..Requested::default()
        };
        assert!(same.conflicts(&s).is_empty());
        let other = Requested {
            nodes: Some(5),
            ttl: Some(20),
            haproxy: Some(true),
            ..Requested::default()
        };
        assert_eq!(
            other.conflicts(&s),
            [
                "--nodes 5 (the lab has 3)",
                "--ttl 20 (the lab has 10)",
                "--haproxy true (the lab has false)"
            ]
        );
    }

    #[test]
    fn ports_from_a_base_follow_the_documented_layout() {
        let p = Ports::from_base(7000, 3, true).expect("base");
        assert_eq!((p.etcd_client, p.etcd_peer), (7000, 7001));
        assert_eq!(
            p.nodes[2],
            NodePorts {
                api: 7012,
                pg: 7022
            }
        );
        assert_eq!(
            p.haproxy,
            Some(HaproxyPorts {
                write: 7030,
                read: 7031,
                stats: 7032
            })
        );
        assert_eq!(p.all().len(), 2 + 6 + 3);
        assert!(usage(Ports::from_base(80, 3, false).expect_err("low")).contains("1024"));
        assert!(Ports::from_base(65530, 3, false).is_err());
        let mut n = 100;
        let q = Ports::assign(2, false, || {
            n += 1;
            n
        });
        assert_eq!(q.etcd_client, 101);
        assert_eq!(q.nodes[1], NodePorts { api: 105, pg: 106 });
        assert_eq!(q.haproxy, None);
    }

    #[test]
    fn nodes_are_given_by_number_or_name() {
        assert_eq!(parse_node("2", 3).expect("2"), 1);
        assert_eq!(parse_node("node3", 3).expect("node3"), 2);
        for bad in ["0", "4", "node", "pg1", ""] {
            let e = usage(parse_node(bad, 3).expect_err(bad));
            assert!(e.contains("node1 to node3"), "{e}");
        }
    }

    #[test]
    fn node_yaml_is_a_valid_regent_configuration_with_the_lab_settings() {
        let layout = Layout {
            dir: PathBuf::from("/tmp/my lab"),
        };
        let s = Requested {
            policies: Some(vec!["zone-aware".into(), "event-journal".into()]),
            synchronous_mode: Some(true),
            ttl: Some(6),
            retry_timeout: Some(2),
            ..Requested::default()
        }
        .settings(
            PathBuf::from("/usr/lib/postgresql/15/bin"),
            Some("postgres".into()),
        )
        .expect("settings");
        let ports = Ports::from_base(7000, 3, false).expect("ports");
        let yaml = node_yaml(&layout, &s, &ports, "pw\"x", 1);
        let loaded = crate::config::parse(&yaml).expect("the generated YAML loads");
        assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
        let c = loaded.config;
        assert_eq!((c.scope.as_str(), c.name.as_str()), ("lab", "node2"));
        assert_eq!(c.restapi.listen, "127.0.0.1:7011");
        assert_eq!(c.postgresql.listen, "127.0.0.1:7021");
        assert_eq!(c.etcd_endpoints(), ["127.0.0.1:7000"]);
        assert_eq!(
            c.postgresql.data_dir,
            PathBuf::from("/tmp/my lab/node2/data")
        );
        assert_eq!(c.postgresql.os_user.as_deref(), Some("postgres"));
        assert_eq!(
            c.postgresql.authentication.superuser.password.as_deref(),
            Some("pw\"x")
        );
        assert_eq!(c.bootstrap.dcs.ttl, 6);
        assert_eq!(c.bootstrap.dcs.retry_timeout, 2);
        assert_eq!(
            c.bootstrap.dcs.synchronous_mode,
            crate::config::SyncMode::On
        );
        assert_eq!(c.tags.other.get("zone").and_then(|z| z.as_str()), Some("b"));
        assert_eq!(c.tags.failover_priority, Some(1));
        assert_eq!(c.regent.policies, ["zone-aware", "event-journal"]);
        assert_eq!(
            c.regent.policies_dir,
            Some(PathBuf::from("/tmp/my lab/policies"))
        );
        let api = c.restapi.authentication.expect("REST auth");
        assert_eq!(
            (api.username.as_str(), api.password.as_str()),
            ("lab", "pw\"x")
        );

        // The built-in rules: an empty list; no os_user when not root.
        let plain = Requested::default()
            .settings(PathBuf::from("/usr/lib/postgresql/15/bin"), None)
            .expect("settings");
        let c = crate::config::parse(&node_yaml(&layout, &plain, &ports, "pw", 0))
            .expect("loads")
            .config;
        assert!(c.regent.policies.is_empty());
        assert_eq!(c.postgresql.os_user, None);
    }

    #[test]
    fn strings_are_quoted_only_when_yaml_would_misread_them() {
        assert_eq!(yq("node1"), "node1");
        assert_eq!(yq("/tmp/regent-lab/policies"), "/tmp/regent-lab/policies");
        for (s, q) in [
            ("123456", "\"123456\""),
            ("1e5", "\"1e5\""),
            ("on", "\"on\""),
            ("No", "\"No\""),
            ("a b", "\"a b\""),
            ("-x", "\"-x\""),
            ("pw\"x", "\"pw\\\"x\""),
            ("", "\"\""),
        ] {
            assert_eq!(yq(s), q);
            let back: String = serde_yaml::from_str(&yq(s)).expect("YAML");
            assert_eq!(back, s);
        }
    }

    #[test]
    fn etcd_and_haproxy_use_the_lab_ports() {
        let layout = Layout {
            dir: PathBuf::from("/tmp/lab"),
        };
        let ports = Ports::from_base(7000, 2, true).expect("ports");
        let a = etcd_args(
            "lab",
            &layout.etcd_data(),
            ports.etcd_client,
            ports.etcd_peer,
        );
        let pos = |k: &str| a.iter().position(|x| x == k).expect(k) + 1;
        assert_eq!(a[pos("--listen-client-urls")], "http://127.0.0.1:7000");
        assert_eq!(a[pos("--initial-cluster")], "lab=http://127.0.0.1:7001");
        assert_eq!(a[pos("--data-dir")], "/tmp/lab/etcd");
        let cfg = haproxy_config(&ports).expect("haproxy");
        assert!(
            cfg.contains("listen primary\n    bind 127.0.0.1:7030\n"),
            "{cfg}"
        );
        assert!(
            cfg.contains(
                "bind 127.0.0.1:7031\n    balance roundrobin\n    option httpchk OPTIONS /replica"
            ),
            "{cfg}"
        );
        assert!(
            cfg.contains("server node2 127.0.0.1:7021 maxconn 100 check port 7011"),
            "{cfg}"
        );
        assert!(cfg.contains("bind 127.0.0.1:7032"), "{cfg}");
        assert!(haproxy_config(&Ports::from_base(7000, 2, false).expect("p")).is_none());
    }

    #[test]
    fn the_owned_entries_stay_inside_the_lab_directory() {
        let layout = Layout {
            dir: PathBuf::from("/tmp/lab"),
        };
        let owned = layout.owned_entries(3);
        assert!(
            owned
                .iter()
                .all(|p| p.parent() == Some(Path::new("/tmp/lab")))
        );
        assert!(owned.contains(&PathBuf::from("/tmp/lab/node3")));
        assert!(
            !owned.contains(&layout.state()),
            "the state file goes last, on its own"
        );
    }
}
