//! Faults injected into a running lab, and what became of them: while a fault plays out, the
//! split-brain monitor probes every node; the report lists when each node stopped or started
//! accepting writes, when the cluster recovered, and any moment two nodes accepted writes.
//!
//! - this file: the kinds of fault, their injection, what recovery means after each
//!   ([`Injected::expect`]), and `regent lab fault`;
//! - [`partition`]: a node cut off from etcd and its peers (cgroup v2 and iptables; root);
//! - [`replication`]: a replica left behind (`lag-replica`) or cut off (`break-replication`)
//!   before the leader crashes;
//! - `report.rs`: the report.
//!
//! Invariant: whatever a fault changed that outlives its injection (a stopped process, a
//! firewall rule, a cgroup) is undone by a guard when dropped, so also when the command is
//! interrupted with Ctrl-C.

mod partition;
mod replication;
mod report;

pub(crate) use partition::{check_root, clean_leftovers};
pub(crate) use replication::exclusion as replication_exclusion;

use super::measure::{self, Expect, Monitor};
use super::ops::Lab;
use super::report::ReportPath;
use super::spec::{self, node_name};
use super::state::cmd;
use super::timeline;
use super::watch::Watcher;
use super::{CompareFault, FaultCmd, Format, LabError, say};
use nix::sys::signal::Signal;
use replication::{How, Starved};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A fault, with its target resolved.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Kind {
    /// SIGKILL of the node's process group.
    Kill,
    /// SIGTERM of the node's regent.
    Stop,
    /// SIGKILL of the node's postmaster.
    KillPostgres,
    /// SIGSTOP of the node's regent, SIGCONT after the duration.
    Freeze(Duration),
    /// SIGSTOP of etcd, SIGCONT after the duration.
    FreezeEtcd(Duration),
    /// `POST /switchover` to the leader (the target), to the candidate if one is given.
    Switchover { candidate: Option<usize> },
    /// The node cut off from etcd and its peers for the duration (its clients still reach it).
    Partition(Duration),
    /// A replica's walreceiver stopped, the leader writes past `maximum_lag_on_failover`,
    /// then crashes.
    LagReplica { replica: Option<usize> },
    /// A replica's walreceiver terminated (and every new one), the leader writes past
    /// `maximum_lag_on_failover`, then crashes.
    BreakReplication { replica: Option<usize> },
}

impl Kind {
    /// The kind `compare` injects for `f`; `seconds` is the duration of a freeze or partition.
    pub(crate) fn of(f: CompareFault, seconds: Duration) -> Kind {
        match f {
            CompareFault::KillLeader => Kind::Kill,
            CompareFault::StopLeader => Kind::Stop,
            CompareFault::KillPostgres => Kind::KillPostgres,
            CompareFault::FreezeLeader => Kind::Freeze(seconds),
            CompareFault::FreezeEtcd => Kind::FreezeEtcd(seconds),
            CompareFault::Switchover => Kind::Switchover { candidate: None },
            CompareFault::Partition => Kind::Partition(seconds),
            CompareFault::LagReplica => Kind::LagReplica { replica: None },
            CompareFault::BreakReplication => Kind::BreakReplication { replica: None },
        }
    }
}

/// A fault that was injected.
#[derive(Debug, Clone)]
pub(crate) struct Injected {
    pub(crate) kind: Kind,
    /// The node it hit (etcd: none).
    pub(crate) target: Option<usize>,
    /// When it was injected.
    pub(crate) at: Instant,
    /// When it was over (a freeze's SIGCONT, the switchover's answer; else `at`).
    pub(crate) ended: Instant,
    /// What was done, for the report.
    pub(crate) what: String,
    /// Wall-clock time of `at`.
    pub(crate) wall: String,
    /// What happened before `at` (a replica starved, the lag reached), for the report.
    pub(crate) notes: Vec<String>,
    /// The replica that must not be promoted (`lag-replica`, `break-replication`).
    pub(crate) spared: Option<usize>,
    /// That replica, to heal once the cluster recovered (healed when the last clone drops).
    pub(crate) starved: Option<Arc<Mutex<Starved>>>,
}

