//! Regent's own metrics: counters and histograms in one process-wide registry, rendered in
//! Prometheus' text format by `GET /metrics` (after Patroni's `patroni_*` gauges).
//!
//! Recording is lock-free once a labelled series exists: a series is a set of atomics, found
//! under a read lock (a short linear scan; label sets are few). A new label set takes the write
//! lock once. Every family caps its number of series ([`MAX_SERIES`]); label sets beyond the cap
//! are counted under the label value `other`, so a bug cannot grow the registry without bound.
//!
//! ```
//! use std::time::Duration;
//! regent::metrics::ha_loop_seconds().observe(Duration::from_millis(12));
//! regent::metrics::etcd_request("range", Duration::from_millis(2), true);
//! regent::metrics::lease_renewal(true);
//! regent::metrics::election("leader_missing");
//! regent::metrics::failover("lease_expired");
//! regent::metrics::policy_call("zone-aware", "rank-candidates", Duration::from_micros(80));
//! regent::metrics::policy_fault("zone-aware", "deadline");
//! regent::metrics::policy_shadow("check-health", regent::metrics::ShadowCount::Divergence);
//! ```

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// Most label sets a family keeps apart; further ones are counted as `other`.
pub(crate) const MAX_SERIES: usize = 256;

/// Most bucket boundaries a histogram may have.
const MAX_BUCKETS: usize = 16;

const HA_LOOP: &str = "regent_ha_loop_duration_seconds";
const HA_LOOP_HELP: &str = "Duration of one HA loop cycle (observe, decide, act, publish).";

/// HA loop: 5 ms to 30 s.
const LOOP_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// etcd requests: 0.5 ms to 10 s.
const ETCD_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Policy calls: 10 µs to 100 ms (the default deadline is 50 ms).
const POLICY_BUCKETS: &[f64] = &[
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1,
];

/// A monotonically increasing count.
#[derive(Debug, Default)]
pub(crate) struct Counter(AtomicU64);

impl Counter {
    pub(crate) const fn new() -> Counter {
        Counter(AtomicU64::new(0))
    }

    pub(crate) fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Observed durations in fixed buckets (upper bounds in seconds), with their sum.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    /// Per bucket (not cumulative); index `bounds.len()` is `+Inf`.
    counts: [AtomicU64; MAX_BUCKETS + 1],
    /// Sum of observations in nanoseconds.
    sum_nanos: AtomicU64,
}

impl Histogram {
    /// `bounds` must be increasing and at most 16 long (checked at compile time for the
    /// registry's own histograms, which are built in `const` context).
    pub(crate) const fn new(bounds: &'static [f64]) -> Histogram {
        assert!(bounds.len() <= MAX_BUCKETS, "too many histogram buckets");
        Histogram {
            bounds,
            counts: [const { AtomicU64::new(0) }; MAX_BUCKETS + 1],
            sum_nanos: AtomicU64::new(0),
        }
    }

    /// Records one observation: its bucket's count and the sum.
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = self
            .bounds
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(self.bounds.len());
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// Number of observations.
    #[cfg(test)]
    pub(crate) fn count(&self) -> u64 {
        self.counts[..=self.bounds.len()]
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum()
    }

    /// Sum of the observations in seconds.
    pub(crate) fn sum_seconds(&self) -> f64 {
        self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0u64;
        for (i, bound) in self.bounds.iter().enumerate() {
            cumulative += self.counts[i].load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {cumulative}"
            );
        }
        cumulative += self.counts[self.bounds.len()].load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {cumulative}"
        );
        let _ = writeln!(out, "{name}_sum{} {}", braces(labels), self.sum_seconds());
        let _ = writeln!(out, "{name}_count{} {cumulative}", braces(labels));
    }
}

fn braces(labels: &str) -> String {
    if labels.is_empty() {
        String::new()
    } else {
        format!("{{{labels}}}")
    }
}

