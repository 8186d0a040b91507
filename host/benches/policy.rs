//! Policy host benchmarks:
//! - `rank/9-members/*`: one candidate ranking of a realistic 9-member view
//!   ([`nine_members`]: three zones, `zone` and `rack` tags, synchronous mode, one unreachable
//!   former leader, one `nofailover`, one lagging replica) through a plugin, reusing its
//!   instance (target: ≤ 5 µs median), next to the built-in rules;
//! - `check-health/*`: one health check;
//! - `hot-reload/*`: from writing a new component (rename into place) to the new version
//!   serving, through the directory watcher (target: ≤ 100 ms for the shipped plugins). Each
//!   iteration is a new component (another digest), so it includes compiling it: as under
//!   `regent run`, in a child process, with quick code first (its optimization follows in the
//!   background; the ranking benchmarks measure the optimized code).
//!
//! Run: `cargo bench --bench policy`. Uses `testdata/test-guest.wasm`, and the shipped
//! `policies/patroni-default.*` and `policies/zone-aware.*` when they are there. The plugins
//! run with their own manifests, except for a 1 s call deadline: the deadline is wall time, and
//! on a busy machine a descheduled benchmark thread would otherwise now and then miss the
//! 50 ms default and measure the fallback instead (the deadline costs the same either way).
//!
//! Wall-clock medians are noisy on a shared machine. For repeatable numbers, count
//! instructions with callgrind: `host/benches/callgrind.sh` runs each case below under
//! `valgrind --tool=callgrind` with `REGENT_CALLGRIND=<case>` set, which makes this binary
//! run `CALLS` calls of that case inside [`measured`] instead of criterion.

use criterion::{Criterion, criterion_group};
use regent::ha::policy::{DefaultPolicy, ElectionView, HealthFacts, Policy};
use regent::plugin::{PolicySet, Tier, nine_members, sample_views};
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn host_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn guest() -> Vec<u8> {
    std::fs::read(host_dir().join("testdata/test-guest.wasm")).expect("testdata/test-guest.wasm")
}

/// The shipped plugins benchmarked, when `policies/` has them.
const PLUGINS: [&str; 2] = ["patroni-default", "zone-aware"];

/// The same component with a custom section appended: a new digest, the same behaviour.
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
    let name = b"regent-bench";
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

/// Write `NAME.toml` (`manifest`, or a minimal one) with a 1 s deadline, and `NAME.wasm`.
fn write_policy(dir: &Path, name: &str, wasm: &[u8], manifest: Option<&str>) {
    std::fs::write(dir.join(format!("{name}.wasm")), wasm).unwrap();
    let body = manifest.map_or_else(
        || format!("name = \"{name}\"\ncomponent = \"{name}.wasm\"\n"),
        str::to_string,
    );
    // Top-level keys go before the manifest's first table (`[settings]`).
    std::fs::write(
        dir.join(format!("{name}.toml")),
        format!("deadline_ms = 1000\n{body}"),
    )
    .unwrap();
}

/// A directory with the test guest and the shipped plugins that exist, and which those are.
fn bench_dir() -> (tempfile::TempDir, Vec<&'static str>) {
    let dir = tempfile::tempdir().unwrap();
    write_policy(dir.path(), "test-guest", &guest(), None);
    let policies = host_dir().join("../policies");
    let mut found = Vec::new();
    for name in PLUGINS {
        let (Ok(wasm), Ok(manifest)) = (
            std::fs::read(policies.join(format!("{name}.wasm"))),
            std::fs::read_to_string(policies.join(format!("{name}.toml"))),
        ) else {
            eprintln!("policies/{name}.* not there: not benchmarked");
            continue;
        };
        write_policy(dir.path(), name, &wasm, Some(&manifest));
        found.push(name);
    }
    (dir, found)
}

/// Load a policy and wait until its optimized code serves.
fn load(dir: &Path, name: &str) -> PolicySet {
    let set = PolicySet::load(dir, &[name.to_string()], None).unwrap();
    wait_optimized(&set, name);
    set
}

