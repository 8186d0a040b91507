//! Tests of the policy host against `testdata/test-guest.wasm` (a deliberately misbehaving
//! policy, source in `testdata/policy-guest/`), and, when present, the real plugins in
//! `policies/` and the fault fixtures in `tests/fixtures/policies/`.
//!
//! Each component is compiled once per test process (the runtime memoizes by digest).

use super::compile;
use super::guest::wit;
use super::runtime;
use super::*;
use crate::ha::policy::{
    CandidateView, DefaultPolicy, ElectionReason, ElectionView, Health, HealthFacts, Policy,
    Ranked, Ranking,
};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

fn host_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn guest() -> &'static [u8] {
    static BYTES: OnceLock<Vec<u8>> = OnceLock::new();
    BYTES.get_or_init(|| {
        std::fs::read(host_dir().join("testdata/test-guest.wasm"))
            .expect("testdata/test-guest.wasm (rebuild with testdata/policy-guest/build.sh)")
    })
}

/// The same component with a custom section appended: another digest, same behaviour.
fn variant(bytes: &[u8], tag: &str) -> Vec<u8> {
    fn leb(mut n: usize, out: &mut Vec<u8>) {
        loop {
            let b = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(b);
                return;
            }
            out.push(b | 0x80);
        }
    }
    let name = b"regent-test";
    let mut content = Vec::new();
    leb(name.len(), &mut content);
    content.extend_from_slice(name);
    content.extend_from_slice(tag.as_bytes());
    let mut out = bytes.to_vec();
    out.push(0);
    leb(content.len(), &mut out);
    out.extend_from_slice(&content);
    out
}

/// Write `NAME.toml` (with `extra` lines) and `NAME.wasm` into `dir`.
fn write_policy(dir: &Path, name: &str, extra: &str, wasm: &[u8]) {
    std::fs::write(dir.join(format!("{name}.wasm")), wasm).unwrap();
    std::fs::write(
        dir.join(format!("{name}.toml")),
        format!("name = \"{name}\"\ncomponent = \"{name}.wasm\"\n{extra}\n"),
    )
    .unwrap();
}

fn guest_b() -> &'static [u8] {
    static BYTES: OnceLock<Vec<u8>> = OnceLock::new();
    BYTES.get_or_init(|| std::fs::read(host_dir().join("testdata/test-guest-b.wasm")).unwrap())
}

const GUEST: &str = "test-guest";

/// A generous deadline for tests that do not test the deadline: it is wall time, and parallel
/// tests in an unoptimized build on 2 cores can be descheduled for longer than 50 ms.
const RELAXED: &str = "deadline_ms = 2000";

fn guest_set(extra: &str) -> (tempfile::TempDir, PolicySet) {
    let dir = tempfile::tempdir().unwrap();
    let extra = if extra.contains("deadline_ms") {
        extra.to_string()
    } else {
        format!("{RELAXED}\n{extra}")
    };
    write_policy(dir.path(), GUEST, &extra, guest());
    let set = PolicySet::load(dir.path(), &[GUEST.to_string()], None).unwrap();
    // Tests that count instances or keep state in one must not see the optimized code take
    // over halfway (see `a_new_version_serves_quick_code_until_its_optimized_code_is_ready`):
    // they start with a fresh instance of the optimized code.
    let p = only(&set);
    wait_for("the optimized code", Duration::from_secs(60), || {
        p.tier() == Tier::Optimized
    });
    p.reset_instance();
    (dir, set)
}

fn view() -> ElectionView {
    sample_views().remove(0).1
}

fn faulty_view(kind: &str) -> ElectionView {
    let mut v = view();
    v.members[1].tags.insert("fault".into(), kind.into());
    v
}

fn names(r: &Ranking) -> Vec<String> {
    match r {
        Ranking::Candidates(l) => l.iter().map(|c| c.name.clone()).collect(),
        Ranking::Veto(why) => vec![format!("veto: {why}")],
    }
}

pub(super) fn facts(state: &str) -> HealthFacts {
    HealthFacts {
        role: "replica".into(),
        state: state.into(),
        timeline: Some(3),
        wal_position: Some(100),
        received_lsn: None,
        replayed_lsn: None,
        replication_connections: 0,
        lag_bytes: Some(0),
        seconds_in_state: 10,
    }
}

fn only(set: &PolicySet) -> Arc<WasmPolicy> {
    set.policies().remove(0)
}

/// A fault must: return the default's answer, be counted and reported, and leave the next
/// call working (on a fresh instance when the old one trapped).
fn assert_rank_fault(kind: &str, expected: FaultKind, extra: &str) -> Fault {
    let (_dir, set) = guest_set(extra);
    let p = only(&set);
    let v = faulty_view(kind);
    let start = Instant::now();
    let got = set.rank(&v);
    let took = start.elapsed();
    assert_eq!(
        got,
        DefaultPolicy.rank(&v),
        "{kind}: falls back to the built-in answer"
    );
    let (count, last) = p.faults();
    assert_eq!(count, 1, "{kind}: counted");
    let fault = last.expect("fault recorded");
    assert_eq!(fault.kind, expected, "{kind}: {fault}");
    assert_eq!(fault.hook, Hook::RankCandidates);
    let info = set.info();
    assert_eq!(info["policies"][0]["faults"]["count"], 1);
    assert!(info["policies"][0]["faults"]["last"]["message"].is_string());
    // The next call works again.
    let ok = p
        .rank_checked(&view())
        .unwrap_or_else(|f| panic!("{kind}: next call: {f}"));
    assert_eq!(names(&ok), ["pg-b", "pg-c"]);
    assert!(took < Duration::from_secs(5), "{kind}: took {took:?}");
    fault
}

#[test]
fn loads_describes_and_ranks() {
    let (_dir, set) = guest_set("");
    let p = only(&set);
    assert_eq!(p.info().name, "test-guest");
    assert_eq!(p.info().version, "1.0.0");
    assert_eq!(p.digest(), runtime::digest(guest()));
    assert_eq!(p.active_hooks(), Hook::ALL);
    let r = set.rank(&view());
    assert_eq!(
        r,
        Ranking::Candidates(vec![
            Ranked {
                name: "pg-b".into(),
                reason: "lag 4096 bytes, zone eu-1".into()
            },
            Ranked {
                name: "pg-c".into(),
                reason: "lag 8192 bytes, zone eu-2".into()
            },
        ])
    );
    // A running primary vetoes.
    let primary = sample_views().remove(2).1;
    assert_eq!(
        set.rank(&primary),
        Ranking::Veto("primary pg-a is still alive".into())
    );
    assert_eq!(
        set.digest_summary(),
        format!("test-guest@{}", &runtime::digest(guest())[..8])
    );
    let info = set.info();
    let pi = &info["policies"][0];
    assert_eq!(pi["name"], "test-guest");
    assert_eq!(pi["version"], "1.0.0");
    assert_eq!(pi["digest"], runtime::digest(guest()));
    assert_eq!(
        pi["hooks"],
        serde_json::json!(["rank-candidates", "check-health", "on-event"])
    );
    assert_eq!(pi["calls"]["rank_candidates"], 2);
    assert_eq!(pi["faults"]["count"], 0);
    assert!(pi["loaded_at_unix_ms"].as_u64().unwrap() > 0);
    assert_eq!(info["rank_from"], "test-guest");
}