/// A metric kept apart by label values.
trait Series: Send + Sync {
    fn fresh(bounds: &'static [f64]) -> Self;
    fn render(&self, out: &mut String, name: &str, labels: &str);
    const TYPE: &'static str;
}

impl Series for Counter {
    fn fresh(_: &'static [f64]) -> Self {
        Counter::new()
    }
    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let _ = writeln!(out, "{name}{} {}", braces(labels), self.get());
    }
    const TYPE: &'static str = "counter";
}

impl Series for Histogram {
    fn fresh(bounds: &'static [f64]) -> Self {
        Histogram::new(bounds)
    }
    fn render(&self, out: &mut String, name: &str, labels: &str) {
        Histogram::render(self, out, name, labels)
    }
    const TYPE: &'static str = "histogram";
}

/// A named metric with label names; one series per label-value tuple.
struct Family<M> {
    name: &'static str,
    help: &'static str,
    label_names: &'static [&'static str],
    /// Histogram buckets (unused for counters).
    bounds: &'static [f64],
    series: RwLock<Vec<Entry<M>>>,
}

/// Label values and their series.
type Entry<M> = (Box<[String]>, Arc<M>);

impl<M: Series> Family<M> {
    const fn new(
        name: &'static str,
        help: &'static str,
        label_names: &'static [&'static str],
        bounds: &'static [f64],
    ) -> Family<M> {
        Family {
            name,
            help,
            label_names,
            bounds,
            series: RwLock::new(Vec::new()),
        }
    }

    fn find(list: &[Entry<M>], values: &[&str]) -> Option<Arc<M>> {
        list.iter()
            .find(|(k, _)| k.len() == values.len() && k.iter().zip(values).all(|(a, b)| a == b))
            .map(|(_, m)| m.clone())
    }

    /// The series for `values` (one per label name), created on first use.
    fn with(&self, values: &[&str]) -> Arc<M> {
        debug_assert_eq!(values.len(), self.label_names.len());
        {
            let list = self.series.read().unwrap_or_else(|p| p.into_inner());
            if let Some(m) = Self::find(&list, values) {
                return m;
            }
        }
        let mut list = self.series.write().unwrap_or_else(|p| p.into_inner());
        if let Some(m) = Self::find(&list, values) {
            return m;
        }
        let key: Box<[String]> = if list.len() >= MAX_SERIES {
            let other = vec!["other"; values.len()];
            if let Some(m) = Self::find(&list, &other) {
                return m;
            }
            other.iter().map(|s| s.to_string()).collect()
        } else {
            values.iter().map(|s| s.to_string()).collect()
        };
        let m = Arc::new(M::fresh(self.bounds));
        list.push((key, m.clone()));
        m
    }

    fn render(&self, out: &mut String, const_labels: &str) {
        let _ = writeln!(out, "# HELP {} {}", self.name, self.help);
        let _ = writeln!(out, "# TYPE {} {}", self.name, M::TYPE);
        let list = self.series.read().unwrap_or_else(|p| p.into_inner());
        let mut sorted: Vec<&Entry<M>> = list.iter().collect();
        sorted.sort_by(|a, b| a.0.cmp(&b.0));
        for (values, m) in sorted {
            let mut labels = const_labels.to_string();
            for (n, v) in self.label_names.iter().zip(values.iter()) {
                if !labels.is_empty() {
                    labels.push(',');
                }
                let _ = write!(labels, "{n}=\"{}\"", escape_label(v));
            }
            m.render(out, self.name, &labels);
        }
    }
}

