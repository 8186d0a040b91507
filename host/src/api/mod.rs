//! REST API compatible with Patroni's: the status document (`GET /patroni`), the health checks
//! used by load balancers (`/primary`, `/replica?lag=…`, …), the Kubernetes probes (`/liveness`,
//! `/readiness`), and the client side used by the HA loop to ask peers for their status during a
//! leader race.
//!
//! The HA loop publishes a [`NodeView`] snapshot through a `tokio::sync::watch` channel; the API
//! only reads it, so a request never waits on PostgreSQL or the DCS.
//!
//! Routing follows Patroni's: the first path segment selects `patroni`, `liveness` or `readiness`;
//! every other path goes through the generic health check, which matches keywords in the path
//! (`leader`, `primary`, `replica`, …). An unknown `GET` path therefore answers the status document
//! with 503, and `HEAD`/`OPTIONS` on any path run the same check and answer the status code only.

use std::future::Future;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderValue, Method, StatusCode, Uri, header};
use axum::response::Response;
use serde_json::{Map, Value};
use tokio::sync::watch;

/// Snapshot of this node, published by the HA loop. The API derives every answer from it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NodeView {
    pub scope: String,
    pub name: String,
    /// Regent version, reported as `patroni.version` too.
    pub version: String,
    /// Patroni `PostgresqlState` string: "running", "starting", "stopped", "crashed",
    /// "creating replica", "initializing new cluster", "stopping", "restarting", ...
    pub state: String,
    /// "primary" | "replica" | "demoted" | "uninitialized" | "promoted" (or "standby_leader").
    pub role: String,
    /// This node holds the leader key and its lease deadline has not passed.
    pub holds_lock: bool,
    /// `pg_postmaster_start_time()`, rendered "2024-08-28 19:39:26.352526+00:00".
    pub postmaster_start_time: Option<String>,
    /// e.g. 150004
    pub server_version: Option<u32>,
    pub timeline: Option<u32>,
    /// `pg_current_wal_flush_lsn()`; set only while PostgreSQL runs as a primary.
    pub wal_flush_lsn: Option<u64>,
    /// Replica: written (PG13+) or received LSN.
    pub received_lsn: Option<u64>,
    /// Replica: replayed LSN.
    pub replayed_lsn: Option<u64>,
    pub replayed_timestamp: Option<String>,
    pub replay_paused: bool,
    /// "streaming" | "in archive recovery"
    pub replication_state: Option<String>,
    /// Walsenders on this node.
    pub replication: Vec<ReplicationRow>,
    pub cluster_unlocked: bool,
    pub paused: bool,
    /// Unix seconds of the last successful DCS read.
    pub dcs_last_seen: Option<u64>,
    pub dcs_reachable: bool,
    /// Effective tags (nofailover, failover_priority, noloadbalance, nosync, custom...).
    pub tags: Map<String, Value>,
    pub system_identifier: Option<String>,
    /// max(/status optime, latest_end_lsn); used for lag.
    pub leader_optime: Option<u64>,
    pub maximum_lag_on_failover: u64,
    /// Listed in `/sync`.
    pub sync_standby: bool,
    pub ttl: u64,
    pub loop_wait: u64,
    /// When the HA loop last completed a cycle (liveness).
    pub last_loop: Option<Instant>,
    /// Active policy info, included verbatim as "policy" in the status document if set.
    pub policy: Option<Value>,
}

/// One walsender, as listed under `replication` in the status document.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct ReplicationRow {
    pub usename: String,
    pub application_name: String,
    pub client_addr: Option<String>,
    pub state: String,
    pub sync_state: String,
    pub sync_priority: i32,
}

// ---------------------------------------------------------------------------------------------
// Status document
// ---------------------------------------------------------------------------------------------

/// WAL positions as PostgreSQL reported them; present only when PostgreSQL could be queried.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Xlog {
    Primary { location: u64 },
    Replica { received: u64, replayed: u64 },
}

/// What the status document says about PostgreSQL; the health checks are computed from it,
/// as Patroni computes them from its response.
struct Reported<'a> {
    state: &'a str,
    role: &'a str,
    xlog: Option<Xlog>,
}

impl<'a> Reported<'a> {
    fn of(v: &'a NodeView) -> Self {
        // Patroni queries PostgreSQL only in these states; anything else reports state/role only.
        let queryable = matches!(v.state.as_str(), "running" | "restarting" | "starting");
        let xlog = if !queryable {
            None
        } else if let Some(location) = v.wal_flush_lsn {
            Some(Xlog::Primary { location })
        } else if v.received_lsn.is_some() || v.replayed_lsn.is_some() {
            let replayed = v.replayed_lsn.unwrap_or(0);
            Some(Xlog::Replica {
                received: v.received_lsn.unwrap_or(replayed),
                replayed,
            })
        } else {
            None
        };
        let (state, role) = match xlog {
            // With the query answered, the role is what pg_is_in_recovery() says; a standby
            // cluster's leader keeps its own role.
            Some(Xlog::Primary { .. }) => (v.state.as_str(), "primary"),
            Some(Xlog::Replica { .. }) if v.role == "standby_leader" => {
                (v.state.as_str(), "standby_leader")
            }
            Some(Xlog::Replica { .. }) => (v.state.as_str(), "replica"),
            // "running" but no query result: Patroni reports "unknown".
            None if v.state == "running" => ("unknown", v.role.as_str()),
            None => (v.state.as_str(), v.role.as_str()),
        };
        Reported { state, role, xlog }
    }

    fn replayed_location(&self) -> u64 {
        match self.xlog {
            Some(Xlog::Replica { replayed, .. }) => replayed,
            _ => 0,
        }
    }

    fn received_location(&self) -> u64 {
        match self.xlog {
            Some(Xlog::Replica { received, .. }) => received,
            _ => 0,
        }
    }
}

