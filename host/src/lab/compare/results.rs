//! What `compare` measured: one run, one policy's runs, one fault's policies, the whole
//! comparison; the tables and the list of missed targets.

use super::super::CompareFault;
use super::super::measure::{self, Spread, Window};
use super::super::spec::node_name;
use super::super::timeline::Timeline;
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;

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
    /// What else the run showed: writes never stopped (a freeze or partition shorter than
    /// the lease), why a lagging replica was not promoted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) note: Option<String>,
    /// Why the run measured nothing, if it did not.
    pub(crate) error: Option<String>,
    /// What each node did around the fault (`None`: the fault was not injected).
    pub(crate) timeline: Option<Timeline>,
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

pub(crate) fn ms(d: Duration) -> f64 {
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
    /// The row of another supervisor (`--supervisor patroni`): measured for comparison, so its
    /// split brains and losses are results, not missed targets.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub(crate) baseline: bool,
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
            baseline: false,
            runs,
        }
    }
}

/// One fault's results: each policy's runs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct FaultResult {
    pub(crate) fault: CompareFault,
    pub(crate) policies: Vec<PolicyResult>,
}

/// The whole comparison: every fault, under every policy.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Comparison {
    pub(crate) runs_per_policy: usize,
    pub(crate) lab: Value,
    pub(crate) faults: Vec<FaultResult>,
}

pub(crate) fn secs(v: f64) -> String {
    format!("{:.2} s", v / 1000.0)
}

fn spread_text(s: Option<Spread>) -> String {
    s.map_or("-".into(), |s| {
        format!("{} / {}", secs(s.median), secs(s.max))
    })
}

impl Comparison {
    /// One table per fault, one row per policy, each followed by its runs' errors and lost ids.
    pub(crate) fn render(&self) -> String {
        self.faults
            .iter()
            .map(|f| f.render(self.runs_per_policy))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl FaultResult {
    /// The table: one row per policy.
    fn render(&self, runs_per_policy: usize) -> String {
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
                runs_per_policy,
                if runs_per_policy == 1 { "" } else { "s" }
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
                    out.push_str(&format!(
                        "{} {} run {}: {e}\n",
                        self.fault.name(),
                        p.policy,
                        r.run
                    ));
                }
                if !r.lost_ids.is_empty() {
                    out.push_str(&format!(
                        "{} {} run {}: lost acknowledged ids {:?}{}\n",
                        self.fault.name(),
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
    /// A baseline's row (another supervisor) is measured, not held to the targets.
    pub(crate) fn misses(
        &self,
        max_failover_ms: Option<f64>,
        max_lost: Option<usize>,
    ) -> Vec<String> {
        let mut out = Vec::new();
        for (f, p) in self
            .faults
            .iter()
            .flat_map(|f| f.policies.iter().map(move |p| (f.fault, p)))
            .filter(|(_, p)| !p.baseline)
        {
            for r in &p.runs {
                let run = format!("{} {} run {}", f.name(), p.policy, r.run);
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
            note: None,
            error: None,
            timeline: None,
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
            runs_per_policy: 3,
            lab: json!({}),
            faults: vec![FaultResult {
                fault: CompareFault::KillLeader,
                policies: vec![
                    p,
                    PolicyResult::of("builtin", vec![run(1, 10_500.0, "node2", 0)]),
                ],
            }],
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
            text.contains("kill-leader zone-aware run 3: no node other than node1"),
            "{text}"
        );
        assert!(
            text.contains("kill-leader zone-aware run 2: lost acknowledged ids [1, 2]"),
            "{text}"
        );
        let v = serde_json::to_value(&cmp).expect("json");
        let f = &v["faults"][0];
        assert_eq!(f["fault"], "kill-leader");
        assert_eq!(f["policies"][1]["policy"], "builtin");
        assert_eq!(f["policies"][0]["failover_ms"]["median"], 11_000.0);
        assert_eq!(f["policies"][0]["runs"][2]["winner"], Value::Null);
        assert_eq!(f["policies"][0]["winners"]["node3"], 2);
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
            runs_per_policy: 2,
            lab: json!({}),
            faults: vec![FaultResult {
                fault: CompareFault::KillLeader,
                policies: vec![PolicyResult::of(
                    "builtin",
                    vec![run(1, 10_000.0, "node2", 0), slow],
                )],
            }],
        };
        assert!(cmp.misses(None, None) == ["kill-leader builtin run 2 had a split brain"]);
        // The same runs as another supervisor's baseline row are results, not misses.
        let mut base = cmp.clone();
        base.faults[0].policies[0].baseline = true;
        assert!(base.misses(Some(1.0), Some(0)).is_empty());
        assert_eq!(
            cmp.misses(Some(11_000.0), Some(0)),
            [
                "kill-leader builtin run 2 had a split brain",
                "kill-leader builtin run 2: failover 12.00 s exceeds --max-failover 11.00 s",
                "kill-leader builtin run 2: 3 acknowledged writes lost, more than --max-lost 0",
            ]
        );
    }
}
