//! The distributed configuration store: Patroni's key layout and value encodings, and the
//! cluster view built from them. Pure: the etcd adapter that reads and writes these keys lives
//! in the host crate (`regent::dcs::etcd`).
//!
//! Keys live under `/<namespace>/<scope>/`: `leader` (plain member name, on the writer's lease),
//! `members/<name>` (member JSON, same lease), `initialize` (system identifier), `config`
//! (dynamic config JSON), `history`, `status`, `failover`, `sync`.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// A JSON scalar as text: a string as is, anything else as JSON (`true`, `3`). Tags in member
/// keys are JSON; policies see them as text.
pub fn json_scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Key names relative to the cluster prefix.
pub mod keys {
    /// The leader's member name, on the leader's lease: whoever holds it is the primary.
    pub const LEADER: &str = "leader";
    /// The prefix of the member keys, `members/<name>`: one JSON document per node, on its lease.
    pub const MEMBERS: &str = "members/";
    /// The system identifier of the cluster's data; empty while the first node bootstraps.
    pub const INITIALIZE: &str = "initialize";
    /// The dynamic configuration (JSON) shared by every node: `ttl`, `loop_wait`, `pause`, ...
    pub const CONFIG: &str = "config";
    /// The timeline history: one line per promotion (see [`super::HistoryLine`]).
    pub const HISTORY: &str = "history";
    /// The leader's last WAL position and its slots (see [`super::Status`]).
    pub const STATUS: &str = "status";
    /// An operator's switchover or failover request (see [`super::Failover`]).
    pub const FAILOVER: &str = "failover";
    /// The standbys synchronous mode may promote (see [`super::SyncState`]).
    pub const SYNC: &str = "sync";
    /// Failsafe mode's topology, written by the leader: `{"<name>": "<api_url>", ...}`.
    pub const FAILSAFE: &str = "failsafe";
}

/// The member document, as Patroni writes it into `members/<name>`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MemberData {
    /// Where to reach the member's PostgreSQL: `postgres://host:port/postgres`.
    #[serde(default)]
    pub conn_url: Option<String>,
    /// Where to reach the member's REST API: `http://host:port/patroni`.
    #[serde(default)]
    pub api_url: Option<String>,
    /// What the member's PostgreSQL is doing: `running`, `starting`, `stopped`, `crashed`,
    /// `creating replica`, ...
    #[serde(default)]
    pub state: Option<String>,
    /// The member's role: `primary` (`master` from older Patroni), `replica`, `standby_leader`,
    /// `demoted`, `uninitialized`, ...
    #[serde(default)]
    pub role: Option<String>,
    /// The Patroni version the writer speaks for (Regent writes the one it is compatible with).
    #[serde(default)]
    pub version: Option<String>,
    /// The WAL position the member reports: a primary's flush LSN, a replica's larger of the
    /// received and replayed LSNs. Present while PostgreSQL runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub xlog_location: Option<u64>,
    /// A replica's last WAL position received from its upstream (`pg_last_wal_receive_lsn()`);
    /// absent on a primary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receive_lsn: Option<u64>,
    /// A replica's last replayed WAL position (`pg_last_wal_replay_lsn()`); absent on a primary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay_lsn: Option<u64>,
    /// How a replica gets its WAL: `streaming` from a WAL receiver, or `in archive recovery`
    /// through `restore_command`; absent on a primary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replication_state: Option<String>,
    /// The timeline PostgreSQL is on (a replica reports the one it receives).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeline: Option<u32>,
    /// The member's tags from its configuration: `nofailover`, `failover_priority`, `nosync`,
    /// ... and the operator's own (such as `zone`).
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub tags: Map<String, Value>,
    /// Regent extension: the active policy (`name@digest`), so mixed policy versions are visible.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    /// Everything else a Patroni node may have written; kept so nothing is lost on re-encoding.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A member as seen in the DCS.
#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    /// The member's name: the last part of its key.
    pub name: String,
    /// The member document.
    pub data: MemberData,
    /// The lease the key is attached to: the key goes when the member stops renewing it.
    pub lease: i64,
    /// The store revision of the key's last write.
    pub mod_revision: i64,
}

impl Member {
    /// The member may never be promoted: tagged `nofailover`, or a `failover_priority` of 0 or
    /// less.
    pub fn nofailover(&self) -> bool {
        tag_bool(&self.data.tags, "nofailover") || self.failover_priority() <= 0
    }

