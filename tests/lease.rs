//! The etcd lease the way the HA loop holds it: `EtcdDcs::refresh_lease` once per loop, against a
//! real etcd on a free loopback port. The timings are the issue's: `ttl: 20`, `loop_wait: 10`,
//! `retry_timeout: 5` (the supervisor's DCS timeout is `retry_timeout`).
//!
//! `RUST_LOG=h2=debug` shows the HTTP/2 connection's frames (a GOAWAY, say) when one fails.

mod support;

use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use regent::dcs::EtcdDcs;
use support::{Etcd, free_port};

const PREFIX: &str = "/service/lease/";
const TTL: u64 = 20;
const LOOP_WAIT: Duration = Duration::from_secs(10);
const RETRY_TIMEOUT: Duration = Duration::from_secs(5);

fn trace() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// The seconds etcd says the lease has left (`etcdctl lease timetolive`), on a connection of its
/// own.
async fn ttl_left(endpoint: &str, lease: i64) -> i64 {
    let mut probe = etcd_client::Client::connect([endpoint], None)
        .await
        .expect("probe client");
    probe
        .lease_time_to_live(lease, None)
        .await
        .expect("lease timetolive")
        .ttl()
}

/// How many `method` RPCs etcd has seen start (`grpc_server_started_total` on its `/metrics`):
/// a stream that broke and was opened again counts twice.
async fn rpcs_started(endpoint: &str, method: &str) -> u64 {
    let text = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("http client")
        .get(format!("http://{endpoint}/metrics"))
        .send()
        .await
        .expect("GET etcd /metrics")
        .text()
        .await
        .expect("etcd /metrics body");
    let prefix = format!("grpc_server_started_total{{grpc_method=\"{method}\",");
    text.lines()
        .find(|l| l.starts_with(&prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no {prefix}...}} line in etcd's /metrics")) as u64
}

/// Renew once, as one HA loop does: the first call must succeed, on the same lease, and leave
/// the lease with (nearly) its full TTL.
async fn renew_once(dcs: &EtcdDcs, endpoint: &str, lease: i64, what: &str) {
    let started = Instant::now();
    let regent::dcs::Renewal {
        lease: id,
        sent,
        granted_ttl: granted,
        ..
    } = dcs
        .refresh_lease(TTL)
        .await
        .unwrap_or_else(|e| panic!("{what}: the renewal failed: {e}"));
    assert_eq!(
        id, lease,
        "{what}: the lease was replaced instead of renewed"
    );
    assert_eq!(granted, TTL, "{what}: the TTL etcd granted");
    assert!(sent >= started, "{what}: the send time precedes the call");
    assert!(
        started.elapsed() <= RETRY_TIMEOUT + Duration::from_millis(500),
        "{what}: the renewal took {:?}, more than retry_timeout",
        started.elapsed()
    );
    let left = ttl_left(endpoint, lease).await;
    assert!(
        left >= TTL as i64 - 2,
        "{what}: etcd reports {left} s left on the lease, not the full {TTL} s: it was not renewed"
    );
}

/// A leader renews its lease once per `loop_wait`; between two renewals nothing else uses the
/// connection (no cluster change, so the watch is silent). Every renewal must succeed at the
/// first call: one that fails leaves the lease running down and the fencing guard stops the
/// primary.
#[tokio::test]
async fn lease_renewal_survives_loop_wait_of_idle_connection() {
    trace();
    let dir = tempfile::tempdir().expect("tempdir");
    let etcd = Etcd::start(dir.path());
    let endpoint = etcd.endpoint();
    let dcs = EtcdDcs::connect(std::slice::from_ref(&endpoint), PREFIX, RETRY_TIMEOUT)
        .await
        .expect("connect to etcd");
    // The supervisor keeps a watch open on the same connection.
    let watch = tokio::spawn(dcs.clone().watch_forever());

    let regent::dcs::Renewal {
        lease,
        granted_ttl: granted,
        ..
    } = dcs.refresh_lease(TTL).await.expect("grant the lease");
    assert_eq!(granted, TTL, "the TTL etcd granted");
    renew_once(
        &dcs,
        &endpoint,
        lease,
        "the first renewal (opens the stream)",
    )
    .await;
    for round in 1..=2 {
        // The idle period IS what is under test (the HA loop sleeping loop_wait between two
        // renewals, the connection idle meanwhile): this sleep stands in for no event to wait
        // for. 10 s is longer than the ~8 s after which the stream closed.
        tokio::time::sleep(LOOP_WAIT).await;
        renew_once(
            &dcs,
            &endpoint,
            lease,
            &format!("renewal {round} after {LOOP_WAIT:?} idle"),
        )
        .await;
    }
    // Not just renewed: renewed on the stream opened by the first renewal, the connection (and
    // the watch on it) never dropped.
    assert_eq!(
        rpcs_started(&endpoint, "LeaseKeepAlive").await,
        1,
        "the keep-alive stream was opened more than once"
    );
    assert_eq!(
        rpcs_started(&endpoint, "Watch").await,
        1,
        "the watch stream was opened more than once"
    );
    watch.abort();
}

/// An etcd of this test's own, so that it can be killed and started again on the same data
/// directory and ports (the shared harness's `Etcd` cannot restart).
struct RestartableEtcd {
    dir: PathBuf,
    client_port: u16,
    peer_port: u16,
    child: Option<Child>,
}

impl RestartableEtcd {
    fn start(base: &std::path::Path) -> RestartableEtcd {
        let mut e = RestartableEtcd {
            dir: base.join("etcd"),
            client_port: free_port(),
            peer_port: free_port(),
            child: None,
        };
        e.spawn();
        e
    }

    fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.with_extension("log"))
            .expect("etcd log");
        let child = Command::new("etcd")
            .args(regent::lab::spec::etcd_args(
                "e0",
                &self.dir,
                self.client_port,
                self.peer_port,
            ))
            .stdout(log.try_clone().expect("dup"))
            .stderr(log)
            .spawn()
            .expect("start etcd (Debian package etcd-server)");
        self.child = Some(child);
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for RestartableEtcd {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Poll until etcd answers a request (a fresh client each time, so no connection state is
/// shared with the code under test).
async fn wait_etcd_serving(endpoint: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let opts = etcd_client::ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(1))
            .with_timeout(Duration::from_secs(1));
        if let Ok(mut c) = etcd_client::Client::connect([endpoint], Some(opts)).await
            && c.status().await.is_ok()
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "etcd did not serve within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The keep-alive stream dies with its connection (etcd restarted between two loops). The next
/// renewal must open a fresh stream and succeed in the same call, not fail and leave the lease
/// unrenewed until the loop after.
#[tokio::test]
async fn lease_renewal_reopens_a_dead_stream_in_the_same_call() {
    trace();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut etcd = RestartableEtcd::start(dir.path());
    let endpoint = etcd.endpoint();
    wait_etcd_serving(&endpoint, Duration::from_secs(20)).await;
    let dcs = EtcdDcs::connect(std::slice::from_ref(&endpoint), PREFIX, RETRY_TIMEOUT)
        .await
        .expect("connect to etcd");

    let regent::dcs::Renewal {
        lease,
        granted_ttl: granted,
        ..
    } = dcs.refresh_lease(TTL).await.expect("grant the lease");
    assert_eq!(granted, TTL, "the TTL etcd granted");
    renew_once(
        &dcs,
        &endpoint,
        lease,
        "the first renewal (opens the stream)",
    )
    .await;

    etcd.kill();
    etcd.spawn();
    wait_etcd_serving(&endpoint, Duration::from_secs(20)).await;
    // The lease survives a restart (etcd keeps leases on disk).
    renew_once(&dcs, &endpoint, lease, "the renewal after an etcd restart").await;
    renew_once(&dcs, &endpoint, lease, "the next renewal").await;
}

/// The lease a key is attached to, read on a connection of its own (0: no lease or no key).
async fn key_lease(endpoint: &str, key: &str) -> i64 {
    let mut probe = etcd_client::Client::connect([endpoint], None)
        .await
        .expect("probe client");
    let resp = probe.get(key, None).await.expect("get");
    resp.kvs().first().map_or(0, |kv| kv.lease())
}

/// A node started together with etcd (one compose file, one boot) connects as soon as etcd
/// serves, within its retry_timeout, instead of failing on the first refused or dropped
/// connection.
#[tokio::test]
async fn connect_waits_within_retry_timeout_for_etcd_to_serve() {
    trace();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut etcd = RestartableEtcd {
        dir: dir.path().join("etcd"),
        client_port: free_port(),
        peer_port: free_port(),
        child: None,
    };
    let endpoint = etcd.endpoint();
    let connecting = tokio::spawn(async move {
        EtcdDcs::connect(&[endpoint], PREFIX, Duration::from_secs(15)).await
    });
    // Nothing listens yet: the connection is refused until etcd is up.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !connecting.is_finished(),
        "connect gave up while etcd was down"
    );
    etcd.spawn();
    let dcs = connecting
        .await
        .expect("join")
        .expect("connect once etcd serves");
    dcs.refresh_lease(TTL).await.expect("grant a lease");
}

/// A changed ttl replaces the lease: the leader key moves onto a lease granted for the new ttl
/// in one transaction, and only when it holds our name on our old lease. Keep-alives alone
/// would renew the old lease to its old TTL forever.
#[tokio::test]
async fn a_changed_ttl_moves_the_leader_key_onto_a_new_lease() {
    trace();
    let dir = tempfile::tempdir().expect("tempdir");
    let etcd = Etcd::start(dir.path());
    let endpoint = etcd.endpoint();
    let dcs = EtcdDcs::connect(std::slice::from_ref(&endpoint), PREFIX, RETRY_TIMEOUT)
        .await
        .expect("connect to etcd");
    let old = dcs.refresh_lease(TTL).await.expect("grant the lease");
    assert_eq!(old.requested_ttl, TTL);
    assert!(dcs.acquire_leader("me").await.expect("acquire"));
    let leader_key = format!("{PREFIX}leader");
    assert_eq!(key_lease(&endpoint, &leader_key).await, old.lease);

    let new = dcs
        .replace_lease(30, "me")
        .await
        .expect("replace the lease");
    assert_ne!(new.lease, old.lease, "a new lease");
    assert_eq!((new.granted_ttl, new.requested_ttl), (30, 30));
    assert_eq!(
        key_lease(&endpoint, &leader_key).await,
        new.lease,
        "the leader key moved onto the new lease"
    );
    assert!(
        ttl_left(&endpoint, new.lease).await > 20,
        "the new lease has the new ttl"
    );
    let renewed = dcs.refresh_lease(30).await.expect("renew");
    assert_eq!((renewed.lease, renewed.requested_ttl), (new.lease, 30));

    // Someone else's leader key is never moved.
    let mut probe = etcd_client::Client::connect([endpoint.as_str()], None)
        .await
        .expect("probe client");
    probe
        .put(leader_key.clone(), "other", None)
        .await
        .expect("put");
    let third = dcs.replace_lease(40, "me").await.expect("replace again");
    assert_eq!(key_lease(&endpoint, &leader_key).await, 0);
    assert_eq!(third.requested_ttl, 40);
}
