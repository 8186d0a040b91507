//! The REST API (axum), compatible with Patroni's so that HAProxy, patronictl, Kubernetes probes
//! and Prometheus work unchanged.
//!
//! - Reads: the status document (`GET /patroni`) and the health checks (`/primary`,
//!   `/replica?lag=…`, …, `/liveness`, `/readiness`) come from the [`LocalSnapshot`] the HA loop
//!   publishes through a `watch` channel, so they never wait on PostgreSQL or the DCS.
//!   `GET /cluster`, `/history` and `/config` read the DCS. `GET /metrics` renders Patroni's
//!   gauges from the view plus Regent's own registry ([`crate::metrics`]).
//! - Writes: `PATCH`/`PUT /config` and `POST`/`DELETE /switchover`, `POST /failover` write DCS
//!   keys (with compare-and-swap) and wake the HA loop; `POST`/`DELETE /restart`,
//!   `POST /reinitialize` and `POST /reload` are handed to the HA loop as
//!   [`Command`](crate::control::Command)s and answered with its [`Reply`](crate::control::Reply).
//!   They need HTTP Basic auth (`restapi.authentication`) and pass the allowlist.
//! - [`PeerClient`] / [`fetch_peer_status`]: the client side, used by the HA loop to ask peers for
//!   their status during a leader race and by the switchover checks.
//!
//! Routing follows Patroni's: the first path segment selects the endpoint; every other `GET` path
//! goes through the generic health check, which matches keywords in the path (`leader`,
//! `primary`, `replica`, …). An unknown `GET` path therefore answers the status document with
//! 503, and `HEAD`/`OPTIONS` on any path run the same check and answer the status code only.
//! Other methods on unknown paths answer 501.

mod auth;
mod failsafe;
mod health;
mod merge;
mod peer;
mod prometheus;
mod read;
mod request;
mod server;
mod status;
mod switchover;
#[cfg(test)]
mod tests;
pub mod tls;
mod units;
mod write;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::connect_info::ConnectInfo;
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::Response;
use serde_json::{Map, Value};
use tokio::sync::watch;

use crate::config::{AllowEntry, BasicAuth, Config};
use crate::control::ControlHandle;
use crate::dcs::EtcdDcs;

pub(crate) use merge::merge_patch;
pub(crate) use peer::fetch_peer_status;
pub use peer::{ApiError, ClientOptions, PeerClient};
#[cfg(test)]
pub(crate) use peer::{TlsFile, parse_peer_status};
pub use server::serve;
pub(crate) use status::status_document;
pub(crate) use write::postgres_version_number;
pub use write::{ConfigWriteError, patch_config};

