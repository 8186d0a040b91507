//! `--report FILE.html`: one self-contained HTML page (inline CSS and SVG; no script, font or
//! image fetched from anywhere) of a comparison or of one fault.
//!
//! - [`lanes`]: one run's timeline as an SVG: a lane per node over time, the leader key,
//!   the fault window, the decision phases, every event as a mark.
//! - [`plot`]: per fault, failover time and write gap per policy with every run as a dot; the
//!   table of acknowledged writes lost and split-brain rounds.
//!
//! The path is checked with [`ReportPath::check`] before anything is started (bad input,
//! nothing changed), and the page is written next to it and renamed into place, so a report
//! is never half written. Every text that comes from outside (node and policy names, error
//! messages, election reasons) goes through [`esc`].

mod lanes;
mod plot;

use super::LabError;
use super::compare::Comparison;
use super::timeline::Timeline;
use std::path::{Path, PathBuf};

/// A report file that can be written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ReportPath {
    path: PathBuf,
    tmp: PathBuf,
}

impl ReportPath {
    /// Check that `path` can be written (its directory exists and takes a new file; the file,
    /// if it exists, is a writable file): bad input otherwise.
    pub(crate) fn check(path: &Path) -> Result<ReportPath, LabError> {
        let shown = path.display();
        let usage = |problem: String| LabError::Usage(format!("--report {shown}: {problem}"));
        if path.is_dir() {
            return Err(usage(format!(
                "is a directory; give a file name in it, e.g. --report {}",
                path.join("report.html").display()
            )));
        }
        let name = path
            .file_name()
            .ok_or_else(|| usage("names no file; give a file name, e.g. report.html".into()))?;
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        if !dir.is_dir() {
            return Err(usage(format!(
                "the directory {} does not exist; create it first or give a file in an existing directory",
                dir.display()
            )));
        }
        let tmp = dir.join(format!(".{}.tmp", name.to_string_lossy()));
        std::fs::write(&tmp, b"")
            .and_then(|_| std::fs::remove_file(&tmp))
            .map_err(|e| {
                usage(format!(
                    "cannot create a file in {} ({e}); give a path in a directory you can write to",
                    dir.display()
                ))
            })?;
        if path.exists() {
            std::fs::OpenOptions::new()
                .write(true)
                .open(path)
                .map_err(|e| {
                    usage(format!(
                        "cannot overwrite it ({e}); remove it, make it writable, or give another path"
                    ))
                })?;
        }
        Ok(ReportPath {
            path: path.to_path_buf(),
            tmp,
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Write `html` (next to the file, then renamed into place).
    pub(crate) fn write(&self, html: &str) -> Result<(), LabError> {
        std::fs::write(&self.tmp, html)
            .and_then(|_| std::fs::rename(&self.tmp, &self.path))
            .map_err(|e| {
                let _ = std::fs::remove_file(&self.tmp);
                LabError::Failed(format!(
                    "cannot write the report {}: {e}; the results above are complete, give another --report path next time",
                    self.path.display()
                ))
            })
    }
}

/// `text` safe inside HTML and SVG text and attribute values.
pub(crate) fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Milliseconds as seconds for people: `1.23 s`.
pub(crate) fn secs(ms: f64) -> String {
    format!("{:.2} s", ms / 1000.0)
}

const CSS: &str = r#"
body { font-family: sans-serif; margin: 1.5em; color: #222; max-width: 1100px; }
h1 { font-size: 1.4em; } h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ccc; }
h3 { font-size: 1em; margin-top: 1.5em; }
table { border-collapse: collapse; margin: .5em 0; font-size: .9em; }
th, td { border: 1px solid #ccc; padding: .2em .6em; text-align: right; }
th { background: #f3f3f3; } td.l, th.l { text-align: left; }
.note { color: #555; font-size: .9em; }
.warn { color: #b00020; font-weight: bold; }
svg text { font-family: sans-serif; font-size: 11px; fill: #222; }
svg .axis line, svg .grid line { stroke: #bbb; }
svg .zero { stroke: #b00020; stroke-width: 1.5; }
.writable { fill: #2e9e44; } .read-only { fill: #9dbbe0; }
.down { fill: #a8a8a8; } .fenced { fill: #d9534f; }
.key { fill: #e0a800; } .fault-window { fill: #d9534f; fill-opacity: .12; }
.event path { fill: #fff; stroke: #222; stroke-width: 1.2; }
.event.fault path { fill: #b00020; stroke: #b00020; }
.phase line { stroke: #555; stroke-dasharray: 3 3; }
.run-dot { fill: #3465a4; fill-opacity: .75; } .median { stroke: #222; stroke-width: 2; }
.legend span { display: inline-block; margin-right: 1.2em; font-size: .9em; }
.legend i { display: inline-block; width: 1.2em; height: .8em; margin-right: .3em; vertical-align: middle; }
ul.election { font-size: .9em; }
"#;

/// The legend of the lanes' colours and marks.
fn legend() -> String {
    let item = |class: &str, text: &str| {
        format!(
            r#"<span><i style="background:{class}"></i>{}</span>"#,
            esc(text)
        )
    };
    format!(
        r#"<p class="legend">{}{}{}{}{}{}<span>◇ an event (hover for what)</span><span>┆ a decision phase</span></p>"#,
        item("#2e9e44", "writable (took the probe write)"),
        item("#9dbbe0", "read-only (answered, refused writes)"),
        item(
            "#a8a8a8",
            "down (REST API silent or PostgreSQL not running)"
        ),
        item("#d9534f", "fenced by its guard"),
        item("#e0a800", "holds the leader key"),
        item("rgba(217,83,79,.25)", "fault window"),
    )
}

/// The comparison's lab in a line: `the lab in DIR: 3 nodes, ttl 10 s, …`.
fn lab_line(lab: &serde_json::Value) -> String {
    let st = &lab["settings"];
    let text = text_of;
    format!(
        "the lab in {}: {} nodes, ttl {} s, loop_wait {} s, zones {}, synchronous mode {}",
        text(&lab["dir"]),
        text(&st["nodes"]),
        text(&st["ttl"]),
        text(&st["loop_wait"]),
        text(&st["zones"]),
        if st["synchronous_mode"] == true {
            "on"
        } else {
            "off"
        }
    )
}

/// A JSON value as plain text: a string without quotes, a list comma-separated.
fn text_of(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Array(a) => a.iter().map(text_of).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}

fn page(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{t}</title><style>{CSS}</style></head>\n<body>\n<h1>{t}</h1>\n{body}</body></html>\n",
        t = esc(title)
    )
}

/// The page of a comparison; `interrupted`: the runs done when it was stopped.
pub(crate) fn compare_page(cmp: &Comparison, interrupted: Option<(usize, usize)>) -> String {
    let mut body = String::new();
    body.push_str(&format!(
        "<p class=\"note\">{} run{} per policy; {}. Times are seconds relative to each run's fault.</p>\n",
        cmp.runs_per_policy,
        if cmp.runs_per_policy == 1 { "" } else { "s" },
        esc(&lab_line(&cmp.lab))
    ));
    if let Some((done, total)) = interrupted {
        body.push_str(&format!(
            "<p class=\"warn\">Interrupted: {done} of {total} runs were completed; this report holds those.</p>\n"
        ));
    }
    for f in &cmp.faults {
        body.push_str(&format!("<h2>{}</h2>\n", esc(f.fault.name())));
        body.push_str(&plot::fault_summary(f));
        body.push_str(&legend());
        for p in &f.policies {
            for r in &p.runs {
                let head = format!(
                    "{} · {} · run {}: {} → {}, failover {}, write gap {}",
                    f.fault.name(),
                    p.policy,
                    r.run,
                    r.old_leader,
                    r.winner.as_deref().unwrap_or("?"),
                    r.failover_ms.map_or("-".into(), secs),
                    r.longest_gap_ms.map_or("-".into(), secs)
                );
                body.push_str(&format!("<h3>{}</h3>\n", esc(&head)));
                if let Some(e) = &r.error {
                    body.push_str(&format!("<p class=\"warn\">{}</p>\n", esc(e)));
                }
                match &r.timeline {
                    Some(t) => body.push_str(&timeline_section(
                        t,
                        &format!("{}-{}-{}", f.fault.name(), p.policy, r.run),
                    )),
                    None => body.push_str(
                        "<p class=\"note\">No timeline: the fault was not injected.</p>\n",
                    ),
                }
            }
        }
    }
    page("regent lab compare", &body)
}

/// The page of one fault.
pub(crate) fn fault_page(t: &Timeline) -> String {
    let mut body = format!(
        "<p class=\"note\">{}. Times are seconds relative to the fault.</p>\n",
        esc(&t.fault.what)
    );
    body.push_str(&legend());
    body.push_str(&timeline_section(t, &t.fault.name));
    page(&format!("regent lab fault {}", t.fault.name), &body)
}

/// One run: its lanes, its phases and its election.
fn timeline_section(t: &Timeline, id: &str) -> String {
    let mut s = lanes::svg(t, id);
    let p = &t.phases;
    let cell = |v: Option<f64>| {
        format!(
            "<td>{}</td>",
            v.map_or("-".into(), |ms| format!("{:+.2} s", ms / 1000.0))
        )
    };
    s.push_str(&format!(
        "<table><tr><th>fault</th><th>detected</th><th>candidate chosen</th><th>key taken</th><th>promoted</th><th>first acknowledged write</th><th>probe rounds</th><th>split-brain rounds</th></tr>\
         <tr><td>{}</td>{}{}{}{}{}<td>{}</td><td>{}</td></tr></table>\n",
        esc(&t.fault.wall),
        cell(p.detected_ms),
        cell(p.candidate_chosen_ms),
        cell(p.key_taken_ms),
        cell(p.promoted_ms),
        cell(p.first_write_ms),
        t.probe_rounds,
        t.split_brain_rounds
    ));
    if let Some(e) = &t.election {
        let mut items = format!(
            "<li>{} won ({}), policy {}, recorded by {}</li>",
            esc(&e.election.winner),
            serde_json::to_value(e.election.chosen)
                .ok()
                .and_then(|v| v.as_str().map(esc))
                .unwrap_or_default(),
            esc(&e.election.policy),
            esc(&e.recorded_by)
        );
        for r in &e.election.ranked {
            items.push_str(&format!(
                "<li>ranked {}: {} — {}</li>",
                r.rank,
                esc(&r.member),
                esc(&r.reason)
            ));
        }
        for x in &e.election.excluded {
            items.push_str(&format!(
                "<li>left out: {} — {}</li>",
                esc(&x.member),
                esc(&x.reason)
            ));
        }
        s.push_str(&format!("<ul class=\"election\">{items}</ul>\n"));
    } else {
        s.push_str("<p class=\"note\">No election record decided after the fault was found.</p>\n");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped() {
        assert_eq!(
            esc(r#"<a href="x">&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;&lt;/a&gt;"
        );
    }

    #[test]
    fn a_report_path_is_checked_before_anything_starts() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let ok = ReportPath::check(&tmp.path().join("r.html")).expect("writable");
        assert!(!ok.path().exists(), "the check leaves nothing behind");
        ok.write("<html></html>").expect("write");
        assert_eq!(
            std::fs::read_to_string(ok.path()).expect("read"),
            "<html></html>"
        );
        let e = ReportPath::check(tmp.path()).expect_err("a directory");
        assert!(matches!(e, LabError::Usage(_)));
        assert!(e.to_string().contains("is a directory"), "{e}");
        let e = ReportPath::check(&tmp.path().join("nope/r.html")).expect_err("no dir");
        assert!(e.to_string().contains("does not exist"), "{e}");
        assert!(!tmp.path().join("nope").exists());
    }
}