#[test]
fn manifest_name_must_match_the_component() {
    let dir = tempfile::tempdir().unwrap();
    write_policy(dir.path(), "zone-aware", RELAXED, guest());
    let e = PolicySet::load(dir.path(), &["zone-aware".to_string()], None).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("zone-aware.toml: `name`: is \"zone-aware\" but")
            && msg.contains("describes itself as \"test-guest\" 1.0.0"),
        "{msg}"
    );
}

#[test]
fn settings_survive_reinstantiation() {
    let (_dir, set) = guest_set("[settings]\nzone = \"eu-1\"");
    let p = only(&set);
    let expect = Health::Degraded(r#"settings={"zone":"eu-1"}"#.into());
    assert_eq!(p.health_checked(&facts("settings")).unwrap(), expect);
    set.rank(&faulty_view("panic"));
    assert_eq!(p.faults().0, 1);
    assert_eq!(p.health_checked(&facts("settings")).unwrap(), expect);
}

#[test]
fn infinite_loop_hits_the_deadline_and_recovers() {
    let fault = assert_rank_fault("loop", FaultKind::Deadline, "deadline_ms = 50");
    assert!(fault.elapsed_ms >= 45.0, "{fault}");
    assert!(
        fault.elapsed_ms < 1000.0,
        "returns soon after the deadline: {fault}"
    );
    assert!(fault.message.contains("50 ms deadline"), "{fault}");
}

#[test]
fn panic_is_a_fault_with_the_captured_stderr() {
    let fault = assert_rank_fault("panic", FaultKind::Trap, "");
    assert!(
        fault.stderr.contains("deliberate panic in rank-candidates"),
        "stderr captured: {fault:?}"
    );
    assert!(fault.to_string().contains("deliberate panic"), "{fault}");
}

#[test]
fn memory_bomb_is_contained() {
    let fault = assert_rank_fault("oom", FaultKind::OutOfMemory, "memory_mb = 16");
    assert!(fault.message.contains("16 MiB"), "{fault}");
}

#[test]
fn unreachable_instruction_is_a_trap() {
    let fault = assert_rank_fault("unreachable-instr", FaultKind::Trap, "");
    assert!(fault.message.contains("unreachable"), "{fault}");
}

#[test]
fn invalid_answers_fall_back() {
    for (kind, needle) in [
        ("unknown-member", "not a member of the view"),
        ("empty-reason", "without a reason"),
        ("duplicate", "twice"),
        ("rank-unreachable", "unreachable"),
    ] {
        let fault = assert_rank_fault(kind, FaultKind::InvalidAnswer, "");
        assert!(fault.message.contains(needle), "{kind}: {fault}");
    }
}

#[test]
fn trapped_instance_is_replaced() {
    let (_dir, set) = guest_set("");
    let p = only(&set);
    for _ in 0..3 {
        set.rank(&faulty_view("panic"));
        assert_eq!(names(&p.rank_checked(&view()).unwrap()), ["pg-b", "pg-c"]);
    }
    assert_eq!(p.faults().0, 3);
    // One for the first call, one after each fault.
    assert_eq!(set.info()["policies"][0]["instantiations"], 4);
    // The faults and the calls are in the metrics too.
    let mut text = String::new();
    crate::metrics::render(&mut text, &[]);
    let name = p.policy_name().to_string();
    let count = |prefix: &str, label: &str| {
        text.lines()
            .find(|l| {
                l.starts_with(prefix)
                    && l.contains(&format!("policy=\"{name}\""))
                    && l.contains(label)
            })
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    assert!(
        count("regent_policy_faults_total{", "kind=\"trap\"") >= 3.0,
        "{text}"
    );
    assert!(
        count(
            "regent_policy_call_duration_seconds_count{",
            "hook=\"rank-candidates\""
        ) >= 3.0,
        "{text}"
    );
}

#[test]
fn garbage_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    write_policy(dir.path(), "junk", "", b"this is not wasm at all");
    let e = PolicySet::load(dir.path(), &["junk".to_string()], None).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, PolicyError::InvalidComponent { .. }), "{msg}");
    assert!(
        msg.contains("junk.wasm") && msg.contains("not a .wasm file"),
        "{msg}"
    );
    // Half a component.
    write_policy(dir.path(), "half", "", &guest()[..guest().len() / 2]);
    let e = PolicySet::load(dir.path(), &["half".to_string()], None).unwrap_err();
    assert!(matches!(e, PolicyError::InvalidComponent { .. }), "{e}");
}

#[test]
fn wrong_wit_version_is_refused() {
    let bytes = std::fs::read(host_dir().join("testdata/test-guest-v0.2.wasm")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    write_policy(dir.path(), "old", "", &bytes);
    let e = PolicySet::load(dir.path(), &["old".to_string()], None).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, PolicyError::WrongVersion { .. }), "{msg}");
    assert!(
        msg.contains("built against a different regent:policy version (regent:policy@0.2.0)"),
        "{msg}"
    );
    assert!(
        msg.contains("rebuild against wit/policy.wit (regent:policy@0.1.0)"),
        "{msg}"
    );
    let e = check(&dir.path().join("old.wasm")).unwrap_err();
    assert!(matches!(e, PolicyError::WrongVersion { .. }), "{e}");
}

#[test]
fn configure_refusal_is_a_load_error() {
    let dir = tempfile::tempdir().unwrap();
    write_policy(
        dir.path(),
        GUEST,
        &format!("{RELAXED}\n[settings]\nreject = true"),
        guest(),
    );
    let e = PolicySet::load(dir.path(), &[GUEST.to_string()], None).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, PolicyError::Configure { .. }), "{msg}");
    assert!(msg.contains("setting `reject`"), "{msg}");
}

#[test]
fn settings_reach_configure_as_json() {
    let m = Manifest::parse(
        Path::new("/p/x.toml"),
        "name = \"x\"\ncomponent = \"x.wasm\"\n[settings]\nzone = \"eu-1\"\nmax = 3\nlist = [1, 2]\n[settings.nested]\nok = true\n",
    )
    .unwrap();
    assert_eq!(
        m.settings,
        serde_json::json!({"zone": "eu-1", "max": 3, "list": [1, 2], "nested": {"ok": true}})
    );
    assert_eq!(m.component, Path::new("/p/x.wasm"));
    assert_eq!(m.deadline, DEFAULT_DEADLINE);
    assert_eq!(m.memory_mb, 32);
}

