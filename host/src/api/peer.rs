//! The HTTP client Regent uses to talk to other members' REST APIs: peers' status during a leader
//! race and candidate checks before a switchover (`GET <api_url>`), and `regent ctl`'s calls.
//!
//! Like Patroni's, it sends HTTP Basic auth from `ctl.authentication` (falling back to
//! `restapi.authentication`) and speaks HTTPS, trusting the system roots plus `ctl.cacert`
//! (falling back to `restapi.cafile`), with a client certificate from `ctl.certfile`/`ctl.keyfile`.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Map, Value};

use super::units::{parse_int_value, truthy};
use crate::config::{BasicAuth, Config, Ctl};

/// A TLS file and the configuration key it came from (named in errors).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TlsFile {
    pub(crate) key: &'static str,
    pub(crate) path: PathBuf,
}

/// How to reach other members' REST APIs.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientOptions {
    /// Basic auth, sent with requests that change something (see [`PeerClient::request`]).
    pub(crate) auth: Option<BasicAuth>,
    /// The cluster's REST APIs speak HTTPS (`restapi.certfile` is set): credentials never go
    /// over plain HTTP.
    pub(crate) https_only: bool,
    /// Extra trusted CA certificates (PEM), besides the system's.
    pub(crate) cacert: Option<TlsFile>,
    /// Skip server certificate verification (`ctl.insecure`).
    pub(crate) insecure: bool,
    /// Client certificate (PEM, may also hold the key) and its key.
    pub(crate) certfile: Option<TlsFile>,
    pub(crate) keyfile: Option<TlsFile>,
    /// Default per-request timeout.
    pub(crate) timeout: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            auth: None,
            https_only: false,
            cacert: None,
            insecure: false,
            certfile: None,
            keyfile: None,
            timeout: Duration::from_secs(2),
        }
    }
}

impl ClientOptions {
    /// The options a node uses, from its configuration (Patroni's `ctl` section with
    /// `restapi` fallbacks).
    pub(crate) fn from_config(cfg: &Config) -> ClientOptions {
        ClientOptions {
            auth: cfg.ctl_authentication().cloned(),
            https_only: cfg.restapi.certfile.is_some(),
            ..ClientOptions::tls_of(&cfg.ctl, cfg.restapi.cafile.as_ref())
        }
    }

    /// The TLS side alone, as Patroni's request.py takes it: `ctl.cacert` (else
    /// `restapi.cafile`), `ctl.certfile`/`keyfile`, `ctl.insecure`. `regent ctl` uses it too.
    pub(crate) fn tls_of(ctl: &Ctl, restapi_cafile: Option<&PathBuf>) -> ClientOptions {
        let file = |key: &'static str, path: Option<&PathBuf>| {
            path.cloned().map(|path| TlsFile { key, path })
        };
        ClientOptions {
            cacert: file("ctl.cacert", ctl.cacert.as_ref())
                .or_else(|| file("restapi.cafile", restapi_cafile)),
            insecure: ctl.insecure,
            certfile: file("ctl.certfile", ctl.certfile.as_ref()),
            keyfile: file("ctl.keyfile", ctl.keyfile.as_ref()),
            ..ClientOptions::default()
        }
    }
}

/// An HTTP client for members' REST APIs (cheap to clone).
#[derive(Debug, Clone)]
pub struct PeerClient {
    http: reqwest::Client,
    auth: Option<BasicAuth>,
    https_only: bool,
}

fn read_tls_file(f: &TlsFile, what: &str) -> Result<Vec<u8>, ApiError> {
    std::fs::read(&f.path).map_err(|e| ApiError::ClientFile {
        key: f.key,
        path: f.path.clone(),
        problem: format!("cannot read the {what}: {e}"),
        fix: format!(
            "check the path and that the user running Regent may read it, or remove {}",
            f.key
        ),
    })
}

