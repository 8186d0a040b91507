//! The commands against an in-memory cluster and mock REST servers (one per member) that record
//! every request and answer from a script: request building (method, path, JSON body, Basic
//! auth), the handling of each status code, and the DCS fallbacks. This file holds the fixture
//! and the tests of the first commands; `habits.rs` tests patronictl's further habits (`dsn`,
//! `query`, `flush`, `remove`, watching, `tsv`, cluster names on the command line).

mod habits;

use super::actions::{EditOptions, RestartOptions, Session, parse_schedule, parse_seconds};
use super::prompt::Prompt;
use super::rest::Rest;
use super::store::Store;
use super::target::{Credentials, PgLogin};
use super::{CtlError, Format, RoleFilter};
use crate::dcs::{Cluster, Failover, Leader, Member, MemberData, SyncState};
use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    body: Option<Value>,
    auth: Option<String>,
}

/// A member's REST API: answers `"METHOD /path"` from the script (404 otherwise).
#[derive(Clone, Default)]
struct MockApi {
    script: Arc<Mutex<HashMap<String, (u16, String)>>>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl MockApi {
    async fn start() -> (MockApi, u16) {
        let api = MockApi::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let a = api.clone();
        let app = axum::Router::new().fallback(
            move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
                let a = a.clone();
                async move {
                    a.seen.lock().expect("lock").push(Seen {
                        method: method.to_string(),
                        path: uri.path().to_string(),
                        body: serde_json::from_slice(&body).ok(),
                        auth: headers
                            .get("authorization")
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_string),
                    });
                    let key = format!("{method} {}", uri.path());
                    let (status, text) = a
                        .script
                        .lock()
                        .expect("lock")
                        .get(&key)
                        .cloned()
                        .unwrap_or((404, "not scripted".into()));
                    (
                        StatusCode::from_u16(status).unwrap_or(StatusCode::IM_A_TEAPOT),
                        [("server", "Regent/0.1.0")],
                        text,
                    )
                }
            },
        );
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        (api, port)
    }

    fn answer(&self, key: &str, status: u16, body: &str) {
        self.script
            .lock()
            .expect("lock")
            .insert(key.into(), (status, body.into()));
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("lock").clone()
    }
}

#[derive(Default)]
struct MemStore {
    cluster: Mutex<Cluster>,
    /// Other clusters of the namespace, by scope.
    others: Mutex<HashMap<String, Cluster>>,
    failover_written: Mutex<Vec<Failover>>,
    /// `remove` was carried out.
    deleted: Mutex<bool>,
    /// Pretend someone else wrote the config between our read and our write.
    concurrent_writer: bool,
    /// The election records, newest first.
    elections: Vec<crate::dcs::ElectionRecord>,
    /// The pushed policy set and its revision, and the stored components.
    policy_set: Mutex<Option<(crate::dcs::PolicySetDoc, i64)>>,
    components: Mutex<HashMap<String, Vec<u8>>>,
}

