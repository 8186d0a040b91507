//! `regent lab` end to end, as an operator runs it: `up` a three-node lab of real etcd,
//! PostgreSQL and `regent` processes, look at it with `status`, crash its leader with
//! `fault kill-leader`, bring the node back, `compare` two policies under a graceful stop,
//! and `down`. Whatever happens, nothing of the lab may be left running afterwards.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

mod support;

use support::REGENT;
use support::lab::{LabDir, lab_processes, stderr};

/// What the lab test wrote for the Chromium test: the directory of `fault.html` and
/// `compare.html`, and the number of timeline events of each run as the JSON gave them (the
/// fault's run, then the comparison's runs in the page's order).
#[derive(Debug, Clone)]
struct Written {
    dir: PathBuf,
    fault_events: usize,
    compare_events: Vec<usize>,
}

/// The hand-over from the lab test to the Chromium test.
static HANDOFF: (Mutex<Option<Result<Written, String>>>, Condvar) =
    (Mutex::new(None), Condvar::new());

fn post(r: Result<Written, String>) {
    if let Ok(mut g) = HANDOFF.0.lock() {
        g.get_or_insert(r);
    }
    HANDOFF.1.notify_all();
}

/// The reports' directory (kept under the target directory, for a look afterwards); on drop
/// without [`Reports::done`] (the lab test failed) the Chromium test is told so.
struct Reports {
    dir: PathBuf,
}