#[test]
fn manifest_errors_name_the_file_the_key_and_the_fix() {
    let p = Path::new("/etc/regent/policies/zone.toml");
    let cases = [
        ("component = \"z.wasm\"", "`name`: missing"),
        (
            "name = \"other\"\ncomponent = \"z.wasm\"",
            "rename the file",
        ),
        ("name = \"zone\"", "`component`: missing"),
        (
            "name = \"zone\"\ncomponent = \"z.wasm\"\nhooks = [\"rank\"]",
            "unknown hook",
        ),
        (
            "name = \"zone\"\ncomponent = \"z.wasm\"\nhookz = []",
            "`hookz`",
        ),
        (
            "name = \"zone\"\ncomponent = \"z.wasm\"\ncapabilities = [\"net\"]",
            "sql-probe",
        ),
        (
            "name = \"zone\"\ncomponent = \"z.wasm\"\ndeadline_ms = 0",
            "`deadline_ms`",
        ),
        (
            "name = \"zone\"\ncomponent = \"z.wasm\"\nmemory_mb = 100000",
            "`memory_mb`",
        ),
        (
            "name = \"zone\"\ncomponent = \"z.wasm\"\n[[probes]]\nname = \"a\"\nsql = \"select 1\"",
            "add `capabilities = [\"sql-probe\"]`",
        ),
        (
            "name = \"zone\"\ncomponent = \"z.wasm\"\ncapabilities = [\"sql-probe\"]\n[[probes]]\nname = \"a\"",
            "`probes[0].sql`",
        ),
        ("name = \"zone\"\ncomponent = [1]", "`component`"),
        (
            "name = \"zone\"\ncomponent = \"z.wasm",
            "invalid TOML at line 2",
        ),
    ];
    for (text, needle) in cases {
        let e = Manifest::parse(p, text).unwrap_err();
        let msg = e.to_string();
        assert!(msg.starts_with("/etc/regent/policies/zone.toml: "), "{msg}");
        assert!(msg.contains(needle), "{text:?}: {msg}");
    }
    // A missing component names the manifest.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("gone.toml"),
        "name = \"gone\"\ncomponent = \"gone.wasm\"\n",
    )
    .unwrap();
    let e = PolicySet::load(dir.path(), &["gone".to_string()], None).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("gone.wasm") && msg.contains("gone.toml"),
        "{msg}"
    );
    // A missing manifest.
    let e = PolicySet::load(dir.path(), &["nothere".to_string()], None).unwrap_err();
    assert!(e.to_string().contains("nothere.toml"), "{e}");
}

#[test]
fn inactive_hooks_fall_back() {
    let (_dir, set) = guest_set("hooks = [\"check-health\"]");
    let p = only(&set);
    // The set has no ranker: the built-in rules rank, no fault.
    let v = view();
    assert_eq!(set.rank(&v), DefaultPolicy.rank(&v));
    assert_eq!(p.faults().0, 0);
    assert!(set.info()["rank_from"].is_null());
    // Calling the policy directly for a hook it does not serve is a fault.
    assert_eq!(p.rank(&v), DefaultPolicy.rank(&v));
    let (count, last) = p.faults();
    assert_eq!(count, 1);
    assert_eq!(last.unwrap().kind, FaultKind::MissingHook);
    // Events are not delivered either.
    set.on_event(&Event::MemberJoined("x".into()));
    assert_eq!(set.info()["policies"][0]["calls"]["on_event"], 0);
}

#[test]
fn health_takes_the_worst_verdict_and_falls_back_on_faults() {
    let dir = tempfile::tempdir().unwrap();
    write_policy(
        dir.path(),
        "test-guest-b",
        &format!("{RELAXED}\nhooks = [\"rank-candidates\"]"),
        guest_b(),
    );
    write_policy(dir.path(), GUEST, "deadline_ms = 200", guest());
    let set = PolicySet::load(dir.path(), &["test-guest-b".into(), GUEST.into()], None).unwrap();
    assert_eq!(set.health(&facts("running")), Health::Healthy);
    assert_eq!(
        set.health(&facts("stopped")),
        Health::Failed("test-guest: PostgreSQL is stopped".into())
    );
    // A fault: the built-in rule answers for that policy.
    let h = set.health(&facts("fault-panic"));
    assert_eq!(
        h,
        Health::Degraded("test-guest: PostgreSQL is fault-panic".into())
    );
    let a = &set.policies()[1];
    let (count, last) = a.faults();
    assert_eq!(count, 1);
    let last = last.unwrap();
    assert_eq!(last.hook, Hook::CheckHealth);
    assert!(
        last.stderr.contains("deliberate panic in check-health"),
        "{last:?}"
    );
    let start = Instant::now();
    set.health(&facts("fault-loop"));
    assert!(start.elapsed() < Duration::from_secs(2));
    assert_eq!(a.faults().1.unwrap().kind, FaultKind::Deadline);
    assert_eq!(set.health(&facts("running")), Health::Healthy);
    // The set ranks with the first policy that ranks.
    assert_eq!(set.info()["rank_from"], "test-guest-b");
    assert_eq!(set.policies()[0].faults().0, 0);
}

struct FakeProber {
    calls: Mutex<Vec<(String, Duration)>>,
}

impl SqlProber for FakeProber {
    fn probe(&self, sql: &str, timeout: Duration) -> Result<Vec<Vec<Option<String>>>, String> {
        self.calls.lock().unwrap().push((sql.to_string(), timeout));
        if sql.contains("fail") {
            return Err("canceling statement due to statement timeout".into());
        }
        Ok(vec![vec![Some("1".into()), None]])
    }
}

#[test]
fn probes_run_before_check_health_when_granted() {
    let (_dir, set) = guest_set(
        "capabilities = [\"sql-probe\"]\n\
         [[probes]]\nname = \"one\"\nsql = \"select 1, null\"\ntimeout_ms = 300\n\
         [[probes]]\nname = \"bad\"\nsql = \"select fail\"\n",
    );
    // Before the supervisor provides a prober, probes report an error.
    let h = set.health(&facts("running"));
    assert!(
        matches!(&h, Health::Degraded(s) if s.contains("no database connection")),
        "{h:?}"
    );
    let prober = Arc::new(FakeProber {
        calls: Mutex::new(Vec::new()),
    });
    set.set_sql_prober(prober.clone());
    let h = set.health(&facts("running"));
    assert_eq!(
        h,
        Health::Degraded(
            "test-guest: one=[[Some(\"1\"), None]]/None;bad=[]/Some(\"canceling statement due to statement timeout\")"
                .into()
        )
    );
    let calls = prober.calls.lock().unwrap().clone();
    assert_eq!(
        calls[0],
        ("select 1, null".into(), Duration::from_millis(300))
    );
    assert_eq!(calls[1].1, DEFAULT_PROBE_TIMEOUT);
    // The guest may call sql-probe itself.
    let h = set.health(&facts("probe-direct"));
    assert!(
        matches!(&h, Health::Degraded(s) if s.contains("direct probe rows=[[Some(\"1\"), None]]")),
        "{h:?}"
    );
}

#[test]
fn sql_probe_is_refused_without_the_capability() {
    let (_dir, set) = guest_set("");
    set.set_sql_prober(Arc::new(FakeProber {
        calls: Mutex::new(Vec::new()),
    }));
    let h = set.health(&facts("probe-direct"));
    assert!(
        matches!(&h, Health::Degraded(s) if s.contains("sql-probe is not granted")),
        "{h:?}"
    );
}

