//! The REST API's DCS-backed endpoints against a real etcd: `/config` (merge patch, validation,
//! compare-and-swap), `/cluster`, `/history`, switchover and failover (checks, the `failover`
//! key, waiting for the new leader), `DELETE /switchover`, the reinitialize checks and
//! `allowlist_include_members`. The HA loop is played by the test: it answers the control
//! channel and moves the leader key the way a real loop would.

mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use regent::api::{self, ApiContext, ApiSettings, ClientOptions, LocalSnapshot, PeerClient};
use regent::control::{Command, Reply};
use regent::dcs::{EtcdDcs, Failover};
use reqwest::Method;
use serde_json::{Value, json};
use support::Etcd;
use tokio::sync::watch;

const PREFIX: &str = "/service/demo/";

struct Harness {
    _dir: tempfile::TempDir,
    etcd: Etcd,
    dcs: EtcdDcs,
    kv: etcd_client::Client,
    http: reqwest::Client,
}

impl Harness {
    async fn start() -> Harness {
        let dir = tempfile::tempdir().expect("tempdir");
        let etcd = Etcd::start(dir.path());
        let endpoint = etcd.endpoint();
        let dcs = EtcdDcs::connect(
            std::slice::from_ref(&endpoint),
            PREFIX,
            Duration::from_secs(3),
        )
        .await
        .expect("connect to etcd");
        let kv = etcd_client::Client::connect([endpoint], None)
            .await
            .expect("etcd client");
        let http = reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("http client");
        Harness {
            _dir: dir,
            etcd,
            dcs,
            kv,
            http,
        }
    }

    async fn put(&self, key: &str, value: impl Into<String>) {
        let mut kv = self.kv.clone();
        kv.put(format!("{PREFIX}{key}"), value.into(), None)
            .await
            .expect("put");
    }

    async fn delete(&self, key: &str) {
        let mut kv = self.kv.clone();
        kv.delete(format!("{PREFIX}{key}"), None)
            .await
            .expect("delete");
    }

    async fn get(&self, key: &str) -> Option<String> {
        let mut kv = self.kv.clone();
        let resp = kv.get(format!("{PREFIX}{key}"), None).await.expect("get");
        resp.kvs()
            .first()
            .map(|kv| String::from_utf8_lossy(kv.value()).into_owned())
    }

    async fn get_json(&self, key: &str) -> Value {
        let raw = self
            .get(key)
            .await
            .unwrap_or_else(|| panic!("no key {key}"));
        serde_json::from_str(&raw).expect("json value")
    }

    /// Serve an API for member `name`, with the DCS; `settings` tweaks the defaults.
    async fn api(
        &self,
        name: &str,
        view: LocalSnapshot,
        tweak: impl FnOnce(&mut ApiSettings),
    ) -> Api {
        let mut settings = ApiSettings::new(name, "demo");
        settings.switchover_timeout = Some(Duration::from_secs(3));
        tweak(&mut settings);
        serve(settings, view, Some(self.dcs.clone())).await
    }

    /// POST `body` to `url` while the fake leader's HA loop waits for the request `expect`
    /// and then does `then` (see [`when_requested`]); the answer.
    async fn post_handled(
        &self,
        url: &str,
        body: Value,
        expect: Value,
        then: Then,
    ) -> (u16, String) {
        let waker = tokio::spawn(when_requested(self.kv.clone(), expect, then));
        let answer = self.send(Method::POST, url, Some(body)).await;
        waker.await.expect("fake HA loop");
        answer
    }

    async fn send(&self, method: reqwest::Method, url: &str, body: Option<Value>) -> (u16, String) {
        let mut req = self.http.request(method, url);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status().as_u16();
        (status, resp.text().await.expect("body"))
    }
}