impl Injected {
    /// What recovery means after this fault.
    pub(crate) fn expect(&self) -> Expect {
        match self.kind {
            Kind::Kill
            | Kind::Stop
            | Kind::Switchover { .. }
            | Kind::LagReplica { .. }
            | Kind::BreakReplication { .. } => Expect {
                floor: self.at,
                from: self.at,
                not: self.target,
                outage_of: None,
            },
            Kind::KillPostgres => Expect {
                floor: self.at,
                from: self.at,
                not: None,
                outage_of: self.target,
            },
            // A frozen or partitioned leader either keeps its key (writes never stopped) or is
            // fenced and replaced: whichever node alone accepts writes once it is over.
            Kind::Freeze(_) | Kind::FreezeEtcd(_) | Kind::Partition(_) => Expect {
                floor: self.at,
                from: self.ended,
                not: None,
                outage_of: None,
            },
        }
    }
}

fn secs(s: f64, flag: &str) -> Result<Duration, LabError> {
    if !(s.is_finite() && s > 0.0 && s <= 3600.0) {
        return Err(LabError::Usage(format!(
            "{flag} {s}: give the seconds it lasts, more than 0 and at most 3600, e.g. {flag} 15"
        )));
    }
    Ok(Duration::from_secs_f64(s))
}

/// A signal that could not be sent (the process exited just now) is an error.
fn sent(ok: bool, sig: &str, pid: i32) -> Result<(), LabError> {
    if ok {
        Ok(())
    } else {
        Err(LabError::Failed(format!(
            "could not send {sig} to pid {pid}: the process is gone"
        )))
    }
}

/// Sleep for `d`, or until Ctrl-C (then `Err`).
async fn sleep_or_interrupt(d: Duration) -> Result<(), ()> {
    tokio::select! {
        _ = tokio::time::sleep(d) => Ok(()),
        _ = tokio::signal::ctrl_c() => Err(()),
    }
}

