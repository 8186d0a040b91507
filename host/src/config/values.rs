//! Patroni's value conventions, read the way Patroni reads them: booleans also written as
//! `yes`/`no`/`on`/`off` strings, etcd host lists as a list or one comma-separated string, initdb
//! options as flags or one-key mappings, `host:port` strings, and the DCS key prefix built from
//! namespace and scope. Pure: no filesystem access.

use serde::de::{self, Visitor};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// A boolean as Patroni reads it: YAML booleans plus the YAML 1.1 / `parse_bool` strings
/// `yes`/`no`/`on`/`off`/`true`/`false` (any case), which YAML 1.2 parsers leave as strings.
pub(super) fn patroni_bool<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    d.deserialize_any(BoolVisitor)
}

pub(super) fn patroni_bool_opt<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<bool>, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = Option<bool>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            BoolVisitor.expecting(f)
        }
        fn visit_none<E: de::Error>(self) -> Result<Option<bool>, E> {
            Ok(None)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Option<bool>, E> {
            Ok(None)
        }
        fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Option<bool>, D::Error> {
            patroni_bool(d).map(Some)
        }
    }
    d.deserialize_option(V)
}

struct BoolVisitor;

impl<'de> Visitor<'de> for BoolVisitor {
    type Value = bool;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a boolean (true/false, also yes/no, on/off)")
    }
    fn visit_bool<E: de::Error>(self, b: bool) -> Result<bool, E> {
        Ok(b)
    }
    fn visit_str<E: de::Error>(self, s: &str) -> Result<bool, E> {
        match s.trim().to_ascii_lowercase().as_str() {
            "true" | "yes" | "on" => Ok(true),
            "false" | "no" | "off" => Ok(false),
            _ => Err(E::invalid_value(de::Unexpected::Str(s), &self)),
        }
    }
}

/// A whole number as Patroni reads tags such as `failover_priority`: a YAML integer or a
/// string holding one (`"1"`, as tags from the environment or templating arrive). A string
/// that is not a whole number is refused: a typo in a priority decides who may lead.
pub(super) fn patroni_int_opt<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<i64>, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = Option<i64>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a whole number (also as a string, e.g. \"1\")")
        }
        fn visit_none<E: de::Error>(self) -> Result<Option<i64>, E> {
            Ok(None)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Option<i64>, E> {
            Ok(None)
        }
        fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Option<i64>, D::Error> {
            d.deserialize_any(V)
        }
        fn visit_i64<E: de::Error>(self, n: i64) -> Result<Option<i64>, E> {
            Ok(Some(n))
        }
        fn visit_u64<E: de::Error>(self, n: u64) -> Result<Option<i64>, E> {
            i64::try_from(n)
                .map(Some)
                .map_err(|_| E::invalid_value(de::Unexpected::Unsigned(n), &self))
        }
        fn visit_str<E: de::Error>(self, s: &str) -> Result<Option<i64>, E> {
            s.trim()
                .parse()
                .map(Some)
                .map_err(|_| E::invalid_value(de::Unexpected::Str(s), &self))
        }
    }
    d.deserialize_option(V)
}

/// Patroni's `parse_bool` on text: `on/off/yes/no/true/false/1/0`, any case; `None` for
/// anything else.
pub(crate) fn parse_bool(raw: &str) -> Option<bool> {
    match raw.trim().to_ascii_lowercase().as_str() {
        "on" | "true" | "yes" | "1" => Some(true),
        "off" | "false" | "no" | "0" => Some(false),
        _ => None,
    }
}

/// An etcd section's `hosts`: a YAML list or, as Patroni allows, one comma-separated string.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(untagged)]
pub(crate) enum HostList {
    /// `[10.0.0.1:2379, 10.0.0.2:2379]`
    List(Vec<String>),
    /// `10.0.0.1:2379,10.0.0.2:2379`
    Comma(String),
}

impl<'de> Deserialize<'de> for HostList {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = HostList;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a list of host:port strings or one comma-separated host:port string")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<HostList, E> {
                Ok(HostList::Comma(s.to_string()))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<HostList, A::Error> {
                let mut out = Vec::new();
                while let Some(h) = seq.next_element::<String>()? {
                    out.push(h);
                }
                Ok(HostList::List(out))
            }
        }
        d.deserialize_any(V)
    }
}

/// A list of strings, or one string for a list of one (`create_replica_methods: basebackup`).
pub(crate) fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    })
}

/// One `bootstrap.initdb` entry, as Patroni writes them.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(untagged)]
pub(crate) enum InitdbOption {
    /// A flag: `data-checksums` becomes `--data-checksums`.
    Flag(String),
    /// A one-key mapping: `encoding: UTF8` becomes `--encoding=UTF8`.
    Value(BTreeMap<String, serde_yaml::Value>),
}

