//! The replication faults: a replica falls behind (`lag-replica`: its walreceiver is
//! stopped with SIGSTOP, so it still looks connected) or loses replication altogether
//! (`break-replication`: its walreceiver is terminated, and again whenever PostgreSQL starts
//! a new one). Then the leader writes more WAL than `maximum_lag_on_failover`, and once
//! its published position shows the replica that far behind, the leader crashes (SIGKILL
//! of its process group): the replica left behind must not be promoted, and the winner's
//! election record says why it was left out.
//!
//! Invariants: the replica hit is never the leader, and in synchronous mode never the
//! synchronous standby (the leader's commits would wait for it); a [`Starved`] replica is
//! healed (SIGCONT, the terminator stopped) by [`Starved::heal`] or when dropped, so on
//! Ctrl-C too.

use super::super::LabError;
use super::super::measure;
use super::super::ops::Lab;
use super::super::procs::{self, Proc};
use super::super::spec::{self, MAXIMUM_LAG_ON_FAILOVER, node_name};
use nix::sys::signal::Signal;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// How replication is interrupted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum How {
    /// The walreceiver is stopped: connected, silent.
    Lag,
    /// The walreceiver is terminated, and every new one too.
    Break,
}

/// A replica whose replication is interrupted.
#[derive(Debug)]
pub(crate) struct Starved {
    pub(crate) node: usize,
    stopped: Option<Proc>,
    terminator: Option<Arc<AtomicBool>>,
}

impl Starved {
    /// Resume replication; what was done.
    pub(crate) fn heal(&mut self) -> String {
        let mut done = Vec::new();
        if let Some(p) = self.stopped.take() {
            p.signal(Signal::SIGCONT);
            done.push(format!("SIGCONT to its walreceiver (pid {})", p.pid));
        }
        if let Some(stop) = self.terminator.take() {
            stop.store(true, Ordering::Relaxed);
            done.push("its walreceiver is no longer terminated".to_string());
        }
        format!("{} healed: {}", node_name(self.node), done.join(", "))
    }
}

impl Drop for Starved {
    fn drop(&mut self) {
        self.heal();
    }
}

/// The walreceiver of the postmaster running on node `i`'s data directory.
fn walreceiver(lab: &Lab, i: usize) -> Option<Proc> {
    walreceivers(procs::postmaster(&lab.layout.data_dir(i))?.pid)
        .into_iter()
        .next()
}

/// The walreceivers among the children of `postmaster` (by their process titles).
fn walreceivers(postmaster: i32) -> Vec<Proc> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| procs::stat(*pid).is_some_and(|s| s.ppid == postmaster))
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains("walreceiver"))
        })
        .filter_map(Proc::of)
        .collect()
}

/// The replica to hit: `asked`, else the first streaming replica that is not the
/// synchronous standby.
pub(crate) async fn pick(
    lab: &Lab,
    leader: usize,
    asked: Option<usize>,
) -> Result<usize, LabError> {
    let views = lab.views().await;
    let r = choose(lab, &views, leader, asked)?;
    // Another replica must be able to take over, or the crash proves nothing.
    if !(0..lab.st.settings.nodes).any(|i| i != leader && i != r && views[i].streaming_replica()) {
        return Err(LabError::Failed(format!(
            "no replica other than {} streams from {}, so none could take over after the crash; wait until `regent lab status --dir {}` says healthy",
            node_name(r),
            node_name(leader),
            lab.layout.dir.display()
        )));
    }
    Ok(r)
}

fn choose(
    lab: &Lab,
    views: &[super::super::observe::NodeReport],
    leader: usize,
    asked: Option<usize>,
) -> Result<usize, LabError> {
    if let Some(r) = asked {
        if r == leader {
            return Err(LabError::Usage(format!(
                "--node {}: that node is the leader; name a replica",
                node_name(r)
            )));
        }
        if lab.st.settings.synchronous_mode && views[r].sync_standby() {
            return Err(LabError::Usage(format!(
                "--node {}: that node is the synchronous standby, and the leader's commits would wait for it; name another replica",
                node_name(r)
            )));
        }
        return Ok(r);
    }
    (0..lab.st.settings.nodes)
        .find(|&i| {
            i != leader
                && views[i].streaming_replica()
                && !(lab.st.settings.synchronous_mode && views[i].sync_standby())
        })
        .ok_or_else(|| {
            LabError::Failed(format!(
                "no streaming replica of {} to hit (in synchronous mode the synchronous standby is spared); `regent lab status --dir {}` shows the nodes",
                node_name(leader),
                lab.layout.dir.display()
            ))
        })
}

