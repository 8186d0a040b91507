//! Patroni's replication slot settings in the dynamic configuration: permanent slots
//! (`slots`, physical or logical), slots Regent must leave alone (`ignore_slots`), and how long
//! the slot of a member that left is kept (`member_slots_ttl`). Pure: values in, checked
//! settings out.

use super::ConfigError;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One permanent slot: `{type: physical}` (or nothing), or `{type: logical, database, plugin}`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
pub(crate) struct SlotDef {
    /// `physical` or `logical`; not set: logical when `database` and `plugin` are, else
    /// physical.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub(crate) kind: Option<String>,
    /// A logical slot's database.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) database: Option<String>,
    /// A logical slot's output plugin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) plugin: Option<String>,
}

impl SlotDef {
    /// A logical slot: `(database, plugin)`.
    pub(crate) fn logical(&self) -> Option<(&str, &str)> {
        match (self.kind.as_deref(), &self.database, &self.plugin) {
            (Some("physical"), _, _) => None,
            (_, Some(d), Some(p)) => Some((d, p)),
            _ => None,
        }
    }
}

/// An `ignore_slots` entry: a slot matching every field set is never created, advanced or
/// dropped by Regent.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
pub(crate) struct IgnoreSlot {
    /// The slot's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) name: Option<String>,
    /// `physical` or `logical`.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub(crate) kind: Option<String>,
    /// A logical slot's database.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) database: Option<String>,
    /// A logical slot's plugin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) plugin: Option<String>,
}

impl IgnoreSlot {
    /// Whether a physical slot named `name` matches.
    pub(crate) fn matches_physical(&self, name: &str) -> bool {
        self.name.as_deref().is_none_or(|n| n == name)
            && self.kind.as_deref().is_none_or(|k| k == "physical")
            && self.database.is_none()
            && self.plugin.is_none()
    }
}

/// `member_slots_ttl` in seconds: Patroni's `30min`, `1h`, `90s` or a number of seconds.
pub(crate) fn parse_ttl(v: &serde_yaml::Value) -> Option<u64> {
    match v {
        serde_yaml::Value::Number(n) => n.as_u64(),
        serde_yaml::Value::String(s) => {
            let s = s.trim();
            let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
            let (n, unit) = s.split_at(split);
            let n: u64 = n.parse().ok()?;
            let mult = match unit.trim() {
                "" | "s" => 1,
                "ms" => return Some(n / 1000),
                "min" => 60,
                "h" => 3600,
                "d" => 86_400,
                _ => return None,
            };
            n.checked_mul(mult)
        }
        _ => None,
    }
}

pub(super) fn de_member_slots_ttl<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let v = serde_yaml::Value::deserialize(d)?;
    parse_ttl(&v).ok_or_else(|| {
        serde::de::Error::custom(
            "expected a duration such as 30min, 1h, 90s or a number of seconds",
        )
    })
}

pub(super) fn d_member_slots_ttl() -> u64 {
    1800
}

pub(super) fn is_default_ttl(v: &u64) -> bool {
    *v == 1800
}

/// A slot name PostgreSQL accepts: lower-case letters, digits and `_`, at most 63 bytes.
fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 63
        && n.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// Check `slots`: names PostgreSQL accepts, types known, a logical slot's database and plugin.
pub(super) fn check_slots(
    prefix: &str,
    slots: &BTreeMap<String, Option<SlotDef>>,
) -> Result<(), ConfigError> {
    for (name, def) in slots {
        let key = format!("{prefix}slots.{name}");
        if !valid_name(name) {
            return Err(ConfigError::Invalid {
                key,
                value: format!("{name:?}"),
                problem:
                    "not a replication slot name (lower-case letters, digits and _, at most 63)"
                        .into(),
                fix: "rename the slot, e.g. cdc_app".into(),
            });
        }
        let def = def.clone().unwrap_or_default();
        match def.kind.as_deref() {
            None | Some("physical") | Some("logical") => {}
            Some(other) => {
                return Err(ConfigError::Invalid {
                    key: format!("{key}.type"),
                    value: other.into(),
                    problem: "unknown slot type".into(),
                    fix: "write physical or logical".into(),
                });
            }
        }
        if def.kind.as_deref() == Some("logical") && def.logical().is_none() {
            return Err(ConfigError::Invalid {
                key,
                value: "type: logical".into(),
                problem: "a logical slot needs a database and a plugin".into(),
                fix: "add e.g. database: app and plugin: pgoutput".into(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_slots_ttl_reads_patronis_units() {
        let y = |s: &str| serde_yaml::from_str::<serde_yaml::Value>(s).expect("yaml");
        assert_eq!(parse_ttl(&y("30min")), Some(1800));
        assert_eq!(parse_ttl(&y("1h")), Some(3600));
        assert_eq!(parse_ttl(&y("90")), Some(90));
        assert_eq!(parse_ttl(&y("0")), Some(0));
        assert_eq!(parse_ttl(&y("10 parsecs")), None);
    }

    #[test]
    fn slots_are_checked_and_logical_ones_need_a_database_and_plugin() {
        let mut s = BTreeMap::new();
        s.insert("keep".to_string(), None);
        s.insert(
            "cdc".to_string(),
            Some(SlotDef {
                kind: Some("logical".into()),
                database: Some("app".into()),
                plugin: Some("pgoutput".into()),
            }),
        );
        assert!(check_slots("", &s).is_ok());
        assert_eq!(
            s["cdc"].as_ref().and_then(|d| d.logical()),
            Some(("app", "pgoutput"))
        );
        s.insert(
            "bad".to_string(),
            Some(SlotDef {
                kind: Some("logical".into()),
                ..SlotDef::default()
            }),
        );
        let e = check_slots("", &s).expect_err("no plugin");
        assert!(e.to_string().contains("slots.bad"), "{e}");
        let mut s = BTreeMap::new();
        s.insert("Bad-Name".to_string(), None);
        assert!(check_slots("", &s).is_err());
        let i = IgnoreSlot {
            name: Some("manual".into()),
            ..IgnoreSlot::default()
        };
        assert!(i.matches_physical("manual") && !i.matches_physical("other"));
    }
}
