//! The report of one fault: what was done, when each node stopped or started accepting
//! writes, when the cluster recovered (and how), and any split-brain window.

use super::super::measure::{self, Round};
use super::super::ops::Lab;
use super::super::spec::node_name;
use super::super::state::cmd;
use super::Injected;
use std::time::Instant;

/// The report of one fault: what was done, the writability changes, the outcome.
pub(super) fn report(
    lab: &Lab,
    inj: &Injected,
    rounds: &[Round],
    recovered: Option<(Instant, usize)>,
    leader: Option<usize>,
) -> String {
    let mut out: String = inj
        .notes
        .iter()
        .map(|n| format!("  before: {n}\n"))
        .collect();
    out.push_str(&format!("{}  {}\n", inj.wall, inj.what));
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