/// Inject `kind` into `target` (the leader when `None`, except for etcd).
pub(crate) async fn inject(
    lab: &mut Lab,
    kind: Kind,
    target: Option<usize>,
) -> Result<Injected, LabError> {
    let needs_node = !matches!(kind, Kind::FreezeEtcd(_));
    let target = match (needs_node, target) {
        (false, _) => None,
        (true, Some(t)) => Some(t),
        (true, None) => Some(lab.leader().await.ok_or_else(|| {
            LabError::Failed(format!(
                "no node holds the leader key right now, so there is no leader to hit; `{}` shows the nodes, or give --node",
                cmd(&lab.layout.dir, "status")
            ))
        })?),
    };
    let regent = |t: usize| {
        lab.node_proc(t).filter(|p| p.alive()).ok_or_else(|| {
            LabError::Usage(format!(
                "{}'s regent is not running; start it with `{}`",
                node_name(t),
                cmd(&lab.layout.dir, &format!("fault restart-node {}", t + 1))
            ))
        })
    };
    let wall = crate::time::now().to_rfc3339();
    let mut notes = Vec::new();
    let mut spared = None;
    let (at, ended, what) = match (kind, target) {
        (Kind::Kill, Some(t)) => {
            regent(t)?;
            let (at, what) = crash(lab, t)?;
            (at, at, what)
        }
        (Kind::Stop, Some(t)) => {
            let p = regent(t)?;
            let at = Instant::now();
            sent(p.signal(Signal::SIGTERM), "SIGTERM", p.pid)?;
            lab.expected.remove(&node_name(t));
            (
                at,
                at,
                format!(
                    "SIGTERM to {}'s regent (pid {}): a graceful stop",
                    node_name(t),
                    p.pid
                ),
            )
        }
        (Kind::KillPostgres, Some(t)) => {
            let pm = super::procs::postmaster(&lab.layout.data_dir(t)).ok_or_else(|| {
                LabError::Usage(format!("{}'s PostgreSQL is not running", node_name(t)))
            })?;
            let at = Instant::now();
            sent(pm.signal(Signal::SIGKILL), "SIGKILL", pm.pid)?;
            (
                at,
                at,
                format!("SIGKILL to {}'s postmaster (pid {})", node_name(t), pm.pid),
            )
        }
        (Kind::Freeze(d), Some(t)) => {
            let p = regent(t)?;
            let at = Instant::now();
            sent(p.signal(Signal::SIGSTOP), "SIGSTOP", p.pid)?;
            let resume = Resume(p);
            say(format!(
                "{}'s regent (pid {}) is frozen for {:.1} s",
                node_name(t),
                p.pid,
                d.as_secs_f64()
            ));
            let slept = sleep_or_interrupt(d).await;
            drop(resume);
            if slept.is_err() {
                return Err(LabError::Failed(format!(
                    "interrupted; {}'s regent was resumed (SIGCONT)",
                    node_name(t)
                )));
            }
            (
                at,
                Instant::now(),
                format!(
                    "SIGSTOP to {}'s regent (pid {}), SIGCONT {:.1} s later: a stalled supervisor",
                    node_name(t),
                    p.pid,
                    d.as_secs_f64()
                ),
            )
        }
        (Kind::FreezeEtcd(d), _) => {
            let p = lab
                .proc("etcd")
                .filter(|p| p.alive())
                .ok_or_else(|| LabError::Usage("etcd is not running".into()))?;
            let at = Instant::now();
            sent(p.signal(Signal::SIGSTOP), "SIGSTOP", p.pid)?;
            let resume = Resume(p);
            say(format!(
                "etcd (pid {}) is frozen for {:.1} s",
                p.pid,
                d.as_secs_f64()
            ));
            let slept = sleep_or_interrupt(d).await;
            drop(resume);
            if slept.is_err() {
                return Err(LabError::Failed(
                    "interrupted; etcd was resumed (SIGCONT)".into(),
                ));
            }
            (
                at,
                Instant::now(),
                format!(
                    "SIGSTOP to etcd (pid {}), SIGCONT {:.1} s later",
                    p.pid,
                    d.as_secs_f64()
                ),
            )
        }
        (Kind::Switchover { candidate }, Some(t)) => {
            if candidate == Some(t) {
                return Err(LabError::Usage(format!(
                    "--candidate {}: that node is the leader; name a replica",
                    node_name(t)
                )));
            }
            let mut body = serde_json::json!({"leader": node_name(t)});
            if let Some(c) = candidate {
                body["candidate"] = node_name(c).into();
            }
            let url = format!("http://127.0.0.1:{}/switchover", lab.st.ports.nodes[t].api);
            let at = Instant::now();
            let r = lab
                .http
                .post(&url)
                .basic_auth(spec::API_USER, Some(&lab.st.password))
                .json(&body)
                .timeout(Duration::from_secs(60))
                .send()
                .await
                .map_err(|e| LabError::Failed(format!("POST {url} failed: {e}")))?;
            let status = r.status().as_u16();
            let text = r.text().await.unwrap_or_default();
            if !(200..300).contains(&status) {
                return Err(LabError::Failed(format!(
                    "{} refused the switchover: {status} {}",
                    node_name(t),
                    text.trim()
                )));
            }
            (
                at,
                Instant::now(),
                format!(
                    "POST /switchover to {} ({}): {status} {}",
                    node_name(t),
                    candidate.map_or("the policy picks the candidate".to_string(), |c| format!(
                        "candidate {}",
                        node_name(c)
                    )),
                    text.trim()
                ),
            )
        }
        (Kind::Partition(d), Some(t)) => {
            regent(t)?;
            let mut cut = partition::cut(lab, t)?;
            let at = Instant::now();
            say(format!(
                "{} is cut off for {:.1} s",
                node_name(t),
                d.as_secs_f64()
            ));
            let slept = sleep_or_interrupt(d).await;
            let healed = cut.heal();
            if slept.is_err() {
                return Err(LabError::Failed(format!(
                    "interrupted; the partition of {} was healed",
                    node_name(t)
                )));
            }
            healed.map_err(|e| {
                LabError::Failed(format!(
                    "could not heal the partition of {}: {e}; `{}` removes what is left",
                    node_name(t),
                    cmd(&lab.layout.dir, "down")
                ))
            })?;
            (
                at,
                Instant::now(),
                format!("{}, healed {:.1} s later", cut.what, d.as_secs_f64()),
            )
        }
        (Kind::LagReplica { replica } | Kind::BreakReplication { replica }, Some(t)) => {
            regent(t)?;
            let how = if matches!(kind, Kind::LagReplica { .. }) {
                How::Lag
            } else {
                How::Break
            };
            let r = replication::pick(lab, t, replica).await?;
            let t0 = Instant::now();
            let (s, did) = replication::starve(lab, r, how).await?;
            // From here on, dropping the guard heals the replica (also on Ctrl-C).
            let starved = Arc::new(Mutex::new(s));
            notes.push(did);
            if how == How::Break {
                notes.push(replication::wait_unhealthy(lab, r, t0).await?);
            }
            let lag = replication::outrun(lab, t, r).await?;
            notes.push(format!(
                "{} wrote WAL until its GET /cluster showed {} {lag} bytes behind (maximum_lag_on_failover {})",
                node_name(t),
                node_name(r),
                spec::MAXIMUM_LAG_ON_FAILOVER
            ));
            let (at, what) = crash(lab, t)?;
            spared = Some((r, starved));
            (at, at, what)
        }
        (_, None) => return Err(LabError::Failed("no node to hit".into())),
    };
    let (spared, starved) = spared.map_or((None, None), |(r, s)| (Some(r), Some(s)));
    Ok(Injected {
        kind,
        target,
        at,
        ended,
        what,
        wall,
        notes,
        spared,
        starved,
    })
}