/// Interrupt node `r`'s replication as `how` says; what was done.
pub(crate) async fn starve(lab: &Lab, r: usize, how: How) -> Result<(Starved, String), LabError> {
    let wr = walreceiver(lab, r).ok_or_else(|| {
        LabError::Failed(format!(
            "{} has no walreceiver, so it does not stream; wait until `regent lab status --dir {}` shows it streaming",
            node_name(r),
            lab.layout.dir.display()
        ))
    })?;
    match how {
        How::Lag => {
            if !wr.signal(Signal::SIGSTOP) {
                return Err(LabError::Failed(format!(
                    "could not stop {}'s walreceiver (pid {}): it is gone",
                    node_name(r),
                    wr.pid
                )));
            }
            Ok((
                Starved {
                    node: r,
                    stopped: Some(wr),
                    terminator: None,
                },
                format!(
                    "SIGSTOP to {}'s walreceiver (pid {}): it stays connected and receives nothing",
                    node_name(r),
                    wr.pid
                ),
            ))
        }
        How::Break => {
            let stop = Arc::new(AtomicBool::new(false));
            let flag = stop.clone();
            let dir = lab.layout.data_dir(r);
            // SIGTERM (not SIGKILL, which would make the postmaster restart every backend).
            std::thread::spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    if let Some(pm) = procs::postmaster(&dir) {
                        for w in walreceivers(pm.pid) {
                            w.signal(Signal::SIGTERM);
                        }
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            });
            wr.signal(Signal::SIGTERM);
            Ok((
                Starved {
                    node: r,
                    stopped: None,
                    terminator: Some(stop),
                },
                format!(
                    "SIGTERM to {}'s walreceiver (pid {}), and to every new one: replication broken",
                    node_name(r),
                    wr.pid
                ),
            ))
        }
    }
}

/// A member's status code for `path` on its REST API (0: no answer).
pub(crate) async fn status_code(lab: &Lab, i: usize, path: &str) -> u16 {
    let url = format!("http://127.0.0.1:{}{path}", lab.st.ports.nodes[i].api);
    match lab
        .http
        .get(&url)
        .timeout(Duration::from_secs(2))
        .send()
        .await
    {
        Ok(r) => r.status().as_u16(),
        Err(_) => 0,
    }
}

/// Wait until node `r` reports its replication interrupted, as Patroni's API does: not
/// ready (`GET /readiness` 503) and not a streaming replica (`GET
/// /replica?replication_state=streaming` 503); what its endpoints said, and after how long.
pub(crate) async fn wait_unhealthy(lab: &Lab, r: usize, t0: Instant) -> Result<String, LabError> {
    const STREAMING: &str = "/replica?replication_state=streaming";
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if status_code(lab, r, "/readiness").await == 503
            && status_code(lab, r, STREAMING).await == 503
        {
            return Ok(format!(
                "{} reported unhealthy {:.1} s later: GET /readiness 503, {STREAMING} 503, /replica {}, /health {}",
                node_name(r),
                t0.elapsed().as_secs_f64(),
                status_code(lab, r, "/replica").await,
                status_code(lab, r, "/health").await
            ));
        }
        if Instant::now() > deadline {
            return Err(LabError::Failed(format!(
                "{} still says it is ready or streaming (GET /readiness, {STREAMING}) 30 s after its replication was broken: a replica that does not stream must be reported unhealthy",
                node_name(r)
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Write WAL on the leader until its published position is more than
/// `maximum_lag_on_failover` ahead of node `r`'s (as the leader's `GET /cluster` shows);
/// the lag reached.
pub(crate) async fn outrun(lab: &Lab, leader: usize, r: usize) -> Result<u64, LabError> {
    let pg = lab.st.ports.nodes[leader].pg;
    // Non-transactional messages are written to the WAL at once, and need no table.
    let chunk = MAXIMUM_LAG_ON_FAILOVER as usize;
    let sql = format!("SELECT pg_logical_emit_message(false, 'regent-lab', repeat('x', {chunk}))");
    let name = node_name(r);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut written = 0;
    loop {
        if written < 8 {
            measure::execute(pg, &lab.st.password, &sql)
                .await
                .map_err(|e| {
                    LabError::Failed(format!("cannot write WAL on {}: {e}", node_name(leader)))
                })?;
            written += 1;
        }
        let lag = get_json(lab, leader, "/cluster").await.and_then(|doc| {
            doc["members"]
                .as_array()?
                .iter()
                .find(|m| m["name"] == name.as_str())?["lag"]
                .as_u64()
        });
        if let Some(l) = lag
            && l > MAXIMUM_LAG_ON_FAILOVER
        {
            return Ok(l);
        }
        if Instant::now() > deadline {
            return Err(LabError::Failed(format!(
                "{}'s GET /cluster did not show {name} more than {MAXIMUM_LAG_ON_FAILOVER} bytes behind within 30 s (last: {lag:?})",
                node_name(leader)
            )));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Why the election won by `winner` left out node `r` (from its `GET /elections/last`).
pub(crate) async fn exclusion(lab: &Lab, winner: usize, r: usize) -> Option<String> {
    let name = node_name(r);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let doc = get_json(lab, winner, "/elections/last").await;
        let reason = doc.as_ref().and_then(|d| {
            d["excluded"]
                .as_array()?
                .iter()
                .find(|m| m["member"] == name.as_str())?["reason"]
                .as_str()
                .map(str::to_string)
        });
        if reason.is_some() || Instant::now() > deadline {
            return reason;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Node `i`'s answer to an authenticated `GET path`, if it answered 2xx with JSON.
async fn get_json(lab: &Lab, i: usize, path: &str) -> Option<serde_json::Value> {
    let url = format!("http://127.0.0.1:{}{path}", lab.st.ports.nodes[i].api);
    let r = lab
        .http
        .get(&url)
        .basic_auth(spec::API_USER, Some(&lab.st.password))
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .ok()?;
    if !r.status().is_success() {
        return None;
    }
    r.json().await.ok()
}
