//! What `list`, `topology` and `history` show, computed from the DCS alone (as patronictl does):
//! roles from the leader and `sync` keys, states and WAL positions from the member keys, lag
//! against the leader's `/status` optime.
//!
//! The JSON and YAML forms have patronictl's shape (`patronictl list -f json`: one object per
//! member, keyed by column title, empty values left out), plus `Policy`.

use super::Format;
use super::table::{Align, Table};
use crate::dcs::{Cluster, Member};
use serde_json::{Map, Value};

/// A WAL position of a replica, compared with the leader's last known optime.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Position {
    Unknown,
    At { lsn: u64, lag: u64 },
}

/// One member as the table shows it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct MemberRow {
    pub(crate) name: String,
    pub(crate) host: String,
    pub(crate) port: Option<u16>,
    /// `Leader`, `Standby Leader`, `Sync Standby`, `Quorum Standby` or `Replica`.
    pub(crate) role: &'static str,
    pub(crate) state: String,
    pub(crate) timeline: Option<u64>,
    /// `None` on the leader.
    pub(crate) receive: Option<Position>,
    pub(crate) replay: Option<Position>,
    pub(crate) pending_restart: bool,
    pub(crate) pending_restart_reason: Vec<String>,
    pub(crate) scheduled_restart: Option<String>,
    pub(crate) tags: Map<String, Value>,
    /// `name@digest` of each active policy (the member key's `policy`).
    pub(crate) policy: Option<String>,
    /// `tags.replicatefrom`, for the topology.
    pub(crate) upstream: Option<String>,
}

/// PostgreSQL's LSN text: `%X/%X` (high and low 32 bits in hex).
pub(crate) fn format_lsn(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xFFFF_FFFF)
}

/// Truthiness of a dynamic-config value (`true`, `"on"`, `"quorum"`, ...).
pub(crate) fn config_flag(config: Option<&Value>, key: &str) -> bool {
    match config.and_then(|c| c.get(key)) {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => !matches!(
            s.trim().to_ascii_lowercase().as_str(),
            "" | "off" | "false" | "no"
        ),
        Some(Value::Number(n)) => n.as_f64().is_some_and(|f| f != 0.0),
        Some(Value::Object(o)) => !o.is_empty(),
        _ => false,
    }
}

/// Host and port from a `conn_url` (`postgres://host:port/db`, also with user info or IPv6).
pub(crate) fn conn_host_port(conn_url: &str) -> Option<(String, Option<u16>)> {
    let rest = conn_url
        .strip_prefix("postgres://")
        .or_else(|| conn_url.strip_prefix("postgresql://"))?;
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if let Some(v6) = hostport.strip_prefix('[') {
        let (host, after) = v6.split_once(']')?;
        let port = after.strip_prefix(':').and_then(|p| p.parse().ok());
        return Some((host.to_string(), port));
    }
    match hostport.rsplit_once(':') {
        Some((h, p)) => Some((h.to_string(), p.parse().ok())),
        None if !hostport.is_empty() => Some((hostport.to_string(), None)),
        None => None,
    }
}

fn position(lsn: Option<u64>, cluster_lsn: u64) -> Position {
    match lsn {
        None | Some(0) => Position::Unknown,
        Some(lsn) => Position::At {
            lsn,
            lag: cluster_lsn.saturating_sub(lsn),
        },
    }
}

