//! Cluster-wide policy rollout through etcd (`regent ctl policy push|status|promote|rollback`)
//! on three real `regent` nodes over real etcd and PostgreSQL. The nodes start with a local
//! policy (`regent.policies_dir`); a pushed set replaces it on every member within a few loops
//! (each node's `GET /policy` names the pushed component's sha256); components that do not
//! load (a trap in the self-test, another WIT version, too large) are refused before anything
//! is written; a set the nodes themselves refuse (its deadline does not fit the lease) leaves
//! the serving policies in place and is reported; rollback restores the previous digests
//! everywhere; a canary push reaches only the canary until `promote`; a restarted node runs the
//! pushed set, not its local one; a shadow set (`push --shadow`) runs beside the active one on
//! every member, its divergences (health verdicts, and a veto during a switchover) counted in
//! `/metrics` and shown by `policy status`, without deciding anything, until `promote` makes it
//! active or `rollback` drops it.

mod support;

use serde_json::Value;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use support::ctl::*;
use support::*;

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
}

fn sha256(path: &Path) -> String {
    let bytes = std::fs::read(path).expect("read component");
    Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn ctl(c: &Cluster, args: &[&str]) -> Ran {
    let config = c.nodes[0].config.display().to_string();
    let mut all = vec!["-c", config.as_str()];
    all.extend_from_slice(args);
    regent_ctl(&all)
}

/// The full digests of the policies node `n` serves, in order (from `GET /policy`).
fn serving(n: &Node) -> Option<Vec<String>> {
    let (s, body) = n.http_get("/policy")?;
    if s != 200 {
        return None;
    }
    let doc: Value = serde_json::from_str(&body).ok()?;
    Some(
        doc["policies"]
            .as_array()?
            .iter()
            .filter_map(|p| p["digest"].as_str().map(str::to_string))
            .collect(),
    )
}

/// Wait until every node serves `digests`; how long that took.
fn all_serve(c: &Cluster, digests: &[&str], within: Duration) -> Duration {
    let t0 = Instant::now();
    for n in &c.nodes {
        wait_for(
            &format!("{} to serve {digests:?}", n.name),
            within.saturating_sub(t0.elapsed()),
            || (serving(n)? == digests).then_some(()),
        );
    }
    t0.elapsed()
}

fn policy_set(c: &Cluster) -> Option<String> {
    c.etcd.get("/service/test/regent/policy-set")
}

/// A directory with `name.toml` (text) and its component copied from `wasm`.
fn policy_dir(c: &Cluster, dir: &str, name: &str, wasm: &Path, toml: &str) -> PathBuf {
    let d = c.tmp.path().join(dir);
    std::fs::create_dir_all(&d).expect("policy dir");
    std::fs::copy(wasm, d.join(format!("{name}.wasm"))).expect("copy component");
    std::fs::write(d.join(format!("{name}.toml")), toml).expect("write manifest");
    d.join(format!("{name}.toml"))
}

#[test]
fn pushed_policies_reach_every_member_and_roll_back() {
    let _g = serial();
    let mut c = Cluster::new(3, NodeSpec::default());
    // Every node starts with the local patroni-default policy.
    let local = c.tmp.path().join("local-policies");
    std::fs::create_dir_all(&local).expect("local dir");
    for f in ["patroni-default.toml", "patroni-default.wasm"] {
        std::fs::copy(repo(&format!("policies/{f}")), local.join(f)).expect("copy policy");
    }
    for n in &c.nodes {
        let mut text = std::fs::read_to_string(&n.config).expect("config");
        text.push_str(&format!(
            "regent:\n  policies_dir: {}\n  policies: [patroni-default]\n",
            local.display()
        ));
        std::fs::write(&n.config, text).expect("config");
    }
    c.start_all();
    let leader = c.wait_leader(Duration::from_secs(90));
    c.wait_streaming(leader, 2, Duration::from_secs(90));
    let local_digest = sha256(&repo("policies/patroni-default.wasm"));
    all_serve(&c, &[&local_digest], Duration::from_secs(10));
    assert!(
        ctl(&c, &["policy", "status"])
            .expect_ok("status")
            .stdout
            .contains("No policy set was pushed"),
    );

    // Push: the pushed set replaces the local policy on every member.
    let zone = sha256(&repo("policies/zone-aware.wasm"));
    let t0 = Instant::now();
    let pushed = ctl(
        &c,
        &[
            "-f",
            "json",
            "policy",
            "push",
            repo("policies/zone-aware.toml").to_str().unwrap(),
        ],
    )
    .expect_ok("push zone-aware");
    let took = all_serve(&c, &[&zone], Duration::from_secs(15));
    let reported = pushed.json()["serving_after_ms"]
        .as_u64()
        .expect("serving_after_ms");
    eprintln!(
        "push → all 3 members serving: ctl reported {reported} ms; GET /policy on every node agreed {:?} after the push began ({:?} after ctl returned)",
        t0.elapsed(),
        took
    );
    for n in &c.nodes {
        let m = c.member_key(&n.name);
        assert_eq!(m["policy"], format!("zone-aware@{}", &zone[..8]), "{m}");
        assert_eq!(m["policy_generation"], 1, "{m}");
    }
    let list = ctl(&c, &["list"]).expect_ok("list");
    assert!(
        list.stdout.contains(&format!("zone-aware@{}", &zone[..8])),
        "{}",
        list.stdout
    );
    let stored = c
        .etcd
        .get(&format!("/service/test/regent/policies/{zone}"))
        .expect("the component is stored under its digest");
    assert!(!stored.is_empty());

    // Bad components are refused before anything is written: nothing changes.
    let fixtures = repo("tests/fixtures/policies");
    let trap = policy_dir(
        &c,
        "bad-trap",
        "faulty",
        &fixtures.join("faulty.wasm"),
        "name = \"faulty\"\ncomponent = \"faulty.wasm\"\nhooks = [\"rank-candidates\"]\n\
         [settings]\nmode = \"trap\"\nwhen_member = \"pg-a\"\n",
    );
    let wrong = policy_dir(
        &c,
        "bad-wit",
        "wrong",
        &fixtures.join("wrong-version.wasm"),
        "name = \"wrong\"\ncomponent = \"wrong.wasm\"\n",
    );
    let big_wasm = c.tmp.path().join("big.wasm");
    let mut big = std::fs::read(repo("policies/zone-aware.wasm")).expect("read");
    big.resize(1024 * 1024 + 1, 0);
    std::fs::write(&big_wasm, big).expect("write big");
    let too_big = policy_dir(
        &c,
        "bad-size",
        "big",
        &big_wasm,
        "name = \"big\"\ncomponent = \"big.wasm\"\n",
    );
    let set_before = policy_set(&c);
    for (manifest, why) in [
        (&trap, "self-test failed"),
        (&wrong, "different regent:policy version"),
        (&too_big, "over the limit of 1048576 bytes"),
    ] {
        let r = ctl(&c, &["policy", "push", manifest.to_str().unwrap()]);
        assert_eq!(r.code, Some(1), "{r:?}");
        assert!(
            r.stderr.contains(why) && r.stderr.contains("nothing was pushed"),
            "{r:?}"
        );
        assert_eq!(policy_set(&c), set_before, "a refused push changed the set");
    }
    all_serve(&c, &[&zone], Duration::from_secs(5));

    // A set the nodes refuse (deadline_ms does not fit ttl 10): they keep zone-aware and say why.
    let text = std::fs::read_to_string(repo("policies/zone-aware.toml")).expect("manifest");
    let slow = policy_dir(
        &c,
        "slow",
        "zone-aware",
        &repo("policies/zone-aware.wasm"),
        &text.replacen("component", "deadline_ms = 9000\ncomponent", 1),
    );
    let r = ctl(&c, &["policy", "push", slow.to_str().unwrap()]);
    assert_eq!(r.code, Some(1), "{r:?}");
    assert!(
        r.stderr
            .contains("refused it and keep their previous policies"),
        "{r:?}"
    );
    all_serve(&c, &[&zone], Duration::from_secs(5));
    let status = ctl(&c, &["-f", "json", "policy", "status"])
        .expect_ok("status")
        .json();
    for m in status["members"].as_array().expect("members") {
        let state = m["state"].as_str().unwrap_or_default();
        assert!(
            state.starts_with("refused: ") && state.contains("deadline_ms"),
            "{status}"
        );
    }
    assert!(c.member_key("pg2")["policy_error"].as_str().is_some());

    // Rollback returns to the previous set everywhere and clears the errors.
    ctl(&c, &["policy", "rollback"]).expect_ok("rollback");
    all_serve(&c, &[&zone], Duration::from_secs(15));
    for n in &c.nodes {
        assert!(c.member_key(&n.name).get("policy_error").is_none());
    }

    // Two policies, then rollback to one: every member's digests follow.
    let sync = sha256(&repo("policies/sync-only.wasm"));
    ctl(
        &c,
        &[
            "policy",
            "push",
            repo("policies/sync-only.toml").to_str().unwrap(),
        ],
    )
    .expect_ok("push sync-only");
    all_serve(&c, &[&zone, &sync], Duration::from_secs(15));
    ctl(&c, &["policy", "rollback"]).expect_ok("rollback to zone-aware");
    all_serve(&c, &[&zone], Duration::from_secs(15));

    // Canary: only pg2 runs the new set until promote.
    ctl(
        &c,
        &[
            "policy",
            "push",
            repo("policies/sync-only.toml").to_str().unwrap(),
            "--canary",
            "pg2",
        ],
    )
    .expect_ok("canary push");
    wait_for(
        "pg2 to serve the canary set",
        Duration::from_secs(15),
        || (serving(c.node("pg2"))? == [zone.clone(), sync.clone()]).then_some(()),
    );
    for name in ["pg1", "pg3"] {
        assert_eq!(serving(c.node(name)), Some(vec![zone.clone()]), "{name}");
    }
    ctl(&c, &["policy", "promote"]).expect_ok("promote");
    all_serve(&c, &[&zone, &sync], Duration::from_secs(15));

    // A restarted node runs the pushed set, not its local policy.
    let replica = (0..3).find(|i| Some(*i) != c.leader()).expect("a replica");
    c.nodes[replica].crash();
    c.nodes[replica].start();
    let n = &c.nodes[replica];
    wait_for(
        &format!("{} to serve the pushed set again", n.name),
        Duration::from_secs(30),
        || (serving(n)? == [zone.clone(), sync.clone()]).then_some(()),
    );
}

/// Node `n`'s `/metrics` value of `family{...hook="HOOK"}` (0 before the first sample).
fn shadow_metric(n: &Node, family: &str, hook: &str) -> Option<u64> {
    let (s, body) = n.http_get("/metrics")?;
    if s != 200 {
        return None;
    }
    let label = format!("hook=\"{hook}\"");
    Some(
        body.lines()
            .filter(|l| l.starts_with(&format!("{family}{{")) && l.contains(&label))
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
            .map(|v| v as u64)
            .sum(),
    )
}

/// Node `n`'s `GET /policy` document.
fn policy_doc(n: &Node) -> Option<Value> {
    let (s, body) = n.http_get("/policy")?;
    (s == 200).then(|| serde_json::from_str(&body).ok())?
}

/// replication-guard probing `SELECT 0` (a failing probe) on every node: degraded from the
/// first loop, failed after `failures` loops.
fn failing_guard(c: &Cluster, dir: &str, failures: u32) -> PathBuf {
    policy_dir(
        c,
        dir,
        "replication-guard",
        &repo("policies/replication-guard.wasm"),
        &format!(
            "name = \"replication-guard\"\ncomponent = \"replication-guard.wasm\"\n\
             hooks = [\"check-health\"]\ncapabilities = [\"sql-probe\"]\n\
             [settings]\nfailures_before_failed = {failures}\nprobe = \"zero\"\nrole = \"any\"\n\
             [[probes]]\nname = \"zero\"\nsql = \"SELECT 0\"\ntimeout_ms = 1000\n"
        ),
    )
}

#[test]
fn a_shadow_policy_counts_divergences_without_deciding() {
    let _g = serial();
    let (c, leader) = Cluster::healthy(3, NodeSpec::default());
    let leader_name = c.nodes[leader].name.clone();
    let divergences = "regent_policy_shadow_divergences_total";

    // The cluster's active set: event-journal, pushed (it ranks nothing: the built-in rules
    // rank, so a shadow with a ranking policy ranks differently).
    let pd = sha256(&repo("policies/event-journal.wasm"));
    ctl(
        &c,
        &[
            "policy",
            "push",
            repo("policies/event-journal.toml").to_str().unwrap(),
        ],
    )
    .expect_ok("push event-journal");
    all_serve(&c, &[&pd], Duration::from_secs(15));

    // --shadow and --canary do not go together.
    let guard = sha256(&repo("policies/replication-guard.wasm"));
    let failed = failing_guard(&c, "guard-failed", 1);
    let r = ctl(
        &c,
        &[
            "policy",
            "push",
            "--shadow",
            failed.to_str().unwrap(),
            "--canary",
            "pg2",
        ],
    );
    assert!(!r.ok() && r.stderr.contains("cannot be used with"), "{r:?}");
    assert!(policy_set(&c).is_some_and(|s| !s.contains("shadow")));

    // A shadow that judges every node failed from its first loop: every member loads it, the
    // divergences show in /metrics, and the serving rules still decide: the leader keeps the
    // key, every node reports itself healthy.
    let t0 = Instant::now();
    let pushed = ctl(
        &c,
        &[
            "-f",
            "json",
            "policy",
            "push",
            "--shadow",
            failed.to_str().unwrap(),
        ],
    )
    .expect_ok("push --shadow");
    eprint!("{}", pushed.stderr);
    let loaded_ms = pushed.json()["serving_after_ms"]
        .as_u64()
        .expect("serving_after_ms");
    let shadow_summary = format!(
        "event-journal@{},replication-guard@{}",
        &pd[..8],
        &guard[..8]
    );
    for n in &c.nodes {
        let m = c.member_key(&n.name);
        assert_eq!(m["policy_shadow"], shadow_summary.as_str(), "{m}");
        assert_eq!(m["policy"], format!("event-journal@{}", &pd[..8]), "{m}");
    }
    for n in &c.nodes {
        wait_for(
            &format!("{}'s shadow divergences on /metrics", n.name),
            Duration::from_secs(30),
            || (shadow_metric(n, divergences, "check-health")? >= 1).then_some(()),
        );
    }
    let visible = t0.elapsed();
    eprintln!(
        "push --shadow → all 3 members report the shadow loaded: ctl reported {loaded_ms} ms; \
         divergences on /metrics of every node {visible:?} after the push began"
    );
    // Past failed_loops_before_handover (2) loops of a failed shadow verdict on the leader.
    wait_for(
        "six check-health divergences on the leader",
        Duration::from_secs(30),
        || (shadow_metric(&c.nodes[leader], divergences, "check-health")? >= 6).then_some(()),
    );
    assert_eq!(
        c.leader(),
        Some(leader),
        "the shadow's verdict moved the leader"
    );
    assert!(
        c.leader_key().is_some_and(|k| k == leader_name),
        "{:?}",
        c.leader_key()
    );
    for n in &c.nodes {
        let doc = policy_doc(n).expect("GET /policy");
        assert_eq!(doc["health"]["verdict"], "healthy", "{}: {doc}", n.name);
        let shadow = &doc["shadow"];
        assert_eq!(shadow["summary"], shadow_summary.as_str(), "{doc}");
        assert!(
            shadow["counters"]["check-health"]["divergences"].as_u64() >= Some(1),
            "{doc}"
        );
        assert_eq!(shadow["last_divergence"]["serving"], "healthy", "{doc}");
        assert!(
            shadow["last_divergence"]["shadow"]
                .as_str()
                .is_some_and(|s| s.starts_with("failed")),
            "{doc}"
        );
        assert_eq!(serving(n), Some(vec![pd.clone()]), "{}", n.name);
    }
    let log = c.nodes[leader].log();
    let logged = log
        .lines()
        .find(|l| l.contains("the shadow policies disagree with the serving ones"))
        .expect("a divergence logged");
    eprintln!("{logged}");
    if let Some((_, metrics)) = c.nodes[leader].http_get("/metrics") {
        for l in metrics
            .lines()
            .filter(|l| l.starts_with("regent_policy_shadow_"))
        {
            eprintln!("{l}");
        }
    }

    // ctl policy status shows the shadow and its divergences per member.
    let status = ctl(&c, &["policy", "status"]).expect_ok("status").stdout;
    eprintln!("{status}");
    assert!(
        status.contains("Shadow") && status.contains("Divergences"),
        "{status}"
    );
    assert!(
        status.contains(&format!("shadow {shadow_summary}")),
        "{status}"
    );
    let status = ctl(&c, &["-f", "json", "policy", "status"])
        .expect_ok("status")
        .json();
    for m in status["members"].as_array().expect("members") {
        assert_eq!(m["shadow"], shadow_summary.as_str(), "{status}");
        assert!(
            m["shadow_counters"]["divergences"].as_u64() >= Some(1),
            "{status}"
        );
        assert_eq!(m["state"], "serving", "{status}");
    }

    // Rollback drops the shadow everywhere; the active set stays.
    let r = ctl(&c, &["policy", "rollback"]).expect_ok("rollback drops the shadow");
    eprint!("{}", r.stdout);
    for n in &c.nodes {
        assert!(c.member_key(&n.name).get("policy_shadow").is_none());
        // `GET /policy` answers from the view the loop publishes after the member key.
        wait_for(
            &format!("{}'s GET /policy without a shadow", n.name),
            Duration::from_secs(5),
            || policy_doc(n)?.get("shadow").is_none().then_some(()),
        );
    }
    all_serve(&c, &[&pd], Duration::from_secs(5));

    // A shadow the members refuse (its deadline does not fit ttl 10): `push` says so, each
    // member reports why and runs without a shadow; nothing else changes.
    let text = std::fs::read_to_string(repo("policies/zone-aware.toml")).expect("manifest");
    let slow = policy_dir(
        &c,
        "slow-shadow",
        "zone-aware",
        &repo("policies/zone-aware.wasm"),
        &text.replacen("component", "deadline_ms = 9000\ncomponent", 1),
    );
    let r = ctl(&c, &["policy", "push", "--shadow", slow.to_str().unwrap()]);
    assert_eq!(r.code, Some(1), "{r:?}");
    assert!(
        r.stderr.contains("refused it") && r.stderr.contains("deadline_ms"),
        "{r:?}"
    );
    for n in &c.nodes {
        let m = c.member_key(&n.name);
        assert!(
            m["policy_shadow_error"]
                .as_str()
                .is_some_and(|e| e.contains("deadline_ms")),
            "{m}"
        );
        assert!(m.get("policy_shadow").is_none(), "{m}");
        assert!(m.get("policy_error").is_none(), "{m}");
    }
    all_serve(&c, &[&pd], Duration::from_secs(5));
    let status = ctl(&c, &["policy", "status"]).expect_ok("status").stdout;
    assert!(status.contains("refused the pushed set"), "{status}");
    ctl(&c, &["policy", "rollback"]).expect_ok("rollback drops the refused shadow");
    for n in &c.nodes {
        assert!(c.member_key(&n.name).get("policy_shadow_error").is_none());
    }

    // A shadow that vetoes every election the replica `veto` is in: a switchover to that
    // replica still happens (the built-in rules decide), and the leader's ranking counts a
    // divergence.
    let veto = c
        .nodes
        .iter()
        .map(|n| n.name.clone())
        .find(|n| *n != leader_name)
        .expect("a replica");
    let vetoing = policy_dir(
        &c,
        "veto",
        "faulty",
        &repo("tests/fixtures/policies/faulty.wasm"),
        &format!(
            "name = \"faulty\"\ncomponent = \"faulty.wasm\"\nhooks = [\"rank-candidates\"]\n\
             [settings]\nmode = \"veto\"\nwhen_member = \"{veto}\"\n"
        ),
    );
    ctl(
        &c,
        &["policy", "push", "--shadow", vetoing.to_str().unwrap()],
    )
    .expect_ok("push --shadow a vetoing policy");
    let rank = "rank-candidates";
    let before = shadow_metric(&c.nodes[leader], divergences, rank).unwrap_or(0);
    ctl(&c, &["switchover", "--candidate", &veto, "--force"]).expect_ok("switchover");
    wait_for("the candidate to lead", Duration::from_secs(30), || {
        (c.leader_key()? == veto && c.node(&veto).http_get("/primary")?.0 == 200).then_some(())
    });
    wait_for(
        &format!("a ranking divergence on {leader_name}"),
        Duration::from_secs(10),
        || (shadow_metric(&c.nodes[leader], divergences, rank)? > before).then_some(()),
    );
    // `GET /policy` answers from the view the loop publishes at its end.
    let last = wait_for(
        &format!("{leader_name}'s GET /policy to show the ranking divergence"),
        Duration::from_secs(10),
        || {
            let last = policy_doc(&c.nodes[leader])?["shadow"]["last_divergence"].clone();
            (last["hook"] == rank).then_some(last)
        },
    );
    assert!(
        last["shadow"]
            .as_str()
            .is_some_and(|s| s.starts_with("veto")),
        "{last}"
    );
    eprintln!("switchover to {veto} with a vetoing shadow: {last}");
    let leader = c.nodes.iter().position(|n| n.name == veto).expect("index");
    let leader_name = veto;
    ctl(&c, &["policy", "rollback"]).expect_ok("rollback drops the vetoing shadow");

    // A shadow that only degrades (harmless if it served): promote makes it active everywhere,
    // rollback returns to the previous digest everywhere.
    let degraded = failing_guard(&c, "guard-degraded", 1_000_000);
    ctl(
        &c,
        &["policy", "push", "--shadow", degraded.to_str().unwrap()],
    )
    .expect_ok("push --shadow degraded");
    wait_for(
        "a divergence of the new shadow on the leader",
        Duration::from_secs(30),
        || {
            (c.member_key(&leader_name)["policy_shadow_counters"]["divergences"].as_u64()? >= 1)
                .then_some(())
        },
    );
    let promoted = Instant::now();
    let r = ctl(&c, &["policy", "promote"]).expect_ok("promote the shadow");
    eprint!("{}", r.stdout);
    all_serve(&c, &[&pd, &guard], Duration::from_secs(15));
    eprintln!(
        "promote → the shadow active on all 3 members: {:?}",
        promoted.elapsed()
    );
    for n in &c.nodes {
        assert!(c.member_key(&n.name).get("policy_shadow").is_none());
    }
    let set: Value = serde_json::from_str(&policy_set(&c).expect("policy-set")).expect("JSON");
    assert!(set.get("shadow").is_none(), "{set}");
    let r = ctl(&c, &["policy", "rollback"]).expect_ok("rollback to event-journal");
    eprint!("{}", r.stdout);
    all_serve(&c, &[&pd], Duration::from_secs(15));
    assert_eq!(c.leader(), Some(leader), "the leader moved");
}