/// A label value in the text format: `\`, `"` and line feeds escaped.
pub(crate) fn escape_label(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// All of Regent's own metrics. The process uses [`GLOBAL`]; tests may make their own.
pub(crate) struct Registry {
    etcd_latency: Family<Histogram>,
    etcd_failures: Family<Counter>,
    lease_renewals: Family<Counter>,
    lease_renewal_failures: Family<Counter>,
    lease_grants: Family<Counter>,
    elections: Family<Counter>,
    failovers: Family<Counter>,
    policy_latency: Family<Histogram>,
    policy_faults: Family<Counter>,
    /// The shadow policies' calls, divergences, faults and skipped calls, in that order.
    shadow: [Family<Counter>; 4],
    /// Unlabelled, so reachable without a lookup.
    ha_loop: Histogram,
}

impl Default for Registry {
    fn default() -> Self {
        Registry::new()
    }
}

impl Registry {
    pub(crate) const fn new() -> Registry {
        Registry {
            etcd_latency: Family::new(
                "regent_etcd_request_duration_seconds",
                "Latency of etcd requests, by operation, successful or not.",
                &["operation"],
                ETCD_BUCKETS,
            ),
            etcd_failures: Family::new(
                "regent_etcd_request_failures_total",
                "etcd requests that failed or timed out, by operation.",
                &["operation"],
                &[],
            ),
            lease_renewals: Family::new(
                "regent_lease_renewals_total",
                "Successful keep-alives of this node's etcd lease.",
                &[],
                &[],
            ),
            lease_renewal_failures: Family::new(
                "regent_lease_renewal_failures_total",
                "Keep-alives of this node's etcd lease that failed (the lease expired or etcd did not answer).",
                &[],
                &[],
            ),
            lease_grants: Family::new(
                "regent_lease_grants_total",
                "New etcd leases granted to this node (at start, and after a lease expired).",
                &[],
                &[],
            ),
            elections: Family::new(
                "regent_elections_total",
                "Leader races this node entered, by what started them.",
                &["reason"],
                &[],
            ),
            failovers: Family::new(
                "regent_failovers_total",
                "Times this node became the leader, by reason.",
                &["reason"],
                &[],
            ),
            policy_latency: Family::new(
                "regent_policy_call_duration_seconds",
                "Latency of failover policy calls, by policy and hook.",
                &["policy", "hook"],
                POLICY_BUCKETS,
            ),
            policy_faults: Family::new(
                "regent_policy_faults_total",
                "Failover policy calls that faulted (trap, deadline, memory, invalid answer), by policy and kind.",
                &["policy", "kind"],
                &[],
            ),
            shadow: [
                Family::new(
                    "regent_policy_shadow_calls_total",
                    "Calls of the shadow policies (pushed with --shadow, run beside the serving ones without deciding), by hook.",
                    &["hook"],
                    &[],
                ),
                Family::new(
                    "regent_policy_shadow_divergences_total",
                    "Shadow policy answers that differ from the serving policies' (another winner, another health verdict), by hook.",
                    &["hook"],
                    &[],
                ),
                Family::new(
                    "regent_policy_shadow_faults_total",
                    "Shadow policy calls that faulted (trap, deadline, memory, invalid answer), by hook.",
                    &["hook"],
                    &[],
                ),
                Family::new(
                    "regent_policy_shadow_skipped_total",
                    "Shadow policy calls skipped because the shadow's queue was full, by hook.",
                    &["hook"],
                    &[],
                ),
            ],
            ha_loop: Histogram::new(LOOP_BUCKETS),
        }
    }

    pub(crate) fn ha_loop_seconds(&self) -> &Histogram {
        &self.ha_loop
    }

    pub(crate) fn etcd_request(&self, op: &str, d: Duration, ok: bool) {
        self.etcd_latency.with(&[op]).observe(d);
        if !ok {
            self.etcd_failures.with(&[op]).inc();
        }
    }

    pub(crate) fn lease_renewal(&self, ok: bool) {
        if ok {
            self.lease_renewals.with(&[]).inc();
        } else {
            self.lease_renewal_failures.with(&[]).inc();
        }
    }

    pub(crate) fn lease_grant(&self) {
        self.lease_grants.with(&[]).inc();
    }

    pub(crate) fn election(&self, reason: &str) {
        self.elections.with(&[reason]).inc();
    }

    pub(crate) fn failover(&self, reason: &str) {
        self.failovers.with(&[reason]).inc();
    }

    pub(crate) fn policy_call(&self, policy: &str, hook: &str, d: Duration) {
        self.policy_latency.with(&[policy, hook]).observe(d);
    }

    pub(crate) fn policy_fault(&self, policy: &str, kind: &str) {
        self.policy_faults.with(&[policy, kind]).inc();
    }

    pub(crate) fn policy_shadow(&self, hook: &str, what: ShadowCount) {
        self.shadow[what as usize].with(&[hook]).inc();
    }

    /// Append every metric in the text format, each series labelled with `const_labels` first
    /// (e.g. `scope` and `name`, as Patroni labels its metrics).
    pub(crate) fn render(&self, out: &mut String, const_labels: &[(&str, &str)]) {
        let mut base = String::new();
        for (n, v) in const_labels {
            if !base.is_empty() {
                base.push(',');
            }
            let _ = write!(base, "{n}=\"{}\"", escape_label(v));
        }
        let _ = writeln!(out, "# HELP {HA_LOOP} {HA_LOOP_HELP}");
        let _ = writeln!(out, "# TYPE {HA_LOOP} histogram");
        self.ha_loop.render(out, HA_LOOP, &base);
        self.etcd_latency.render(out, &base);
        self.etcd_failures.render(out, &base);
        for unlabelled in [
            &self.lease_renewals,
            &self.lease_renewal_failures,
            &self.lease_grants,
        ] {
            // Created on render so that a zero shows before the first event.
            unlabelled.with(&[]);
            unlabelled.render(out, &base);
        }
        self.elections.render(out, &base);
        self.failovers.render(out, &base);
        self.policy_latency.render(out, &base);
        self.policy_faults.render(out, &base);
        for f in &self.shadow {
            f.render(out, &base);
        }
    }
}

/// What happened to one call of the shadow policies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShadowCount {
    /// The shadow was called, answering or faulting (`regent_policy_shadow_calls_total`).
    Call = 0,
    /// Its answer differed from the serving one (`regent_policy_shadow_divergences_total`).
    Divergence = 1,
    /// It faulted (`regent_policy_shadow_faults_total`).
    Fault = 2,
    /// Its queue was full: not called (`regent_policy_shadow_skipped_total`).
    Skipped = 3,
}

