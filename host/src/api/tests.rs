//! Router-level tests: the view-based endpoints over real HTTP. The DCS-backed endpoints are
//! tested against a real etcd in `tests/api.rs`.

use super::units::parse_lag_bytes;
use super::*;
use crate::control::{Command, Reply, RestartRequest};
use serde_json::json;

fn testdata(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata/tls")
        .join(name)
}

const MB: u64 = 1024 * 1024;

fn leader_view() -> LocalSnapshot {
    LocalSnapshot {
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
        ..LocalSnapshot::default()
    }
}

/// A streaming replica whose replay position is `behind` bytes behind the leader.
fn replica_view(behind: u64) -> LocalSnapshot {
    let leader_optime = 0x9000_0000;
    LocalSnapshot {
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
        ..LocalSnapshot::default()
    }
}

fn tags(value: Value) -> Map<String, Value> {
    value.as_object().cloned().unwrap_or_default()
}

struct TestServer {
    base: String,
    tx: watch::Sender<LocalSnapshot>,
    client: PeerClient,
    /// The commands the (fake) HA loop received.
    commands: Arc<std::sync::Mutex<Vec<Command>>>,
    /// What a configuration reload would change in this server.
    reloader: Reloader,
    _shutdown: tokio::sync::oneshot::Sender<()>,
}

/// How a test's fake HA loop answers a command.
type Replier = Box<dyn Fn(&Command) -> Reply + Send>;

fn not_implemented(_: &Command) -> Reply {
    Reply::new(503, "not implemented in this test")
}

impl TestServer {
    async fn start(view: LocalSnapshot) -> TestServer {
        Self::start_with(
            view,
            ApiSettings::new("node1", "demo"),
            None,
            Box::new(not_implemented),
        )
        .await
    }

