//! `GET /metrics`: Patroni's metrics (same names, types and `scope`/`name` labels, so existing
//! dashboards work), computed from the status document as Patroni computes them, followed by
//! Regent's own ([`crate::metrics`]).

use std::fmt::Write as _;

use axum::body::Body;
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::Value;

use super::peer::failover_tags;
use super::{ApiContext, LocalSnapshot, respond, status_document};
use crate::metrics::escape_label;
use crate::time::parse_timestamp;

/// `patroni_postgres_state` values (fixed by Patroni; never renumbered).
const POSTGRES_STATES: [(&str, &str); 15] = [
    ("initializing new cluster", "initdb"),
    ("initdb failed", "initdb_failed"),
    ("running custom bootstrap script", "custom_bootstrap"),
    ("custom bootstrap failed", "custom_bootstrap_failed"),
    ("creating replica", "creating_replica"),
    ("running", "running"),
    ("starting", "starting"),
    ("starting after custom bootstrap", "bootstrap_starting"),
    ("start failed", "start_failed"),
    ("restarting", "restarting"),
    ("restart failed", "restart_failed"),
    ("stopping", "stopping"),
    ("stopped", "stopped"),
    ("stop failed", "stop_failed"),
    ("crashed", "crashed"),
];

pub(super) fn metrics(ctx: &ApiContext) -> Response {
    let view = ctx.view();
    let s = ctx.settings();
    let mut out = patroni_metrics(&view, &s.scope, &s.name);
    crate::metrics::render(&mut out, &[("scope", &s.scope), ("name", &s.name)]);
    respond(
        StatusCode::OK,
        Body::from(out),
        Some("text/plain; version=0.0.4; charset=utf-8"),
    )
}

/// `1.2.3` as Patroni writes its version metric: each part zero-padded to two digits (`010203`).
fn padded_version(v: &str) -> String {
    v.split('.')
        .map(|part| {
            let digits: String = part.chars().take_while(char::is_ascii_digit).collect();
            format!("{:0>2}", if digits.is_empty() { "0" } else { &digits })
        })
        .collect()
}

/// An epoch value for a timestamp field of the status document; 0 when absent or unreadable.
fn epoch(v: Option<&Value>) -> String {
    v.and_then(Value::as_str)
        .and_then(|s| parse_timestamp(s).ok())
        .map_or_else(|| "0".to_string(), |t| t.epoch_text())
}