/// Snapshot of this node, published by the HA loop. The API derives every answer from it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LocalSnapshot {
    /// The cluster's scope (`scope` in the configuration).
    pub scope: String,
    /// This node's member name.
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
    /// PostgreSQL's timeline; `None` while it does not answer.
    pub timeline: Option<u32>,
    /// `pg_current_wal_flush_lsn()`; set only while PostgreSQL runs as a primary.
    pub wal_flush_lsn: Option<u64>,
    /// Replica: written (PG13+) or received LSN.
    pub received_lsn: Option<u64>,
    /// Replica: replayed LSN.
    pub replayed_lsn: Option<u64>,
    /// Replica: commit time of the last replayed transaction (`pg_last_xact_replay_timestamp()`).
    pub replayed_timestamp: Option<String>,
    /// Replica: WAL replay is paused (`pg_is_wal_replay_paused()`).
    pub replay_paused: bool,
    /// "streaming" | "in archive recovery"
    pub replication_state: Option<String>,
    /// This replica's data may have diverged from the leader's (a former primary not yet
    /// rewound, or WAL received past the leader's timeline fork): it serves no reads
    /// (`/replica`, `/read-only`, `/async`, `/sync` answer 503) until it is rewound.
    pub diverged: bool,
    /// Until when (`fence::mono_ms`) this primary may take writes: the health checks compare
    /// it with the time of each request, so a stalled loop does not keep `/primary` at 200.
    /// `None`: not known (no check).
    pub write_deadline_ms: Option<u64>,
    /// Why PostgreSQL failed to start, while it keeps failing (the end of its log): shown as
    /// `start_failure` in the status document and the member key.
    pub start_failure: Option<String>,
    /// Walsenders on this node.
    pub replication: Vec<ReplicationRow>,
    /// No member holds the leader key, or the DCS could not be read.
    pub cluster_unlocked: bool,
    /// The cluster is in maintenance mode (`pause` in the dynamic configuration).
    pub paused: bool,
    /// Unix seconds of the last successful DCS read.
    pub dcs_last_seen: Option<u64>,
    /// The last DCS read of the cluster succeeded.
    pub dcs_reachable: bool,
    /// Effective tags (nofailover, failover_priority, noloadbalance, nosync, custom...).
    pub tags: Map<String, Value>,
    /// `watchdog.mode: required` and no usable watchdog device: this node may not lead
    /// (`watchdog_failed` in `GET /patroni`, as Patroni reports it).
    pub watchdog_failed: bool,
    /// The data directory's database system identifier, once known.
    pub system_identifier: Option<String>,
    /// max(/status optime, latest_end_lsn); used for lag.
    pub leader_optime: Option<u64>,
    /// `maximum_lag_on_failover` from the dynamic configuration, in bytes.
    pub maximum_lag_on_failover: u64,
    /// Listed in `/sync`.
    pub sync_standby: bool,
    /// `synchronous_mode: quorum`: a listed standby is a quorum standby (`quorum_standby` in
    /// `GET /patroni`, `GET /quorum`) rather than a synchronous one.
    pub quorum_commit: bool,
    /// The leader lease's `ttl` from the dynamic configuration, in seconds.
    pub ttl: u64,
    /// `loop_wait` from the dynamic configuration, in seconds.
    pub loop_wait: u64,
    /// When the HA loop last completed a cycle (liveness).
    pub last_loop: Option<Instant>,
    /// Active policy info, included verbatim as "policy" in the status document if set.
    pub policy: Option<Value>,
    /// PostgreSQL must restart for a changed setting to take effect (`pending_restart` in the
    /// status document, the `patroni_pending_restart` metric). Filled by the supervisor;
    /// default `false`.
    pub pending_restart: bool,
    /// Why, as Patroni reports it: `{"<parameter>": {"old_value": "100", "new_value": "200"}}`.
    /// Shown only with `pending_restart`. Default `None`.
    pub pending_restart_reason: Option<Map<String, Value>>,
    /// The restart scheduled with `POST /restart {"schedule": …}`, as Patroni shows it:
    /// `{"schedule": "<RFC 3339>", "role": …, "postgres_version": …, "restart_pending": …,
    /// "timeout": …}` (conditions only when given). Default `None`.
    pub scheduled_restart: Option<Value>,
    /// The cluster's timing broke `loop_wait + 2 × retry_timeout <= ttl` and this node runs
    /// with fitted values (`ttl` and `loop_wait` above are the effective ones): shown as
    /// `regent.timing` in the status document. Default `None`.
    pub timing_adjusted: Option<crate::config::TimingFit>,
    /// `failsafe_mode` is on in the cluster's configuration.
    pub failsafe_mode: bool,
    /// The `failsafe` key as last read (`GET /failsafe`).
    pub failsafe: Option<std::collections::BTreeMap<String, String>>,
    /// Failsafe mode is active: this leader runs on its members' acceptance, or this replica
    /// accepted a leader's `POST /failsafe` less than `ttl` ago.
    pub failsafe_active: bool,
}

/// One walsender, as listed under `replication` in the status document.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct ReplicationRow {
    pub(crate) usename: String,
    pub(crate) application_name: String,
    pub(crate) client_addr: Option<String>,
    pub(crate) state: String,
    pub(crate) sync_state: String,
    pub(crate) sync_priority: i32,
}

// ---------------------------------------------------------------------------------------------
// Context
// ---------------------------------------------------------------------------------------------

