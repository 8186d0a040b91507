//! What the lab measures, and how:
//!
//! - the [`Writer`] inserts numbered rows, one at a time, into whichever node accepts them
//!   (the last one that did first) and records every acknowledged id with the time and node;
//! - the [`Monitor`] asks every node, concurrently, every 50 ms, to accept a write, and records
//!   each round: two nodes accepting writes in the same round is a split brain;
//! - the functions below turn those records into failover time, write gaps, lost writes and
//!   split-brain windows (pure, unit-tested).

use super::spec::{PROBE_TABLE, SUPERUSER, WRITES_TABLE};
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;

/// Connect to the lab's PostgreSQL on 127.0.0.1:`port` as the superuser.
pub(crate) async fn connect(
    port: u16,
    password: &str,
    timeout: Duration,
) -> Result<tokio_postgres::Client, String> {
    let mut cfg = tokio_postgres::Config::new();
    cfg.host("127.0.0.1")
        .port(port)
        .user(SUPERUSER)
        .password(password)
        .dbname("postgres")
        .application_name("regent-lab")
        .connect_timeout(timeout);
    let (client, conn) = tokio::time::timeout(timeout, cfg.connect(tokio_postgres::NoTls))
        .await
        .map_err(|_| format!("no connection within {timeout:?}"))?
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

/// Run `sql` (simple protocol, one or more statements) on the node at `port`.
pub(crate) async fn execute(port: u16, password: &str, sql: &str) -> Result<(), String> {
    let c = connect(port, password, Duration::from_secs(2)).await?;
    tokio::time::timeout(Duration::from_secs(5), c.batch_execute(sql))
        .await
        .map_err(|_| "no answer within 5 s".to_string())?
        .map_err(|e| db_message(&e))
}

/// The server's message for a database error, else the client's.
pub(crate) fn db_message(e: &tokio_postgres::Error) -> String {
    e.as_db_error()
        .map(|d| d.message().to_string())
        .unwrap_or_else(|| e.to_string())
}

/// The tables the writer and the probes use (on the leader; they replicate).
pub(crate) fn tables_sql() -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {WRITES_TABLE} (run bigint NOT NULL, id bigint NOT NULL, at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (run, id)); \
         CREATE TABLE IF NOT EXISTS {PROBE_TABLE} (node text NOT NULL, at timestamptz NOT NULL DEFAULT now())"
    )
}

/// The ids of run `run` present on the node at `port`.
pub(crate) async fn present_ids(
    port: u16,
    password: &str,
    run: i64,
) -> Result<BTreeSet<i64>, String> {
    let c = connect(port, password, Duration::from_secs(2)).await?;
    let rows = tokio::time::timeout(
        Duration::from_secs(10),
        c.query(
            &format!("SELECT id FROM {WRITES_TABLE} WHERE run = $1"),
            &[&run],
        ),
    )
    .await
    .map_err(|_| "no answer within 10 s".to_string())?
    .map_err(|e| db_message(&e))?;
    Ok(rows.iter().map(|r| r.get::<_, i64>(0)).collect())
}

/// One acknowledged write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ack {
    pub(crate) at: Instant,
    pub(crate) id: i64,
    /// The node (index) that acknowledged it.
    pub(crate) node: usize,
}

/// The continuous writer.
pub(crate) struct Writer {
    stop: Arc<AtomicBool>,
    acks: Arc<Mutex<Vec<Ack>>>,
    task: JoinHandle<()>,
}

/// How long one write may take before the writer gives up on that node.
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);