    /// The `failover_priority` tag (a number, or a number as text); 1 when absent or not a
    /// number. Among equally advanced candidates, the higher wins.
    pub fn failover_priority(&self) -> i64 {
        self.data
            .tags
            .get("failover_priority")
            .and_then(|v| {
                v.as_i64()
                    .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
            })
            .unwrap_or(1)
    }
    /// `max(receive, replay)` on replicas, the flush LSN on a primary (Patroni's `xlog_location`).
    pub fn wal_position(&self) -> Option<u64> {
        self.data
            .xlog_location
            .or(self.data.receive_lsn.max(self.data.replay_lsn))
    }
}

/// Whether tag `key` is set: `true`, the text `true`, `on` or `yes` (in any case), or a whole
/// number other than 0.
pub fn tag_bool(tags: &Map<String, Value>, key: &str) -> bool {
    match tags.get(key) {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => matches!(s.to_ascii_lowercase().as_str(), "true" | "on" | "yes"),
        Some(Value::Number(n)) => n.as_i64().unwrap_or(0) != 0,
        _ => false,
    }
}

/// The `leader` key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leader {
    /// The leader's member name.
    pub name: String,
    /// The lease the key is attached to: the leader's own, kept alive while it leads.
    pub lease: i64,
    /// The store revision of the key's last write.
    pub mod_revision: i64,
}

/// The `status` key: `{"optime": int, "slots": {...}, "retain_slots": [...]}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// The leader's last reported WAL position: a candidate's lag is measured from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optime: Option<u64>,
    /// The permanent replication slots on the primary and the LSN each has reached, by slot name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub slots: BTreeMap<String, u64>,
    /// The physical slots kept for members of the cluster, so a new leader keeps them too.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retain_slots: Vec<String>,
}

/// One line of the `history` key: `[timeline, lsn, reason, timestamp, new_leader]`.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryLine {
    /// The timeline that ended; the next one is this plus one.
    pub timeline: u32,
    /// Where it ended: the LSN at which the next timeline branched off.
    pub lsn: u64,
    /// Why, as PostgreSQL wrote it in the timeline history file.
    pub reason: String,
    /// When the switch happened; lines from older Patroni have none.
    pub timestamp: Option<String>,
    /// The member promoted at the switch, when recorded.
    pub new_leader: Option<String>,
}

impl HistoryLine {
    /// The line as Patroni writes it: `[timeline, lsn, reason]`, then the timestamp and the new
    /// leader when known (a new leader only after a timestamp).
    pub fn to_json(&self) -> Value {
        let mut v = vec![
            Value::from(self.timeline),
            Value::from(self.lsn),
            Value::from(self.reason.clone()),
        ];
        if let Some(ts) = &self.timestamp {
            v.push(Value::from(ts.clone()));
            if let Some(l) = &self.new_leader {
                v.push(Value::from(l.clone()));
            }
        }
        Value::Array(v)
    }
}

/// The lines of a `history` value. Lines that are not arrays starting with a timeline are
/// skipped; a value that is not a JSON array gives no lines.
pub fn parse_history(raw: &str) -> Vec<HistoryLine> {
    let Ok(Value::Array(lines)) = serde_json::from_str::<Value>(raw) else {
        return Vec::new();
    };
    lines
        .iter()
        .filter_map(|l| {
            let a = l.as_array()?;
            Some(HistoryLine {
                timeline: u32::try_from(a.first()?.as_u64()?).ok()?,
                lsn: a.get(1).and_then(Value::as_u64).unwrap_or(0),
                reason: a
                    .get(2)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                timestamp: a.get(3).and_then(Value::as_str).map(str::to_string),
                new_leader: a.get(4).and_then(Value::as_str).map(str::to_string),
            })
        })
        .collect()
}

/// The `failover` key: a requested switchover/failover.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Failover {
    /// The leader a switchover moves away from; a request without one is a failover.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader: Option<String>,
    /// The member to promote (Patroni's candidate); without one, the best candidate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member: Option<String>,
    /// When a switchover is to run, an ISO 8601 time with a zone (see [`parse_iso8601_ms`]);
    /// without one, now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduled_at: Option<String>,
}

impl Failover {
    /// Names neither a leader nor a member: nothing is requested.
    pub fn is_empty(&self) -> bool {
        self.leader.is_none() && self.member.is_none()
    }
}

/// The `sync` key.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SyncState {
    /// The leader that wrote the key: the standbys listed are synchronous to it.
    #[serde(default)]
    pub leader: Option<String>,
    /// For `synchronous_mode: quorum`, how many of the listed nodes a standby racing for the
    /// leader key must see; Regent writes 0.
    #[serde(default)]
    pub quorum: Option<u32>,
    /// The synchronous standbys, comma-separated (see [`SyncState::members`]).
    #[serde(default)]
    pub sync_standby: Option<String>,
}

