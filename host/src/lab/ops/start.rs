//! Starts a lab's components as detached, marked processes and records them in the state
//! file: etcd, the nodes' `regent run` (one first, so that it leads), HAProxy; creates the
//! writer's tables on the leader; after a failed start, stops what had started.

use super::Lab;
use crate::lab::measure;
use crate::lab::patroni::Supervisor;
use crate::lab::procs::{self, Proc};
use crate::lab::spec::{self, node_name};
use crate::lab::state::cmd;
use crate::lab::{LabError, say};
use std::path::Path;
use std::time::{Duration, Instant};

impl Lab {
    /// Start component `what` (see [`procs::spawn`]) and record it in the state file.
    pub(crate) fn spawn(
        &mut self,
        what: &str,
        program: &Path,
        args: &[String],
        log: &Path,
        env: &[(&str, &str)],
    ) -> Result<Proc, LabError> {
        let p = procs::spawn(program, args, log, &self.st.marker(what), env)
            .map_err(|e| LabError::Failed(format!("cannot start {}: {e}", program.display())))?;
        self.st.procs.insert(what.to_string(), p);
        self.expected.insert(what.to_string());
        self.st.save(&self.layout)?;
        Ok(p)
    }

    /// The writer's and the probes' tables on the leader, emptied if `empty`.
    pub(crate) async fn create_tables(&self, leader: usize, empty: bool) -> Result<(), LabError> {
        let mut sql = measure::tables_sql();
        if empty {
            sql += &format!("; TRUNCATE {}, {}", spec::WRITES_TABLE, spec::PROBE_TABLE);
        }
        measure::execute(self.st.ports.nodes[leader].pg, &self.st.password, &sql)
            .await
            .map_err(|e| {
                LabError::Failed(format!(
                    "cannot create the lab's tables on {}: {e}",
                    node_name(leader)
                ))
            })
    }