impl Writer {
    /// Write rows `(run, 1..)` to the nodes at `ports`, pausing `interval` after each
    /// acknowledged write.
    pub(crate) fn start(ports: Vec<u16>, password: String, run: i64, interval: Duration) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let acks = Arc::new(Mutex::new(Vec::new()));
        let (s, a) = (stop.clone(), acks.clone());
        let task = tokio::spawn(async move {
            let n = ports.len();
            let mut clients: Vec<Option<tokio_postgres::Client>> = (0..n).map(|_| None).collect();
            let mut at = 0;
            let mut id: i64 = 0;
            while !s.load(Ordering::Relaxed) {
                let mut done = false;
                for k in 0..n {
                    let i = (at + k) % n;
                    if clients[i].as_ref().is_none_or(|c| c.is_closed()) {
                        clients[i] = connect(ports[i], &password, Duration::from_millis(500))
                            .await
                            .ok();
                    }
                    let Some(c) = &clients[i] else { continue };
                    id += 1;
                    let sql = format!("INSERT INTO {WRITES_TABLE} (run, id) VALUES ({run}, {id})");
                    match tokio::time::timeout(WRITE_TIMEOUT, c.simple_query(&sql)).await {
                        Ok(Ok(_)) => {
                            if let Ok(mut v) = a.lock() {
                                v.push(Ack {
                                    at: Instant::now(),
                                    id,
                                    node: i,
                                });
                            }
                            at = i;
                            done = true;
                            break;
                        }
                        // A replica refuses writes; its connection stays useful.
                        Ok(Err(e)) if e.as_db_error().is_some() && !c.is_closed() => {}
                        _ => clients[i] = None,
                    }
                }
                tokio::time::sleep(if done {
                    interval
                } else {
                    Duration::from_millis(20)
                })
                .await;
            }
        });
        Writer { stop, acks, task }
    }

    /// The acknowledged writes so far.
    pub(crate) fn acks(&self) -> Vec<Ack> {
        self.acks.lock().map(|v| v.clone()).unwrap_or_default()
    }

    /// Stop writing; every acknowledged write.
    pub(crate) async fn finish(self) -> Vec<Ack> {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.task.await;
        self.acks.lock().map(|v| v.clone()).unwrap_or_default()
    }
}

/// One probe round: which nodes accepted a write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Round {
    pub(crate) at: Instant,
    pub(crate) writable: Vec<bool>,
}

/// The split-brain monitor.
pub(crate) struct Monitor {
    stop: Arc<AtomicBool>,
    rounds: Arc<Mutex<Vec<Round>>>,
    task: JoinHandle<()>,
}

/// The time between the starts of two probe rounds.
pub(crate) const PROBE_PERIOD: Duration = Duration::from_millis(50);
/// How long one probe may take (a node that does not answer in time is not writable).
const PROBE_TIMEOUT: Duration = Duration::from_millis(300);

impl Monitor {
    /// Probe the nodes `(name, port)` until finished.
    pub(crate) fn start(nodes: Vec<(String, u16)>, password: String) -> Monitor {
        let stop = Arc::new(AtomicBool::new(false));
        let rounds = Arc::new(Mutex::new(Vec::new()));
        let (s, r) = (stop.clone(), rounds.clone());
        let task = tokio::spawn(async move {
            let slots: Vec<Arc<tokio::sync::Mutex<Option<tokio_postgres::Client>>>> = nodes
                .iter()
                .map(|_| Arc::new(tokio::sync::Mutex::new(None)))
                .collect();
            while !s.load(Ordering::Relaxed) {
                let started = Instant::now();
                let probes: Vec<JoinHandle<bool>> = nodes
                    .iter()
                    .zip(&slots)
                    .map(|((name, port), slot)| {
                        let (slot, name, port, pw) =
                            (slot.clone(), name.clone(), *port, password.clone());
                        tokio::spawn(async move { probe(&slot, &name, port, &pw).await })
                    })
                    .collect();
                let mut writable = Vec::with_capacity(probes.len());
                for p in probes {
                    writable.push(p.await.unwrap_or(false));
                }
                if let Ok(mut v) = r.lock() {
                    v.push(Round {
                        at: started,
                        writable,
                    });
                }
                tokio::time::sleep_until((started + PROBE_PERIOD).into()).await;
            }
        });
        Monitor { stop, rounds, task }
    }