/// SIGKILL node `t`'s process group (a host crash): when, and what was done.
fn crash(lab: &mut Lab, t: usize) -> Result<(Instant, String), LabError> {
    let p = lab.node_proc(t).filter(|p| p.alive()).ok_or_else(|| {
        LabError::Failed(format!(
            "{}'s {} is not running",
            node_name(t),
            lab.st.supervisor.name()
        ))
    })?;
    let pm = super::procs::postmaster(&lab.layout.data_dir(t));
    let at = Instant::now();
    sent(p.signal_group(Signal::SIGKILL), "SIGKILL", p.pid)?;
    // A postmaster in a process group of its own (Patroni starts it in a session of its own)
    // dies with the host too: its group goes the same moment.
    if let Some(m) = pm {
        m.signal_its_group(Signal::SIGKILL, p.pid);
    }
    lab.expected.remove(&node_name(t));
    let what = format!(
        "SIGKILL to {}'s process group ({} pid {}{}, the fencing guard): a host crash",
        node_name(t),
        lab.st.supervisor.name(),
        p.pid,
        pm.map(|m| format!(", PostgreSQL pid {}", m.pid))
            .unwrap_or_default()
    );
    Ok((at, what))
}

/// A process stopped with SIGSTOP, resumed (SIGCONT) when this is dropped.
struct Resume(super::procs::Proc);

impl Drop for Resume {
    fn drop(&mut self) {
        self.0.signal(Signal::SIGCONT);
    }
}

impl Injected {
    /// Undo what outlived the injection (a starved replica); what was done.
    pub(crate) fn heal(&self) -> Option<String> {
        let s = self.starved.as_ref()?;
        let mut s = s.lock().ok()?;
        Some(s.heal())
    }
}

