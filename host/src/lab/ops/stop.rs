//! Stops a lab's components (SIGTERM first, SIGKILL for what is left) and removes the files
//! the lab wrote. Signals only the lab's own processes: the recorded ones, the ones carrying
//! its marker and its nodes' postmasters.

use super::Lab;
use crate::lab::LabError;
use crate::lab::patroni::Supervisor;
use crate::lab::procs::{self, Proc};
use crate::lab::spec::node_name;
use nix::sys::signal::Signal;
use std::time::{Duration, Instant};

impl Lab {
    /// Stop node `i`'s regent (SIGTERM; a leader hands over), wait until its processes have
    /// exited (its PostgreSQL and guard included), SIGKILL what is left after `patience`.
    pub(crate) async fn stop_node(&mut self, i: usize, patience: Duration) -> Result<(), LabError> {
        let marker = self.st.marker(&node_name(i));
        self.expected.remove(&node_name(i));
        if let Some(p) = self.node_proc(i) {
            p.signal(Signal::SIGCONT);
            p.signal(Signal::SIGTERM);
            let deadline = Instant::now() + patience;
            while p.alive() && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        // The guard leaves once its supervisor is gone and nothing is left to guard; a
        // PostgreSQL without its regent is stopped here.
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            let left = self.node_leftovers(i, &marker);
            if left.is_empty() {
                return Ok(());
            }
            if Instant::now() > deadline {
                for p in &left {
                    p.signal(Signal::SIGCONT);
                    p.signal(Signal::SIGKILL);
                }
                return self.wait_gone(&left, Duration::from_secs(5)).await;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Node `i`'s processes still alive: its regent, anything marked for it, its postmaster.
    fn node_leftovers(&self, i: usize, marker: &str) -> Vec<Proc> {
        let mut left: Vec<Proc> = procs::marked(marker);
        if let Some(p) = self.node_proc(i).filter(|p| p.alive())
            && !left.contains(&p)
        {
            left.push(p);
        }
        if let Some(pm) = procs::postmaster(&self.layout.data_dir(i))
            && !left.contains(&pm)
        {
            left.push(pm);
        }
        left
    }

    async fn wait_gone(&self, list: &[Proc], patience: Duration) -> Result<(), LabError> {
        let deadline = Instant::now() + patience;
        loop {
            let alive: Vec<String> = list
                .iter()
                .filter(|p| p.alive())
                .map(|p| p.pid.to_string())
                .collect();
            if alive.is_empty() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(LabError::Failed(format!(
                    "processes {} of the lab in {} did not exit after SIGKILL",
                    alive.join(", "),
                    self.layout.dir.display()
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stop every node: the replicas first, together (then the leader has nobody to hand
    /// over to and stops at once), the leader last; it is recorded as the last leader.
    pub(crate) async fn stop_nodes(&mut self) -> Result<(), LabError> {
        let leader = self.leader().await;
        if leader.is_some() {
            self.st.last_leader = leader;
        }
        let n = self.st.settings.nodes;
        let replicas: Vec<usize> = (0..n).filter(|i| Some(*i) != leader).collect();
        for i in &replicas {
            if let Some(p) = self.node_proc(*i) {
                p.signal(Signal::SIGCONT);
                p.signal(Signal::SIGTERM);
            }
        }
        for i in replicas {
            self.stop_node(i, Duration::from_secs(20)).await?;
        }
        if let Some(l) = leader {
            self.stop_node(l, Duration::from_secs(20)).await?;
        }
        Ok(())
    }

    /// Stop the whole lab: HAProxy, the replicas, the leader, then etcd; SIGKILL whatever of
    /// the lab still runs after that. A stopped lab starts under Regent again.
    pub(crate) async fn stop_all(&mut self) -> Result<(), LabError> {
        if let Some(p) = self.proc("haproxy") {
            p.signal(Signal::SIGTERM);
        }
        self.stop_nodes().await?;
        let n = self.st.settings.nodes;
        self.st.supervisor = Supervisor::Regent;
        self.remove_patroni_configs();
        if let Some(p) = self.proc("etcd") {
            p.signal(Signal::SIGCONT);
            p.signal(Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(10);
            while p.alive() && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        let mut left: Vec<Proc> = procs::marked(&self.st.marker(""));
        left.extend(self.st.procs.values().filter(|p| p.alive()));
        left.extend((0..n).filter_map(|i| procs::postmaster(&self.layout.data_dir(i))));
        for p in &left {
            p.signal(Signal::SIGCONT);
            p.signal(Signal::SIGKILL);
        }
        self.wait_gone(&left, Duration::from_secs(10)).await
    }

    /// Remove everything the lab wrote (it must be stopped): its entries in the directory,
    /// then the state file and the lock, then the directory if the lab created it.
    pub(crate) fn remove_files(&self) -> Result<(), LabError> {
        let l = &self.layout;
        for p in l.owned_entries(self.st.settings.nodes) {
            let r = match std::fs::symlink_metadata(&p) {
                Ok(m) if m.is_dir() => std::fs::remove_dir_all(&p),
                Ok(_) => std::fs::remove_file(&p),
                Err(_) => continue,
            };
            r.map_err(|e| LabError::Failed(format!("cannot remove {}: {e}", p.display())))?;
        }
        for p in [l.state(), l.state().with_extension("json.tmp"), l.lock()] {
            let _ = std::fs::remove_file(p);
        }
        if self.st.created_dir {
            // Only if empty: whatever else is there was not written by the lab.
            let _ = std::fs::remove_dir(&l.dir);
        }
        Ok(())
    }
}