static GLOBAL: Registry = Registry::new();

/// HA loop cycle durations: `metrics::ha_loop_seconds().observe(started.elapsed())`.
pub fn ha_loop_seconds() -> &'static Histogram {
    GLOBAL.ha_loop_seconds()
}

/// One etcd request (`op` as named in `dcs::etcd`), its latency and whether it succeeded.
pub fn etcd_request(op: &str, d: Duration, ok: bool) {
    GLOBAL.etcd_request(op, d, ok)
}

/// A keep-alive of the node's lease, successful or not.
pub fn lease_renewal(ok: bool) {
    GLOBAL.lease_renewal(ok)
}

/// A new lease was granted.
pub(crate) fn lease_grant() {
    GLOBAL.lease_grant()
}

/// This node entered a leader race, because of `reason`.
pub fn election(reason: &str) {
    GLOBAL.election(reason)
}

/// This node became the leader, because of `reason`.
pub fn failover(reason: &str) {
    GLOBAL.failover(reason)
}

/// A call of `policy`'s `hook` took `d`.
pub fn policy_call(policy: &str, hook: &str, d: Duration) {
    GLOBAL.policy_call(policy, hook, d)
}

/// A call of `policy` faulted with `kind` (`trap`, `deadline`, `memory`, `invalid`).
pub fn policy_fault(policy: &str, kind: &str) {
    GLOBAL.policy_fault(policy, kind)
}

/// One call of the shadow policies' `hook` (`rank-candidates`, `check-health`).
pub fn policy_shadow(hook: &str, what: ShadowCount) {
    GLOBAL.policy_shadow(hook, what)
}