/// The `GET /patroni` body, in Patroni's shape. Fields Patroni omits are omitted rather than null.
///
/// PostgreSQL details (`postmaster_start_time`, `server_version`, `xlog`, `timeline`,
/// `replication_state`, `replication`, `sync_standby`) appear only when PostgreSQL is in a
/// queryable state (`running`, `restarting`, `starting`) and the view carries WAL positions:
/// `wal_flush_lsn` makes it a primary document, `received_lsn`/`replayed_lsn` a replica one.
/// A view that says `running` without any WAL position is reported as state `unknown`, as
/// Patroni does when its status query fails.
pub fn status_document(v: &NodeView) -> Value {
    let r = Reported::of(v);
    let mut doc = Map::new();
    doc.insert("state".into(), r.state.into());
    if r.xlog.is_some()
        && let Some(t) = &v.postmaster_start_time
    {
        doc.insert("postmaster_start_time".into(), t.clone().into());
    }
    doc.insert("role".into(), r.role.into());
    if let Some(xlog) = r.xlog {
        if let Some(sv) = v.server_version {
            doc.insert("server_version".into(), sv.into());
        }
        let mut x = Map::new();
        match xlog {
            Xlog::Primary { location } => {
                x.insert("location".into(), location.into());
            }
            Xlog::Replica { received, replayed } => {
                x.insert("received_location".into(), received.into());
                x.insert("replayed_location".into(), replayed.into());
                x.insert(
                    "replayed_timestamp".into(),
                    v.replayed_timestamp
                        .clone()
                        .map_or(Value::Null, Value::from),
                );
                x.insert("paused".into(), v.replay_paused.into());
            }
        }
        doc.insert("xlog".into(), Value::Object(x));
        if v.sync_standby && r.role == "replica" {
            doc.insert("sync_standby".into(), true.into());
        }
        if let Some(tl) = v.timeline {
            doc.insert("timeline".into(), tl.into());
        }
        if matches!(xlog, Xlog::Replica { .. })
            && let Some(rs) = &v.replication_state
        {
            doc.insert("replication_state".into(), rs.clone().into());
        }
        if !v.replication.is_empty() {
            let rows = v.replication.iter().map(replication_row_json).collect();
            doc.insert("replication".into(), Value::Array(rows));
        }
    }
    if v.paused {
        doc.insert("pause".into(), true.into());
    }
    if v.cluster_unlocked {
        doc.insert("cluster_unlocked".into(), true.into());
    }
    // Patroni always sends it (0 before the first successful DCS read).
    doc.insert("dcs_last_seen".into(), v.dcs_last_seen.unwrap_or(0).into());
    if !v.tags.is_empty() {
        doc.insert("tags".into(), Value::Object(v.tags.clone()));
    }
    if let Some(sysid) = &v.system_identifier {
        doc.insert("database_system_identifier".into(), sysid.clone().into());
    }
    let mut patroni = Map::new();
    patroni.insert("version".into(), v.version.clone().into());
    patroni.insert("scope".into(), v.scope.clone().into());
    patroni.insert("name".into(), v.name.clone().into());
    doc.insert("patroni".into(), Value::Object(patroni));
    if let Some(policy) = &v.policy {
        doc.insert("policy".into(), policy.clone());
    }
    Value::Object(doc)
}

fn replication_row_json(row: &ReplicationRow) -> Value {
    let mut m = Map::new();
    m.insert("usename".into(), row.usename.clone().into());
    m.insert(
        "application_name".into(),
        row.application_name.clone().into(),
    );
    m.insert(
        "client_addr".into(),
        row.client_addr.clone().map_or(Value::Null, Value::from),
    );
    m.insert("state".into(), row.state.clone().into());
    m.insert("sync_state".into(), row.sync_state.clone().into());
    m.insert("sync_priority".into(), row.sync_priority.into());
    Value::Object(m)
}

// ---------------------------------------------------------------------------------------------
// Health checks
// ---------------------------------------------------------------------------------------------

/// Query parameters as Python's `parse_qs` sees them: blank values dropped, first value per key,
/// keys in order of first appearance.
#[derive(Debug, Default)]
struct Params(Vec<(String, String)>);