/// What the API needs besides the view, from the configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiSettings {
    pub(crate) name: String,
    pub(crate) scope: String,
    /// Basic auth for the mutating endpoints (`restapi.authentication`).
    pub(crate) auth: Option<BasicAuth>,
    /// `restapi.allowlist`: who may call the mutating endpoints. Empty: anyone.
    pub(crate) allowlist: Vec<AllowEntry>,
    /// `restapi.allowlist_include_members`.
    pub allowlist_include_members: bool,
    /// Headers added to every response.
    pub(crate) extra_headers: Vec<(String, String)>,
    /// How long `POST /switchover` waits for the new leader. `None`: as Patroni,
    /// `2 × max(10, loop_wait)` seconds.
    pub switchover_timeout: Option<Duration>,
    /// The mutating endpoints answer 403 without a verified client certificate
    /// (`restapi.verify_client` `optional` or `required`, over HTTPS).
    pub(crate) client_cert_required: bool,
}

impl ApiSettings {
    /// No authentication, no allowlist.
    pub fn new(name: impl Into<String>, scope: impl Into<String>) -> ApiSettings {
        ApiSettings {
            name: name.into(),
            scope: scope.into(),
            auth: None,
            allowlist: Vec::new(),
            allowlist_include_members: false,
            extra_headers: Vec::new(),
            switchover_timeout: None,
            client_cert_required: false,
        }
    }

    /// The settings from the `restapi` section: authentication, allowlist and extra headers
    /// (`https_extra_headers` too when the API serves HTTPS).
    pub fn from_config(cfg: &Config) -> ApiSettings {
        let r = &cfg.restapi;
        let mut extra: Vec<(String, String)> = r
            .http_extra_headers
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if r.certfile.is_some() {
            extra.extend(
                r.https_extra_headers
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone())),
            );
        }
        ApiSettings {
            auth: r.authentication.clone(),
            // Validated with the configuration; an entry that does not parse is skipped.
            allowlist: r
                .allowlist
                .iter()
                .filter_map(|e| AllowEntry::parse(e).ok())
                .collect(),
            allowlist_include_members: r.allowlist_include_members,
            extra_headers: extra,
            client_cert_required: tls::VerifyClient::of(r) != tls::VerifyClient::None,
            ..ApiSettings::new(cfg.name.clone(), cfg.scope.clone())
        }
    }
}

/// Everything a request handler may use. Cheap to clone.
#[derive(Clone)]
pub struct ApiContext(Arc<Shared>);

struct Shared {
    view: watch::Receiver<LocalSnapshot>,
    control: ControlHandle,
    /// `None` only where no DCS is at hand (tests of the view-based endpoints): the endpoints
    /// that need it answer 503.
    dcs: Option<EtcdDcs>,
    /// What a reload may change: replaced whole, so a request sees one version throughout.
    live: std::sync::RwLock<Arc<Live>>,
    started: Instant,
}

/// The settings and what is derived from them.
struct Live {
    settings: Arc<ApiSettings>,
    access: auth::Access,
    headers: Vec<(HeaderName, HeaderValue)>,
    /// The client for other members' APIs (`ctl.cacert`, `ctl.authentication`, …).
    peers: PeerClient,
}

impl Live {
    fn new(settings: ApiSettings, peers: PeerClient) -> Live {
        let headers = settings
            .extra_headers
            .iter()
            .filter_map(|(k, v)| {
                Some((
                    HeaderName::from_bytes(k.as_bytes()).ok()?,
                    HeaderValue::from_str(v).ok()?,
                ))
            })
            .collect();
        Live {
            access: auth::Access::new(&settings),
            settings: Arc::new(settings),
            headers,
            peers,
        }
    }
}

