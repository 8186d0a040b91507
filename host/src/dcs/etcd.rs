//! etcd v3 adapter: Patroni's key layout over `etcd-client`, every call under a deadline.

use super::EtcdAccess;
use super::{Cluster, Failover, HistoryLine, MemberData, RawKv, Status, SyncState, keys};
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, DeleteOptions, EventType, GetOptions,
    LeaseKeepAliveStream, LeaseKeeper, PutOptions, Txn, TxnOp, TxnOpResponse, WatchOptions,
};
use serde_json::Value;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{Mutex, Notify};

/// Why an etcd operation failed.
#[derive(Debug, thiserror::Error)]
pub enum DcsError {
    /// The request did not finish before its deadline.
    #[error("etcd request `{op}` timed out after {timeout:?} (endpoints: {endpoints})")]
    Timeout {
        /// The operation, e.g. `range` or `lease keepalive`.
        op: &'static str,
        /// The time the request was given.
        timeout: Duration,
        /// The etcd endpoints, comma-separated.
        endpoints: String,
    },
    /// etcd or the connection to it returned an error.
    #[error("etcd request `{op}` failed: {source} (endpoints: {endpoints})")]
    Etcd {
        /// The operation, e.g. `range` or `lease keepalive`.
        op: &'static str,
        /// The etcd endpoints, comma-separated.
        endpoints: String,
        /// The client's error.
        #[source]
        source: etcd_client::Error,
    },
    /// The lease with this id has expired: a new one must be granted.
    #[error("etcd lease {0} has expired")]
    LeaseExpired(i64),
    /// No lease has been granted yet.
    #[error("no etcd lease has been granted yet")]
    NoLease,
    /// A TLS file named in the etcd section cannot be used.
    #[error(transparent)]
    File(#[from] super::access::EtcdFileError),
    /// A value could not be encoded as JSON.
    #[error("cannot encode value for key `{key}`: {source}")]
    Encode {
        /// The key the value was for.
        key: &'static str,
        /// The encoder's error.
        #[source]
        source: serde_json::Error,
    },
    /// A stored value does not decode.
    #[error("etcd key `{key}` holds an invalid value: {message}")]
    Decode {
        /// The key, relative to the cluster prefix.
        key: String,
        /// What is wrong and how to fix it.
        message: String,
    },
}

pub(super) type Result<T> = std::result::Result<T, DcsError>;

/// How long the connection may stay silent before the client sends an HTTP/2 PING to check it
/// is alive. etcd answers pings that come closer together than its `--grpc-keepalive-min-time`
/// (5 s by default) with strikes, unless it sent data in between; at the third strike it sends
/// GOAWAY `ENHANCE_YOUR_CALM` ("too_many_pings") and closes the connection, with every stream
/// on it: the lease keep-alive stream and the watch. A 2 s interval did exactly that after ~8 s
/// of idle connection, so a loop_wait of 10 s lost the keep-alive stream every other loop.
/// Twice the server's default keeps clear of it; a dead connection is still noticed within
/// this plus the keep-alive timeout (retry_timeout), and every request has its own deadline.
const HTTP2_PING_INTERVAL: Duration = Duration::from_secs(10);

/// The pause before each retry of a failed keep-alive after the first (which is immediate), so
/// that an etcd refusing connections is not hammered until the deadline.
const KEEPALIVE_RETRY_PAUSE: Duration = Duration::from_millis(100);

/// The pause between tries of the first request while etcd does not serve yet.
const FIRST_STATUS_PAUSE: Duration = Duration::from_millis(100);

struct LeaseState {
    id: i64,
    stream: Option<(LeaseKeeper, LeaseKeepAliveStream)>,
    /// The ttl this lease was asked for when it was granted (seconds).
    requested_ttl: u64,
}

/// A successful lease renewal (or grant).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Renewal {
    /// The lease this process holds.
    pub lease: i64,
    /// When the renewal (or grant) request was sent: the lease cannot expire before
    /// `sent + granted_ttl`.
    pub sent: Instant,
    /// The TTL etcd granted the lease, in seconds. A keep-alive renews a lease to the TTL it
    /// was granted with, whatever the configured ttl says now: deadlines come from this.
    pub granted_ttl: u64,
    /// The ttl the lease was asked for when it was granted. When the configured ttl differs,
    /// the lease must be replaced ([`EtcdDcs::replace_lease`]).
    pub requested_ttl: u64,
}

