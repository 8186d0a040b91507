//! `regent lab compare`: the same fault, several times, under each policy, measured.
//!
//! Every run starts from the same place: the policy swapped in on every node (configuration
//! rewritten, SIGHUP, checked through each node's status document), every node running,
//! node1 leading (after a switchover if needed), every replica streaming. Then the writer
//! and the split-brain monitor start, the fault hits the leader, and the run ends one second
//! after a node other than the old leader acknowledged a write. Runs of the policies
//! alternate, so that a drift of the machine (another build, a slow disk) hits them alike.

use super::fault::{self, Injected, Kind};
use super::measure::{self, Ack, Monitor, Spread, Window, Writer};
use super::observe;
use super::ops::{self, Lab};
use super::spec::{self, node_name};
use super::{CompareArgs, CompareFault, Format, LabError, say};
use serde::Serialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

/// One run's measurements.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct RunResult {
    pub(crate) run: usize,
    pub(crate) old_leader: String,
    /// The node that acknowledged the first write after the fault, other than the old leader.
    pub(crate) winner: Option<String>,
    /// Fault → the first write acknowledged by the winner.
    pub(crate) failover_ms: Option<f64>,
    /// The longest time between two acknowledged writes, around the fault.
    pub(crate) longest_gap_ms: Option<f64>,
    pub(crate) acked_writes: usize,
    /// Acknowledged writes missing on the winner after the run.
    pub(crate) lost_writes: usize,
    /// The first lost ids (at most 20).
    pub(crate) lost_ids: Vec<i64>,
    pub(crate) split_brain: Vec<SplitBrain>,
    /// Why the run measured nothing, if it did not.
    pub(crate) error: Option<String>,
}

/// A split-brain window, for the results.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct SplitBrain {
    pub(crate) from_ms: f64,
    pub(crate) to_ms: f64,
    pub(crate) nodes: Vec<String>,
}

impl From<&Window> for SplitBrain {
    fn from(w: &Window) -> SplitBrain {
        SplitBrain {
            from_ms: ms(w.from),
            to_ms: ms(w.to),
            nodes: w.nodes.iter().map(|n| node_name(*n)).collect(),
        }
    }
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0 * 10.0).round() / 10.0
}

/// One policy's runs and their summary.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct PolicyResult {
    pub(crate) policy: String,
    pub(crate) runs: Vec<RunResult>,
    pub(crate) failover_ms: Option<Spread>,
    pub(crate) longest_gap_ms: Option<Spread>,
    pub(crate) acked_writes: usize,
    pub(crate) lost_writes: usize,
    pub(crate) lost_writes_max: usize,
    pub(crate) split_brain_windows: usize,
    pub(crate) split_brain_ms_max: f64,
    pub(crate) winners: BTreeMap<String, usize>,
    pub(crate) failed_runs: usize,
}

impl PolicyResult {
    pub(crate) fn of(policy: &str, runs: Vec<RunResult>) -> PolicyResult {
        let ok: Vec<&RunResult> = runs.iter().filter(|r| r.error.is_none()).collect();
        let mut winners = BTreeMap::new();
        for r in &ok {
            if let Some(w) = &r.winner {
                *winners.entry(w.clone()).or_insert(0) += 1;
            }
        }
        PolicyResult {
            policy: policy.to_string(),
            failover_ms: measure::spread(
                &ok.iter().filter_map(|r| r.failover_ms).collect::<Vec<_>>(),
            ),
            longest_gap_ms: measure::spread(
                &ok.iter()
                    .filter_map(|r| r.longest_gap_ms)
                    .collect::<Vec<_>>(),
            ),
            acked_writes: ok.iter().map(|r| r.acked_writes).sum(),
            lost_writes: ok.iter().map(|r| r.lost_writes).sum(),
            lost_writes_max: ok.iter().map(|r| r.lost_writes).max().unwrap_or(0),
            split_brain_windows: runs.iter().map(|r| r.split_brain.len()).sum(),
            split_brain_ms_max: runs
                .iter()
                .flat_map(|r| r.split_brain.iter().map(|w| w.to_ms - w.from_ms))
                .fold(0.0, f64::max),
            winners,
            failed_runs: runs.len() - ok.len(),
            runs,
        }
    }
}

/// The whole comparison.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Comparison {
    pub(crate) fault: CompareFault,
    pub(crate) runs_per_policy: usize,
    pub(crate) lab: Value,
    pub(crate) policies: Vec<PolicyResult>,
}