impl SyncState {
    /// The names in `sync_standby`, trimmed, empty ones left out.
    pub fn members(&self) -> Vec<String> {
        self.sync_standby
            .as_deref()
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect()
    }
}

/// Milliseconds since the Unix epoch of an ISO 8601 time with a time zone, as Patroni writes
/// `scheduled_at` (`2026-12-01T18:00:00+00:00`); `None` for anything else, a time without a
/// zone included (see [`crate::time::parse_timestamp`]).
pub fn parse_iso8601_ms(s: &str) -> Option<u64> {
    crate::time::parse_timestamp(s).ok()?.unix_ms()
}

/// Everything the DCS says about the cluster, read in one range request.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Cluster {
    /// `None`: no `initialize` key. `Some("")`: a bootstrap is in progress.
    pub initialize: Option<String>,
    /// The `config` key, when it is JSON, with its mod revision.
    pub config: Option<(Value, i64)>,
    /// The `leader` key, when it names a member.
    pub leader: Option<Leader>,
    /// The member keys, sorted by name.
    pub members: Vec<Member>,
    /// The `status` key; empty when missing or unreadable.
    pub status: Status,
    /// The `history` key's lines, oldest first.
    pub history: Vec<HistoryLine>,
    /// The `failover` key with its mod revision; a value that does not parse reads as empty.
    pub failover: Option<(Failover, i64)>,
    /// The `sync` key, when it parses, with its mod revision.
    pub sync: Option<(SyncState, i64)>,
    /// The `failsafe` key (member name → REST API URL), when it is a JSON object of strings.
    pub failsafe: Option<BTreeMap<String, String>>,
    /// The etcd revision this view was read at.
    pub revision: i64,
}

impl Cluster {
    /// Build the view from `(key relative to the prefix, value, lease, mod_revision)` tuples.
    pub fn from_kvs<'a>(kvs: impl IntoIterator<Item = RawKv<'a>>, revision: i64) -> Cluster {
        let mut c = Cluster {
            revision,
            ..Cluster::default()
        };
        for kv in kvs {
            let value = String::from_utf8_lossy(kv.value);
            match kv.key {
                keys::LEADER => {
                    let name = value.trim().to_string();
                    if !name.is_empty() {
                        c.leader = Some(Leader {
                            name,
                            lease: kv.lease,
                            mod_revision: kv.mod_revision,
                        });
                    }
                }
                keys::INITIALIZE => c.initialize = Some(value.trim().to_string()),
                keys::CONFIG => {
                    if let Ok(v) = serde_json::from_str::<Value>(&value) {
                        c.config = Some((v, kv.mod_revision));
                    }
                }
                keys::HISTORY => c.history = parse_history(&value),
                keys::STATUS => {
                    c.status = serde_json::from_str(&value).unwrap_or_default();
                }
                keys::FAILOVER => {
                    let f: Failover = serde_json::from_str(&value).unwrap_or_default();
                    c.failover = Some((f, kv.mod_revision));
                }
                keys::SYNC => {
                    if let Ok(s) = serde_json::from_str::<SyncState>(&value) {
                        c.sync = Some((s, kv.mod_revision));
                    }
                }
                keys::FAILSAFE => c.failsafe = serde_json::from_str(&value).ok(),
                k => {
                    if let Some(name) = k.strip_prefix(keys::MEMBERS)
                        && !name.is_empty()
                        && !name.contains('/')
                    {
                        let data = serde_json::from_str(&value).unwrap_or_default();
                        c.members.push(Member {
                            name: name.to_string(),
                            data,
                            lease: kv.lease,
                            mod_revision: kv.mod_revision,
                        });
                    }
                }
            }
        }
        c.members.sort_by(|a, b| a.name.cmp(&b.name));
        c
    }

    /// The member key of `name`.
    pub fn member(&self, name: &str) -> Option<&Member> {
        self.members.iter().find(|m| m.name == name)
    }

    /// The name in the leader key, if there is one.
    pub fn leader_name(&self) -> Option<&str> {
        self.leader.as_ref().map(|l| l.name.as_str())
    }

    /// Patroni's `Cluster.timeline`: last history line's timeline + 1, 1 for an empty history.
    pub fn timeline(&self) -> u32 {
        self.history.last().map(|l| l.timeline + 1).unwrap_or(1)
    }
}

/// A raw key/value as read from the store, key already relative to the cluster prefix.
#[derive(Debug, Clone, Copy)]
pub struct RawKv<'a> {
    /// The key, relative to the cluster prefix (`members/pg1`).
    pub key: &'a str,
    /// The value as stored.
    pub value: &'a [u8],
    /// The lease the key is attached to; 0 for none.
    pub lease: i64,
    /// The store revision of the key's last write.
    pub mod_revision: i64,
}