fn wait_optimized(set: &PolicySet, name: &str) {
    let start = Instant::now();
    while set.policies()[0].tier() != Tier::Optimized {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{name}: no optimized code after 60 s: {}",
            set.info()["policies"][0]["compile"]
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn facts() -> HealthFacts {
    HealthFacts {
        role: "replica".into(),
        state: "running".into(),
        timeline: Some(3),
        wal_position: Some(1 << 32),
        received_lsn: None,
        replayed_lsn: None,
        replication_connections: 0,
        lag_bytes: Some(0),
        seconds_in_state: 600,
    }
}

/// The 9-member view without any tags (no zone, no rack): what the tags cost.
fn without_tags(view: &ElectionView) -> ElectionView {
    let mut bare = view.clone();
    for m in &mut bare.members {
        m.tags.clear();
    }
    bare
}

fn assert_no_faults(set: &PolicySet) {
    let info = set.info();
    let faults = &info["policies"][0]["faults"];
    assert_eq!(faults["count"], 0, "no fault while benchmarking: {faults}");
}

fn ranking(c: &mut Criterion) {
    let (dir, plugins) = bench_dir();
    let view = nine_members();
    let guest = load(dir.path(), "test-guest");

    let mut g = c.benchmark_group("rank/9-members");
    g.bench_function("builtin-default", |b| {
        b.iter(|| DefaultPolicy.rank(black_box(&view)))
    });
    g.bench_function("test-guest", |b| b.iter(|| guest.rank(black_box(&view))));
    for name in &plugins {
        let set = load(dir.path(), name);
        g.bench_function(*name, |b| b.iter(|| set.rank(black_box(&view))));
        assert_no_faults(&set);
    }
    // The cost grows with the strings the view carries (each is copied into the guest through
    // its allocator): the same view without tags.
    let bare = without_tags(&view);
    g.bench_function("test-guest-no-tags", |b| {
        b.iter(|| guest.rank(black_box(&bare)))
    });
    g.finish();

    let mut g = c.benchmark_group("rank/3-members");
    let small = sample_views().remove(0).1;
    g.bench_function("builtin-default", |b| {
        b.iter(|| DefaultPolicy.rank(black_box(&small)))
    });
    g.bench_function("test-guest", |b| b.iter(|| guest.rank(black_box(&small))));
    g.finish();

    let mut g = c.benchmark_group("check-health");
    let f = facts();
    g.bench_function("test-guest", |b| b.iter(|| guest.health(black_box(&f))));
    g.finish();
    assert_no_faults(&guest);
}

/// Replace `name`'s component in `dir` by new variants (rename into place) and measure until
/// each serves.
fn reload_one(c: &mut Criterion, dir: &Path, name: &str) {
    let set = Arc::new(load(dir, name));
    let _watch = set.watch().unwrap();
    let base = std::fs::read(dir.join(format!("{name}.wasm"))).unwrap();
    let digest = |set: &PolicySet| {
        set.info()["policies"][0]["digest"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let mut n = 0u64;
    let mut g = c.benchmark_group("hot-reload");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(8));
    g.bench_function(name, |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                n += 1;
                // Reloads are rare: start each one after the last one's optimization is done.
                wait_optimized(&set, name);
                let before = digest(&set);
                let bytes = variant(&base, &format!("v{n}"));
                let start = Instant::now();
                let tmp = dir.join(format!(".{name}.wasm.tmp"));
                std::fs::write(&tmp, &bytes).unwrap();
                std::fs::rename(&tmp, dir.join(format!("{name}.wasm"))).unwrap();
                while digest(&set) == before {
                    assert!(
                        start.elapsed() < Duration::from_secs(10),
                        "reload timed out"
                    );
                    std::thread::sleep(Duration::from_micros(200));
                }
                total += start.elapsed();
            }
            total
        })
    });
    g.finish();
    wait_optimized(&set, name);
    let info = set.info();
    let p = &info["policies"][0];
    eprintln!(
        "hot-reload/{name}: last reload {:.1} ms inside the reloader (read + compile + link + \
         describe + configure + self-test), of which compiling ({} code) {:.1} ms; debounce \
         {} ms; then optimized in {:.1} ms",
        p["reloads"]["last"]["ms"].as_f64().unwrap_or(f64::NAN),
        p["compile"]["first"]["tier"].as_str().unwrap_or("?"),
        p["compile"]["first"]["ms"].as_f64().unwrap_or(f64::NAN),
        regent::plugin::DEBOUNCE.as_millis(),
        p["compile"]["ms"].as_f64().unwrap_or(f64::NAN),
    );
    assert_eq!(
        p["reloads"]["failed"], 0,
        "reload failed: {}",
        p["reloads"]["last_error"]
    );
}