fn secs(v: f64) -> String {
    format!("{:.2} s", v / 1000.0)
}

fn spread_text(s: Option<Spread>) -> String {
    s.map_or("-".into(), |s| {
        format!("{} / {}", secs(s.median), secs(s.max))
    })
}

impl Comparison {
    /// The table: one row per policy.
    pub(crate) fn render(&self) -> String {
        use crate::ctl::table::{Align, Table};
        let rows = self
            .policies
            .iter()
            .map(|p| {
                let n = p.runs.len();
                vec![
                    p.policy.clone(),
                    format!("{}/{n}", n - p.failed_runs),
                    spread_text(p.failover_ms),
                    spread_text(p.longest_gap_ms),
                    format!("{} of {}", p.lost_writes, p.acked_writes),
                    if p.split_brain_windows == 0 {
                        "none".into()
                    } else {
                        format!(
                            "{} (longest {})",
                            p.split_brain_windows,
                            secs(p.split_brain_ms_max)
                        )
                    },
                    if p.winners.is_empty() {
                        "-".into()
                    } else {
                        p.winners
                            .iter()
                            .map(|(w, k)| format!("{w} ×{k}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    },
                ]
            })
            .collect();
        let table = Table {
            title: Some(format!(
                "{}, {} run{} per policy",
                self.fault.name(),
                self.runs_per_policy,
                if self.runs_per_policy == 1 { "" } else { "s" }
            )),
            columns: [
                ("Policy", Align::Left),
                ("Runs", Align::Right),
                ("Failover (median / max)", Align::Right),
                ("Write gap (median / max)", Align::Right),
                ("Acked writes lost", Align::Right),
                ("Split brain", Align::Left),
                ("Winner", Align::Left),
            ]
            .iter()
            .map(|(h, a)| (h.to_string(), *a))
            .collect(),
            rows,
        }
        .render();
        let mut out = table;
        for p in &self.policies {
            for r in &p.runs {
                if let Some(e) = &r.error {
                    out.push_str(&format!("{} run {}: {e}\n", p.policy, r.run));
                }
                if !r.lost_ids.is_empty() {
                    out.push_str(&format!(
                        "{} run {}: lost acknowledged ids {:?}{}\n",
                        p.policy,
                        r.run,
                        r.lost_ids,
                        if r.lost_writes > r.lost_ids.len() {
                            " ..."
                        } else {
                            ""
                        }
                    ));
                }
            }
        }
        out
    }
}

impl Comparison {
    /// What went wrong or missed a target, one line each: a failed run, a split brain, a
    /// failover slower than `max_failover_ms`, more than `max_lost` acknowledged writes lost.
    pub(crate) fn misses(
        &self,
        max_failover_ms: Option<f64>,
        max_lost: Option<usize>,
    ) -> Vec<String> {
        let mut out = Vec::new();
        for p in &self.policies {
            for r in &p.runs {
                let run = format!("{} run {}", p.policy, r.run);
                if r.error.is_some() {
                    out.push(format!("{run} measured nothing"));
                }
                if !r.split_brain.is_empty() {
                    out.push(format!("{run} had a split brain"));
                }
                if let (Some(max), Some(f)) = (max_failover_ms, r.failover_ms)
                    && f > max
                {
                    out.push(format!(
                        "{run}: failover {} exceeds --max-failover {}",
                        secs(f),
                        secs(max)
                    ));
                }
                if let Some(max) = max_lost
                    && r.lost_writes > max
                {
                    out.push(format!(
                        "{run}: {} acknowledged writes lost, more than --max-lost {max}",
                        r.lost_writes
                    ));
                }
            }
        }
        out
    }
}

/// The policy lists to compare: `builtin` → no plugin; each a one-policy list.
fn parse_policies(names: &[String]) -> Result<Vec<(String, Vec<String>)>, LabError> {
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    for n in names.iter().map(|n| n.trim()).filter(|n| !n.is_empty()) {
        let list = spec::policy_list("--policies", &[n.to_string()])?;
        if out.iter().any(|(k, _)| k == n) {
            return Err(LabError::Usage(format!(
                "--policies: {n} is named twice; name each policy once (use --runs for more runs)"
            )));
        }
        out.push((n.to_string(), list));
    }
    if out.is_empty() {
        return Err(LabError::Usage(
            "--policies: name the policies to compare, e.g. --policies builtin,zone-aware".into(),
        ));
    }
    Ok(out)
}

/// What to do with the lab afterwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum After {
    /// It was running: leave it running (with its own policies again).
    Leave,
    /// It was stopped: stop it again.
    Stop,
    /// compare created it: remove it.
    Remove,
}

/// `regent lab compare`.
pub(crate) async fn run(dir: &Path, args: CompareArgs) -> Result<(), LabError> {
    let policies = parse_policies(&args.policies)?;
    if !(1..=100).contains(&args.runs) {
        return Err(LabError::Usage(format!(
            "--runs {}: give 1 to 100 runs per policy",
            args.runs
        )));
    }
    if !(1..=10_000).contains(&args.write_interval_ms) {
        return Err(LabError::Usage(format!(
            "--write-interval-ms {}: give 1 to 10000",
            args.write_interval_ms
        )));
    }
    let running = ops::Lab::open_running(dir);
    let (mut lab, after) = match running {
        Ok(lab) => {
            let conflicts = args.opts.requested(None).conflicts(&lab.st.settings);
            if !conflicts.is_empty() {
                return Err(LabError::Usage(format!(
                    "a lab runs in {} already, with other settings than {}; compare uses it as it is: leave these out, or use another --dir",
                    dir.display(),
                    conflicts.join(", ")
                )));
            }
            say(format!("using the lab running in {}", dir.display()));
            (lab, After::Leave)
        }
        Err(LabError::Usage(_)) => {
            // Check the policies before a lab is started for them.
            let named: Vec<String> = policies.iter().flat_map(|(_, l)| l.clone()).collect();
            if !named.is_empty() && !dir.join("lab.json").exists() {
                let src = ops::source_policies(args.opts.policies_dir.as_deref())?.ok_or_else(|| {
                    LabError::Usage("--policies: there is no ./policies here; pass --policies-dir with the directory of the policies (the repository's policies/)".into())
                })?;
                ops::check_policies(&named, &src, None)?;
                ops::load_policies(&named, &src)?;
            }
            let (mut lab, fresh) = Lab::prepare(dir, &args.opts, None).await?;
            say(format!(
                "starting a lab in {}: {}",
                dir.display(),
                observe::describe(&lab.st.settings)
            ));
            if let Err(e) = lab
                .start(fresh, Duration::from_secs(args.opts.timeout))
                .await
            {
                return Err(lab.abandon(e).await);
            }
            (lab, if fresh { After::Remove } else { After::Stop })
        }
        Err(e) => return Err(e),
    };
    let after = if args.keep { After::Leave } else { after };
    let own = lab.st.settings.policies.clone();
    let result = tokio::select! {
        r = compare(&mut lab, &args, &policies) => r,
        _ = tokio::signal::ctrl_c() => Err(LabError::Failed("interrupted".into())),
    };
    // Put the lab back as it was (or away).
    let cleanup = match after {
        After::Leave => set_policies(&mut lab, &own).await,
        After::Stop => lab.stop_all().await.and_then(|_| {
            lab.st.procs.clear();
            lab.st.settings.policies = own;
            lab.st.save(&lab.layout)
        }),
        After::Remove => match lab.stop_all().await {
            Ok(()) => lab.remove_files(),
            Err(e) => Err(e),
        },
    };
    if let (Err(_), Err(c)) = (&result, &cleanup) {
        say(format!("could not put the lab back as it was: {c}"));
    }
    let cmp = result?;
    cleanup?;
    match args.format {
        Format::Json => outln!(
            "{}",
            serde_json::to_string_pretty(&cmp).unwrap_or_else(|_| "{}".into())
        ),
        Format::Table => super::out(cmp.render()),
    }
    let misses = cmp.misses(args.max_failover.map(|s| s * 1000.0), args.max_lost);
    if misses.is_empty() {
        Ok(())
    } else {
        Err(LabError::Failed(format!("compare: {}", misses.join("; "))))
    }
}

async fn compare(
    lab: &mut Lab,
    args: &CompareArgs,
    policies: &[(String, Vec<String>)],
) -> Result<Comparison, LabError> {
    if lab.st.settings.nodes < 2 {
        return Err(LabError::Usage(format!(
            "the lab in {} has {} node; a failover needs 2 or more (regent lab up --nodes 3)",
            lab.layout.dir.display(),
            lab.st.settings.nodes
        )));
    }
    let source = args.opts.policies_dir.as_deref();
    if let Some(src) = source {
        ops::copy_policies(src, &lab.layout.policies())?;
    }
    let named: Vec<String> = policies.iter().flat_map(|(_, l)| l.clone()).collect();
    ops::check_policies(&named, &lab.layout.policies(), source)?;
    ops::load_policies(&named, &lab.layout.policies())?;
    let own = lab.st.settings.policies.clone();
    let mut results: BTreeMap<usize, Vec<RunResult>> = BTreeMap::new();
    let interval = Duration::from_millis(args.write_interval_ms);
    for run in 1..=args.runs {
        for (k, (name, list)) in policies.iter().enumerate() {
            say(format!("run {run}/{}, policy {name}", args.runs));
            let r = one_run(lab, list, args.fault, run, interval).await?;
            say(match &r.error {
                Some(e) => format!("  {e}"),
                None => format!(
                    "  {} → {}: failover {}, longest write gap {}, {} of {} acknowledged writes lost, {}",
                    r.old_leader,
                    r.winner.as_deref().unwrap_or("?"),
                    r.failover_ms.map_or("-".into(), secs),
                    r.longest_gap_ms.map_or("-".into(), secs),
                    r.lost_writes,
                    r.acked_writes,
                    if r.split_brain.is_empty() {
                        "no split brain".to_string()
                    } else {
                        format!("{} split-brain windows", r.split_brain.len())
                    }
                ),
            });
            results.entry(k).or_default().push(r);
        }
    }
    // Leave the cluster whole: every node back.
    ready(lab, &own).await?;
    let mut settings = serde_json::to_value(&lab.st.settings).unwrap_or(Value::Null);
    if let Value::Object(m) = &mut settings {
        m.remove("policies");
    }
    Ok(Comparison {
        fault: args.fault,
        runs_per_policy: args.runs,
        lab: json!({"dir": lab.layout.dir, "settings": settings}),
        policies: policies
            .iter()
            .enumerate()
            .map(|(k, (name, _))| PolicyResult::of(name, results.remove(&k).unwrap_or_default()))
            .collect(),
    })
}

/// Run every node under `list`: rewrite the configurations, SIGHUP, wait until each node's
/// status document names these policies.
async fn set_policies(lab: &mut Lab, list: &[String]) -> Result<(), LabError> {
    let want = if list.is_empty() {
        spec::BUILTIN.to_string()
    } else {
        list.join(",")
    };
    let n = lab.st.settings.nodes;
    let serving = |lab: &Lab, views: &[observe::NodeReport]| {
        (0..n).all(|i| {
            !lab.node_proc(i).is_some_and(|p| p.alive())
                || views[i].policies().as_deref() == Some(want.as_str())
        })
    };
    let views = lab.views().await;
    if lab.st.settings.policies == list && serving(lab, &views) {
        return Ok(());
    }
    let old = std::mem::replace(&mut lab.st.settings.policies, list.to_vec());
    if let Err(e) = apply_policies(lab, &views).await {
        // Every node back on the old list: a node that refused keeps it anyway.
        lab.st.settings.policies = old;
        let _ = apply_policies(lab, &views).await;
        return Err(e);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let lab_ref: &Lab = lab;
    lab_ref
        .wait_until(deadline, &format!("every node to run {want}"), |views| {
            serving(lab_ref, views).then_some(())
        })
        .await
}

/// Write every node's configuration from the lab's settings and have each running node
/// reload it (`POST /reload`, which answers once the node has loaded the policies, or why
/// it refused them). A node that is not up yet reads the file when it starts.
async fn apply_policies(lab: &Lab, views: &[observe::NodeReport]) -> Result<(), LabError> {
    lab.st.save(&lab.layout)?;
    for i in 0..lab.st.settings.nodes {
        lab.write_config(i)?;
    }
    for (i, view) in views.iter().enumerate() {
        if view.doc.is_none() || !lab.node_proc(i).is_some_and(|p| p.alive()) {
            continue;
        }
        let (status, text) = lab.reload(i).await?;
        if status >= 400 {
            return Err(LabError::Failed(format!(
                "{} refused the policies {}: {text}; `regent policy check {}/NAME.toml` shows what is wrong with a policy",
                node_name(i),
                lab.st.settings.policies.join(","),
                lab.layout.policies().display()
            )));
        }
    }
    Ok(())
}

/// Every node running under `list`, node1 leading, every replica streaming.
async fn ready(lab: &mut Lab, list: &[String]) -> Result<usize, LabError> {
    set_policies(lab, list).await?;
    for i in 0..lab.st.settings.nodes {
        if !lab.node_proc(i).is_some_and(|p| p.alive()) {
            lab.stop_node(i, Duration::ZERO).await?;
            lab.start_node(i)?;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    let leader = lab.wait_healthy(deadline).await?;
    if leader == 0 {
        return Ok(0);
    }
    if lab.st.settings.synchronous_mode && !lab.views().await[0].sync_standby() {
        // Only the synchronous standby may take over.
        say(format!(
            "  synchronous mode: node1 is not the synchronous standby, so this run starts with {} leading",
            node_name(leader)
        ));
        return Ok(leader);
    }
    // Back to node1 leading, so that every run starts alike.
    let mut inj = fault::inject(lab, Kind::Switchover { candidate: Some(0) }, Some(leader)).await;
    if inj.is_err() {
        // A node that just rejoined may not count as a candidate yet: once more, a bit later.
        tokio::time::sleep(Duration::from_secs(2)).await;
        inj = fault::inject(lab, Kind::Switchover { candidate: Some(0) }, Some(leader)).await;
    }
    if let Err(e) = inj {
        say(format!(
            "  could not hand the leadership back to node1 ({e}); this run starts with {} leading",
            node_name(leader)
        ));
    }
    lab.wait_healthy(Instant::now() + Duration::from_secs(60))
        .await
}

async fn one_run(
    lab: &mut Lab,
    list: &[String],
    fault_kind: CompareFault,
    run: usize,
    interval: Duration,
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
        error: None,
    };
    let monitor = Monitor::start(
        (0..ports.len()).map(|i| (node_name(i), ports[i])).collect(),
        pw.clone(),
    );
    let writer = Writer::start(ports.clone(), pw.clone(), run_id, interval);
    // Writes flowing for a second before the fault.
    let warm = Instant::now();
    while writer.acks().len() < 20 || warm.elapsed() < Duration::from_secs(1) {
        if warm.elapsed() > Duration::from_secs(10) {
            writer.finish().await;
            monitor.finish().await;
            return Err(LabError::Failed(format!(
                "the writer got no acknowledged write from {} within 10 s",
                node_name(leader)
            )));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let kind = match fault_kind {
        CompareFault::KillLeader => Kind::Kill,
        CompareFault::StopLeader => Kind::Stop,
        CompareFault::Switchover => Kind::Switchover { candidate: None },
    };
    let inj: Injected = match fault::inject(lab, kind, Some(leader)).await {
        Ok(i) => i,
        Err(e) => {
            writer.finish().await;
            monitor.finish().await;
            result.error = Some(format!("the fault could not be injected: {e}"));
            return Ok(result);
        }
    };
    let deadline = inj.ended + fault::recovery_budget(lab);
    let first = loop {
        if let Some(a) = measure::first_ack_after(&writer.acks(), inj.at, Some(leader)) {
            break Some(a);
        }
        if Instant::now() > deadline {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // Keep writing and probing a second longer: a late second primary would show now.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let acks: Vec<Ack> = writer.finish().await;
    let rounds = monitor.finish().await;
    result.acked_writes = acks.len();
    result.split_brain = measure::split_brain(&rounds, inj.at)
        .iter()
        .map(SplitBrain::from)
        .collect();
    let Some(first) = first else {
        result.error = Some(format!(
            "no node other than {} acknowledged a write within {} s of the fault",
            node_name(leader),
            fault::recovery_budget(lab).as_secs()
        ));
        return Ok(result);
    };
    result.winner = Some(node_name(first.node));
    result.failover_ms = Some(ms(first.at.saturating_duration_since(inj.at)));
    result.longest_gap_ms = measure::longest_gap(&acks, inj.at).map(ms);
    match measure::present_ids(ports[first.node], &pw, run_id).await {
        Ok(present) => {
            let lost = measure::lost(&acks, &present);
            result.lost_writes = lost.len();
            result.lost_ids = lost.into_iter().take(20).collect();
        }
        Err(e) => {
            result.error = Some(format!(
                "cannot read the writes back from {}: {e}",
                node_name(first.node)
            ));
        }
    }
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(n: usize, failover: f64, winner: &str, lost: usize) -> RunResult {
        RunResult {
            run: n,
            old_leader: "node1".into(),
            winner: Some(winner.into()),
            failover_ms: Some(failover),
            longest_gap_ms: Some(failover + 15.0),
            acked_writes: 1000,
            lost_writes: lost,
            lost_ids: (1..=lost as i64).collect(),
            split_brain: Vec::new(),
            error: None,
        }
    }

    #[test]
    fn a_policy_summary_takes_median_and_max_over_its_good_runs() {
        let mut bad = run(3, 0.0, "x", 0);
        bad.error = Some("no node other than node1 acknowledged a write".into());
        bad.winner = None;
        bad.failover_ms = None;
        bad.longest_gap_ms = None;
        bad.split_brain = vec![SplitBrain {
            from_ms: 100.0,
            to_ms: 250.0,
            nodes: vec!["node1".into(), "node2".into()],
        }];
        let p = PolicyResult::of(
            "zone-aware",
            vec![
                run(1, 10_900.0, "node3", 0),
                run(2, 11_100.0, "node3", 2),
                bad,
            ],
        );
        assert_eq!(
            p.failover_ms,
            Some(Spread {
                median: 11_000.0,
                max: 11_100.0
            })
        );
        assert_eq!(p.acked_writes, 2000);
        assert_eq!((p.lost_writes, p.lost_writes_max), (2, 2));
        assert_eq!((p.split_brain_windows, p.split_brain_ms_max), (1, 150.0));
        assert_eq!(p.winners, BTreeMap::from([("node3".to_string(), 2)]));
        assert_eq!(p.failed_runs, 1);

        let cmp = Comparison {
            fault: CompareFault::KillLeader,
            runs_per_policy: 3,
            lab: json!({}),
            policies: vec![
                p,
                PolicyResult::of("builtin", vec![run(1, 10_500.0, "node2", 0)]),
            ],
        };
        let text = cmp.render();
        assert!(
            text.starts_with("+ kill-leader, 3 runs per policy "),
            "{text}"
        );
        assert!(
            text.contains("| zone-aware |  2/3 |       11.00 s / 11.10 s |"),
            "{text}"
        );
        assert!(text.contains(" 2 of 2000 |"), "{text}");
        assert!(text.contains("1 (longest 0.15 s)"), "{text}");
        assert!(text.contains("| node3 ×2 "), "{text}");
        assert!(
            text.contains("zone-aware run 3: no node other than node1"),
            "{text}"
        );
        assert!(
            text.contains("zone-aware run 2: lost acknowledged ids [1, 2]"),
            "{text}"
        );
        let v = serde_json::to_value(&cmp).expect("json");
        assert_eq!(v["fault"], "kill-leader");
        assert_eq!(v["policies"][1]["policy"], "builtin");
        assert_eq!(v["policies"][0]["failover_ms"]["median"], 11_000.0);
        assert_eq!(v["policies"][0]["runs"][2]["winner"], Value::Null);
        assert_eq!(v["policies"][0]["winners"]["node3"], 2);
    }

    #[test]
    fn misses_name_the_run_and_the_target() {
        let mut slow = run(2, 12_000.0, "node2", 3);
        slow.split_brain = vec![SplitBrain {
            from_ms: 0.0,
            to_ms: 50.0,
            nodes: vec!["node1".into(), "node2".into()],
        }];
        let cmp = Comparison {
            fault: CompareFault::KillLeader,
            runs_per_policy: 2,
            lab: json!({}),
            policies: vec![PolicyResult::of(
                "builtin",
                vec![run(1, 10_000.0, "node2", 0), slow],
            )],
        };
        assert!(cmp.misses(None, None) == ["builtin run 2 had a split brain"]);
        assert_eq!(
            cmp.misses(Some(11_000.0), Some(0)),
            [
                "builtin run 2 had a split brain",
                "builtin run 2: failover 12.00 s exceeds --max-failover 11.00 s",
                "builtin run 2: 3 acknowledged writes lost, more than --max-lost 0",
            ]
        );
    }

    #[test]
    fn compared_policies_are_names_or_builtin_each_once() {
        let p = |v: &[&str]| parse_policies(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(
            p(&["builtin", "zone-aware"]).expect("ok"),
            vec![
                ("builtin".to_string(), vec![]),
                ("zone-aware".to_string(), vec!["zone-aware".to_string()])
            ]
        );
        assert!(
            p(&["zone-aware", "zone-aware"])
                .expect_err("twice")
                .to_string()
                .contains("named twice")
        );
        assert!(p(&[]).is_err());
        assert!(p(&["a/b"]).is_err());
    }
}