impl Reports {
    fn new() -> Reports {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("local-lab-reports-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("the reports' directory");
        Reports { dir }
    }

    fn join(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The pages are written: hand them over with the events of `fault` and `cmp`.
    fn done(&self, fault: &serde_json::Value, cmp: &serde_json::Value) {
        let events = |t: &serde_json::Value| t["events"].as_array().map_or(0, Vec::len);
        let compare_events = cmp["faults"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|f| f["policies"].as_array().into_iter().flatten())
            .flat_map(|p| p["runs"].as_array().into_iter().flatten())
            .map(|r| events(&r["timeline"]))
            .collect();
        post(Ok(Written {
            dir: self.dir.clone(),
            fault_events: events(fault),
            compare_events,
        }));
    }
}

impl Drop for Reports {
    fn drop(&mut self) {
        post(Err(
            "the lab test failed before it wrote its reports (see its own failure)".into(),
        ));
    }
}

/// `GET path` on 127.0.0.1:`port` (HTTP/1.0): the status and the body.
fn http_get(port: u16, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect to the REST API");
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .expect("timeout");
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").expect("send");
    let mut text = String::new();
    s.read_to_string(&mut text).expect("read the answer");
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (status, body.to_string())
}

/// After the crash of node1, the winner recorded why it won: `regent ctl explain` tells it,
/// `GET /elections/last` serves the same record, and the view it stored, replayed offline
/// with `regent policy eval`, ranks the winner first again.
fn explain_the_failover(lab: &LabDir, st: &serde_json::Value, leader: &str) {
    let ctl = |args: &[&str]| {
        let o = Command::new(REGENT)
            .args(["ctl", "-c"])
            .arg(lab.dir.join("node2.yml"))
            .args(args)
            .output()
            .expect("regent ctl");
        assert!(o.status.success(), "ctl {args:?}: {}", stderr(&o));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let record: serde_json::Value =
        serde_json::from_str(&ctl(&["-f", "json", "explain"])).expect("explain JSON");
    assert_eq!(record["winner"], leader, "{record}");
    assert_eq!(record["chosen"], "failover", "{record}");
    assert_eq!(record["recorded_by"], leader, "{record}");
    assert_eq!(record["ranked"][0]["member"], leader, "{record}");
    assert_eq!(record["view"]["former_leader"], "node1", "{record}");
    assert_eq!(
        record["view"]["former_leader_zone"], "a",
        "node1's zone: {record}"
    );
    for phase in ["leader_lost", "decided", "lock_acquired", "promoted"] {
        assert!(record["phases"][phase].is_string(), "{phase}: {record}");
    }
    let text = ctl(&["explain", "--last"]);
    assert!(
        text.contains(&format!("(failover): {leader} promoted at "))
            && text.contains(&format!("ranked {leader} first: "))
            && text.contains("former leader node1 (zone a)"),
        "{text}"
    );
    // The leader's REST API serves the same record.
    let i = st["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .position(|n| n["name"] == leader)
        .expect("the leader's row");
    let api = st["nodes"][i]["api"].as_str().expect("api URL");
    let port: u16 = api
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("port");
    let (status, body) = http_get(port, "/elections/last");
    assert_eq!(status, 200, "{body}");
    let served: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(served["id"], record["id"]);
    let (status, body) = http_get(port, "/elections");
    assert_eq!(status, 200, "{body}");
    assert!(body.starts_with('['), "{body}");
    assert_eq!(http_get(port, "/elections/0000000000000001").0, 404);
    // Replayed offline, the stored view ranks the winner first again.
    let view = lab.parent().join("view.json");
    std::fs::write(&view, ctl(&["explain", "--view"])).expect("write the view");
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies/patroni-default.toml");
    let o = Command::new(REGENT)
        .args(["policy", "eval"])
        .arg(&manifest)
        .arg("--view")
        .arg(&view)
        .output()
        .expect("regent policy eval");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{out}{}", stderr(&o));
    assert!(out.contains(&format!(" 1. {leader} ")), "{out}");
}

#[test]
fn local_lab_up_fault_compare_down() {
    let lab = LabDir::new("regent-local-lab-");
    let policies = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
    let policies = policies.to_str().expect("path");
    let mut up = vec![
        "up",
        "--ttl",
        "6",
        "--retry-timeout",
        "2",
        "--policies-dir",
        policies,
    ];
    // HAProxy too where it is installed (CI installs it for tests/haproxy.rs).
    let haproxy = regent::lab::procs::which("haproxy").is_some();
    if haproxy {
        up.push("--haproxy");
    }

    // Bad input changes nothing: a directory PostgreSQL's user cannot reach (when root), a
    // non-empty directory that holds no lab.
    if nix::unistd::Uid::effective().is_root() {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(lab.parent(), std::fs::Permissions::from_mode(0o700))
            .expect("chmod");
        let o = lab.run(&up);
        assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
        assert!(stderr(&o).contains("cannot reach"), "{}", stderr(&o));
        assert!(!lab.dir.exists(), "nothing was written");
        std::fs::set_permissions(lab.parent(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
    }
    std::fs::create_dir(&lab.dir).expect("mkdir");
    std::fs::write(lab.dir.join("notes.txt"), "mine").expect("write");
    let o = lab.run(&up);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("is not empty and holds no lab"));
    assert_eq!(
        std::fs::read_to_string(lab.dir.join("notes.txt")).expect("kept"),
        "mine"
    );
    std::fs::remove_dir_all(&lab.dir).expect("rm");

    // Up: node1 bootstraps and leads, the others stream from it.
    let out = lab.ok(&up);
    assert!(out.contains("is up: 3 nodes, node1 leads"), "{out}");
    assert!(out.contains("regent ctl -c "), "{out}");
    let st = lab.status();
    assert_eq!(st["healthy"], true, "{st}");
    assert_eq!(st["leader"], "node1");
    let nodes = st["nodes"].as_array().expect("nodes");
    assert_eq!(nodes.len(), 3);
    for n in nodes {
        assert_eq!(n["process"], "running", "{n}");
        assert!(n["postmaster_pid"].as_i64().is_some(), "{n}");
    }
    assert_eq!(nodes[1]["replication_state"], "streaming");
    // The recorded processes, to check after `down`.
    let mut pids: Vec<i64> = vec![st["etcd"]["process"]["pid"].as_i64().expect("etcd")];
    for n in nodes {
        pids.push(n["pid"].as_i64().expect("pid"));
        pids.push(n["postmaster_pid"].as_i64().expect("postmaster"));
    }
    if haproxy {
        // Writes through HAProxy reach the leader, reads a replica.
        let psql = Path::new(st["settings"]["bin_dir"].as_str().expect("bin_dir")).join("psql");
        let pw = st["password"].as_str().expect("password");
        let ask = |port: &serde_json::Value| {
            let out = Command::new(&psql)
                .args(["-X", "-A", "-t", "-h", "127.0.0.1", "-U", "postgres", "-p"])
                .arg(port.to_string())
                .args(["-c", "SELECT pg_is_in_recovery()"])
                .env("PGPASSWORD", pw)
                .env("PGCONNECT_TIMEOUT", "2")
                .output()
                .expect("psql");
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        };
        let h = &st["haproxy"];
        assert_eq!(h["process"]["state"], "running", "{h}");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
        while ask(&h["write_port"]) != "f" || ask(&h["read_port"]) != "t" {
            assert!(
                std::time::Instant::now() < deadline,
                "HAProxy routes writes to the leader and reads to a replica"
            );
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    }
    // `regent ctl` works with the generated configuration.
    let ctl = Command::new(REGENT)
        .args(["ctl", "-c"])
        .arg(lab.dir.join("node1.yml"))
        .args(["list", "-f", "json"])
        .output()
        .expect("regent ctl");
    assert!(ctl.status.success(), "{}", stderr(&ctl));
    let members: serde_json::Value = serde_json::from_slice(&ctl.stdout).expect("ctl JSON");
    assert_eq!(members.as_array().map(Vec::len), Some(3));

    // A second lab in the same directory is refused.
    let o = lab.run(&up);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("already holds a running lab"),
        "{}",
        stderr(&o)
    );

    // A report path that cannot be written is bad input: refused before anything starts.
    let o = lab.run(&[
        "fault",
        "kill-leader",
        "--report",
        "/nonexistent-dir/r.html",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("does not exist"), "{}", stderr(&o));
    assert_eq!(lab.status()["leader"], "node1", "nothing was done");

    // A host crash of the leader: another node takes over, with no split brain; the run's
    // timeline as JSON and as an HTML report.
    let reports = Reports::new();
    let fault_html = reports.join("fault.html");
    let out = lab.ok(&[
        "fault",
        "kill-leader",
        "--format",
        "json",
        "--report",
        fault_html.to_str().expect("path"),
    ]);
    let fault: serde_json::Value = serde_json::from_str(&out).expect("fault JSON");
    let what = fault["fault"]["what"].as_str().expect("what");
    assert!(what.contains("SIGKILL to node1's process group"), "{what}");
    assert_eq!(fault["split_brain_rounds"], 0, "no split brain: {fault}");
    let st = lab.status();
    let leader = st["leader"].as_str().expect("a leader again");
    assert_ne!(leader, "node1");
    assert_eq!(fault["phases"]["first_write_node"], leader, "{fault}");
    assert_eq!(fault["election"]["winner"], leader, "{fault}");
    let kinds: Vec<&str> = fault["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e["kind"].as_str())
        .collect();
    for k in ["fault", "writes-stopped", "leader-key", "writes-accepted"] {
        assert!(kinds.contains(&k), "a {k} event: {kinds:?}");
    }
    let lanes = fault["nodes"].as_array().expect("lanes");
    assert_eq!(lanes.len(), 3);
    assert_eq!(lanes[0]["segments"][0]["state"], "writable", "{fault}");
    assert_eq!(st["nodes"][0]["process"], "stopped");
    explain_the_failover(&lab, &st, leader);
    let out = lab.ok(&["fault", "restart-node", "1"]);
    assert!(out.contains(&format!("it streams from {leader}")), "{out}");
    let st = lab.status();
    assert_eq!(st["healthy"], true, "{st}");
    pids.push(st["nodes"][0]["pid"].as_i64().expect("new pid"));

    // Compare the built-in rules with zone-aware under a graceful stop of the leader.
    let compare_html = reports.join("compare.html");
    let out = lab.ok(&[
        "compare",
        "--report",
        compare_html.to_str().expect("path"),
        "--policies",
        "builtin,zone-aware",
        "--faults",
        "stop-leader",
        "--runs",
        "1",
        "--format",
        "json",
        // Targets it meets: a graceful stop hands over within a second and loses nothing.
        "--max-failover",
        "5",
        "--max-lost",
        "0",
    ]);
    let cmp: serde_json::Value = serde_json::from_str(&out).expect("compare JSON");
    assert_eq!(cmp["runs_per_policy"], 1);
    assert_eq!(cmp["faults"].as_array().map(Vec::len), Some(1), "{cmp}");
    assert_eq!(cmp["faults"][0]["fault"], "stop-leader");
    let results = cmp["faults"][0]["policies"].as_array().expect("policies");
    assert_eq!(results.len(), 2);
    for (p, name) in results.iter().zip(["builtin", "zone-aware"]) {
        assert_eq!(p["policy"], name);
        assert_eq!(p["failed_runs"], 0, "{p}");
        let r = &p["runs"][0];
        assert_eq!(r["error"], serde_json::Value::Null, "{r}");
        assert_eq!(
            r["old_leader"], "node1",
            "every run starts with node1 leading: {r}"
        );
        assert_ne!(r["winner"], "node1", "{r}");
        assert!(r["acked_writes"].as_u64().expect("acked") > 50, "{r}");
        assert_eq!(r["lost_writes"], 0, "a graceful stop loses no write: {r}");
        assert_eq!(r["split_brain"], serde_json::json!([]), "{r}");
        let failover = r["failover_ms"].as_f64().expect("failover");
        let gap = r["longest_gap_ms"].as_f64().expect("gap");
        assert!(failover > 0.0 && failover < 5000.0, "{r}");
        assert!(gap > 0.0 && gap <= failover + 100.0, "{r}");
        assert_eq!(p["failover_ms"]["median"], r["failover_ms"], "{p}");
    }
    for p in results {
        let t = &p["runs"][0]["timeline"];
        assert_eq!(t["fault"]["name"], "stop-leader", "{t}");
        assert_eq!(t["nodes"].as_array().map(Vec::len), Some(3), "{t}");
        assert!(t["phases"]["first_write_ms"].as_f64().is_some(), "{t}");
        assert!(t["election"]["ranked"][0]["reason"].is_string(), "{t}");
    }
    reports.done(&fault, &cmp);
    // zone-aware keeps the primary in the former leader's zone (node1 and node3: zone a).
    assert_eq!(results[1]["runs"][0]["winner"], "node3", "{}", results[1]);
    // The lab runs its own policies (the built-in rules) again, whole and healthy.
    let st = lab.status();
    assert_eq!(st["healthy"], true, "{st}");
    for n in st["nodes"].as_array().expect("nodes") {
        assert_eq!(n["policies"], "builtin", "{n}");
        if let Some(p) = n["pid"].as_i64() {
            pids.push(p);
        }
        if let Some(p) = n["postmaster_pid"].as_i64() {
            pids.push(p);
        }
    }

    // Down with --keep-data stops everything and keeps the data; up starts the same lab again,
    // the last leader first, so that it leads again.
    let leader = st["leader"].as_str().expect("leader").to_string();
    let out = lab.ok(&["down", "--keep-data"]);
    assert!(out.contains("its data is kept"), "{out}");
    assert!(
        lab_processes(&lab.dir).is_empty(),
        "a stopped lab runs nothing"
    );
    assert!(lab.dir.join("node1/data/PG_VERSION").exists());
    let o = lab.run(&["up", "--nodes", "5"]);
    assert_eq!(o.status.code(), Some(2), "other settings are refused");
    assert!(
        stderr(&o).contains("--nodes 5 (the lab has 3)"),
        "{}",
        stderr(&o)
    );
    let out = lab.ok(&["up"]);
    assert!(out.contains(&format!("{leader} leads")), "{out}");
    let st = lab.status();
    assert_eq!(st["healthy"], true, "{st}");
    assert_eq!(st["leader"], leader.as_str());

    // Down: nothing of the lab is left running, and its directory is gone.
    let before = lab_processes(&lab.dir);
    assert!(
        before.len() >= 7,
        "etcd, 3 regents, 3 guards, 3 PostgreSQL: {before:?}"
    );
    let out = lab.ok(&["down"]);
    assert!(out.contains("stopped and removed"), "{out}");
    for p in &before {
        assert!(!p.alive(), "process {} of the lab still runs", p.pid);
    }
    if haproxy {
        assert!(before.len() >= 11, "HAProxy was one of them: {before:?}");
    }
    for pid in pids {
        let alive = regent::lab::procs::marker_of(pid as i32).is_some();
        assert!(
            !alive,
            "recorded pid {pid} still runs with the lab's marker"
        );
    }
    assert!(!lab.dir.exists(), "the lab directory is removed");
}

/// Whether this run of the tests includes the lab test (no name filter, or one it matches).
fn lab_test_selected() -> bool {
    let mut filters = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if matches!(
            a.as_str(),
            "--skip" | "--test-threads" | "--format" | "--color" | "--logfile" | "-Z"
        ) {
            args.next();
        } else if !a.starts_with('-') {
            filters.push(a);
        }
    }
    filters.is_empty()
        || filters
            .iter()
            .any(|f| "local_lab_up_fault_compare_down".contains(f.as_str()))
}

/// `chromium ARGS file://PAGE` (headless, at most two minutes): its stdout.
fn chromium(bin: &Path, args: &[&str], page: &Path) -> String {
    let out = Command::new("timeout")
        .arg("120")
        .arg(bin)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
        ])
        .args(args)
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("run chromium");
    assert!(
        out.status.success(),
        "chromium {args:?} {}: {}",
        page.display(),
        stderr(&out)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The page renders in Chromium: its DOM holds one timeline SVG per run, each with one lane
/// per node and one mark per event of the run's JSON timeline, and its screenshot is a PNG of
/// the window's size with something on it.
fn check_page(bin: &Path, page: &Path, events: &[usize]) {
    let dom = chromium(bin, &["--dump-dom"], page);
    let runs: Vec<&str> = dom
        .split(r#"<svg class="timeline""#)
        .skip(1)
        .map(|s| s.split("</svg>").next().unwrap_or(""))
        .collect();
    assert_eq!(
        runs.len(),
        events.len(),
        "one timeline per run in {}",
        page.display()
    );
    for (svg, want) in runs.iter().zip(events) {
        for node in ["node1", "node2", "node3"] {
            let lane = format!(r#"<g class="lane" data-node="{node}">"#);
            assert_eq!(svg.matches(&lane).count(), 1, "one lane of {node}: {svg}");
        }
        assert_eq!(svg.matches(r#"<g class="lane""#).count(), 3, "{svg}");
        assert_eq!(
            svg.matches(r#"<g class="event "#).count(),
            *want,
            "one mark per event of the JSON timeline: {svg}"
        );
    }
    let png = page.with_extension("png");
    let _ = std::fs::remove_file(&png);
    chromium(
        bin,
        &[
            &format!("--screenshot={}", png.display()),
            "--window-size=1100,1400",
        ],
        page,
    );
    let bytes = std::fs::read(&png).expect("the screenshot");
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "a PNG");
    let be =
        |at: usize| u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
    assert_eq!((be(16), be(20)), (1100, 1400), "the window's size");
    assert!(
        bytes.len() > 20_000,
        "a page with pictures, not a blank one: {} bytes",
        bytes.len()
    );
}

#[test]
fn reports_render_in_headless_chromium() {
    let Some(bin) = regent::lab::procs::which("chromium") else {
        support::skip(
            "reports_render_in_headless_chromium",
            "chromium is not installed (apt-get install chromium) to open the lab's HTML reports",
        );
        return;
    };
    assert!(
        lab_test_selected(),
        "this test checks the reports local_lab_up_fault_compare_down writes: run both"
    );
    // The lab test takes minutes; wait for its hand-over.
    let deadline = Instant::now() + Duration::from_secs(40 * 60);
    let mut g = HANDOFF.0.lock().expect("lock");
    while g.is_none() {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "the lab test wrote no reports within 40 minutes"
        );
        g = HANDOFF.1.wait_timeout(g, left).expect("lock").0;
    }
    let written = g
        .clone()
        .expect("waited until set")
        .unwrap_or_else(|e| panic!("{e}"));
    drop(g);
    check_page(
        &bin,
        &written.dir.join("fault.html"),
        &[written.fault_events],
    );
    check_page(
        &bin,
        &written.dir.join("compare.html"),
        &written.compare_events,
    );
}
