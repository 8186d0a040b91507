//! One run's timeline as an inline SVG: one `<g class="lane" data-node=…>` per node (its
//! states as coloured stretches, a gold band while it holds the leader key), the fault window,
//! a dashed line per decision phase, and one `<g class="event">` mark per timeline event,
//! over an axis in seconds relative to the fault. Hovering a stretch or a mark shows what it
//! is (`<title>`; no script).

use super::super::timeline::Timeline;
use super::esc;

const WIDTH: f64 = 960.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;
/// Room above the lanes for the phases' labels (a row each).
const TOP: f64 = 64.0;
const LANE: f64 = 24.0;
const GAP: f64 = 8.0;
/// Room below the lanes for the axis.
const AXIS: f64 = 28.0;

/// The time span shown and the mapping to x.
struct Scale {
    from: f64,
    to: f64,
}

impl Scale {
    fn of(t: &Timeline) -> Scale {
        let from = t.from_ms.min(0.0);
        let to = t.to_ms.max(from + 1000.0);
        Scale { from, to }
    }

    fn x(&self, ms: f64) -> f64 {
        let f = ((ms - self.from) / (self.to - self.from)).clamp(0.0, 1.0);
        LEFT + f * (WIDTH - LEFT - RIGHT)
    }

    /// Tick positions (ms): a round step giving at most a dozen ticks.
    fn ticks(&self) -> Vec<f64> {
        let span = self.to - self.from;
        let step = [
            100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0, 10_000.0, 20_000.0, 30_000.0, 60_000.0,
        ]
        .into_iter()
        .find(|s| span / s <= 12.0)
        .unwrap_or(120_000.0);
        let mut t = (self.from / step).ceil() * step;
        let mut out = Vec::new();
        while t <= self.to + 1e-9 {
            out.push(t);
            t += step;
        }
        out
    }
}

fn lane_y(i: usize) -> f64 {
    TOP + i as f64 * (LANE + GAP)
}