    pub(crate) fn rounds(&self) -> Vec<Round> {
        self.rounds.lock().map(|v| v.clone()).unwrap_or_default()
    }

    /// Wait for the next round that starts at or after `t`.
    pub(crate) async fn round_after(&self, t: Instant) -> Round {
        loop {
            if let Some(r) = self.rounds().into_iter().find(|r| r.at >= t) {
                return r;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub(crate) async fn finish(self) -> Vec<Round> {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.task.await;
        self.rounds.lock().map(|v| v.clone()).unwrap_or_default()
    }
}

/// Whether the node at `port` accepts a write now (reusing the connection in `slot`).
async fn probe(
    slot: &tokio::sync::Mutex<Option<tokio_postgres::Client>>,
    name: &str,
    port: u16,
    password: &str,
) -> bool {
    let mut guard = slot.lock().await;
    if guard.as_ref().is_none_or(|c| c.is_closed()) {
        *guard = connect(port, password, PROBE_TIMEOUT).await.ok();
    }
    let Some(c) = guard.as_ref() else {
        return false;
    };
    let sql = format!("INSERT INTO {PROBE_TABLE} (node) VALUES ('{name}')");
    match tokio::time::timeout(PROBE_TIMEOUT, c.simple_query(&sql)).await {
        Ok(Ok(_)) => true,
        Ok(Err(e)) if e.as_db_error().is_some() && !c.is_closed() => false,
        _ => {
            *guard = None;
            false
        }
    }
}

/// The first write acknowledged at or after `from` by a node other than `not`.
pub(crate) fn first_ack_after(acks: &[Ack], from: Instant, not: Option<usize>) -> Option<Ack> {
    acks.iter()
        .find(|a| a.at >= from && Some(a.node) != not)
        .copied()
}

/// The longest time between two consecutive acknowledged writes, counting only pairs whose
/// second write came at or after `from` (so the gap a fault at `from` opened counts).
pub(crate) fn longest_gap(acks: &[Ack], from: Instant) -> Option<Duration> {
    acks.windows(2)
        .filter(|w| w[1].at >= from)
        .map(|w| w[1].at.duration_since(w[0].at))
        .max()
}

/// The acknowledged ids missing from `present`, in order.
pub(crate) fn lost(acks: &[Ack], present: &BTreeSet<i64>) -> Vec<i64> {
    acks.iter()
        .map(|a| a.id)
        .filter(|id| !present.contains(id))
        .collect()
}

/// A stretch of probe rounds in which more than one node accepted writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Window {
    /// The first round with two writable nodes, after `t0`.
    pub(crate) from: Duration,
    /// The first round after it with at most one (or the last round, if none came).
    pub(crate) to: Duration,
    /// Every node writable in the window's rounds.
    pub(crate) nodes: Vec<usize>,
}

impl Window {
    #[cfg(test)]
    pub(crate) fn length(&self) -> Duration {
        self.to.saturating_sub(self.from)
    }
}

fn since(t0: Instant, t: Instant) -> Duration {
    t.saturating_duration_since(t0)
}

/// The split-brain windows in `rounds`, as offsets from `t0`.
pub(crate) fn split_brain(rounds: &[Round], t0: Instant) -> Vec<Window> {
    let mut out: Vec<Window> = Vec::new();
    let mut open: Option<Window> = None;
    for r in rounds {
        let nodes: Vec<usize> = (0..r.writable.len()).filter(|i| r.writable[*i]).collect();
        match (&mut open, nodes.len() > 1) {
            (None, true) => {
                open = Some(Window {
                    from: since(t0, r.at),
                    to: since(t0, r.at),
                    nodes,
                });
            }
            (Some(w), true) => {
                w.to = since(t0, r.at);
                for n in nodes {
                    if !w.nodes.contains(&n) {
                        w.nodes.push(n);
                    }
                }
                w.nodes.sort_unstable();
            }
            (Some(_), false) => {
                if let Some(mut w) = open.take() {
                    w.to = since(t0, r.at);
                    out.push(w);
                }
            }
            (None, false) => {}
        }
    }
    out.extend(open);
    out
}

/// When each node started or stopped accepting writes, between consecutive rounds:
/// `(offset of the later round from t0, node, writable)`.
pub(crate) fn transitions(rounds: &[Round], t0: Instant) -> Vec<(Duration, usize, bool)> {
    let mut out = Vec::new();
    let mut last: Option<&Vec<bool>> = None;
    for r in rounds {
        if let Some(prev) = last {
            for (i, (a, b)) in prev.iter().zip(&r.writable).enumerate() {
                if a != b {
                    out.push((since(t0, r.at), i, *b));
                }
            }
        }
        last = Some(&r.writable);
    }
    out
}

/// What counts as recovered after a fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Expect {
    /// The fault: recovery is never dated before it.
    pub(crate) floor: Instant,
    /// Look at rounds from here on (the fault, or the end of a freeze).
    pub(crate) from: Instant,
    /// The node accepting writes must not be this one (the old leader).
    pub(crate) not: Option<usize>,
    /// This node must first have been seen refusing writes (the fault took effect).
    pub(crate) outage_of: Option<usize>,
}

/// Recovery as `e` defines it: the first round from `e.from` on in which exactly one node
/// accepted writes (not `e.not`, and only after `e.outage_of` was seen refusing them), dated
/// back to the start of the unbroken stretch of rounds in which that node alone accepted
/// writes (not before `e.floor`): after a freeze, writes may have resumed on a new leader
/// long before the freeze ended. When, and which node.
pub(crate) fn recovered(rounds: &[Round], e: &Expect) -> Option<(Instant, usize)> {
    let only = |r: &Round| -> Option<usize> {
        let w: Vec<usize> = (0..r.writable.len()).filter(|i| r.writable[*i]).collect();
        (w.len() == 1).then(|| w[0])
    };
    let mut outage_seen = e.outage_of.is_none();
    let mut found = None;
    for (k, r) in rounds.iter().enumerate().filter(|(_, r)| r.at >= e.from) {
        if let Some(o) = e.outage_of
            && !r.writable.get(o).copied().unwrap_or(false)
        {
            outage_seen = true;
        }
        if let Some(n) = only(r)
            && outage_seen
            && Some(n) != e.not
        {
            found = Some((k, n));
            break;
        }
    }
    let (mut k, node) = found?;
    while k > 0 && rounds[k - 1].at >= e.floor && only(&rounds[k - 1]) == Some(node) {
        k -= 1;
    }
    Some((rounds[k].at, node))
}

/// Median and maximum.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub(crate) struct Spread {
    pub(crate) median: f64,
    pub(crate) max: f64,
}