impl ApiContext {
    /// The context for the handlers: the settings, the snapshot the HA loop publishes, the
    /// supervisor's command channel, the DCS (`None`: the endpoints that need it answer 503)
    /// and the client for requests to peers.
    pub fn new(
        settings: ApiSettings,
        view: watch::Receiver<LocalSnapshot>,
        control: ControlHandle,
        dcs: Option<EtcdDcs>,
        peers: PeerClient,
    ) -> ApiContext {
        ApiContext(Arc::new(Shared {
            view,
            control,
            dcs,
            live: std::sync::RwLock::new(Arc::new(Live::new(settings, peers))),
            started: Instant::now(),
        }))
    }

    /// Replace the settings and the peer client (a reload: new credentials, allowlist,
    /// headers, client certificates). Requests already past their access check finish under
    /// the old ones.
    pub(crate) fn set_settings(&self, settings: ApiSettings, peers: PeerClient) {
        let live = Arc::new(Live::new(settings, peers));
        match self.0.live.write() {
            Ok(mut l) => *l = live,
            Err(poisoned) => *poisoned.into_inner() = live,
        }
    }

    fn live(&self) -> Arc<Live> {
        match self.0.live.read() {
            Ok(l) => l.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn view(&self) -> LocalSnapshot {
        self.0.view.borrow().clone()
    }

    fn settings(&self) -> Arc<ApiSettings> {
        self.live().settings.clone()
    }

    fn control(&self) -> &ControlHandle {
        &self.0.control
    }

    fn peers(&self) -> PeerClient {
        self.live().peers.clone()
    }

    /// The DCS, or the 503 to answer without one.
    fn dcs(&self) -> Result<&EtcdDcs, Refusal> {
        self.0.dcs.as_ref().ok_or_else(|| {
            Refusal::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "this API has no DCS connection",
            )
        })
    }

    /// Read the whole cluster, or the 503 that says why it could not be read.
    async fn read_cluster(&self) -> Result<crate::dcs::Cluster, Refusal> {
        self.dcs()?.read_cluster().await.map_err(|e| {
            Refusal::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("cannot read the cluster from the DCS: {e}"),
            )
        })
    }
}

/// What a configuration reload changes in a running API: the credentials, allowlist and
/// headers ([`ApiSettings`]) and the certificate. Two steps, so that a reload can check
/// everything before it changes anything: [`Reloader::prepare`] reads the new certificate and
/// key (the errors name the key and the fix), [`Prepared::apply`] swaps both in.
#[derive(Clone)]
pub struct Reloader {
    ctx: ApiContext,
    tls: Option<tls::TlsCell>,
}

/// A checked new API configuration, ready to swap in.
pub(crate) struct Prepared {
    reloader: Reloader,
    settings: ApiSettings,
    peers: PeerClient,
    tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
}

impl Reloader {
    /// `tls`: the cell the server was started with (`None`: plain HTTP).
    pub fn new(ctx: ApiContext, tls: Option<tls::TlsCell>) -> Reloader {
        Reloader { ctx, tls }
    }

    /// Check `cfg`'s REST API settings; `peers`: the client built from `cfg` for the other
    /// members' APIs. HTTPS cannot be switched on or off while the server runs (the caller
    /// refuses a change of `restapi.certfile` between set and unset).
    pub(crate) fn prepare(
        &self,
        cfg: &Config,
        peers: PeerClient,
    ) -> Result<Prepared, tls::TlsError> {
        let tls = match &self.tls {
            Some(_) => tls::server_config(&cfg.restapi)?,
            None => None,
        };
        Ok(Prepared {
            reloader: self.clone(),
            settings: ApiSettings::from_config(cfg),
            peers,
            tls,
        })
    }
}

impl Prepared {
    pub(crate) fn apply(self) {
        if let (Some(cell), Some(config)) = (&self.reloader.tls, self.tls) {
            cell.set(config);
        }
        let mut settings = self.settings;
        settings.switchover_timeout = self.reloader.ctx.settings().switchover_timeout;
        self.reloader.ctx.set_settings(settings, self.peers);
    }
}

// ---------------------------------------------------------------------------------------------
// Server
// ---------------------------------------------------------------------------------------------

/// The client's address, attached to every request by [`serve`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerAddr(pub SocketAddr);