    /// A server with `settings`, HTTPS with `tls`, and a fake HA loop answering with `replier`.
    async fn start_with(
        view: LocalSnapshot,
        settings: ApiSettings,
        tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
        replier: Replier,
    ) -> TestServer {
        let (tx, rx) = watch::channel(view);
        let (control, mut control_rx) = crate::control::channel();
        let commands = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = commands.clone();
        tokio::spawn(async move {
            while let Some((cmd, reply)) = control_rx.recv().await {
                let answer = replier(&cmd);
                seen.lock().expect("commands").push(cmd);
                let _ = reply.send(answer);
            }
        });
        let ctx = ApiContext::new(
            settings,
            rx,
            control,
            None,
            PeerClient::new(&ClientOptions::default()).expect("client"),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let scheme = if tls.is_some() { "https" } else { "http" };
        let tls = tls.map(tls::TlsCell::new);
        let reloader = Reloader::new(ctx.clone(), tls.clone());
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(serve(listener, ctx, tls, async move {
            let _ = stop_rx.await;
        }));
        let client = PeerClient::new(&ClientOptions {
            cacert: Some(TlsFile {
                key: "ctl.cacert",
                path: testdata("ca.crt"),
            }),
            ..ClientOptions::default()
        })
        .expect("client");
        TestServer {
            base: format!("{scheme}://{addr}"),
            tx,
            client,
            commands,
            reloader,
            _shutdown: stop_tx,
        }
    }

    fn commands(&self) -> Vec<Command> {
        self.commands.lock().expect("commands").clone()
    }

    fn set(&self, view: LocalSnapshot) {
        self.tx.send_replace(view);
    }

    async fn request(
        &self,
        method: Method,
        path: &str,
    ) -> (u16, String, reqwest::header::HeaderMap) {
        let resp = self
            .client
            .request(method, &format!("{}{}", self.base, path))
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
    let srv = TestServer::start(LocalSnapshot {
        holds_lock: false,
        ..leader_view()
    })
    .await;
    assert_eq!(srv.get("/primary").await, 503);
    assert_eq!(srv.get("/leader").await, 503);
    assert_eq!(srv.get("/health").await, 200);
    // Paused with the DCS unreachable: PostgreSQL's role decides.
    srv.set(LocalSnapshot {
        holds_lock: false,
        paused: true,
        dcs_reachable: false,
        ..leader_view()
    });
    assert_eq!(srv.get("/primary").await, 200);
}

/// Safety review item 14: `/primary` re-checks the write deadline when it is asked, not only
/// when the HA loop last published: a loop stalled past the deadline must not keep a load
/// balancer sending writes to a primary the guard is about to fence.
#[tokio::test]
async fn primary_checks_the_write_deadline_at_request_time() {
    let now = crate::fence::mono_ms();
    let srv = TestServer::start(LocalSnapshot {
        write_deadline_ms: Some(now + 60_000),
        ..leader_view()
    })
    .await;
    assert_eq!(srv.get("/primary").await, 200);
    srv.set(LocalSnapshot {
        write_deadline_ms: Some(now.saturating_sub(1)),
        ..leader_view()
    });
    assert_eq!(srv.get("/primary").await, 503);
    assert_eq!(srv.get("/leader").await, 503);
    assert_eq!(srv.get("/read-write").await, 503);
}

/// Issue 12 item 8: the health checks in maintenance mode answer as Patroni's do. Paused, the
/// leader's checks still need the leader key held as of the request (Patroni's `is_leader()`
/// expires a `ttl` after the key's last update, paused or not); only without a DCS view does
/// PostgreSQL's role decide. `/liveness` stays 200 however stale the loop.
#[tokio::test]
async fn health_checks_in_maintenance_mode() {
    let now = crate::fence::mono_ms();
    let stale = Instant::now()
        .checked_sub(Duration::from_secs(600))
        .expect("clock far enough from boot");
    let paused_leader = LocalSnapshot {
        paused: true,
        write_deadline_ms: Some(now + 60_000),
        ..leader_view()
    };
    let srv = TestServer::start(paused_leader.clone()).await;
    // (what, view, [(path, code)]), each path asked with GET and OPTIONS.
    type Case = (&'static str, LocalSnapshot, Vec<(&'static str, u16)>);
    let cases: Vec<Case> = vec![
        (
            "paused leader",
            paused_leader.clone(),
            vec![
                ("/primary", 200),
                ("/leader", 200),
                ("/read-write", 200),
                ("/read-only", 200),
                ("/read-only-sync", 200),
                ("/health", 200),
                ("/readiness", 200),
                ("/liveness", 200),
                ("/replica", 503),
                ("/standby-leader", 503),
                ("/sync", 503),
                ("/async", 503),
            ],
        ),
        (
            "paused leader whose loop stalled past its deadline",
            LocalSnapshot {
                write_deadline_ms: Some(now.saturating_sub(1)),
                last_loop: Some(stale),
                ..paused_leader.clone()
            },
            vec![
                ("/primary", 503),
                ("/leader", 503),
                ("/read-write", 503),
                ("/read-only", 503),
                ("/readiness", 503),
                ("/health", 200),
                ("/liveness", 200),
            ],
        ),
        (
            "paused primary without a DCS view",
            LocalSnapshot {
                holds_lock: false,
                dcs_reachable: false,
                ..paused_leader.clone()
            },
            vec![
                ("/primary", 200),
                ("/leader", 200),
                ("/read-only", 200),
                ("/standby-leader", 503),
                ("/replica", 503),
                ("/read-only-sync", 503),
                ("/sync", 503),
                ("/async", 503),
                ("/health", 200),
            ],
        ),
        (
            "primary without a DCS view, not paused",
            LocalSnapshot {
                holds_lock: false,
                dcs_reachable: false,
                ..leader_view()
            },
            vec![("/primary", 503), ("/leader", 503), ("/read-only", 503)],
        ),
        (
            "paused replica",
            LocalSnapshot {
                paused: true,
                ..replica_view(0)
            },
            vec![
                ("/replica", 200),
                ("/read-only", 200),
                ("/async", 200),
                ("/readiness", 200),
                ("/sync", 503),
                ("/primary", 503),
                ("/leader", 503),
            ],
        ),
        (
            "paused replica without a DCS view",
            LocalSnapshot {
                paused: true,
                dcs_reachable: false,
                last_loop: Some(stale),
                ..replica_view(0)
            },
            vec![
                ("/replica", 200),
                ("/read-only", 200),
                ("/async", 503),
                ("/sync", 503),
                ("/primary", 503),
                ("/health", 200),
                ("/liveness", 200),
            ],
        ),
    ];
    for (what, view, expected) in cases {
        srv.set(view);
        for (path, code) in expected {
            assert_eq!(srv.get(path).await, code, "{what}: GET {path}");
            let (status, _, _) = srv.request(Method::OPTIONS, path).await;
            assert_eq!(status, code, "{what}: OPTIONS {path}");
        }
    }
}

/// Issue 12 item 8: a node running with fitted timing says so in `GET /patroni`, under
/// Regent's own `regent` key; Patroni's fields are untouched, and without a fit the key is
/// absent.
#[tokio::test]
async fn the_status_document_shows_fitted_timing() {
    let d =
        crate::config::validate_dynamic(&json!({"ttl": 20, "loop_wait": 2, "retry_timeout": 10}))
            .expect("Patroni takes it, so does Regent");
    let fit = d.timing_adjusted.expect("fitted");
    let srv = TestServer::start(LocalSnapshot {
        ttl: d.ttl,
        loop_wait: d.loop_wait,
        timing_adjusted: Some(fit),
        ..leader_view()
    })
    .await;
    let (status, doc) = srv.get_json("/patroni").await;
    assert_eq!(status, 200);
    assert_eq!(
        doc["regent"]["timing"],
        json!({
            "configured": {"ttl": 20, "loop_wait": 2, "retry_timeout": 10},
            "effective": {"ttl": 20, "loop_wait": 1, "retry_timeout": 9},
            "warning": "the cluster's configuration: loop_wait 2 + 2 × retry_timeout 10 exceeds ttl 20: running with loop_wait 1 and retry_timeout 9 (as Patroni does); set them so that loop_wait + 2 × retry_timeout <= ttl to silence this",
        })
    );
    let plain = status_document(&leader_view());
    for (k, v) in plain.as_object().expect("object") {
        assert_eq!(&doc[k], v, "Patroni's field {k} is unchanged");
    }
    assert!(plain.get("regent").is_none(), "{plain}");
    // A peer still reads the document.
    let peer = parse_peer_status(&doc).expect("peer status");
    assert_eq!(peer.role, "primary");
}

/// A replica whose replication was interrupted (no walreceiver streaming: PostgreSQL reports
/// it in archive recovery) is reported as Patroni reports it: not ready (`/readiness` 503), and
/// 503 from `/replica?replication_state=streaming`, the check a load balancer uses to send
/// reads only to streaming replicas; plain `/replica` and `/health` stay 200 (PostgreSQL runs
/// as a replica).
#[tokio::test]
async fn a_replica_that_does_not_stream_is_not_ready() {
    let srv = TestServer::start(LocalSnapshot {
        replication_state: Some("in archive recovery".into()),
        ..replica_view(0)
    })
    .await;
    assert_eq!(srv.get("/readiness").await, 503);
    assert_eq!(srv.get("/replica?replication_state=streaming").await, 503);
    assert_eq!(srv.get("/replica").await, 200);
    assert_eq!(srv.get("/health").await, 200);
    srv.set(replica_view(0));
    assert_eq!(srv.get("/readiness").await, 200);
    assert_eq!(srv.get("/replica?replication_state=streaming").await, 200);
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
    srv.set(LocalSnapshot {
        state: "starting".into(),
        ..replica_view(0)
    });
    assert_eq!(srv.get("/replica").await, 503);
}

#[tokio::test]
async fn noloadbalance_and_tag_matching() {
    let srv = TestServer::start(LocalSnapshot {
        tags: tags(json!({"noloadbalance": true})),
        ..replica_view(0)
    })
    .await;
    assert_eq!(srv.get("/replica").await, 503);
    assert_eq!(srv.get("/read-only").await, 503);
    assert_eq!(srv.get("/health").await, 200);

    srv.set(LocalSnapshot {
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
    srv.set(LocalSnapshot {
        tags: tags(json!({"zone": "a"})),
        ..leader_view()
    });
    assert_eq!(srv.get("/primary?tag_zone=b").await, 200);
    assert_eq!(srv.get("/read-only?tag_zone=b").await, 503);
}

/// A replica its own policies judge failed answers 503 on `/replica` (and `/read-only`);
/// degraded is still served.
#[tokio::test]
async fn replica_failed_by_its_policy_serves_no_reads() {
    let with = |verdict: &str| LocalSnapshot {
        policy: Some(json!({"summary": "replication-guard@01234567",
                            "health": {"verdict": verdict, "reason": "canary"}})),
        ..replica_view(0)
    };
    let srv = TestServer::start(with("failed")).await;
    assert_eq!(srv.get("/replica").await, 503);
    assert_eq!(srv.get("/read-only").await, 503);
    assert_eq!(srv.get("/health").await, 200, "PostgreSQL itself runs");
    srv.set(with("degraded"));
    assert_eq!(srv.get("/replica").await, 200);
    srv.set(with("healthy"));
    assert_eq!(srv.get("/replica").await, 200);
}

#[tokio::test]
async fn sync_paths() {
    let srv = TestServer::start(LocalSnapshot {
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
    srv.set(LocalSnapshot {
        sync_standby: true,
        dcs_reachable: false,
        ..replica_view(0)
    });
    assert_eq!(srv.get("/sync").await, 503);
}

/// `synchronous_mode: quorum`: a listed replica is a quorum standby (`/quorum`,
/// `/read-only-quorum`, `quorum_standby` in `GET /patroni`), not a synchronous one.
#[tokio::test]
async fn quorum_paths() {
    let quorum = || LocalSnapshot {
        sync_standby: true,
        quorum_commit: true,
        ..replica_view(0)
    };
    let srv = TestServer::start(quorum()).await;
    assert_eq!(srv.get("/quorum").await, 200);
    assert_eq!(srv.get("/read-only-quorum").await, 200);
    assert_eq!(srv.get("/sync").await, 503);
    assert_eq!(srv.get("/read-only-sync").await, 503);
    assert_eq!(srv.get("/async").await, 503);
    let (_, doc) = srv.get_json("/patroni").await;
    assert_eq!(doc["quorum_standby"], true, "{doc}");
    assert!(doc.get("sync_standby").is_none(), "{doc}");
    srv.set(LocalSnapshot {
        sync_standby: false,
        ..quorum()
    });
    assert_eq!(srv.get("/quorum").await, 503);
    assert_eq!(srv.get("/read-only-quorum").await, 503);
    assert_eq!(srv.get("/async").await, 200);
    srv.set(LocalSnapshot {
        quorum_commit: true,
        ..leader_view()
    });
    assert_eq!(srv.get("/read-only-quorum").await, 200);
    assert_eq!(srv.get("/quorum").await, 503);
    // The synchronous standby of `synchronous_mode: on` is no quorum standby.
    srv.set(LocalSnapshot {
        sync_standby: true,
        ..replica_view(0)
    });
    assert_eq!(srv.get("/quorum").await, 503);
}

#[tokio::test]
async fn health_on_stopped_postgres() {
    let srv = TestServer::start(LocalSnapshot {
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
    let srv = TestServer::start(LocalSnapshot {
        last_loop: Some(stale),
        ..replica_view(0)
    })
    .await;
    let (status, body, _) = srv.request(Method::GET, "/liveness").await;
    assert_eq!((status, body.as_str()), (503, ""));
    srv.set(LocalSnapshot {
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
    srv.set(LocalSnapshot {
        last_loop: Some(recent),
        ..replica_view(0)
    });
    assert_eq!(srv.get("/liveness").await, 200);
    srv.set(LocalSnapshot {
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
    srv.set(LocalSnapshot {
        replication_state: Some("in archive recovery".into()),
        ..replica_view(0)
    });
    assert_eq!(srv.get("/readiness").await, 503);
    srv.set(LocalSnapshot {
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

    srv.set(LocalSnapshot {
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

    srv.set(LocalSnapshot {
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
    let doc = status_document(&LocalSnapshot {
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
    let doc = status_document(&LocalSnapshot {
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
    let doc = status_document(&LocalSnapshot {
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
    assert!(peer.healthy, "a Patroni peer publishes no verdict: healthy");

    // A Regent peer whose policies judge it failed.
    let mut failed = replica.clone();
    failed["policy"] = json!({"summary": "replication-guard@0123abcd",
                              "health": {"verdict": "failed", "reason": "canary"}});
    assert!(!parse_peer_status(&failed).expect("failed replica").healthy);
    failed["policy"]["health"]["verdict"] = json!("degraded");
    assert!(
        parse_peer_status(&failed)
            .expect("degraded replica")
            .healthy
    );

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

// ---------------------------------------------------------------------------------------------
// Mutating endpoints without a DCS: access control, the HA loop's replies, bodies
// ---------------------------------------------------------------------------------------------

impl TestServer {
    /// A request with an optional JSON body and optional Basic credentials.
    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&str>,
        auth: Option<(&str, &str)>,
    ) -> (u16, String, reqwest::header::HeaderMap) {
        let ca = |name: &str| {
            reqwest::Certificate::from_pem(&std::fs::read(testdata(name)).expect("CA file"))
                .expect("CA")
        };
        // Both test CAs: a reload may rotate the certificate (see `a_reload_replaces_...`).
        let client = reqwest::Client::builder()
            .no_proxy()
            .use_rustls_tls()
            .add_root_certificate(ca("ca.crt"))
            .add_root_certificate(ca("rotated-ca.crt"))
            .build()
            .expect("client");
        let mut req = client.request(method, format!("{}{}", self.base, path));
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        if let Some((u, p)) = auth {
            req = req.basic_auth(u, Some(p));
        }
        let resp = req.send().await.expect("request");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        (status, resp.text().await.expect("body"), headers)
    }
}

fn secured(allowlist: &[&str]) -> ApiSettings {
    ApiSettings {
        auth: Some(crate::config::BasicAuth {
            username: "admin".into(),
            password: "s3cret".into(),
        }),
        allowlist: allowlist
            .iter()
            .map(|e| crate::config::AllowEntry::parse(e).expect("entry"))
            .collect(),
        ..ApiSettings::new("node1", "demo")
    }
}

fn reload_scheduled(cmd: &Command) -> Reply {
    match cmd {
        Command::Reload => Reply::new(202, "reload scheduled"),
        Command::Restart(_) => Reply::new(200, "restarted successfully"),
        Command::CancelRestart => Reply::new(404, "no restarts are scheduled"),
        _ => Reply::new(503, "unexpected"),
    }
}

#[tokio::test]
async fn basic_auth_guards_the_mutating_endpoints_only() {
    let srv = TestServer::start_with(
        leader_view(),
        secured(&[]),
        None,
        Box::new(reload_scheduled),
    )
    .await;
    let (status, body, headers) = srv.send(Method::POST, "/reload", None, None).await;
    assert_eq!((status, body.as_str()), (401, "no auth header received"));
    assert_eq!(
        headers
            .get(reqwest::header::WWW_AUTHENTICATE)
            .map(|h| h.as_bytes()),
        Some(&b"Basic realm=\"Patroni\""[..])
    );
    let (status, body, _) = srv
        .send(Method::POST, "/reload", None, Some(("admin", "wrong")))
        .await;
    assert_eq!((status, body.as_str()), (401, "not authenticated"));
    let (status, body, _) = srv
        .send(Method::POST, "/reload", None, Some(("Admin", "s3cret")))
        .await;
    assert_eq!((status, body.as_str()), (401, "not authenticated"));
    assert!(srv.commands().is_empty(), "nothing reached the HA loop");
    let (status, body, _) = srv
        .send(Method::POST, "/reload", None, Some(("admin", "s3cret")))
        .await;
    assert_eq!((status, body.as_str()), (202, "reload scheduled"));
    assert_eq!(srv.commands(), vec![Command::Reload]);
    // Reads stay open, as in Patroni; so does the 501 of an unknown endpoint.
    assert_eq!(srv.get("/patroni").await, 200);
    assert_eq!(srv.get("/metrics").await, 200);
    assert_eq!(srv.send(Method::POST, "/nothing", None, None).await.0, 501);
    // Every mutating endpoint asks for credentials before looking at the body.
    for (method, path) in [
        (Method::PATCH, "/config"),
        (Method::PUT, "/config"),
        (Method::POST, "/restart"),
        (Method::DELETE, "/restart"),
        (Method::POST, "/reinitialize"),
        (Method::POST, "/switchover"),
        (Method::POST, "/failover"),
        (Method::DELETE, "/switchover"),
        (Method::POST, "/failsafe"),
    ] {
        let (status, _, _) = srv
            .send(method.clone(), path, Some("{not json"), None)
            .await;
        assert_eq!(status, 401, "{method} {path}");
    }
}

#[tokio::test]
async fn allowlist_refuses_other_addresses() {
    let srv = TestServer::start_with(
        leader_view(),
        secured(&["10.9.9.9", "192.0.2.0/24"]),
        None,
        Box::new(reload_scheduled),
    )
    .await;
    let (status, body, _) = srv
        .send(Method::POST, "/reload", None, Some(("admin", "s3cret")))
        .await;
    assert_eq!((status, body.as_str()), (403, "Access is denied"));
    assert!(srv.commands().is_empty());
    assert_eq!(srv.get("/patroni").await, 200, "reads are not restricted");

    for allowed in [
        &["127.0.0.0/8"][..],
        &["10.9.9.9", "127.0.0.1"],
        &["localhost"],
    ] {
        let srv = TestServer::start_with(
            leader_view(),
            secured(allowed),
            None,
            Box::new(reload_scheduled),
        )
        .await;
        let (status, _, _) = srv
            .send(Method::POST, "/reload", None, Some(("admin", "s3cret")))
            .await;
        assert_eq!(status, 202, "{allowed:?}");
        // The allowlist comes first: a listed address without credentials gets 401.
        assert_eq!(srv.send(Method::POST, "/reload", None, None).await.0, 401);
    }
}

#[tokio::test]
async fn restart_conditions_reach_the_ha_loop_and_its_reply_comes_back() {
    let srv = TestServer::start_with(
        leader_view(),
        ApiSettings::new("node1", "demo"),
        None,
        Box::new(reload_scheduled),
    )
    .await;
    let (status, body, _) = srv
        .send(
            Method::POST,
            "/restart",
            Some(r#"{"role": "primary", "timeout": "30s", "restart_pending": true, "postgres_version": "17.1"}"#),
            None,
        )
        .await;
    assert_eq!((status, body.as_str()), (200, "restarted successfully"));
    let (status, body, _) = srv.send(Method::DELETE, "/restart", None, None).await;
    assert_eq!((status, body.as_str()), (404, "no restarts are scheduled"));
    let (status, body, _) = srv.send(Method::POST, "/restart", None, None).await;
    assert_eq!(
        (status, body.as_str()),
        (200, "restarted successfully"),
        "no body: restart now"
    );
    assert_eq!(
        srv.commands(),
        vec![
            Command::Restart(RestartRequest {
                role: Some("primary".into()),
                timeout: Some(30),
                restart_pending: true,
                postgres_version: Some("17.1".into()),
                schedule: None,
            }),
            Command::CancelRestart,
            Command::Restart(RestartRequest::default()),
        ]
    );
    // Refused before reaching the loop.
    for (body, status, text) in [
        (r#"{"role": "leader"}"#, 400, "role must be"),
        (
            r#"{"schedule": "2020-01-01T00:00:00+00:00"}"#,
            422,
            "Cannot schedule restart in the past",
        ),
        (
            r#"{"schedule": "2099-01-01T00:00:00"}"#,
            400,
            "Timezone information is mandatory for the scheduled restart",
        ),
        (r#"{"flux": 1}"#, 400, "unknown restart condition \"flux\""),
        (r#"[]"#, 400, "must be a JSON object"),
        (r#"{"timeout": 1e999}"#, 400, "not valid JSON"),
    ] {
        let (s, b, _) = srv.send(Method::POST, "/restart", Some(body), None).await;
        assert_eq!(s, status, "{body}: {b}");
        assert!(b.contains(text), "{body}: {b}");
    }
    assert_eq!(srv.commands().len(), 3);
    // A schedule in the paused state (no DCS here: the view says paused).
    srv.set(LocalSnapshot {
        paused: true,
        ..leader_view()
    });
    let (status, body, _) = srv
        .send(
            Method::POST,
            "/restart",
            Some(r#"{"schedule": "2099-01-01T00:00:00+00:00"}"#),
            None,
        )
        .await;
    assert_eq!(
        (status, body.as_str()),
        (500, "Can't schedule restart in the paused state")
    );
    // Without a DCS, the endpoints that need one say so.
    for (method, path, body) in [
        (Method::PATCH, "/config", r#"{"pause": true}"#),
        (Method::PUT, "/config", r#"{"ttl": 30}"#),
        (Method::POST, "/switchover", r#"{"leader": "node1"}"#),
        (Method::DELETE, "/switchover", ""),
        (Method::POST, "/reinitialize", "{}"),
    ] {
        let (s, b, _) = srv.send(method.clone(), path, Some(body), None).await;
        assert_eq!(
            (s, b.as_str()),
            (503, "this API has no DCS connection"),
            "{method} {path}"
        );
    }
    assert_eq!(srv.get("/cluster").await, 503);
    assert_eq!(srv.get("/failsafe").await, 502);
}

/// The `restapi` section for HTTPS with the test certificate `cert` and key `key`.
fn https_restapi(cert: &str, key: Option<&str>) -> crate::config::RestApi {
    crate::config::RestApi {
        listen: "127.0.0.1:0".into(),
        connect_address: None,
        authentication: None,
        certfile: Some(testdata(cert)),
        keyfile: key.map(testdata),
        keyfile_password: None,
        cafile: None,
        verify_client: None,
        allowlist: Vec::new(),
        allowlist_include_members: false,
        http_extra_headers: Default::default(),
        https_extra_headers: Default::default(),
    }
}

/// A client of `srv` that trusts the test CA and presents `cert` (with its key) if given.
fn client_with_cert(cert: Option<(&str, &str)>) -> reqwest::Client {
    let opts = ClientOptions {
        cacert: Some(TlsFile {
            key: "ctl.cacert",
            path: testdata("ca.crt"),
        }),
        certfile: cert.map(|(c, _)| TlsFile {
            key: "ctl.certfile",
            path: testdata(c),
        }),
        keyfile: cert.map(|(_, k)| TlsFile {
            key: "ctl.keyfile",
            path: testdata(k),
        }),
        ..ClientOptions::default()
    };
    PeerClient::with_tls(reqwest::Client::builder().no_proxy(), &opts)
        .expect("TLS files")
        .build()
        .expect("client")
}

/// A server asking for client certificates as `verify_client` says.
async fn server_verifying_clients(verify_client: &str) -> TestServer {
    let mut restapi = https_restapi("node.crt", Some("node.key"));
    restapi.cafile = Some(testdata("ca.crt"));
    restapi.verify_client = Some(verify_client.into());
    let tls = tls::server_config(&restapi)
        .expect("loads")
        .expect("TLS on");
    let settings = ApiSettings {
        client_cert_required: tls::VerifyClient::of(&restapi) != tls::VerifyClient::None,
        ..ApiSettings::new("node1", "demo")
    };
    TestServer::start_with(
        leader_view(),
        settings,
        Some(tls),
        Box::new(reload_scheduled),
    )
    .await
}

/// `restapi.verify_client: optional` (Patroni's meaning): reads need no certificate; the
/// mutating endpoints answer 403 `client certificate required` without one, and work with a
/// certificate the CA signed.
#[tokio::test]
async fn verify_client_optional_demands_a_certificate_for_changes_only() {
    let srv = server_verifying_clients("optional").await;
    let anonymous = client_with_cert(None);
    let r = anonymous
        .get(format!("{}/patroni", srv.base))
        .send()
        .await
        .expect("a read without a certificate is served");
    assert_eq!(r.status(), 200);
    let r = anonymous
        .post(format!("{}/reload", srv.base))
        .send()
        .await
        .expect("answered");
    assert_eq!(r.status(), 403);
    assert_eq!(r.text().await.expect("body"), "client certificate required");
    assert!(srv.commands.lock().expect("commands").is_empty());
    let r = client_with_cert(Some(("node.crt", "node.key")))
        .post(format!("{}/reload", srv.base))
        .send()
        .await
        .expect("answered");
    assert_eq!(r.status(), 202);
    // A certificate from another CA does not get through the handshake.
    let stranger = client_with_cert(Some(("rotated.crt", "rotated.key")))
        .post(format!("{}/reload", srv.base))
        .send()
        .await;
    assert!(stranger.is_err(), "{stranger:?}");
}

/// `restapi.verify_client: required`: no certificate, no connection, for reads too.
#[tokio::test]
async fn verify_client_required_refuses_the_handshake_without_a_certificate() {
    let srv = server_verifying_clients("required").await;
    let r = client_with_cert(None)
        .get(format!("{}/patroni", srv.base))
        .send()
        .await;
    assert!(r.is_err(), "served without a client certificate: {r:?}");
    let with_cert = client_with_cert(Some(("node-with-key.pem", "node-with-key.pem")));
    let r = with_cert
        .get(format!("{}/patroni", srv.base))
        .send()
        .await
        .expect("served with a certificate");
    assert_eq!(r.status(), 200);
    let r = with_cert
        .post(format!("{}/reload", srv.base))
        .send()
        .await
        .expect("answered");
    assert_eq!(r.status(), 202);
    // Without restapi.cafile there is nothing to check certificates against.
    let mut restapi = https_restapi("node.crt", Some("node.key"));
    restapi.verify_client = Some("required".into());
    let e = tls::server_config(&restapi).expect_err("no cafile");
    assert!(e.to_string().contains("restapi.cafile"), "{e}");
}

#[tokio::test]
async fn https_with_the_configured_certificate() {
    let tls = tls::server_config(&https_restapi("node.crt", Some("node.key")))
        .expect("loads")
        .expect("TLS on");
    let mut settings = secured(&[]);
    settings.extra_headers = vec![("Strict-Transport-Security".into(), "max-age=60".into())];
    let srv = TestServer::start_with(
        leader_view(),
        settings,
        Some(tls),
        Box::new(reload_scheduled),
    )
    .await;
    assert!(srv.base.starts_with("https://127.0.0.1:"));
    // The peer client (CA from ctl.cacert) polls over HTTPS, with credentials.
    let peer = fetch_peer_status(
        &srv.client,
        &format!("{}/patroni", srv.base),
        Duration::from_secs(2),
    )
    .await
    .expect("status over https");
    assert_eq!(peer.role, "primary");
    let (status, _, headers) = srv
        .send(Method::POST, "/reload", None, Some(("admin", "s3cret")))
        .await;
    assert_eq!(status, 202);
    assert_eq!(
        headers
            .get("strict-transport-security")
            .map(|h| h.as_bytes()),
        Some(&b"max-age=60"[..])
    );
    // Without the CA the certificate is refused; `insecure` skips the check.
    let plain = PeerClient::new(&ClientOptions::default()).expect("client");
    let err = fetch_peer_status(
        &plain,
        &format!("{}/patroni", srv.base),
        Duration::from_secs(2),
    )
    .await
    .expect_err("unknown issuer");
    assert!(matches!(err, ApiError::Request { .. }), "{err}");
    let insecure = PeerClient::new(&ClientOptions {
        insecure: true,
        ..ClientOptions::default()
    })
    .expect("client");
    fetch_peer_status(
        &insecure,
        &format!("{}/patroni", srv.base),
        Duration::from_secs(2),
    )
    .await
    .expect("insecure");
    // Plain HTTP to the HTTPS port does not get an answer.
    let http_url = srv.base.replace("https://", "http://");
    assert!(
        fetch_peer_status(
            &plain,
            &format!("{http_url}/patroni"),
            Duration::from_secs(2)
        )
        .await
        .is_err()
    );

    // The key may sit in the certificate file.
    assert!(tls::server_config(&https_restapi("node-with-key.pem", None)).is_ok());
    // Errors name the key and the file.
    let e =
        tls::server_config(&https_restapi("node.crt", Some("other.key"))).expect_err("mismatch");
    assert_eq!(e.key, "restapi.keyfile");
    let e = tls::server_config(&https_restapi("node.crt", None)).expect_err("no key");
    assert!(e.to_string().starts_with("restapi.certfile = "), "{e}");
    assert!(e.to_string().contains("restapi.keyfile"), "{e}");
    let e =
        tls::server_config(&https_restapi("node.key", Some("node.key"))).expect_err("not a cert");
    assert_eq!(e.key, "restapi.certfile");
    let e = tls::server_config(&https_restapi("missing.crt", None)).expect_err("missing");
    assert!(e.to_string().contains("cannot be read"), "{e}");
    let e = PeerClient::new(&ClientOptions {
        cacert: Some(TlsFile {
            key: "ctl.cacert",
            path: testdata("node.key"),
        }),
        ..ClientOptions::default()
    })
    .expect_err("a key is no CA");
    assert!(e.to_string().starts_with("ctl.cacert = "), "{e}");
}

/// Basic auth goes out with every peer request when configured.
#[tokio::test]
async fn peer_client_sends_credentials() {
    let srv = TestServer::start_with(
        leader_view(),
        secured(&[]),
        None,
        Box::new(reload_scheduled),
    )
    .await;
    let with_auth = PeerClient::new(&ClientOptions {
        auth: Some(crate::config::BasicAuth {
            username: "admin".into(),
            password: "s3cret".into(),
        }),
        ..ClientOptions::default()
    })
    .expect("client");
    let resp = with_auth
        .request(reqwest::Method::POST, &format!("{}/reload", srv.base))
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status().as_u16(), 202);
    let resp = srv
        .client
        .request(reqwest::Method::POST, &format!("{}/reload", srv.base))
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status().as_u16(), 401);
}

// ---------------------------------------------------------------------------------------------
// Fuzzing the request parsing: any request gets a sensible status, never a panic
// ---------------------------------------------------------------------------------------------

mod fuzz {
    use super::*;
    use proptest::prelude::*;
    use tower::ServiceExt as _;

    /// The statuses a response may have; a 500 only with its one message.
    const SENSIBLE: &[u16] = &[
        200, 202, 400, 401, 403, 404, 409, 411, 412, 413, 422, 500, 501, 502, 503,
    ];

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>()
                .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
            ".{0,12}".prop_map(Value::from),
            prop_oneof![
                Just("2099-01-01T00:00:00+00:00"),
                Just("2001-01-01T00:00:00Z"),
                Just("2099-01-01 10:00"),
                Just("primary"),
                Just("node1"),
                Just("node2"),
                Just("15.2"),
                Just("2min"),
                Just("true"),
            ]
            .prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 32, 5, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map(
                    prop_oneof![
                        Just("leader".to_string()),
                        Just("candidate".to_string()),
                        Just("member".to_string()),
                        Just("scheduled_at".to_string()),
                        Just("schedule".to_string()),
                        Just("role".to_string()),
                        Just("timeout".to_string()),
                        Just("postgres_version".to_string()),
                        Just("restart_pending".to_string()),
                        Just("force".to_string()),
                        Just("from_leader".to_string()),
                        Just("pause".to_string()),
                        Just("ttl".to_string()),
                        "[a-z_]{1,8}",
                    ],
                    inner,
                    0..5,
                )
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn body() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            Just(Vec::new()),
            prop::collection::vec(any::<u8>(), 0..256),
            json_value().prop_map(|v| v.to_string().into_bytes()),
            (1usize..2000).prop_map(|n| format!("{}{}", "[".repeat(n), "]".repeat(n)).into_bytes()),
            (1usize..400).prop_map(|n| {
                let mut s = String::new();
                for _ in 0..n {
                    s.push_str("{\"a\":");
                }
                s.push('1');
                s.push_str(&"}".repeat(n));
                s.into_bytes()
            }),
            "[0-9]{20,400}"
                .prop_map(|n| format!("{{\"timeout\": {n}, \"ttl\": {n}}}").into_bytes()),
            Just(b"{\"leader\": \"\xff\xfe\"}".to_vec()),
            Just(b"\xef\xbb\xbf{}".to_vec()),
        ]
    }

    fn method() -> impl Strategy<Value = Method> {
        prop_oneof![
            Just(Method::GET),
            Just(Method::HEAD),
            Just(Method::OPTIONS),
            Just(Method::POST),
            Just(Method::PUT),
            Just(Method::PATCH),
            Just(Method::DELETE),
            Just(Method::TRACE),
            Just(Method::CONNECT),
            Just(Method::from_bytes(b"BREW").expect("token")),
        ]
    }

    fn path() -> impl Strategy<Value = String> {
        let segment = prop_oneof![
            Just("".to_string()),
            Just("patroni".to_string()),
            Just("primary".to_string()),
            Just("replica".to_string()),
            Just("read-only".to_string()),
            Just("liveness".to_string()),
            Just("readiness".to_string()),
            Just("cluster".to_string()),
            Just("history".to_string()),
            Just("config".to_string()),
            Just("metrics".to_string()),
            Just("policy".to_string()),
            Just("failsafe".to_string()),
            Just("restart".to_string()),
            Just("reload".to_string()),
            Just("reinitialize".to_string()),
            Just("switchover".to_string()),
            Just("failover".to_string()),
            "[a-zA-Z0-9._~%-]{0,16}",
        ];
        (
            segment,
            "(/[a-z0-9%]{0,8}){0,2}",
            "(\\?[a-zA-Z0-9_=&%+.-]{0,40})?",
        )
            .prop_map(|(a, b, q)| format!("/{a}{b}{q}"))
    }

    /// Where requests go: mostly the real endpoints with their methods, else anything.
    fn target() -> impl Strategy<Value = (Method, String)> {
        let endpoints: Vec<(Method, &'static str)> = vec![
            (Method::PATCH, "/config"),
            (Method::PUT, "/config"),
            (Method::POST, "/reload"),
            (Method::POST, "/restart"),
            (Method::DELETE, "/restart"),
            (Method::POST, "/reinitialize"),
            (Method::POST, "/switchover"),
            (Method::POST, "/failover"),
            (Method::DELETE, "/switchover"),
            (Method::POST, "/failsafe"),
            (Method::GET, "/replica"),
            (Method::GET, "/readiness"),
            (Method::GET, "/metrics"),
        ];
        prop_oneof![
            3 => (prop::sample::select(endpoints), "(\\?[a-z_=&%0-9]{0,30})?")
                .prop_map(|((m, p), q)| (m, format!("{p}{q}"))),
            1 => (method(), path()),
        ]
    }

    /// `Content-Length`: right (most often), absent, or any digits / bytes.
    fn content_length() -> impl Strategy<Value = Option<Option<Vec<u8>>>> {
        prop_oneof![
            4 => Just(None),
            1 => Just(Some(None)),
            1 => "[0-9]{1,25}".prop_map(|v| Some(Some(v.into_bytes()))),
            1 => prop::collection::vec(any::<u8>(), 0..12).prop_map(|v| Some(Some(v))),
        ]
    }

    fn header() -> impl Strategy<Value = Option<(&'static str, Vec<u8>)>> {
        prop_oneof![
            Just(None),
            prop::collection::vec(any::<u8>(), 0..40).prop_map(|v| Some(("authorization", v))),
            Just(Some(("authorization", b"Basic YWRtaW46d3Jvbmc=".to_vec()))),
            Just(Some(("transfer-encoding", b"chunked".to_vec()))),
            prop::collection::vec(any::<u8>(), 0..30).prop_map(|v| Some(("content-type", v))),
        ]
    }

    /// One request through the router (no network), with or without a client address.
    fn run(
        rt: &tokio::runtime::Runtime,
        app: &Router,
        method: Method,
        path: &str,
        headers: &[Option<(&'static str, Vec<u8>)>],
        body: Vec<u8>,
        peer: bool,
    ) -> Option<(u16, Option<String>, String)> {
        let mut b = axum::http::Request::builder().method(method).uri(path);
        for (name, value) in headers.iter().flatten() {
            b = b.header(*name, HeaderValue::from_bytes(value).ok()?);
        }
        let mut req = b.body(Body::from(body)).ok()?;
        if peer {
            req.extensions_mut()
                .insert(ConnectInfo(PeerAddr(SocketAddr::from((
                    [127, 0, 0, 1],
                    40000,
                )))));
        }
        let resp = rt.block_on(app.clone().oneshot(req)).ok()?;
        let status = resp.status().as_u16();
        let ct = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|h| h.to_str().ok())
            .map(str::to_string);
        let bytes = rt
            .block_on(axum::body::to_bytes(resp.into_body(), 8 << 20))
            .expect("response body");
        Some((status, ct, String::from_utf8_lossy(&bytes).into_owned()))
    }

    /// A runtime and four routers (with and without auth and allowlist, paused or not), built
    /// once: building the HTTP client loads the system's root certificates.
    struct Fixture {
        rt: tokio::runtime::Runtime,
        apps: Vec<Router>,
    }

    fn fixture() -> &'static Fixture {
        static FIXTURE: std::sync::OnceLock<Fixture> = std::sync::OnceLock::new();
        FIXTURE.get_or_init(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            let peers = PeerClient::new(&ClientOptions::default()).expect("client");
            let mut apps = Vec::new();
            for (secure, paused) in [(false, false), (false, true), (true, false), (true, true)] {
                let _guard = rt.enter();
                let (tx, rx) = watch::channel(LocalSnapshot {
                    paused,
                    ..leader_view()
                });
                // The router reads the view as long as the fixture lives.
                std::mem::forget(tx);
                let (control, mut control_rx) = crate::control::channel();
                rt.spawn(async move {
                    while let Some((cmd, reply)) = control_rx.recv().await {
                        let _ = reply.send(reload_scheduled(&cmd));
                    }
                });
                let settings = if secure {
                    secured(&["127.0.0.1"])
                } else {
                    ApiSettings::new("node1", "demo")
                };
                apps.push(router(ApiContext::new(
                    settings,
                    rx,
                    control,
                    None,
                    peers.clone(),
                )));
            }
            Fixture { rt, apps }
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

        #[test]
        fn any_request_gets_a_sensible_answer(
            (method, path) in target(),
            extra in prop::collection::vec(header(), 0..3),
            length in content_length(),
            authorized in prop::bool::weighted(0.8),
            body in body(),
            peer in prop::bool::weighted(0.8),
            app in 0usize..4,
        ) {
            let f = fixture();
            let mut headers = Vec::new();
            if authorized {
                headers.push(Some(("authorization", b"Basic YWRtaW46czNjcmV0".to_vec())));
            }
            match length {
                None => headers.push(Some(("content-length", body.len().to_string().into_bytes()))),
                Some(None) => {}
                Some(Some(v)) => headers.push(Some(("content-length", v))),
            }
            headers.extend(extra);
            let Some((status, ct, text)) = run(&f.rt, &f.apps[app], method.clone(), &path, &headers, body, peer) else {
                // Not a request http can represent (invalid URI or header): nothing to test.
                return Ok(());
            };
            prop_assert!(SENSIBLE.contains(&status), "{method} {path}: {status} {text}");
            if status == 500 {
                prop_assert_eq!(text.as_str(), "Can't schedule restart in the paused state");
            }
            if ct.as_deref() == Some("application/json") {
                prop_assert!(serde_json::from_str::<Value>(&text).is_ok(), "{method} {path}: {text}");
            }
            if status >= 400 && method != Method::HEAD && method != Method::OPTIONS && method != Method::GET {
                prop_assert!(!text.is_empty(), "{method} {path}: {status} without a message");
            }
        }
    }
}

/// A node's configuration with the REST API's certificate, key and password.
fn node_config(cert: &str, key: &str, password: &str) -> Config {
    let yaml = format!(
        "scope: demo\nname: node1\nrestapi:\n  listen: 127.0.0.1:8008\n  connect_address: 127.0.0.1:8008\n  certfile: {}\n  keyfile: {}\n  authentication:\n    username: admin\n    password: {password}\netcd3:\n  hosts: 127.0.0.1:2379\npostgresql:\n  listen: 127.0.0.1:5432\n  connect_address: 127.0.0.1:5432\n  data_dir: /var/lib/regent/node1\n  authentication:\n    superuser: {{username: postgres, password: pw}}\n    replication: {{username: replicator, password: pw}}\n",
        testdata(cert).display(),
        testdata(key).display(),
    );
    crate::config::parse(&yaml).expect("config").config
}

#[tokio::test]
async fn a_reload_replaces_the_credentials_the_certificate_and_the_peer_client() {
    let first = node_config("node.crt", "node.key", "s3cret");
    let tls = tls::server_config(&first.restapi)
        .expect("loads")
        .expect("TLS on");
    let srv = TestServer::start_with(
        leader_view(),
        ApiSettings::from_config(&first),
        Some(tls),
        Box::new(reload_scheduled),
    )
    .await;
    let trusting = |ca: &str| {
        PeerClient::new(&ClientOptions {
            cacert: Some(TlsFile {
                key: "ctl.cacert",
                path: testdata(ca),
            }),
            ..ClientOptions::default()
        })
        .expect("client")
    };
    let url = format!("{}/patroni", srv.base);
    let status = |client: PeerClient| {
        let url = url.clone();
        async move { fetch_peer_status(&client, &url, Duration::from_secs(2)).await }
    };
    async fn reload(srv: &TestServer, password: &str) -> u16 {
        srv.send(Method::POST, "/reload", None, Some(("admin", password)))
            .await
            .0
    }
    assert_eq!(reload(&srv, "s3cret").await, 202);
    status(trusting("ca.crt"))
        .await
        .expect("the first certificate");

    // A certificate that does not load is refused, and nothing changes.
    let broken = node_config("rotated.crt", "node.key", "n3w");
    let e = srv
        .reloader
        .prepare(&broken, PeerClient::from_config(&broken).expect("client"))
        .err()
        .expect("key mismatch");
    assert!(e.to_string().contains("restapi.keyfile"), "{e}");
    assert_eq!(reload(&srv, "s3cret").await, 202);

    // A renewed certificate (from another CA) and a new password serve at once.
    // The peer client (ctl.cacert, …) is replaced too: the node's own one, which trusted no
    // private CA, now trusts the CA given with the reload.
    let renewed = node_config("rotated.crt", "rotated.key", "n3w");
    assert!(status(srv.reloader.ctx.peers()).await.is_err());
    srv.reloader
        .prepare(&renewed, trusting("rotated-ca.crt"))
        .expect("loads")
        .apply();
    status(trusting("rotated-ca.crt"))
        .await
        .expect("the renewed certificate");
    status(srv.reloader.ctx.peers())
        .await
        .expect("the reloaded peer client trusts the renewed certificate");
    assert_eq!(reload(&srv, "s3cret").await, 401);
    assert_eq!(reload(&srv, "n3w").await, 202);
    let old_ca = status(trusting("ca.crt")).await;
    assert!(
        matches!(old_ca, Err(ApiError::Request { .. })),
        "the old CA does not vouch for the renewed certificate: {old_ca:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Connection limits (item 10 of the safety review): a client cannot hold the API's descriptors
// ---------------------------------------------------------------------------------------------

/// How many connections the API serves at once.
const CAP: usize = super::server::MAX_CONNECTIONS;

impl TestServer {
    fn addr(&self) -> std::net::SocketAddr {
        let hostport = self.base.split("://").nth(1).expect("scheme");
        hostport.parse().expect("address")
    }

    /// `n` connections that send `first` (nothing when empty) and then stay silent.
    async fn silent_connections(&self, n: usize, first: &[u8]) -> Vec<tokio::net::TcpStream> {
        use tokio::io::AsyncWriteExt as _;
        let mut conns = Vec::with_capacity(n);
        for _ in 0..n {
            let mut s = tokio::net::TcpStream::connect(self.addr())
                .await
                .expect("connect");
            if !first.is_empty() {
                s.write_all(first).await.expect("write");
            }
            conns.push(s);
        }
        conns
    }

    /// `GET /primary` while every slot is taken: no answer within a second (the cap holds it
    /// back), then 200 within `within` (a timeout frees a slot).
    async fn answers_once_a_slot_frees(&self, within: Duration) {
        let url = format!("{}/primary", self.base);
        let probe = self
            .client
            .request(Method::GET, &url)
            .timeout(within + Duration::from_secs(5))
            .send();
        tokio::pin!(probe);
        assert!(
            tokio::time::timeout(Duration::from_secs(1), &mut probe)
                .await
                .is_err(),
            "answered at once while {CAP} connections held every slot: no connection cap"
        );
        let answer = tokio::time::timeout(within, probe)
            .await
            .unwrap_or_else(|_| panic!("no answer {within:?} later: the connections holding the slots were never closed"))
            .expect("request");
        assert_eq!(answer.status().as_u16(), 200);
    }
}

/// Read until the server closes the connection (EOF or a reset); fail if it is still open
/// 15 s later (well past the header timeout), saying what `kept` was kept.
async fn assert_closed(s: &mut tokio::net::TcpStream, kept: &str) {
    use tokio::io::AsyncReadExt as _;
    let mut buf = [0u8; 4096];
    let closed = tokio::time::timeout(Duration::from_secs(15), async {
        while matches!(s.read(&mut buf).await, Ok(n) if n > 0) {}
    })
    .await;
    assert!(closed.is_ok(), "the server kept {kept} open for 15 s");
}

/// A request line and a header, but never the blank line that ends the headers: the server
/// closes the connection after its header timeout instead of holding it forever.
#[tokio::test]
async fn a_connection_that_never_finishes_its_headers_is_closed() {
    let srv = TestServer::start(leader_view()).await;
    let mut conns = srv
        .silent_connections(1, b"GET /primary HTTP/1.1\r\nHost: node1\r\n")
        .await;
    assert_closed(&mut conns[0], "a connection without complete headers").await;
}

/// A kept-alive connection that sends nothing after its answer is closed as idle.
#[tokio::test]
async fn an_idle_kept_alive_connection_is_closed() {
    use tokio::io::AsyncReadExt as _;
    let srv = TestServer::start(leader_view()).await;
    let mut conns = srv
        .silent_connections(1, b"GET /liveness HTTP/1.1\r\nHost: node1\r\n\r\n")
        .await;
    let s = &mut conns[0];
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = s.read(&mut buf).await.expect("read the answer");
        assert!(n > 0, "closed before answering");
        answer.extend_from_slice(&buf[..n]);
    }
    assert!(answer.starts_with(b"HTTP/1.1 200"), "{answer:?}");
    assert_closed(s, "an idle kept-alive connection").await;
}

/// With every slot taken by connections that never finish their headers, a new client waits
/// (in the kernel's accept queue, costing the server no descriptor) until the header timeout
/// frees a slot, then gets its answer.
#[tokio::test]
async fn connections_over_the_cap_wait_for_a_free_slot() {
    let srv = TestServer::start(leader_view()).await;
    let _idle = srv
        .silent_connections(CAP, b"GET /primary HTTP/1.1\r\nHost: node1\r\n")
        .await;
    srv.answers_once_a_slot_frees(Duration::from_secs(15)).await;
}

/// Over HTTPS, a client that never starts its TLS handshake holds a slot too, until the
/// handshake timeout; the cap counts connections, not completed handshakes.
#[tokio::test]
async fn silent_tls_clients_count_against_the_cap() {
    let tls = tls::server_config(&https_restapi("node.crt", Some("node.key")))
        .expect("loads")
        .expect("TLS on");
    let srv = TestServer::start_with(
        leader_view(),
        ApiSettings::new("node1", "demo"),
        Some(tls),
        Box::new(not_implemented),
    )
    .await;
    let _silent = srv.silent_connections(CAP, b"").await;
    srv.answers_once_a_slot_frees(Duration::from_secs(20)).await;
}

/// A request whose body stops arriving is answered 408 after the body timeout: a client
/// cannot hold a slot by sending its body slowly (the mutating endpoints read it when no
/// authentication is configured).
#[tokio::test]
async fn a_body_that_stops_arriving_is_refused() {
    use tokio::io::AsyncReadExt as _;
    let srv = TestServer::start_with(
        leader_view(),
        ApiSettings::new("node1", "demo"),
        None,
        Box::new(reload_scheduled),
    )
    .await;
    let mut conns = srv
        .silent_connections(
            1,
            b"POST /restart HTTP/1.1\r\nHost: node1\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"sched",
        )
        .await;
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), async {
        let _ = conns[0].read_to_end(&mut answer).await;
    })
    .await;
    assert!(
        read.is_ok(),
        "the server kept waiting for the rest of a body for 20 s"
    );
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(srv.commands().is_empty(), "{:?}", srv.commands());
}

/// Safety review item 14: peer polls never send the REST credentials: reads need none, and a
/// member key's `api_url` may point anywhere. Credentials go only with a request that changes
/// something and, when the cluster's APIs speak HTTPS, only over HTTPS.
#[test]
fn peer_requests_send_credentials_only_when_needed_and_encrypted() {
    for https_only in [false, true] {
        let client = PeerClient::new(&ClientOptions {
            auth: Some(crate::config::BasicAuth {
                username: "admin".into(),
                password: "s3cret".into(),
            }),
            https_only,
            ..ClientOptions::default()
        })
        .expect("client");
        let has_auth = |method: Method, url: &str| {
            client
                .request(method, url)
                .build()
                .expect("request")
                .headers()
                .contains_key(reqwest::header::AUTHORIZATION)
        };
        assert!(!has_auth(Method::GET, "http://10.0.0.9:8008/patroni"));
        assert!(!has_auth(Method::GET, "https://10.0.0.9:8008/patroni"));
        assert_eq!(
            has_auth(Method::POST, "http://10.0.0.9:8008/restart"),
            !https_only
        );
        assert!(has_auth(Method::POST, "https://10.0.0.9:8008/restart"));
    }
}
