//! The read endpoints that come from the DCS: `GET /cluster`, `GET /history`, `GET /config`
//! (`GET /failsafe` is `failsafe.rs`'s).

use axum::http::StatusCode;
use serde_json::{Map, Value};

use super::{Answer, ApiContext, Refusal, json};
use crate::config::{DynamicConfig, SyncMode};
use crate::dcs::{Cluster, HistoryLine, Member};

/// `GET /cluster`.
pub(super) async fn cluster(ctx: &ApiContext) -> Answer {
    let c = ctx.read_cluster().await?;
    Ok(json(
        StatusCode::OK,
        &cluster_document(&c, &ctx.settings().scope),
    ))
}

/// `GET /history`: the `history` key's lines, `[[timeline, lsn, reason, timestamp, leader]]`.
pub(super) async fn history(ctx: &ApiContext) -> Answer {
    let c = ctx.read_cluster().await?;
    let lines = c.history.iter().map(HistoryLine::to_json).collect();
    Ok(json(StatusCode::OK, &Value::Array(lines)))
}

/// `GET /elections` (the stored election records, newest first), `GET /elections/last` and
/// `GET /elections/<id>`; 404 when there is no such record.
pub(super) async fn elections(ctx: &ApiContext, path: &str) -> Answer {
    let which = path
        .trim_matches('/')
        .strip_prefix("elections")
        .unwrap_or("")
        .trim_start_matches('/');
    let records = ctx.dcs()?.elections().await.map_err(|e| {
        Refusal::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("cannot read the election records from the DCS: {e}"),
        )
    })?;
    let one = match which {
        "" => {
            return Ok(json(
                StatusCode::OK,
                &serde_json::to_value(&records).unwrap_or_default(),
            ));
        }
        "last" => records.first(),
        id => records.iter().find(|r| r.id == id),
    };
    match one {
        Some(r) => Ok(json(
            StatusCode::OK,
            &serde_json::to_value(r).unwrap_or_default(),
        )),
        None if which == "last" => Err(Refusal::new(
            StatusCode::NOT_FOUND,
            "no election has been recorded in this cluster yet",
        )),
        None => Err(Refusal::new(
            StatusCode::NOT_FOUND,
            format!("no election record {which}: GET /elections lists the records kept"),
        )),
    }
}

/// `GET /config`: the dynamic configuration; 502 without a valid `config` key.
pub(super) async fn config(ctx: &ApiContext) -> Answer {
    let c = ctx.read_cluster().await?;
    match valid_config(&c) {
        Some((v, _)) => Ok(json(StatusCode::OK, v)),
        None => Err(Refusal::new(
            StatusCode::BAD_GATEWAY,
            "the DCS has no valid config key (a JSON object)",
        )),
    }
}

/// The `config` key and its revision, if it holds a JSON object (Patroni's "valid" config).
pub(super) fn valid_config(c: &Cluster) -> Option<(&Value, i64)> {
    c.config
        .as_ref()
        .filter(|(v, rev)| v.is_object() && *rev > 0)
        .map(|(v, rev)| (v, *rev))
}

/// The dynamic configuration the cluster runs with (defaults where the key is missing or does
/// not parse, as the HA loop reads it).
pub(super) fn dynamic_config(c: &Cluster) -> DynamicConfig {
    valid_config(c)
        .and_then(|(v, _)| serde_json::from_value(v.clone()).ok())
        .unwrap_or_default()
}

/// A standby cluster (`standby_cluster` with a host, port or restore command).
fn is_standby_cluster(c: &Cluster) -> bool {
    valid_config(c)
        .and_then(|(v, _)| v.get("standby_cluster"))
        .and_then(Value::as_object)
        .is_some_and(|s| {
            ["host", "port", "restore_command"]
                .iter()
                .any(|k| s.get(*k).is_some_and(super::units::truthy))
        })
}