/// Patroni's `slot_name_from_member_name`: lowercase, `-` and `.` to `_`, other non-alphanumerics
/// as `u%04x`, at most 63 bytes.
pub fn slot_name(member: &str) -> String {
    let mut out = String::new();
    for c in member.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' {
            out.push(c);
        } else if c == '-' || c == '.' {
            out.push('_');
        } else {
            out.push_str(&format!("u{:04x}", c as u32));
        }
    }
    out.truncate(63);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv<'a>(key: &'a str, value: &'a str, lease: i64) -> RawKv<'a> {
        RawKv {
            key,
            value: value.as_bytes(),
            lease,
            mod_revision: 7,
        }
    }

    #[test]
    fn cluster_from_patroni_keys() {
        let c = Cluster::from_kvs(
            [
                kv("leader", "pg1", 42),
                kv("initialize", "7268616322854375442", 0),
                kv(
                    "members/pg1",
                    r#"{"conn_url":"postgres://127.0.0.1:5432/postgres","api_url":"http://127.0.0.1:8008/patroni","state":"running","role":"primary","version":"4.1.4","xlog_location":67419744,"timeline":5,"tags":{"nofailover":true},"pending_restart":true}"#,
                    42,
                ),
                kv(
                    "members/pg2",
                    r#"{"role":"replica","receive_lsn":100,"replay_lsn":90,"tags":{"failover_priority":3}}"#,
                    43,
                ),
                kv(
                    "history",
                    r#"[[1,25165984,"no recovery target specified","2024-01-01T00:00:00+00:00","pg1"],[2,33554592,"x"]]"#,
                    0,
                ),
                kv(
                    "status",
                    r#"{"optime":67419744,"slots":{"pg2":67419744}}"#,
                    0,
                ),
                kv("failover", "{}", 0),
            ],
            99,
        );
        assert_eq!(c.leader_name(), Some("pg1"));
        assert_eq!(c.leader.as_ref().map(|l| l.lease), Some(42));
        assert_eq!(c.initialize.as_deref(), Some("7268616322854375442"));
        assert_eq!(c.members.len(), 2);
        let pg1 = c.member("pg1").expect("pg1");
        assert!(pg1.nofailover());
        assert_eq!(pg1.wal_position(), Some(67419744));
        assert_eq!(
            pg1.data.extra.get("pending_restart"),
            Some(&Value::Bool(true))
        );
        let pg2 = c.member("pg2").expect("pg2");
        assert_eq!(pg2.failover_priority(), 3);
        assert_eq!(pg2.wal_position(), Some(100));
        assert_eq!(c.history.len(), 2);
        assert_eq!(c.timeline(), 3);
        assert_eq!(c.status.optime, Some(67419744));
        assert!(c.failover.as_ref().is_some_and(|(f, _)| f.is_empty()));
    }

    #[test]
    fn history_line_round_trip() {
        let l = HistoryLine {
            timeline: 3,
            lsn: 1234,
            reason: "no recovery target specified".into(),
            timestamp: Some("2026-01-01T00:00:00+00:00".into()),
            new_leader: Some("pg2".into()),
        };
        let text = serde_json::to_string(&Value::Array(vec![l.to_json()])).expect("json");
        assert_eq!(parse_history(&text), vec![l]);
    }

    #[test]
    fn iso8601_times_as_patroni_writes_them() {
        assert_eq!(parse_iso8601_ms("1970-01-01T00:00:00+00:00"), Some(0));
        assert_eq!(parse_iso8601_ms("1970-01-01T00:00:01.5Z"), Some(1500));
        assert_eq!(
            parse_iso8601_ms("2026-12-01T18:30:00+01:00"),
            Some(1_796_146_200_000)
        );
        assert_eq!(
            parse_iso8601_ms("2026-12-01 17:30:00.123456+00:00"),
            Some(1_796_146_200_123)
        );
        assert_eq!(
            parse_iso8601_ms("2026-12-01T12:30:00-0500"),
            Some(1_796_146_200_000)
        );
        for bad in [
            "2026-12-01T17:30:00",
            "2026-13-01T17:30:00Z",
            "tomorrow",
            "",
        ] {
            assert_eq!(parse_iso8601_ms(bad), None, "{bad}");
        }
    }

    #[test]
    fn slot_names_like_patroni() {
        assert_eq!(slot_name("Node-1.a"), "node_1_a");
        assert_eq!(slot_name("a b"), "au0020b");
        assert_eq!(slot_name(&"x".repeat(80)).len(), 63);
    }
}