impl PeerClient {
    /// A client with these options: trusted CA certificates, client certificate, Basic auth,
    /// timeout, and certificate verification.
    pub fn new(opts: &ClientOptions) -> Result<PeerClient, ApiError> {
        let b = reqwest::Client::builder()
            .no_proxy()
            .timeout(opts.timeout)
            // A Regent peer closes a connection idle for `HEADER_READ_TIMEOUT`: drop it well
            // before, so that a request never goes out on a connection the server is closing.
            .pool_idle_timeout(super::server::HEADER_READ_TIMEOUT / 2);
        let http = Self::with_tls(b, opts)?.build().map_err(ApiError::Client)?;
        Ok(PeerClient {
            http,
            auth: opts.auth.clone(),
            https_only: opts.https_only,
        })
    }

    /// A client from a node's configuration (see [`ClientOptions::from_config`]).
    pub fn from_config(cfg: &Config) -> Result<PeerClient, ApiError> {
        PeerClient::new(&ClientOptions::from_config(cfg))
    }

    /// `b` with the TLS side of `opts`: rustls, the trusted CA certificates, the client
    /// certificate, and whether to verify the server's certificate. `regent ctl` builds its client
    /// with it too.
    pub(crate) fn with_tls(
        b: reqwest::ClientBuilder,
        opts: &ClientOptions,
    ) -> Result<reqwest::ClientBuilder, ApiError> {
        let mut b = b
            .use_rustls_tls()
            .danger_accept_invalid_certs(opts.insecure);
        if let Some(ca) = &opts.cacert {
            let pem = read_tls_file(ca, "CA certificates")?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .ok()
                .filter(|c| !c.is_empty())
                .ok_or_else(|| ApiError::ClientFile {
                    key: ca.key,
                    path: ca.path.clone(),
                    problem: "holds no PEM certificate".into(),
                    fix: "point it at a PEM file with the CA certificate(s) that signed the members' REST API certificates".into(),
                })?;
            for c in certs {
                b = b.add_root_certificate(c);
            }
        }
        if let Some(cert) = &opts.certfile {
            let mut pem = read_tls_file(cert, "client certificate")?;
            if let Some(key) = &opts.keyfile {
                pem.push(b'\n');
                pem.extend(read_tls_file(key, "client key")?);
            }
            let identity = reqwest::Identity::from_pem(&pem).map_err(|e| ApiError::ClientFile {
                key: cert.key,
                path: cert.path.clone(),
                problem: format!("is not a usable PEM certificate and private key: {e}"),
                fix: "give a PEM certificate in ctl.certfile and its unencrypted PEM key in ctl.keyfile (or in the same file)".into(),
            })?;
            b = b.identity(identity);
        }
        Ok(b)
    }

    /// A request to `url`, with Basic auth when configured, for a request that changes
    /// something. Reads (`GET`, `HEAD`: the status polls of an election or a switchover) are
    /// never restricted by a REST API (Regent's or Patroni's), so the credentials do not go to
    /// whatever `api_url` a member key names; and when the cluster's APIs speak HTTPS, they
    /// never go in clear text.
    pub(crate) fn request(&self, method: reqwest::Method, url: &str) -> reqwest::RequestBuilder {
        let safe = method == reqwest::Method::GET || method == reqwest::Method::HEAD;
        let encrypted = url.starts_with("https://");
        let r = self.http.request(method, url);
        match &self.auth {
            Some(a) if !safe && (encrypted || !self.https_only) => {
                r.basic_auth(&a.username, Some(&a.password))
            }
            _ => r,
        }
    }
}

/// A peer's status as read from its status document (Patroni's `_MemberStatus`).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct PeerStatus {
    /// `patroni.name`, if the peer sent it.
    pub(crate) name: Option<String>,
    pub(crate) role: String,
    pub(crate) state: String,
    /// `false` when the document has `xlog.location` or the role is `primary`/`master`.
    pub(crate) in_recovery: bool,
    /// Replica: max(received_location, replayed_location); primary: location.
    pub(crate) wal_position: u64,
    /// Replica: `xlog.received_location` and `xlog.replayed_location`.
    pub(crate) received_lsn: Option<u64>,
    pub(crate) replayed_lsn: Option<u64>,
    pub(crate) timeline: Option<u32>,
    pub(crate) nofailover: bool,
    pub(crate) failover_priority: i64,
    pub(crate) tags: Map<String, Value>,
    /// Regent's `policy.health.verdict` is not `failed` (a Patroni peer publishes none and
    /// counts as healthy).
    pub(crate) healthy: bool,
}