/// The whole registry in the text format, labelled with `const_labels`.
pub(crate) fn render(out: &mut String, const_labels: &[(&str, &str)]) {
    GLOBAL.render(out, const_labels)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines_with<'a>(text: &'a str, prefix: &str) -> Vec<&'a str> {
        text.lines().filter(|l| l.starts_with(prefix)).collect()
    }

    #[test]
    fn histogram_buckets_are_cumulative_and_count_matches() {
        let r = Registry::new();
        let h = r.ha_loop_seconds();
        for ms in [1, 7, 7, 60, 40_000] {
            h.observe(Duration::from_millis(ms));
        }
        assert_eq!(h.count(), 5);
        assert!(
            (h.sum_seconds() - 40.075).abs() < 1e-9,
            "{}",
            h.sum_seconds()
        );
        let mut out = String::new();
        r.render(&mut out, &[("scope", "demo"), ("name", "n1")]);
        let b = lines_with(&out, "regent_ha_loop_duration_seconds_bucket");
        assert_eq!(b.len(), LOOP_BUCKETS.len() + 1);
        assert_eq!(
            b[0],
            "regent_ha_loop_duration_seconds_bucket{scope=\"demo\",name=\"n1\",le=\"0.005\"} 1"
        );
        assert!(b[1].ends_with("le=\"0.01\"} 3"), "{}", b[1]);
        assert!(b[4].ends_with("le=\"0.1\"} 4"), "{}", b[4]);
        assert!(b[11].ends_with("le=\"30\"} 4"), "{}", b[11]);
        assert!(b[12].ends_with("le=\"+Inf\"} 5"), "{}", b[12]);
        assert!(
            out.contains("regent_ha_loop_duration_seconds_count{scope=\"demo\",name=\"n1\"} 5\n")
        );
        assert!(out.contains("# TYPE regent_ha_loop_duration_seconds histogram\n"));
    }

    #[test]
    fn labelled_series_and_zero_counters() {
        let r = Registry::new();
        let mut out = String::new();
        r.render(&mut out, &[]);
        // Unlabelled counters show as 0 before the first event; labelled families are empty.
        assert!(out.contains("regent_lease_renewals_total 0\n"), "{out}");
        assert!(out.contains("regent_lease_renewal_failures_total 0\n"));
        assert!(lines_with(&out, "regent_elections_total").is_empty());
        assert!(out.contains("# TYPE regent_elections_total counter\n"));

        r.etcd_request("range", Duration::from_millis(3), true);
        r.etcd_request("range", Duration::from_millis(3), false);
        r.etcd_request("txn", Duration::from_secs(20), false);
        r.lease_renewal(true);
        r.lease_renewal(true);
        r.lease_renewal(false);
        r.election("leader_missing");
        r.failover("switchover");
        r.failover("switchover");
        r.policy_call("zone-aware", "rank-candidates", Duration::from_micros(30));
        r.policy_fault("zone-aware", "deadline");
        r.policy_shadow("check-health", ShadowCount::Call);
        r.policy_shadow("check-health", ShadowCount::Call);
        r.policy_shadow("check-health", ShadowCount::Divergence);
        r.policy_shadow("rank-candidates", ShadowCount::Skipped);
        let mut out = String::new();
        r.render(&mut out, &[("scope", "s")]);
        assert!(
            out.contains("regent_policy_shadow_calls_total{scope=\"s\",hook=\"check-health\"} 2\n")
        );
        assert!(out.contains(
            "regent_policy_shadow_divergences_total{scope=\"s\",hook=\"check-health\"} 1\n"
        ));
        assert!(out.contains(
            "regent_policy_shadow_skipped_total{scope=\"s\",hook=\"rank-candidates\"} 1\n"
        ));
        assert!(out.contains("# TYPE regent_policy_shadow_faults_total counter\n"));
        assert!(out.contains(
            "regent_etcd_request_duration_seconds_count{scope=\"s\",operation=\"range\"} 2\n"
        ));
        assert!(out.contains(
            "regent_etcd_request_duration_seconds_bucket{scope=\"s\",operation=\"txn\",le=\"+Inf\"} 1\n"
        ));
        assert!(out.contains(
            "regent_etcd_request_duration_seconds_bucket{scope=\"s\",operation=\"txn\",le=\"10\"} 0\n"
        ));
        assert!(
            out.contains("regent_etcd_request_failures_total{scope=\"s\",operation=\"range\"} 1\n")
        );
        assert!(out.contains("regent_lease_renewals_total{scope=\"s\"} 2\n"));
        assert!(out.contains("regent_lease_renewal_failures_total{scope=\"s\"} 1\n"));
        assert!(out.contains("regent_elections_total{scope=\"s\",reason=\"leader_missing\"} 1\n"));
        assert!(out.contains("regent_failovers_total{scope=\"s\",reason=\"switchover\"} 2\n"));
        assert!(out.contains(
            "regent_policy_call_duration_seconds_bucket{scope=\"s\",policy=\"zone-aware\",hook=\"rank-candidates\",le=\"0.00005\"} 1\n"
        ));
        assert!(out.contains(
            "regent_policy_faults_total{scope=\"s\",policy=\"zone-aware\",kind=\"deadline\"} 1\n"
        ));
        // Every sample line is `name{labels} value` with a numeric value.
        for l in out.lines().filter(|l| !l.starts_with('#')) {
            let (_, value) = l.rsplit_once(' ').expect("value");
            assert!(value.parse::<f64>().is_ok(), "{l}");
        }
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        let r = Registry::new();
        r.policy_fault("we\"ird\npolicy", "trap");
        let mut out = String::new();
        r.render(&mut out, &[("name", "n\"1")]);
        assert!(
            out.contains(
                "regent_policy_faults_total{name=\"n\\\"1\",policy=\"we\\\"ird\\npolicy\",kind=\"trap\"} 1\n"
            ),
            "{out}"
        );
    }

    #[test]
    fn series_are_capped() {
        let r = Registry::new();
        for i in 0..(MAX_SERIES + 50) {
            r.election(&format!("reason-{i}"));
        }
        let mut out = String::new();
        r.render(&mut out, &[]);
        let series = lines_with(&out, "regent_elections_total{");
        assert_eq!(series.len(), MAX_SERIES + 1, "capped plus `other`");
        assert!(out.contains("regent_elections_total{reason=\"other\"} 50\n"));
    }

    #[test]
    fn concurrent_recording_loses_nothing() {
        let r = Arc::new(Registry::new());
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let r = r.clone();
                std::thread::spawn(move || {
                    for i in 0..1000 {
                        r.etcd_request(
                            if i % 2 == 0 { "range" } else { "txn" },
                            Duration::from_micros(t * 100 + i),
                            true,
                        );
                        r.ha_loop_seconds().observe(Duration::from_millis(1));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("thread");
        }
        assert_eq!(r.ha_loop_seconds().count(), 4000);
        let mut out = String::new();
        r.render(&mut out, &[]);
        assert!(
            out.contains("regent_etcd_request_duration_seconds_count{operation=\"range\"} 2000\n")
        );
        assert!(
            out.contains("regent_etcd_request_duration_seconds_count{operation=\"txn\"} 2000\n")
        );
    }

    #[test]
    fn global_functions_record() {
        // Unique labels: other tests in this process use the global registry too.
        policy_fault("metrics-test-global", "memory");
        policy_fault("metrics-test-global", "memory");
        let mut out = String::new();
        render(&mut out, &[]);
        assert!(out.contains(
            "regent_policy_faults_total{policy=\"metrics-test-global\",kind=\"memory\"} 2\n"
        ));
    }
}
