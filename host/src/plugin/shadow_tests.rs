//! Tests of the shadow runner against `testdata/test-guest.wasm`: the serving answer is
//! returned unchanged and at once, the shadow's divergences and faults are counted, and a
//! full queue skips calls instead of waiting.

use super::*;
use crate::ha::policy::DefaultPolicy;
use crate::plugin::sample_views;
use crate::plugin::tests::facts;
use std::path::PathBuf;
use std::time::{Duration, Instant};

const GUEST: &str = "test-guest";

/// The test guest as a one-policy set, with `deadline_ms` as given.
fn guest_set(deadline_ms: u64) -> (tempfile::TempDir, Arc<PolicySet>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let wasm = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testdata/test-guest.wasm");
    std::fs::copy(&wasm, dir.path().join(format!("{GUEST}.wasm"))).expect("copy the test guest");
    std::fs::write(
        dir.path().join(format!("{GUEST}.toml")),
        format!("name = \"{GUEST}\"\ncomponent = \"{GUEST}.wasm\"\ndeadline_ms = {deadline_ms}\n"),
    )
    .expect("manifest");
    let set = PolicySet::load(dir.path(), &[GUEST.to_string()], None).expect("load the guest");
    (dir, Arc::new(set))
}

/// Poll until `hook`'s `what` count reaches `n`.
fn wait_count(s: &Shadow, hook: Hook, what: ShadowCount, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while s.count(hook, what) < n {
        assert!(
            Instant::now() < deadline,
            "{what:?} of {hook:?} stayed at {} (wanted {n}): {}",
            s.count(hook, what),
            s.info()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn the_serving_answer_decides_and_the_shadow_counts_divergences() {
    let (_dir, set) = guest_set(2000);
    let shadow = Arc::new(Shadow::start(set).expect("start"));
    let shadowed = Shadowed {
        serving: Arc::new(DefaultPolicy),
        shadow: shadow.clone(),
    };

    // The same winner: a call, no divergence.
    let view = sample_views().remove(0).1;
    assert_eq!(shadowed.rank(&view), DefaultPolicy.rank(&view));
    wait_count(&shadow, Hook::RankCandidates, ShadowCount::Call, 1);

    // The guest vetoes where the built-in rules rank someone: the serving ranking is returned
    // unchanged, the shadow counts a divergence.
    let mut echo = view.clone();
    echo.members[1]
        .tags
        .insert("fault".into(), "echo-view".into());
    let serving = DefaultPolicy.rank(&echo);
    assert!(
        matches!(&serving, Ranking::Candidates(c) if !c.is_empty()),
        "{serving:?}"
    );
    assert_eq!(shadowed.rank(&echo), serving);
    wait_count(&shadow, Hook::RankCandidates, ShadowCount::Divergence, 1);
    assert_eq!(shadow.count(Hook::RankCandidates, ShadowCount::Call), 2);

    // Health: the guest reports the clock as degraded; the serving verdict was healthy.
    shadow.offer_health(&facts("clock"), "pg1", false, &Health::Healthy);
    wait_count(&shadow, Hook::CheckHealth, ShadowCount::Divergence, 1);
    shadow.offer_health(&facts("running"), "pg1", false, &Health::Healthy);
    wait_count(&shadow, Hook::CheckHealth, ShadowCount::Call, 2);
    assert_eq!(shadow.count(Hook::CheckHealth, ShadowCount::Divergence), 1);

    // A fault is counted, not a divergence, and the shadow goes on.
    shadow.offer_health(&facts("fault-panic"), "pg1", false, &Health::Healthy);
    wait_count(&shadow, Hook::CheckHealth, ShadowCount::Fault, 1);
    shadow.offer_health(&facts("clock"), "pg1", false, &Health::Healthy);
    wait_count(&shadow, Hook::CheckHealth, ShadowCount::Divergence, 2);

    let info = shadow.info();
    assert_eq!(info["counters"]["check-health"]["divergences"], 2, "{info}");
    assert_eq!(info["counters"]["check-health"]["faults"], 1, "{info}");
    assert_eq!(info["last_divergence"]["hook"], "check-health", "{info}");
    assert_eq!(info["last_divergence"]["serving"], "healthy", "{info}");
    assert_eq!(shadow.totals_json()["divergences"], 3);
    assert!(
        shadow.summary().starts_with("test-guest@"),
        "{}",
        shadow.summary()
    );
}

#[test]
fn a_slow_shadow_never_delays_the_caller_and_a_full_queue_skips() {
    // Each shadow call loops until its deadline: the thread is busy for 300 ms a call.
    let (_dir, set) = guest_set(300);
    let shadow = Shadow::start(set).expect("start");
    let t0 = Instant::now();
    for _ in 0..(QUEUE + 6) {
        shadow.offer_health(&facts("fault-loop"), "pg1", false, &Health::Healthy);
    }
    let offered = t0.elapsed();
    assert!(
        offered < Duration::from_millis(100),
        "offering took {offered:?}: the caller waited for the shadow"
    );
    let skipped = shadow.count(Hook::CheckHealth, ShadowCount::Skipped);
    // One call in hand (or not yet taken), at most QUEUE waiting: the rest are skipped.
    assert!(skipped >= 5, "skipped {skipped}: {}", shadow.info());
    let taken = (QUEUE + 6) as u64 - skipped;
    wait_count(&shadow, Hook::CheckHealth, ShadowCount::Fault, taken);
    assert_eq!(shadow.count(Hook::CheckHealth, ShadowCount::Call), taken);
    eprintln!(
        "offered {} calls in {offered:?}: {skipped} skipped, {taken} run (each a deadline fault)",
        QUEUE + 6
    );
}