#[test]
fn events_reach_every_policy_and_faults_are_recorded() {
    let (_dir, set) = guest_set("");
    let p = only(&set);
    // The load is announced (policy-loaded) to the fresh instance `guest_set` leaves.
    p.announce_loaded();
    set.on_event(&Event::MemberJoined("pg-d".into()));
    set.on_event(&Event::RoleChanged {
        from: Role::Replica,
        to: Role::Primary,
    });
    assert_eq!(
        p.health_checked(&facts("events")).unwrap(),
        Health::Degraded("events=3".into())
    );
    set.on_event(&Event::MemberJoined("fault-panic".into()));
    let (count, last) = p.faults();
    assert_eq!(count, 1);
    let last = last.unwrap();
    assert_eq!(last.hook, Hook::OnEvent);
    assert!(
        last.stderr.contains("deliberate panic in on-event"),
        "{last:?}"
    );
    // A fresh instance: its event count starts again.
    set.on_event(&Event::MemberLeft("pg-d".into()));
    assert_eq!(
        p.health_checked(&facts("events")).unwrap(),
        Health::Degraded("events=1".into())
    );
}

#[test]
fn now_ms_is_the_monotonic_clock() {
    let (_dir, set) = guest_set("");
    let before = crate::fence::mono_ms();
    let h = only(&set).health_checked(&facts("clock")).unwrap();
    let after = crate::fence::mono_ms();
    let Health::Degraded(s) = h else {
        panic!("{h:?}")
    };
    let now: u64 = s.strip_prefix("now=").unwrap().parse().unwrap();
    assert!(before <= now && now <= after, "{before} {now} {after}");
}

#[test]
fn log_enabled_follows_what_the_log_records() {
    let (_dir, set) = guest_set("");
    let p = only(&set);
    let ask = || match p.health_checked(&facts("log-enabled")).unwrap() {
        Health::Degraded(s) => s,
        h => panic!("{h:?}"),
    };
    // No subscriber: nothing is recorded.
    assert_eq!(ask(), "debug=false error=false");
    let at = |level| {
        tracing_subscriber::fmt()
            .with_max_level(level)
            .with_test_writer()
            .finish()
    };
    tracing::subscriber::with_default(at(tracing::Level::INFO), || {
        assert_eq!(ask(), "debug=false error=true")
    });
    tracing::subscriber::with_default(at(tracing::Level::DEBUG), || {
        assert_eq!(ask(), "debug=true error=true")
    });
}

#[test]
fn the_view_carries_zones_sync_flags_and_only_the_tags_asked_for() {
    let (_dir, set) = guest_set("");
    let p = only(&set);
    assert_eq!(
        p.info().tags,
        TagKeys::Only(vec!["fault".into(), "rack".into(), "zone".into()])
    );
    let mut v = view();
    v.members[0].tags.insert("secret".into(), "s3cr3t".into());
    v.members[1].tags.insert("fault".into(), "echo-view".into());
    v.members[2].tags.insert("rack".into(), "r9".into());
    v.members[2].tags.remove("zone");
    v.sync_members = Some(vec!["pg-a".into(), "pg-c".into()]);
    let Ranking::Veto(echo) = p.rank_checked(&v).unwrap() else {
        panic!()
    };
    assert_eq!(
        echo,
        "synchronous-mode=true; pg-a zone=eu-1 sync=true tags=zone=eu-1; \
         pg-b zone=eu-1 sync=false tags=fault=echo-view,zone=eu-1; \
         pg-c zone=- sync=true tags=rack=r9"
    );
    v.sync_members = None;
    let Ranking::Veto(echo) = p.rank_checked(&v).unwrap() else {
        panic!()
    };
    assert!(
        echo.starts_with("synchronous-mode=false; pg-a zone=eu-1 sync=false"),
        "{echo}"
    );
}

#[test]
fn postgres_states_keep_patronis_names() {
    for (name, state) in [
        ("running", wit::PgState::Running),
        ("starting", wit::PgState::Starting),
        ("stopping", wit::PgState::Stopping),
        ("stopped", wit::PgState::Stopped),
        ("restarting", wit::PgState::Restarting),
        ("crashed", wit::PgState::Crashed),
        ("creating replica", wit::PgState::CreatingReplica),
        ("initializing new cluster", wit::PgState::Initializing),
        ("unreachable", wit::PgState::Unreachable),
        ("rejoining", wit::PgState::Other("rejoining".into())),
    ] {
        assert_eq!(super::convert::pg_state(name), state, "{name}");
    }
}