/// Whether the client presented a certificate that `restapi.cafile` verifies, attached to
/// every request by [`serve`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientCertificate(pub bool);

/// The API router. All paths go through one dispatcher, as in Patroni. Requests handled without
/// [`serve`] carry no client address: an allowlist then refuses them.
pub fn router(ctx: ApiContext) -> Router {
    Router::new().fallback(dispatch).with_state(ctx)
}

/// A mutating endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Endpoint {
    PatchConfig,
    PutConfig,
    Reload,
    Restart,
    CancelRestart,
    Reinitialize,
    Switchover,
    Failover,
    CancelSwitchover,
    Failsafe,
}

impl Endpoint {
    fn of(method: &Method, segment: &str) -> Option<Endpoint> {
        Some(match (method.as_str(), segment) {
            ("PATCH", "config") => Endpoint::PatchConfig,
            ("PUT", "config") => Endpoint::PutConfig,
            ("POST", "reload") => Endpoint::Reload,
            ("POST", "restart") => Endpoint::Restart,
            ("DELETE", "restart") => Endpoint::CancelRestart,
            ("POST", "reinitialize") => Endpoint::Reinitialize,
            ("POST", "switchover") => Endpoint::Switchover,
            ("POST", "failover") => Endpoint::Failover,
            ("DELETE", "switchover") => Endpoint::CancelSwitchover,
            ("POST", "failsafe") => Endpoint::Failsafe,
            _ => return None,
        })
    }
}

fn first_segment(path: &str) -> &str {
    path.trim_start_matches('/').split('/').next().unwrap_or("")
}

async fn dispatch(State(ctx): State<ApiContext>, req: Request) -> Response {
    let peer = req
        .extensions()
        .get::<ConnectInfo<PeerAddr>>()
        .map(|c| c.0.0);
    let method = req.method().clone();
    let uri = req.uri().clone();
    let started = Instant::now();
    let (response, mutating) = route(&ctx, peer, req).await;
    let response = finish(&ctx, response);
    let status = response.status().as_u16();
    let elapsed_ms = started.elapsed().as_millis() as u64;
    let peer = peer.map(|p| p.to_string()).unwrap_or_default();
    if mutating {
        tracing::info!(%method, %uri, %peer, status, elapsed_ms, "api request");
    } else {
        tracing::debug!(%method, %uri, %peer, status, elapsed_ms, "api request");
    }
    response
}

/// The response, and whether the request was for a mutating endpoint.
async fn route(ctx: &ApiContext, peer: Option<SocketAddr>, req: Request) -> (Response, bool) {
    let method = req.method().clone();
    let segment = first_segment(req.uri().path()).to_string();
    if method == Method::GET {
        let response = match segment.as_str() {
            "cluster" => read::cluster(ctx).await,
            "history" => read::history(ctx).await,
            "config" => read::config(ctx).await,
            "elections" => read::elections(ctx, req.uri().path()).await,
            "failsafe" => Ok(failsafe::get(ctx)),
            "metrics" => Ok(prometheus::metrics(ctx)),
            _ => Ok(view_response(ctx, &method, req.uri())),
        };
        return (response.unwrap_or_else(Refusal::into_response), false);
    }
    if method == Method::HEAD || method == Method::OPTIONS {
        return (view_response(ctx, &method, req.uri()), false);
    }
    let Some(endpoint) = Endpoint::of(&method, &segment) else {
        let body = format!("Unsupported method ({method})");
        return (text(StatusCode::NOT_IMPLEMENTED, body), false);
    };
    let ip = peer.map(|p| p.ip());
    let check_members = endpoint != Endpoint::Failsafe;
    let client_cert = req
        .extensions()
        .get::<ClientCertificate>()
        .is_some_and(|c| c.0);
    let live = ctx.live();
    if let Err(denied) = live
        .access
        .check(ctx, ip, client_cert, req.headers(), check_members)
        .await
    {
        return (denied, true);
    }
    let (parts, body) = req.into_parts();
    let response = match endpoint {
        Endpoint::PatchConfig => write::patch(ctx, &parts.headers, body).await,
        Endpoint::PutConfig => write::put(ctx, &parts.headers, body).await,
        Endpoint::Reload => write::reload(ctx).await,
        Endpoint::Restart => write::restart(ctx, &parts.headers, body).await,
        Endpoint::CancelRestart => write::cancel_restart(ctx).await,
        Endpoint::Reinitialize => write::reinitialize(ctx, &parts.headers, body).await,
        Endpoint::Switchover => {
            switchover::post(ctx, switchover::Action::Switchover, &parts.headers, body).await
        }
        Endpoint::Failover => {
            switchover::post(ctx, switchover::Action::Failover, &parts.headers, body).await
        }
        Endpoint::CancelSwitchover => switchover::cancel(ctx).await,
        Endpoint::Failsafe => failsafe::post(ctx, &parts.headers, body).await,
    };
    (response.unwrap_or_else(Refusal::into_response), true)
}