/// `host` and `port` of a member's `conn_url` (`postgres://host:port/db`, or Patroni's older
/// `host=… port=…` form).
pub(super) fn conn_host_port(conn_url: &str) -> (Option<String>, Option<u16>) {
    if let Some(rest) = conn_url
        .strip_prefix("postgres://")
        .or_else(|| conn_url.strip_prefix("postgresql://"))
    {
        let authority = rest.split(['/', '?']).next().unwrap_or("");
        let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            match v6.split_once(']') {
                Some((h, p)) => (h, p.strip_prefix(':')),
                None => (v6, None),
            }
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        let host = (!host.is_empty()).then(|| host.to_string());
        return (host, port.and_then(|p| p.parse().ok()));
    }
    let mut host = None;
    let mut port = None;
    for part in conn_url.split_whitespace() {
        match part.split_once('=') {
            Some(("host", h)) if !h.is_empty() => host = Some(h.to_string()),
            Some(("port", p)) => port = p.parse().ok(),
            _ => {}
        }
    }
    (host, port)
}

/// PostgreSQL's text form of an LSN: `0/4000060`.
pub(super) fn format_lsn(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xFFFF_FFFF)
}

/// The `GET /cluster` document, in Patroni's shape: `members` (sorted by name) with role,
/// state, `api_url`, PostgreSQL host and port, timeline, tags, restart flags and, for
/// non-leaders, LSNs and lag behind the leader's last `/status` optime; `scope`; `pause` when
/// paused; `scheduled_switchover` when one is scheduled. Built from the DCS member keys only.
pub(crate) fn cluster_document(c: &Cluster, scope: &str) -> Value {
    let config = dynamic_config(c);
    let leader = c.leader_name();
    let sync_role = if config.synchronous_mode == SyncMode::Quorum {
        "quorum_standby"
    } else {
        "sync_standby"
    };
    let sync_members = c
        .sync
        .as_ref()
        .map(|(s, _)| s.members())
        .unwrap_or_default();
    let cluster_lsn = c.status.optime.unwrap_or(0);
    let standby = is_standby_cluster(c);
    let mut members: Vec<Value> = c
        .members
        .iter()
        .map(|m| {
            let role = if Some(m.name.as_str()) == leader {
                if standby { "standby_leader" } else { "leader" }
            } else if config.synchronous_mode != SyncMode::Off && sync_members.contains(&m.name) {
                sync_role
            } else {
                "replica"
            };
            member_json(m, role, cluster_lsn)
        })
        .collect();
    members.sort_by(|a, b| {
        let name = |v: &Value| v["name"].as_str().unwrap_or_default().to_string();
        name(a).cmp(&name(b))
    });
    let mut doc = Map::new();
    doc.insert("members".into(), Value::Array(members));
    doc.insert("scope".into(), scope.into());
    if config.pause == Some(true) {
        doc.insert("pause".into(), true.into());
    }
    if let Some((f, _)) = &c.failover
        && let Some(at) = &f.scheduled_at
    {
        let mut s = Map::new();
        s.insert("at".into(), at.clone().into());
        if let Some(from) = &f.leader {
            s.insert("from".into(), from.clone().into());
        }
        if let Some(to) = &f.member {
            s.insert("to".into(), to.clone().into());
        }
        doc.insert("scheduled_switchover".into(), Value::Object(s));
    }
    Value::Object(doc)
}

