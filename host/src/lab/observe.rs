//! What a lab looks like: each node's view (its REST API's status document and whether it
//! holds the leader key), whether the cluster is healthy, the waits built on that, and the
//! output of `regent lab status` and `regent lab up`.

use super::ops::Lab;
use super::procs::{self, Status};
use super::spec::{self, Layout, Settings, node_name};
use super::state::{LabState, Lock, cmd};
use super::{Format, LabError};
use crate::ctl::table::{Align, Table};
use serde_json::{Value, json};
use std::path::Path;
use std::time::{Duration, Instant};

/// What one node looks like right now.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct NodeReport {
    pub(crate) process: Status,
    /// `GET /primary` answered 200: the node holds the leader key.
    pub(crate) leader: bool,
    /// Its status document (`GET /patroni`), if the REST API answered.
    pub(crate) doc: Option<Value>,
}

impl NodeReport {
    fn field(&self, k: &str) -> Option<&str> {
        self.doc.as_ref()?.get(k)?.as_str()
    }
    pub(crate) fn role(&self) -> Option<&str> {
        self.field("role")
    }
    pub(crate) fn state(&self) -> Option<&str> {
        self.field("state")
    }
    pub(crate) fn timeline(&self) -> Option<u64> {
        self.doc.as_ref()?.get("timeline")?.as_u64()
    }
    /// The leader named it its synchronous standby.
    pub(crate) fn sync_standby(&self) -> bool {
        self.doc
            .as_ref()
            .and_then(|d| d.get("sync_standby"))
            .and_then(Value::as_bool)
            == Some(true)
    }
    /// A running replica whose WAL receiver streams.
    pub(crate) fn streaming_replica(&self) -> bool {
        !self.leader
            && self.role() == Some("replica")
            && self.state() == Some("running")
            && self.field("replication_state") == Some("streaming")
    }
    /// The members that stream from this node (its `replication` rows).
    pub(crate) fn streaming_to(&self) -> Vec<String> {
        let rows = self
            .doc
            .as_ref()
            .and_then(|d| d.get("replication"))
            .and_then(Value::as_array);
        rows.map(|rows| {
            rows.iter()
                .filter(|r| r.get("state").and_then(Value::as_str) == Some("streaming"))
                .filter_map(|r| r.get("application_name")?.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
    }
    /// The policies the node runs (`builtin` for the built-in rules), from its status document.
    pub(crate) fn policies(&self) -> Option<String> {
        // A policy set publishes `summary`; the built-in rules only their `name`.
        let p = self.doc.as_ref()?.get("policy")?;
        let summary = p.get("summary").or_else(|| p.get("name"))?.as_str()?;
        Some(policy_names(summary))
    }
}

/// `zone-aware@1234abcd,event-journal@…` → `zone-aware,event-journal`; the built-in rules →
/// `builtin`.
pub(crate) fn policy_names(summary: &str) -> String {
    if summary == "builtin-default" || summary.is_empty() {
        return spec::BUILTIN.into();
    }
    summary
        .split(',')
        .map(|p| p.split('@').next().unwrap_or(p))
        .collect::<Vec<_>>()
        .join(",")
}

/// Whether the cluster is healthy: exactly one leader, every other node a streaming replica
/// on the leader's timeline that the leader also sees streaming, and in synchronous mode (`sync`) a synchronous
/// standby. `Ok(leader)` or what is still missing.
pub(crate) fn assess(views: &[NodeReport], sync: bool) -> Result<usize, String> {
    let leaders: Vec<usize> = (0..views.len()).filter(|i| views[*i].leader).collect();
    let leader = match leaders.as_slice() {
        [l] => *l,
        [] => return Err("no node holds the leader key yet".into()),
        many => {
            return Err(format!(
                "{} nodes answer as leader: {}",
                many.len(),
                many.iter()
                    .map(|i| node_name(*i))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    };
    let seen = views[leader].streaming_to();
    let leader_tl = views[leader].timeline();
    // A replica that streams the timeline before the last promotion restarts its WAL
    // receiver on the new one in a moment: it does not count yet.
    let behind = |i: usize| match (views[i].timeline(), leader_tl) {
        (Some(tl), Some(ltl)) if tl < ltl => Some(format!(
            "{} (still on timeline {tl}, the leader is on {ltl})",
            node_name(i)
        )),
        _ => None,
    };
    let waiting: Vec<String> = (0..views.len())
        .filter(|i| *i != leader)
        .filter_map(|i| {
            if !(views[i].streaming_replica() && seen.contains(&node_name(i))) {
                Some(node_name(i))
            } else {
                behind(i)
            }
        })
        .collect();
    if !waiting.is_empty() {
        return Err(format!(
            "{} leads; not yet streaming from it: {}",
            node_name(leader),
            waiting.join(", ")
        ));
    }
    if sync && views.len() > 1 && !views.iter().any(NodeReport::sync_standby) {
        return Err(format!(
            "{} leads; no synchronous standby yet",
            node_name(leader)
        ));
    }
    Ok(leader)
}

impl Lab {
    /// Every node's view, asked concurrently.
    pub(crate) async fn views(&self) -> Vec<NodeReport> {
        let mut tasks = Vec::new();
        for i in 0..self.st.settings.nodes {
            let http = self.http.clone();
            let url = format!("http://127.0.0.1:{}/primary", self.st.ports.nodes[i].api);
            let process = self.node_proc(i).map_or(Status::Gone, |p| p.status());
            tasks.push(tokio::spawn(async move {
                let (leader, doc) =
                    match http.get(&url).timeout(Duration::from_secs(1)).send().await {
                        Ok(r) => {
                            let leader = r.status().as_u16() == 200;
                            (leader, r.json::<Value>().await.ok())
                        }
                        Err(_) => (false, None),
                    };
                NodeReport {
                    process,
                    leader,
                    doc,
                }
            }));
        }
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.unwrap_or(NodeReport {
                process: Status::Gone,
                leader: false,
                doc: None,
            }));
        }
        out
    }

    /// The node holding the leader key, if one does.
    pub(crate) async fn leader(&self) -> Option<usize> {
        self.views().await.iter().position(|v| v.leader)
    }

    /// Poll the views until `f` gives a value, the deadline passes, or a process that
    /// should run has exited (then the error shows the end of its log).
    pub(crate) async fn wait_until<T>(
        &self,
        deadline: Instant,
        what: &str,
        mut f: impl FnMut(&[NodeReport]) -> Option<T>,
    ) -> Result<T, LabError> {
        loop {
            let views = self.views().await;
            if let Some(v) = f(&views) {
                return Ok(v);
            }
            self.check_alive()?;
            if Instant::now() > deadline {
                return Err(LabError::Failed(format!(
                    "timed out waiting for {what}; `{}` shows the nodes, their logs are in {}",
                    cmd(&self.layout.dir, "status"),
                    self.layout.dir.display()
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// An error if etcd or a node whose process was started has exited.
    fn check_alive(&self) -> Result<(), LabError> {
        for (what, p) in &self.st.procs {
            if self.expected.contains(what) && !p.alive() {
                let log = match what.as_str() {
                    "etcd" => self.layout.etcd_log(),
                    "haproxy" => self.layout.haproxy_log(),
                    node => self.layout.dir.join(format!("{node}.log")),
                };
                return Err(LabError::Failed(format!(
                    "{what} (pid {}) exited; the end of {}:\n{}",
                    p.pid,
                    log.display(),
                    procs::log_tail(&log, 12)
                )));
            }
        }
        Ok(())
    }

    /// Wait until the cluster is healthy (see [`assess`]); the leader.
    pub(crate) async fn wait_healthy(&self, deadline: Instant) -> Result<usize, LabError> {
        let mut last = String::new();
        let r = self
            .wait_until(
                deadline,
                "a leader with streaming replicas",
                |views| match assess(views, self.st.settings.synchronous_mode) {
                    Ok(l) => Some(l),
                    Err(why) => {
                        last = why;
                        None
                    }
                },
            )
            .await;
        match r {
            Ok(l) => Ok(l),
            Err(LabError::Failed(m)) if !last.is_empty() => {
                Err(LabError::Failed(format!("{m} (last seen: {last})")))
            }
            Err(e) => Err(e),
        }
    }

    /// How to reach everything, for `up`.
    pub(crate) fn summary(&self, leader: usize, views: &[NodeReport]) -> String {
        let s = &self.st.settings;
        let d = self.layout.dir.display();
        let mut out = format!(
            "The lab in {d} is up: {} nodes, {} leads.\n\n",
            s.nodes,
            node_name(leader)
        );
        out.push_str(&self.status_table(views));
        out.push_str(&format!(
            "\netcd:        127.0.0.1:{}\n",
            self.st.ports.etcd_client
        ));
        if let Some(h) = self.st.ports.haproxy {
            out.push_str(&format!(
                "HAProxy:     writes 127.0.0.1:{}, reads 127.0.0.1:{}, statistics http://127.0.0.1:{}/\n",
                h.write, h.read, h.stats
            ));
        }
        let pg = self.st.ports.nodes[leader].pg;
        let write_port = self.st.ports.haproxy.map_or(pg, |h| h.write);
        out.push_str(&format!(
            "password:    {pw} (PostgreSQL users {su} and {rep}, REST API user {api})\n\n\
             export PGPASSWORD={pw}\n\
             psql -h 127.0.0.1 -p {write_port} -U {su}\n\
             regent ctl -c {d}/node1.yml list\n\
             {fault}\n\
             {down}\n",
            fault = cmd(&self.layout.dir, "fault kill-leader"),
            down = cmd(&self.layout.dir, "down"),
            pw = self.st.password,
            su = spec::SUPERUSER,
            rep = spec::REPLICATION_USER,
            api = spec::API_USER,
        ));
        out
    }

    /// The nodes as a table (from `views`, when given).
    fn status_table(&self, views: &[NodeReport]) -> String {
        let cols = [
            ("Member", Align::Left),
            ("Pid", Align::Right),
            ("Process", Align::Left),
            ("Role", Align::Left),
            ("State", Align::Left),
            ("TL", Align::Right),
            ("Zone", Align::Left),
            ("Policies", Align::Left),
            ("REST API", Align::Left),
            ("PostgreSQL", Align::Left),
        ];
        let s = &self.st.settings;
        let rows = (0..s.nodes)
            .map(|i| {
                let v = views.get(i);
                let p = self.node_proc(i);
                let role = v.map_or(String::new(), |v| {
                    if v.leader {
                        "leader".into()
                    } else {
                        v.role().unwrap_or("").to_string()
                    }
                });
                let state = v.map_or(String::new(), |v| {
                    match (v.state(), v.field("replication_state")) {
                        (Some(st), Some(rs)) if !v.leader => format!("{st}, {rs}"),
                        (Some(st), _) => st.to_string(),
                        (None, _) => String::new(),
                    }
                });
                vec![
                    node_name(i),
                    p.filter(|p| p.alive())
                        .map_or(String::new(), |p| p.pid.to_string()),
                    v.map_or(Status::Running.word(), |v| v.process.word())
                        .to_string(),
                    role,
                    state,
                    v.and_then(NodeReport::timeline)
                        .map_or(String::new(), |t| t.to_string()),
                    s.zones[i].clone(),
                    v.and_then(NodeReport::policies).unwrap_or_else(|| {
                        if s.policies.is_empty() {
                            spec::BUILTIN.into()
                        } else {
                            s.policies.join(",")
                        }
                    }),
                    format!("127.0.0.1:{}", self.st.ports.nodes[i].api),
                    format!("127.0.0.1:{}", self.st.ports.nodes[i].pg),
                ]
            })
            .collect();
        Table {
            title: Some(format!(
                "Lab {}, cluster {}",
                self.layout.dir.display(),
                spec::SCOPE
            )),
            columns: cols.iter().map(|(h, a)| (h.to_string(), *a)).collect(),
            rows,
        }
        .render()
    }

    /// `regent lab status` as JSON.
    fn status_json(&self, views: &[NodeReport]) -> Value {
        let s = &self.st.settings;
        let proc_json = |what: &str| {
            self.proc(what).map_or(
                json!({"state": Status::Gone.word()}),
                |p| json!({"pid": p.pid, "state": p.status().word()}),
            )
        };
        let nodes: Vec<Value> = (0..s.nodes)
            .map(|i| {
                let v = &views[i];
                json!({
                    "name": node_name(i),
                    "process": v.process.word(),
                    "pid": self.node_proc(i).map(|p| p.pid),
                    "postmaster_pid": procs::postmaster(&self.layout.data_dir(i)).map(|p| p.pid),
                    "leader": v.leader,
                    "role": v.role(),
                    "state": v.state(),
                    "replication_state": v.field("replication_state"),
                    "timeline": v.timeline(),
                    "policies": v.policies(),
                    "zone": s.zones[i],
                    "failover_priority": s.priorities[i],
                    "api": format!("http://127.0.0.1:{}", self.st.ports.nodes[i].api),
                    "pg_port": self.st.ports.nodes[i].pg,
                    "config": self.layout.config(i),
                    "log": self.layout.log(i),
                })
            })
            .collect();
        json!({
            "dir": self.layout.dir,
            "scope": spec::SCOPE,
            "settings": s,
            "leader": views.iter().position(|v| v.leader).map(node_name),
            "healthy": assess(views, self.st.settings.synchronous_mode).is_ok(),
            "etcd": {"endpoint": format!("127.0.0.1:{}", self.st.ports.etcd_client), "process": proc_json("etcd")},
            "haproxy": self.st.ports.haproxy.map(|h| json!({
                "write_port": h.write, "read_port": h.read, "stats_port": h.stats,
                "process": proc_json("haproxy"),
            })),
            "nodes": nodes,
            "password": self.st.password,
        })
    }
}

/// `regent lab status`.
pub(crate) async fn status(dir: &Path, format: Format) -> Result<(), LabError> {
    let layout = Layout {
        dir: dir.to_path_buf(),
    };
    let st = LabState::load(&layout)?.ok_or_else(|| {
        LabError::Usage(format!(
            "there is no lab in {} (no lab.json); start one with `{}`",
            dir.display(),
            cmd(dir, "up")
        ))
    })?;
    // Status only reads: it does not take the lock, so it works while another command runs.
    let lab = Lab::new(layout, st, Lock::none())?;
    let views = lab.views().await;
    match format {
        Format::Json => outln!("{}", lab.status_json(&views)),
        Format::Table => {
            let s = &lab.st.settings;
            super::out(lab.status_table(&views));
            let word = |what: &str| lab.proc(what).map_or("stopped", |p| p.status().word());
            outln!(
                "etcd: 127.0.0.1:{} ({}); {}",
                lab.st.ports.etcd_client,
                word("etcd"),
                describe(s)
            );
            if let Some(h) = lab.st.ports.haproxy {
                outln!(
                    "HAProxy: writes 127.0.0.1:{}, reads 127.0.0.1:{}, statistics http://127.0.0.1:{}/ ({})",
                    h.write,
                    h.read,
                    h.stats,
                    word("haproxy")
                );
            }
            let running = (0..s.nodes).any(|i| lab.node_proc(i).is_some_and(|p| p.alive()));
            match assess(&views, lab.st.settings.synchronous_mode) {
                _ if !running => outln!(
                    "the lab is stopped; `{}` starts it again",
                    cmd(&lab.layout.dir, "up")
                ),
                Ok(l) => outln!(
                    "healthy: {} leads, every other node streams from it",
                    node_name(l)
                ),
                Err(why) => outln!("not healthy: {why}"),
            }
            outln!("password: {}", lab.st.password);
        }
    }
    Ok(())
}

/// A lab's settings in a line.
pub(crate) fn describe(s: &Settings) -> String {
    format!(
        "{} nodes, ttl {} s, loop_wait {} s, retry_timeout {} s, {} replication, zones {}",
        s.nodes,
        s.ttl,
        s.loop_wait,
        s.retry_timeout,
        if s.synchronous_mode {
            "synchronous"
        } else {
            "asynchronous"
        },
        s.zones.join(",")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(leader: bool, doc: Value) -> NodeReport {
        NodeReport {
            process: Status::Running,
            leader,
            doc: Some(doc),
        }
    }

    fn leader_doc(streaming: &[&str]) -> Value {
        json!({"role": "primary", "state": "running", "replication": streaming.iter().map(|n| json!({"application_name": n, "state": "streaming"})).collect::<Vec<_>>()})
    }

    fn replica_doc(rs: &str) -> Value {
        json!({"role": "replica", "state": "running", "replication_state": rs})
    }

    #[test]
    fn healthy_means_one_leader_and_every_replica_streaming_both_ways() {
        let ok = vec![
            view(false, replica_doc("streaming")),
            view(true, leader_doc(&["node1", "node3", "pg_basebackup"])),
            view(false, replica_doc("streaming")),
        ];
        assert_eq!(assess(&ok, false), Ok(1));

        let mut v = ok.clone();
        v[1] = view(true, leader_doc(&["node1"]));
        assert_eq!(
            assess(&v, false),
            Err("node2 leads; not yet streaming from it: node3".into())
        );
        let mut v = ok.clone();
        v[0] = view(false, replica_doc("starting"));
        assert!(
            assess(&v, false)
                .expect_err("node1 not streaming")
                .ends_with("node1")
        );
        // A replica still streaming the timeline before the last promotion is about to
        // restart its WAL receiver on the new one: not healthy yet.
        let mut v = ok.clone();
        for (i, tl) in [(0, 3), (1, 3), (2, 2)] {
            if let Some(Value::Object(d)) = v[i].doc.as_mut() {
                d.insert("timeline".into(), json!(tl));
            }
        }
        assert_eq!(
            assess(&v, false),
            Err("node2 leads; not yet streaming from it: node3 (still on timeline 2, the leader is on 3)".into())
        );
        let mut v = ok.clone();
        v[2].doc = None;
        v[2].process = Status::Gone;
        assert!(assess(&v, false).is_err());
        let mut v = ok.clone();
        v[0].leader = true;
        assert_eq!(
            assess(&v, false),
            Err("2 nodes answer as leader: node1, node2".into())
        );
        let none: Vec<NodeReport> = ok
            .iter()
            .cloned()
            .map(|mut x| {
                x.leader = false;
                x
            })
            .collect();
        assert_eq!(
            assess(&none, false),
            Err("no node holds the leader key yet".into())
        );
        // Synchronous mode also wants a synchronous standby.
        assert_eq!(
            assess(&ok, true),
            Err("node2 leads; no synchronous standby yet".into())
        );
        let mut v = ok.clone();
        v[2] = view(
            false,
            json!({"role": "replica", "state": "running", "replication_state": "streaming", "sync_standby": true}),
        );
        assert_eq!(assess(&v, true), Ok(1));
    }

    #[test]
    fn policy_summaries_become_names() {
        assert_eq!(policy_names("builtin-default"), "builtin");
        assert_eq!(
            policy_names("zone-aware@1234abcd,event-journal@ffff0000"),
            "zone-aware,event-journal"
        );
    }
}