/// Wait until the rounds show recovery as `expect` defines it, or the deadline passes.
pub(crate) async fn wait_recovered(
    monitor: &Monitor,
    expect: &Expect,
    deadline: Instant,
) -> Option<(Instant, usize)> {
    loop {
        if let Some(r) = measure::recovered(&monitor.rounds(), expect) {
            return Some(r);
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// How long to wait for recovery after a fault ended: two leases and a half minute.
pub(crate) fn recovery_budget(lab: &Lab) -> Duration {
    Duration::from_secs(2 * lab.st.settings.ttl + 30)
}

fn monitor_for(lab: &Lab) -> Monitor {
    Monitor::start(
        (0..lab.st.settings.nodes)
            .map(|i| (node_name(i), lab.st.ports.nodes[i].pg))
            .collect(),
        lab.st.password.clone(),
    )
}

/// `regent lab fault`: the report on stdout (text, or the timeline as JSON with
/// `--format json`), and the timeline's HTML page in `report_to`.
pub(crate) async fn run(
    dir: &Path,
    fault: FaultCmd,
    format: Format,
    report_to: Option<&Path>,
) -> Result<(), LabError> {
    let report_to = report_to.map(ReportPath::check).transpose()?;
    if matches!(fault, FaultCmd::Partition { .. }) {
        // Before anything is opened or started.
        check_root("partition")?;
    }
    let mut lab = Lab::open_running(dir)?;
    let n = lab.st.settings.nodes;
    let node = |s: &Option<String>| s.as_deref().map(|s| spec::parse_node(s, n)).transpose();
    let (kind, target) = match &fault {
        FaultCmd::RestartNode { node } => {
            if report_to.is_some() || format == Format::Json {
                return Err(LabError::Usage(
                    "restart-node injects no fault and has no timeline: leave out --report and --format json".into(),
                ));
            }
            let i = spec::parse_node(node, n)?;
            return restart_node(&mut lab, i).await;
        }
        FaultCmd::KillLeader { node: t } => (Kind::Kill, node(t)?),
        FaultCmd::StopLeader { node: t } => (Kind::Stop, node(t)?),
        FaultCmd::KillPostgres { node: t } => (Kind::KillPostgres, node(t)?),
        FaultCmd::FreezeLeader { seconds, node: t } => {
            (Kind::Freeze(secs(*seconds, "freeze-leader")?), node(t)?)
        }
        FaultCmd::FreezeEtcd { seconds } => {
            (Kind::FreezeEtcd(secs(*seconds, "freeze-etcd")?), None)
        }
        FaultCmd::Switchover { candidate } => (
            Kind::Switchover {
                candidate: node(candidate)?,
            },
            None,
        ),
        FaultCmd::Partition { seconds, node: t } => {
            (Kind::Partition(secs(*seconds, "partition")?), node(t)?)
        }
        FaultCmd::LagReplica { replica } => (
            Kind::LagReplica {
                replica: node(replica)?,
            },
            None,
        ),
        FaultCmd::BreakReplication { replica } => (
            Kind::BreakReplication {
                replica: node(replica)?,
            },
            None,
        ),
    };
    if n < 2
        && !matches!(
            kind,
            Kind::KillPostgres | Kind::Freeze(_) | Kind::FreezeEtcd(_)
        )
    {
        return Err(LabError::Usage(format!(
            "the lab in {} has 1 node; this fault needs a replica (regent lab up --nodes 3)",
            dir.display()
        )));
    }
    let monitor = monitor_for(&lab);
    let watcher = Watcher::start(&lab);
    // A baseline round before the fault, one in which the cluster accepts writes: the first
    // rounds also open the probes' connections, which on a busy machine can outlast a probe,
    // and a fault that follows a round seeing nobody writable would report no stop at all.
    let baseline_by = Instant::now() + Duration::from_secs(5);
    while !monitor
        .round_after(Instant::now())
        .await
        .writable
        .contains(&true)
        && Instant::now() < baseline_by
    {}
    // Ctrl-C drops the fault's future: its guards heal what it changed.
    let played = tokio::select! {
        r = play(&mut lab, &monitor, kind, target) => r,
        _ = tokio::signal::ctrl_c() => Err(LabError::Failed(
            "interrupted; what the fault changed was undone (processes resumed, firewall rules and cgroups removed)".into(),
        )),
    };
    let (inj, rec) = match played {
        Ok(p) => p,
        Err(e) => {
            monitor.finish().await;
            watcher.finish().await;
            return Err(e);
        }
    };
    // Watch a little longer: a second writable node would show now.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rounds = monitor.finish().await;
    let watched = watcher.finish().await;
    let leader = lab.leader().await;
    let mut text = report::report(&lab, &inj, &rounds, rec, leader);
    let mut wrong = None;
    if let (Some(r), Some((_, w))) = (inj.spared, rec) {
        if w == r {
            wrong = Some(format!(
                "{} was promoted although it was left more than maximum_lag_on_failover behind",
                node_name(r)
            ));
            text.push_str(&format!("WRONG: {}\n", wrong.clone().unwrap_or_default()));
        } else {
            let why = replication::exclusion(&lab, w, r).await;
            text.push_str(&format!(
                "{} was not promoted: {}\n",
                node_name(r),
                why.map_or_else(
                    || format!("{}'s GET /elections/last does not list it", node_name(w)),
                    |why| format!("{}'s election left it out: {why}", node_name(w))
                )
            ));
        }
    }
    if let Some(h) = inj.heal() {
        text.push_str(&format!("{h}\n"));
    }
    let name = timeline::command_name(&fault);
    let tl = timeline::record(&lab, &name, &inj, &rounds, &watched, rec).await;
    match format {
        Format::Table => super::out(text),
        Format::Json => outln!(
            "{}",
            serde_json::to_string_pretty(&tl).unwrap_or_else(|_| "{}".into())
        ),
    }
    if let Some(r) = &report_to {
        r.write(&super::report::fault_page(&tl))?;
        say(format!("the report is in {}", r.path().display()));
    }
    if let Some(w) = wrong {
        return Err(LabError::Failed(w));
    }
    if rec.is_none() {
        return Err(LabError::Failed(format!(
            "no node accepted writes within {} s after the fault; `{}` shows the nodes, their logs are in {}",
            recovery_budget(&lab).as_secs(),
            cmd(&lab.layout.dir, "status"),
            lab.layout.dir.display()
        )));
    }
    Ok(())
}

/// Inject the fault and wait for recovery.
async fn play(
    lab: &mut Lab,
    monitor: &Monitor,
    kind: Kind,
    target: Option<usize>,
) -> Result<(Injected, Option<(Instant, usize)>), LabError> {
    let inj = inject(lab, kind, target).await?;
    let deadline = inj.ended + recovery_budget(lab);
    let rec = wait_recovered(monitor, &inj.expect(), deadline).await;
    Ok((inj, rec))
}

/// Stop node `i` (if it runs) and start it again; wait until it leads or streams.
pub(crate) async fn restart_node(lab: &mut Lab, i: usize) -> Result<(), LabError> {
    let t0 = Instant::now();
    if lab.node_proc(i).is_some_and(|p| p.alive()) {
        say(format!("stopping {}", node_name(i)));
        lab.stop_node(i, Duration::from_secs(30)).await?;
    } else {
        // Whatever of the node is left without its regent (a guard, a postmaster) goes first.
        lab.stop_node(i, Duration::ZERO).await?;
    }
    lab.start_node(i)?;
    let name = node_name(i);
    let role = lab
        .wait_until(
            Instant::now() + Duration::from_secs(120),
            &format!("{name} to serve"),
            |views| {
                let l = views.iter().position(|v| v.leader)?;
                if l == i {
                    return Some("leads".to_string());
                }
                (views[i].streaming_replica() && views[l].streaming_to().contains(&name))
                    .then(|| format!("streams from {}", node_name(l)))
            },
        )
        .await?;
    outln!(
        "{name} restarted (regent pid {}): it {role}, {:.1} s after the restart began",
        lab.node_proc(i).map_or(0, |p| p.pid),
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn freeze_durations_are_checked() {
        assert_eq!(secs(1.5, "x").expect("ok"), Duration::from_millis(1500));
        for bad in [0.0, -1.0, f64::NAN, 4000.0] {
            let e = secs(bad, "freeze-etcd").expect_err("bad");
            assert!(e.to_string().starts_with("freeze-etcd"), "{e}");
        }
    }

    #[test]
    fn recovery_follows_the_kind_of_fault() {
        let t = Instant::now();
        let inj = |kind| Injected {
            kind,
            target: Some(1),
            at: t,
            ended: t + Duration::from_secs(5),
            what: String::new(),
            wall: String::new(),
            notes: Vec::new(),
            spared: None,
            starved: None,
        };
        assert_eq!(
            inj(Kind::Kill).expect(),
            Expect {
                floor: t,
                from: t,
                not: Some(1),
                outage_of: None
            }
        );
        assert_eq!(
            inj(Kind::KillPostgres).expect(),
            Expect {
                floor: t,
                from: t,
                not: None,
                outage_of: Some(1)
            }
        );
        assert_eq!(
            inj(Kind::Freeze(Duration::from_secs(5))).expect().from,
            t + Duration::from_secs(5)
        );
    }
}
