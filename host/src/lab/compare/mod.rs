//! `regent lab compare`: each fault, several times, under each policy, measured.
//!
//! - [`run`]: one run (ready, write, inject, measure).
//! - [`results`]: what the runs measured, summed up per policy and fault; tables and targets.
//!
//! Every run starts from the same place: the policy swapped in on every node (configuration
//! rewritten, SIGHUP, checked through each node's status document), every node running,
//! node1 leading (after a switchover if needed), every replica streaming. Then the writer
//! and the split-brain monitor start, the fault hits the leader, and the run ends one second
//! after a node other than the old leader acknowledged a write. Runs of the policies
//! alternate, so that a drift of the machine (another build, a slow disk) hits them alike.
//!
//! With `--supervisor patroni`, Patroni is measured too, as one more row: after the policies'
//! runs, Patroni takes over every node (see `lab::patroni`), runs every fault `--runs` times
//! the same way (no policy to swap in), and Regent takes the nodes back, also when a run fails.

mod results;
mod run;

use super::fault::{self, Kind};
use super::observe;
use super::ops::{self, Lab};
use super::patroni::{self, Supervisor};
use super::progress::Progress;
use super::report::{self, ReportPath};
use super::spec::{self, node_name};
use super::{CompareArgs, CompareFault, Format, LabError, say};
use results::secs;
pub(crate) use results::{Comparison, FaultResult, PolicyResult, RunResult};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

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

