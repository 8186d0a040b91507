//! Configuration: Patroni-compatible YAML (the supported subset), parsed with serde.
//!
//! Key names follow Patroni's so that an existing Patroni config starts a Regent node unchanged.
//! `Config::load` parses, warns about unknown keys and validates values; every error names the key
//! path, the value and what is allowed.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The whole local configuration file.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct Config {
    pub scope: String,
    pub name: String,
    #[serde(default = "default_namespace")]
    pub namespace: String,
    pub restapi: RestApi,
    #[serde(default)]
    pub etcd3: Option<Etcd>,
    /// Patroni's `etcd:` (v2) section; accepted for its `hosts`/`host` keys only, the protocol is always v3.
    #[serde(default)]
    pub etcd: Option<Etcd>,
    #[serde(default)]
    pub bootstrap: Bootstrap,
    pub postgresql: Postgresql,
    #[serde(default)]
    pub tags: Tags,
    #[serde(default)]
    pub regent: RegentSection,
}

fn default_namespace() -> String {
    "/service/".to_string()
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct RestApi {
    /// `host:port` to bind.
    pub listen: String,
    /// `host:port` other nodes and tools use; defaults to `listen`.
    #[serde(default)]
    pub connect_address: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Default)]
pub struct Etcd {
    /// `host:port` list (or comma-separated string, as Patroni allows).
    #[serde(default)]
    pub hosts: Option<HostList>,
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default)]
    pub protocol: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(untagged)]
pub enum HostList {
    List(Vec<String>),
    Comma(String),
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Default)]
pub struct Bootstrap {
    #[serde(default)]
    pub dcs: DynamicConfig,
    /// initdb options: strings (`data-checksums`) or single-key maps (`encoding: UTF8`).
    #[serde(default)]
    pub initdb: Vec<InitdbOption>,
    #[serde(default)]
    pub pg_hba: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(untagged)]
pub enum InitdbOption {
    Flag(String),
    Value(BTreeMap<String, serde_yaml::Value>),
}

/// Dynamic (cluster-wide) configuration, stored in the DCS `config` key.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct DynamicConfig {
    #[serde(default = "d_ttl")]
    pub ttl: u64,
    #[serde(default = "d_loop_wait")]
    pub loop_wait: u64,
    #[serde(default = "d_retry_timeout")]
    pub retry_timeout: u64,
    #[serde(default = "d_max_lag")]
    pub maximum_lag_on_failover: u64,
    #[serde(default)]
    pub synchronous_mode: SyncMode,
    #[serde(default)]
    pub check_timeline: bool,
    #[serde(default)]
    pub pause: Option<bool>,
    #[serde(default)]
    pub postgresql: DynamicPostgresql,
}

impl Default for DynamicConfig {
    fn default() -> Self {
        DynamicConfig {
            ttl: d_ttl(),
            loop_wait: d_loop_wait(),
            retry_timeout: d_retry_timeout(),
            maximum_lag_on_failover: d_max_lag(),
            synchronous_mode: SyncMode::Off,
            check_timeline: false,
            pause: None,
            postgresql: DynamicPostgresql::default(),
        }
    }
}

fn d_ttl() -> u64 {
    30
}
fn d_loop_wait() -> u64 {
    10
}
fn d_retry_timeout() -> u64 {
    10
}
fn d_max_lag() -> u64 {
    1_048_576
}

/// `synchronous_mode`: Patroni accepts booleans and the strings `on`/`off`/`quorum`.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq, Default)]
pub enum SyncMode {
    #[default]
    Off,
    On,
    Quorum,
}

impl<'de> Deserialize<'de> for SyncMode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            B(bool),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::B(true) => Ok(SyncMode::On),
            Raw::B(false) => Ok(SyncMode::Off),
            Raw::S(s) => match s.to_ascii_lowercase().as_str() {
                "on" | "true" => Ok(SyncMode::On),
                "off" | "false" => Ok(SyncMode::Off),
                "quorum" => Ok(SyncMode::Quorum),
                other => Err(serde::de::Error::custom(format!(
                    "`{other}` is not a synchronous_mode; allowed: on, off, quorum, true, false"
                ))),
            },
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct DynamicPostgresql {
    #[serde(default)]
    pub use_pg_rewind: bool,
    #[serde(default = "d_true")]
    pub use_slots: bool,
    #[serde(default)]
    pub parameters: BTreeMap<String, serde_yaml::Value>,
}