#[test]
fn compiled_artifacts_are_cached_by_digest() {
    let rt = runtime::runtime(Tier::Optimized).unwrap();
    let cache = tempfile::tempdir().unwrap();
    let bytes = variant(guest(), "cache-test");
    let digest = runtime::digest(&bytes);
    let p = Path::new("cache-test.wasm");
    let (_, origin, _) = compile::compile(rt, p, &bytes, &digest, Some(cache.path())).unwrap();
    assert_eq!(origin, compile::Origin::Compiled);
    let files: Vec<PathBuf> = std::fs::read_dir(cache.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let name = files[0].file_name().unwrap().to_string_lossy().to_string();
    assert!(
        name.starts_with(&digest) && name.ends_with(".cwasm"),
        "{name}"
    );
    // Again (the same process, or a restart): from the cache file, and it works. With a
    // cache, nothing is kept in memory besides.
    let (c, origin, _) = compile::compile(rt, p, &bytes, &digest, Some(cache.path())).unwrap();
    assert_eq!(origin, compile::Origin::DiskCache);
    compile::prepare(rt, p, &c).unwrap();
    // A corrupt cache file is replaced.
    std::fs::write(&files[0], b"\x7fELF broken").unwrap();
    let (_, origin, _) = compile::compile(rt, p, &bytes, &digest, Some(cache.path())).unwrap();
    assert_eq!(origin, compile::Origin::Compiled);
    let (_, origin, _) = compile::compile(rt, p, &bytes, &digest, Some(cache.path())).unwrap();
    assert_eq!(origin, compile::Origin::DiskCache);
    // Without a cache: from memory.
    let (_, origin, _) = compile::compile(rt, p, &bytes, &digest, None).unwrap();
    assert_eq!(origin, compile::Origin::Compiled);
    let (_, origin, _) = compile::compile(rt, p, &bytes, &digest, None).unwrap();
    assert_eq!(origin, compile::Origin::Memory);
    compile::forget_compiled(&digest, Tier::Optimized);
}

#[test]
fn quick_code_is_not_cached_on_disk() {
    let rt = runtime::runtime(Tier::Quick).unwrap();
    let cache = tempfile::tempdir().unwrap();
    let bytes = variant(guest(), "quick-cache-test");
    let digest = runtime::digest(&bytes);
    let p = Path::new("quick-cache-test.wasm");
    for _ in 0..2 {
        let (_, origin, _) = compile::compile(rt, p, &bytes, &digest, Some(cache.path())).unwrap();
        assert_eq!(origin, compile::Origin::Compiled);
        assert_eq!(std::fs::read_dir(cache.path()).unwrap().count(), 0);
    }
}

#[test]
fn a_new_version_serves_quick_code_until_its_optimized_code_is_ready() {
    let dir = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let bytes = variant(guest(), "tiers");
    write_policy(dir.path(), GUEST, RELAXED, &bytes);
    let set = PolicySet::load(dir.path(), &[GUEST.to_string()], Some(cache.path())).unwrap();
    let p = only(&set);
    let compile = |set: &PolicySet| set.info()["policies"][0]["compile"].clone();
    assert_eq!(compile(&set)["first"]["tier"], "quick", "{}", compile(&set));
    assert_eq!(compile(&set)["first"]["source"], "compiled");
    // Calls are answered all along, and the optimized code takes over by itself.
    wait_for("the optimized code", Duration::from_secs(60), || {
        assert_eq!(names(&p.rank_checked(&view()).unwrap()), ["pg-b", "pg-c"]);
        p.tier() == Tier::Optimized
    });
    let c = compile(&set);
    assert_eq!(c["tier"], "optimized", "{c}");
    assert_eq!(c["source"], "compiled", "{c}");
    assert!(c["optimize_error"].is_null(), "{c}");
    // Settings reach the optimized instance too.
    assert_eq!(
        p.health_checked(&facts("settings")).unwrap(),
        Health::Degraded("settings={}".into())
    );
    assert_eq!(p.faults().0, 0);
    // It is what the cache keeps: a restart serves optimized code at once.
    assert_eq!(std::fs::read_dir(cache.path()).unwrap().count(), 1);
    let again = PolicySet::load(dir.path(), &[GUEST.to_string()], Some(cache.path())).unwrap();
    let c = compile(&again);
    assert_eq!(c["tier"], "optimized", "{c}");
    assert_eq!(c["first"]["source"], "cache", "{c}");
}

/// A stand-in for `regent compile-policy`: a shell script that swallows its input and then
/// runs `body`.
fn fake_compiler(dir: &Path, body: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(format!("compiler-{}", dir.read_dir().unwrap().count()));
    std::fs::write(&path, format!("#!/bin/sh\ncat >/dev/null\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

#[test]
fn compile_child_protocol() {
    let rt = runtime::runtime(Tier::Quick).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let bytes = variant(guest(), "child");
    // The child's side: an artifact, or the reason with status 3.
    let artifact = compile::compile_artifact("quick", &bytes).unwrap();
    let (status, why) = compile::compile_artifact("quick", b"not wasm").unwrap_err();
    assert_eq!(status, 3);
    assert!(why.contains("not a .wasm file"), "{why}");
    assert_eq!(compile::compile_artifact("fast", &bytes).unwrap_err().0, 1);
    // The parent's side.
    let file = dir.path().join("artifact.cwasm");
    std::fs::write(&file, &artifact).unwrap();
    let ok = fake_compiler(dir.path(), &format!("cat '{}'", file.display()));
    let c = compile::compile_in_child(&ok, rt, &bytes, Duration::from_secs(30)).unwrap();
    compile::prepare(rt, Path::new("child.wasm"), &c).unwrap();
    let invalid = fake_compiler(dir.path(), "echo 'not a component' >&2; exit 3");
    match compile::compile_in_child(&invalid, rt, &bytes, Duration::from_secs(30)) {
        Err(compile::ChildError::Invalid(why)) => assert_eq!(why, "not a component"),
        other => panic!("{other:?}"),
    }
    for (body, needle) in [
        ("echo boom >&2; exit 1", "boom"),
        ("echo garbage", "does not load"),
        ("kill -9 $$", "signal"),
        ("exec sleep 30", "timed out"),
    ] {
        let exe = fake_compiler(dir.path(), body);
        match compile::compile_in_child(&exe, rt, &bytes, Duration::from_secs(2)) {
            Err(compile::ChildError::Failed(why)) => assert!(why.contains(needle), "{body}: {why}"),
            other => panic!("{body}: {other:?}"),
        }
    }
    let missing = dir.path().join("no-such-compiler");
    assert!(matches!(
        compile::compile_in_child(&missing, rt, &bytes, Duration::from_secs(2)),
        Err(compile::ChildError::Failed(_))
    ));
}

/// When the compile child fails (cannot start, crashes, hangs until its timeout), the version
/// is refused and the previous one keeps serving: the supervisor never falls back to
/// compiling in its own process, where nothing bounds the time, the memory or a crash.
/// Before: `compile_with` compiled the component in this process instead.
#[test]
fn a_failed_compile_child_refuses_the_version_instead_of_compiling_here() {
    let rt = runtime::runtime(Tier::Quick).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let bytes = variant(guest(), "no-fallback");
    for (exe, needle) in [
        (dir.path().join("no-such-compiler"), "cannot start"),
        (fake_compiler(dir.path(), "echo boom >&2; exit 1"), "boom"),
    ] {
        match compile::compile_with(Some(&exe), rt, Path::new("p.wasm"), &bytes) {
            Err(e @ PolicyError::Compiler { .. }) => {
                let text = e.to_string();
                assert!(text.contains(needle), "{text}");
                assert!(text.contains("previous version keeps serving"), "{text}");
            }
            Err(other) => panic!("{exe:?}: unexpected error {other}"),
            Ok(_) => panic!("{exe:?}: compiled in this process after the child failed"),
        }
    }
    // Without a compile child (`regent policy check`, the tests), this process compiles.
    compile::compile_with(None, rt, Path::new("p.wasm"), &bytes).expect("compiled here");
}

/// Write `bytes` to `dir/name` the way a deploy should: a temporary file, then rename.
fn rename_into_place(dir: &Path, name: &str, bytes: &[u8]) {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, dir.join(name)).unwrap();
}

fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn hot_reload_swaps_versions_and_keeps_serving_on_bad_files() {
    let dir = tempfile::tempdir().unwrap();
    write_policy(dir.path(), GUEST, RELAXED, guest());
    let set = Arc::new(PolicySet::load(dir.path(), &[GUEST.to_string()], None).unwrap());
    let _watch = set.watch().unwrap();
    let v1 = runtime::digest(guest());
    let v2_bytes = variant(guest(), "v2");
    let v2 = runtime::digest(&v2_bytes);
    let digest = |set: &PolicySet| {
        set.info()["policies"][0]["digest"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(digest(&set), v1);

    rename_into_place(dir.path(), "test-guest.wasm", &v2_bytes);
    wait_for("v2 to serve", Duration::from_secs(30), || {
        digest(&set) == v2
    });
    assert_eq!(names(&set.rank(&view())), ["pg-b", "pg-c"]);
    // The reload is logged just after the swap.
    wait_for("the reload to be logged", Duration::from_secs(5), || {
        set.info()["policies"][0]["reloads"]["ok"] == 1
    });

    // Garbage: refused, v2 keeps serving, the error is reported.
    rename_into_place(dir.path(), "test-guest.wasm", b"garbage");
    wait_for("the refusal", Duration::from_secs(30), || {
        set.info()["policies"][0]["reloads"]["failed"] == 1
    });
    assert_eq!(digest(&set), v2);
    let info = set.info();
    let err = info["policies"][0]["reloads"]["last_error"]
        .as_str()
        .unwrap();
    assert!(
        err.contains("test-guest.wasm") && err.contains("not a .wasm file"),
        "{err}"
    );
    assert_eq!(names(&set.rank(&view())), ["pg-b", "pg-c"]);

    // A broken manifest: refused too.
    rename_into_place(
        dir.path(),
        "test-guest.toml",
        b"name = \"test-guest\"\ncomponent = 7\n",
    );
    wait_for("the manifest refusal", Duration::from_secs(30), || {
        set.info()["policies"][0]["reloads"]["failed"] == 2
    });
    assert_eq!(digest(&set), v2);

    // Back to v1 with a good manifest: the manifest change and the component both count.
    rename_into_place(dir.path(), "test-guest.wasm", guest());
    rename_into_place(
        dir.path(),
        "test-guest.toml",
        b"name = \"test-guest\"\ncomponent = \"test-guest.wasm\"\ndeadline_ms = 40\n",
    );
    wait_for("v1 to serve", Duration::from_secs(30), || {
        digest(&set) == v1
    });
    assert_eq!(set.info()["policies"][0]["deadline_ms"], 40);

    // Nothing changed: a rescan does not reload.
    assert_eq!(
        set.rescan(),
        vec![ReloadOutcome::Unchanged {
            policy: GUEST.into()
        }]
    );
}

#[test]
fn check_and_eval() {
    let report = check(&host_dir().join("testdata/test-guest.wasm")).unwrap();
    assert_eq!(report.name, "test-guest");
    assert_eq!(report.digest, runtime::digest(guest()));
    assert_eq!(report.self_test.len(), sample_views().len() + 2);
    let text = report.to_string();
    assert!(
        text.contains("regent:policy@0.1.0") && text.contains("leader-lost-3"),
        "{text}"
    );

    let dir = tempfile::tempdir().unwrap();
    write_policy(dir.path(), GUEST, RELAXED, guest());
    let manifest = dir.path().join("test-guest.toml");
    let json = serde_json::to_string(&view()).unwrap();
    let out = eval(&manifest, &json).unwrap();
    assert!(
        out.contains("1. pg-b") && out.contains("lag 4096 bytes"),
        "{out}"
    );
    // The test guest ranks like the built-in rules (with other reasons).
    assert!(out.contains("(the built-in rules rank the same)"), "{out}");
    let e = eval(&manifest, "{").unwrap_err();
    assert!(matches!(e, PolicyError::ViewJson(_)), "{e}");
    let json = serde_json::to_string(&faulty_view("panic")).unwrap();
    let e = eval(&manifest, &json).unwrap_err().to_string();
    assert!(
        e.contains("deliberate panic") && e.contains("the built-in rules would answer"),
        "{e}"
    );
}

// ---- The real plugins (from the plugins workspace), when they are there. ----

fn repo_file(rel: &str) -> Option<PathBuf> {
    let p = host_dir().join("..").join(rel);
    p.exists().then_some(p)
}

fn faulty_manifest(dir: &Path, component: &Path, settings: &str) -> PathBuf {
    let path = dir.join("faulty.toml");
    std::fs::write(
        &path,
        format!(
            "name = \"faulty\"\ncomponent = {:?}\ndeadline_ms = {}\n[settings]\n{settings}\n",
            component.display().to_string(),
            if settings.contains("loop") { 50 } else { 2000 }
        ),
    )
    .unwrap();
    path
}

#[test]
fn plugin_fault_fixtures() {
    let Some(dir) = repo_file("tests/fixtures/policies") else {
        eprintln!("SKIPPED plugin_fault_fixtures: tests/fixtures/policies is not there yet");
        return;
    };
    let e = check(&dir.join("garbage.wasm")).unwrap_err();
    assert!(matches!(e, PolicyError::InvalidComponent { .. }), "{e}");
    let e = check(&dir.join("core-module.wasm")).unwrap_err();
    assert!(e.to_string().contains("core module"), "{e}");
    let e = check(&dir.join("wrong-version.wasm")).unwrap_err();
    assert!(matches!(e, PolicyError::WrongVersion { .. }), "{e}");
    assert!(e.to_string().contains("(regent:policy@0.0.9)"), "{e}");
    assert!(
        e.to_string()
            .contains("rebuild against wit/policy.wit (regent:policy@0.1.0)"),
        "{e}"
    );

    let faulty = dir.join("faulty.wasm");
    let tmp = tempfile::tempdir().unwrap();
    let load = |settings: &str| {
        let m = Manifest::load(&faulty_manifest(tmp.path(), &faulty, settings)).unwrap();
        WasmPolicy::load(&m, None, Default::default())
    };
    let ok = load("mode = \"ok\"").unwrap();
    assert_eq!(names(&ok.rank_checked(&view()).unwrap()), ["pg-b", "pg-c"]);
    // Faults in rank-candidates are caught by the self-test: the policy never serves.
    for (mode, needle) in [
        ("loop", "deadline"),
        ("trap", "faulty: mode=trap"),
        ("oom", "memory limit"),
        ("unknown-member", "not a member of the view"),
        ("empty-reason", "without a reason"),
    ] {
        let e = load(&format!("mode = {mode:?}")).err().unwrap();
        assert!(matches!(e, PolicyError::SelfTest { .. }), "{mode}: {e}");
        // Growing memory is slow in an unoptimized host: the deadline may strike first.
        let alt = if mode == "oom" { "deadline" } else { needle };
        assert!(
            e.to_string().contains(needle) || e.to_string().contains(alt),
            "{mode}: {e}"
        );
    }
    let e = load("mode = \"trap\"\nhook = \"configure\"").err().unwrap();
    assert!(e.to_string().contains("configure"), "{e}");
    // A fault in on-event: recorded, with the guest's stderr; the next event is delivered to
    // a new instance.
    let p = load("mode = \"trap\"\nhook = \"on-event\"").unwrap();
    p.on_event(&Event::MemberJoined("pg-x".into()));
    let (count, last) = p.faults();
    assert_eq!(count, 1);
    let last = last.unwrap();
    assert_eq!(last.hook, Hook::OnEvent);
    assert!(
        last.stderr.contains("faulty: mode=trap in on-event"),
        "{last:?}"
    );
    p.on_event(&Event::MemberLeft("pg-x".into()));
    assert_eq!(p.faults().0, 2);
    assert_eq!(names(&p.rank_checked(&view()).unwrap()), ["pg-b", "pg-c"]);
}

#[test]
fn shipped_policies_load() {
    let Some(dir) = repo_file("policies") else {
        eprintln!("SKIPPED shipped_policies_load: policies/ is not there yet");
        return;
    };
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| {
            let p = e.ok()?.path();
            (p.extension()? == "toml").then(|| p.file_stem()?.to_str().map(String::from))?
        })
        .collect();
    names.sort();
    if names.is_empty() {
        eprintln!("SKIPPED shipped_policies_load: no manifest in policies/");
        return;
    }
    for name in names {
        let mut m = Manifest::load(&dir.join(format!("{name}.toml"))).unwrap();
        m.deadline = Duration::from_secs(2);
        let p = WasmPolicy::load(&m, None, Default::default())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        for (_, v) in sample_views() {
            p.rank(&v);
        }
        p.health(&facts("running"));
        p.on_event(&Event::FailoverStarted("leader lost".into()));
        // Only the calls for hooks a policy does not serve fault (`missing hook`).
        let unserved = |h: Hook, calls: usize| if p.is_active(h) { 0 } else { calls };
        let expected = unserved(Hook::RankCandidates, sample_views().len())
            + unserved(Hook::CheckHealth, 1)
            + unserved(Hook::OnEvent, 1);
        let (count, last) = p.faults();
        assert_eq!(count, expected as u64, "{name}: {last:?}");
        if let Some(last) = last {
            assert_eq!(last.kind, FaultKind::MissingHook, "{name}: {last}");
        }
    }
}

fn arb_view() -> impl proptest::strategy::Strategy<Value = ElectionView> {
    use proptest::prelude::*;
    const OPT: u64 = 0x5_0000_0000;
    let member = (
        any::<bool>(),
        prop::bool::weighted(0.85),
        prop::bool::weighted(0.85),
        prop_oneof![Just("running"), Just("stopped"), Just("starting")],
        prop::option::weighted(0.9, 0u64..3 * 1024 * 1024),
        prop::option::weighted(0.9, 1u32..=4),
        prop::bool::weighted(0.1),
        -1i64..=3,
        prop::bool::weighted(0.9),
        0usize..3,
    );
    (
        prop::collection::vec(member, 1..=9),
        prop::option::of(0usize..9),
        any::<bool>(),
        prop::option::weighted(0.9, Just(OPT)),
        prop_oneof![Just(1024u64 * 1024), Just(2 * 1024 * 1024), Just(0)],
        prop::option::weighted(0.2, prop::collection::vec(0usize..9, 0..4)),
    )
        .prop_map(move |(ms, former, new_cluster, optime, max_lag, sync)| {
            let members: Vec<CandidateView> = ms
                .into_iter()
                .enumerate()
                .map(
                    |(
                        i,
                        (primary, reachable, running, state, behind, tl, nofo, prio, healthy, zone),
                    )| {
                        let mut tags = BTreeMap::new();
                        tags.insert("zone".to_string(), format!("z{zone}"));
                        CandidateView {
                            name: format!("pg-{i}"),
                            role: if primary { "primary" } else { "replica" }.into(),
                            state: if !reachable {
                                "unreachable".into()
                            } else if running {
                                "running".into()
                            } else {
                                state.into()
                            },
                            timeline: tl,
                            wal_position: behind.map(|b| OPT - b),
                            received_lsn: None,
                            replayed_lsn: None,
                            in_recovery: !(primary && i % 3 == 0),
                            reachable,
                            nofailover: nofo,
                            failover_priority: prio,
                            tags,
                            healthy,
                        }
                    },
                )
                .collect();
            let n = members.len();
            ElectionView {
                former_leader: former.filter(|f| *f < n).map(|f| format!("pg-{f}")),
                former_leader_zone: None,
                reason: if new_cluster {
                    ElectionReason::NoLeader
                } else {
                    ElectionReason::LeaderLost
                },
                leader_optime: optime,
                maximum_lag_on_failover: max_lag,
                cluster_timeline: 3,
                check_timeline: false,
                sync_members: sync.map(|s| s.into_iter().map(|i| format!("pg-{i}")).collect()),
                now_ms: 1000,
                members,
            }
        })
}

#[test]
fn patroni_default_ranks_like_the_builtin_policy() {
    use proptest::test_runner::{Config, TestRunner};
    let Some(manifest) = repo_file("policies/patroni-default.toml") else {
        eprintln!(
            "SKIPPED patroni_default_ranks_like_the_builtin_policy: policies/patroni-default.toml \
             is not there yet (the plugins workspace builds it)"
        );
        return;
    };
    let mut m = Manifest::load(&manifest).unwrap();
    m.deadline = Duration::from_secs(2);
    // The view does not carry `check_timeline` (a setting of the plugin): use the manifest's.
    let check_timeline = m.settings["check_timeline"].as_bool().unwrap_or(false);
    let policy = WasmPolicy::load(&m, None, Default::default()).unwrap();
    let mut runner = TestRunner::new(Config {
        cases: 10_000,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&arb_view(), |mut v| {
            v.check_timeline = check_timeline;
            let builtin = DefaultPolicy.rank(&v);
            let plugin = policy
                .rank_checked(&v)
                .map_err(|f| proptest::test_runner::TestCaseError::fail(f.to_string()))?;
            match (&builtin, &plugin) {
                (Ranking::Veto(a), Ranking::Veto(b)) => proptest::prop_assert_eq!(a, b),
                _ => proptest::prop_assert_eq!(names(&builtin), names(&plugin), "view {:?}", v),
            }
            Ok(())
        })
        .unwrap();
    assert_eq!(policy.faults().0, 0);
}

/// The loop's share of the lease: `(ttl − safety margin − loop_wait) / 3`, with a floor for
/// the wait (never for the load check).
#[test]
fn the_loop_budget_is_a_third_of_what_the_lease_leaves() {
    assert_eq!(LoopBudget::new(10, 1).share, Duration::from_millis(2333));
    assert_eq!(LoopBudget::new(30, 10).share, Duration::from_millis(5000));
    assert_eq!(LoopBudget::new(60, 1).share, Duration::from_millis(18000));
    let tight = LoopBudget::new(5, 4);
    assert_eq!(tight.share, Duration::ZERO);
    assert_eq!(tight.limit(), budget::MIN_CALL_LIMIT);
}

/// Policies whose own bounds do not fit the loop's share are refused at load and at reload
/// (the previous version keeps serving), with the key, the value and the fix; a lowered ttl
/// is reported but cannot unload what serves. Health calls add up across policies.
#[test]
fn policy_deadlines_must_fit_the_lease() {
    let b = LoopBudget::new(10, 1);
    let dir = tempfile::tempdir().unwrap();
    write_policy(dir.path(), GUEST, "deadline_ms = 3000", guest());
    let e = PolicySet::load_within(dir.path(), &[GUEST.to_string()], None, Some(b)).unwrap_err();
    let text = e.to_string();
    for needle in [
        "`deadline_ms`",
        "3000 ms",
        "2333 ms",
        "ttl 10 and loop_wait 1",
        "lower deadline_ms",
        "raise the cluster's ttl",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in {text}");
    }
    // Probes count, with the allowance the prober waits on top of each timeout.
    write_policy(
        dir.path(),
        GUEST,
        "deadline_ms = 100\ncapabilities = [\"sql-probe\"]\n\
         [[probes]]\nname = \"a\"\nsql = \"select 1\"\ntimeout_ms = 1500\n\
         [[probes]]\nname = \"b\"\nsql = \"select 1\"\ntimeout_ms = 500",
        guest(),
    );
    let e = PolicySet::load_within(dir.path(), &[GUEST.to_string()], None, Some(b)).unwrap_err();
    assert!(e.to_string().contains("probes a 1700 ms + b 700 ms"), "{e}");
    // Within the share: it loads; a reload beyond it is refused and the old version serves.
    write_policy(dir.path(), GUEST, "deadline_ms = 2000", guest());
    let set = PolicySet::load_within(dir.path(), &[GUEST.to_string()], None, Some(b)).unwrap();
    let before = only(&set).manifest().deadline;
    write_policy(dir.path(), GUEST, "deadline_ms = 5000", guest());
    match set.reload_slot(0) {
        ReloadOutcome::Failed { error, .. } => assert!(error.contains("deadline_ms"), "{error}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(only(&set).manifest().deadline, before);
    // A ttl lowered under serving policies: reported, they keep serving.
    let e = set.set_budget(LoopBudget::new(5, 1)).unwrap_err();
    assert!(e.to_string().contains("1000 ms"), "{e}");
    assert_eq!(only(&set).manifest().deadline, before);
    // Two health policies that each fit, but not together.
    let dir = tempfile::tempdir().unwrap();
    write_policy(dir.path(), GUEST, "deadline_ms = 1500", guest());
    write_policy(dir.path(), "test-guest-b", "deadline_ms = 1500", guest_b());
    let names = ["test-guest-b".to_string(), GUEST.to_string()];
    let e = PolicySet::load_within(dir.path(), &names, None, Some(b)).unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains("after 1500 ms of the policies before it") && text.contains("3000 ms in all"),
        "{text}"
    );
    PolicySet::load_within(dir.path(), &names, None, Some(LoopBudget::new(30, 10)))
        .expect("both fit a 5 s share");
}

/// The offset of a byte in the middle of the `.text` section (the machine code) of the ELF
/// image in `artifact` (wasmtime's compiled code; whatever precedes the ELF magic is skipped).
fn code_byte(artifact: &[u8]) -> usize {
    let elf = artifact
        .windows(4)
        .position(|w| w == b"\x7fELF")
        .expect("an ELF image");
    let img = &artifact[elf..];
    let u16_at = |o: usize| u16::from_le_bytes([img[o], img[o + 1]]) as usize;
    let u32_at = |o: usize| u32::from_le_bytes(img[o..o + 4].try_into().unwrap()) as usize;
    let u64_at = |o: usize| u64::from_le_bytes(img[o..o + 8].try_into().unwrap()) as usize;
    let (shoff, shentsize, shnum, shstrndx) =
        (u64_at(0x28), u16_at(0x3a), u16_at(0x3c), u16_at(0x3e));
    let section = |i: usize| shoff + i * shentsize;
    let strtab = u64_at(section(shstrndx) + 0x18);
    for i in 0..shnum {
        let h = section(i);
        let name_at = strtab + u32_at(h);
        let name: Vec<u8> = img[name_at..]
            .iter()
            .take_while(|b| **b != 0)
            .copied()
            .collect();
        if name == b".text" {
            let (off, size) = (u64_at(h + 0x18), u64_at(h + 0x20));
            assert!(size > 16, ".text is {size} bytes");
            return elf + off + size / 2;
        }
    }
    panic!("no .text section in the artifact");
}

/// Safety review item 8: the artifact cache is loaded with the `unsafe`
/// `Component::deserialize`, which checks wasmtime's version and settings but not the code.
/// An artifact whose machine code was changed on disk must not be deserialized: it is
/// discarded and the component compiled again.
#[test]
fn a_tampered_cached_artifact_is_never_deserialized() {
    let rt = runtime::runtime(Tier::Optimized).unwrap();
    let cache = tempfile::tempdir().unwrap();
    let bytes = variant(guest(), "tamper-test");
    let digest = runtime::digest(&bytes);
    let p = Path::new("tamper-test.wasm");
    let (_, origin, _) = compile::compile(rt, p, &bytes, &digest, Some(cache.path())).unwrap();
    assert_eq!(origin, compile::Origin::Compiled);
    let file = std::fs::read_dir(cache.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "cwasm"))
        .expect("a cached artifact");
    let mut artifact = std::fs::read(&file).unwrap();
    let at = code_byte(&artifact);
    artifact[at] ^= 0xff;
    std::fs::write(&file, &artifact).unwrap();
    let (_, origin, _) = compile::compile(rt, p, &bytes, &digest, Some(cache.path())).unwrap();
    assert_eq!(
        origin,
        compile::Origin::Compiled,
        "an artifact whose code was changed on disk was deserialized"
    );
    // Its replacement is good again.
    let (_, origin, _) = compile::compile(rt, p, &bytes, &digest, Some(cache.path())).unwrap();
    assert_eq!(origin, compile::Origin::DiskCache);
}

/// Safety review item 8: only a cache directory that regent's own user owns and nobody else
/// can write is trusted: an artifact in a directory others can write (mode 0777 here; or a
/// link to another directory) is neither loaded nor is anything written there.
#[test]
fn a_cache_directory_others_can_write_is_never_trusted() {
    use std::os::unix::fs::PermissionsExt;
    let rt = runtime::runtime(Tier::Optimized).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    std::fs::create_dir(&cache).unwrap();
    std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o700)).unwrap();
    let bytes = variant(guest(), "cache-dir-test");
    let digest = runtime::digest(&bytes);
    let p = Path::new("cache-dir-test.wasm");
    let (_, origin, _) = compile::compile(rt, p, &bytes, &digest, Some(&cache)).unwrap();
    assert_eq!(origin, compile::Origin::Compiled);
    // Writable by everyone: whatever is in it may be anyone's.
    std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o777)).unwrap();
    let (_, origin, _) = compile::compile(rt, p, &bytes, &digest, Some(&cache)).unwrap();
    assert_eq!(
        origin,
        compile::Origin::Compiled,
        "an artifact in a directory everyone can write was loaded"
    );
    // A link standing for the cache directory, to a directory holding the artifact.
    std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o700)).unwrap();
    let link = tmp.path().join("link");
    std::os::unix::fs::symlink(&cache, &link).unwrap();
    let (_, origin, _) = compile::compile(rt, p, &bytes, &digest, Some(&link)).unwrap();
    assert_eq!(
        origin,
        compile::Origin::Compiled,
        "an artifact behind a link at the cache directory's name was loaded"
    );
    // Owned by another user (the tests run as root here: the PostgreSQL OS user).
    if nix::unistd::Uid::effective().is_root()
        && let Ok(Some(u)) = nix::unistd::User::from_name("postgres")
    {
        std::os::unix::fs::chown(&cache, Some(u.uid.as_raw()), Some(u.gid.as_raw())).unwrap();
        let (_, origin, _) = compile::compile(rt, p, &bytes, &digest, Some(&cache)).unwrap();
        assert_eq!(
            origin,
            compile::Origin::Compiled,
            "an artifact in a directory the PostgreSQL OS user owns was loaded"
        );
    } else {
        eprintln!(
            "a_cache_directory_others_can_write_is_never_trusted: SKIPPED the part with a \
             directory of another user (needs root and the `postgres` OS user)"
        );
    }
}
