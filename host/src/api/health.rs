//! Health checks (Patroni's generic `do_GET`): `/primary`, `/replica?lag=…`, `/read-only`, …, and
//! the Kubernetes probes `/liveness` and `/readiness`. Every answer is computed from the
//! published [`LocalSnapshot`]; nothing here calls PostgreSQL or the DCS.

use std::time::{Duration, Instant};

use axum::extract::Query;
use axum::http::{StatusCode, Uri};
use serde_json::Value;

use super::LocalSnapshot;
use super::status::Reported;
use super::units::{parse_lag_bytes, truthy};

/// Query parameters as Python's `parse_qs` sees them: blank values dropped, first value per key,
/// keys in order of first appearance.
#[derive(Debug, Default)]
pub(super) struct Params(Vec<(String, String)>);

impl Params {
    pub(super) fn from_uri(uri: &Uri) -> Self {
        let pairs = Query::<Vec<(String, String)>>::try_from_uri(uri)
            .map(|q| q.0)
            .unwrap_or_default();
        let mut out: Vec<(String, String)> = Vec::new();
        for (k, v) in pairs {
            if v.is_empty() || out.iter().any(|(seen, _)| *seen == k) {
                continue;
            }
            out.push((k, v));
        }
        Params(out)
    }

    pub(super) fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

fn code(ok: bool) -> StatusCode {
    if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
}

/// A tag value as Patroni compares it with `?tag_k=v`: strings as is, others `str(v).lower()`.
fn tag_as_query_string(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string().to_lowercase(),
    }
}

/// This node holds the leader key as of this request: the loop published it holding the key,
/// and the write deadline it earned then still lies ahead (the loop may be stalled past it).
/// Paused too, as Patroni's `is_leader()` expires a `ttl` after the leader key's last update
/// whether paused or not: a stalled leader stops answering `/primary` with 200 in maintenance
/// mode as well, and a candidate promoted by a manual failover meanwhile is the only one.
fn leads_now(v: &LocalSnapshot) -> bool {
    v.holds_lock
        && v.write_deadline_ms
            .is_none_or(|d| crate::fence::mono_ms() < d)
}

/// Generic health check (Patroni's `do_GET`): status code for `path` (the URL path only).
pub(super) fn health_status(v: &LocalSnapshot, path: &str, params: &Params) -> StatusCode {
    let path = if path == "/" { "/primary" } else { path };
    let r = Reported::of(v);

    let leader_optime = i128::from(v.leader_optime.unwrap_or(0));
    let max_lag = params
        .get("lag")
        .and_then(parse_lag_bytes)
        .unwrap_or(i128::MAX / 4);
    let replayed = i128::from(r.replayed_location());
    let is_lagging = leader_optime != 0 && leader_optime > replayed.saturating_add(max_lag);
    // As Patroni: the replication state counts only when asked for by name
    // (`?replication_state=streaming`); `/readiness` requires streaming.
    let matches_replication_state = match params.get("replication_state") {
        Some(wanted) => v.replication_state.as_deref() == Some(wanted),
        None => true,
    };
    let noloadbalance = v.tags.get("noloadbalance").is_some_and(truthy);
    // A replica its own policies judge failed serves no reads (and is never promoted).
    let policy_failed = super::status::policy_judged_failed(v.policy.as_ref());
    let replica_ok = !noloadbalance
        && !policy_failed
        && !v.diverged
        && !is_lagging
        && r.role == "replica"
        && r.state == "running"
        && matches_replication_state;

    let (leader_ok, primary_ok, standby_leader_ok) = if !v.dcs_reachable && v.paused {
        // No DCS view in maintenance mode: the PostgreSQL role decides.
        (
            matches!(r.role, "primary" | "standby_leader"),
            r.role == "primary",
            r.role == "standby_leader",
        )
    } else if leads_now(v) {
        if v.role == "standby_leader" {
            (true, false, matches!(r.role, "replica" | "standby_leader"))
        } else {
            (true, true, false)
        }
    } else {
        (false, false, false)
    };

    let mut ignore_tags = false;
    let mut ok = false;
    if path.contains("standby_leader") || path.contains("standby-leader") {
        ok = standby_leader_ok;
        ignore_tags = true;
    } else if path.contains("leader") {
        ok = leader_ok;
        ignore_tags = true;
    } else if path.contains("master") || path.contains("primary") || path.contains("read-write") {
        ok = primary_ok;
        ignore_tags = true;
    } else if path.contains("replica") {
        ok = replica_ok;
    } else if path.contains("read-only") && !path.contains("sync") && !path.contains("quorum") {
        ok = primary_ok || standby_leader_ok || replica_ok;
    } else if path.contains("health") {
        ok = r.state == "running";
    } else if v.dcs_reachable {
        let listed = v.sync_standby && r.role == "replica";
        let (is_sync, is_quorum) = (listed && !v.quorum_commit, listed && v.quorum_commit);
        ok = match path {
            "/sync" | "/synchronous" => is_sync && replica_ok,
            "/quorum" => is_quorum && replica_ok,
            "/async" | "/asynchronous" => !is_sync && !is_quorum && replica_ok,
            "/read-only-sync" | "/read-only-synchronous" => {
                primary_ok || standby_leader_ok || (is_sync && replica_ok)
            }
            "/read-only-quorum" => primary_ok || standby_leader_ok || (is_quorum && replica_ok),
            _ => false,
        };
    }

    if ok && !ignore_tags {
        for (key, wanted) in &params.0 {
            let Some(tag) = key.strip_prefix("tag_") else {
                continue;
            };
            match v.tags.get(tag) {
                Some(value) if !value.is_null() && tag_as_query_string(value) == *wanted => {}
                _ => {
                    ok = false;
                    break;
                }
            }
        }
    }
    code(ok)
}

/// `/liveness`: 200 while paused, or while the HA loop completed a cycle within `ttl` (running
/// primary) or `2*ttl` (otherwise). Before the first cycle, the router's creation time counts.
pub(super) fn liveness_status(v: &LocalSnapshot, started: Instant) -> StatusCode {
    let is_primary = v.role == "primary" && v.state == "running";
    let threshold = Duration::from_secs(v.ttl.saturating_mul(if is_primary { 1 } else { 2 }));
    let last = v.last_loop.unwrap_or(started);
    code(v.paused || last.elapsed() < threshold)
}

/// `/readiness?lag=&mode=apply|write`.
pub(super) fn readiness_status(v: &LocalSnapshot, params: &Params) -> StatusCode {
    if leads_now(v) {
        return StatusCode::OK;
    }
    if v.state != "running" {
        return code(false);
    }
    let r = Reported::of(v);
    if r.xlog.is_none() || v.replication_state.as_deref() != Some("streaming") {
        return code(false);
    }
    let leader_optime = v.leader_optime.unwrap_or(0);
    if !v.dcs_reachable && leader_optime == 0 {
        return code(false);
    }
    let location = if params.get("mode") == Some("write") {
        r.received_location()
    } else {
        r.replayed_location()
    };
    let lag = i128::from(leader_optime) - i128::from(location);
    let max_lag = params
        .get("lag")
        .and_then(parse_lag_bytes)
        .unwrap_or_else(|| i128::from(v.maximum_lag_on_failover));
    code(lag <= max_lag)
}
