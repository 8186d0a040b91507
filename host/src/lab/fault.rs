//! Faults injected into a running lab, and what became of them: while a fault plays out, the
//! split-brain monitor probes every node; the report lists when each node stopped or started
//! accepting writes, when the cluster recovered, and any moment two nodes accepted writes.

use super::measure::{self, Expect, Monitor, Round};
use super::ops::Lab;
use super::spec::{self, node_name};
use super::state::cmd;
use super::{FaultCmd, LabError, say};
use nix::sys::signal::Signal;
use std::path::Path;
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
}

impl Injected {
    /// What recovery means after this fault.
    pub(crate) fn expect(&self) -> Expect {
        match self.kind {
            Kind::Kill | Kind::Stop | Kind::Switchover { .. } => Expect {
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
            Kind::Freeze(_) | Kind::FreezeEtcd(_) => Expect {
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
            "{flag} {s}: give the seconds to freeze, more than 0 and at most 3600, e.g. {flag} 15"
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
    let (at, ended, what) = match (kind, target) {
        (Kind::Kill, Some(t)) => {
            let p = regent(t)?;
            let pm = super::procs::postmaster(&lab.layout.data_dir(t));
            let at = Instant::now();
            sent(p.signal_group(Signal::SIGKILL), "SIGKILL", p.pid)?;
            // A postmaster in a process group of its own (Patroni starts it in a session of
            // its own) dies with the host too: its group goes the same moment.
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
            say(format!(
                "{}'s regent (pid {}) is frozen for {:.1} s",
                node_name(t),
                p.pid,
                d.as_secs_f64()
            ));
            let slept = sleep_or_interrupt(d).await;
            p.signal(Signal::SIGCONT);
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
            say(format!(
                "etcd (pid {}) is frozen for {:.1} s",
                p.pid,
                d.as_secs_f64()
            ));
            let slept = sleep_or_interrupt(d).await;
            p.signal(Signal::SIGCONT);
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
        (_, None) => return Err(LabError::Failed("no node to hit".into())),
    };
    Ok(Injected {
        kind,
        target,
        at,
        ended,
        what,
        wall,
    })
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

/// The report of one fault: what was done, the writability changes, the outcome.
fn report(
    lab: &Lab,
    inj: &Injected,
    rounds: &[Round],
    recovered: Option<(Instant, usize)>,
    leader: Option<usize>,
) -> String {
    let mut out = format!("{}  {}\n", inj.wall, inj.what);
    // The state just before the fault, then every change after it.
    let from = rounds.iter().rposition(|r| r.at < inj.at).unwrap_or(0);
    let changes = measure::transitions(&rounds[from..], inj.at);
    for (d, node, w) in &changes {
        let (d, node, w) = (*d, *node, *w);
        out.push_str(&format!(
            "  {:>9}  {} {} writes\n",
            format!("+{:.2} s", d.as_secs_f64()),
            node_name(node),
            if w { "accepts" } else { "stops accepting" }
        ));
    }
    let windows = measure::split_brain(&rounds[from..], inj.at);
    match recovered {
        Some((_, node)) if changes.is_empty() => out.push_str(&format!(
            "writes never stopped: {} accepted them throughout\n",
            node_name(node)
        )),
        Some((t, node)) => {
            out.push_str(&format!(
                "recovered {:.2} s after the fault: {} accepts writes{}\n",
                t.saturating_duration_since(inj.at).as_secs_f64(),
                node_name(node),
                match leader {
                    Some(l) if l == node => " and holds the leader key".to_string(),
                    Some(l) => format!(" ({} holds the leader key)", node_name(l)),
                    None => String::new(),
                }
            ));
        }
        None => out.push_str("not recovered: no single node accepted writes in time\n"),
    }
    if windows.is_empty() {
        out.push_str(&format!(
            "no split brain: never two nodes accepting writes ({} probe rounds, every {} ms)\n",
            rounds.len() - from,
            measure::PROBE_PERIOD.as_millis()
        ));
    } else {
        for w in &windows {
            out.push_str(&format!(
                "SPLIT BRAIN from +{:.2} s to +{:.2} s: {} accepted writes\n",
                w.from.as_secs_f64(),
                w.to.as_secs_f64(),
                w.nodes
                    .iter()
                    .map(|n| node_name(*n))
                    .collect::<Vec<_>>()
                    .join(" and ")
            ));
        }
    }
    if let Some(t) = inj.target
        && !lab.node_proc(t).is_some_and(|p| p.alive())
    {
        out.push_str(&format!(
            "{} is down; `{}` starts it again and it rejoins\n",
            node_name(t),
            cmd(&lab.layout.dir, &format!("fault restart-node {}", t + 1))
        ));
    }
    out
}

/// `regent lab fault`.
pub(crate) async fn run(dir: &Path, fault: FaultCmd) -> Result<(), LabError> {
    let mut lab = Lab::open_running(dir)?;
    let n = lab.st.settings.nodes;
    let node = |s: &Option<String>| s.as_deref().map(|s| spec::parse_node(s, n)).transpose();
    let (kind, target) = match &fault {
        FaultCmd::RestartNode { node } => {
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
    };
    let monitor = monitor_for(&lab);
    // A baseline round before the fault.
    monitor.round_after(Instant::now()).await;
    let inj = match inject(&mut lab, kind, target).await {
        Ok(i) => i,
        Err(e) => {
            monitor.finish().await;
            return Err(e);
        }
    };
    let deadline = inj.ended + recovery_budget(&lab);
    let rec = wait_recovered(&monitor, &inj.expect(), deadline).await;
    // Watch a little longer: a second writable node would show now.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rounds = monitor.finish().await;
    let leader = lab.leader().await;
    super::out(report(&lab, &inj, &rounds, rec, leader));
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
