//! The watcher: during a run, every 100 ms, each node's status document (`GET /patroni`: does
//! it answer, its role and state), the leader key's holder as the cluster document
//! (`GET /cluster`) of the first node that answers has it, and each node's fencing guard.
//!
//! Fencing is observed through the guard's own state file (`<node>.regent-guard.state` in the
//! node's directory, read with [`GuardFiles::read`]): after fencing, the guard writes
//! `fenced <ms>` with the time on the host's monotonic clock, which this module turns into an
//! `Instant` (same host, same clock). The time is exact even though the file is only polled;
//! a fence that the supervisor overwrote within one poll (re-arming or disarming) is missed.
//!
//! [`last_election`] reads the election record of the run afterwards.

use super::ops::Lab;
use super::spec::node_name;
use crate::dcs::ElectionRecord;
use crate::fence::{GuardFiles, GuardState, mono_ms};
use serde_json::Value;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;

/// The time between two samples.
pub(crate) const PERIOD: Duration = Duration::from_millis(100);
/// How long one request may take (a node that does not answer in time did not answer).
const TIMEOUT: Duration = Duration::from_millis(400);

/// One node in one sample.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NodeSample {
    /// Its REST API answered `GET /patroni`.
    pub(crate) answered: bool,
    /// The status document's `role` and `state`.
    pub(crate) role: Option<String>,
    pub(crate) state: Option<String>,
}

impl NodeSample {
    /// It answered and its PostgreSQL runs.
    pub(crate) fn running(&self) -> bool {
        self.answered && self.state.as_deref() == Some("running")
    }
}

/// One sample of every node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Sample {
    pub(crate) at: Instant,
    pub(crate) nodes: Vec<NodeSample>,
    /// The leader key's holder (`Some(None)`: nobody holds it); `None` when no node answered.
    pub(crate) leader_key: Option<Option<String>>,
}

/// What the watcher saw.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Watched {
    pub(crate) samples: Vec<Sample>,
    /// (node, when its guard fenced it).
    pub(crate) fences: Vec<(usize, Instant)>,
}

/// The running watcher.
pub(crate) struct Watcher {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Watched>>,
    task: JoinHandle<()>,
}

impl Watcher {
    /// Watch every node of `lab` until finished.
    pub(crate) fn start(lab: &Lab) -> Watcher {
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Watched::default()));
        let http = lab.http.clone();
        let apis: Vec<u16> = lab.st.ports.nodes.iter().map(|n| n.api).collect();
        let guards: Vec<GuardFiles> = (0..apis.len())
            .map(|i| {
                GuardFiles::new(
                    &lab.layout.node_dir(i),
                    &node_name(i),
                    &lab.layout.data_dir(i),
                )
            })
            .collect();
        let (s, w) = (stop.clone(), seen.clone());
        let task = tokio::spawn(async move {
            let mut fenced_at: Vec<Option<u64>> = vec![None; apis.len()];
            while !s.load(Ordering::Relaxed) {
                let started = Instant::now();
                let sample = sample(&http, &apis).await;
                let mut fences = Vec::new();
                for (i, g) in guards.iter().enumerate() {
                    if let Some(GuardState::Fenced { at_ms }) = g.read()
                        && fenced_at[i] != Some(at_ms)
                    {
                        fenced_at[i] = Some(at_ms);
                        let ago = Duration::from_millis(mono_ms().saturating_sub(at_ms));
                        fences.push((i, Instant::now().checked_sub(ago).unwrap_or(started)));
                    }
                }
                if let Ok(mut v) = w.lock() {
                    v.samples.push(sample);
                    v.fences.extend(fences);
                }
                tokio::time::sleep_until((started + PERIOD).into()).await;
            }
        });
        Watcher { stop, seen, task }
    }

    /// Stop watching; everything seen.
    pub(crate) async fn finish(self) -> Watched {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.task.await;
        self.seen.lock().map(|v| v.clone()).unwrap_or_default()
    }
}

/// `GET http://127.0.0.1:port/path` as JSON, or `None`.
async fn get(http: &reqwest::Client, port: u16, path: &str) -> Option<Value> {
    let r = http
        .get(format!("http://127.0.0.1:{port}{path}"))
        .timeout(TIMEOUT)
        .send()
        .await
        .ok()?;
    r.json::<Value>().await.ok()
}

/// One sample: every node's status document and cluster document, asked concurrently.
async fn sample(http: &reqwest::Client, apis: &[u16]) -> Sample {
    let at = Instant::now();
    let asks: Vec<JoinHandle<(Option<Value>, Option<Value>)>> = apis
        .iter()
        .map(|&port| {
            let http = http.clone();
            tokio::spawn(async move {
                tokio::join!(get(&http, port, "/patroni"), get(&http, port, "/cluster"))
            })
        })
        .collect();
    let mut nodes = Vec::with_capacity(asks.len());
    let mut leader_key = None;
    for a in asks {
        let (doc, cluster) = a.await.unwrap_or((None, None));
        let field = |k: &str| {
            doc.as_ref()
                .and_then(|d| d.get(k))
                .and_then(Value::as_str)
                .map(str::to_string)
        };
        nodes.push(NodeSample {
            answered: doc.is_some(),
            role: field("role"),
            state: field("state"),
        });
        if leader_key.is_none()
            && let Some(c) = cluster
        {
            leader_key = Some(holder(&c));
        }
    }
    Sample {
        at,
        nodes,
        leader_key,
    }
}

/// The member a cluster document names leader (or standby leader).
fn holder(cluster: &Value) -> Option<String> {
    cluster
        .get("members")?
        .as_array()?
        .iter()
        .find(|m| {
            matches!(
                m.get("role").and_then(Value::as_str),
                Some("leader" | "standby_leader")
            )
        })?
        .get("name")?
        .as_str()
        .map(str::to_string)
}

/// The last election record (`GET /elections/last` of any node that answers) if it was
/// decided at or after `since_unix_ms`; waits up to `wait` for one that names its promotion or
/// hand-over (the winner updates the record as the phases happen).
pub(crate) async fn last_election(
    lab: &Lab,
    since_unix_ms: u64,
    wait: Duration,
) -> Option<ElectionRecord> {
    let deadline = Instant::now() + wait;
    let mut found: Option<ElectionRecord> = None;
    loop {
        for n in &lab.st.ports.nodes {
            let Some(v) = get(&lab.http, n.api, "/elections/last").await else {
                continue;
            };
            let Ok(rec) = serde_json::from_value::<ElectionRecord>(v) else {
                continue;
            };
            if rec.id.parse::<u64>().is_ok_and(|id| id >= since_unix_ms) {
                found = Some(rec);
                break;
            }
        }
        let complete = found
            .as_ref()
            .is_some_and(|r| r.phases.promoted.is_some() || r.phases.handed_over.is_some());
        if complete || Instant::now() > deadline {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_key_holder_is_the_member_named_leader() {
        let c = json!({"members": [
            {"name": "node1", "role": "replica"},
            {"name": "node2", "role": "leader"}
        ]});
        assert_eq!(holder(&c).as_deref(), Some("node2"));
        assert_eq!(holder(&json!({"members": []})), None);
        assert_eq!(holder(&json!({})), None);
    }
}