/// The SVG of `t`; `id` tells runs apart (`data-run`).
pub(super) fn svg(t: &Timeline, id: &str) -> String {
    let s = Scale::of(t);
    let n = t.nodes.len();
    let bottom = lane_y(n) - GAP;
    let height = bottom + AXIS;
    let mut out = format!(
        r#"<svg class="timeline" data-run="{}" xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}">"#,
        esc(id)
    );
    // The axis and its grid.
    out.push_str(r#"<g class="axis">"#);
    for tick in s.ticks() {
        let x = s.x(tick);
        out.push_str(&format!(
            r#"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{bottom:.1}" stroke-opacity=".4"/><text x="{x:.1}" y="{:.1}" text-anchor="middle">{:+.1} s</text>"#,
            bottom + 14.0,
            // No "-0.0".
            tick / 1000.0 + 0.0
        ));
    }
    out.push_str("</g>");
    // The fault window, behind the lanes' marks.
    let (x0, x1) = (s.x(0.0), s.x(t.fault.ended_ms));
    out.push_str(&format!(
        r#"<rect class="fault-window" x="{x0:.1}" y="{:.1}" width="{:.1}" height="{:.1}"><title>the fault: {}</title></rect>"#,
        TOP - 4.0,
        (x1 - x0).max(2.0),
        bottom - TOP + 8.0,
        esc(&t.fault.what)
    ));
    for (i, lane) in t.nodes.iter().enumerate() {
        let y = lane_y(i);
        out.push_str(&format!(
            r#"<g class="lane" data-node="{name}"><text x="{:.1}" y="{:.1}" text-anchor="end">{name}</text>"#,
            LEFT - 6.0,
            y + LANE / 2.0 + 4.0,
            name = esc(&lane.node)
        ));
        for seg in &lane.segments {
            let (a, b) = (s.x(seg.from_ms), s.x(seg.to_ms));
            out.push_str(&format!(
                r#"<rect class="seg {w}" x="{a:.1}" y="{y:.1}" width="{:.1}" height="{LANE}"><title>{} {w} from {:+.2} s to {:+.2} s</title></rect>"#,
                (b - a).max(0.5),
                esc(&lane.node),
                seg.from_ms / 1000.0,
                seg.to_ms / 1000.0,
                w = seg.state.word()
            ));
        }
        for k in &lane.leader_key {
            let (a, b) = (s.x(k.from_ms), s.x(k.to_ms));
            out.push_str(&format!(
                r#"<rect class="key" x="{a:.1}" y="{y:.1}" width="{:.1}" height="5"><title>{} holds the leader key from {:+.2} s to {:+.2} s</title></rect>"#,
                (b - a).max(0.5),
                esc(&lane.node),
                k.from_ms / 1000.0,
                k.to_ms / 1000.0
            ));
        }
        out.push_str("</g>");
    }
    out.push_str(&phases(t, &s, bottom));
    out.push_str(&events(t, &s));
    out.push_str(&format!(
        r#"<line class="zero" x1="{x0:.1}" y1="{:.1}" x2="{x0:.1}" y2="{bottom:.1}"/></svg>"#,
        TOP - 4.0
    ));
    out.push('\n');
    out
}

/// A dashed line and a label per phase that happened.
fn phases(t: &Timeline, s: &Scale, bottom: f64) -> String {
    let p = &t.phases;
    let list = [
        ("detected", p.detected_ms),
        ("chosen", p.candidate_chosen_ms),
        ("key taken", p.key_taken_ms),
        ("promoted", p.promoted_ms),
        ("first write", p.first_write_ms),
    ];
    let mut out = String::new();
    for (k, (name, at)) in list
        .iter()
        .filter_map(|(n, v)| v.map(|v| (*n, v)))
        .enumerate()
    {
        let x = s.x(at);
        let (lx, anchor) = if x > WIDTH - 140.0 {
            (x - 3.0, "end")
        } else {
            (x + 3.0, "start")
        };
        out.push_str(&format!(
            r#"<g class="phase" data-phase="{name}"><line x1="{x:.1}" y1="{:.1}" x2="{x:.1}" y2="{bottom:.1}"/><text x="{lx:.1}" y="{:.1}" text-anchor="{anchor}">{name} {:+.2} s</text><title>{name} at {:+.3} s</title></g>"#,
            10.0 + k as f64 * 11.0 - 4.0,
            10.0 + k as f64 * 11.0,
            at / 1000.0,
            at / 1000.0
        ));
    }
    out
}

/// One mark per event, on its node's lane (a cluster-wide event above the lanes); marks
/// closer than a few pixels are stacked so that each stays visible.
fn events(t: &Timeline, s: &Scale) -> String {
    let mut out = String::new();
    let mut last: Vec<(f64, usize)> = vec![(f64::NEG_INFINITY, 0); t.nodes.len() + 1];
    for e in &t.events {
        let lane = e
            .node
            .as_ref()
            .and_then(|n| t.nodes.iter().position(|l| &l.node == n));
        let slot = lane.unwrap_or(t.nodes.len());
        let x = s.x(e.at_ms);
        let level = if x - last[slot].0 < 8.0 {
            last[slot].1 + 1
        } else {
            0
        };
        last[slot] = (x, level);
        let centre = match lane {
            Some(i) => lane_y(i) + LANE / 2.0,
            None => TOP - 8.0,
        };
        let y = centre + ((level % 3) as f64 - 1.0) * if level == 0 { 0.0 } else { 7.0 };
        out.push_str(&format!(
            r#"<g class="event {kind}" data-kind="{kind}" data-node="{node}"><title>{:+.3} s {node}: {text}</title><path d="M{x:.1},{:.1} l5,5 l-5,5 l-5,-5 z"/></g>"#,
            e.at_ms / 1000.0,
            y - 5.0,
            kind = e.kind,
            node = esc(e.node.as_deref().unwrap_or("cluster")),
            text = esc(&e.text)
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::super::timeline::{Event, FaultMark, Lane, NodeState, Phases, Segment};
    use super::*;

    #[test]
    fn one_lane_per_node_one_mark_per_event_and_names_escaped() {
        let lane = |n: &str| Lane {
            node: n.into(),
            segments: vec![Segment {
                from_ms: -500.0,
                to_ms: 2000.0,
                state: NodeState::ReadOnly,
            }],
            leader_key: vec![],
        };
        let ev = |ms: f64, node: Option<&str>| Event {
            at_ms: ms,
            node: node.map(str::to_string),
            kind: "role",
            text: "role <a> & b".into(),
        };
        let t = Timeline {
            fault: FaultMark {
                name: "kill-leader".into(),
                what: "SIGKILL".into(),
                target: None,
                wall: "2026-05-01T08:00:00+00:00".into(),
                ended_ms: 0.0,
            },
            from_ms: -500.0,
            to_ms: 2000.0,
            nodes: vec![lane("node1"), lane("n<2>")],
            events: vec![
                ev(0.0, Some("node1")),
                ev(1.0, Some("node1")),
                ev(2.0, None),
                ev(900.0, Some("n<2>")),
            ],
            phases: Phases {
                promoted_ms: Some(800.0),
                ..Phases::default()
            },
            probe_rounds: 0,
            split_brain_rounds: 0,
            election: None,
        };
        let svg = svg(&t, "x");
        assert_eq!(svg.matches(r#"<g class="lane""#).count(), 2);
        assert_eq!(svg.matches(r#"<g class="event"#).count(), 4);
        assert!(svg.contains(r#"data-node="n&lt;2&gt;""#), "{svg}");
        assert!(svg.contains("role &lt;a&gt; &amp; b"), "{svg}");
        assert!(!svg.contains("<a>"));
        assert_eq!(svg.matches(r#"<g class="phase""#).count(), 1);
        let ticks = Scale::of(&t).ticks();
        assert_eq!(ticks.first(), Some(&-500.0));
        assert_eq!(ticks.last(), Some(&2000.0));
    }
}