fn member_json(m: &Member, role: &str, cluster_lsn: u64) -> Value {
    let d = &m.data;
    let is_leader = matches!(role, "leader" | "standby_leader");
    let state = if is_leader {
        None
    } else {
        d.replication_state.clone().filter(|s| !s.is_empty())
    }
    .or_else(|| d.state.clone())
    .unwrap_or_default();
    let mut o = Map::new();
    o.insert("name".into(), m.name.clone().into());
    o.insert("role".into(), role.into());
    o.insert("state".into(), state.into());
    o.insert(
        "api_url".into(),
        d.api_url.clone().map_or(Value::Null, Value::from),
    );
    let (host, port) = d
        .conn_url
        .as_deref()
        .map(conn_host_port)
        .unwrap_or_default();
    if let Some(h) = host {
        o.insert("host".into(), h.into());
        if let Some(p) = port {
            o.insert("port".into(), p.into());
        }
    }
    if let Some(tl) = d.timeline {
        o.insert("timeline".into(), tl.into());
    }
    for key in [
        "pending_restart",
        "pending_restart_reason",
        "scheduled_restart",
    ] {
        if let Some(v) = d.extra.get(key) {
            o.insert(key.into(), v.clone());
        }
    }
    if !d.tags.is_empty() {
        o.insert("tags".into(), Value::Object(d.tags.clone()));
    }
    if let Some(p) = &d.policy {
        o.insert("policy".into(), p.clone().into());
    }
    if !is_leader {
        for (lsn_key, lag_key, lsn) in [
            ("receive_lsn", "receive_lag", d.receive_lsn),
            ("replay_lsn", "replay_lag", d.replay_lsn),
            ("lsn", "lag", d.xlog_location),
        ] {
            match lsn.filter(|l| *l > 0) {
                None => {
                    o.insert(lsn_key.into(), "unknown".into());
                    o.insert(lag_key.into(), "unknown".into());
                }
                Some(l) => {
                    o.insert(lsn_key.into(), format_lsn(l).into());
                    o.insert(lag_key.into(), cluster_lsn.saturating_sub(l).into());
                }
            }
        }
    }
    Value::Object(o)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dcs::RawKv;
    use serde_json::json;

    fn cluster(kvs: &[(&str, &str)]) -> Cluster {
        Cluster::from_kvs(
            kvs.iter().map(|(k, v)| RawKv {
                key: k,
                value: v.as_bytes(),
                lease: 1,
                mod_revision: 5,
            }),
            9,
        )
    }

    #[test]
    fn lsn_and_conn_url_formats() {
        assert_eq!(format_lsn(0x0400_0060), "0/4000060");
        assert_eq!(format_lsn(0x1_0000_0000), "1/0");
        assert_eq!(
            conn_host_port("postgres://10.0.0.1:5433/postgres"),
            (Some("10.0.0.1".into()), Some(5433))
        );
        assert_eq!(
            conn_host_port("postgres://[fd00::1]:5432/postgres"),
            (Some("fd00::1".into()), Some(5432))
        );
        assert_eq!(
            conn_host_port("postgresql://u:p@db1/postgres"),
            (Some("db1".into()), None)
        );
        assert_eq!(
            conn_host_port("host=db2 port=6432 dbname=postgres"),
            (Some("db2".into()), Some(6432))
        );
        assert_eq!(conn_host_port(""), (None, None));
    }

    #[test]
    fn cluster_document_like_patroni() {
        let c = cluster(&[
            ("leader", "pg1"),
            (
                "config",
                r#"{"ttl":30,"synchronous_mode":true,"pause":true}"#,
            ),
            ("sync", r#"{"leader":"pg1","sync_standby":"pg3"}"#),
            ("status", r#"{"optime":67109000}"#),
            (
                "failover",
                r#"{"leader":"pg1","member":"pg3","scheduled_at":"2026-05-01T08:00:00+00:00"}"#,
            ),
            (
                "members/pg2",
                r#"{"conn_url":"postgres://10.0.0.2:5432/postgres","api_url":"http://10.0.0.2:8008/patroni","state":"running","role":"replica","xlog_location":67108960,"receive_lsn":67108960,"replay_lsn":67108900,"replication_state":"streaming","timeline":5,"pending_restart":true,"pending_restart_reason":{"max_connections":{"old_value":"100","new_value":"200"}}}"#,
            ),
            (
                "members/pg1",
                r#"{"conn_url":"postgres://10.0.0.1:5432/postgres","api_url":"http://10.0.0.1:8008/patroni","state":"running","role":"primary","xlog_location":67109000,"timeline":5,"tags":{"zone":"a"},"policy":"zone-aware@abc"}"#,
            ),
            (
                "members/pg3",
                r#"{"conn_url":"postgres://10.0.0.3:5432/postgres","state":"starting","role":"replica"}"#,
            ),
        ]);
        let doc = cluster_document(&c, "demo");
        assert_eq!(doc["scope"], "demo");
        assert_eq!(doc["pause"], true);
        assert_eq!(
            doc["scheduled_switchover"],
            json!({"at": "2026-05-01T08:00:00+00:00", "from": "pg1", "to": "pg3"})
        );
        let m = doc["members"].as_array().expect("members");
        let names: Vec<&str> = m.iter().filter_map(|x| x["name"].as_str()).collect();
        assert_eq!(names, ["pg1", "pg2", "pg3"]);
        assert_eq!(
            m[0],
            json!({"name": "pg1", "role": "leader", "state": "running",
                   "api_url": "http://10.0.0.1:8008/patroni", "host": "10.0.0.1", "port": 5432,
                   "timeline": 5, "tags": {"zone": "a"}, "policy": "zone-aware@abc"})
        );
        assert_eq!(m[1]["role"], "replica");
        assert_eq!(m[1]["state"], "streaming");
        assert_eq!(m[1]["receive_lsn"], "0/4000060");
        assert_eq!(m[1]["receive_lag"], 40);
        assert_eq!(m[1]["replay_lag"], 100);
        assert_eq!(m[1]["lsn"], "0/4000060");
        assert_eq!(m[1]["lag"], 40);
        assert_eq!(m[1]["pending_restart"], true);
        assert_eq!(
            m[1]["pending_restart_reason"]["max_connections"]["new_value"],
            "200"
        );
        assert_eq!(m[2]["role"], "sync_standby");
        assert_eq!(m[2]["state"], "starting");
        assert_eq!(m[2]["api_url"], Value::Null);
        assert_eq!(m[2]["lag"], "unknown");
        assert_eq!(m[2]["receive_lsn"], "unknown");

        // Without synchronous mode the sync key does not make a sync standby; no pause, no
        // scheduled switchover.
        let c = cluster(&[
            ("config", r#"{"ttl":30}"#),
            ("sync", r#"{"leader":"pg1","sync_standby":"pg3"}"#),
            ("failover", "{}"),
            ("members/pg3", r#"{"state":"running","role":"replica"}"#),
        ]);
        let doc = cluster_document(&c, "demo");
        assert_eq!(doc["members"][0]["role"], "replica");
        assert!(doc.get("pause").is_none());
        assert!(doc.get("scheduled_switchover").is_none());

        // A standby cluster's leader, quorum mode.
        let c = cluster(&[
            ("leader", "pg1"),
            (
                "config",
                r#"{"synchronous_mode":"quorum","standby_cluster":{"host":"10.1.0.1","port":5432}}"#,
            ),
            ("sync", r#"{"leader":"pg1","sync_standby":"pg2"}"#),
            (
                "members/pg1",
                r#"{"state":"running","role":"standby_leader"}"#,
            ),
            ("members/pg2", r#"{"state":"running","role":"replica"}"#),
        ]);
        let doc = cluster_document(&c, "demo");
        assert_eq!(doc["members"][0]["role"], "standby_leader");
        assert_eq!(doc["members"][1]["role"], "quorum_standby");
        assert!(doc["members"][0].get("lag").is_none());
    }

    #[test]
    fn config_validity() {
        assert!(valid_config(&cluster(&[("config", "[1]")])).is_none());
        assert!(valid_config(&cluster(&[("config", "not json")])).is_none());
        assert!(valid_config(&cluster(&[])).is_none());
        let c = cluster(&[("config", r#"{"ttl": 20, "pause": "yes"}"#)]);
        assert_eq!(valid_config(&c).map(|(_, r)| r), Some(5));
        assert_eq!(dynamic_config(&c).ttl, 20);
        assert_eq!(dynamic_config(&c).pause, Some(true));
    }
}