/// The supervisor to measure beside the policies and its version, checked before anything
/// starts: Patroni must be there and run, and a lab compare starts gets Patroni's least ttl
/// unless one is given.
fn baseline(
    args: &mut CompareArgs,
    policies: &[(String, Vec<String>)],
    dir: &Path,
) -> Result<Option<(Supervisor, String)>, LabError> {
    if args.supervisor.is_none() {
        if let Some(p) = &args.patroni_bin {
            return Err(LabError::Usage(format!(
                "--patroni-bin {}: the Patroni program is for --supervisor patroni; add that, or leave --patroni-bin out",
                p.display()
            )));
        }
        return Ok(None);
    }
    if policies.iter().any(|(n, _)| n == "patroni") {
        return Err(LabError::Usage(
            "--policies patroni: with --supervisor patroni the row \"patroni\" is Patroni itself; leave the policy out or rename it".into(),
        ));
    }
    let found = patroni::find(args.patroni_bin.as_deref())?;
    if !dir.join("lab.json").exists() {
        args.opts.ttl.get_or_insert(patroni::MIN_TTL);
        patroni::check_timing(
            args.opts.ttl,
            args.opts.retry_timeout,
            &format!(
                "give --ttl {} or more and --retry-timeout {} or more (or leave them out)",
                patroni::MIN_TTL,
                patroni::MIN_RETRY_TIMEOUT
            ),
        )?;
    }
    Ok(Some(found))
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
pub(crate) async fn run(dir: &Path, mut args: CompareArgs) -> Result<(), LabError> {
    let policies = parse_policies(&args.policies)?;
    if let Some(f) = args
        .faults
        .iter()
        .enumerate()
        .find_map(|(i, f)| args.faults[..i].contains(f).then_some(f))
    {
        return Err(LabError::Usage(format!(
            "--faults: {} is named twice; name each fault once (use --runs for more runs)",
            f.name()
        )));
    }
    if args.faults.contains(&super::CompareFault::Partition) {
        fault::check_root("--faults partition")?;
    }
    if let Some(s) = args.fault_seconds
        && !(s.is_finite() && s > 0.0 && s <= 3600.0)
    {
        return Err(LabError::Usage(format!(
            "--fault-seconds {s}: give more than 0 and at most 3600 seconds, e.g. --fault-seconds 15"
        )));
    }
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
    let baseline = baseline(&mut args, &policies, dir)?;
    let report_to = args.report.as_deref().map(ReportPath::check).transpose()?;
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
            if baseline.is_some() {
                patroni::check_settings(&lab.st.settings, dir)?;
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
            if baseline.is_some() {
                patroni::check_settings(&lab.st.settings, dir)?;
            }
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
    let mut done = Done::new();
    let result = tokio::select! {
        r = compare(&mut lab, &args, &policies, baseline.as_ref(), &mut done) => r,
        _ = tokio::signal::ctrl_c() => Err(LabError::Failed("interrupted".into())),
    };
    // The runs completed before an error or Ctrl-C still make a report.
    let partial = match (&result, &report_to) {
        (Err(_), Some(_)) if !done.is_empty() => {
            let runs = done.values().map(Vec::len).sum::<usize>();
            Some((
                assemble(&lab, &args, &policies, baseline.as_ref(), done),
                runs,
            ))
        }
        _ => None,
    };
    // Put the lab back as it was (or away).
    let cleanup = match after {
        // Regent back on every node (if Patroni was left on them), with the lab's policies.
        After::Leave => match lab.use_supervisor(&Supervisor::Regent).await {
            Ok(()) => set_policies(&mut lab, &own).await,
            Err(e) => Err(e),
        },
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
    if let (Some((cmp, runs)), Some(r)) = (&partial, &report_to) {
        let total =
            args.faults.len() * args.runs * (policies.len() + usize::from(baseline.is_some()));
        match r.write(&report::compare_page(cmp, Some((*runs, total)))) {
            Ok(()) => say(format!(
                "the report of the {} completed is in {}",
                if *runs == 1 {
                    "run".to_string()
                } else {
                    format!("{runs} runs")
                },
                r.path().display()
            )),
            Err(e) => say(e),
        }
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
    if let Some(r) = &report_to {
        r.write(&report::compare_page(&cmp, None))?;
        say(format!("the report is in {}", r.path().display()));
    }
    let misses = cmp.misses(args.max_failover.map(|s| s * 1000.0), args.max_lost);
    if misses.is_empty() {
        Ok(())
    } else {
        Err(LabError::Failed(format!("compare: {}", misses.join("; "))))
    }
}

/// The runs measured so far, by (fault, row) index: the policies' rows, then the baseline's.
type Done = BTreeMap<(usize, usize), Vec<RunResult>>;

async fn compare(
    lab: &mut Lab,
    args: &CompareArgs,
    policies: &[(String, Vec<String>)],
    baseline: Option<&(Supervisor, String)>,
    results: &mut Done,
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
    let rows = policies.len() + usize::from(baseline.is_some());
    let mut progress = Progress::new(args.faults.len() * args.runs * rows);
    for (f, &fault) in args.faults.iter().enumerate() {
        for run in 1..=args.runs {
            for (k, (name, list)) in policies.iter().enumerate() {
                let r = measured(
                    lab,
                    list,
                    (fault, name),
                    (run, args.runs),
                    args,
                    &mut progress,
                )
                .await?;
                results.entry((f, k)).or_default().push(r);
            }
        }
    }
    if let Some((sup, _)) = baseline {
        let k = policies.len();
        let block = baseline_runs(lab, args, sup, &mut progress, |f, r| {
            results.entry((f, k)).or_default().push(r)
        })
        .await;
        // Regent takes the nodes back, also after a failed run.
        let back = lab.use_supervisor(&Supervisor::Regent).await;
        block?;
        back?;
    }
    drop(progress);
    // Leave the cluster whole: every node back.
    ready(lab, &own).await?;
    Ok(assemble(
        lab,
        args,
        policies,
        baseline,
        std::mem::take(results),
    ))
}

/// The comparison of the runs in `results`.
fn assemble(
    lab: &Lab,
    args: &CompareArgs,
    policies: &[(String, Vec<String>)],
    baseline: Option<&(Supervisor, String)>,
    mut results: Done,
) -> Comparison {
    let mut names: Vec<&str> = policies.iter().map(|(n, _)| n.as_str()).collect();
    if let Some((sup, _)) = baseline {
        names.push(sup.name());
    }
    let mut settings = serde_json::to_value(&lab.st.settings).unwrap_or(Value::Null);
    if let Value::Object(m) = &mut settings {
        m.remove("policies");
    }
    let mut about = json!({"dir": lab.layout.dir, "settings": settings});
    if let Some((_, version)) = baseline {
        about["patroni"] = version.as_str().into();
    }
    Comparison {
        runs_per_policy: args.runs,
        lab: about,
        faults: args
            .faults
            .iter()
            .enumerate()
            .map(|(f, &fault)| FaultResult {
                fault,
                policies: names
                    .iter()
                    .enumerate()
                    .map(|(k, name)| PolicyResult {
                        baseline: k >= policies.len(),
                        ..PolicyResult::of(name, results.remove(&(f, k)).unwrap_or_default())
                    })
                    .collect(),
            })
            .collect(),
    }
}

/// One run of `fault` under the policy list `list`, with its progress on stderr.
async fn measured(
    lab: &mut Lab,
    list: &[String],
    (fault, label): (CompareFault, &str),
    (run, runs): (usize, usize),
    args: &CompareArgs,
    progress: &mut Progress,
) -> Result<RunResult, LabError> {
    progress.begin(fault.name(), label, run, runs);
    let interval = Duration::from_millis(args.write_interval_ms);
    // How long freeze-leader, freeze-etcd and partition last: by default long enough that
    // the leader's lease expires.
    let seconds = Duration::from_secs_f64(
        args.fault_seconds
            .unwrap_or((lab.st.settings.ttl + lab.st.settings.loop_wait + 5) as f64),
    );
    let r = run::one_run(lab, list, fault, run, interval, seconds).await?;
    progress.end();
    say(summary(&r));
    Ok(r)
}

/// The baseline's block: `sup` takes over the nodes, then every fault runs `--runs` times;
/// `record(fault index, run)` keeps each run. The caller gives the nodes back to Regent.
async fn baseline_runs(
    lab: &mut Lab,
    args: &CompareArgs,
    sup: &Supervisor,
    progress: &mut Progress,
    mut record: impl FnMut(usize, RunResult),
) -> Result<(), LabError> {
    lab.use_supervisor(sup).await?;
    for (f, &fault) in args.faults.iter().enumerate() {
        for run in 1..=args.runs {
            let r = measured(
                lab,
                &[],
                (fault, sup.name()),
                (run, args.runs),
                args,
                progress,
            )
            .await?;
            record(f, r);
        }
    }
    Ok(())
}

/// One run in a line, for the progress on stderr.
fn summary(r: &RunResult) -> String {
    match &r.error {
        Some(e) => format!("  {e}"),
        None => format!(
            "  {} → {}: failover {}, longest write gap {}, {} of {} acknowledged writes lost, {}{}",
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
            },
            r.note.as_ref().map_or(String::new(), |n| format!("; {n}"))
        ),
    }
}

/// Run every node under `list`: rewrite the configurations, SIGHUP, wait until each node's
/// status document names these policies.
async fn set_policies(lab: &mut Lab, list: &[String]) -> Result<(), LabError> {
    if lab.st.supervisor != Supervisor::Regent {
        // Another supervisor runs the nodes: it has no policies to swap in.
        return Ok(());
    }
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
pub(super) async fn ready(lab: &mut Lab, list: &[String]) -> Result<usize, LabError> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