/// The members, sorted by name, as the table shows them.
pub(crate) fn member_rows(cluster: &Cluster) -> Vec<MemberRow> {
    let config = cluster.config.as_ref().map(|(v, _)| v);
    let leader = cluster.leader_name();
    let standby_cluster = config_flag(config, "standby_cluster");
    let sync_mode = config_flag(config, "synchronous_mode");
    let quorum = config
        .and_then(|c| c.get("synchronous_mode"))
        .and_then(Value::as_str)
        .is_some_and(|s| s.eq_ignore_ascii_case("quorum"));
    let sync_members = cluster
        .sync
        .as_ref()
        .map(|(s, _)| s.members())
        .unwrap_or_default();
    let cluster_lsn = cluster.status.optime.unwrap_or(0);
    let mut rows: Vec<MemberRow> = cluster
        .members
        .iter()
        .map(|m| {
            let is_leader = Some(m.name.as_str()) == leader;
            let role = if is_leader {
                if standby_cluster {
                    "Standby Leader"
                } else {
                    "Leader"
                }
            } else if sync_mode && sync_members.iter().any(|s| s == &m.name) {
                if quorum {
                    "Quorum Standby"
                } else {
                    "Sync Standby"
                }
            } else {
                "Replica"
            };
            let d = &m.data;
            let state = if role == "Leader" {
                d.state.clone()
            } else {
                d.replication_state
                    .clone()
                    .filter(|s| !s.is_empty())
                    .or_else(|| d.state.clone())
            }
            .unwrap_or_default();
            let (host, port) = d
                .conn_url
                .as_deref()
                .and_then(conn_host_port)
                .unwrap_or_default();
            let (receive, replay) = if is_leader {
                (None, None)
            } else {
                (
                    Some(position(d.receive_lsn, cluster_lsn)),
                    Some(position(d.replay_lsn, cluster_lsn)),
                )
            };
            MemberRow {
                name: m.name.clone(),
                host,
                port,
                role,
                state,
                timeline: d.timeline.map(u64::from),
                receive,
                replay,
                pending_restart: d.extra.get("pending_restart").is_some_and(truthy),
                pending_restart_reason: restart_reasons(m),
                scheduled_restart: scheduled_restart(m),
                tags: d.tags.clone(),
                policy: d.policy.clone().filter(|p| !p.is_empty()),
                upstream: d
                    .tags
                    .get("replicatefrom")
                    .and_then(Value::as_str)
                    .map(str::to_string),
            }
        })
        .collect();
    rows.sort_by(|a, b| a.name.cmp(&b.name));
    rows
}

