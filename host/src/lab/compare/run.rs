//! One measured run: the lab made ready under a policy, the writer and the split-brain
//! monitor started, the fault injected into the leader, and what the writes show.

use super::super::fault::{self, Injected, Kind};
use super::super::measure::{self, Ack, Monitor, Writer};
use super::super::ops::Lab;
use super::super::spec::node_name;
use super::super::timeline;
use super::super::watch::Watcher;
use super::super::{CompareFault, LabError, say};
use super::ready;
use super::results::{RunResult, SplitBrain, ms};
use fault::replication_exclusion;
use std::time::{Duration, Instant};

/// Run `fault_kind` once under the policy list `list`.
pub(super) async fn one_run(
    lab: &mut Lab,
    list: &[String],
    fault_kind: CompareFault,
    run: usize,
    interval: Duration,
    seconds: Duration,
) -> Result<RunResult, LabError> {
    let mut leader = ready(lab, list).await?;
    let pw = lab.st.password.clone();
    let ports: Vec<u16> = lab.st.ports.nodes.iter().map(|n| n.pg).collect();
    // Right after the hand-back the nodes' status documents may be a loop stale and name the
    // former leader, already read-only: look again until the one that takes writes is found.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match lab.create_tables(leader, true).await {
            Ok(()) => break,
            Err(e)
                if e.to_string().contains("read-only transaction") && Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(200)).await;
                leader = lab.wait_healthy(deadline).await?;
            }
            Err(e) => return Err(e),
        }
    }
    let run_id = crate::time::now()
        .unix_ms()
        .and_then(|m| i64::try_from(m).ok())
        .unwrap_or(run as i64);
    let mut result = RunResult {
        run,
        old_leader: node_name(leader),
        winner: None,
        failover_ms: None,
        longest_gap_ms: None,
        acked_writes: 0,
        lost_writes: 0,
        lost_ids: Vec::new(),
        split_brain: Vec::new(),
        note: None,
        error: None,
        timeline: None,
    };
    let monitor = Monitor::start(
        (0..ports.len()).map(|i| (node_name(i), ports[i])).collect(),
        pw.clone(),
    );
    let watcher = Watcher::start(lab);
    let writer = Writer::start(ports.clone(), pw.clone(), run_id, interval);
    // Writes flowing for a second before the fault.
    let warm = Instant::now();
    while writer.acks().len() < 20 || warm.elapsed() < Duration::from_secs(1) {
        if warm.elapsed() > Duration::from_secs(10) {
            writer.finish().await;
            monitor.finish().await;
            watcher.finish().await;
            return Err(LabError::Failed(format!(
                "the writer got no acknowledged write from {} within 10 s",
                node_name(leader)
            )));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let kind = Kind::of(fault_kind, seconds);
    let inj: Injected = match fault::inject(lab, kind, Some(leader)).await {
        Ok(i) => i,
        Err(e) => {
            writer.finish().await;
            monitor.finish().await;
            watcher.finish().await;
            result.error = Some(format!("the fault could not be injected: {e}"));
            return Ok(result);
        }
    };
    let deadline = inj.ended + fault::recovery_budget(lab);
    let expect = inj.expect();
    // After a crash, a stop or a hand-over: the first write another node acknowledged. After
    // a freeze, a partition or a PostgreSQL crash, whichever node alone accepts writes once
    // it is over (the old leader, if it kept its key), as the monitor saw it.
    let first = if expect.not.is_some() {
        loop {
            if let Some(a) = measure::first_ack_after(&writer.acks(), inj.at, Some(leader)) {
                break Some((a.at, a.node));
            }
            if Instant::now() > deadline {
                break None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    } else {
        fault::wait_recovered(&monitor, &expect, deadline).await
    };
    if let Some(h) = inj.heal() {
        say(format!("  {h}"));
    }
    // Keep writing and probing a second longer: a late second primary would show now.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let acks: Vec<Ack> = writer.finish().await;
    let rounds = monitor.finish().await;
    let watched = watcher.finish().await;
    result.timeline =
        Some(timeline::record(lab, fault_kind.name(), &inj, &rounds, &watched, first).await);
    result.acked_writes = acks.len();
    result.split_brain = measure::split_brain(&rounds, inj.at)
        .iter()
        .map(SplitBrain::from)
        .collect();
    let Some((first_at, first_node)) = first else {
        result.error = Some(format!(
            "no node {}accepted writes within {} s of the fault",
            if expect.not.is_some() {
                format!("other than {} ", node_name(leader))
            } else {
                String::new()
            },
            fault::recovery_budget(lab).as_secs()
        ));
        return Ok(result);
    };
    result.winner = Some(node_name(first_node));
    result.failover_ms = Some(ms(first_at.saturating_duration_since(inj.at)));
    if first_node == leader && measure::transitions(&rounds, inj.at).is_empty() {
        result.note = Some(format!(
            "writes never stopped: {} kept the leader key",
            node_name(leader)
        ));
    }
    if let Some(r) = inj.spared {
        if r == first_node {
            result.error = Some(format!(
                "{} was promoted although it was left more than maximum_lag_on_failover behind",
                node_name(r)
            ));
        } else {
            let why = replication_exclusion(lab, first_node, r).await;
            result.note = Some(format!(
                "{} not promoted: {}",
                node_name(r),
                why.unwrap_or_else(|| "its exclusion is not in the winner's election record".into())
            ));
        }
    }
    result.longest_gap_ms = measure::longest_gap(&acks, inj.at).map(ms);
    match measure::present_ids(ports[first_node], &pw, run_id).await {
        Ok(present) => {
            let lost = measure::lost(&acks, &present);
            result.lost_writes = lost.len();
            result.lost_ids = lost.into_iter().take(20).collect();
        }
        Err(e) => {
            result.error = Some(format!(
                "cannot read the writes back from {}: {e}",
                node_name(first_node)
            ));
        }
    }
    Ok(result)
}