    /// Start etcd and wait until it answers.
    pub(crate) async fn start_etcd(&mut self) -> Result<(), LabError> {
        let etcd = procs::which("etcd").ok_or_else(|| {
            LabError::Usage(
                "etcd is not on PATH any more; install it (Debian: apt-get install etcd-server)"
                    .into(),
            )
        })?;
        let args = spec::etcd_args(
            "lab",
            &self.layout.etcd_data(),
            self.st.ports.etcd_client,
            self.st.ports.etcd_peer,
        );
        let p = self.spawn("etcd", &etcd, &args, &self.layout.etcd_log(), &[])?;
        let url = format!("http://127.0.0.1:{}/health", self.st.ports.etcd_client);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = self
                .http
                .get(&url)
                .timeout(Duration::from_secs(1))
                .send()
                .await
                && r.status().is_success()
            {
                say(format!(
                    "etcd answers on 127.0.0.1:{}",
                    self.st.ports.etcd_client
                ));
                return Ok(());
            }
            if !p.alive() {
                return Err(LabError::Failed(format!(
                    "etcd exited at start; the end of {}:\n{}",
                    self.layout.etcd_log().display(),
                    procs::log_tail(&self.layout.etcd_log(), 10)
                )));
            }
            if Instant::now() > deadline {
                return Err(LabError::Failed(format!(
                    "etcd did not answer on {url} within 30 s; see {}",
                    self.layout.etcd_log().display()
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Start node `i`'s supervisor: `regent run` (this very binary), or Patroni while it
    /// supervises the lab (see `lab::patroni`).
    pub(crate) fn start_node(&mut self, i: usize) -> Result<Proc, LabError> {
        if let Supervisor::Patroni { bin } = &self.st.supervisor {
            let bin = bin.clone();
            return self.start_patroni(i, &bin);
        }
        let exe = std::env::current_exe()
            .map_err(|e| LabError::Failed(format!("cannot find the regent binary: {e}")))?;
        let args = vec![
            "run".to_string(),
            self.layout.config(i).display().to_string(),
        ];
        let log_level = std::env::var("REGENT_LOG").unwrap_or_else(|_| "info".into());
        self.spawn(
            &node_name(i),
            &exe,
            &args,
            &self.layout.log(i),
            // Plain text in the log file: no terminal colours.
            &[("REGENT_LOG", &log_level), ("NO_COLOR", "1")],
        )
    }

    /// Start HAProxy after checking its configuration.
    pub(crate) async fn start_haproxy(&mut self) -> Result<(), LabError> {
        let Some(h) = self.st.ports.haproxy else {
            return Ok(());
        };
        let bin = procs::which("haproxy").ok_or_else(|| {
            LabError::Usage(
                "haproxy is not on PATH any more; install it (Debian: apt-get install haproxy)"
                    .into(),
            )
        })?;
        let cfg = self.layout.haproxy_config();
        let check = std::process::Command::new(&bin)
            .arg("-c")
            .arg("-f")
            .arg(&cfg)
            .output()
            .map_err(|e| LabError::Failed(format!("cannot run {}: {e}", bin.display())))?;
        if !check.status.success() {
            return Err(LabError::Failed(format!(
                "haproxy refuses {}: {}",
                cfg.display(),
                String::from_utf8_lossy(&check.stderr).trim()
            )));
        }
        let args = vec![
            "-db".to_string(),
            "-f".to_string(),
            cfg.display().to_string(),
        ];
        let p = self.spawn("haproxy", &bin, &args, &self.layout.haproxy_log(), &[])?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(("127.0.0.1", h.write))
            .await
            .is_err()
        {
            if !p.alive() || Instant::now() > deadline {
                return Err(LabError::Failed(format!(
                    "haproxy did not start; the end of {}:\n{}",
                    self.layout.haproxy_log().display(),
                    procs::log_tail(&self.layout.haproxy_log(), 10)
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        say(format!(
            "HAProxy listens on 127.0.0.1:{} (writes) and :{} (reads)",
            h.write, h.read
        ));
        Ok(())
    }

    /// Start everything; a new lab lets node1 bootstrap alone first, so that it leads. Returns
    /// the leader once the cluster is healthy.
    pub(crate) async fn start(
        &mut self,
        fresh: bool,
        timeout: Duration,
    ) -> Result<usize, LabError> {
        let deadline = Instant::now() + timeout;
        // Records of an earlier run are stale now.
        self.st.procs.clear();
        self.expected.clear();
        self.start_etcd().await?;
        // A stopped lab starts under Regent, whatever supervised it before.
        self.st.supervisor = Supervisor::Regent;
        // One node first, alone, so that it leads: node1 bootstraps a new lab; a stopped lab
        // starts with the node that led last, which has the newest WAL (started together,
        // another could win the election before it even shows up).
        let first = if fresh {
            0
        } else {
            self.st
                .last_leader
                .filter(|l| *l < self.st.settings.nodes)
                .unwrap_or(0)
        };
        let leader = self.start_nodes(first, fresh, deadline).await?;
        self.create_tables(leader, false).await?;
        self.start_haproxy().await?;
        Ok(leader)
    }

    /// Start node `first` alone until it leads (a new lab: it must; else for at most two
    /// leases and ten seconds), then the others; the leader once the cluster is healthy.
    pub(crate) async fn start_nodes(
        &mut self,
        first: usize,
        fresh: bool,
        deadline: Instant,
    ) -> Result<usize, LabError> {
        let n = self.st.settings.nodes;
        self.start_node(first)?;
        say(if fresh {
            "node1 bootstraps the cluster".to_string()
        } else {
            format!("{} (the last leader) starts first", node_name(first))
        });
        let alone = if fresh {
            deadline
        } else {
            // A node that cannot lead on its own must not keep the others from starting.
            deadline.min(Instant::now() + Duration::from_secs(2 * self.st.settings.ttl + 10))
        };
        let waited = self
            .wait_until(alone, &format!("{} to lead", node_name(first)), |views| {
                views.iter().position(|v| v.leader)
            })
            .await;
        match waited {
            Ok(leader) => say(format!("{} leads; starting the others", node_name(leader))),
            Err(e) if fresh => return Err(e),
            Err(_) => say(format!(
                "{} does not lead on its own; starting the others",
                node_name(first)
            )),
        }
        for i in (0..n).filter(|i| *i != first) {
            self.start_node(i)?;
        }
        let leader = self.wait_healthy(deadline).await?;
        say(format!(
            "{} leads; {} stream from it",
            node_name(leader),
            (0..n)
                .filter(|i| *i != leader)
                .map(node_name)
                .collect::<Vec<_>>()
                .join(", ")
        ));
        Ok(leader)
    }

    /// After a failed start: stop what was started, keep the files for a look, and say so.
    pub(crate) async fn abandon(&mut self, e: LabError) -> LabError {
        let stopped = self.stop_all().await;
        let logs = self.layout.dir.display();
        let what = match stopped {
            Ok(()) => "stopped what had started".to_string(),
            Err(s) => format!("could not stop everything: {s}"),
        };
        LabError::Failed(format!(
            "{e}\n{what}; the logs are in {logs} (node1.log, etcd.log, ...); `{down}` removes the lab, `{up}` tries again",
            down = cmd(&self.layout.dir, "down"),
            up = cmd(&self.layout.dir, "up")
        ))
    }
}