fn truthy(v: &Value) -> bool {
    match v {
        Value::Bool(b) => *b,
        Value::Null => false,
        Value::String(s) => !s.is_empty(),
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

fn restart_reasons(m: &Member) -> Vec<String> {
    let Some(Value::Object(reasons)) = m.data.extra.get("pending_restart_reason") else {
        return Vec::new();
    };
    reasons
        .iter()
        .map(|(param, v)| {
            let text = |k: &str| match v.get(k) {
                Some(Value::String(s)) => s.clone(),
                Some(other) => other.to_string(),
                None => String::new(),
            };
            format!("{param}: {}->{}", text("old_value"), text("new_value"))
        })
        .collect()
}

fn scheduled_restart(m: &Member) -> Option<String> {
    let s = m.data.extra.get("scheduled_restart")?;
    let mut text = s.get("schedule")?.as_str()?.to_string();
    if let Some(v) = s.get("postgres_version").and_then(Value::as_str) {
        text.push_str(&format!(" if version < {v}"));
    }
    Some(text)
}

/// `Cluster: <scope> (<system id | uninitialized | initializing>)`.
pub(crate) fn title(cluster: &Cluster, scope: &str) -> String {
    let sysid = match cluster.initialize.as_deref() {
        None => "uninitialized",
        Some("") => "initializing",
        Some(s) => s,
    };
    format!("Cluster: {scope} ({sysid})")
}

/// Lines under the table: maintenance mode, a scheduled switchover.
pub(crate) fn service_info(cluster: &Cluster) -> Vec<String> {
    let mut out = Vec::new();
    if config_flag(cluster.config.as_ref().map(|(v, _)| v), "pause") {
        out.push("Maintenance mode: on".to_string());
    }
    if let Some((f, _)) = &cluster.failover
        && let Some(at) = &f.scheduled_at
    {
        let mut s = format!("Switchover scheduled at: {at}");
        if let Some(l) = &f.leader {
            s.push_str(&format!("\n                    from: {l}"));
        }
        if let Some(c) = &f.member {
            s.push_str(&format!("\n                      to: {c}"));
        }
        out.push(s);
    }
    out
}

/// Replicas under their upstream (`tags.replicatefrom` naming another replica), leader first.
pub(crate) fn topology_order(rows: Vec<MemberRow>) -> Vec<(usize, MemberRow)> {
    let leader = rows.iter().position(|r| r.role.ends_with("Leader"));
    let names: Vec<String> = rows.iter().map(|r| r.name.clone()).collect();
    let leader_name = leader.map(|i| names[i].clone());
    let parent_of = |r: &MemberRow| -> Option<String> {
        match &r.upstream {
            Some(u)
                if *u != r.name
                    && Some(u) != leader_name.as_ref()
                    && names.contains(u)
                    && rows
                        .iter()
                        .any(|x| &x.name == u && !x.role.ends_with("Leader")) =>
            {
                Some(u.clone())
            }
            _ => leader_name.clone(),
        }
    };
    let parents: Vec<Option<String>> = rows.iter().map(parent_of).collect();
    let mut out = Vec::new();
    let mut placed = vec![false; rows.len()];
    fn walk(
        parent: Option<&str>,
        level: usize,
        rows: &[MemberRow],
        parents: &[Option<String>],
        placed: &mut Vec<bool>,
        out: &mut Vec<(usize, MemberRow)>,
    ) {
        for i in 0..rows.len() {
            if !placed[i] && !rows[i].role.ends_with("Leader") && parents[i].as_deref() == parent {
                placed[i] = true;
                out.push((level, rows[i].clone()));
                walk(Some(&rows[i].name), level + 1, rows, parents, placed, out);
            }
        }
    }
    if let Some(l) = leader {
        placed[l] = true;
        out.push((0, rows[l].clone()));
    }
    walk(
        leader_name.as_deref(),
        1,
        &rows,
        &parents,
        &mut placed,
        &mut out,
    );
    // Cycles among replicas (a -> b -> a) hang under nothing: show them at the first level.
    for (i, r) in rows.iter().enumerate() {
        if !placed[i] {
            out.push((1, r.clone()));
        }
    }
    out
}

/// A cell: kept typed for JSON/YAML, rendered as text for the table.
#[derive(Debug, Clone, PartialEq)]
enum Cell {
    Text(String),
    Int(u64),
    Tags(Map<String, Value>),
}

impl Cell {
    fn is_empty(&self) -> bool {
        match self {
            Cell::Text(s) => s.is_empty(),
            Cell::Int(_) => false,
            Cell::Tags(t) => t.is_empty(),
        }
    }

    fn json(&self) -> Value {
        match self {
            Cell::Text(s) => Value::from(s.clone()),
            Cell::Int(i) => Value::from(*i),
            Cell::Tags(t) => Value::Object(t.clone()),
        }
    }

    fn text(&self, flow_tags: bool) -> String {
        match self {
            Cell::Text(s) => s.clone(),
            Cell::Int(i) => i.to_string(),
            Cell::Tags(t) if t.is_empty() => String::new(),
            Cell::Tags(t) => {
                let items: Vec<String> = t
                    .iter()
                    .map(|(k, v)| format!("{k}: {}", scalar_text(v)))
                    .collect();
                if flow_tags {
                    format!("{{{}}}", items.join(", "))
                } else {
                    items.join("\n")
                }
            }
        }
    }
}

fn scalar_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Megabytes, rounded half to even as Python's `round`.
fn lag_mb(lag: u64) -> u64 {
    (lag as f64 / 1024.0 / 1024.0).round_ties_even() as u64
}

fn position_cells(p: Option<Position>) -> (Cell, Cell) {
    match p {
        Some(Position::At { lsn, lag }) => (Cell::Text(format_lsn(lsn)), Cell::Int(lag_mb(lag))),
        _ => (Cell::Text(String::new()), Cell::Text(String::new())),
    }
}

/// The members table (`list`, `topology`) in the requested format.
pub(crate) fn render_members(
    cluster: &Cluster,
    scope: &str,
    format: Format,
    extended: bool,
    topology: bool,
) -> String {
    let rows = member_rows(cluster);
    let append_port = rows.iter().any(|r| r.port.is_some_and(|p| p != 5432)) || {
        let mut hosts: Vec<&str> = rows.iter().map(|r| r.host.as_str()).collect();
        hosts.sort_unstable();
        hosts.dedup();
        hosts.len() < rows.len()
    };
    let ordered: Vec<(usize, MemberRow)> = if topology {
        topology_order(rows)
    } else {
        rows.into_iter().map(|r| (0, r)).collect()
    };
    let mut columns: Vec<(&str, Align)> = vec![
        ("Cluster", Align::Left),
        ("Member", Align::Left),
        ("Host", Align::Left),
        ("Role", Align::Left),
        ("State", Align::Left),
        ("TL", Align::Right),
        ("Receive LSN", Align::Right),
        ("Receive Lag", Align::Right),
        ("Replay LSN", Align::Right),
        ("Replay Lag", Align::Right),
    ];
    let any = |f: &dyn Fn(&MemberRow) -> bool| ordered.iter().any(|(_, r)| f(r));
    let optional: [(&str, bool); 5] = [
        ("Pending restart", extended || any(&|r| r.pending_restart)),
        (
            "Pending restart reason",
            extended || any(&|r| !r.pending_restart_reason.is_empty()),
        ),
        (
            "Scheduled restart",
            extended || any(&|r| r.scheduled_restart.is_some()),
        ),
        ("Tags", extended || any(&|r| !r.tags.is_empty())),
        ("Policy", any(&|r| r.policy.is_some())),
    ];
    for (name, shown) in optional {
        if shown {
            columns.push((name, Align::Left));
        }
    }
    let cells: Vec<Vec<Cell>> = ordered
        .iter()
        .map(|(level, r)| {
            let (recv_lsn, recv_lag) = position_cells(r.receive);
            let (replay_lsn, replay_lag) = position_cells(r.replay);
            let name = if *level > 0 {
                format!("{}+ {}", " ".repeat((level - 1) * 2), r.name)
            } else {
                r.name.clone()
            };
            let host = match (append_port, r.port) {
                (true, Some(p)) if !r.host.is_empty() => format!("{}:{p}", r.host),
                _ => r.host.clone(),
            };
            columns
                .iter()
                .map(|(c, _)| match *c {
                    "Cluster" => Cell::Text(scope.to_string()),
                    "Member" => Cell::Text(name.clone()),
                    "Host" => Cell::Text(host.clone()),
                    "Role" => Cell::Text(r.role.to_string()),
                    "State" => Cell::Text(r.state.clone()),
                    "TL" => r.timeline.map_or(Cell::Text(String::new()), Cell::Int),
                    "Receive LSN" => recv_lsn.clone(),
                    "Receive Lag" => recv_lag.clone(),
                    "Replay LSN" => replay_lsn.clone(),
                    "Replay Lag" => replay_lag.clone(),
                    "Pending restart" => {
                        Cell::Text(if r.pending_restart { "*" } else { "" }.into())
                    }
                    "Pending restart reason" => Cell::Text(r.pending_restart_reason.join("\n")),
                    "Scheduled restart" => {
                        Cell::Text(r.scheduled_restart.clone().unwrap_or_default())
                    }
                    "Tags" => Cell::Tags(r.tags.clone()),
                    _ => Cell::Text(r.policy.clone().unwrap_or_default().replace(',', "\n")),
                })
                .collect()
        })
        .collect();
    match format {
        Format::Json | Format::Yaml => {
            let docs: Vec<Value> = cells
                .iter()
                .map(|row| {
                    let mut m = Map::new();
                    for ((c, _), cell) in columns.iter().zip(row) {
                        if !cell.is_empty() {
                            let v = match (*c, cell) {
                                // Machine formats keep the policy list as one string.
                                ("Policy", Cell::Text(s)) => Value::from(s.replace('\n', ",")),
                                _ => cell.json(),
                            };
                            m.insert(c.to_string(), v);
                        }
                    }
                    Value::Object(m)
                })
                .collect();
            machine(&Value::Array(docs), format)
        }
        // As patronictl: every column (the cluster's too), flow-style tags, no service info.
        Format::Tsv => {
            let header: Vec<String> = columns.iter().map(|(c, _)| c.to_string()).collect();
            let rows: Vec<Vec<String>> = cells
                .iter()
                .map(|row| {
                    columns
                        .iter()
                        .zip(row)
                        .map(|((c, _), cell)| match (*c, cell) {
                            ("Policy", Cell::Text(s)) => s.replace('\n', ","),
                            _ => cell.text(true),
                        })
                        .collect()
                })
                .collect();
            super::table::tsv(&header, &rows, "\t")
        }
        Format::Pretty => {
            // The cluster is in the title; both lag columns are called "Lag".
            let table = Table {
                title: Some(title(cluster, scope)),
                columns: columns[1..]
                    .iter()
                    .map(|(c, a)| {
                        let c = if c.ends_with(" Lag") { "Lag" } else { c };
                        (c.to_string(), *a)
                    })
                    .collect(),
                rows: cells
                    .iter()
                    .map(|row| row[1..].iter().map(|c| c.text(topology)).collect())
                    .collect(),
            };
            let mut out = table.render();
            for info in service_info(cluster) {
                out.push(' ');
                out.push_str(&info);
                out.push('\n');
            }
            out
        }
    }
}

/// `history`: TL, LSN, Reason, Timestamp, New Leader.
pub(crate) fn render_history(cluster: &Cluster, format: Format) -> String {
    let columns = ["TL", "LSN", "Reason", "Timestamp", "New Leader"];
    let rows: Vec<Vec<Value>> = cluster
        .history
        .iter()
        .map(|h| {
            vec![
                Value::from(h.timeline),
                Value::from(h.lsn),
                Value::from(h.reason.clone()),
                Value::from(h.timestamp.clone().unwrap_or_default()),
                Value::from(h.new_leader.clone().unwrap_or_default()),
            ]
        })
        .collect();
    match format {
        Format::Json | Format::Yaml => {
            let docs: Vec<Value> = rows
                .iter()
                .map(|r| {
                    Value::Object(
                        columns
                            .iter()
                            .zip(r)
                            .map(|(c, v)| (c.to_string(), v.clone()))
                            .collect(),
                    )
                })
                .collect();
            machine(&Value::Array(docs), format)
        }
        Format::Tsv => super::table::tsv(
            &columns.map(str::to_string),
            &rows
                .iter()
                .map(|r| r.iter().map(scalar_text).collect())
                .collect::<Vec<_>>(),
            "\t",
        ),
        Format::Pretty => Table {
            title: None,
            columns: columns
                .iter()
                .map(|c| {
                    let a = if matches!(*c, "TL" | "LSN") {
                        Align::Right
                    } else {
                        Align::Left
                    };
                    (c.to_string(), a)
                })
                .collect(),
            rows: rows
                .iter()
                .map(|r| r.iter().map(scalar_text).collect())
                .collect(),
        }
        .render(),
    }
}

/// JSON (one line, as patronictl prints it) or YAML.
pub(crate) fn machine(v: &Value, format: Format) -> String {
    match format {
        Format::Yaml => super::edit::to_yaml(v),
        _ => format!("{v}\n"),
    }
}

#[cfg(test)]
#[path = "view_tests.rs"]
mod tests;