impl Store for MemStore {
    async fn policy_set(&self) -> Result<Option<(crate::dcs::PolicySetDoc, i64)>, CtlError> {
        Ok(self.policy_set.lock().expect("lock").clone())
    }
    async fn write_policy_set(
        &self,
        doc: &crate::dcs::PolicySetDoc,
        revision: i64,
    ) -> Result<bool, CtlError> {
        let mut set = self.policy_set.lock().expect("lock");
        let current = set.as_ref().map_or(0, |(_, r)| *r);
        if current != revision {
            return Ok(false);
        }
        *set = Some((doc.clone(), current + 1));
        Ok(true)
    }
    async fn put_component(&self, digest: &str, bytes: &[u8]) -> Result<(), CtlError> {
        self.components
            .lock()
            .expect("lock")
            .insert(digest.into(), bytes.to_vec());
        Ok(())
    }
    async fn elections(&self) -> Result<Vec<crate::dcs::ElectionRecord>, CtlError> {
        Ok(self.elections.clone())
    }
    async fn read(&self) -> Result<Cluster, CtlError> {
        Ok(self.cluster.lock().expect("lock").clone())
    }
    async fn read_scope(&self, scope: &str) -> Result<Cluster, CtlError> {
        let others = self.others.lock().expect("lock");
        Ok(others.get(scope).cloned().unwrap_or_default())
    }
    async fn write_failover_if(
        &self,
        failover: &Failover,
        revision: i64,
    ) -> Result<bool, CtlError> {
        let mut c = self.cluster.lock().expect("lock");
        let current = c.failover.as_ref().map(|(_, r)| *r).unwrap_or(0);
        if current != revision {
            return Ok(false);
        }
        c.failover = Some((failover.clone(), current + 1));
        Ok(true)
    }
    async fn delete_cluster(&self) -> Result<i64, CtlError> {
        let mut c = self.cluster.lock().expect("lock");
        let n = i64::try_from(c.members.len()).unwrap_or(0);
        *c = Cluster::default();
        *self.deleted.lock().expect("lock") = true;
        Ok(n)
    }
    async fn write_config(&self, config: &Value, revision: i64) -> Result<bool, CtlError> {
        let mut c = self.cluster.lock().expect("lock");
        let current = c.config.as_ref().map(|(_, r)| *r).unwrap_or(0);
        if self.concurrent_writer || current != revision {
            return Ok(false);
        }
        c.config = Some((config.clone(), current + 1));
        Ok(true)
    }
    async fn write_failover(&self, failover: &Failover) -> Result<(), CtlError> {
        self.failover_written
            .lock()
            .expect("lock")
            .push(failover.clone());
        Ok(())
    }
}

/// Answers in order; records the questions.
#[derive(Default)]
struct Scripted {
    answers: Vec<String>,
    asked: Vec<String>,
}

impl Prompt for Scripted {
    fn confirm(&mut self, question: &str) -> Result<bool, CtlError> {
        self.asked.push(question.into());
        Ok(!self.answers.is_empty() && self.answers.remove(0) == "y")
    }
    fn ask(&mut self, question: &str, default: &str) -> Result<String, CtlError> {
        self.asked.push(question.into());
        if self.answers.is_empty() {
            Ok(default.into())
        } else {
            Ok(self.answers.remove(0))
        }
    }
    fn type_in(&mut self, question: &str) -> Result<String, CtlError> {
        self.asked.push(question.into());
        if self.answers.is_empty() {
            Err(CtlError::Usage(format!("{question} — no answer")))
        } else {
            Ok(self.answers.remove(0))
        }
    }
    fn secret(&mut self, question: &str) -> Result<String, CtlError> {
        self.type_in(question)
    }
}

fn member(name: &str, api_port: u16, role: &str) -> Member {
    Member {
        name: name.into(),
        data: MemberData {
            conn_url: Some(format!("postgres://127.0.0.1:{}/postgres", api_port + 1)),
            api_url: Some(format!("http://127.0.0.1:{api_port}/patroni")),
            state: Some("running".into()),
            role: Some(role.into()),
            version: Some("4.0.0".into()),
            ..MemberData::default()
        },
        lease: 1,
        mod_revision: 1,
    }
}

/// Three members pg1 (leader), pg2, pg3, each with its own mock API.
struct Fixture {
    apis: Vec<MockApi>,
    store: MemStore,
    pg_login: PgLogin,
}

impl Fixture {
    async fn new() -> Fixture {
        let mut apis = Vec::new();
        let mut members = Vec::new();
        for (i, name) in ["pg1", "pg2", "pg3"].iter().enumerate() {
            let (api, port) = MockApi::start().await;
            members.push(member(
                name,
                port,
                if i == 0 { "primary" } else { "replica" },
            ));
            apis.push(api);
        }
        let cluster = Cluster {
            initialize: Some("7412345678901234567".into()),
            config: Some((json!({"ttl": 30, "loop_wait": 10, "retry_timeout": 10}), 7)),
            leader: Some(Leader {
                name: "pg1".into(),
                lease: 1,
                mod_revision: 1,
            }),
            members,
            ..Cluster::default()
        };
        Fixture {
            apis,
            store: MemStore {
                cluster: Mutex::new(cluster),
                ..MemStore::default()
            },
            pg_login: PgLogin::default(),
        }
    }

