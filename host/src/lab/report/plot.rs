//! Per fault: failover time and write gap per policy as strip plots (one row per policy, every
//! run a dot, the median a bar), and the table of each run's acknowledged writes, writes lost
//! and split-brain rounds.

use super::super::compare::{FaultResult, PolicyResult, RunResult};
use super::{esc, secs};

const WIDTH: f64 = 460.0;
const LEFT: f64 = 110.0;
const RIGHT: f64 = 20.0;
const ROW: f64 = 26.0;

/// The strip plot of one measure (`pick`) over the policies.
fn strip(title: &str, policies: &[PolicyResult], pick: fn(&RunResult) -> Option<f64>) -> String {
    let values: Vec<f64> = policies
        .iter()
        .flat_map(|p| p.runs.iter().filter_map(pick))
        .collect();
    let max = values.iter().copied().fold(0.0, f64::max).max(100.0) * 1.1;
    let x = |ms: f64| LEFT + ms / max * (WIDTH - LEFT - RIGHT);
    let height = 30.0 + policies.len() as f64 * ROW + 24.0;
    let bottom = 30.0 + policies.len() as f64 * ROW;
    let mut out = format!(
        r#"<svg class="strip" xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}"><text x="{LEFT}" y="16">{}</text>"#,
        esc(title)
    );
    for k in 0..=4 {
        let ms = max * f64::from(k) / 4.0;
        out.push_str(&format!(
            r#"<g class="grid"><line x1="{0:.1}" y1="24" x2="{0:.1}" y2="{bottom:.1}"/></g><text x="{0:.1}" y="{1:.1}" text-anchor="middle">{2}</text>"#,
            x(ms),
            bottom + 14.0,
            secs(ms)
        ));
    }
    for (i, p) in policies.iter().enumerate() {
        let y = 30.0 + i as f64 * ROW + ROW / 2.0;
        out.push_str(&format!(
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
            LEFT - 8.0,
            y + 4.0,
            esc(&p.policy)
        ));
        let mut mine: Vec<(usize, f64)> = p
            .runs
            .iter()
            .filter_map(|r| pick(r).map(|v| (r.run, v)))
            .collect();
        mine.sort_by(|a, b| a.1.total_cmp(&b.1));
        if let Some(m) =
            super::super::measure::spread(&mine.iter().map(|v| v.1).collect::<Vec<_>>())
        {
            let mx = x(m.median);
            out.push_str(&format!(
                r#"<line class="median" x1="{mx:.1}" y1="{:.1}" x2="{mx:.1}" y2="{:.1}"><title>median {}</title></line>"#,
                y - 9.0,
                y + 9.0,
                secs(m.median)
            ));
        }
        // Runs with the same value side by side vertically, so every one shows.
        for (k, (run, v)) in mine.iter().enumerate() {
            let dy = ((k % 3) as f64 - 1.0) * 5.0;
            out.push_str(&format!(
                r#"<circle class="run-dot" cx="{:.1}" cy="{:.1}" r="4"><title>{} run {run}: {}</title></circle>"#,
                x(*v),
                y + dy,
                esc(&p.policy),
                secs(*v)
            ));
        }
    }
    out.push_str("</svg>\n");
    out
}

/// The strip plots and the table of one fault.
pub(super) fn fault_summary(f: &FaultResult) -> String {
    let mut out = String::from("<div>");
    out.push_str(&strip(
        "failover: fault → first write acknowledged by another node",
        &f.policies,
        |r| r.failover_ms,
    ));
    out.push_str(&strip(
        "longest write gap around the fault",
        &f.policies,
        |r| r.longest_gap_ms,
    ));
    out.push_str("</div>\n<table><tr><th class=\"l\">policy</th><th>run</th><th class=\"l\">old leader → winner</th><th>failover</th><th>write gap</th><th>acked writes</th><th>acked writes lost</th><th>split-brain rounds</th><th class=\"l\">error</th></tr>\n");
    for p in &f.policies {
        for r in &p.runs {
            out.push_str(&format!(
                "<tr><td class=\"l\">{}</td><td>{}</td><td class=\"l\">{} → {}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"l\">{}</td></tr>\n",
                esc(&p.policy),
                r.run,
                esc(&r.old_leader),
                esc(r.winner.as_deref().unwrap_or("?")),
                r.failover_ms.map_or("-".into(), secs),
                r.longest_gap_ms.map_or("-".into(), secs),
                r.acked_writes,
                r.lost_writes,
                r.timeline
                    .as_ref()
                    .map_or("-".into(), |t| t.split_brain_rounds.to_string()),
                esc(r.error.as_deref().unwrap_or(""))
            ));
        }
    }
    out.push_str("</table>\n");
    out
}
