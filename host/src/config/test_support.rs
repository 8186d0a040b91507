//! Helpers shared by the config tests: the Patroni-style fixture (`host/testdata/postgres0.yml`),
//! edits to it, and short ways to get at an error. Pure: the fixture is compiled in.

use super::{ConfigError, Loaded, parse};
use serde_yaml::{Mapping, Value};

pub(super) const FIXTURE: &str = include_str!("../../testdata/postgres0.yml");

/// The fixture with edits: `(dotted.path, YAML value)`; a value of `None` removes the key.
pub(super) fn edited(edits: &[(&str, Option<&str>)]) -> String {
    let mut root: Value = serde_yaml::from_str(FIXTURE).expect("fixture is YAML");
    for (path, val) in edits {
        let parts: Vec<&str> = path.split('.').collect();
        let (last, parents) = parts.split_last().expect("non-empty path");
        let mut node = &mut root;
        for p in parents {
            let map = node.as_mapping_mut().expect("mapping on the way");
            node = map
                .entry(Value::from(*p))
                .or_insert(Value::Mapping(Mapping::new()));
        }
        let map = node.as_mapping_mut().expect("parent is a mapping");
        match val {
            Some(v) => {
                map.insert(
                    Value::from(*last),
                    serde_yaml::from_str(v).expect("edit value is YAML"),
                );
            }
            None => {
                map.remove(*last);
            }
        }
    }
    serde_yaml::to_string(&root).expect("serializable")
}

pub(super) fn parse_edited(edits: &[(&str, Option<&str>)]) -> Result<Loaded, ConfigError> {
    parse(&edited(edits))
}

pub(super) fn err_of(edits: &[(&str, Option<&str>)]) -> ConfigError {
    match parse_edited(edits) {
        Ok(l) => panic!("expected an error for {edits:?}, got {:?}", l.config),
        Err(e) => e,
    }
}

pub(super) fn invalid_key(e: &ConfigError) -> &str {
    match e {
        ConfigError::Invalid { key, .. } => key,
        other => panic!("expected Invalid, got {other:?}"),
    }
}

pub(super) fn timing(ttl: u64, lw: u64, rt: u64) -> Result<Loaded, ConfigError> {
    let (t, l, r) = (ttl.to_string(), lw.to_string(), rt.to_string());
    parse_edited(&[
        ("bootstrap.dcs.ttl", Some(&t)),
        ("bootstrap.dcs.loop_wait", Some(&l)),
        ("bootstrap.dcs.retry_timeout", Some(&r)),
    ])
}