/// Errors of [`fetch_peer_status`] / [`parse_peer_status`]; any of them means the peer counts as
/// unreachable in a leader race.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request failed: no connection, a timeout, or the body could not be read.
    #[error("request to {url} failed: {source}")]
    Request {
        /// The URL requested.
        url: String,
        /// What the HTTP client reported.
        #[source]
        source: reqwest::Error,
    },
    /// The response body is larger than the limit.
    #[error("response from {url} exceeds {limit} bytes")]
    TooLarge {
        /// The URL requested.
        url: String,
        /// The largest body accepted, in bytes.
        limit: usize,
    },
    /// The response body is not JSON.
    #[error("response from {url} (HTTP {status}) is not valid JSON: {source}")]
    InvalidJson {
        /// The URL requested.
        url: String,
        /// The response's HTTP status.
        status: u16,
        /// Why the body does not parse.
        #[source]
        source: serde_json::Error,
    },
    /// The status document is JSON but not an object.
    #[error("status document is not a JSON object")]
    NotAnObject,
    /// The status document has neither `wal` nor `xlog`: the peer could not query its
    /// PostgreSQL.
    #[error("status document has no xlog: PostgreSQL on the peer could not be queried")]
    MissingXlog,
    /// A field of the status document has a value of the wrong kind.
    #[error("status document field {field} is invalid: {value}")]
    InvalidField {
        /// The field's name.
        field: &'static str,
        /// The value found, as JSON.
        value: String,
    },
    /// A TLS file for the HTTP client cannot be used.
    #[error("{key} = {path:?}: {problem}; {fix}")]
    ClientFile {
        /// The configuration key that names the file.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
        /// How to fix it.
        fix: String,
    },
    /// The HTTP client cannot be built.
    #[error("cannot set up the HTTP client: {0}")]
    Client(#[source] reqwest::Error),
}

/// Largest status document accepted from a peer.
const MAX_PEER_DOCUMENT: usize = 4 * 1024 * 1024;

/// `GET <api_url>` (a member's `api_url`, which ends in `/patroni`) within `timeout`, parsed as
/// Patroni peers parse it. The HTTP status is not checked, as in Patroni: the body decides.
pub(crate) async fn fetch_peer_status(
    client: &PeerClient,
    api_url: &str,
    timeout: Duration,
) -> Result<PeerStatus, ApiError> {
    let request_error = |source| ApiError::Request {
        url: api_url.to_string(),
        source,
    };
    let mut response = client
        .request(reqwest::Method::GET, api_url)
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
pub(crate) fn parse_peer_status(doc: &Value) -> Result<PeerStatus, ApiError> {
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
    let (wal_position, received_lsn, replayed_lsn) = if in_recovery {
        let received = lsn_field(wal, "received_location")?;
        let replayed = lsn_field(wal, "replayed_location")?;
        (received.max(replayed), Some(received), Some(replayed))
    } else {
        (lsn_field(wal, "location").unwrap_or(0), None, None)
    };
    let tags = obj
        .get("tags")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let (nofailover, failover_priority) = failover_tags(&tags);
    // Patroni's "not watchdog capable": required watchdog, none usable.
    let watchdog_failed = obj.get("watchdog_failed").is_some_and(truthy);
    let (nofailover, failover_priority) = if watchdog_failed {
        (true, 0)
    } else {
        (nofailover, failover_priority)
    };
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
        received_lsn,
        replayed_lsn,
        timeline: obj
            .get("timeline")
            .and_then(Value::as_u64)
            .and_then(|t| u32::try_from(t).ok()),
        nofailover,
        failover_priority,
        tags,
        healthy: !super::status::policy_judged_failed(obj.get("policy")),
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
pub(super) fn failover_tags(tags: &Map<String, Value>) -> (bool, i64) {
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
