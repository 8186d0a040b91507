//! Builders for unit tests: a healthy running replica, and a view around members.
//!
//! ```
//! use regent_policy_sdk::testing::{member, view};
//! use regent_policy_sdk::types::{Member, Role};
//! let v = view(vec![member("pg-1"), Member { role: Role::Primary, ..member("pg-0") }]);
//! assert_eq!(v.members[0].name, "pg-0"); // sorted by name, as Regent sends them
//! ```

use crate::patroni::Refused;
use crate::types::{ClusterView, ElectionReason, Health, HealthFacts, Member, PgState, Role, Tag};

/// A reachable, healthy, running replica on timeline 2 at WAL position 1000, failover
/// priority 1, no zone, no tags. Override fields with `Member { zone: ..., ..member("x") }`,
/// add tags with [`tagged`].
pub fn member(name: &str) -> Member {
    Member {
        name: name.to_string(),
        role: Role::Replica,
        state: PgState::Running,
        timeline: Some(2),
        wal_position: Some(1000),
        received_lsn: Some(1000),
        replayed_lsn: Some(1000),
        lag: None,
        tags: Vec::new(),
        health: Health::Healthy,
        reachable: true,
        zone: None,
        synchronous: false,
        nofailover: false,
        failover_priority: 1,
    }
}

/// `m` with the tags `(key, value)` added: `tagged(member("pg-1"), &[("rack", "r7")])`.
pub fn tagged(mut m: Member, tags: &[(&str, &str)]) -> Member {
    m.tags.extend(tags.iter().map(|(key, value)| Tag {
        key: key.to_string(),
        value: value.to_string(),
    }));
    m
}

/// The refused members and their reasons as text, to compare in a test.
pub fn refused_text(refused: &Refused<'_>) -> Vec<(String, String)> {
    refused
        .iter()
        .map(|(m, why)| (m.name.clone(), why.to_string()))
        .collect()
}

/// A view of `members` (sorted by name, as Regent sends them) after the leader was lost: cluster
/// timeline 2, leader optime unknown, `maximum_lag_on_failover` 1 MiB, no synchronous mode.
pub fn view(mut members: Vec<Member>) -> ClusterView {
    members.sort_by(|a, b| a.name.cmp(&b.name));
    ClusterView {
        members,
        former_leader: None,
        former_leader_zone: None,
        reason: ElectionReason::LeaderLost,
        leader_optime: None,
        maximum_lag_on_failover: 1 << 20,
        cluster_timeline: 2,
        synchronous_mode: false,
        now_ms: 0,
    }
}

/// The health facts of a running replica `name`: timeline 2, WAL position 1000, one second in
/// state, no probes. Override fields with `HealthFacts { role: ..., ..facts("x") }`.
pub fn facts(name: &str) -> HealthFacts {
    HealthFacts {
        name: name.to_string(),
        role: Role::Replica,
        state: PgState::Running,
        timeline: Some(2),
        wal_position: Some(1000),
        received_lsn: Some(1000),
        replayed_lsn: Some(1000),
        replication_connections: 0,
        lag: None,
        seconds_in_state: 1,
        is_leader: false,
        probes: Vec::new(),
    }
}

/// A manifest (`policies/<name>.toml`), read for a unit test.
#[cfg(feature = "manifest")]
#[derive(Debug)]
pub struct Manifest {
    pub name: String,
    pub component: String,
    pub hooks: Vec<String>,
    pub capabilities: Vec<String>,
    /// The `[settings]` table as the JSON `configure` receives.
    pub settings_json: String,
    /// The names of the `[[probes]]`.
    pub probes: Vec<String>,
}