/// The endpoints answered from the view alone: `/patroni`, `/policy`, the probes and the
/// health checks (and, for `HEAD`/`OPTIONS`, any path).
fn view_response(ctx: &ApiContext, method: &Method, uri: &Uri) -> Response {
    let view = ctx.0.view.borrow();
    let v: &LocalSnapshot = &view;
    let status_only = method != Method::GET;
    let path = uri.path();
    let params = health::Params::from_uri(uri);
    let segment = first_segment(path);
    if segment == "policy" && !status_only {
        // The node's policies: name, version, digest, hooks, load time, faults.
        let info = v
            .policy
            .clone()
            .unwrap_or_else(|| serde_json::json!({"name": "builtin-default"}));
        return json(StatusCode::OK, &info);
    }
    let (status, with_document) = match segment {
        "patroni" if !status_only => (StatusCode::OK, true),
        "liveness" => (health::liveness_status(v, ctx.0.started), false),
        "readiness" => (health::readiness_status(v, &params), false),
        _ => (health::health_status(v, path, &params), !status_only),
    };
    if with_document {
        json(status, &status_document(v))
    } else {
        empty(status)
    }
}

/// Headers every response carries: `Server` and the configured extra headers.
fn finish(ctx: &ApiContext, mut response: Response) -> Response {
    let version = ctx.0.view.borrow().version.clone();
    let headers = response.headers_mut();
    let server = HeaderValue::from_str(&format!("Regent/{version}"))
        .unwrap_or_else(|_| HeaderValue::from_static("Regent"));
    headers.insert(header::SERVER, server);
    for (k, v) in &ctx.live().headers {
        headers.insert(k.clone(), v.clone());
    }
    response
}

fn respond(status: StatusCode, body: Body, content_type: Option<&'static str>) -> Response {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    if let Some(ct) = content_type {
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
    }
    response
}

/// A request answered with an error status and a plain-text message; small, so it travels in
/// `Result`s cheaply.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Refusal {
    status: StatusCode,
    message: String,
}

impl Refusal {
    fn new(status: StatusCode, message: impl Into<String>) -> Refusal {
        Refusal {
            status,
            message: message.into(),
        }
    }

    fn bad_request(message: impl Into<String>) -> Refusal {
        Refusal::new(StatusCode::BAD_REQUEST, message)
    }

    fn into_response(self) -> Response {
        text(self.status, self.message)
    }
}

/// What handlers return: the answer, or the refusal to send instead.
type Answer = Result<Response, Refusal>;

/// A plain-text answer (the results and errors of the mutating endpoints).
fn text(status: StatusCode, body: impl Into<String>) -> Response {
    respond(
        status,
        Body::from(body.into()),
        Some("text/plain; charset=utf-8"),
    )
}

fn json(status: StatusCode, body: &Value) -> Response {
    respond(
        status,
        Body::from(body.to_string()),
        Some("application/json"),
    )
}

fn empty(status: StatusCode) -> Response {
    respond(status, Body::empty(), None)
}

/// A status code from a number (the HA loop's replies); 500 for a number that is none.
fn status_code(code: u16) -> StatusCode {
    StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}
