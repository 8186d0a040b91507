//! Policy host benchmarks:
//! - `rank/9-members/*`: one candidate ranking of a 9-member view through a plugin, reusing
//!   its instance (target: ≤ 5 µs median), next to the built-in rules;
//! - `check-health/*`: one health check;
//! - `hot-reload/write-to-serving`: from writing a new component (rename into place) to the
//!   new version serving, through the directory watcher (target: ≤ 100 ms). Each iteration is a
//!   new component, so it includes compiling it.
//!
//! Run: `cargo bench --bench policy`. Uses `testdata/test-guest.wasm`, and
//! `policies/patroni-default.*` when the plugins are there.

use criterion::{Criterion, criterion_group, criterion_main};
use regent::ha::policy::{DefaultPolicy, HealthFacts, Policy};
use regent::policy::{PolicySet, nine_members, sample_views};
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

fn write_policy(dir: &Path, name: &str, wasm: &[u8]) {
    std::fs::write(dir.join(format!("{name}.wasm")), wasm).unwrap();
    std::fs::write(
        dir.join(format!("{name}.toml")),
        format!("name = \"{name}\"\ncomponent = \"{name}.wasm\"\n"),
    )
    .unwrap();
}

fn facts() -> HealthFacts {
    HealthFacts {
        role: "replica".into(),
        state: "running".into(),
        timeline: Some(3),
        wal_position: Some(1 << 32),
        replication_connections: 0,
        lag_bytes: Some(0),
        seconds_in_state: 600,
    }
}

fn ranking(c: &mut Criterion) {
    let view = nine_members();
    let mut g = c.benchmark_group("rank/9-members");
    g.bench_function("builtin-default", |b| {
        b.iter(|| DefaultPolicy.rank(black_box(&view)))
    });

    let dir = tempfile::tempdir().unwrap();
    write_policy(dir.path(), "test-guest", &guest());
    let set = PolicySet::load(dir.path(), &["test-guest".into()], None).unwrap();
    g.bench_function("test-guest", |b| b.iter(|| set.rank(black_box(&view))));

    let plugins = host_dir().join("../policies");
    if plugins.join("patroni-default.toml").exists() {
        let set = PolicySet::load(&plugins, &["patroni-default".into()], None).unwrap();
        g.bench_function("patroni-default", |b| b.iter(|| set.rank(black_box(&view))));
    } else {
        eprintln!("policies/patroni-default.toml not there: benchmarking the test guest only");
    }
    // The cost grows with the strings the view carries (each is copied into the guest through
    // its allocator): the same view without tags (no zone, no rack).
    let mut bare = view.clone();
    for m in &mut bare.members {
        m.tags.clear();
    }
    g.bench_function("test-guest-no-tags", |b| {
        b.iter(|| set.rank(black_box(&bare)))
    });
    g.finish();

    let mut g = c.benchmark_group("rank/3-members");
    let small = sample_views().remove(0).1;
    g.bench_function("builtin-default", |b| {
        b.iter(|| DefaultPolicy.rank(black_box(&small)))
    });
    g.bench_function("test-guest", |b| b.iter(|| set.rank(black_box(&small))));
    g.finish();

    let mut g = c.benchmark_group("check-health");
    let f = facts();
    g.bench_function("test-guest", |b| b.iter(|| set.health(black_box(&f))));
    g.finish();
    let faults = set.info()["policies"][0]["faults"]["count"].clone();
    assert_eq!(faults, 0, "no fault while benchmarking");
}

fn hot_reload(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let base = guest();
    write_policy(dir.path(), "test-guest", &base);
    let set = Arc::new(PolicySet::load(dir.path(), &["test-guest".into()], None).unwrap());
    let _watch = set.watch().unwrap();
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
    g.bench_function("write-to-serving", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                n += 1;
                let before = digest(&set);
                let bytes = variant(&base, &format!("v{n}"));
                let start = Instant::now();
                let tmp = dir.path().join(".test-guest.wasm.tmp");
                std::fs::write(&tmp, &bytes).unwrap();
                std::fs::rename(&tmp, dir.path().join("test-guest.wasm")).unwrap();
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
    let info = set.info();
    let p = &info["policies"][0];
    eprintln!(
        "hot-reload: last reload {:.1} ms inside the reloader (read + compile + link + \
         describe + configure + self-test), of which compiling {:.1} ms; debounce {} ms",
        p["reloads"]["last"]["ms"].as_f64().unwrap_or(f64::NAN),
        p["compile"]["ms"].as_f64().unwrap_or(f64::NAN),
        regent::policy::DEBOUNCE.as_millis()
    );
}

criterion_group!(benches, ranking, hot_reload);
criterion_main!(benches);