/// The median (the mean of the middle two for an even count) and maximum; `None` if empty.
pub(crate) fn spread(values: &[f64]) -> Option<Spread> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    Some(Spread {
        median,
        max: v[n - 1],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(t0: Instant, ms: u64) -> Instant {
        t0 + Duration::from_millis(ms)
    }

    fn acks(t0: Instant, list: &[(u64, i64, usize)]) -> Vec<Ack> {
        list.iter()
            .map(|(ms, id, node)| Ack {
                at: at(t0, *ms),
                id: *id,
                node: *node,
            })
            .collect()
    }

    #[test]
    fn failover_gap_and_loss_come_from_the_acknowledged_writes() {
        let t0 = Instant::now();
        let a = acks(
            t0,
            &[
                (0, 1, 0),
                (10, 2, 0),
                (20, 3, 0),
                (1020, 5, 0),
                (3020, 8, 1),
                (3030, 9, 1),
            ],
        );
        let fault = at(t0, 25);
        // The old leader (0) still acknowledged a write after the fault: the failover ends with
        // the first write acknowledged elsewhere.
        assert_eq!(first_ack_after(&a, fault, Some(0)).map(|x| x.id), Some(8));
        assert_eq!(first_ack_after(&a, fault, None).map(|x| x.id), Some(5));
        assert_eq!(longest_gap(&a, fault), Some(Duration::from_millis(2000)));
        assert_eq!(longest_gap(&a, at(t0, 4000)), None);
        let present: BTreeSet<i64> = [1, 2, 3, 8, 9].into();
        assert_eq!(lost(&a, &present), vec![5]);
    }

    fn rounds(t0: Instant, list: &[(u64, &[bool])]) -> Vec<Round> {
        list.iter()
            .map(|(ms, w)| Round {
                at: at(t0, *ms),
                writable: w.to_vec(),
            })
            .collect()
    }

    #[test]
    fn split_brain_windows_span_the_rounds_with_two_writable_nodes() {
        let t0 = Instant::now();
        let r = rounds(
            t0,
            &[
                (0, &[true, false, false]),
                (50, &[true, true, false]),
                (100, &[true, false, true]),
                (150, &[false, false, true]),
                (200, &[false, false, true]),
                (250, &[true, false, true]),
            ],
        );
        assert_eq!(
            split_brain(&r, t0),
            vec![
                Window {
                    from: Duration::from_millis(50),
                    to: Duration::from_millis(150),
                    nodes: vec![0, 1, 2]
                },
                Window {
                    from: Duration::from_millis(250),
                    to: Duration::from_millis(250),
                    nodes: vec![0, 2]
                },
            ]
        );
        assert_eq!(split_brain(&r, t0)[0].length(), Duration::from_millis(100));
        assert!(split_brain(&r[..1], t0).is_empty());
        assert_eq!(
            transitions(&r, t0),
            vec![
                (Duration::from_millis(50), 1, true),
                (Duration::from_millis(100), 1, false),
                (Duration::from_millis(100), 2, true),
                (Duration::from_millis(150), 0, false),
                (Duration::from_millis(250), 0, true),
            ]
        );
    }

    #[test]
    fn recovery_is_one_writable_node_that_fits_the_fault() {
        let t0 = Instant::now();
        let r = rounds(
            t0,
            &[
                (0, &[true, false, false]),
                (50, &[true, false, false]),
                (100, &[false, false, false]),
                (150, &[true, false, false]),
                (200, &[false, false, true]),
            ],
        );
        let e = |from: u64, not: Option<usize>, outage_of: Option<usize>| Expect {
            floor: at(t0, 40),
            from: at(t0, from),
            not,
            outage_of,
        };
        // The old leader still writable right after the fault does not count.
        assert_eq!(recovered(&r, &e(40, Some(0), None)), Some((at(t0, 200), 2)));
        // A restarted postmaster on the same node counts once it was seen down.
        assert_eq!(recovered(&r, &e(40, None, Some(0))), Some((at(t0, 150), 0)));
        // After a freeze: the first round with one writable node.
        assert_eq!(recovered(&r, &e(40, None, None)), Some((at(t0, 50), 0)));
        assert_eq!(recovered(&r, &e(210, None, None)), None);
        // A freeze that ended at 200 ms: node2 took the writes over before it ended.
        let mut r2 = r.clone();
        r2.push(Round {
            at: at(t0, 250),
            writable: vec![false, false, true],
        });
        assert_eq!(recovered(&r2, &e(220, None, None)), Some((at(t0, 200), 2)));
    }

    #[test]
    fn spread_is_the_median_and_the_maximum() {
        assert_eq!(spread(&[]), None);
        assert_eq!(
            spread(&[3.0, 1.0, 2.0]),
            Some(Spread {
                median: 2.0,
                max: 3.0
            })
        );
        assert_eq!(
            spread(&[4.0, 1.0, 2.0, 10.0]),
            Some(Spread {
                median: 3.0,
                max: 10.0
            })
        );
    }
}