fn hot_reload(c: &mut Criterion) {
    let (dir, plugins) = bench_dir();
    reload_one(c, dir.path(), "test-guest");
    for name in plugins {
        reload_one(c, dir.path(), name);
    }
}

criterion_group!(benches, ranking, hot_reload);

/// Calls per callgrind case.
const CALLS: u32 = 1000;

/// The calls callgrind counts (`--toggle-collect=policy::measured`).
#[inline(never)]
fn measured(n: u32, f: &dyn Fn()) {
    for _ in 0..n {
        f();
    }
}

/// `REGENT_CALLGRIND=<case>`: run `CALLS` calls of one case (after 100 unmeasured ones) for
/// callgrind. Cases: `rank:<policy>` (the 9-member view), `rank-no-tags:<policy>`,
/// `health:<policy>`, `rank:builtin-default`.
fn callgrind(case: &str) {
    let (kind, name) = case
        .split_once(':')
        .unwrap_or_else(|| panic!("REGENT_CALLGRIND={case}: want <kind>:<policy>"));
    if kind == "load" {
        return callgrind_load(name);
    }
    let view = match kind {
        "rank" | "health" => nine_members(),
        "rank-no-tags" => without_tags(&nine_members()),
        _ => panic!("REGENT_CALLGRIND={case}: unknown kind {kind}"),
    };
    let f = facts();
    // Keeps the policy directory until the end.
    let mut _dir = None;
    let run: Box<dyn Fn()> = if name == "builtin-default" {
        Box::new(move || {
            black_box(DefaultPolicy.rank(black_box(&view)));
        })
    } else {
        let (dir, _) = bench_dir();
        let set = load(dir.path(), name);
        _dir = Some(dir);
        if kind == "health" {
            Box::new(move || {
                black_box(set.health(black_box(&f)));
            })
        } else {
            Box::new(move || {
                black_box(set.rank(black_box(&view)));
            })
        }
    };
    for _ in 0..100 {
        run();
    }
    measured(CALLS, &run);
    println!("{case}: {CALLS} calls measured");
}

/// `load:<policy>`: load (compile, link, describe, configure, self-test) `CALLS_LOAD` new
/// variants of a policy's component: the work of a hot reload after the debounce.
fn callgrind_load(name: &str) {
    let (dir, _) = bench_dir();
    let manifest = dir.path().join(format!("{name}.toml"));
    let wasm = dir.path().join(format!("{name}.wasm"));
    let base = std::fs::read(&wasm).unwrap();
    let n = std::cell::Cell::new(0u32);
    let run = || {
        n.set(n.get() + 1);
        std::fs::write(&wasm, variant(&base, &format!("cg{}", n.get()))).unwrap();
        let report = regent::plugin::check(&manifest).unwrap();
        eprintln!("load {name}: compile {:.1} ms", report.compile_ms);
    };
    run();
    measured(CALLS_LOAD, &run);
    println!("load:{name}: {CALLS_LOAD} calls measured");
}

/// Loads per `load:` callgrind case.
const CALLS_LOAD: u32 = 3;

fn main() {
    if let Ok(case) = std::env::var("REGENT_CALLGRIND") {
        callgrind(&case);
        return;
    }
    // As `regent run` does: compile in a child process (the `regent` binary itself).
    regent::plugin::compile_in_subprocess(PathBuf::from(env!("CARGO_BIN_EXE_regent")));
    benches();
    Criterion::default().configure_from_args().final_summary();
}