/// A handle to the cluster's keys in etcd. Cheap to clone.
#[derive(Clone)]
pub struct EtcdDcs {
    pub(super) client: Client,
    prefix: String,
    endpoints: String,
    timeout: Duration,
    lease: Arc<Mutex<Option<LeaseState>>>,
    /// Woken when the leader, status, config or failover key changes.
    pub(crate) changed: Arc<Notify>,
}

impl DcsError {
    /// etcd did not answer: the request timed out, or the connection failed or was cut
    /// (not an answer such as a failed compare-and-swap or a bad value).
    pub fn is_unreachable(&self) -> bool {
        match self {
            DcsError::Timeout { .. } => true,
            DcsError::Etcd { source, .. } => match source {
                etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_) => true,
                etcd_client::Error::GRpcStatus(s) => matches!(
                    s.code(),
                    tonic::Code::Cancelled
                        | tonic::Code::DeadlineExceeded
                        | tonic::Code::Unavailable
                ),
                _ => false,
            },
            _ => false,
        }
    }
}

impl EtcdDcs {
    /// Connect and check the store answers (the client connects lazily, so a first request is made).
    pub async fn connect(endpoints: &[String], prefix: &str, timeout: Duration) -> Result<EtcdDcs> {
        Self::connect_with(&EtcdAccess::plain(endpoints), prefix, timeout).await
    }

    /// [`EtcdDcs::connect`] with TLS and etcd's authentication as `access` says.
    pub async fn connect_with(
        access: &EtcdAccess,
        prefix: &str,
        timeout: Duration,
    ) -> Result<EtcdDcs> {
        let joined = access.endpoints.join(",");
        let opts = access.apply(
            ConnectOptions::new()
                .with_connect_timeout(timeout)
                .with_timeout(timeout)
                .with_keep_alive(HTTP2_PING_INTERVAL, timeout),
        )?;
        let client = deadline(
            "connect",
            timeout,
            &joined,
            Client::connect(access.urls(), Some(opts)),
        )
        .await?;
        let dcs = EtcdDcs {
            client,
            prefix: prefix.to_string(),
            endpoints: joined,
            timeout,
            lease: Arc::new(Mutex::new(None)),
            changed: Arc::new(Notify::new()),
        };
        dcs.first_status().await?;
        Ok(dcs)
    }