/// Patroni's metrics for this node.
pub(super) fn patroni_metrics(v: &LocalSnapshot, scope: &str, name: &str) -> String {
    let doc = status_document(v);
    let labels = format!(
        "{{scope=\"{}\",name=\"{}\"}}",
        escape_label(scope),
        escape_label(name)
    );
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, value: String| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        let _ = writeln!(out, "{name}{labels} {value}");
    };
    let flag = |b: bool| if b { "1" } else { "0" }.to_string();
    let state = doc["state"].as_str().unwrap_or_default();
    let role = doc["role"].as_str().unwrap_or_default();
    let xlog = &doc["xlog"];
    let num = |v: &Value| v.as_u64().unwrap_or(0).to_string();
    let server_version = doc["server_version"].as_u64().unwrap_or(0);
    let replication_state = doc["replication_state"].as_str();

    metric(
        "patroni_version",
        "gauge",
        "Version of Regent (reported as Patroni's) without periods, each part two digits.",
        padded_version(&v.version),
    );
    metric(
        "patroni_postgres_running",
        "gauge",
        "1 if PostgreSQL is running, 0 otherwise.",
        flag(state == "running"),
    );
    metric(
        "patroni_postmaster_start_time",
        "gauge",
        "Epoch seconds when PostgreSQL started, 0 if unknown.",
        epoch(doc.get("postmaster_start_time")),
    );
    metric(
        "patroni_primary",
        "gauge",
        "1 if this node runs as the primary, 0 otherwise.",
        flag(role == "primary"),
    );
    metric(
        "patroni_xlog_location",
        "counter",
        "WAL position (flush LSN) of the primary, 0 if this node is not the primary.",
        num(&xlog["location"]),
    );
    metric(
        "patroni_standby_leader",
        "gauge",
        "1 if this node is a standby cluster's leader, 0 otherwise.",
        flag(role == "standby_leader"),
    );
    metric(
        "patroni_replica",
        "gauge",
        "1 if this node is a replica, 0 otherwise.",
        flag(role == "replica"),
    );
    metric(
        "patroni_sync_standby",
        "gauge",
        "1 if this node is a synchronous standby, 0 otherwise.",
        flag(doc["sync_standby"] == true),
    );
    metric(
        "patroni_quorum_standby",
        "gauge",
        "1 if this node is a quorum standby (synchronous_mode: quorum), 0 otherwise.",
        flag(doc["quorum_standby"] == true),
    );
    metric(
        "patroni_xlog_received_location",
        "counter",
        "WAL position received by this replica, 0 if it is not a replica.",
        num(&xlog["received_location"]),
    );
    metric(
        "patroni_xlog_replayed_location",
        "counter",
        "WAL position replayed by this replica, 0 if it is not a replica.",
        num(&xlog["replayed_location"]),
    );
    metric(
        "patroni_xlog_replayed_timestamp",
        "gauge",
        "Epoch seconds of the last replayed transaction, 0 if unknown.",
        epoch(xlog.get("replayed_timestamp")),
    );
    metric(
        "patroni_xlog_paused",
        "gauge",
        "1 if WAL replay is paused, 0 otherwise.",
        flag(xlog["paused"] == true),
    );
    if server_version >= 90600 {
        metric(
            "patroni_postgres_streaming",
            "gauge",
            "1 if this replica streams WAL from its upstream, 0 otherwise.",
            flag(replication_state == Some("streaming")),
        );
        metric(
            "patroni_postgres_in_archive_recovery",
            "gauge",
            "1 if this replica replays WAL from the archive, 0 otherwise.",
            flag(replication_state == Some("in archive recovery")),
        );
    }
    metric(
        "patroni_postgres_server_version",
        "gauge",
        "PostgreSQL version (server_version_num) if running, 0 otherwise.",
        server_version.to_string(),
    );
    metric(
        "patroni_cluster_unlocked",
        "gauge",
        "1 if the cluster has no leader, 0 otherwise.",
        flag(doc["cluster_unlocked"] == true),
    );
    metric(
        "patroni_failsafe_mode_is_active",
        "gauge",
        "1 if failsafe mode is active, 0 if inactive.",
        flag(doc["failsafe_mode_is_active"] == true),
    );
    metric(
        "patroni_postgres_timeline",
        "counter",
        "PostgreSQL timeline of this node if running, 0 otherwise.",
        num(&doc["timeline"]),
    );
    metric(
        "patroni_dcs_last_seen",
        "gauge",
        "Epoch seconds of the last successful DCS read.",
        num(&doc["dcs_last_seen"]),
    );
    metric(
        "patroni_pending_restart",
        "gauge",
        "1 if PostgreSQL must restart to apply a setting, 0 otherwise.",
        flag(v.pending_restart),
    );
    metric(
        "patroni_is_paused",
        "gauge",
        "1 if the cluster is paused (no automatic failover), 0 otherwise.",
        flag(doc["pause"] == true),
    );
    metric(
        "patroni_failover_priority",
        "gauge",
        "This node's failover priority (0: never promoted).",
        failover_tags(&v.tags).1.to_string(),
    );
    let states: Vec<String> = POSTGRES_STATES
        .iter()
        .enumerate()
        .map(|(i, (_, short))| format!("{i}={short}"))
        .collect();
    let index = POSTGRES_STATES
        .iter()
        .position(|(s, _)| *s == state)
        .map_or(-1, |i| i as i64);
    let _ = writeln!(
        out,
        "# HELP patroni_postgres_state Numeric representation of the PostgreSQL state (-1: unknown)."
    );
    let _ = writeln!(out, "# Values: {}", states.join(", "));
    let _ = writeln!(out, "# TYPE patroni_postgres_state gauge");
    let _ = writeln!(out, "patroni_postgres_state{labels} {index}");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ReplicationRow;

    fn sample(text: &str, name: &str) -> Option<String> {
        let prefix = format!("{name}{{");
        text.lines()
            .find(|l| l.starts_with(&prefix))
            .and_then(|l| l.rsplit_once(' '))
            .map(|(_, v)| v.to_string())
    }

    #[test]
    fn versions_are_padded() {
        assert_eq!(padded_version("4.1.4"), "040104");
        assert_eq!(padded_version("0.1.0"), "000100");
        assert_eq!(padded_version("1.12.3-rc1"), "011203");
    }

    #[test]
    fn primary_and_replica_values() {
        let primary = LocalSnapshot {
            scope: "demo".into(),
            name: "n1".into(),
            version: "0.1.0".into(),
            state: "running".into(),
            role: "primary".into(),
            holds_lock: true,
            postmaster_start_time: Some("2024-08-28 19:39:26.352526+00:00".into()),
            server_version: Some(160_004),
            timeline: Some(4),
            wal_flush_lsn: Some(22_320_573_386_952),
            replication: vec![ReplicationRow {
                usename: "replicator".into(),
                application_name: "n2".into(),
                client_addr: None,
                state: "streaming".into(),
                sync_state: "async".into(),
                sync_priority: 0,
            }],
            dcs_last_seen: Some(1_724_874_235),
            dcs_reachable: true,
            pending_restart: true,
            paused: true,
            ..LocalSnapshot::default()
        };
        let t = patroni_metrics(&primary, "demo", "n1");
        let get = |n: &str| sample(&t, n).unwrap_or_else(|| panic!("{n} missing in\n{t}"));
        assert!(t.contains("patroni_version{scope=\"demo\",name=\"n1\"} 000100\n"));
        assert_eq!(get("patroni_postgres_running"), "1");
        assert_eq!(get("patroni_postmaster_start_time"), "1724873966.352526");
        assert_eq!(get("patroni_primary"), "1");
        assert_eq!(get("patroni_replica"), "0");
        assert_eq!(get("patroni_xlog_location"), "22320573386952");
        assert_eq!(get("patroni_xlog_received_location"), "0");
        assert_eq!(get("patroni_postgres_streaming"), "0");
        assert_eq!(get("patroni_postgres_server_version"), "160004");
        assert_eq!(get("patroni_postgres_timeline"), "4");
        assert_eq!(get("patroni_dcs_last_seen"), "1724874235");
        assert_eq!(get("patroni_pending_restart"), "1");
        assert_eq!(get("patroni_is_paused"), "1");
        assert_eq!(get("patroni_failover_priority"), "1");
        assert_eq!(get("patroni_postgres_state"), "5");
        assert!(t.contains("# TYPE patroni_xlog_location counter\n"));
        assert!(t.contains("# TYPE patroni_primary gauge\n"));

        let replica = LocalSnapshot {
            role: "replica".into(),
            holds_lock: false,
            wal_flush_lsn: None,
            received_lsn: Some(5000),
            replayed_lsn: Some(4000),
            replayed_timestamp: Some("2024-08-28 19:45:00+00:00".into()),
            replay_paused: true,
            replication_state: Some("streaming".into()),
            sync_standby: true,
            pending_restart: false,
            paused: false,
            tags: serde_json::json!({"nofailover": true})
                .as_object()
                .cloned()
                .unwrap_or_default(),
            ..primary.clone()
        };
        let t = patroni_metrics(&replica, "demo", "n2");
        let get = |n: &str| sample(&t, n).unwrap_or_else(|| panic!("{n} missing in\n{t}"));
        assert_eq!(get("patroni_primary"), "0");
        assert_eq!(get("patroni_replica"), "1");
        assert_eq!(get("patroni_sync_standby"), "1");
        assert_eq!(get("patroni_xlog_location"), "0");
        assert_eq!(get("patroni_xlog_received_location"), "5000");
        assert_eq!(get("patroni_xlog_replayed_location"), "4000");
        assert_eq!(get("patroni_xlog_replayed_timestamp"), "1724874300");
        assert_eq!(get("patroni_xlog_paused"), "1");
        assert_eq!(get("patroni_postgres_streaming"), "1");
        assert_eq!(get("patroni_postgres_in_archive_recovery"), "0");
        assert_eq!(get("patroni_failover_priority"), "0");

        // PostgreSQL down: no xlog, state index of "stopped".
        let stopped = LocalSnapshot {
            state: "stopped".into(),
            ..replica
        };
        let t = patroni_metrics(&stopped, "demo", "n2");
        let get = |n: &str| sample(&t, n).unwrap_or_else(|| panic!("{n} missing in\n{t}"));
        assert_eq!(get("patroni_postgres_running"), "0");
        assert_eq!(get("patroni_postgres_state"), "12");
        assert_eq!(get("patroni_postgres_server_version"), "0");
        assert_eq!(get("patroni_postmaster_start_time"), "0");
        assert!(sample(&t, "patroni_postgres_streaming").is_none());
        let unknown = LocalSnapshot {
            state: "being weird".into(),
            ..LocalSnapshot::default()
        };
        let t = patroni_metrics(&unknown, "demo", "n2");
        assert_eq!(sample(&t, "patroni_postgres_state").as_deref(), Some("-1"));
    }
}