    fn edit(&self, f: impl FnOnce(&mut Cluster)) {
        f(&mut self.store.cluster.lock().expect("lock"));
    }

    /// Run `f` on a session with `answers` for the prompt; returns (result, stdout, questions).
    async fn run<F>(
        &self,
        format: Format,
        answers: &[&str],
        f: F,
    ) -> (Result<(), CtlError>, String, Vec<String>)
    where
        F: AsyncFnOnce(&mut Session<'_, MemStore>) -> Result<(), CtlError>,
    {
        self.run_as(None, format, answers, f).await
    }

    async fn run_as<F>(
        &self,
        auth: Option<Credentials>,
        format: Format,
        answers: &[&str],
        f: F,
    ) -> (Result<(), CtlError>, String, Vec<String>)
    where
        F: AsyncFnOnce(&mut Session<'_, MemStore>) -> Result<(), CtlError>,
    {
        let rest = Rest::new(auth, &Default::default()).expect("client");
        let mut out = Vec::new();
        let mut prompt = Scripted {
            answers: answers.iter().map(|s| s.to_string()).collect(),
            asked: Vec::new(),
        };
        let result = {
            let mut s = Session {
                store: &self.store,
                rest: &rest,
                scope: "demo",
                format,
                out: &mut out,
                prompt: &mut prompt,
                poll: Duration::from_millis(20),
                pg_login: self.pg_login.clone(),
            };
            f(&mut s).await
        };
        (
            result,
            String::from_utf8_lossy(&out).into_owned(),
            prompt.asked,
        )
    }
}

fn restart_opts(members: &[&str]) -> RestartOptions {
    RestartOptions {
        members: members.iter().map(|s| s.to_string()).collect(),
        role: RoleFilter::Any,
        any: false,
        scheduled: None,
        pg_version: None,
        pending: false,
        timeout: None,
        force: true,
    }
}

#[tokio::test]
async fn switchover_posts_to_the_leader_and_reports_its_answer() {
    let fx = Fixture::new().await;
    fx.apis[0].answer(
        "POST /switchover",
        200,
        "Successfully switched over to \"pg2\"",
    );
    let auth = Credentials {
        username: "admin".into(),
        password: "s3cret".into(),
    };
    let (r, out, asked) = fx
        .run_as(Some(auth), Format::Pretty, &[], async |s| {
            s.switchover(None, Some("pg2".into()), None, true).await
        })
        .await;
    r.expect("switchover succeeds");
    assert!(asked.is_empty(), "--force asks nothing: {asked:?}");
    let seen = fx.apis[0].seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        (seen[0].method.as_str(), seen[0].path.as_str()),
        ("POST", "/switchover")
    );
    assert_eq!(
        seen[0].body,
        Some(json!({"leader": "pg1", "candidate": "pg2"}))
    );
    // base64("admin:s3cret")
    assert_eq!(seen[0].auth.as_deref(), Some("Basic YWRtaW46czNjcmV0"));
    assert!(fx.apis[1].seen().is_empty() && fx.apis[2].seen().is_empty());
    assert!(
        out.starts_with("Current cluster topology\n+ Cluster: demo (7412345678901234567) "),
        "{out}"
    );
    assert!(
        out.contains("Successfully switched over to \"pg2\""),
        "{out}"
    );
}

#[tokio::test]
async fn switchover_scheduled_and_refused() {
    let fx = Fixture::new().await;
    fx.apis[0].answer("POST /switchover", 202, "Switchover scheduled");
    let (r, out, _) = fx
        .run(Format::Json, &[], async |s| {
            s.switchover(
                Some("pg1".into()),
                None,
                Some("2030-01-02T03:04Z".into()),
                true,
            )
            .await
        })
        .await;
    r.expect("scheduled");
    assert_eq!(
        fx.apis[0].seen()[0].body,
        Some(json!({"leader": "pg1", "scheduled_at": "2030-01-02T03:04:00+00:00"}))
    );
    let doc: Value = serde_json::from_str(&out).expect("one JSON document on stdout");
    assert_eq!(doc["status"], 202);
    assert_eq!(doc["message"], "Switchover scheduled");

    fx.apis[0].answer(
        "POST /switchover",
        412,
        "candidate name does not match with sync_standby",
    );
    let (r, _, _) = fx
        .run(Format::Pretty, &[], async |s| {
            s.switchover(None, Some("pg3".into()), None, true).await
        })
        .await;
    let e = r.expect_err("412");
    let text = e.to_string();
    assert!(
        text.contains("answered 412")
            && text.contains("candidate name does not match with sync_standby"),
        "{text}"
    );
    assert_eq!(e.exit_code(), 1);
}

#[tokio::test]
async fn switchover_checks_before_sending_anything() {
    let fx = Fixture::new().await;
    let cases: [(Option<&str>, Option<&str>, &str, u8); 3] = [
        (
            None,
            Some("pg9"),
            "pg9 is not a member of cluster demo; its members are: pg1, pg2, pg3",
            2,
        ),
        (None, Some("pg1"), "pg1 is already the leader", 2),
        (
            Some("pg2"),
            Some("pg3"),
            "pg2 is not the leader of cluster demo; the leader is pg1",
            2,
        ),
    ];
    for (leader, candidate, want, code) in cases {
        let (r, _, _) = fx
            .run(Format::Pretty, &[], async |s| {
                s.switchover(
                    leader.map(Into::into),
                    candidate.map(Into::into),
                    None,
                    true,
                )
                .await
            })
            .await;
        let e = r.expect_err(want);
        assert!(e.to_string().contains(want), "{e}");
        assert_eq!(e.exit_code(), code);
    }
    fx.edit(|c| {
        c.members[2]
            .data
            .tags
            .insert("nofailover".into(), json!(true));
    });
    let (r, _, _) = fx
        .run(Format::Pretty, &[], async |s| {
            s.switchover(None, Some("pg3".into()), None, true).await
        })
        .await;
    assert!(
        r.expect_err("nofailover")
            .to_string()
            .contains("pg3 is tagged nofailover")
    );
    // Paused clusters cannot schedule.
    fx.edit(|c| c.config = Some((json!({"pause": true}), 8)));
    let (r, _, _) = fx
        .run(Format::Pretty, &[], async |s| {
            s.switchover(
                None,
                Some("pg2".into()),
                Some("2030-01-01T00:00+01:00".into()),
                true,
            )
            .await
        })
        .await;
    assert!(r.expect_err("paused").to_string().contains("is paused"));
    assert!(
        fx.apis.iter().all(|a| a.seen().is_empty()),
        "nothing was sent"
    );
}

#[tokio::test]
async fn switchover_without_force_asks_and_a_no_aborts() {
    let fx = Fixture::new().await;
    let (r, _, asked) = fx
        .run(Format::Pretty, &["pg2", "now", "n"], async |s| {
            s.switchover(None, None, None, false).await
        })
        .await;
    let e = r.expect_err("declined");
    assert!(
        e.to_string()
            .contains("aborted: no switchover was requested"),
        "{e}"
    );
    assert_eq!(asked.len(), 3, "{asked:?}");
    assert!(asked[0].starts_with("Candidate (pg2, pg3"), "{asked:?}");
    assert_eq!(
        asked[2],
        "Are you sure you want to switchover cluster demo, demoting current leader pg1?"
    );
    assert!(fx.apis[0].seen().is_empty());
}

#[tokio::test]
async fn unreachable_leader_falls_back_to_the_failover_key() {
    let fx = Fixture::new().await;
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    fx.edit(|c| c.members[0].data.api_url = Some(format!("http://127.0.0.1:{closed}/patroni")));
    let (r, out, _) = fx
        .run(Format::Pretty, &[], async |s| {
            s.switchover(None, Some("pg3".into()), None, true).await
        })
        .await;
    r.expect("fallback succeeds");
    assert!(
        out.contains("Wrote the switchover request into the failover key"),
        "{out}"
    );
    assert_eq!(
        fx.store.failover_written.lock().expect("lock").clone(),
        vec![Failover {
            leader: Some("pg1".into()),
            member: Some("pg3".into()),
            scheduled_at: None
        }]
    );
}

#[tokio::test]
async fn failover_needs_a_candidate_and_goes_to_it_without_a_leader() {
    let fx = Fixture::new().await;
    let (r, _, _) = fx
        .run(Format::Pretty, &[], async |s| s.failover(None, true).await)
        .await;
    let e = r.expect_err("no candidate");
    assert!(
        e.to_string()
            .contains("pass --candidate NAME (one of: pg2, pg3)"),
        "{e}"
    );
    assert_eq!(e.exit_code(), 2);

    fx.edit(|c| c.leader = None);
    fx.apis[2].answer("POST /failover", 200, "Successfully failed over to \"pg3\"");
    let (r, out, _) = fx
        .run(Format::Pretty, &[], async |s| {
            s.failover(Some("pg3".into()), true).await
        })
        .await;
    r.expect("failover");
    let seen = fx.apis[2].seen();
    assert_eq!(
        (seen[0].method.as_str(), seen[0].path.as_str()),
        ("POST", "/failover")
    );
    assert_eq!(seen[0].body, Some(json!({"candidate": "pg3"})));
    assert!(out.contains("Successfully failed over"), "{out}");
}

#[tokio::test]
async fn failover_to_an_asynchronous_node_asks_twice() {
    let fx = Fixture::new().await;
    fx.edit(|c| {
        c.config = Some((json!({"synchronous_mode": true}), 3));
        c.sync = Some((
            SyncState {
                leader: Some("pg1".into()),
                quorum: None,
                sync_standby: Some("pg2".into()),
            },
            3,
        ));
    });
    fx.apis[0].answer("POST /failover", 200, "ok");
    let (r, _, asked) = fx
        .run(Format::Pretty, &["y", "y"], async |s| {
            s.failover(Some("pg3".into()), false).await
        })
        .await;
    r.expect("confirmed twice");
    assert!(asked[0].contains("asynchronous node pg3"), "{asked:?}");
    assert!(
        asked[1].contains("demoting current leader pg1"),
        "{asked:?}"
    );
    assert_eq!(fx.apis[0].seen()[0].body, Some(json!({"candidate": "pg3"})));
}

#[tokio::test]
async fn restart_bodies_and_status_codes() {
    let fx = Fixture::new().await;
    fx.apis[1].answer("POST /restart", 202, "Restart scheduled");
    fx.apis[2].answer("POST /restart", 409, "Another restart is already scheduled");
    let (r, out, _) = fx
        .run(Format::Pretty, &[], async |s| {
            s.restart(RestartOptions {
                role: RoleFilter::Replica,
                scheduled: Some("2030-06-01 12:00:00+02".into()),
                pg_version: Some("15.8".into()),
                pending: true,
                timeout: Some("2min".into()),
                ..restart_opts(&[])
            })
            .await
        })
        .await;
    let e = r.expect_err("pg3 refused");
    assert!(e.to_string().contains("restart failed on pg3"), "{e}");
    assert!(fx.apis[0].seen().is_empty(), "the leader is not a replica");
    let body = fx.apis[1].seen()[0].body.clone();
    assert_eq!(
        body,
        Some(json!({
            "schedule": "2030-06-01T12:00:00+02:00",
            "postgres_version": "15.8",
            "timeout": 120,
            "restart_pending": true
        }))
    );
    assert!(
        out.contains("Success: restart scheduled on member pg2"),
        "{out}"
    );
    assert!(
        out.contains("Failed: another restart is already scheduled on member pg3"),
        "{out}"
    );

    // Immediate restart of a named member; with --force an existing schedule is dropped first.
    fx.edit(|c| {
        c.members[1].data.extra.insert(
            "scheduled_restart".into(),
            json!({"schedule": "2030-06-01T12:00:00+02:00"}),
        );
    });
    fx.apis[1].answer("DELETE /restart", 200, "scheduled restart deleted");
    fx.apis[1].answer("POST /restart", 200, "restarted successfully");
    let (r, out, _) = fx
        .run(Format::Pretty, &[], async |s| {
            s.restart(RestartOptions {
                scheduled: Some("2031-01-01T00:00Z".into()),
                ..restart_opts(&["pg2"])
            })
            .await
        })
        .await;
    r.expect("restarted");
    let seen: Vec<String> = fx.apis[1]
        .seen()
        .iter()
        .map(|s| format!("{} {}", s.method, s.path))
        .collect();
    assert_eq!(seen[1..], ["DELETE /restart", "POST /restart"]);
    assert!(out.contains("Success: restart on member pg2"), "{out}");

    // --pending without a schedule only restarts members flagged pending_restart.
    let (r, out, _) = fx
        .run(Format::Pretty, &[], async |s| {
            s.restart(RestartOptions {
                pending: true,
                ..restart_opts(&[])
            })
            .await
        })
        .await;
    r.expect("nothing to do");
    assert!(out.contains("No member has a pending restart"), "{out}");

    let (r, _, _) = fx
        .run(Format::Pretty, &[], async |s| {
            s.restart(RestartOptions {
                pg_version: Some("15.x".into()),
                ..restart_opts(&[])
            })
            .await
        })
        .await;
    assert_eq!(r.expect_err("bad version").exit_code(), 2);
    let (r, _, _) = fx
        .run(Format::Pretty, &[], async |s| {
            s.restart(restart_opts(&["pg7"])).await
        })
        .await;
    assert!(
        r.expect_err("unknown")
            .to_string()
            .contains("pg7 is not a member of cluster demo")
    );
}

#[tokio::test]
async fn reinit_body_leader_refusal_and_wait() {
    let fx = Fixture::new().await;
    let (r, _, _) = fx
        .run(Format::Pretty, &[], async |s| {
            s.reinit(vec!["pg1".into()], false, false, true).await
        })
        .await;
    assert!(
        r.expect_err("leader")
            .to_string()
            .contains("pg1 is the leader")
    );
    let (r, _, _) = fx
        .run(Format::Pretty, &[], async |s| {
            s.reinit(vec![], false, false, true).await
        })
        .await;
    assert!(
        r.expect_err("none")
            .to_string()
            .contains("name the member(s) to reinitialize: pg2, pg3")
    );

    fx.apis[2].answer("POST /reinitialize", 200, "reinitialize started");
    fx.apis[2].answer(
        "GET /patroni",
        200,
        r#"{"state":"running","role":"replica","postmaster_start_time":"2030-01-01 00:00:01+00:00"}"#,
    );
    let api = fx.apis[2].clone();
    // Let the status document change after the first poll: a new postmaster.
    let flip = tokio::spawn(async move {
        for _ in 0..200 {
            if api.seen().iter().filter(|s| s.path == "/patroni").count() >= 2 {
                api.answer(
                    "GET /patroni",
                    200,
                    r#"{"state":"running","role":"replica","postmaster_start_time":"2030-01-01 00:05:00+00:00"}"#,
                );
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    let (r, out, _) = fx
        .run(Format::Pretty, &[], async |s| {
            s.reinit(vec!["pg3".into()], true, true, true).await
        })
        .await;
    flip.await.expect("flip task");
    r.expect("reinitialized");
    let posts: Vec<Seen> = fx.apis[2]
        .seen()
        .into_iter()
        .filter(|s| s.method == "POST")
        .collect();
    assert_eq!(
        posts[0].body,
        Some(json!({"force": true, "from_leader": true}))
    );
    assert!(
        out.contains("Success: reinitialize for member pg3"),
        "{out}"
    );
    assert!(out.contains("Reinitialize is completed on: pg3"), "{out}");
}

#[tokio::test]
async fn reload_reports_each_member() {
    let fx = Fixture::new().await;
    fx.apis[0].answer("POST /reload", 202, "reload scheduled");
    fx.apis[1].answer("POST /reload", 200, "");
    fx.apis[2].answer("POST /reload", 401, "not authenticated");
    let (r, out, _) = fx
        .run(Format::Pretty, &[], async |s| {
            s.reload(vec![], RoleFilter::Any, true).await
        })
        .await;
    let e = r.expect_err("pg3 refused");
    assert!(
        out.contains(
            "Reload request received for member pg1 and will be processed within 10 seconds"
        ),
        "{out}"
    );
    assert!(out.contains("No changes to apply on member pg2"), "{out}");
    assert!(
        out.contains("Failed: reload for member pg3, status code=401, (not authenticated)"),
        "{out}"
    );
    assert!(e.to_string().contains("reload failed on pg3"), "{e}");
    assert_eq!(fx.apis[0].seen()[0].body, None, "POST /reload has no body");
}

#[tokio::test]
async fn pause_patches_the_leader_first_then_others_and_waits() {
    let fx = Fixture::new().await;
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    fx.edit(|c| c.members[0].data.api_url = Some(format!("http://127.0.0.1:{closed}/patroni")));
    fx.apis[1].answer("PATCH /config", 200, r#"{"pause":true}"#);
    // Every member already reports pause: the wait ends at once.
    fx.edit(|c| {
        for m in &mut c.members {
            m.data.extra.insert("pause".into(), json!(true));
        }
    });
    let (r, out, _) = fx
        .run(Format::Pretty, &[], async |s| {
            s.toggle_pause(true, true).await
        })
        .await;
    r.expect("paused");
    assert_eq!(fx.apis[1].seen()[0].body, Some(json!({"pause": true})));
    assert!(
        fx.apis[2].seen().is_empty(),
        "stops at the first member that answers"
    );
    assert!(
        out.contains("Success: cluster management is paused"),
        "{out}"
    );

    // resume sends null; members that never report it make --wait fail.
    fx.edit(|c| c.config = Some((json!({"pause": true, "loop_wait": 0}), 9)));
    fx.apis[1].answer("PATCH /config", 200, "{}");
    let (r, _, _) = fx
        .run(Format::Pretty, &[], async |s| {
            s.toggle_pause(false, true).await
        })
        .await;
    let e = r.expect_err("members still paused");
    assert!(
        e.to_string().contains("pg1, pg2, pg3 did not report it"),
        "{e}"
    );
    assert_eq!(fx.apis[1].seen()[1].body, Some(json!({"pause": null})));

    // patronictl's answers on a cluster already in the state asked for: exit 1, nothing sent.
    let sent = || fx.apis.iter().map(|a| a.seen().len()).sum::<usize>();
    let before = sent();
    for (config, pause, text) in [
        (json!({"pause": true}), true, "Cluster is already paused"),
        (json!({"loop_wait": 1}), false, "Cluster is not paused"),
    ] {
        fx.edit(|c| c.config = Some((config, 10)));
        let (r, out, _) = fx
            .run(Format::Pretty, &[], async |s| {
                s.toggle_pause(pause, false).await
            })
            .await;
        let e = r.expect_err(text);
        assert_eq!((e.to_string().as_str(), e.exit_code()), (text, 1));
        assert_eq!(out, "");
    }
    assert_eq!(sent(), before, "nothing was sent");
}

#[tokio::test]
async fn edit_config_writes_with_cas() {
    let fx = Fixture::new().await;
    let (r, out, _) = fx
        .run(Format::Pretty, &[], async |s| {
            s.edit_config(EditOptions {
                set: vec!["loop_wait=5".into()],
                pg: vec!["max_connections=101".into()],
                force: true,
                ..EditOptions::default()
            })
            .await
        })
        .await;
    r.expect("changed");
    assert!(out.contains("-loop_wait: 10\n+loop_wait: 5\n"), "{out}");
    assert!(out.ends_with("Configuration changed\n"), "{out}");
    let c = fx.store.cluster.lock().expect("lock").clone();
    let (config, rev) = c.config.expect("config");
    assert_eq!(rev, 8);
    assert_eq!(config["postgresql"]["parameters"]["max_connections"], 101);

    // Asked, and a "no" writes nothing.
    let (r, _, asked) = fx
        .run(Format::Pretty, &["n"], async |s| {
            s.edit_config(EditOptions {
                set: vec!["loop_wait=6".into()],
                ..EditOptions::default()
            })
            .await
        })
        .await;
    assert!(r.expect_err("declined").to_string().contains("not changed"));
    assert_eq!(asked, vec!["Apply these changes?".to_string()]);

    let (r, out, _) = fx
        .run(Format::Pretty, &[], async |s| {
            s.edit_config(EditOptions {
                set: vec!["loop_wait=5".into()],
                force: true,
                ..EditOptions::default()
            })
            .await
        })
        .await;
    r.expect("no change");
    assert_eq!(out, "Not changed\n");

    // Timing that breaks loop_wait + 2 × retry_timeout <= ttl is taken, as Patroni takes it,
    // and stored as given (the nodes run with fitted values and warn).
    let (r, out, _) = fx
        .run(Format::Pretty, &[], async |s| {
            s.edit_config(EditOptions {
                set: vec!["ttl=12".into()],
                force: true,
                ..EditOptions::default()
            })
            .await
        })
        .await;
    r.expect("timing Patroni takes");
    assert!(out.ends_with("Configuration changed\n"), "{out}");
    let (config, rev) = fx
        .store
        .cluster
        .lock()
        .expect("lock")
        .clone()
        .config
        .expect("config");
    assert_eq!(rev, 9);
    assert_eq!(
        (
            &config["ttl"],
            &config["loop_wait"],
            &config["retry_timeout"]
        ),
        (&json!(12), &json!(5), &json!(10)),
        "{config}"
    );

    let racing = Fixture {
        store: MemStore {
            concurrent_writer: true,
            ..MemStore::default()
        },
        apis: Vec::new(),
        pg_login: PgLogin::default(),
    };
    racing.edit(|c| c.config = Some((json!({"ttl": 30}), 1)));
    let (r, _, _) = racing
        .run(Format::Pretty, &[], async |s| {
            s.edit_config(EditOptions {
                set: vec!["loop_wait=2".into()],
                force: true,
                ..EditOptions::default()
            })
            .await
        })
        .await;
    let e = r.expect_err("CAS");
    assert!(
        e.to_string()
            .starts_with("Config modification aborted due to concurrent changes"),
        "{e}"
    );
    assert_eq!(e.exit_code(), 1);
}

#[tokio::test]
async fn version_names_the_product() {
    let fx = Fixture::new().await;
    for api in &fx.apis {
        api.answer(
            "GET /patroni",
            200,
            r#"{"state":"running","server_version":150014,"patroni":{"version":"0.1.0","scope":"demo"}}"#,
        );
    }
    let (r, out, _) = fx
        .run(Format::Pretty, &[], async |s| {
            s.version(vec!["pg2".into()]).await
        })
        .await;
    r.expect("version");
    assert_eq!(
        out,
        format!(
            "regent ctl {}\npg2: Regent 0.1.0, PostgreSQL 15.14\n",
            super::VERSION
        )
    );
}

#[test]
fn schedules_and_timeouts() {
    for (input, want) in [
        ("now", None),
        ("", None),
        ("2030-01-02T03:04Z", Some("2030-01-02T03:04:00+00:00")),
        (
            "2030-01-02 03:04:05.25+0530",
            Some("2030-01-02T03:04:05.25+05:30"),
        ),
        ("2030-01-02T03:04:05-07", Some("2030-01-02T03:04:05-07:00")),
    ] {
        assert_eq!(
            parse_schedule(input).expect(input).as_deref(),
            want,
            "{input}"
        );
    }
    for bad in [
        "tomorrow",
        "2030-01-02T03:04",
        "2030-13-02T03:04Z",
        "2030-01-02T25:00Z",
        "2030-01-02T03:04+5",
    ] {
        let e = parse_schedule(bad).expect_err(bad);
        assert!(e.to_string().contains("with a time zone"), "{bad}: {e}");
    }
    assert_eq!(parse_seconds("60").expect("s"), 60);
    assert_eq!(parse_seconds("2min").expect("min"), 120);
    assert_eq!(parse_seconds("1500ms").expect("ms"), 2);
    assert!(parse_seconds("0").is_err() && parse_seconds("5 parsecs").is_err());
}