impl<'de> Deserialize<'de> for InitdbOption {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = InitdbOption;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an initdb option: a string like `data-checksums` or a one-key mapping like `encoding: UTF8`")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<InitdbOption, E> {
                Ok(InitdbOption::Flag(s.to_string()))
            }
            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<InitdbOption, A::Error> {
                BTreeMap::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(InitdbOption::Value)
            }
        }
        d.deserialize_any(V)
    }
}

/// The DCS prefix `/<namespace>/<scope>/` with duplicate slashes collapsed (Patroni's rule).
pub(crate) fn dcs_prefix(namespace: &str, scope: &str) -> String {
    let raw = format!("/{namespace}/{scope}/");
    let mut out = String::with_capacity(raw.len());
    for c in raw.chars() {
        if c == '/' && out.ends_with('/') {
            continue;
        }
        out.push(c);
    }
    out
}

/// Split `host:port` (also `[v6]:port`).
pub(crate) fn split_host_port(s: &str) -> Option<(String, u16)> {
    let (h, p) = s.rsplit_once(':')?;
    let port = p.parse().ok()?;
    let host = h.trim_start_matches('[').trim_end_matches(']').to_string();
    if host.is_empty() {
        return None;
    }
    Some((host, port))
}

#[cfg(test)]
mod tests {
    use crate::config::test_support::*;
    use crate::config::{ConfigError, SyncMode};

    #[test]
    fn tags_written_as_strings_are_cast_as_patroni_casts_them() {
        for (yaml, want) in [
            ("'1'", Some(1)),
            ("\" 3 \"", Some(3)),
            ("2", Some(2)),
            ("'0'", Some(0)),
        ] {
            let l = parse_edited(&[("tags.failover_priority", Some(yaml))])
                .unwrap_or_else(|e| panic!("{yaml}: {e}"));
            assert_eq!(l.config.tags.failover_priority, want, "{yaml}");
        }
        let l = parse_edited(&[
            ("tags.nofailover", Some("'false'")),
            ("tags.nosync", Some("'on'")),
        ])
        .expect("string booleans");
        assert!(!l.config.tags.nofailover && l.config.tags.nosync);
        let e =
            parse_edited(&[("tags.failover_priority", Some("high"))]).expect_err("not a number");
        let text = e.to_string();
        assert!(
            text.contains("tags.failover_priority") && text.contains("whole number"),
            "{text}"
        );
    }

    #[test]
    fn synchronous_mode_variants() {
        for (yaml, want) in [
            ("true", SyncMode::On),
            ("false", SyncMode::Off),
            ("on", SyncMode::On),
            ("off", SyncMode::Off),
            ("'on'", SyncMode::On),
            ("ON", SyncMode::On),
            ("yes", SyncMode::On),
        ] {
            let l = parse_edited(&[("bootstrap.dcs.synchronous_mode", Some(yaml))])
                .unwrap_or_else(|e| panic!("{yaml}: {e}"));
            assert_eq!(l.config.bootstrap.dcs.synchronous_mode, want, "{yaml}");
        }
        // Quorum commit (issue 15.2).
        for yaml in ["quorum", "Quorum"] {
            let l = parse_edited(&[("bootstrap.dcs.synchronous_mode", Some(yaml))])
                .unwrap_or_else(|e| panic!("{yaml}: {e}"));
            assert_eq!(l.config.bootstrap.dcs.synchronous_mode, SyncMode::Quorum);
        }
        for bad in ["maybe", "1"] {
            let e = err_of(&[("bootstrap.dcs.synchronous_mode", Some(bad))]);
            assert!(
                matches!(&e, ConfigError::WrongType { key, .. } if key == "bootstrap.dcs.synchronous_mode"),
                "{e:?}"
            );
            assert!(e.to_string().contains("on, off, quorum"), "{e}");
        }
        // The same type is read back from the DCS as JSON.
        let m: SyncMode = serde_json::from_str("\"quorum\"").expect("json string");
        assert_eq!(m, SyncMode::Quorum);
        let m: SyncMode = serde_json::from_str("true").expect("json bool");
        assert_eq!(m, SyncMode::On);
        // And written as Patroni writes it, so that its tools read it back.
        for (mode, json) in [
            (SyncMode::Off, "false"),
            (SyncMode::On, "true"),
            (SyncMode::Quorum, "\"quorum\""),
        ] {
            assert_eq!(serde_json::to_string(&mode).expect("encode"), json);
            let back: SyncMode = serde_json::from_str(json).expect("decode");
            assert_eq!(back, mode);
        }
    }

    #[test]
    fn patroni_style_booleans() {
        let l = parse_edited(&[
            ("bootstrap.dcs.postgresql.use_pg_rewind", Some("'off'")),
            ("bootstrap.dcs.postgresql.use_slots", Some("no")),
            ("bootstrap.dcs.pause", Some("'on'")),
            ("tags.nofailover", Some("yes")),
        ])
        .expect("valid");
        let d = &l.config.bootstrap.dcs;
        assert!(!d.postgresql.use_pg_rewind);
        assert!(!d.postgresql.use_slots);
        assert_eq!(d.pause, Some(true));
        assert!(l.config.tags.nofailover);
    }
}
