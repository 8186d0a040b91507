//! The status document (`GET /patroni` and the body of every health check), in Patroni's shape.

use serde_json::{Map, Value, json};

use super::{LocalSnapshot, ReplicationRow};

/// WAL positions as PostgreSQL reported them; present only when PostgreSQL could be queried.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Xlog {
    Primary { location: u64 },
    Replica { received: u64, replayed: u64 },
}

/// What the status document says about PostgreSQL; the health checks are computed from it,
/// as Patroni computes them from its response.
pub(super) struct Reported<'a> {
    pub(super) state: &'a str,
    pub(super) role: &'a str,
    pub(super) xlog: Option<Xlog>,
}

impl<'a> Reported<'a> {
    pub(super) fn of(v: &'a LocalSnapshot) -> Self {
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

    pub(super) fn replayed_location(&self) -> u64 {
        match self.xlog {
            Some(Xlog::Replica { replayed, .. }) => replayed,
            _ => 0,
        }
    }

    pub(super) fn received_location(&self) -> u64 {
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
pub(crate) fn status_document(v: &LocalSnapshot) -> Value {
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
            let field = if v.quorum_commit {
                "quorum_standby"
            } else {
                "sync_standby"
            };
            doc.insert(field.into(), true.into());
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
    if v.watchdog_failed {
        doc.insert("watchdog_failed".into(), true.into());
    }
    if v.failsafe_active {
        doc.insert("failsafe_mode_is_active".into(), true.into());
    }
    // Patroni always sends it (0 before the first successful DCS read).
    doc.insert("dcs_last_seen".into(), v.dcs_last_seen.unwrap_or(0).into());
    if !v.tags.is_empty() {
        doc.insert("tags".into(), Value::Object(v.tags.clone()));
    }
    if let Some(sysid) = &v.system_identifier {
        doc.insert("database_system_identifier".into(), sysid.clone().into());
    }
    if v.pending_restart {
        doc.insert("pending_restart".into(), true.into());
        if let Some(reason) = v.pending_restart_reason.as_ref().filter(|r| !r.is_empty()) {
            doc.insert(
                "pending_restart_reason".into(),
                Value::Object(reason.clone()),
            );
        }
    }
    if let Some(scheduled) = &v.scheduled_restart {
        doc.insert("scheduled_restart".into(), scheduled.clone());
    }
    if let Some(why) = &v.start_failure {
        doc.insert("start_failure".into(), why.clone().into());
    }
    let mut patroni = Map::new();
    patroni.insert("version".into(), v.version.clone().into());
    patroni.insert("scope".into(), v.scope.clone().into());
    patroni.insert("name".into(), v.name.clone().into());
    doc.insert("patroni".into(), Value::Object(patroni));
    if let Some(policy) = &v.policy {
        doc.insert("policy".into(), policy.clone());
    }
    if let Some(fit) = &v.timing_adjusted {
        // Regent's own: the timing the node runs with, when it is not the one configured.
        doc.insert(
            "regent".into(),
            json!({"timing": {
                "configured": fit.configured,
                "effective": fit.effective,
                "warning": fit.warning(),
            }}),
        );
    }
    Value::Object(doc)
}

/// Whether the status document's `policy` object (as `LocalSnapshot::policy` holds it) says the
/// node's policies judge it failed (`policy.health.verdict`).
pub(super) fn policy_judged_failed(policy: Option<&Value>) -> bool {
    policy
        .and_then(|p| p.get("health"))
        .and_then(|h| h.get("verdict"))
        .and_then(Value::as_str)
        == Some("failed")
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
