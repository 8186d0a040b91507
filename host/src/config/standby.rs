//! `standby_cluster`: the cluster replicates from a remote primary (another cluster's leader,
//! or a backup's WAL archive) instead of accepting writes. Patroni's keys: `host`, `port`,
//! `primary_slot_name`, `create_replica_methods`, `restore_command`,
//! `archive_cleanup_command`, `recovery_min_apply_delay`. A section with none of `host`,
//! `port` and `restore_command` set does not make a standby cluster (as in Patroni).

use serde::{Deserialize, Deserializer, Serialize};

/// The `standby_cluster` section of the cluster's configuration.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
pub struct StandbyCluster {
    /// The remote primary's host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) host: Option<String>,
    /// The remote primary's port (default 5432).
    #[serde(
        default,
        deserialize_with = "de_port",
        skip_serializing_if = "Option::is_none"
    )]
    pub(crate) port: Option<u16>,
    /// The replication slot the standby leader streams through on the remote (none: no slot).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) primary_slot_name: Option<String>,
    /// The replica methods (named as in `create_replica_methods`) the standby leader is
    /// created with; not set: the node's own `create_replica_methods`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) create_replica_methods: Option<Vec<String>>,
    /// WAL from an archive, on every member of the standby cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) restore_command: Option<String>,
    /// Cleans the archive, on every member of the standby cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) archive_cleanup_command: Option<String>,
    /// How far the standby leader stays behind the remote (PostgreSQL's value, e.g. `5min`).
    #[serde(
        default,
        deserialize_with = "de_text",
        skip_serializing_if = "Option::is_none"
    )]
    pub(crate) recovery_min_apply_delay: Option<String>,
}

impl StandbyCluster {
    /// Whether the section makes a standby cluster: it names a host, a port or a restore
    /// command.
    pub fn is_active(&self) -> bool {
        let set = |v: &Option<String>| v.as_deref().is_some_and(|s| !s.trim().is_empty());
        set(&self.host) || self.port.is_some() || set(&self.restore_command)
    }

    /// The remote primary's address, when the section names one (`port` alone: localhost,
    /// as libpq reads a missing host).
    pub fn remote(&self) -> Option<(String, u16)> {
        let host = self
            .host
            .as_deref()
            .map(str::trim)
            .filter(|h| !h.is_empty());
        if host.is_none() && self.port.is_none() {
            return None;
        }
        Some((
            host.unwrap_or("localhost").to_string(),
            self.port.unwrap_or(5432),
        ))
    }
}

/// A port given as a number or as text (`"5432"`, as environment variables give it).
fn de_port<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u16>, D::Error> {
    let v = Option::<serde_json::Value>::deserialize(d)?;
    match v {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::Number(n)) => n
            .as_u64()
            .and_then(|p| u16::try_from(p).ok())
            .filter(|p| *p > 0)
            .map(Some)
            .ok_or_else(|| {
                serde::de::Error::custom(format!("port {n} is not between 1 and 65535"))
            }),
        Some(serde_json::Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(serde_json::Value::String(s)) => s
            .trim()
            .parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .map(Some)
            .ok_or_else(|| {
                serde::de::Error::custom(format!("port {s:?} is not between 1 and 65535"))
            }),
        Some(other) => Err(serde::de::Error::custom(format!(
            "port must be a number, not {other}"
        ))),
    }
}

/// A PostgreSQL setting given as text or as a number (milliseconds).
fn de_text<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let v = Option::<serde_json::Value>::deserialize(d)?;
    Ok(match v {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(s)) => Some(s),
        Some(other) => Some(other.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<StandbyCluster, serde_json::Error> {
        serde_json::from_str(json)
    }

    #[test]
    fn a_host_port_or_restore_command_makes_a_standby_cluster() {
        for (json, active) in [
            (r#"{}"#, false),
            (r#"{"primary_slot_name": "s"}"#, false),
            (r#"{"host": ""}"#, false),
            (r#"{"host": "10.0.0.1"}"#, true),
            (r#"{"port": 5433}"#, true),
            (r#"{"restore_command": "cp /a/%f %p"}"#, true),
        ] {
            assert_eq!(parse(json).expect(json).is_active(), active, "{json}");
        }
    }

    #[test]
    fn the_remote_defaults_to_port_5432_and_ports_may_be_text() {
        let s = parse(r#"{"host": "db1"}"#).expect("host");
        assert_eq!(s.remote(), Some(("db1".into(), 5432)));
        let s = parse(r#"{"host": "db1", "port": "6543"}"#).expect("text port");
        assert_eq!(s.remote(), Some(("db1".into(), 6543)));
        let s = parse(r#"{"restore_command": "x"}"#).expect("archive only");
        assert_eq!(s.remote(), None);
        let e = parse(r#"{"host": "db1", "port": 70000}"#).expect_err("port too large");
        assert!(e.to_string().contains("between 1 and 65535"), "{e}");
    }

    #[test]
    fn recovery_min_apply_delay_may_be_a_number() {
        let s = parse(r#"{"host": "h", "recovery_min_apply_delay": 3000}"#).expect("number");
        assert_eq!(s.recovery_min_apply_delay.as_deref(), Some("3000"));
    }
}