#[cfg(feature = "manifest")]
impl Manifest {
    /// Parse a manifest; panics with the reason when it is malformed.
    pub fn parse(text: &str) -> Manifest {
        let table: toml::Table = text.parse().unwrap_or_else(|e| panic!("manifest: {e}"));
        for key in table.keys() {
            let known = [
                "name",
                "component",
                "hooks",
                "capabilities",
                "settings",
                "probes",
            ];
            assert!(
                known.contains(&key.as_str()),
                "manifest: unknown key `{key}`"
            );
        }
        let string = |key: &str| match table.get(key) {
            Some(toml::Value::String(s)) => s.clone(),
            other => panic!("manifest: `{key}` must be a string, not {other:?}"),
        };
        let strings = |key: &str| match table.get(key) {
            None => Vec::new(),
            Some(toml::Value::Array(a)) => a
                .iter()
                .map(|v| {
                    v.as_str()
                        .unwrap_or_else(|| panic!("manifest: `{key}` holds {v:?}"))
                })
                .map(String::from)
                .collect(),
            Some(other) => panic!("manifest: `{key}` must be an array, not {other:?}"),
        };
        let settings = match table.get("settings") {
            None => toml::Value::Table(toml::Table::new()),
            Some(v @ toml::Value::Table(_)) => v.clone(),
            Some(other) => panic!("manifest: `settings` must be a table, not {other:?}"),
        };
        let probes = match table.get("probes") {
            None => Vec::new(),
            Some(toml::Value::Array(a)) => a
                .iter()
                .map(|p| {
                    let p = p.as_table().expect("manifest: each [[probes]] is a table");
                    for key in ["name", "sql", "timeout_ms"] {
                        assert!(p.contains_key(key), "manifest: a probe lacks `{key}`");
                    }
                    p["name"]
                        .as_str()
                        .expect("manifest: probe name is a string")
                        .to_string()
                })
                .collect(),
            Some(other) => panic!("manifest: `probes` must be [[probes]] tables, not {other:?}"),
        };
        Manifest {
            name: string("name"),
            component: string("component"),
            hooks: strings("hooks"),
            capabilities: strings("capabilities"),
            settings_json: to_json(&settings),
            probes,
        }
    }

    /// Check the manifest against the plugin's `describe()`: same name, `<name>.wasm`, hooks
    /// it implements, probes only with `sql-probe`.
    pub fn check(&self, info: &crate::types::PolicyInfo) {
        assert_eq!(self.name, info.name, "manifest name vs describe().name");
        assert_eq!(self.component, format!("{}.wasm", info.name));
        let implemented: Vec<&str> = info.hooks.iter().map(|h| crate::names::hook(*h)).collect();
        assert!(!self.hooks.is_empty(), "manifest activates no hook");
        for hook in &self.hooks {
            assert!(
                implemented.contains(&hook.as_str()),
                "manifest hook {hook} not in describe()"
            );
        }
        for cap in &self.capabilities {
            assert_eq!(cap, "sql-probe", "unknown capability");
        }
        if !self.probes.is_empty() {
            assert!(
                self.capabilities.iter().any(|c| c == "sql-probe"),
                "probes need sql-probe"
            );
        }
    }
}

/// TOML → JSON text, as Regent hands `[settings]` to `configure`.
#[cfg(feature = "manifest")]
fn to_json(v: &toml::Value) -> String {
    use toml::Value::{Array, Boolean, Datetime, Float, Integer, Table};
    let quote = |s: &str| {
        let mut out = String::from("\"");
        for c in s.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
                c => out.push(c),
            }
        }
        out.push('"');
        out
    };
    match v {
        toml::Value::String(s) => quote(s),
        Integer(i) => i.to_string(),
        Float(f) => f.to_string(),
        Boolean(b) => b.to_string(),
        Datetime(d) => quote(&d.to_string()),
        Array(a) => format!("[{}]", a.iter().map(to_json).collect::<Vec<_>>().join(",")),
        Table(t) => format!(
            "{{{}}}",
            t.iter()
                .map(|(k, v)| format!("{}:{}", quote(k), to_json(v)))
                .collect::<Vec<_>>()
                .join(",")
        ),
    }
}