impl Params {
    fn from_uri(uri: &Uri) -> Self {
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

    fn get(&self, key: &str) -> Option<&str> {
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

/// Python truthiness of a JSON value, as Patroni applies `bool()` to tag values.
fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

/// A tag value as Patroni compares it with `?tag_k=v`: strings as is, others `str(v).lower()`.
fn tag_as_query_string(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string().to_lowercase(),
    }
}

/// Generic health check (Patroni's `do_GET`): status code for `path` (the URL path only).
fn health_status(v: &NodeView, path: &str, params: &Params) -> StatusCode {
    let path = if path == "/" { "/primary" } else { path };
    let r = Reported::of(v);

    let leader_optime = i128::from(v.leader_optime.unwrap_or(0));
    let max_lag = params
        .get("lag")
        .and_then(parse_lag_bytes)
        .unwrap_or(i128::MAX / 4);
    let replayed = i128::from(r.replayed_location());
    let is_lagging = leader_optime != 0 && leader_optime > replayed.saturating_add(max_lag);
    let matches_replication_state = match params.get("replication_state") {
        Some(wanted) => v.replication_state.as_deref() == Some(wanted),
        None => true,
    };
    let noloadbalance = v.tags.get("noloadbalance").is_some_and(truthy);
    let replica_ok = !noloadbalance
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
    } else if v.holds_lock {
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
        let is_sync = v.sync_standby && r.role == "replica";
        ok = match path {
            "/sync" | "/synchronous" => is_sync && replica_ok,
            "/async" | "/asynchronous" => !is_sync && replica_ok,
            "/read-only-sync" | "/read-only-synchronous" => {
                primary_ok || standby_leader_ok || (is_sync && replica_ok)
            }
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
fn liveness_status(v: &NodeView, started: Instant) -> StatusCode {
    let is_primary = v.role == "primary" && v.state == "running";
    let threshold = Duration::from_secs(v.ttl.saturating_mul(if is_primary { 1 } else { 2 }));
    let last = v.last_loop.unwrap_or(started);
    code(v.paused || last.elapsed() < threshold)
}

/// `/readiness?lag=&mode=apply|write`.
fn readiness_status(v: &NodeView, params: &Params) -> StatusCode {
    if v.holds_lock {
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

// ---------------------------------------------------------------------------------------------
// Size parsing (Patroni's parse_int(value, 'B'))
// ---------------------------------------------------------------------------------------------

/// Leading integer as C `strtol(…, 0)`: `0x` hex, leading-zero octal, decimal; optional sign.
fn strtol(s: &str) -> Option<(i128, &str)> {
    let b = s.as_bytes();
    let mut i = 0;
    let negative = match b.first() {
        Some(b'-') => {
            i = 1;
            true
        }
        Some(b'+') => {
            i = 1;
            false
        }
        _ => false,
    };
    let digits_end = |from: usize, pred: fn(&u8) -> bool| {
        from + b
            .get(from..)
            .map_or(0, |rest| rest.iter().take_while(|c| pred(c)).count())
    };
    let (radix, start, end) = if b.get(i) == Some(&b'0')
        && b.get(i + 1) == Some(&b'x')
        && b.get(i + 2).is_some_and(u8::is_ascii_hexdigit)
    {
        (16, i + 2, digits_end(i + 2, u8::is_ascii_hexdigit))
    } else if b.get(i) == Some(&b'0') {
        (8, i, digits_end(i + 1, |c| (b'0'..=b'7').contains(c)))
    } else if b.get(i).is_some_and(u8::is_ascii_digit) {
        (10, i, digits_end(i, u8::is_ascii_digit))
    } else {
        return None;
    };
    let mut value: i128 = 0;
    for c in &b[start..end] {
        let d = i128::from(char::from(*c).to_digit(radix)?);
        value = value.checked_mul(i128::from(radix))?.checked_add(d)?;
    }
    Some((if negative { -value } else { value }, &s[end..]))
}

/// Leading floating-point number (`[-+]?[0-9]*\.?[0-9]+([eE][-+]?[0-9]+)?`).
fn strtod(s: &str) -> Option<(f64, &str)> {
    let b = s.as_bytes();
    let mut i = usize::from(matches!(b.first(), Some(b'-' | b'+')));
    let int_digits = b[i..].iter().take_while(|c| c.is_ascii_digit()).count();
    i += int_digits;
    let frac_digits = if b.get(i) == Some(&b'.') {
        b[i + 1..].iter().take_while(|c| c.is_ascii_digit()).count()
    } else {
        0
    };
    if frac_digits > 0 {
        i += 1 + frac_digits;
    } else if int_digits == 0 {
        return None;
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        let mut j = i + 1;
        if matches!(b.get(j), Some(b'-' | b'+')) {
            j += 1;
        }
        let exp_digits = b
            .get(j..)
            .map_or(0, |r| r.iter().take_while(|c| c.is_ascii_digit()).count());
        if exp_digits > 0 {
            i = j + exp_digits;
        }
    }
    let value: f64 = s[..i].parse().ok()?;
    Some((value, &s[i..]))
}

/// Bytes per unit, and the next smaller unit's size used for rounding (as Patroni does).
fn memory_unit(unit: &str) -> Option<(f64, f64)> {
    const K: f64 = 1024.0;
    match unit {
        "TB" => Some((K * K * K * K, K * K * K)),
        "GB" => Some((K * K * K, K * K)),
        "MB" => Some((K * K, K)),
        "kB" => Some((K, 1.0)),
        "B" => Some((1.0, 1.0)),
        _ => None,
    }
}

/// Parses an integer, optionally with a memory unit (`B`, `kB`, `MB`, `GB`, `TB`, case-sensitive,
/// powers of 1024) when `with_units`; returns `None` when it can't (Patroni's `parse_int`).
fn parse_int_with_units(value: &str, with_units: bool) -> Option<i128> {
    let s = value.trim();
    let int_part = strtol(s);
    let rest = int_part.map_or(s, |(_, rest)| rest);
    let use_float =
        (int_part.is_none() && rest.starts_with('.')) || rest.starts_with(['.', 'e', 'E']);
    if use_float {
        let (val, unit) = strtod(s)?;
        let unit = unit.trim();
        if unit.is_empty() {
            return f64_to_i128(val);
        }
        if !with_units {
            return None;
        }
        let (mult, round_to) = memory_unit(unit)?;
        f64_to_i128(((val * mult) / round_to).round_ties_even() * round_to)
    } else {
        let (val, unit) = int_part?;
        let unit = unit.trim();
        if unit.is_empty() {
            return Some(val);
        }
        if !with_units {
            return None;
        }
        let (mult, _) = memory_unit(unit)?;
        // Integer times a power of 1024: exact, no rounding needed.
        val.checked_mul(mult as i128)
    }
}

fn f64_to_i128(f: f64) -> Option<i128> {
    let r = f.round_ties_even();
    (r.is_finite() && r.abs() < 1e36).then_some(r as i128)
}

/// `?lag=` value in bytes: plain bytes or with units (`16kB`, `64MB`, `1GB`); `None` if invalid.
fn parse_lag_bytes(value: &str) -> Option<i128> {
    parse_int_with_units(value, true)
}

// ---------------------------------------------------------------------------------------------
// Server
// ---------------------------------------------------------------------------------------------

#[derive(Clone)]
struct ApiState {
    view: watch::Receiver<NodeView>,
    started: Instant,
}

/// The API router. All paths go through one dispatcher, as in Patroni; routes added to the
/// returned router later (e.g. mutating endpoints) take precedence over it.
pub fn router(view: watch::Receiver<NodeView>) -> Router {
    let state = ApiState {
        view,
        started: Instant::now(),
    };
    Router::new().fallback(dispatch).with_state(state)
}

/// Serves the API on `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    view: watch::Receiver<NodeView>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(view))
        .with_graceful_shutdown(shutdown)
        .await
}

async fn dispatch(State(state): State<ApiState>, method: Method, uri: Uri) -> Response {
    let response = respond(&state, &method, &uri);
    tracing::debug!(
        method = %method,
        uri = %uri,
        status = response.status().as_u16(),
        "api request"
    );
    response
}

fn respond(state: &ApiState, method: &Method, uri: &Uri) -> Response {
    let view = state.view.borrow();
    let v: &NodeView = &view;
    let status_only = if method == Method::GET {
        false
    } else if method == Method::HEAD || method == Method::OPTIONS {
        true
    } else {
        let body = format!("Unsupported method ({method})");
        return build_response(v, StatusCode::NOT_IMPLEMENTED, Some((body, "text/plain")));
    };
    let path = uri.path();
    let params = Params::from_uri(uri);
    let first_segment = path.trim_start_matches('/').split('/').next().unwrap_or("");
    if first_segment == "policy" && !status_only {
        // The node's policies: name, version, digest, hooks, load time, faults.
        let info = v
            .policy
            .clone()
            .unwrap_or_else(|| serde_json::json!({"name": "builtin-default"}));
        return build_response(
            v,
            StatusCode::OK,
            Some((info.to_string(), "application/json")),
        );
    }
    let (status, with_document) = match first_segment {
        "patroni" if !status_only => (StatusCode::OK, true),
        "liveness" => (liveness_status(v, state.started), false),
        "readiness" => (readiness_status(v, &params), false),
        _ => (health_status(v, path, &params), !status_only),
    };
    let body = with_document.then(|| (status_document(v).to_string(), "application/json"));
    build_response(v, status, body)
}

fn build_response(
    v: &NodeView,
    status: StatusCode,
    body: Option<(String, &'static str)>,
) -> Response {
    let (body, content_type) = match body {
        Some((text, ct)) => (Body::from(text), Some(ct)),
        None => (Body::empty(), None),
    };
    let mut response = Response::new(body);
    *response.status_mut() = status;
    let headers = response.headers_mut();
    let server = HeaderValue::from_str(&format!("Regent/{}", v.version))
        .unwrap_or_else(|_| HeaderValue::from_static("Regent"));
    headers.insert(header::SERVER, server);
    if let Some(ct) = content_type {
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
    }
    response
}

// ---------------------------------------------------------------------------------------------
// Client: peers' status during a leader race
// ---------------------------------------------------------------------------------------------

/// A peer's status as read from its status document (Patroni's `_MemberStatus`).
#[derive(Clone, Debug, PartialEq)]
pub struct PeerStatus {
    /// `patroni.name`, if the peer sent it.
    pub name: Option<String>,
    pub role: String,
    pub state: String,
    /// `false` when the document has `xlog.location` or the role is `primary`/`master`.
    pub in_recovery: bool,
    /// Replica: max(received_location, replayed_location); primary: location.
    pub wal_position: u64,
    pub timeline: Option<u32>,
    pub nofailover: bool,
    pub failover_priority: i64,
    pub tags: Map<String, Value>,
}

/// Errors of [`fetch_peer_status`] / [`parse_peer_status`]; any of them means the peer counts as
/// unreachable in a leader race.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("request to {url} failed: {source}")]
    Request {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("response from {url} exceeds {limit} bytes")]
    TooLarge { url: String, limit: usize },
    #[error("response from {url} (HTTP {status}) is not valid JSON: {source}")]
    InvalidJson {
        url: String,
        status: u16,
        #[source]
        source: serde_json::Error,
    },
    #[error("status document is not a JSON object")]
    NotAnObject,
    #[error("status document has no xlog: PostgreSQL on the peer could not be queried")]
    MissingXlog,
    #[error("status document field {field} is invalid: {value}")]
    InvalidField { field: &'static str, value: String },
}

/// Largest status document accepted from a peer.
const MAX_PEER_DOCUMENT: usize = 4 * 1024 * 1024;

/// `GET <api_url>` (a member's `api_url`, which ends in `/patroni`) within `timeout`, parsed as
/// Patroni peers parse it. The HTTP status is not checked, as in Patroni: the body decides.
pub async fn fetch_peer_status(
    client: &reqwest::Client,
    api_url: &str,
    timeout: Duration,
) -> Result<PeerStatus, ApiError> {
    let request_error = |source| ApiError::Request {
        url: api_url.to_string(),
        source,
    };
    let mut response = client
        .get(api_url)
        .timeout(timeout)
        .send()
        .await
        .map_err(request_error)?;
    let status = response.status().as_u16();
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(request_error)? {
        if body.len() + chunk.len() > MAX_PEER_DOCUMENT {
            return Err(ApiError::TooLarge {
                url: api_url.to_string(),
                limit: MAX_PEER_DOCUMENT,
            });
        }
        body.extend_from_slice(&chunk);
    }
    let doc: Value = serde_json::from_slice(&body).map_err(|source| ApiError::InvalidJson {
        url: api_url.to_string(),
        status,
        source,
    })?;
    parse_peer_status(&doc)
}

/// Reads a status document (Regent's or Patroni's) the way `ha._MemberStatus.from_api_response`
/// does: `wal` or `xlog` must be present, else the peer is unusable.
pub fn parse_peer_status(doc: &Value) -> Result<PeerStatus, ApiError> {
    let obj = doc.as_object().ok_or(ApiError::NotAnObject)?;
    let wal = match obj.get("wal") {
        Some(w) if truthy(w) => w,
        _ => obj.get("xlog").ok_or(ApiError::MissingXlog)?,
    };
    let wal = wal.as_object().ok_or_else(|| ApiError::InvalidField {
        field: "xlog",
        value: wal.to_string(),
    })?;
    let role = obj
        .get("role")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let in_recovery =
        !(wal.get("location").is_some_and(truthy) || matches!(role.as_str(), "master" | "primary"));
    let wal_position = if in_recovery {
        let received = lsn_field(wal, "received_location")?;
        let replayed = lsn_field(wal, "replayed_location")?;
        received.max(replayed)
    } else {
        lsn_field(wal, "location").unwrap_or(0)
    };
    let tags = obj
        .get("tags")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let (nofailover, failover_priority) = failover_tags(&tags);
    Ok(PeerStatus {
        name: obj
            .get("patroni")
            .and_then(|p| p.get("name"))
            .and_then(Value::as_str)
            .map(str::to_string),
        role,
        state: obj
            .get("state")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        in_recovery,
        wal_position,
        timeline: obj
            .get("timeline")
            .and_then(Value::as_u64)
            .and_then(|t| u32::try_from(t).ok()),
        nofailover,
        failover_priority,
        tags,
    })
}

/// An LSN in the xlog object: missing means 0; anything but a non-negative integer is an error.
fn lsn_field(xlog: &Map<String, Value>, field: &'static str) -> Result<u64, ApiError> {
    match xlog.get(field) {
        None => Ok(0),
        Some(v) => v.as_u64().ok_or_else(|| ApiError::InvalidField {
            field,
            value: v.to_string(),
        }),
    }
}

/// `(nofailover, failover_priority)` from tags, with Patroni's precedence: a present
/// `nofailover` wins (and forces priority 0); otherwise priority ≤ 0 means nofailover.
fn failover_tags(tags: &Map<String, Value>) -> (bool, i64) {
    let priority = match tags.get("failover_priority") {
        None => Some(1),
        Some(v) => parse_int_value(v),
    };
    match tags.get("nofailover") {
        Some(v) if !v.is_null() => {
            let nofailover = truthy(v);
            let priority = if nofailover { 0 } else { priority.unwrap_or(1) };
            (nofailover, priority)
        }
        _ => (priority.is_some_and(|p| p <= 0), priority.unwrap_or(1)),
    }
}

/// Patroni's `parse_int(value)` without a unit, applied to a JSON value.
fn parse_int_value(v: &Value) -> Option<i64> {
    let parsed = match v {
        Value::Number(n) => match n.as_i64() {
            Some(i) => Some(i128::from(i)),
            None => n.as_f64().and_then(f64_to_i128),
        },
        Value::String(s) => parse_int_with_units(s, false),
        _ => None,
    };
    parsed.and_then(|p| i64::try_from(p).ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const MB: u64 = 1024 * 1024;

    fn leader_view() -> NodeView {
        NodeView {
            scope: "demo".into(),
            name: "node1".into(),
            version: "0.1.0".into(),
            state: "running".into(),
            role: "primary".into(),
            holds_lock: true,
            postmaster_start_time: Some("2024-08-28 19:39:26.352526+00:00".into()),
            server_version: Some(160004),
            timeline: Some(3),
            wal_flush_lsn: Some(0x5000_0060),
            replication: vec![ReplicationRow {
                usename: "replicator".into(),
                application_name: "node2".into(),
                client_addr: Some("10.0.0.2".into()),
                state: "streaming".into(),
                sync_state: "async".into(),
                sync_priority: 0,
            }],
            dcs_last_seen: Some(1_724_873_966),
            dcs_reachable: true,
            system_identifier: Some("7408136390637420566".into()),
            leader_optime: Some(0x5000_0060),
            maximum_lag_on_failover: MB,
            ttl: 30,
            loop_wait: 10,
            last_loop: Some(Instant::now()),
            ..NodeView::default()
        }
    }

    /// A streaming replica whose replay position is `behind` bytes behind the leader.
    fn replica_view(behind: u64) -> NodeView {
        let leader_optime = 0x9000_0000;
        NodeView {
            scope: "demo".into(),
            name: "node2".into(),
            version: "0.1.0".into(),
            state: "running".into(),
            role: "replica".into(),
            postmaster_start_time: Some("2024-08-28 19:40:01.000000+00:00".into()),
            server_version: Some(160004),
            timeline: Some(3),
            received_lsn: Some(leader_optime - behind / 2),
            replayed_lsn: Some(leader_optime - behind),
            replayed_timestamp: Some("2024-08-28 19:45:00.000000+00:00".into()),
            replication_state: Some("streaming".into()),
            dcs_last_seen: Some(1_724_873_966),
            dcs_reachable: true,
            leader_optime: Some(leader_optime),
            maximum_lag_on_failover: MB,
            ttl: 30,
            loop_wait: 10,
            last_loop: Some(Instant::now()),
            ..NodeView::default()
        }
    }

    fn tags(value: Value) -> Map<String, Value> {
        value.as_object().cloned().unwrap_or_default()
    }

    struct TestServer {
        base: String,
        tx: watch::Sender<NodeView>,
        client: reqwest::Client,
        _shutdown: tokio::sync::oneshot::Sender<()>,
    }

    impl TestServer {
        async fn start(view: NodeView) -> TestServer {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let addr = listener.local_addr().expect("local addr");
            let (tx, rx) = watch::channel(view);
            let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
            tokio::spawn(serve(listener, rx, async move {
                let _ = stop_rx.await;
            }));
            let client = reqwest::Client::builder()
                .no_proxy()
                .build()
                .expect("client");
            TestServer {
                base: format!("http://{addr}"),
                tx,
                client,
                _shutdown: stop_tx,
            }
        }

        fn set(&self, view: NodeView) {
            self.tx.send_replace(view);
        }

        async fn request(
            &self,
            method: Method,
            path: &str,
        ) -> (u16, String, reqwest::header::HeaderMap) {
            let resp = self
                .client
                .request(method, format!("{}{}", self.base, path))
                .send()
                .await
                .expect("request");
            let status = resp.status().as_u16();
            let headers = resp.headers().clone();
            let body = resp.text().await.expect("body");
            (status, body, headers)
        }

        async fn get(&self, path: &str) -> u16 {
            self.request(Method::GET, path).await.0
        }

        async fn get_json(&self, path: &str) -> (u16, Value) {
            let (status, body, _) = self.request(Method::GET, path).await;
            (status, serde_json::from_str(&body).expect("json body"))
        }
    }

    #[tokio::test]
    async fn leader_health_checks() {
        let srv = TestServer::start(leader_view()).await;
        let (status, body, headers) = srv.request(Method::GET, "/primary").await;
        assert_eq!(status, 200);
        assert_eq!(
            headers.get(header::CONTENT_TYPE).map(|h| h.as_bytes()),
            Some(&b"application/json"[..])
        );
        assert_eq!(
            headers.get(header::SERVER).map(|h| h.as_bytes()),
            Some(&b"Regent/0.1.0"[..])
        );
        let doc: Value = serde_json::from_str(&body).expect("json");
        assert_eq!(doc["role"], "primary");
        assert_eq!(doc["xlog"]["location"], 0x5000_0060u64);

        for path in [
            "/",
            "/read-write",
            "/leader",
            "/master",
            "/read-only",
            "/health",
        ] {
            assert_eq!(srv.get(path).await, 200, "GET {path}");
        }
        for path in ["/replica", "/standby-leader", "/sync", "/async"] {
            assert_eq!(srv.get(path).await, 503, "GET {path}");
        }

        let (status, body, headers) = srv.request(Method::HEAD, "/primary").await;
        assert_eq!((status, body.as_str()), (200, ""));
        assert!(headers.get(header::CONTENT_TYPE).is_none());
        let (status, body, _) = srv.request(Method::OPTIONS, "/replica").await;
        assert_eq!((status, body.as_str()), (503, ""));
        let (status, body, _) = srv.request(Method::OPTIONS, "/primary").await;
        assert_eq!((status, body.as_str()), (200, ""));
    }

    #[tokio::test]
    async fn lock_is_authoritative_for_primary_checks() {
        let srv = TestServer::start(NodeView {
            holds_lock: false,
            ..leader_view()
        })
        .await;
        assert_eq!(srv.get("/primary").await, 503);
        assert_eq!(srv.get("/leader").await, 503);
        assert_eq!(srv.get("/health").await, 200);
        // Paused with the DCS unreachable: PostgreSQL's role decides.
        srv.set(NodeView {
            holds_lock: false,
            paused: true,
            dcs_reachable: false,
            ..leader_view()
        });
        assert_eq!(srv.get("/primary").await, 200);
    }

    #[tokio::test]
    async fn replica_lag_and_replication_state() {
        let srv = TestServer::start(replica_view(512 * 1024)).await;
        assert_eq!(srv.get("/replica").await, 200);
        assert_eq!(srv.get("/replica?lag=1MB").await, 200);
        assert_eq!(srv.get("/replica?lag=100kB").await, 503);
        assert_eq!(srv.get("/read-only?lag=1MB").await, 200);
        assert_eq!(srv.get("/primary").await, 503);
        assert_eq!(srv.get("/replica?replication_state=streaming").await, 200);
        assert_eq!(
            srv.get("/replica?replication_state=in%20archive%20recovery")
                .await,
            503
        );

        srv.set(replica_view(2 * MB));
        assert_eq!(srv.get("/replica?lag=1MB").await, 503);
        assert_eq!(srv.get("/replica?lag=1048576").await, 503);
        assert_eq!(srv.get("/replica?lag=3MB").await, 200);
        // Invalid lag is ignored; without lag, any lag is fine.
        assert_eq!(srv.get("/replica?lag=lots").await, 200);
        assert_eq!(srv.get("/replica").await, 200);

        // Not running: no replica.
        srv.set(NodeView {
            state: "starting".into(),
            ..replica_view(0)
        });
        assert_eq!(srv.get("/replica").await, 503);
    }

    #[tokio::test]
    async fn noloadbalance_and_tag_matching() {
        let srv = TestServer::start(NodeView {
            tags: tags(json!({"noloadbalance": true})),
            ..replica_view(0)
        })
        .await;
        assert_eq!(srv.get("/replica").await, 503);
        assert_eq!(srv.get("/read-only").await, 503);
        assert_eq!(srv.get("/health").await, 200);

        srv.set(NodeView {
            tags: tags(json!({"zone": "a", "nosync": true, "weight": 1.5})),
            ..replica_view(0)
        });
        assert_eq!(srv.get("/replica?tag_zone=a").await, 200);
        assert_eq!(srv.get("/replica?tag_zone=b").await, 503);
        assert_eq!(srv.get("/replica?tag_rack=1").await, 503);
        assert_eq!(srv.get("/replica?tag_nosync=true").await, 200);
        assert_eq!(srv.get("/replica?tag_weight=1.5").await, 200);
        assert_eq!(srv.get("/replica?tag_zone=a&tag_nosync=false").await, 503);
        // Tags are ignored by leader checks.
        srv.set(NodeView {
            tags: tags(json!({"zone": "a"})),
            ..leader_view()
        });
        assert_eq!(srv.get("/primary?tag_zone=b").await, 200);
        assert_eq!(srv.get("/read-only?tag_zone=b").await, 503);
    }

    #[tokio::test]
    async fn sync_paths() {
        let srv = TestServer::start(NodeView {
            sync_standby: true,
            ..replica_view(0)
        })
        .await;
        assert_eq!(srv.get("/sync").await, 200);
        assert_eq!(srv.get("/synchronous").await, 200);
        assert_eq!(srv.get("/read-only-sync").await, 200);
        assert_eq!(srv.get("/async").await, 503);
        srv.set(replica_view(0));
        assert_eq!(srv.get("/sync").await, 503);
        assert_eq!(srv.get("/read-only-sync").await, 503);
        assert_eq!(srv.get("/asynchronous").await, 200);
        srv.set(leader_view());
        assert_eq!(srv.get("/read-only-sync").await, 200);
        srv.set(NodeView {
            sync_standby: true,
            dcs_reachable: false,
            ..replica_view(0)
        });
        assert_eq!(srv.get("/sync").await, 503);
    }

    #[tokio::test]
    async fn health_on_stopped_postgres() {
        let srv = TestServer::start(NodeView {
            state: "stopped".into(),
            ..replica_view(0)
        })
        .await;
        let (status, doc) = srv.get_json("/health").await;
        assert_eq!(status, 503);
        assert_eq!(doc["state"], "stopped");
        assert_eq!(doc["role"], "replica");
        assert!(doc.get("xlog").is_none(), "{doc}");
        // /patroni is 200 whatever the state.
        let (status, doc) = srv.get_json("/patroni").await;
        assert_eq!(status, 200);
        assert_eq!(doc["patroni"]["name"], "node2");
    }

    #[tokio::test]
    async fn liveness_probe() {
        let stale = Instant::now()
            .checked_sub(Duration::from_secs(61))
            .expect("clock far enough from boot");
        let srv = TestServer::start(NodeView {
            last_loop: Some(stale),
            ..replica_view(0)
        })
        .await;
        let (status, body, _) = srv.request(Method::GET, "/liveness").await;
        assert_eq!((status, body.as_str()), (503, ""));
        srv.set(NodeView {
            last_loop: Some(stale),
            paused: true,
            ..replica_view(0)
        });
        assert_eq!(srv.get("/liveness").await, 200);
        srv.set(replica_view(0));
        assert_eq!(srv.get("/liveness").await, 200);
        // 31 s is within 2*ttl for a replica but not within ttl for a running primary.
        let recent = Instant::now()
            .checked_sub(Duration::from_secs(31))
            .expect("clock far enough from boot");
        srv.set(NodeView {
            last_loop: Some(recent),
            ..replica_view(0)
        });
        assert_eq!(srv.get("/liveness").await, 200);
        srv.set(NodeView {
            last_loop: Some(recent),
            ..leader_view()
        });
        assert_eq!(srv.get("/liveness").await, 503);
    }

    #[tokio::test]
    async fn readiness_probe() {
        let srv = TestServer::start(replica_view(512 * 1024)).await;
        assert_eq!(srv.get("/readiness").await, 200);
        assert_eq!(srv.get("/readiness?lag=100kB").await, 503);
        // Write mode measures the received position (256 kB behind here).
        assert_eq!(srv.get("/readiness?lag=300kB&mode=write").await, 200);
        srv.set(replica_view(2 * MB));
        assert_eq!(srv.get("/readiness").await, 503);
        assert_eq!(srv.get("/readiness?lag=10MB").await, 200);
        srv.set(NodeView {
            replication_state: Some("in archive recovery".into()),
            ..replica_view(0)
        });
        assert_eq!(srv.get("/readiness").await, 503);
        srv.set(NodeView {
            dcs_reachable: false,
            leader_optime: None,
            ..replica_view(0)
        });
        assert_eq!(srv.get("/readiness").await, 503);
        srv.set(leader_view());
        assert_eq!(srv.get("/readiness").await, 200);
    }

    #[tokio::test]
    async fn unknown_paths_and_methods() {
        let srv = TestServer::start(leader_view()).await;
        let (status, doc) = srv.get_json("/no-such-endpoint").await;
        assert_eq!(status, 503);
        assert_eq!(doc["patroni"]["scope"], "demo");
        assert_eq!(doc["role"], "primary");
        let (status, body, _) = srv.request(Method::HEAD, "/patroni").await;
        assert_eq!((status, body.as_str()), (503, ""));
        let (status, _, _) = srv.request(Method::POST, "/primary").await;
        assert_eq!(status, 501);
        // Malformed query strings are tolerated: bad values are ignored, not rejected.
        let (status, body, _) = srv
            .request(Method::GET, "/primary?lag=%ff%fe&tag_&&=x&lag")
            .await;
        assert_eq!(status, 200);
        assert!(body.contains("\"patroni\""), "{body}");
        assert_eq!(srv.get("/replica?lag=%zz").await, 503);
    }

    #[tokio::test]
    async fn fetch_peer_status_against_server() {
        let srv = TestServer::start(leader_view()).await;
        let url = format!("{}/patroni", srv.base);
        let timeout = Duration::from_secs(2);
        let peer = fetch_peer_status(&srv.client, &url, timeout)
            .await
            .expect("primary status");
        assert!(!peer.in_recovery);
        assert_eq!(peer.wal_position, 0x5000_0060);
        assert_eq!(peer.role, "primary");
        assert_eq!(peer.name.as_deref(), Some("node1"));
        assert_eq!(peer.timeline, Some(3));

        srv.set(NodeView {
            tags: tags(json!({"failover_priority": 3})),
            ..replica_view(4096)
        });
        let peer = fetch_peer_status(&srv.client, &url, timeout)
            .await
            .expect("replica status");
        assert!(peer.in_recovery);
        // max(received, replayed) = received, 2048 bytes behind.
        assert_eq!(peer.wal_position, 0x9000_0000 - 2048);
        assert_eq!(peer.state, "running");
        assert_eq!((peer.nofailover, peer.failover_priority), (false, 3));

        srv.set(NodeView {
            state: "stopped".into(),
            ..replica_view(0)
        });
        let err = fetch_peer_status(&srv.client, &url, timeout)
            .await
            .expect_err("no xlog");
        assert!(matches!(err, ApiError::MissingXlog), "{err}");

        // Nobody listening.
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr")
        };
        let err = fetch_peer_status(&srv.client, &format!("http://{closed}/patroni"), timeout)
            .await
            .expect_err("connection refused");
        assert!(matches!(err, ApiError::Request { .. }), "{err}");
    }

    #[test]
    fn status_document_shapes() {
        let doc = status_document(&NodeView {
            sync_standby: true,
            paused: true,
            cluster_unlocked: true,
            tags: tags(json!({"zone": "a"})),
            policy: Some(json!({"name": "default"})),
            ..replica_view(100)
        });
        assert_eq!(doc["role"], "replica");
        assert_eq!(doc["server_version"], 160004);
        assert_eq!(doc["timeline"], 3);
        assert_eq!(doc["xlog"]["received_location"], 0x9000_0000u64 - 50);
        assert_eq!(doc["xlog"]["replayed_location"], 0x9000_0000u64 - 100);
        assert_eq!(doc["xlog"]["paused"], false);
        assert_eq!(doc["replication_state"], "streaming");
        assert_eq!(doc["sync_standby"], true);
        assert_eq!(doc["pause"], true);
        assert_eq!(doc["cluster_unlocked"], true);
        assert_eq!(doc["tags"]["zone"], "a");
        assert_eq!(doc["policy"]["name"], "default");
        assert_eq!(doc["patroni"]["version"], "0.1.0");
        assert!(doc.get("database_system_identifier").is_none());

        let doc = status_document(&leader_view());
        assert_eq!(doc["xlog"], json!({"location": 0x5000_0060u64}));
        assert_eq!(doc["replication"][0]["application_name"], "node2");
        assert_eq!(doc["database_system_identifier"], "7408136390637420566");
        assert_eq!(
            doc["postmaster_start_time"],
            "2024-08-28 19:39:26.352526+00:00"
        );
        for absent in [
            "replication_state",
            "sync_standby",
            "pause",
            "cluster_unlocked",
            "tags",
        ] {
            assert!(doc.get(absent).is_none(), "{absent} in {doc}");
        }

        // Down: state and role only (plus the Patroni/DCS fields).
        let doc = status_document(&NodeView {
            state: "crashed".into(),
            role: "demoted".into(),
            ..leader_view()
        });
        assert_eq!(doc["state"], "crashed");
        assert_eq!(doc["role"], "demoted");
        for absent in [
            "xlog",
            "timeline",
            "server_version",
            "postmaster_start_time",
            "replication",
        ] {
            assert!(doc.get(absent).is_none(), "{absent} in {doc}");
        }
        assert_eq!(doc["dcs_last_seen"], 1_724_873_966);

        // Running but without a query result: "unknown", as Patroni reports it.
        let doc = status_document(&NodeView {
            wal_flush_lsn: None,
            ..leader_view()
        });
        assert_eq!(doc["state"], "unknown");
        assert!(doc.get("xlog").is_none());
    }

    #[test]
    fn parses_patroni_documents() {
        // As a Patroni 4 replica sends it.
        let replica = json!({
            "state": "running",
            "postmaster_start_time": "2024-08-28 19:39:26.352526+00:00",
            "role": "replica",
            "server_version": 160004,
            "xlog": {"received_location": 50331744, "replayed_location": 50331648,
                     "replayed_timestamp": null, "paused": false},
            "timeline": 2,
            "replication_state": "streaming",
            "dcs_last_seen": 1724873966,
            "tags": {"nofailover": true, "clonefrom": true},
            "database_system_identifier": "7408136390637420566",
            "patroni": {"version": "4.1.4", "scope": "demo", "name": "pg2"}
        });
        let peer = parse_peer_status(&replica).expect("replica");
        assert!(peer.in_recovery);
        assert_eq!(peer.wal_position, 50331744);
        assert_eq!((peer.nofailover, peer.failover_priority), (true, 0));
        assert_eq!(peer.name.as_deref(), Some("pg2"));

        // Patroni 3 primary: role "master".
        let primary = json!({"state": "running", "role": "master", "xlog": {"location": 0},
                             "timeline": 1, "patroni": {"version": "3.3.1", "scope": "demo"}});
        let peer = parse_peer_status(&primary).expect("primary");
        assert!(!peer.in_recovery);
        assert_eq!(peer.name, None);

        // `wal` is accepted in place of `xlog`.
        let wal = json!({"role": "replica", "wal": {"replayed_location": 7}});
        assert_eq!(parse_peer_status(&wal).expect("wal").wal_position, 7);

        let priority = json!({"role": "replica", "xlog": {}, "tags": {"failover_priority": "0"}});
        let peer = parse_peer_status(&priority).expect("priority");
        assert_eq!((peer.nofailover, peer.failover_priority), (true, 0));

        assert!(matches!(
            parse_peer_status(&json!({"state": "stopped", "role": "replica"})),
            Err(ApiError::MissingXlog)
        ));
        assert!(matches!(
            parse_peer_status(&json!({"role": "replica", "xlog": {"received_location": null}})),
            Err(ApiError::InvalidField { .. })
        ));
        assert!(matches!(
            parse_peer_status(&json!([1, 2])),
            Err(ApiError::NotAnObject)
        ));
    }

    #[test]
    fn lag_parsing() {
        assert_eq!(parse_lag_bytes("16kB"), Some(16 * 1024));
        assert_eq!(parse_lag_bytes("64MB"), Some(64 * 1024 * 1024));
        assert_eq!(parse_lag_bytes("1GB"), Some(1 << 30));
        assert_eq!(parse_lag_bytes(" 10 MB "), Some(10 * 1024 * 1024));
        assert_eq!(parse_lag_bytes("1048576"), Some(1 << 20));
        assert_eq!(parse_lag_bytes("100B"), Some(100));
        assert_eq!(parse_lag_bytes("0x10"), Some(16));
        assert_eq!(parse_lag_bytes("1.5kB"), Some(1536));
        assert_eq!(parse_lag_bytes("1e3"), Some(1000));
        assert_eq!(parse_lag_bytes("-1"), Some(-1));
        for invalid in ["", "abc", "1mb", "1KB", "1 parsec", "MB", "9x"] {
            assert_eq!(parse_lag_bytes(invalid), None, "{invalid:?}");
        }
    }
}