    /// The first request on a new client. etcd accepts connections on its client port a moment
    /// before it serves them (a connection opened then is closed under the request), so a
    /// refused or dropped connection is tried again until the timeout; any answer from etcd,
    /// an error included, ends the wait.
    async fn first_status(&self) -> Result<()> {
        let until = Instant::now() + self.timeout;
        loop {
            let mut c = self.client.clone();
            match self.call_until("status", until, c.status()).await {
                Ok(_) => return Ok(()),
                Err(DcsError::Etcd { source, .. })
                    if not_served(&source) && Instant::now() + FIRST_STATUS_PAUSE < until =>
                {
                    tracing::debug!(error = %source, "etcd is not serving yet; trying again");
                    tokio::time::sleep(FIRST_STATUS_PAUSE).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    pub(super) fn key(&self, rel: &str) -> String {
        format!("{}{}", self.prefix, rel)
    }

    pub(super) async fn call<T, F>(&self, op: &'static str, fut: F) -> Result<T>
    where
        F: Future<Output = std::result::Result<T, etcd_client::Error>>,
    {
        deadline(op, self.timeout, &self.endpoints, fut).await
    }

    /// Like [`Self::call`], under a deadline shared by several requests (one operation of a
    /// few steps must finish within `timeout` as a whole).
    async fn call_until<T, F>(&self, op: &'static str, until: Instant, fut: F) -> Result<T>
    where
        F: Future<Output = std::result::Result<T, etcd_client::Error>>,
    {
        deadline_at(op, until, self.timeout, &self.endpoints, fut).await
    }

    /// Read every key under the cluster prefix in one request.
    pub async fn read_cluster(&self) -> Result<Cluster> {
        self.read_cluster_at(&self.prefix).await
    }

    /// Read every key under another cluster's prefix (`/<namespace>/<scope>/`) in one request:
    /// `regent ctl list` shows several clusters of one etcd.
    pub(crate) async fn read_cluster_at(&self, prefix: &str) -> Result<Cluster> {
        let mut c = self.client.clone();
        // Everything but the election records (`regent/…`), at one revision: the keys before
        // `regent/` and those from `regent0` (the next key after the folder) to the prefix's end.
        let skip = format!("{prefix}{}", super::elections::ELECTIONS);
        let after = format!("{}0", skip.trim_end_matches('/'));
        let txn = Txn::new().and_then([
            TxnOp::get(prefix.to_string(), Some(GetOptions::new().with_range(skip))),
            TxnOp::get(
                after,
                Some(GetOptions::new().with_range(prefix_end(prefix))),
            ),
        ]);
        let resp = self.call("range", c.txn(txn)).await?;
        let revision = resp.header().map(|h| h.revision()).unwrap_or(0);
        let kvs: Vec<(String, Vec<u8>, i64, i64)> = resp
            .op_responses()
            .into_iter()
            .filter_map(|op| match op {
                TxnOpResponse::Get(g) => Some(g),
                _ => None,
            })
            .flat_map(|g| g.kvs().to_vec())
            .filter_map(|kv| {
                let key = std::str::from_utf8(kv.key()).ok()?;
                let rel = key.strip_prefix(prefix)?;
                Some((
                    rel.to_string(),
                    kv.value().to_vec(),
                    kv.lease(),
                    kv.mod_revision(),
                ))
            })
            .collect();
        Ok(Cluster::from_kvs(
            kvs.iter().map(|(k, v, l, m)| RawKv {
                key: k,
                value: v,
                lease: *l,
                mod_revision: *m,
            }),
            revision,
        ))
    }

    /// The lease currently held by this process, if any.
    pub(crate) async fn lease_id(&self) -> Option<i64> {
        self.lease.lock().await.as_ref().map(|l| l.id)
    }

    /// Make sure we hold a live lease, renewing it (or granting a new one for `ttl` when it has
    /// expired), all within one `timeout` (retry_timeout). Compute deadlines from the
    /// [`Renewal`]'s granted TTL, not the configured one: etcd may grant another (it raises a
    /// TTL below its minimum), and a lease renewed keeps the TTL it was granted with.
    pub async fn refresh_lease(&self, ttl: u64) -> Result<Renewal> {
        let until = Instant::now() + self.timeout;
        let mut guard = self.lease.lock().await;
        if let Some(state) = guard.as_mut() {
            let renewed = self.keepalive(state, until).await;
            crate::metrics::lease_renewal(renewed.is_ok());
            match renewed {
                Ok((sent, granted_ttl)) => {
                    return Ok(Renewal {
                        lease: state.id,
                        sent,
                        granted_ttl,
                        requested_ttl: state.requested_ttl,
                    });
                }
                Err(DcsError::LeaseExpired(id)) => {
                    tracing::warn!(lease = id, "etcd lease expired; granting a new one");
                    *guard = None;
                }
                Err(e) => {
                    state.stream = None;
                    return Err(e);
                }
            }
        }
        let renewal = self.grant(ttl, until).await?;
        *guard = Some(LeaseState {
            id: renewal.lease,
            stream: None,
            requested_ttl: ttl,
        });
        Ok(renewal)
    }

    /// Grant a new lease for `ttl` seconds (not yet held: the caller stores it).
    async fn grant(&self, ttl: u64, until: Instant) -> Result<Renewal> {
        let sent = Instant::now();
        let mut c = self.client.clone();
        let resp = self
            .call_until(
                "lease grant",
                until,
                c.lease_grant(i64::try_from(ttl).unwrap_or(i64::MAX), None),
            )
            .await?;
        crate::metrics::lease_grant();
        Ok(Renewal {
            lease: resp.id(),
            sent,
            granted_ttl: granted_secs(resp.ttl()),
            requested_ttl: ttl,
        })
    }

    /// The configured ttl changed: grant a lease for the new `ttl` and move the leader key onto
    /// it in one transaction, if the key holds `name` on our current lease, all within one
    /// `timeout`. From then on only the new lease is renewed; the old one expires with nothing
    /// on it (the member key moves at its next write). If the transaction fails the old lease
    /// stays ours and the new one is revoked: the leader key is never on a lease we do not
    /// renew.
    pub async fn replace_lease(&self, ttl: u64, name: &str) -> Result<Renewal> {
        let until = Instant::now() + self.timeout;
        let mut guard = self.lease.lock().await;
        let old = guard.as_ref().map(|s| s.id);
        let renewal = self.grant(ttl, until).await?;
        if let Some(old) = old {
            let key = self.key(keys::LEADER);
            let txn = Txn::new()
                .when([
                    Compare::value(key.clone(), CompareOp::Equal, name),
                    Compare::lease(key.clone(), CompareOp::Equal, old),
                ])
                .and_then([TxnOp::put(
                    key,
                    name,
                    Some(PutOptions::new().with_lease(renewal.lease)),
                )]);
            let mut c = self.client.clone();
            if let Err(e) = self.call_until("move leader key", until, c.txn(txn)).await {
                let mut c = self.client.clone();
                let _ = self
                    .call("lease revoke", c.lease_revoke(renewal.lease))
                    .await;
                return Err(e);
            }
        }
        *guard = Some(LeaseState {
            id: renewal.lease,
            stream: None,
            requested_ttl: ttl,
        });
        Ok(renewal)
    }

    /// Renew the lease on its keep-alive stream, opening one if there is none. A failure other
    /// than the lease being gone drops the stream and retries at once on a fresh one (its
    /// connection may have been closed under it: etcd restarted, a GOAWAY), then every
    /// [`KEEPALIVE_RETRY_PAUSE`], until `until`. Returns the send time of the renewal that
    /// succeeded and the TTL etcd granted.
    async fn keepalive(&self, state: &mut LeaseState, until: Instant) -> Result<(Instant, u64)> {
        let mut failed: Option<(u32, DcsError)> = None;
        loop {
            match self.keepalive_once(state, until).await {
                Ok(renewed) => {
                    if let Some((attempts, last)) = &failed {
                        tracing::info!(
                            lease = state.id,
                            failed_attempts = attempts,
                            error = %last,
                            "etcd lease renewed on a fresh keep-alive stream"
                        );
                    }
                    return Ok(renewed);
                }
                Err(e @ DcsError::LeaseExpired(_)) => return Err(e),
                Err(e) => {
                    state.stream = None;
                    let (pause, attempts) = match &failed {
                        None => (Duration::ZERO, 1),
                        Some((n, _)) => (KEEPALIVE_RETRY_PAUSE, n + 1),
                    };
                    if Instant::now() + pause >= until {
                        return Err(e);
                    }
                    tracing::debug!(
                        lease = state.id,
                        error = %e,
                        "etcd lease keep-alive failed; retrying on a fresh stream"
                    );
                    failed = Some((attempts, e));
                    tokio::time::sleep(pause).await;
                }
            }
        }
    }

    /// One renewal: open the keep-alive stream if needed, send one request, read its response.
    async fn keepalive_once(
        &self,
        state: &mut LeaseState,
        until: Instant,
    ) -> Result<(Instant, u64)> {
        if state.stream.is_none() {
            let mut c = self.client.clone();
            let pair = match self
                .call_until("lease keepalive", until, c.lease_keep_alive(state.id))
                .await
            {
                Ok(pair) => pair,
                // Opening a keep-alive stream for a lease etcd no longer has (it expired while
                // we could not reach etcd) fails with this error rather than yielding a TTL 0
                // response: the lease is gone, so a new one must be granted.
                Err(DcsError::Etcd {
                    source: etcd_client::Error::LeaseKeepAliveError(m),
                    ..
                }) if m.contains("not found") => return Err(DcsError::LeaseExpired(state.id)),
                Err(e) => return Err(e),
            };
            state.stream = Some(pair);
        }
        let Some((keeper, stream)) = state.stream.as_mut() else {
            return Err(DcsError::NoLease);
        };
        let sent = Instant::now();
        self.call_until("lease keepalive", until, keeper.keep_alive())
            .await?;
        let resp = self
            .call_until("lease keepalive", until, stream.message())
            .await?;
        match resp {
            Some(r) if r.ttl() > 0 => Ok((sent, granted_secs(r.ttl()))),
            Some(_) => Err(DcsError::LeaseExpired(state.id)),
            None => Err(DcsError::Etcd {
                op: "lease keepalive",
                endpoints: self.endpoints.clone(),
                source: etcd_client::Error::LeaseKeepAliveError("stream closed".into()),
            }),
        }
    }

    async fn require_lease(&self) -> Result<i64> {
        self.lease_id().await.ok_or(DcsError::NoLease)
    }

    /// Create the leader key if it does not exist (`create_revision == 0`).
    pub async fn acquire_leader(&self, name: &str) -> Result<bool> {
        let lease = self.require_lease().await?;
        let key = self.key(keys::LEADER);
        let txn = Txn::new()
            .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(
                key,
                name,
                Some(PutOptions::new().with_lease(lease)),
            )]);
        let mut c = self.client.clone();
        Ok(self.call("acquire leader", c.txn(txn)).await?.succeeded())
    }

    /// Move the leader key to our current lease if it still holds our name on the lease it was
    /// seen on (`from_lease`): a restarted supervisor re-attaching to its leadership. A key
    /// that moved meanwhile is left alone.
    pub(crate) async fn reattach_leader(&self, name: &str, from_lease: i64) -> Result<bool> {
        let lease = self.require_lease().await?;
        let key = self.key(keys::LEADER);
        let txn = Txn::new()
            .when([
                Compare::value(key.clone(), CompareOp::Equal, name),
                Compare::lease(key.clone(), CompareOp::Equal, from_lease),
            ])
            .and_then([TxnOp::put(
                key,
                name,
                Some(PutOptions::new().with_lease(lease)),
            )]);
        let mut c = self.client.clone();
        Ok(self.call("reattach leader", c.txn(txn)).await?.succeeded())
    }

    /// Hand the leader key to `to` on `to`'s lease, if it still holds `from`'s name: a
    /// graceful switchover. `Ok(false)` when the key no longer holds `from`; an error when the
    /// lease is gone (the caller then releases the key instead).
    pub(crate) async fn transfer_leader(
        &self,
        from: &str,
        to: &str,
        to_lease: i64,
    ) -> Result<bool> {
        let key = self.key(keys::LEADER);
        let txn = Txn::new()
            .when([Compare::value(key.clone(), CompareOp::Equal, from)])
            .and_then([TxnOp::put(
                key,
                to,
                Some(PutOptions::new().with_lease(to_lease)),
            )]);
        let mut c = self.client.clone();
        Ok(self.call("transfer leader", c.txn(txn)).await?.succeeded())
    }

    /// Ask for a failover to `member` (from `leader`), as `POST /failover` writes it.
    pub(crate) async fn request_failover(&self, leader: Option<&str>, member: &str) -> Result<()> {
        let f = Failover {
            leader: leader.map(str::to_string),
            member: Some(member.to_string()),
            scheduled_at: None,
        };
        let value = serde_json::to_string(&f).map_err(|source| DcsError::Encode {
            key: "failover",
            source,
        })?;
        self.put_plain("request failover", keys::FAILOVER, value)
            .await
    }

    /// Delete the leader key only if it holds our name on our own lease: a key with our name
    /// on another lease belongs to another process (or to a previous run, and expires with it).
    pub(crate) async fn release_leader(&self, name: &str) -> Result<bool> {
        let lease = self.require_lease().await?;
        let key = self.key(keys::LEADER);
        let txn = Txn::new()
            .when([
                Compare::value(key.clone(), CompareOp::Equal, name),
                Compare::lease(key.clone(), CompareOp::Equal, lease),
            ])
            .and_then([TxnOp::delete(key, None)]);
        let mut c = self.client.clone();
        Ok(self.call("release leader", c.txn(txn)).await?.succeeded())
    }

    /// Write our member key on our lease.
    pub(crate) async fn touch_member(&self, name: &str, data: &MemberData) -> Result<()> {
        let lease = self.require_lease().await?;
        let value = serde_json::to_string(data).map_err(|source| DcsError::Encode {
            key: "members",
            source,
        })?;
        let mut c = self.client.clone();
        self.call(
            "put member",
            c.put(
                self.key(&format!("{}{name}", keys::MEMBERS)),
                value,
                Some(PutOptions::new().with_lease(lease)),
            ),
        )
        .await?;
        Ok(())
    }

    /// Race for the `initialize` key (create-if-absent with an empty value).
    pub(crate) async fn race_initialize(&self) -> Result<bool> {
        let key = self.key(keys::INITIALIZE);
        let txn = Txn::new()
            .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key, "", None)]);
        let mut c = self.client.clone();
        Ok(self.call("race initialize", c.txn(txn)).await?.succeeded())
    }

    pub(crate) async fn write_initialize(&self, sysid: &str) -> Result<()> {
        self.put_plain("put initialize", keys::INITIALIZE, sysid.to_string())
            .await
    }

    /// Delete every key under the cluster prefix (`regent ctl remove`, patronictl's
    /// `delete_cluster`); returns how many keys were deleted.
    pub(crate) async fn delete_cluster(&self) -> Result<i64> {
        let mut c = self.client.clone();
        let resp = self
            .call(
                "delete cluster",
                c.delete(
                    self.prefix.clone(),
                    Some(DeleteOptions::new().with_prefix()),
                ),
            )
            .await?;
        Ok(resp.deleted())
    }

    /// Give up a lost bootstrap race so another node can bootstrap.
    pub(crate) async fn delete_initialize(&self) -> Result<()> {
        let mut c = self.client.clone();
        self.call(
            "delete initialize",
            c.delete(self.key(keys::INITIALIZE), None),
        )
        .await?;
        Ok(())
    }

    /// Write the dynamic configuration; with `cas`, only if its mod_revision still matches.
    pub(crate) async fn write_config(&self, config: &Value, cas: Option<i64>) -> Result<bool> {
        let value = config.to_string();
        let key = self.key(keys::CONFIG);
        let mut c = self.client.clone();
        match cas {
            Some(rev) => {
                let txn = Txn::new()
                    .when([Compare::mod_revision(key.clone(), CompareOp::Equal, rev)])
                    .and_then([TxnOp::put(key, value, None)]);
                Ok(self.call("cas config", c.txn(txn)).await?.succeeded())
            }
            None => {
                self.call("put config", c.put(key, value, None)).await?;
                Ok(true)
            }
        }
    }

    /// Write the config only if no config key exists yet (bootstrap seeding).
    pub(crate) async fn seed_config(&self, config: &Value) -> Result<bool> {
        let key = self.key(keys::CONFIG);
        let txn = Txn::new()
            .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key, config.to_string(), None)]);
        let mut c = self.client.clone();
        Ok(self.call("seed config", c.txn(txn)).await?.succeeded())
    }

    /// Write the `failover` key (a switchover/failover request, or `{}` to cancel one) only if
    /// it is unchanged since it was read: `revision` is the mod_revision read, 0 if the key was
    /// absent. Returns false when another writer got there first.
    pub async fn write_failover_if(&self, failover: &Failover, revision: i64) -> Result<bool> {
        let value = serde_json::to_string(failover).map_err(|source| DcsError::Encode {
            key: "failover",
            source,
        })?;
        let key = self.key(keys::FAILOVER);
        let cmp = if revision == 0 {
            Compare::create_revision(key.clone(), CompareOp::Equal, 0)
        } else {
            Compare::mod_revision(key.clone(), CompareOp::Equal, revision)
        };
        let txn = Txn::new()
            .when([cmp])
            .and_then([TxnOp::put(key, value, None)]);
        let mut c = self.client.clone();
        Ok(self.call("cas failover", c.txn(txn)).await?.succeeded())
    }

    pub(crate) async fn write_status(&self, status: &Status) -> Result<()> {
        let value = serde_json::to_string(status).map_err(|source| DcsError::Encode {
            key: "status",
            source,
        })?;
        self.put_plain("put status", keys::STATUS, value).await
    }

    /// Write the `failsafe` key: `{"<name>": "<api_url>", ...}`, compact as Patroni writes it.
    pub(crate) async fn write_failsafe(
        &self,
        topology: &std::collections::BTreeMap<String, String>,
    ) -> Result<()> {
        let value = serde_json::to_string(topology).map_err(|source| DcsError::Encode {
            key: "failsafe",
            source,
        })?;
        self.put_plain("put failsafe", keys::FAILSAFE, value).await
    }

    /// Write the `sync` key, with compare-and-swap on `cas` (its `mod_revision`; 0: it must
    /// not exist). Returns the key's new revision, or `None` when the comparison failed.
    pub(crate) async fn write_sync(
        &self,
        sync: &SyncState,
        cas: Option<i64>,
    ) -> Result<Option<i64>> {
        let value = serde_json::to_string(sync).map_err(|source| DcsError::Encode {
            key: "sync",
            source,
        })?;
        let key = self.key(keys::SYNC);
        let mut c = self.client.clone();
        match cas {
            Some(rev) => {
                let cmp = if rev == 0 {
                    Compare::create_revision(key.clone(), CompareOp::Equal, 0)
                } else {
                    Compare::mod_revision(key.clone(), CompareOp::Equal, rev)
                };
                let txn = Txn::new()
                    .when([cmp])
                    .and_then([TxnOp::put(key, value, None)]);
                let resp = self.call("cas sync", c.txn(txn)).await?;
                // The transaction's revision is the one its put gave the key.
                Ok(resp
                    .succeeded()
                    .then(|| resp.header().map_or(0, |h| h.revision())))
            }
            None => {
                let resp = self.call("put sync", c.put(key, value, None)).await?;
                Ok(Some(resp.header().map_or(0, |h| h.revision())))
            }
        }
    }

    /// Delete the `sync` key (synchronous mode turned off).
    pub(crate) async fn delete_sync(&self) -> Result<()> {
        let mut c = self.client.clone();
        self.call("delete sync", c.delete(self.key(keys::SYNC), None))
            .await?;
        Ok(())
    }

    pub(crate) async fn write_history(&self, history: &[HistoryLine]) -> Result<()> {
        let value = Value::Array(history.iter().map(HistoryLine::to_json).collect());
        self.put_plain("put history", keys::HISTORY, value.to_string())
            .await
    }

    /// Clear a switchover/failover request (Patroni writes `{}`).
    pub(crate) async fn clear_failover(&self) -> Result<()> {
        let value =
            serde_json::to_string(&Failover::default()).map_err(|source| DcsError::Encode {
                key: "failover",
                source,
            })?;
        self.put_plain("clear failover", keys::FAILOVER, value)
            .await
    }

    /// Request a switchover/failover through the `failover` key (what patronictl writes when the
    /// leader's REST API cannot be reached; the leader's HA loop acts on it).
    pub(crate) async fn write_failover(&self, failover: &Failover) -> Result<()> {
        let value = serde_json::to_string(failover).map_err(|source| DcsError::Encode {
            key: "failover",
            source,
        })?;
        self.put_plain("put failover", keys::FAILOVER, value).await
    }

    async fn put_plain(&self, op: &'static str, rel: &str, value: String) -> Result<()> {
        let mut c = self.client.clone();
        self.call(op, c.put(self.key(rel), value, None)).await?;
        Ok(())
    }

    /// Watch the cluster prefix forever, waking `changed` whenever the leader key is deleted or
    /// changes (or the status/config/failover keys or the pushed policy set change), and when a member joins, leaves or
    /// changes its tags (a synchronous standby about to stop tags itself `nosync`; its
    /// routine updates wake nobody). Re-establishes the watch on errors.
    pub async fn watch_forever(self) {
        let members = self.key(keys::MEMBERS);
        let mut member_tags: std::collections::HashMap<Vec<u8>, serde_json::Value> =
            std::collections::HashMap::new();
        let interesting = [
            self.key(keys::LEADER),
            self.key(keys::CONFIG),
            self.key(keys::FAILOVER),
            self.key(keys::STATUS),
            self.key(super::rollout::POLICY_SET),
        ];
        loop {
            let mut c = self.client.clone();
            let started = c
                .watch(self.prefix.clone(), Some(WatchOptions::new().with_prefix()))
                .await;
            let mut stream = match started {
                Ok(s) => s,
                Err(e) => {
                    tracing::debug!(error = %e, "etcd watch failed to start; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            };
            // Anything may have happened while the watch was down.
            self.changed.notify_one();
            loop {
                match stream.message().await {
                    Ok(Some(resp)) => {
                        let mut wake = false;
                        for ev in resp.events() {
                            let Some(kv) = ev.kv() else { continue };
                            let k = kv.key();
                            let deleted = ev.event_type() == EventType::Delete;
                            if interesting.iter().any(|i| i.as_bytes() == k) {
                                wake |= deleted || !k.ends_with(keys::STATUS.as_bytes());
                            } else if k.starts_with(members.as_bytes()) {
                                wake |= member_changed(&mut member_tags, k, kv.value(), deleted);
                            }
                        }
                        if wake {
                            self.changed.notify_one();
                        }
                        if resp.canceled() {
                            break;
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        tracing::debug!(error = %e, "etcd watch stream broke; re-establishing");
                        break;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Run one etcd request under `timeout`, recording its latency in [`crate::metrics`].
async fn deadline<T, F>(op: &'static str, timeout: Duration, endpoints: &str, fut: F) -> Result<T>
where
    F: Future<Output = std::result::Result<T, etcd_client::Error>>,
{
    deadline_at(op, Instant::now() + timeout, timeout, endpoints, fut).await
}

/// The end of the key range of everything under `prefix`: the prefix with its last byte plus
/// one (etcd's own rule for `--prefix`).
fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// Whether a request failed because no etcd served it (connection refused, closed or not yet
/// up), as opposed to an answer from etcd.
fn not_served(e: &etcd_client::Error) -> bool {
    match e {
        etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_) => true,
        etcd_client::Error::GRpcStatus(s) => {
            matches!(
                s.code(),
                tonic::Code::Unavailable | tonic::Code::Cancelled | tonic::Code::Unknown
            ) && !s.message().contains("etcdserver")
        }
        _ => false,
    }
}

/// Run one etcd request until `until`; a timeout reports `timeout`, the budget `until` was
/// computed from.
async fn deadline_at<T, F>(
    op: &'static str,
    until: Instant,
    timeout: Duration,
    endpoints: &str,
    fut: F,
) -> Result<T>
where
    F: Future<Output = std::result::Result<T, etcd_client::Error>>,
{
    let started = Instant::now();
    let result = tokio::time::timeout_at(until.into(), fut).await;
    crate::metrics::etcd_request(op, started.elapsed(), matches!(result, Ok(Ok(_))));
    match result {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(source)) => Err(DcsError::Etcd {
            op,
            endpoints: endpoints.to_string(),
            source,
        }),
        Err(_) => Err(DcsError::Timeout {
            op,
            timeout,
            endpoints: endpoints.to_string(),
        }),
    }
}

/// A TTL from etcd as whole seconds (etcd sends an `i64`; a live lease's is positive).
fn granted_secs(ttl: i64) -> u64 {
    u64::try_from(ttl).unwrap_or(0)
}

/// Whether a member key event is one the HA loops should see at once: the member left, joined,
/// or changed its tags. `seen` holds each member's last tags.
fn member_changed(
    seen: &mut std::collections::HashMap<Vec<u8>, serde_json::Value>,
    key: &[u8],
    value: &[u8],
    deleted: bool,
) -> bool {
    if deleted {
        seen.remove(key);
        return true;
    }
    let tags = serde_json::from_slice::<serde_json::Value>(value)
        .ok()
        .and_then(|v| v.get("tags").cloned())
        .unwrap_or(serde_json::Value::Null);
    seen.insert(key.to_vec(), tags.clone()) != Some(tags)
}

#[cfg(test)]
mod tests {
    use super::member_changed;

    #[test]
    fn member_events_wake_on_join_leave_and_tag_changes_only() {
        let mut seen = std::collections::HashMap::new();
        let k = b"/service/demo/members/pg2".as_slice();
        let v = |lsn: u64, tags: &str| format!(r#"{{"xlog_location":{lsn},"tags":{tags}}}"#);
        assert!(
            member_changed(&mut seen, k, v(1, "{}").as_bytes(), false),
            "joined"
        );
        assert!(
            !member_changed(&mut seen, k, v(2, "{}").as_bytes(), false),
            "routine update"
        );
        assert!(
            member_changed(&mut seen, k, v(3, r#"{"nosync":true}"#).as_bytes(), false),
            "tags changed"
        );
        assert!(!member_changed(
            &mut seen,
            k,
            v(4, r#"{"nosync":true}"#).as_bytes(),
            false
        ));
        assert!(member_changed(&mut seen, k, b"", true), "left");
        assert!(
            member_changed(&mut seen, k, v(5, r#"{"nosync":true}"#).as_bytes(), false),
            "back"
        );
    }
}