impl Default for DynamicPostgresql {
    fn default() -> Self {
        DynamicPostgresql {
            use_pg_rewind: false,
            use_slots: true,
            parameters: BTreeMap::new(),
        }
    }
}

fn d_true() -> bool {
    true
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct Postgresql {
    /// `host:port` PostgreSQL listens on (`listen_addresses` and `port`).
    pub listen: String,
    /// `host:port` other nodes use to reach this PostgreSQL; defaults to `listen`.
    #[serde(default)]
    pub connect_address: Option<String>,
    pub data_dir: PathBuf,
    #[serde(default)]
    pub bin_dir: Option<PathBuf>,
    pub authentication: Authentication,
    #[serde(default)]
    pub parameters: BTreeMap<String, serde_yaml::Value>,
    #[serde(default)]
    pub pg_hba: Vec<String>,
    /// Regent extension: the OS user PostgreSQL runs as when `regent` runs as root.
    #[serde(default)]
    pub os_user: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct Authentication {
    pub superuser: Credentials,
    pub replication: Credentials,
    #[serde(default)]
    pub rewind: Option<Credentials>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct Credentials {
    pub username: String,
    #[serde(default)]
    pub password: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Default)]
pub struct Tags {
    #[serde(default)]
    pub nofailover: bool,
    #[serde(default)]
    pub failover_priority: Option<i64>,
    #[serde(default)]
    pub noloadbalance: bool,
    #[serde(default)]
    pub nosync: bool,
    /// Any other tag (e.g. `zone`), published as is.
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_yaml::Value>,
}

/// Regent's own keys (not in Patroni).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Default)]
pub struct RegentSection {
    /// Directory for the fencing guard's state and pid files; defaults to the data directory's parent.
    #[serde(default)]
    pub run_dir: Option<PathBuf>,
}

impl Config {
    /// The etcd endpoints, `host:port` each, from `etcd3` (preferred) or `etcd`.
    pub fn etcd_endpoints(&self) -> Vec<String> {
        let sec = self.etcd3.as_ref().or(self.etcd.as_ref());
        let mut out = Vec::new();
        if let Some(sec) = sec {
            match &sec.hosts {
                Some(HostList::List(v)) => out.extend(v.iter().map(|s| s.trim().to_string())),
                Some(HostList::Comma(s)) => out.extend(
                    s.split(',')
                        .map(|s| s.trim().to_string())
                        .filter(|s| !s.is_empty()),
                ),
                None => {}
            }
            if out.is_empty()
                && let Some(h) = &sec.host
            {
                out.push(h.trim().to_string());
            }
        }
        out
    }

    /// The DCS prefix `/<namespace>/<scope>/` with duplicate slashes collapsed.
    pub fn dcs_prefix(&self) -> String {
        let raw = format!("/{}/{}/", self.namespace, self.scope);
        let mut out = String::with_capacity(raw.len());
        for c in raw.chars() {
            if c == '/' && out.ends_with('/') {
                continue;
            }
            out.push(c);
        }
        out
    }

    pub fn restapi_connect(&self) -> &str {
        self.restapi
            .connect_address
            .as_deref()
            .unwrap_or(&self.restapi.listen)
    }

    pub fn pg_connect(&self) -> &str {
        self.postgresql
            .connect_address
            .as_deref()
            .unwrap_or(&self.postgresql.listen)
    }

    /// Where the guard keeps its files.
    pub fn run_dir(&self) -> PathBuf {
        self.regent.run_dir.clone().unwrap_or_else(|| {
            self.postgresql
                .data_dir
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_else(|| PathBuf::from("."))
        })
    }
}

/// Split `host:port` (also `[v6]:port`).
pub fn split_host_port(s: &str) -> Option<(String, u16)> {
    let (h, p) = s.rsplit_once(':')?;
    let port = p.parse().ok()?;
    let host = h.trim_start_matches('[').trim_end_matches(']').to_string();
    if host.is_empty() {
        return None;
    }
    Some((host, port))
}