/// A running API and what its fake HA loop saw.
struct Api {
    url: String,
    commands: Arc<Mutex<Vec<Command>>>,
    _view: watch::Sender<LocalSnapshot>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Api {
    fn commands(&self) -> Vec<Command> {
        self.commands.lock().expect("commands").clone()
    }
}

async fn serve(settings: ApiSettings, view: LocalSnapshot, dcs: Option<EtcdDcs>) -> Api {
    let (view_tx, view_rx) = watch::channel(view);
    let (control, mut control_rx) = regent::control::channel();
    let commands = Arc::new(Mutex::new(Vec::new()));
    let seen = commands.clone();
    tokio::spawn(async move {
        while let Some((cmd, reply)) = control_rx.recv().await {
            let answer = match &cmd {
                Command::Reinitialize { .. } => Reply::new(200, "reinitialize started"),
                _ => Reply::new(200, "OK"),
            };
            seen.lock().expect("commands").push(cmd);
            let _ = reply.send(answer);
        }
    });
    let peers = PeerClient::new(&ClientOptions::default()).expect("peer client");
    let ctx = ApiContext::new(settings, view_rx, control, dcs, peers);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(api::serve(listener, ctx, None, async move {
        let _ = stop_rx.await;
    }));
    Api {
        url,
        commands,
        _view: view_tx,
        _stop: stop_tx,
    }
}

fn replica(name: &str, tags: Value) -> LocalSnapshot {
    LocalSnapshot {
        scope: "demo".into(),
        name: name.into(),
        version: "0.1.0".into(),
        state: "running".into(),
        role: "replica".into(),
        server_version: Some(160_004),
        timeline: Some(1),
        received_lsn: Some(0x300_0000),
        replayed_lsn: Some(0x300_0000),
        replication_state: Some("streaming".into()),
        dcs_reachable: true,
        tags: tags.as_object().cloned().unwrap_or_default(),
        ..LocalSnapshot::default()
    }
}

fn member(api_url: &str, role: &str) -> String {
    json!({
        "conn_url": "postgres://127.0.0.1:5432/postgres",
        "api_url": api_url,
        "state": "running",
        "role": role,
        "version": "4.1.4",
        "xlog_location": 50_331_648,
        "timeline": 1
    })
    .to_string()
}

#[tokio::test]
async fn config_patch_put_validation_and_compare_and_swap() {
    let h = Harness::start().await;
    let a = h.api("n1", replica("n1", json!({})), |_| {}).await;
    let url = format!("{}/config", a.url);

    let (status, _) = h.send(Method::GET, &url, None).await;
    assert_eq!(status, 502, "no config key yet");
    let (status, body) = h
        .send(Method::PATCH, &url, Some(json!({"pause": true})))
        .await;
    assert_eq!(status, 503, "{body}");

    let base = json!({"ttl": 30, "loop_wait": 10, "retry_timeout": 10,
                      "postgresql": {"use_slots": true, "parameters": {"max_connections": 100}}});
    let (status, body) = h.send(Method::PUT, &url, Some(base.clone())).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(serde_json::from_str::<Value>(&body).expect("json"), base);
    assert_eq!(h.get_json("config").await, base);
    assert!(
        a.commands().contains(&Command::Wake),
        "the HA loop is woken"
    );

    let (status, body) = h
        .send(
            Method::PATCH,
            &url,
            Some(json!({"pause": true, "postgresql": {"parameters": {"max_connections": 200, "work_mem": "8MB"}}})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let want = json!({"ttl": 30, "loop_wait": 10, "retry_timeout": 10, "pause": true,
                      "postgresql": {"use_slots": true,
                                     "parameters": {"max_connections": 200, "work_mem": "8MB"}}});
    assert_eq!(serde_json::from_str::<Value>(&body).expect("json"), want);
    assert_eq!(h.get_json("config").await, want);
    let (status, body) = h.send(Method::GET, &url, None).await;
    assert_eq!(
        (status, serde_json::from_str::<Value>(&body).expect("json")),
        (200, want)
    );

    // Resume: null deletes.
    let (status, _) = h
        .send(
            Method::PATCH,
            &url,
            Some(json!({"pause": null, "postgresql": {"parameters": {"work_mem": null}}})),
        )
        .await;
    assert_eq!(status, 200);
    let mut resumed = base.clone();
    resumed["postgresql"]["parameters"]["max_connections"] = json!(200);
    assert_eq!(h.get_json("config").await, resumed);

    // Refused: a config Regent could not run with, and bodies that are not objects.
    for (method, body, text) in [
        (Method::PATCH, json!({"ttl": 3}), "ttl = 3"),
        (Method::PATCH, json!({"retry_timeout": 0}), "retry_timeout"),
        (
            Method::PATCH,
            json!({"postgresql": {"use_slots": "sometimes"}}),
            "postgresql.use_slots",
        ),
        (Method::PUT, json!({"ttl": "thirty"}), "ttl"),
        (Method::PATCH, json!([1, 2]), "must be a JSON object"),
        (Method::PATCH, json!({}), "empty JSON object"),
    ] {
        let (status, msg) = h.send(method.clone(), &url, Some(body.clone())).await;
        assert_eq!(status, 400, "{method} {body}: {msg}");
        assert!(msg.contains(text), "{method} {body}: {msg}");
    }
    assert_eq!(h.get_json("config").await, resumed, "nothing was written");

    // A patch computed on a stale read is refused (409), and nothing is lost.
    let stale = h.dcs.read_cluster().await.expect("read");
    h.put(
        "config",
        json!({"ttl": 30, "loop_wait": 5, "retry_timeout": 10}).to_string(),
    )
    .await;
    let err = api::patch_config(&h.dcs, &stale, &json!({"pause": true}))
        .await
        .expect_err("stale revision");
    assert!(matches!(err, api::ConfigWriteError::Conflict), "{err}");
    assert_eq!(h.get_json("config").await["loop_wait"], 5);

    // Concurrent patches: each is either applied (200) or refused (409); every applied one is
    // in the final configuration, no refused one is.
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..16 {
        let http = h.http.clone();
        let url = url.clone();
        tasks.spawn(async move {
            let r = http
                .patch(&url)
                .json(&json!({ format!("k{i}"): i }))
                .send()
                .await
                .expect("patch");
            (i, r.status().as_u16())
        });
    }
    let mut applied = Vec::new();
    while let Some(done) = tasks.join_next().await {
        let (i, status) = done.expect("task");
        assert!(matches!(status, 200 | 409), "k{i}: {status}");
        if status == 200 {
            applied.push(i);
        }
    }
    assert!(!applied.is_empty());
    let config = h.get_json("config").await;
    for i in 0..16 {
        assert_eq!(
            config.get(format!("k{i}")).is_some(),
            applied.contains(&i),
            "k{i} in {config}"
        );
    }

    // Timing Patroni takes (loop_wait + 2 × retry_timeout > ttl) is taken and stored as given;
    // the nodes run with fitted values.
    let patroni = json!({"ttl": 20, "loop_wait": 2, "retry_timeout": 10});
    let (status, body) = h.send(Method::PATCH, &url, Some(patroni.clone())).await;
    assert_eq!(status, 200, "{body}");
    for key in ["ttl", "loop_wait", "retry_timeout"] {
        assert_eq!(h.get_json("config").await[key], patroni[key], "{key}");
    }
    let patroni = json!({"ttl": 20, "loop_wait": 10, "retry_timeout": 10});
    h.put("config", patroni.to_string()).await;
    let (status, body) = h
        .send(Method::PATCH, &url, Some(json!({"pause": true})))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(h.get_json("config").await["pause"], true);

    // Pausing a paused cluster: 200 with the configuration, as Patroni answers; nothing is
    // written (the key's revision stays).
    let revision = |c: regent::dcs::Cluster| c.config.map(|(_, r)| r);
    let before = revision(h.dcs.read_cluster().await.expect("read"));
    let (status, body) = h
        .send(Method::PATCH, &url, Some(json!({"pause": true})))
        .await;
    assert_eq!(status, 200, "{body}");
    let mut paused = patroni.clone();
    paused["pause"] = json!(true);
    assert_eq!(serde_json::from_str::<Value>(&body).expect("json"), paused);
    assert_eq!(revision(h.dcs.read_cluster().await.expect("read")), before);

    // Random patches never leave a configuration behind that the HA loop would refuse.
    h.put("config", base.to_string()).await;
    let fragments = [
        json!({"ttl": 3}),
        json!({"ttl": 40}),
        json!({"loop_wait": 30}),
        json!({"loop_wait": 2}),
        json!({"retry_timeout": null}),
        json!({"retry_timeout": 15}),
        json!({"pause": true}),
        json!({"pause": "maybe"}),
        json!({"pause": null}),
        json!({"postgresql": {"parameters": {"x": 1}}}),
        json!({"postgresql": null}),
        json!({"postgresql": {"use_pg_rewind": 1}}),
        json!({"synchronous_mode": "quorum"}),
        json!({"synchronous_mode": "sometimes"}),
        json!({"maximum_lag_on_failover": -1}),
        json!({"ttl": 1e300}),
    ];
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..60 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        // A union of some fragments, each with a chance of 1 in 8.
        let mut patch = serde_json::Map::new();
        for (bit, f) in fragments.iter().enumerate() {
            if seed >> bit & 1 == 1 && seed >> (bit + 20) & 1 == 1 && seed >> (bit + 40) & 1 == 1 {
                for (k, v) in f.as_object().into_iter().flatten() {
                    patch.insert(k.clone(), v.clone());
                }
            }
        }
        let patch = Value::Object(patch);
        if patch.as_object().is_some_and(|p| p.is_empty()) {
            continue;
        }
        let before = h.get_json("config").await;
        let (status, msg) = h.send(Method::PATCH, &url, Some(patch.clone())).await;
        let after = h.get_json("config").await;
        match status {
            200 => regent::config::validate_dynamic(&after)
                .map(|_| ())
                .unwrap_or_else(|e| panic!("{patch} left an invalid config {after}: {e}")),
            400 => assert_eq!(before, after, "{patch}: refused but written ({msg})"),
            other => panic!("{patch}: {other} {msg}"),
        }
    }
}

#[tokio::test]
async fn cluster_and_history_from_the_member_keys() {
    let h = Harness::start().await;
    let a = h.api("n1", replica("n1", json!({})), |_| {}).await;
    h.put("config", r#"{"ttl":30,"synchronous_mode":true}"#)
        .await;
    h.put("leader", "n1").await;
    h.put("sync", r#"{"leader":"n1","sync_standby":"n2"}"#)
        .await;
    h.put("status", r#"{"optime":50331848}"#).await;
    h.put(
        "members/n1",
        member("http://127.0.0.1:8008/patroni", "primary"),
    )
    .await;
    h.put(
        "members/n2",
        json!({"conn_url": "postgres://127.0.0.2:5433/postgres",
               "api_url": "http://127.0.0.2:8008/patroni", "state": "running", "role": "replica",
               "xlog_location": 50_331_648, "receive_lsn": 50_331_648, "replay_lsn": 50_331_600,
               "replication_state": "streaming", "timeline": 1, "tags": {"zone": "b"}})
        .to_string(),
    )
    .await;
    h.put(
        "history",
        r#"[[1,25165984,"no recovery target specified","2026-01-01T00:00:00+00:00","n1"]]"#,
    )
    .await;
    let (status, body) = h
        .send(Method::GET, &format!("{}/cluster", a.url), None)
        .await;
    assert_eq!(status, 200, "{body}");
    let doc: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(doc["scope"], "demo");
    let m = doc["members"].as_array().expect("members");
    assert_eq!(m.len(), 2);
    assert_eq!(
        (m[0]["name"].as_str(), m[0]["role"].as_str()),
        (Some("n1"), Some("leader"))
    );
    assert_eq!(m[1]["role"], "sync_standby");
    assert_eq!(m[1]["state"], "streaming");
    assert_eq!(
        (m[1]["host"].as_str(), m[1]["port"].as_u64()),
        (Some("127.0.0.2"), Some(5433))
    );
    assert_eq!(m[1]["lag"], 200);
    assert_eq!(m[1]["replay_lag"], 248);
    assert_eq!(m[1]["replay_lsn"], "0/2FFFFD0");
    assert_eq!(m[1]["tags"]["zone"], "b");

    let (status, body) = h
        .send(Method::GET, &format!("{}/history", a.url), None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_str::<Value>(&body).expect("json"),
        json!([[
            1,
            25_165_984,
            "no recovery target specified",
            "2026-01-01T00:00:00+00:00",
            "n1"
        ]])
    );
    h.delete("history").await;
    let (_, body) = h
        .send(Method::GET, &format!("{}/history", a.url), None)
        .await;
    assert_eq!(body, "[]");
}

/// What the fake leader's HA loop does once the request shows up.
#[derive(Clone, Copy)]
enum Then {
    /// Move the leader key to this member and clear the request, as a new leader does.
    TakeOver(&'static str),
    /// Clear the request and keep the leader key.
    Drop,
}

/// Play the leader's HA loop: wait for a failover key with a leader or a member, check that it
/// is `expect`, then do `then`.
async fn when_requested(mut kv: etcd_client::Client, expect: Value, then: Then) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let resp = kv
            .get(format!("{PREFIX}failover"), None)
            .await
            .expect("get");
        if let Some(v) = resp.kvs().first() {
            let value: Value = serde_json::from_slice(v.value()).unwrap_or(Value::Null);
            if value.get("leader").is_some() || value.get("member").is_some() {
                assert_eq!(value, expect, "the failover key the API wrote");
                break;
            }
        }
        assert!(Instant::now() < deadline, "no failover key written");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    if let Then::TakeOver(new) = then {
        kv.put(format!("{PREFIX}leader"), new, None)
            .await
            .expect("put");
    }
    kv.put(format!("{PREFIX}failover"), "{}", None)
        .await
        .expect("put");
}

#[tokio::test]
async fn switchover_and_failover() {
    let h = Harness::start().await;
    let n2 = serve(
        ApiSettings::new("n2", "demo"),
        replica("n2", json!({})),
        None,
    )
    .await;
    let n3 = serve(
        ApiSettings::new("n3", "demo"),
        replica("n3", json!({"nofailover": true})),
        None,
    )
    .await;
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        format!("http://{}/patroni", l.local_addr().expect("addr"))
    };
    let n1 = h.api("n1", replica("n1", json!({})), |_| {}).await;
    h.put("config", r#"{"ttl":30,"loop_wait":10,"retry_timeout":10}"#)
        .await;
    h.put("leader", "n1").await;
    h.put(
        "members/n1",
        member(&format!("{}/patroni", n1.url), "primary"),
    )
    .await;
    h.put(
        "members/n2",
        member(&format!("{}/patroni", n2.url), "replica"),
    )
    .await;
    h.put(
        "members/n3",
        member(&format!("{}/patroni", n3.url), "replica"),
    )
    .await;
    h.put("members/n4", member(&closed, "replica")).await;
    let switchover = format!("{}/switchover", n1.url);
    let failover = format!("{}/failover", n1.url);

    for (url, body, status, text) in [
        (
            &switchover,
            json!({"candidate": "n2"}),
            400,
            "Switchover could be performed only from a specific leader",
        ),
        (
            &switchover,
            json!({"leader": "n1", "candidate": "n1"}),
            400,
            "Switchover target and source are the same",
        ),
        // Keys a request does not have are ignored, as Patroni ignores them: the answer is
        // on the keys it knows.
        (
            &failover,
            json!({"foo": "bar"}),
            400,
            "Failover could be performed only to a specific candidate",
        ),
        (
            &failover,
            json!({}),
            400,
            "Failover could be performed only to a specific candidate",
        ),
        (
            &switchover,
            json!({"candidate": "n2", "to": "n3"}),
            400,
            "Switchover could be performed only from a specific leader",
        ),
        (
            &switchover,
            json!({"leader": "nx", "candidate": "n2", "to": "n3"}),
            412,
            "leader name does not match",
        ),
        (
            &switchover,
            json!({"leader": 1}),
            400,
            "leader must be a string",
        ),
        (
            &failover,
            json!({"leader": "n1"}),
            400,
            "Failover could be performed only to a specific candidate",
        ),
        (
            &failover,
            json!({"candidate": "n2", "scheduled_at": "2099-01-01T00:00:00Z"}),
            400,
            "Failover can't be scheduled",
        ),
        (
            &switchover,
            json!({"leader": "n1", "scheduled_at": "2001-01-01T00:00:00Z"}),
            422,
            "Cannot schedule switchover in the past",
        ),
        (
            &switchover,
            json!({"leader": "n1", "scheduled_at": "2099-01-01T00:00"}),
            400,
            "Timezone information is mandatory for the scheduled switchover",
        ),
        (
            &switchover,
            json!({"leader": "n1", "scheduled_at": "soon"}),
            422,
            "ISO 8601",
        ),
        (
            &switchover,
            json!({"leader": "nx", "candidate": "n2"}),
            412,
            "leader name does not match",
        ),
        (
            &switchover,
            json!({"leader": "n1", "candidate": "ghost"}),
            412,
            "candidate does not exists",
        ),
        (
            &switchover,
            json!({"leader": "n1", "candidate": "n3"}),
            412,
            "switchover is not possible: no good candidates have been found",
        ),
        (
            &switchover,
            json!({"leader": "n1", "candidate": "n4"}),
            412,
            "switchover is not possible: no good candidates have been found",
        ),
    ] {
        let (s, msg) = h.send(Method::POST, url, Some(body.clone())).await;
        assert_eq!(s, status, "{body}: {msg}");
        assert!(msg.contains(text), "{body}: {msg}");
    }
    assert_eq!(h.get("failover").await, None, "no request was written");

    // Scheduled: 202, stored in UTC, shown by /cluster, cancelled by DELETE.
    let (s, msg) = h
        .send(
            Method::POST,
            &switchover,
            Some(json!({"leader": "n1", "candidate": "n2", "scheduled_at": "2099-01-01T10:00:00+02:00"})),
        )
        .await;
    assert_eq!((s, msg.as_str()), (202, "Switchover scheduled"));
    let scheduled =
        json!({"leader": "n1", "member": "n2", "scheduled_at": "2099-01-01T08:00:00+00:00"});
    assert_eq!(h.get_json("failover").await, scheduled);
    let (_, body) = h
        .send(Method::GET, &format!("{}/cluster", n1.url), None)
        .await;
    let doc: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(
        doc["scheduled_switchover"],
        json!({"at": "2099-01-01T08:00:00+00:00", "from": "n1", "to": "n2"})
    );
    let (s, msg) = h.send(Method::DELETE, &switchover, None).await;
    assert_eq!((s, msg.as_str()), (200, "scheduled switchover deleted"));
    assert_eq!(h.get_json("failover").await, json!({}));
    let (s, msg) = h.send(Method::DELETE, &switchover, None).await;
    assert_eq!((s, msg.as_str()), (404, "no switchover is scheduled"));

    // Immediate: the API waits until the candidate holds the leader key.
    let (s, msg) = h
        .post_handled(
            &switchover,
            json!({"leader": "n1", "candidate": "n2"}),
            json!({"leader": "n1", "member": "n2"}),
            Then::TakeOver("n2"),
        )
        .await;
    assert_eq!(
        (s, msg.as_str()),
        (200, "Successfully switched over to \"n2\"")
    );
    assert!(n1.commands().contains(&Command::Wake));

    // Another member took over instead of the candidate (n1 answers its status as a replica).
    let (s, msg) = h
        .post_handled(
            &switchover,
            json!({"leader": "n2", "candidate": "n1"}),
            json!({"leader": "n2", "member": "n1"}),
            Then::TakeOver("n3"),
        )
        .await;
    assert_eq!(
        (s, msg.as_str()),
        (200, "Switched over to \"n3\" instead of \"n1\"")
    );

    // The leader drops the request and stays: failed.
    let (s, msg) = h
        .post_handled(
            &switchover,
            json!({"leader": "n3", "member": "n2"}),
            json!({"leader": "n3", "member": "n2"}),
            Then::Drop,
        )
        .await;
    assert_eq!((s, msg.as_str()), (503, "Switchover failed"));

    // Nobody acts: the answer says the outcome is unknown (the harness waits 3 s).
    let (s, msg) = h
        .send(Method::POST, &switchover, Some(json!({"leader": "n3"})))
        .await;
    assert_eq!(
        (s, msg.as_str()),
        (
            503,
            "Switchover status unknown after 3 seconds; operation may still be in progress"
        )
    );
    assert_eq!(h.get_json("failover").await, json!({"leader": "n3"}));
    h.put("failover", "{}").await;

    // Failover in a cluster without a leader.
    h.delete("leader").await;
    let (s, msg) = h
        .post_handled(
            &failover,
            json!({"candidate": "n2"}),
            json!({"member": "n2"}),
            Then::TakeOver("n2"),
        )
        .await;
    assert_eq!(
        (s, msg.as_str()),
        (200, "Successfully failed over to \"n2\"")
    );

    // Paused: only to a named candidate, never scheduled.
    h.put(
        "config",
        r#"{"ttl":30,"loop_wait":10,"retry_timeout":10,"pause":true}"#,
    )
    .await;
    let (s, msg) = h
        .post_handled(
            &switchover,
            json!({"leader": "n2", "candidate": "n1", "comment": "ignored"}),
            json!({"leader": "n2", "member": "n1"}),
            Then::TakeOver("n1"),
        )
        .await;
    assert_eq!(
        (s, msg.as_str()),
        (200, "Successfully switched over to \"n1\""),
        "a switchover to a named candidate is allowed while paused"
    );
    h.put("leader", "n2").await;
    // A scheduled restart is refused while paused (the pause read from etcd: n1's own view
    // says not paused); a restart now reaches the HA loop.
    let restart = format!("{}/restart", n1.url);
    let (s, msg) = h
        .send(
            Method::POST,
            &restart,
            Some(json!({"schedule": "2099-01-01T00:00:00+00:00"})),
        )
        .await;
    assert_eq!(
        (s, msg.as_str()),
        (500, "Can't schedule restart in the paused state")
    );
    let (s, msg) = h.send(Method::POST, &restart, Some(json!({}))).await;
    assert_eq!((s, msg.as_str()), (200, "OK"));
    let (s, msg) = h
        .send(Method::POST, &switchover, Some(json!({"leader": "n2"})))
        .await;
    assert_eq!(
        (s, msg.as_str()),
        (
            400,
            "Switchover is possible only to a specific candidate in a paused state"
        )
    );
    let (s, msg) = h
        .send(
            Method::POST,
            &switchover,
            Some(
                json!({"leader": "n2", "candidate": "n1", "scheduled_at": "2099-01-01T00:00:00Z"}),
            ),
        )
        .await;
    assert_eq!(
        (s, msg.as_str()),
        (400, "Can't schedule switchover in the paused state")
    );

    // Synchronous mode: a switchover goes to the sync standby only.
    h.put(
        "config",
        r#"{"ttl":30,"loop_wait":10,"retry_timeout":10,"synchronous_mode":true}"#,
    )
    .await;
    h.put("sync", r#"{"leader":"n2","sync_standby":"n3"}"#)
        .await;
    let (s, msg) = h
        .send(
            Method::POST,
            &switchover,
            Some(json!({"leader": "n2", "candidate": "n1"})),
        )
        .await;
    assert_eq!(
        (s, msg.as_str()),
        (412, "candidate name does not match with sync_standby")
    );
    let (s, msg) = h
        .send(Method::POST, &switchover, Some(json!({"leader": "n2"})))
        .await;
    assert_eq!(
        (s, msg.as_str()),
        (
            412,
            "switchover is not possible: no good candidates have been found"
        ),
        "n3, the sync standby, has nofailover"
    );

    // The compare-and-swap itself: a write on a stale revision is refused.
    let c = h.dcs.read_cluster().await.expect("read");
    let rev = c.failover.as_ref().map(|(_, r)| *r).expect("failover key");
    let ask = Failover {
        leader: Some("n2".into()),
        ..Failover::default()
    };
    assert!(h.dcs.write_failover_if(&ask, rev).await.expect("cas"));
    assert!(!h.dcs.write_failover_if(&ask, rev).await.expect("cas"));
    h.delete("failover").await;
    assert!(!h.dcs.write_failover_if(&ask, rev).await.expect("cas"));
    assert!(h.dcs.write_failover_if(&ask, 0).await.expect("create"));
}

#[tokio::test]
async fn reinitialize_checks_and_member_allowlist() {
    let h = Harness::start().await;
    let n2 = h
        .api("n2", replica("n2", json!({})), |s| {
            s.allowlist_include_members = true;
        })
        .await;
    let url = format!("{}/reinitialize", n2.url);
    // No members yet: nobody is allowed.
    let (s, msg) = h.send(Method::POST, &url, Some(json!({}))).await;
    assert_eq!((s, msg.as_str()), (403, "Access is denied"));
    h.put(
        "members/n1",
        member("http://127.0.0.1:8008/patroni", "primary"),
    )
    .await;

    let (s, msg) = h
        .send(Method::POST, &url, Some(json!({"force": true})))
        .await;
    assert_eq!(
        (s, msg.as_str()),
        (503, "Cluster has no leader, can not reinitialize")
    );
    h.put("leader", "n2").await;
    let (s, msg) = h.send(Method::POST, &url, None).await;
    assert_eq!(
        (s, msg.as_str()),
        (503, "I am the leader, can not reinitialize")
    );
    h.put("leader", "n1").await;
    let (s, msg) = h
        .send(
            Method::POST,
            &url,
            Some(json!({"force": "yes", "from-leader": true})),
        )
        .await;
    assert_eq!((s, msg.as_str()), (200, "reinitialize started"));
    let (s, msg) = h
        .send(Method::POST, &url, Some(json!({"force": "perhaps"})))
        .await;
    assert_eq!(s, 400, "{msg}");
    // A key the request does not have is ignored, as Patroni ignores it.
    let (s, msg) = h
        .send(Method::POST, &url, Some(json!({"wipe": true})))
        .await;
    assert_eq!((s, msg.as_str()), (200, "reinitialize started"));
    assert_eq!(
        n2.commands(),
        vec![
            Command::Reinitialize {
                force: true,
                from_leader: true
            },
            Command::Reinitialize {
                force: false,
                from_leader: false
            }
        ]
    );

    // The member's address moves elsewhere: the allowlist no longer lets this host in.
    h.put(
        "members/n1",
        member("http://192.0.2.1:8008/patroni", "primary"),
    )
    .await;
    let (s, msg) = h.send(Method::POST, &url, Some(json!({}))).await;
    assert_eq!((s, msg.as_str()), (403, "Access is denied"));
    // Reads are never restricted.
    let (s, _) = h
        .send(Method::GET, &format!("{}/cluster", n2.url), None)
        .await;
    assert_eq!(s, 200);
    drop(h.etcd);
}
