//! Configuration: Patroni-compatible YAML (the supported subset), parsed with serde.
//!
//! Key names follow Patroni's so that an existing Patroni config starts a Regent node unchanged.
//! [`load`] / [`parse`] read the YAML, collect a warning for every key Regent does not use (never
//! fatal), deserialize it and run [`Config::validate`]; [`check_environment`] then looks (read-only)
//! at the filesystem. Every [`ConfigError`] is one line naming the key path, the offending value,
//! what is allowed and how to fix it.

use serde::de::{self, Visitor};
use serde::{Deserialize, Serialize};
use serde_yaml::{Mapping, Value};
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt;
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
    /// Patroni's `ctl` section: how this node (peer polls) and `regent ctl` call REST APIs.
    #[serde(default)]
    pub ctl: Ctl,
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
    /// HTTP Basic auth required by the mutating endpoints.
    #[serde(default)]
    pub authentication: Option<BasicAuth>,
    /// PEM certificate (chain); set, the API serves HTTPS only.
    #[serde(default)]
    pub certfile: Option<PathBuf>,
    /// PEM private key; defaults to the key inside `certfile`.
    #[serde(default)]
    pub keyfile: Option<PathBuf>,
    /// Refused: encrypted keys are not supported.
    #[serde(default)]
    pub keyfile_password: Option<String>,
    /// CA certificates (PEM) this node trusts when it calls other members over HTTPS.
    #[serde(default)]
    pub cafile: Option<PathBuf>,
    /// Only `none` is supported (no client certificates).
    #[serde(default)]
    pub verify_client: Option<String>,
    /// Who may call the mutating endpoints: IP addresses, CIDR networks and host names.
    #[serde(default)]
    pub allowlist: Vec<String>,
    /// Also allow the hosts in members' `api_url`s.
    #[serde(default, deserialize_with = "patroni_bool")]
    pub allowlist_include_members: bool,
    /// Headers added to every response.
    #[serde(default)]
    pub http_extra_headers: BTreeMap<String, String>,
    /// Headers added to every response when the API serves HTTPS.
    #[serde(default)]
    pub https_extra_headers: BTreeMap<String, String>,
}

/// A user name and password for HTTP Basic auth (`restapi.authentication`, `ctl.authentication`).
#[derive(Clone, Deserialize, Serialize, PartialEq)]
pub struct BasicAuth {
    pub username: String,
    pub password: String,
}

impl fmt::Debug for BasicAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BasicAuth")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Patroni's `ctl` section.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Default)]
pub struct Ctl {
    /// Basic auth for calls to REST APIs; defaults to `restapi.authentication`.
    #[serde(default)]
    pub authentication: Option<BasicAuth>,
    /// Do not verify REST API server certificates.
    #[serde(default, deserialize_with = "patroni_bool")]
    pub insecure: bool,
    /// CA certificates (PEM) to trust; defaults to `restapi.cafile`.
    #[serde(default)]
    pub cacert: Option<PathBuf>,
    /// Client certificate (PEM) presented to REST APIs.
    #[serde(default)]
    pub certfile: Option<PathBuf>,
    /// Its key; defaults to the key inside `certfile`.
    #[serde(default)]
    pub keyfile: Option<PathBuf>,
    /// Refused: encrypted keys are not supported.
    #[serde(default)]
    pub keyfile_password: Option<String>,
}

/// One `restapi.allowlist` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllowEntry {
    Ip(std::net::IpAddr),
    /// A network: its address (host bits cleared) and prefix length.
    Net(std::net::IpAddr, u8),
    /// A host name, resolved when a request is checked.
    Host(String),
}

impl AllowEntry {
    /// `10.0.0.5`, `10.0.0.0/24`, `fd00::/8` or `db1.example.com`; the error says what is wrong.
    pub fn parse(s: &str) -> Result<AllowEntry, String> {
        use std::net::IpAddr;
        let s = s.trim();
        if let Some((addr, len)) = s.split_once('/') {
            let ip: IpAddr = addr
                .parse()
                .map_err(|_| format!("{} is not an IP address", q(addr)))?;
            let max = if ip.is_ipv4() { 32 } else { 128 };
            let len: u8 = len
                .parse()
                .ok()
                .filter(|l| *l <= max)
                .ok_or_else(|| format!("the prefix length {} is not 0 to {max}", q(len)))?;
            return Ok(AllowEntry::Net(mask(ip, len), len));
        }
        if let Ok(ip) = s.parse::<IpAddr>() {
            return Ok(AllowEntry::Ip(ip));
        }
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        };
        let name = s.strip_suffix('.').unwrap_or(s);
        if name.is_empty() || name.len() > 253 || !name.split('.').all(label_ok) {
            return Err(format!(
                "{} is neither an IP address, a network (address/prefix) nor a host name",
                q(s)
            ));
        }
        Ok(AllowEntry::Host(name.to_ascii_lowercase()))
    }

    /// Whether `ip` is this address or in this network (host names never match here).
    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        let ip = canonical_ip(ip);
        match self {
            AllowEntry::Ip(a) => canonical_ip(*a) == ip,
            AllowEntry::Net(net, len) => {
                let net = canonical_ip(*net);
                net.is_ipv4() == ip.is_ipv4() && mask(ip, *len) == net
            }
            AllowEntry::Host(_) => false,
        }
    }
}

/// An IPv4-mapped IPv6 address (`::ffff:10.0.0.1`, how a dual-stack socket reports IPv4 peers)
/// as the IPv4 address.
pub fn canonical_ip(ip: std::net::IpAddr) -> std::net::IpAddr {
    match ip {
        std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, std::net::IpAddr::V4),
        v4 => v4,
    }
}

fn mask(ip: std::net::IpAddr, len: u8) -> std::net::IpAddr {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    match ip {
        IpAddr::V4(a) => {
            let bits = u32::from(a);
            let m = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(bits & m))
        }
        IpAddr::V6(a) => {
            let bits = u128::from(a);
            let m = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(bits & m))
        }
    }
}

impl Config {
    /// `https` when the REST API serves TLS (`restapi.certfile` set), else `http`.
    pub fn api_scheme(&self) -> &'static str {
        if self.restapi.certfile.is_some() {
            "https"
        } else {
            "http"
        }
    }

    /// The `api_url` published in this node's member key: `http(s)://<connect_address>/patroni`.
    pub fn api_url(&self) -> String {
        format!("{}://{}/patroni", self.api_scheme(), self.restapi_connect())
    }

    /// The credentials this node sends when it calls REST APIs: `ctl.authentication`, else
    /// `restapi.authentication` (as Patroni does).
    pub fn ctl_authentication(&self) -> Option<&BasicAuth> {
        self.ctl
            .authentication
            .as_ref()
            .or(self.restapi.authentication.as_ref())
    }
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

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(untagged)]
pub enum HostList {
    List(Vec<String>),
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

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(untagged)]
pub enum InitdbOption {
    Flag(String),
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
    /// How many standbys the leader keeps synchronous (Patroni's default: 1).
    #[serde(default = "d_sync_count", skip_serializing_if = "is_one")]
    pub synchronous_node_count: u64,
    /// With no standby to be synchronous, block commits (`synchronous_standby_names = '*'`)
    /// instead of accepting them unreplicated.
    #[serde(
        default,
        deserialize_with = "patroni_bool",
        skip_serializing_if = "std::ops::Not::not"
    )]
    pub synchronous_mode_strict: bool,
    /// Bytes a synchronous standby may lag behind the primary before another replaces it;
    /// negative (Patroni's default, -1): no limit.
    #[serde(default = "d_minus_one", skip_serializing_if = "is_minus_one")]
    pub maximum_lag_on_syncnode: i64,
    #[serde(default, deserialize_with = "patroni_bool")]
    pub check_timeline: bool,
    #[serde(
        default,
        deserialize_with = "patroni_bool_opt",
        skip_serializing_if = "Option::is_none"
    )]
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
            synchronous_node_count: d_sync_count(),
            synchronous_mode_strict: false,
            maximum_lag_on_syncnode: d_minus_one(),
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
fn d_sync_count() -> u64 {
    1
}
fn is_one(n: &u64) -> bool {
    *n == 1
}
fn d_minus_one() -> i64 {
    -1
}
fn is_minus_one(n: &i64) -> bool {
    *n == -1
}

pub use regent_core::ha::sync::SyncMode;

/// A boolean as Patroni reads it: YAML booleans plus the YAML 1.1 / `parse_bool` strings
/// `yes`/`no`/`on`/`off`/`true`/`false` (any case), which YAML 1.2 parsers leave as strings.
fn patroni_bool<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    d.deserialize_any(BoolVisitor)
}

fn patroni_bool_opt<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
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

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct DynamicPostgresql {
    #[serde(default, deserialize_with = "patroni_bool")]
    pub use_pg_rewind: bool,
    #[serde(default = "d_true", deserialize_with = "patroni_bool")]
    pub use_slots: bool,
    #[serde(default)]
    pub parameters: BTreeMap<String, serde_yaml::Value>,
    /// `pg_hba.conf` lines (Patroni's `bootstrap.dcs.postgresql.pg_hba`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pg_hba: Vec<String>,
}

impl Default for DynamicPostgresql {
    fn default() -> Self {
        DynamicPostgresql {
            use_pg_rewind: false,
            use_slots: true,
            parameters: BTreeMap::new(),
            pg_hba: Vec::new(),
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
    #[serde(default, deserialize_with = "patroni_bool")]
    pub nofailover: bool,
    #[serde(default)]
    pub failover_priority: Option<i64>,
    #[serde(default, deserialize_with = "patroni_bool")]
    pub noloadbalance: bool,
    #[serde(default, deserialize_with = "patroni_bool")]
    pub nosync: bool,
    /// Any other tag (e.g. `zone`), published as is.
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_yaml::Value>,
}

/// Regent's own keys (not in Patroni).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct RegentSection {
    /// Directory for the fencing guard's state and pid files; defaults to the data directory's parent.
    #[serde(default)]
    pub run_dir: Option<PathBuf>,
    /// Directory of policy manifests (`NAME.toml`) and components, watched for changes.
    #[serde(default)]
    pub policies_dir: Option<PathBuf>,
    /// Policies to run, in order: the first with an active `rank-candidates` hook ranks
    /// elections, every `check-health` hook judges health, every `on-event` hook gets events.
    /// Empty: the built-in rules.
    #[serde(default)]
    pub policies: Vec<String>,
    /// A leader whose policies judge it `failed` for this many consecutive loops hands over
    /// to a healthy replica.
    #[serde(default = "d_failed_loops")]
    pub failed_loops_before_handover: u32,
}

fn d_failed_loops() -> u32 {
    2
}

impl Default for RegentSection {
    fn default() -> Self {
        RegentSection {
            run_dir: None,
            policies_dir: None,
            policies: Vec::new(),
            failed_loops_before_handover: d_failed_loops(),
        }
    }
}

impl Etcd {
    /// The endpoints, `host:port` each: `hosts` (list or comma-separated), else `host`.
    pub fn endpoints(&self) -> Vec<String> {
        let mut out = Vec::new();
        match &self.hosts {
            Some(HostList::List(v)) => out.extend(v.iter().map(|s| s.trim().to_string())),
            Some(HostList::Comma(s)) => out.extend(
                s.split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty()),
            ),
            None => {}
        }
        if out.is_empty()
            && let Some(h) = &self.host
        {
            out.push(h.trim().to_string());
        }
        out
    }
}

/// The DCS prefix `/<namespace>/<scope>/` with duplicate slashes collapsed (Patroni's rule).
pub fn dcs_prefix(namespace: &str, scope: &str) -> String {
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

impl Config {
    /// The etcd endpoints, `host:port` each, from `etcd3` (preferred) or `etcd`.
    pub fn etcd_endpoints(&self) -> Vec<String> {
        self.etcd3
            .as_ref()
            .or(self.etcd.as_ref())
            .map(Etcd::endpoints)
            .unwrap_or_default()
    }

    /// The DCS prefix `/<namespace>/<scope>/` with duplicate slashes collapsed.
    pub fn dcs_prefix(&self) -> String {
        dcs_prefix(&self.namespace, &self.scope)
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

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/// A position in the YAML text (1-based).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TextPos {
    pub line: usize,
    pub column: usize,
}

impl fmt::Display for TextPos {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "line {}, column {}", self.line, self.column)
    }
}

fn at_suffix(at: &Option<TextPos>) -> String {
    at.map(|p| format!(" (at {p})")).unwrap_or_default()
}

/// Why a configuration cannot be used. Every message is one line naming the key path, the
/// offending value, what is allowed and a fix.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("cannot read config file {}: {error}; check the path and that the user running Regent may read it", .path.display())]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },

    /// The text is not YAML.
    #[error("config is not valid YAML{}: {message}; fix the YAML there (indent with spaces, not tabs; quote values containing `: ` or ` #`)", at_suffix(.at))]
    Syntax {
        at: Option<TextPos>,
        message: String,
    },

    /// A value has the wrong type or shape (from serde), e.g.
    /// postgresql.data_dir: invalid type: integer `5`, expected a path.
    #[error("{key}: {message}{}; {fix}", at_suffix(.at))]
    WrongType {
        key: String,
        message: String,
        at: Option<TextPos>,
        fix: String,
    },

    /// A required key is absent.
    #[error("{key}: required key is missing; add {example}")]
    Missing { key: String, example: String },

    /// A value is well-typed but not allowed (from [`Config::validate`]).
    #[error("{key} = {value}: {problem}; {fix}")]
    Invalid {
        key: String,
        value: String,
        problem: String,
        fix: String,
    },

    /// The machine does not fit the configuration (from [`check_environment`] / [`resolve_bin_dir`]).
    #[error("{key} = {value}: {problem}; {fix}")]
    Environment {
        key: String,
        value: String,
        problem: String,
        fix: String,
    },
}

fn one_line(s: impl fmt::Display) -> String {
    s.to_string().replace(['\n', '\r'], " ")
}

fn invalid(
    key: impl Into<String>,
    value: impl fmt::Display,
    problem: impl Into<String>,
    fix: impl Into<String>,
) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        value: one_line(value),
        problem: one_line(problem.into()),
        fix: one_line(fix.into()),
    }
}

fn environment(
    key: impl Into<String>,
    value: impl fmt::Display,
    problem: impl Into<String>,
    fix: impl Into<String>,
) -> ConfigError {
    ConfigError::Environment {
        key: key.into(),
        value: one_line(value),
        problem: one_line(problem.into()),
        fix: one_line(fix.into()),
    }
}

/// A string value as shown in messages: quoted, escapes visible.
fn q(s: &str) -> String {
    format!("{s:?}")
}

/// A path as shown in messages.
fn qp(p: &Path) -> String {
    format!("{:?}", p.display().to_string())
}

// ---------------------------------------------------------------------------------------------
// Loading and parsing
// ---------------------------------------------------------------------------------------------

/// A parsed and validated configuration plus one line per ignored key.
#[derive(Debug, Clone, PartialEq)]
pub struct Loaded {
    pub config: Config,
    pub warnings: Vec<String>,
}

/// Read, parse and validate the config file at `path` (no environment checks; see
/// [`check_environment`]).
pub fn load(path: &Path) -> Result<Loaded, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Io {
        path: path.to_path_buf(),
        error,
    })?;
    parse(&text)
}

/// Parse and validate config text: unknown keys become warnings, everything else an error.
pub fn parse(yaml: &str) -> Result<Loaded, ConfigError> {
    let mut value: Value = serde_yaml::from_str(yaml).map_err(|e| syntax_error(&e))?;
    value.apply_merge().map_err(|e| syntax_error(&e))?;

    let Value::Mapping(map) = &mut value else {
        let found = match &value {
            Value::Null => "an empty document".to_string(),
            other => format!("{} instead of key: value pairs", kind_of(other)),
        };
        return Err(ConfigError::WrongType {
            key: "(top level)".to_string(),
            message: format!(
                "found {found}, expected a mapping with the keys scope, name, restapi, etcd3 and postgresql"
            ),
            at: None,
            fix: "write the configuration as `key: value` lines (Patroni's postgres0.yml with an etcd3 section is a good start)".into(),
        });
    };

    let mut warnings = Vec::new();
    walk(map, TOP, "", &mut warnings);
    if map.contains_key("etcd") {
        if map.contains_key("etcd3") {
            warnings
                .push("etcd: ignored because etcd3 is also set; remove the etcd section".into());
        } else {
            warnings.push(
                "etcd: Regent always uses the etcd v3 API, whose keys are separate from the v2 keys Patroni's `etcd` section writes; rename the section to etcd3 (switch a running Patroni cluster to etcd3 before Regent joins it)"
                    .into(),
            );
        }
    }

    let config: Config = serde_path_to_error::deserialize(value).map_err(|e| {
        let key = e.path().to_string();
        let message = e.inner().to_string();
        serde_error(yaml, key, &message)
    })?;
    config.validate()?;
    Ok(Loaded { config, warnings })
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}

fn syntax_error(e: &serde_yaml::Error) -> ConfigError {
    let at = e.location().map(|l| TextPos {
        line: l.line(),
        column: l.column(),
    });
    let mut message = one_line(e);
    if let Some(p) = at {
        // libyaml puts the position in the text; it is shown once, in front.
        message = message.replacen(&format!(" at line {} column {}", p.line, p.column), "", 1);
    }
    ConfigError::Syntax { at, message }
}

/// Turn a serde error at `path` into `Missing` or `WrongType`.
fn serde_error(yaml: &str, path: String, message: &str) -> ConfigError {
    if let Some(rest) = message.strip_prefix("missing field `")
        && let Some((field, _)) = rest.split_once('`')
    {
        let key = if path == "." {
            field.to_string()
        } else {
            format!("{path}.{field}")
        };
        let example = missing_example(&key);
        return ConfigError::Missing { key, example };
    }
    let key = if path == "." {
        "(top level)".to_string()
    } else {
        path
    };
    let at = locate_key(yaml, &key);
    ConfigError::WrongType {
        key,
        message: humanize_serde(message),
        at,
        fix: "change the value to what is expected (quote strings that look like numbers or booleans, e.g. password: \"1234\")".into(),
    }
}

/// Best-effort position of a dotted key path (`postgresql.authentication.superuser.username`,
/// list indexes ignored) in block-style YAML; `None` when it cannot be told (flow style, quoted
/// keys, anchors).
fn locate_key(yaml: &str, path: &str) -> Option<TextPos> {
    let lines: Vec<&str> = yaml.lines().collect();
    let content = |i: usize| -> Option<(usize, &str)> {
        let line = lines.get(i)?;
        let t = line.trim_start();
        if t.is_empty() || t.starts_with('#') || t.starts_with("---") {
            None
        } else {
            Some((line.len() - t.len(), t))
        }
    };
    let mut from = 0;
    let mut parent_indent: Option<usize> = None;
    let mut found = None;
    for seg in path.split('.') {
        let seg = seg.split('[').next().unwrap_or(seg);
        // The block's indentation is that of its first content line.
        let (first, block_indent) =
            (from..lines.len()).find_map(|i| content(i).map(|(ind, _)| (i, ind)))?;
        if parent_indent.is_some_and(|p| block_indent <= p) {
            return None;
        }
        let mut hit = None;
        for i in first..lines.len() {
            let Some((ind, t)) = content(i) else { continue };
            if ind < block_indent {
                // A list under the parent may sit at the parent's indentation.
                if parent_indent == Some(ind) && t.starts_with('-') {
                    continue;
                }
                break;
            }
            if ind == block_indent
                && let Some(rest) = t.strip_prefix(seg)
                && rest.trim_start().starts_with(':')
            {
                hit = Some((i, ind));
                break;
            }
        }
        let (i, ind) = hit?;
        found = Some(TextPos {
            line: i + 1,
            column: ind + 1,
        });
        from = i + 1;
        parent_indent = Some(ind);
    }
    found
}

/// Replace Rust type names in serde's "expected ..." with words.
fn humanize_serde(msg: &str) -> String {
    let mut m = one_line(msg);
    for (from, to) in [
        ("expected path string", "expected a path"),
        ("expected u64", "expected a whole number >= 0"),
        ("expected i64", "expected a whole number"),
        ("expected a borrowed string", "expected a string"),
        ("expected a sequence", "expected a list"),
        ("expected a map", "expected a mapping of keys"),
    ] {
        m = m.replace(from, to);
    }
    if let Some(i) = m.find("expected struct ") {
        m.truncate(i);
        m.push_str("expected a mapping of keys");
    }
    m
}

fn missing_example(key: &str) -> String {
    let (parent, leaf) = match key.rsplit_once('.') {
        Some((p, l)) => (Some(p), l),
        None => (None, key),
    };
    let value = match key {
        "scope" => "batman (the cluster name, the same on every node)",
        "name" => "pg-node1 (this node's name, unique in the cluster)",
        "restapi" => "{listen: 0.0.0.0:8008, connect_address: 10.0.0.11:8008}",
        "restapi.listen" => "0.0.0.0:8008",
        "restapi.authentication.username" | "ctl.authentication.username" => "admin",
        "restapi.authentication.password" | "ctl.authentication.password" => {
            "<a long random secret>"
        }
        "postgresql" => {
            "{listen: 0.0.0.0:5432, connect_address: 10.0.0.11:5432, data_dir: /var/lib/postgresql/16/main, authentication: {superuser: {username: postgres}, replication: {username: replicator}}}"
        }
        "postgresql.listen" => "0.0.0.0:5432",
        "postgresql.data_dir" => "/var/lib/postgresql/16/main",
        "postgresql.authentication" => {
            "{superuser: {username: postgres, password: ...}, replication: {username: replicator, password: ...}}"
        }
        "postgresql.authentication.superuser" => "{username: postgres, password: ...}",
        "postgresql.authentication.replication" => "{username: replicator, password: ...}",
        "postgresql.authentication.rewind" => "{username: rewind_user, password: ...}",
        _ if leaf == "username" => "postgres",
        _ => "<value> (see Patroni's postgres0.yml)",
    };
    match parent {
        Some(p) => format!("`{leaf}: {value}` under `{p}:`"),
        None => format!("`{leaf}: {value}` at the top level"),
    }
}

// ---------------------------------------------------------------------------------------------
// Known keys
// ---------------------------------------------------------------------------------------------

/// What Regent does with a key of the YAML file.
#[derive(Clone, Copy)]
enum Key {
    /// Used; its value (scalar, list, or free-form map such as `tags` or `parameters`) is not
    /// checked for unknown keys.
    Known,
    /// A mapping whose keys are checked against the table.
    Section(&'static [(&'static str, Key)]),
    /// A Patroni key Regent does not implement.
    Unsupported,
    /// A Patroni key Regent reads only from another place.
    Moved(&'static str),
}

use Key::{Known, Moved, Section, Unsupported};

const TOP: &[(&str, Key)] = &[
    ("scope", Known),
    ("name", Known),
    ("namespace", Known),
    ("restapi", Section(RESTAPI)),
    ("etcd3", Section(ETCD)),
    ("etcd", Section(ETCD)),
    ("bootstrap", Section(BOOTSTRAP)),
    ("postgresql", Section(POSTGRESQL)),
    ("tags", Known),
    ("regent", Section(REGENT)),
    ("log", Unsupported),
    ("ctl", Section(CTL)),
    ("watchdog", Unsupported),
    ("citus", Unsupported),
    ("consul", Unsupported),
    ("zookeeper", Unsupported),
    ("exhibitor", Unsupported),
    ("kubernetes", Unsupported),
    ("raft", Unsupported),
    ("thread_pool_size", Unsupported),
    ("ttl", Moved("bootstrap.dcs.ttl")),
    ("loop_wait", Moved("bootstrap.dcs.loop_wait")),
    ("retry_timeout", Moved("bootstrap.dcs.retry_timeout")),
    (
        "maximum_lag_on_failover",
        Moved("bootstrap.dcs.maximum_lag_on_failover"),
    ),
    ("synchronous_mode", Moved("bootstrap.dcs.synchronous_mode")),
    ("check_timeline", Moved("bootstrap.dcs.check_timeline")),
];

const RESTAPI: &[(&str, Key)] = &[
    ("listen", Known),
    ("connect_address", Known),
    ("proxy_address", Unsupported),
    ("authentication", Section(BASIC_AUTH)),
    ("certfile", Known),
    ("keyfile", Known),
    ("keyfile_password", Known),
    ("cafile", Known),
    ("ciphers", Unsupported),
    ("verify_client", Known),
    ("allowlist", Known),
    ("allowlist_include_members", Known),
    ("http_extra_headers", Known),
    ("https_extra_headers", Known),
    ("request_queue_size", Unsupported),
    ("server_tokens", Unsupported),
    ("thread_pool_size", Unsupported),
];

const ETCD: &[(&str, Key)] = &[
    ("hosts", Known),
    ("host", Known),
    ("protocol", Known),
    ("url", Unsupported),
    ("proxy", Unsupported),
    ("srv", Unsupported),
    ("srv_suffix", Unsupported),
    ("use_proxies", Unsupported),
    ("username", Unsupported),
    ("password", Unsupported),
    ("cacert", Unsupported),
    ("cert", Unsupported),
    ("key", Unsupported),
];

const BOOTSTRAP: &[(&str, Key)] = &[
    ("dcs", Section(DCS)),
    ("initdb", Known),
    ("pg_hba", Known),
    ("method", Unsupported),
    ("users", Unsupported),
    ("post_bootstrap", Unsupported),
    ("post_init", Unsupported),
];

const DCS: &[(&str, Key)] = &[
    ("ttl", Known),
    ("loop_wait", Known),
    ("retry_timeout", Known),
    ("maximum_lag_on_failover", Known),
    ("synchronous_mode", Known),
    ("synchronous_node_count", Known),
    ("synchronous_mode_strict", Known),
    ("maximum_lag_on_syncnode", Known),
    ("check_timeline", Known),
    ("pause", Known),
    ("postgresql", Section(DCS_POSTGRESQL)),
    ("max_timelines_history", Unsupported),
    ("primary_start_timeout", Unsupported),
    ("master_start_timeout", Unsupported),
    ("primary_stop_timeout", Unsupported),
    ("master_stop_timeout", Unsupported),
    ("primary_race_backoff", Unsupported),
    ("failsafe_mode", Unsupported),
    ("member_slots_ttl", Unsupported),
    ("standby_cluster", Unsupported),
    ("slots", Unsupported),
    ("ignore_slots", Unsupported),
];

const DCS_POSTGRESQL: &[(&str, Key)] = &[
    ("use_pg_rewind", Known),
    ("use_slots", Known),
    ("parameters", Known),
    ("pg_hba", Known),
    ("pg_ident", Unsupported),
    ("recovery_conf", Unsupported),
];

const POSTGRESQL: &[(&str, Key)] = &[
    ("listen", Known),
    ("connect_address", Known),
    ("data_dir", Known),
    ("bin_dir", Known),
    ("authentication", Section(AUTHENTICATION)),
    ("parameters", Known),
    ("pg_hba", Known),
    ("os_user", Known),
    (
        "use_pg_rewind",
        Moved("bootstrap.dcs.postgresql.use_pg_rewind"),
    ),
    ("use_slots", Moved("bootstrap.dcs.postgresql.use_slots")),
    ("proxy_address", Unsupported),
    ("config_dir", Unsupported),
    ("bin_name", Unsupported),
    ("pgpass", Unsupported),
    ("callbacks", Unsupported),
    ("create_replica_methods", Unsupported),
    ("replica_method", Unsupported),
    ("basebackup", Unsupported),
    ("recovery_conf", Unsupported),
    ("custom_conf", Unsupported),
    ("pg_ident", Unsupported),
    ("pg_ctl_timeout", Unsupported),
    ("use_unix_socket", Unsupported),
    ("use_unix_socket_repl", Unsupported),
    ("remove_data_directory_on_rewind_failure", Unsupported),
    ("remove_data_directory_on_diverged_timelines", Unsupported),
    ("pre_promote", Unsupported),
    ("before_stop", Unsupported),
    ("krbsrvname", Unsupported),
];

const AUTHENTICATION: &[(&str, Key)] = &[
    ("superuser", Section(CREDENTIALS)),
    ("replication", Section(CREDENTIALS)),
    ("rewind", Section(CREDENTIALS)),
];

const CREDENTIALS: &[(&str, Key)] = &[
    ("username", Known),
    ("password", Known),
    ("sslmode", Unsupported),
    ("sslkey", Unsupported),
    ("sslpassword", Unsupported),
    ("sslcert", Unsupported),
    ("sslrootcert", Unsupported),
    ("sslcrl", Unsupported),
    ("sslcrldir", Unsupported),
    ("sslnegotiation", Unsupported),
    ("gssencmode", Unsupported),
    ("channel_binding", Unsupported),
];

const CTL: &[(&str, Key)] = &[
    ("authentication", Section(BASIC_AUTH)),
    ("insecure", Known),
    ("cacert", Known),
    ("certfile", Known),
    ("keyfile", Known),
    ("keyfile_password", Known),
];

const BASIC_AUTH: &[(&str, Key)] = &[("username", Known), ("password", Known)];

const REGENT: &[(&str, Key)] = &[
    ("run_dir", Known),
    ("policies_dir", Known),
    ("policies", Known),
    ("failed_loops_before_handover", Known),
];

fn key_text(k: &Value) -> String {
    match k {
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::Null => "~".to_string(),
        other => format!("<{} as key>", kind_of(other)),
    }
}

/// Check `map`'s keys against `table`, pushing one warning per key Regent ignores. Entries with a
/// null value (`tags:` with everything below commented out) are dropped so they mean "not set".
fn walk(map: &mut Mapping, table: &[(&str, Key)], prefix: &str, warnings: &mut Vec<String>) {
    map.retain(|_, v| !v.is_null());
    // Patroni's named methods (`create_replica_methods: [pgbackrest]` + `pgbackrest: {...}`,
    // `bootstrap.method: clone` + `bootstrap.clone: {...}`).
    let method_names: Vec<String> = match prefix {
        "postgresql" => match map.get("create_replica_methods") {
            Some(Value::Sequence(s)) => s
                .iter()
                .filter_map(|v| v.as_str())
                .map(String::from)
                .collect(),
            _ => Vec::new(),
        },
        "bootstrap" => map
            .get("method")
            .and_then(Value::as_str)
            .map(|m| vec![m.to_string()])
            .unwrap_or_default(),
        _ => Vec::new(),
    };
    for (k, v) in map.iter_mut() {
        let name = key_text(k);
        let path = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}.{name}")
        };
        match table.iter().find(|(n, _)| *n == name).map(|(_, kind)| *kind) {
            Some(Known) => {}
            Some(Section(sub)) => {
                if let Value::Mapping(m) = v {
                    walk(m, sub, &path, warnings);
                }
                // Anything else is a type error that deserialization reports with its path.
            }
            Some(Unsupported) => {
                warnings.push(format!("{path}: Patroni key not supported by Regent yet, ignored"))
            }
            Some(Moved(target)) => warnings.push(format!(
                "{path}: ignored, Regent reads this setting only from {target} (the cluster-wide dynamic configuration); move it there"
            )),
            None if method_names.contains(&name) => warnings.push(format!(
                "{path}: Patroni method section not supported by Regent yet, ignored"
            )),
            None => warnings.push(format!(
                "unknown key {path} ignored (check its spelling and indentation)"
            )),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Validation (pure)
// ---------------------------------------------------------------------------------------------

/// Minimum `ttl` Regent accepts (Patroni's own minimum is higher).
pub const MIN_TTL: u64 = 5;

#[derive(Clone, Copy, PartialEq)]
enum AddrKind {
    /// A bind address: wildcards allowed; `multi` allows a comma-separated host list.
    Listen { multi: bool },
    /// An address other nodes connect to; `defaulted_from` names the listen key it came from.
    Connect {
        defaulted_from: Option<&'static str>,
    },
    /// An etcd client endpoint.
    Etcd,
}

const WILDCARDS: &[&str] = &["0.0.0.0", "*", "::", ""];

fn check_host_port(
    key: &str,
    value: &str,
    kind: AddrKind,
    example: &str,
) -> Result<(), ConfigError> {
    let shown = match kind {
        AddrKind::Connect {
            defaulted_from: Some(from),
        } => format!("(not set, defaults to {from} {})", q(value)),
        _ => q(value),
    };
    let v = value.trim();
    let fix = format!("write it as host:port, e.g. {key}: {example}");
    if v.contains("://") {
        let fix = if kind == AddrKind::Etcd {
            format!(
                "drop the scheme, e.g. {example}, and set the section's protocol: https for TLS"
            )
        } else {
            format!("drop the scheme, e.g. {key}: {example}")
        };
        return Err(invalid(key, shown, "must be host:port, not a URL", fix));
    }
    let Some((host, port)) = v.rsplit_once(':') else {
        return Err(invalid(
            key,
            shown,
            "has no port; host:port is required",
            fix,
        ));
    };
    match port.parse::<u16>() {
        Ok(p) if p > 0 => {}
        _ => {
            return Err(invalid(
                key,
                shown,
                format!("port {} is not a TCP port (allowed: 1 to 65535)", q(port)),
                fix,
            ));
        }
    }
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let multi = kind == AddrKind::Listen { multi: true };
    if host.trim().is_empty() {
        let fix = match kind {
            AddrKind::Listen { .. } => {
                format!(
                    "use 0.0.0.0:{port} to listen on all IPv4 addresses, or one address of this host"
                )
            }
            _ => fix,
        };
        return Err(invalid(key, shown, "the host part is empty", fix));
    }
    if !multi && host.chars().any(char::is_whitespace) {
        return Err(invalid(
            key,
            shown,
            "the host part contains whitespace",
            fix,
        ));
    }
    if !matches!(kind, AddrKind::Listen { .. }) {
        if host.contains(',') {
            return Err(invalid(
                key,
                shown,
                "lists several hosts; other nodes need exactly one address",
                format!("set {key} to one address of this host, e.g. {key}: {example}"),
            ));
        }
        if WILDCARDS.contains(&host) {
            return Err(invalid(
                key,
                shown,
                "is a wildcard bind address that other nodes cannot connect to",
                format!(
                    "set {key} to an address of this host the other nodes reach, e.g. {key}: {example}"
                ),
            ));
        }
    }
    Ok(())
}

/// `scope` and `name` each become one segment of DCS keys (`/<namespace>/<scope>/members/<name>`).
fn check_segment(key: &str, value: &str, example: &str, what: &str) -> Result<(), ConfigError> {
    if value.trim().is_empty() {
        return Err(invalid(
            key,
            q(value),
            format!("must not be empty; it is {what}"),
            format!("set it, e.g. {key}: {example}"),
        ));
    }
    if value.contains('/') || value.chars().any(char::is_control) {
        let suggestion: String = value
            .chars()
            .map(|c| if c == '/' || c.is_control() { '-' } else { c })
            .collect();
        return Err(invalid(
            key,
            q(value),
            "must not contain `/` or control characters: it forms one segment of the DCS keys /<namespace>/<scope>/members/<name>",
            format!("rename it, e.g. {key}: {}", q(&suggestion)),
        ));
    }
    Ok(())
}

fn check_absolute(key: &str, p: &Path, example: &str) -> Result<(), ConfigError> {
    if !p.is_absolute() {
        return Err(invalid(
            key,
            qp(p),
            "must be an absolute path (Regent does not resolve paths against its working directory)",
            format!("write the full path, e.g. {key}: {example}"),
        ));
    }
    Ok(())
}

impl Config {
    /// Check every value without touching the filesystem; the first problem found is returned.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_segment(
            "scope",
            &self.scope,
            "batman",
            "the cluster name shared by all nodes",
        )?;
        check_segment(
            "name",
            &self.name,
            "pg-node1",
            "this node's member name, unique in the cluster",
        )?;

        check_host_port(
            "restapi.listen",
            &self.restapi.listen,
            AddrKind::Listen { multi: false },
            "0.0.0.0:8008",
        )?;
        check_host_port(
            "restapi.connect_address",
            self.restapi_connect(),
            AddrKind::Connect {
                defaulted_from: self
                    .restapi
                    .connect_address
                    .is_none()
                    .then_some("restapi.listen"),
            },
            "10.0.0.11:8008",
        )?;

        self.validate_restapi()?;
        self.validate_ctl()?;
        self.validate_etcd()?;
        self.validate_timing()?;

        let pg = &self.postgresql;
        check_host_port(
            "postgresql.listen",
            &pg.listen,
            AddrKind::Listen { multi: true },
            "0.0.0.0:5432",
        )?;
        check_host_port(
            "postgresql.connect_address",
            self.pg_connect(),
            AddrKind::Connect {
                defaulted_from: pg.connect_address.is_none().then_some("postgresql.listen"),
            },
            "10.0.0.11:5432",
        )?;
        check_absolute(
            "postgresql.data_dir",
            &pg.data_dir,
            "/var/lib/postgresql/16/main",
        )?;
        if pg.data_dir.parent().is_none() {
            return Err(invalid(
                "postgresql.data_dir",
                qp(&pg.data_dir),
                "must not be the root directory",
                "use a directory of its own, e.g. postgresql.data_dir: /var/lib/postgresql/16/main",
            ));
        }
        if let Some(bin) = &pg.bin_dir {
            check_absolute("postgresql.bin_dir", bin, "/usr/lib/postgresql/16/bin")?;
        }
        let auth = &pg.authentication;
        for (key, cred, example) in [
            (
                "postgresql.authentication.superuser.username",
                Some(&auth.superuser),
                "postgres",
            ),
            (
                "postgresql.authentication.replication.username",
                Some(&auth.replication),
                "replicator",
            ),
            (
                "postgresql.authentication.rewind.username",
                auth.rewind.as_ref(),
                "rewind_user",
            ),
        ] {
            if let Some(c) = cred
                && c.username.trim().is_empty()
            {
                return Err(invalid(
                    key,
                    q(&c.username),
                    "must not be empty",
                    format!("set the role name, e.g. {key}: {example}"),
                ));
            }
        }
        if let Some(user) = &pg.os_user
            && user.trim().is_empty()
        {
            return Err(invalid(
                "postgresql.os_user",
                q(user),
                "must not be empty",
                "set the OS account PostgreSQL runs as, e.g. postgresql.os_user: postgres, or remove the key",
            ));
        }

        if let Some(p) = self.tags.failover_priority
            && p < 0
        {
            return Err(invalid(
                "tags.failover_priority",
                p,
                "must be 0 or greater (0 = never promote this node, higher wins among equally caught-up replicas)",
                "set tags.failover_priority: 1 (the default), or tags.nofailover: true to keep this node from ever promoting",
            ));
        }

        if let Some(run) = &self.regent.run_dir {
            check_absolute("regent.run_dir", run, "/var/lib/postgresql/16")?;
        }
        if let Some(dir) = &self.regent.policies_dir {
            check_absolute("regent.policies_dir", dir, "/etc/regent/policies")?;
        }
        if !self.regent.policies.is_empty() && self.regent.policies_dir.is_none() {
            return Err(ConfigError::Invalid {
                key: "regent.policies".into(),
                value: format!("{:?}", self.regent.policies),
                problem: "names policies but regent.policies_dir is not set".into(),
                fix: "set regent.policies_dir to the directory holding NAME.toml and NAME.wasm, \
                      e.g. regent.policies_dir: /etc/regent/policies"
                    .into(),
            });
        }
        if self.regent.failed_loops_before_handover == 0 {
            return Err(ConfigError::Invalid {
                key: "regent.failed_loops_before_handover".into(),
                value: "0".into(),
                problem: "must be at least 1".into(),
                fix: "set it to the number of consecutive failed health verdicts after which \
                      the leader hands over, e.g. 2"
                    .into(),
            });
        }
        if let Some(bad) = self
            .regent
            .policies
            .iter()
            .find(|n| n.is_empty() || n.contains('/') || n.contains('.'))
        {
            return Err(ConfigError::Invalid {
                key: "regent.policies".into(),
                value: bad.clone(),
                problem: "is not a policy name (the manifest file name without .toml)".into(),
                fix: "list names like zone-aware, one per manifest policies_dir/NAME.toml".into(),
            });
        }
        Ok(())
    }

    /// `(key path, endpoint)` pairs from the section `etcd_endpoints` reads.
    fn etcd_endpoint_keys(&self) -> Option<(&'static str, Vec<(String, String)>)> {
        let (name, sec) = match (&self.etcd3, &self.etcd) {
            (Some(s), _) => ("etcd3", s),
            (None, Some(s)) => ("etcd", s),
            (None, None) => return None,
        };
        let mut out = Vec::new();
        match &sec.hosts {
            Some(HostList::List(v)) => out.extend(
                v.iter()
                    .enumerate()
                    .map(|(i, h)| (format!("{name}.hosts[{i}]"), h.trim().to_string())),
            ),
            Some(HostList::Comma(s)) => out.extend(
                s.split(',')
                    .map(str::trim)
                    .filter(|h| !h.is_empty())
                    .map(|h| (format!("{name}.hosts"), h.to_string())),
            ),
            None => {}
        }
        if out.is_empty()
            && let Some(h) = &sec.host
        {
            out.push((format!("{name}.host"), h.trim().to_string()));
        }
        Some((name, out))
    }

    fn validate_etcd(&self) -> Result<(), ConfigError> {
        let Some((section, endpoints)) = self.etcd_endpoint_keys() else {
            return Err(ConfigError::Missing {
                key: "etcd3".into(),
                example: "`etcd3: {hosts: 10.0.0.1:2379,10.0.0.2:2379,10.0.0.3:2379}` at the top level (Regent needs etcd as its DCS)".into(),
            });
        };
        if endpoints.is_empty() {
            return Err(invalid(
                format!("{section}.hosts"),
                "(empty)",
                "at least one etcd endpoint is required",
                format!(
                    "list the etcd members, e.g. {section}: {{hosts: 10.0.0.1:2379,10.0.0.2:2379,10.0.0.3:2379}}"
                ),
            ));
        }
        for (key, ep) in &endpoints {
            check_host_port(key, ep, AddrKind::Etcd, "10.0.0.1:2379")?;
        }
        let sec = self.etcd3.as_ref().or(self.etcd.as_ref());
        if let Some(proto) = sec.and_then(|s| s.protocol.as_deref())
            && !matches!(proto, "http" | "https")
        {
            return Err(invalid(
                format!("{section}.protocol"),
                q(proto),
                "allowed: http, https",
                format!("set {section}.protocol: http (or https for TLS), or remove the key"),
            ));
        }
        Ok(())
    }

    fn validate_timing(&self) -> Result<(), ConfigError> {
        let d = &self.bootstrap.dcs;
        check_timing("bootstrap.dcs.", d.ttl, d.loop_wait, d.retry_timeout)?;
        check_sync_count("bootstrap.dcs.", d.synchronous_node_count)
    }
}

/// `{prefix}synchronous_node_count`: at least one standby (Patroni's rule).
fn check_sync_count(prefix: &str, n: u64) -> Result<(), ConfigError> {
    if n < 1 {
        return Err(invalid(
            format!("{prefix}synchronous_node_count"),
            n,
            "must be at least 1 (the number of standbys the leader keeps synchronous)",
            format!(
                "set {prefix}synchronous_node_count: 1 (the default), or turn synchronous mode off with synchronous_mode: off"
            ),
        ));
    }
    Ok(())
}

/// The timing rule for the keys `{prefix}ttl`, `{prefix}loop_wait` and `{prefix}retry_timeout`.
fn check_timing(prefix: &str, ttl: u64, lw: u64, rt: u64) -> Result<(), ConfigError> {
    if ttl < MIN_TTL {
        return Err(invalid(
            format!("{prefix}ttl"),
            ttl,
            format!("must be at least {MIN_TTL} seconds (Regent accepts ttl down to {MIN_TTL} s)"),
            format!(
                "set {prefix}ttl: 30 (the default), and keep loop_wait + 2 × retry_timeout <= ttl"
            ),
        ));
    }
    if lw < 1 {
        return Err(invalid(
            format!("{prefix}loop_wait"),
            lw,
            "must be at least 1 second",
            format!(
                "set {prefix}loop_wait: 10 (the default) or any value >= 1 with loop_wait + 2 × retry_timeout <= ttl"
            ),
        ));
    }
    if rt < 1 {
        return Err(invalid(
            format!("{prefix}retry_timeout"),
            rt,
            "must be at least 1 second",
            format!(
                "set {prefix}retry_timeout: 10 (the default) or any value >= 1 with loop_wait + 2 × retry_timeout <= ttl"
            ),
        ));
    }
    let need = lw.saturating_add(rt.saturating_mul(2));
    if need > ttl {
        let (new_lw, new_rt) = timing_fix_keeping_ttl(ttl, lw, rt);
        let keep_ttl = match (new_lw != lw, new_rt != rt) {
            (true, true) => format!("loop_wait: {new_lw} and retry_timeout: {new_rt}"),
            (true, false) => format!("loop_wait: {new_lw}"),
            _ => format!("retry_timeout: {new_rt}"),
        };
        return Err(invalid(
            format!("{prefix}ttl"),
            format!("{ttl} with loop_wait {lw} and retry_timeout {rt}"),
            format!(
                "loop_wait + 2 × retry_timeout = {need} exceeds ttl {ttl} (allowed: loop_wait + 2 × retry_timeout <= ttl); each cycle the leader sleeps loop_wait, then reads the cluster state and renews its leader lease, each DCS call taking up to retry_timeout, and all of that must fit in one ttl, otherwise the lease can expire while this primary still runs and a replica could promote before the old primary demotes"
            ),
            format!(
                "set {prefix}ttl: {need} or more, or keep ttl: {ttl} and set {keep_ttl} (Regent never adjusts these values by itself)"
            ),
        ));
    }
    Ok(())
}

/// Check a dynamic configuration (the DCS `config` key, as `PATCH`/`PUT /config` would leave
/// it): the keys Regent reads must have the right types, and the timing must satisfy
/// `loop_wait + 2 × retry_timeout <= ttl`. Keys Regent does not read are left alone. Errors
/// name the key as it appears in the JSON document (`ttl`, `postgresql.use_slots`).
pub fn validate_dynamic(config: &serde_json::Value) -> Result<DynamicConfig, ConfigError> {
    if !config.is_object() {
        return Err(ConfigError::WrongType {
            key: "(top level)".into(),
            message: "the dynamic configuration must be a JSON object".into(),
            at: None,
            fix: "send a JSON object such as {\"ttl\": 30, \"loop_wait\": 10}".into(),
        });
    }
    let d: DynamicConfig = serde_path_to_error::deserialize(config).map_err(|e| {
        let key = e.path().to_string();
        ConfigError::WrongType {
            key: if key == "." {
                "(top level)".into()
            } else {
                key
            },
            message: humanize_serde(&e.inner().to_string()),
            at: None,
            fix: "change the value to what is expected".into(),
        }
    })?;
    check_timing("", d.ttl, d.loop_wait, d.retry_timeout)?;
    check_sync_count("", d.synchronous_node_count)?;
    Ok(d)
}

/// `(loop_wait, retry_timeout)` that satisfy `loop_wait + 2 × retry_timeout <= ttl` for a
/// `ttl >= MIN_TTL`: shorten the sleep if that is enough, else the retry budget, else both.
fn timing_fix_keeping_ttl(ttl: u64, lw: u64, rt: u64) -> (u64, u64) {
    if ttl >= rt.saturating_mul(2).saturating_add(1) {
        (ttl - 2 * rt, rt)
    } else if ttl >= lw.saturating_add(2) {
        (lw, (ttl - lw) / 2)
    } else {
        (1, (ttl - 1) / 2)
    }
}

// ---------------------------------------------------------------------------------------------
// REST API and ctl sections
// ---------------------------------------------------------------------------------------------

fn check_basic_auth(key: &str, a: &BasicAuth) -> Result<(), ConfigError> {
    let user_key = format!("{key}.username");
    if a.username.trim().is_empty() {
        return Err(invalid(
            &user_key,
            q(&a.username),
            "must not be empty",
            format!("set a user name, e.g. {user_key}: admin"),
        ));
    }
    if a.username.contains(':') {
        return Err(invalid(
            &user_key,
            q(&a.username),
            "must not contain `:` (HTTP Basic auth separates the user name from the password with it)",
            format!("choose a user name without `:`, e.g. {user_key}: admin"),
        ));
    }
    let pass_key = format!("{key}.password");
    for (k, v, shown) in [
        (&user_key, &a.username, q(&a.username)),
        (&pass_key, &a.password, "(hidden)".to_string()),
    ] {
        if v.chars().any(char::is_control) {
            return Err(invalid(
                k,
                shown,
                "contains control characters, which HTTP clients cannot send",
                format!("use printable characters only in {k}"),
            ));
        }
    }
    if a.password.is_empty() {
        return Err(invalid(
            &pass_key,
            "\"\"",
            "must not be empty: an empty password protects nothing",
            format!(
                "set a long random password in {pass_key}, or remove {key} to leave the endpoints without authentication"
            ),
        ));
    }
    Ok(())
}

fn check_keyfile_password(key: &str, keyfile_key: &str, set: bool) -> Result<(), ConfigError> {
    if set {
        return Err(invalid(
            key,
            "(hidden)",
            "encrypted private keys are not supported by Regent",
            format!(
                "decrypt the key (openssl pkey -in encrypted.pem -out key.pem), make it readable only by the user running Regent, point {keyfile_key} at it and remove {key}"
            ),
        ));
    }
    Ok(())
}

/// An HTTP header name (an RFC 9110 token) and a value without control characters.
fn check_header(section: &str, name: &str, value: &str) -> Result<(), ConfigError> {
    let key = format!("{section}.{name}");
    let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    if name.is_empty() || !name.chars().all(token) {
        return Err(invalid(
            &key,
            q(name),
            "is not a valid HTTP header name (letters, digits and !#$%&'*+-.^_`|~ only)",
            format!("rename the header, e.g. {section}: {{X-Frame-Options: DENY}}"),
        ));
    }
    if value.chars().any(|c| c.is_control() && c != '\t') || !value.is_ascii() {
        return Err(invalid(
            &key,
            q(value),
            "is not a valid HTTP header value (printable ASCII only, no line breaks)",
            format!("remove the offending characters from {key}"),
        ));
    }
    Ok(())
}

/// The keys `restapi` and `ctl` share: credentials, TLS files (absolute paths; a key only with
/// a certificate; no encrypted keys).
struct AuthAndTls<'a> {
    section: &'static str,
    auth: Option<&'a BasicAuth>,
    certfile: &'a Option<PathBuf>,
    keyfile: &'a Option<PathBuf>,
    /// `cafile` (restapi) or `cacert` (ctl).
    ca: (&'static str, &'a Option<PathBuf>),
    keyfile_password: bool,
    /// What the certificate is for, in messages.
    cert_use: &'static str,
}

impl AuthAndTls<'_> {
    fn check(&self) -> Result<(), ConfigError> {
        let s = self.section;
        if let Some(a) = self.auth {
            check_basic_auth(&format!("{s}.authentication"), a)?;
        }
        for (leaf, path) in [
            ("certfile", self.certfile),
            ("keyfile", self.keyfile),
            (self.ca.0, self.ca.1),
        ] {
            if let Some(p) = path {
                let key = format!("{s}.{leaf}");
                check_absolute(&key, p, &format!("/etc/regent/tls/{leaf}.pem"))?;
            }
        }
        if let (Some(key), None) = (self.keyfile, self.certfile) {
            return Err(invalid(
                format!("{s}.keyfile"),
                qp(key),
                format!(
                    "is set but {s}.certfile is not, so there is no certificate {}",
                    self.cert_use
                ),
                format!("set {s}.certfile to the certificate of this key, or remove {s}.keyfile"),
            ));
        }
        check_keyfile_password(
            &format!("{s}.keyfile_password"),
            &format!("{s}.keyfile"),
            self.keyfile_password,
        )
    }
}

impl Config {
    fn validate_restapi(&self) -> Result<(), ConfigError> {
        let r = &self.restapi;
        AuthAndTls {
            section: "restapi",
            auth: r.authentication.as_ref(),
            certfile: &r.certfile,
            keyfile: &r.keyfile,
            ca: ("cafile", &r.cafile),
            keyfile_password: r.keyfile_password.is_some(),
            cert_use: "to serve HTTPS with",
        }
        .check()?;
        if let Some(v) = &r.verify_client {
            match v.trim().to_ascii_lowercase().as_str() {
                "none" => {}
                "optional" | "required" => {
                    return Err(invalid(
                        "restapi.verify_client",
                        q(v),
                        "client certificate verification is not supported by Regent yet",
                        "remove restapi.verify_client (or set it to none) and protect the mutating endpoints with restapi.authentication and restapi.allowlist",
                    ));
                }
                _ => {
                    return Err(invalid(
                        "restapi.verify_client",
                        q(v),
                        "is not one of none, optional, required",
                        "remove restapi.verify_client or set it to none",
                    ));
                }
            }
        }
        for (i, entry) in r.allowlist.iter().enumerate() {
            AllowEntry::parse(entry).map_err(|problem| {
                invalid(
                    format!("restapi.allowlist[{i}]"),
                    q(entry),
                    problem,
                    "write an IP address (10.0.0.5), a network (10.0.0.0/24, fd00::/8) or a host name (app1.example.com)",
                )
            })?;
        }
        for (section, headers) in [
            ("restapi.http_extra_headers", &r.http_extra_headers),
            ("restapi.https_extra_headers", &r.https_extra_headers),
        ] {
            for (name, value) in headers {
                check_header(section, name, value)?;
            }
        }
        Ok(())
    }

    fn validate_ctl(&self) -> Result<(), ConfigError> {
        let c = &self.ctl;
        AuthAndTls {
            section: "ctl",
            auth: c.authentication.as_ref(),
            certfile: &c.certfile,
            keyfile: &c.keyfile,
            ca: ("cacert", &c.cacert),
            keyfile_password: c.keyfile_password.is_some(),
            cert_use: "to present as a client",
        }
        .check()
    }
}

// ---------------------------------------------------------------------------------------------
// Environment checks (read-only filesystem look-ups)
// ---------------------------------------------------------------------------------------------

/// The PostgreSQL programs Regent runs; a bin directory must hold all of them.
pub const PG_BINARIES: [&str; 6] = [
    "postgres",
    "initdb",
    "pg_ctl",
    "pg_basebackup",
    "pg_rewind",
    "pg_controldata",
];

/// Where Debian and Ubuntu install PostgreSQL: `<root>/<major>/bin`.
const DEBIAN_PG_ROOT: &str = "/usr/lib/postgresql";

/// Check, without changing anything, that this machine can run `cfg`: the data directory's parent
/// exists, and a bin directory with all of [`PG_BINARIES`] is found (see [`resolve_bin_dir`]).
pub fn check_environment(cfg: &Config) -> Result<(), ConfigError> {
    check_data_dir(cfg)?;
    resolve_bin_dir(cfg)?;
    Ok(())
}

fn check_data_dir(cfg: &Config) -> Result<(), ConfigError> {
    let data = &cfg.postgresql.data_dir;
    let key = "postgresql.data_dir";
    let owner = cfg.postgresql.os_user.as_deref().unwrap_or("postgres");
    let parent = match data.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => {
            return Err(environment(
                key,
                qp(data),
                "has no parent directory",
                "use an absolute path, e.g. postgresql.data_dir: /var/lib/postgresql/16/main",
            ));
        }
    };
    match std::fs::metadata(parent) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(environment(
                key,
                qp(data),
                format!("the parent {} exists but is not a directory", qp(parent)),
                "move that file away or choose another postgresql.data_dir",
            ));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(environment(
                key,
                qp(data),
                format!("the parent directory {} does not exist", parent.display()),
                format!(
                    "create it: mkdir -p {p} && chown {owner}: {p}",
                    p = parent.display()
                ),
            ));
        }
        Err(e) => {
            return Err(environment(
                key,
                qp(data),
                format!(
                    "cannot inspect the parent directory {}: {e}",
                    parent.display()
                ),
                format!(
                    "make {} accessible to the user running Regent",
                    parent.display()
                ),
            ));
        }
    }
    match std::fs::metadata(data) {
        Ok(m) if !m.is_dir() => Err(environment(
            key,
            qp(data),
            "exists but is not a directory",
            "move that file away or choose another postgresql.data_dir",
        )),
        _ => Ok(()),
    }
}

/// The directory holding the PostgreSQL programs: `postgresql.bin_dir` if set, else the
/// directory of `initdb` on `PATH`, else the newest `/usr/lib/postgresql/<version>/bin`; it must
/// contain every program in [`PG_BINARIES`].
pub fn resolve_bin_dir(cfg: &Config) -> Result<PathBuf, ConfigError> {
    find_bin_dir(cfg.postgresql.bin_dir.as_deref())
}

/// [`resolve_bin_dir`] for a `postgresql.bin_dir` value (`None`: not set), without a whole
/// configuration (`regent lab` finds the programs before it writes one).
pub fn find_bin_dir(bin_dir: Option<&Path>) -> Result<PathBuf, ConfigError> {
    resolve_bin_dir_in(bin_dir, std::env::var_os("PATH"), Path::new(DEBIAN_PG_ROOT))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

fn first_missing_binary(dir: &Path) -> Option<&'static str> {
    PG_BINARIES
        .into_iter()
        .find(|b| !is_executable(&dir.join(b)))
}

/// `<root>/<version>/bin` directories, newest version first.
fn debian_bin_dirs(root: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(root) else {
        return Vec::new();
    };
    let mut found: Vec<(Vec<u64>, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let version: Option<Vec<u64>> = name.split('.').map(|p| p.parse().ok()).collect();
            let bin = e.path().join("bin");
            version.filter(|_| bin.is_dir()).map(|v| (v, bin))
        })
        .collect();
    found.sort_by(|a, b| b.0.cmp(&a.0));
    found.into_iter().map(|(_, p)| p).collect()
}

fn resolve_bin_dir_in(
    configured: Option<&Path>,
    path_var: Option<OsString>,
    debian_root: &Path,
) -> Result<PathBuf, ConfigError> {
    let key = "postgresql.bin_dir";
    let debian = debian_bin_dirs(debian_root);
    let example = debian
        .iter()
        .find(|d| first_missing_binary(d).is_none())
        .map(|d| d.display().to_string())
        .unwrap_or_else(|| format!("{DEBIAN_PG_ROOT}/15/bin"));
    let needs = PG_BINARIES.join(", ");

    if let Some(dir) = configured {
        if !dir.is_dir() {
            return Err(environment(
                key,
                qp(dir),
                "is not an existing directory",
                format!(
                    "install the PostgreSQL server package or point postgresql.bin_dir at its bin directory, e.g. {example}"
                ),
            ));
        }
        return match first_missing_binary(dir) {
            None => Ok(dir.to_path_buf()),
            Some(bin) => Err(environment(
                key,
                qp(dir),
                format!(
                    "has no executable {bin} (searched {}; Regent needs {needs})",
                    dir.display()
                ),
                format!(
                    "point postgresql.bin_dir at the PostgreSQL server's bin directory, e.g. {example}, or install the server package"
                ),
            )),
        };
    }

    // The directory of the first `initdb` on PATH, and where it really lives if it is a link.
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(path_var) = path_var
        && let Some(initdb) = std::env::split_paths(&path_var)
            .filter(|d| d.is_absolute())
            .map(|d| d.join("initdb"))
            .find(|p| is_executable(p))
    {
        if let Some(dir) = initdb.parent() {
            candidates.push(dir.to_path_buf());
        }
        if let Ok(real) = std::fs::canonicalize(&initdb)
            && let Some(dir) = real.parent()
            && !candidates.iter().any(|c| c == dir)
        {
            candidates.push(dir.to_path_buf());
        }
    }
    candidates.extend(debian);

    if let Some(dir) = candidates
        .iter()
        .find(|d| first_missing_binary(d).is_none())
    {
        return Ok(dir.clone());
    }
    let problem = match candidates.first() {
        Some(best) => format!(
            "searched the directory of initdb on PATH and {DEBIAN_PG_ROOT}/<version>/bin, but none holds all of {needs}: {} has no executable {}",
            best.display(),
            first_missing_binary(best).unwrap_or("?"),
        ),
        None => format!(
            "initdb is not on PATH and no {DEBIAN_PG_ROOT}/<version>/bin exists, so the PostgreSQL programs were not found"
        ),
    };
    Err(environment(
        key,
        "(not set)",
        problem,
        format!(
            "install the PostgreSQL server package, or set postgresql.bin_dir to the directory holding {needs}, e.g. {example}"
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    const FIXTURE: &str = include_str!("config_fixtures/postgres0.yml");

    /// The fixture with edits: `(dotted.path, YAML value)`; a value of `None` removes the key.
    fn edited(edits: &[(&str, Option<&str>)]) -> String {
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

    fn parse_edited(edits: &[(&str, Option<&str>)]) -> Result<Loaded, ConfigError> {
        parse(&edited(edits))
    }

    fn err_of(edits: &[(&str, Option<&str>)]) -> ConfigError {
        match parse_edited(edits) {
            Ok(l) => panic!("expected an error for {edits:?}, got {:?}", l.config),
            Err(e) => e,
        }
    }

    fn invalid_key(e: &ConfigError) -> &str {
        match e {
            ConfigError::Invalid { key, .. } => key,
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    fn timing(ttl: u64, lw: u64, rt: u64) -> Result<Loaded, ConfigError> {
        let (t, l, r) = (ttl.to_string(), lw.to_string(), rt.to_string());
        parse_edited(&[
            ("bootstrap.dcs.ttl", Some(&t)),
            ("bootstrap.dcs.loop_wait", Some(&l)),
            ("bootstrap.dcs.retry_timeout", Some(&r)),
        ])
    }

    // ---- parsing and warnings --------------------------------------------------------------

    #[test]
    fn patroni_style_config_parses_without_warnings() {
        let l = parse(FIXTURE).expect("fixture is valid");
        assert_eq!(l.warnings, Vec::<String>::new());
        let c = &l.config;
        assert_eq!(c.scope, "batman");
        assert_eq!(c.name, "postgresql0");
        assert_eq!(c.dcs_prefix(), "/service/batman/");
        assert_eq!(
            c.etcd_endpoints(),
            vec!["127.0.0.1:2379", "127.0.0.2:2379", "127.0.0.3:2379"]
        );
        assert_eq!(c.restapi_connect(), "127.0.0.1:8008");
        assert_eq!(c.pg_connect(), "127.0.0.1:5432");
        let dcs = &c.bootstrap.dcs;
        assert_eq!((dcs.ttl, dcs.loop_wait, dcs.retry_timeout), (30, 10, 10));
        assert_eq!(dcs.synchronous_mode, SyncMode::Off);
        assert!(dcs.check_timeline);
        assert!(dcs.postgresql.use_pg_rewind);
        assert_eq!(dcs.postgresql.pg_hba.len(), 2);
        assert_eq!(
            dcs.postgresql.parameters.get("hot_standby"),
            Some(&Value::from("on"))
        );
        assert_eq!(c.bootstrap.initdb.len(), 2);
        assert!(
            matches!(&c.bootstrap.initdb[0], InitdbOption::Value(m) if m.get("encoding") == Some(&Value::from("UTF8")))
        );
        assert_eq!(
            c.bootstrap.initdb[1],
            InitdbOption::Flag("data-checksums".into())
        );
        assert_eq!(
            c.postgresql.authentication.superuser.password.as_deref(),
            Some("zalando")
        );
        assert_eq!(c.tags.failover_priority, Some(1));
        assert_eq!(c.tags.other.get("zone"), Some(&Value::from("eu-1")));
        assert!(c.tags.other.contains_key("clonefrom"));
        assert_eq!(c.run_dir(), PathBuf::from("/var/lib/postgresql/data"));
    }

    #[test]
    fn unknown_keys_warn_and_are_not_fatal() {
        let l = parse_edited(&[
            ("postgresql.foo", Some("1")),
            ("bogus", Some("x")),
            ("restapi.lsiten", Some("0.0.0.0:8008")),
            ("bootstrap.dcs.postgresql.use_slot", Some("true")),
        ])
        .expect("unknown keys are not fatal");
        assert_eq!(l.warnings.len(), 4, "{:?}", l.warnings);
        for k in [
            "postgresql.foo",
            "bogus",
            "restapi.lsiten",
            "bootstrap.dcs.postgresql.use_slot",
        ] {
            let prefix = format!("unknown key {k} ignored");
            assert!(
                l.warnings.iter().any(|w| w.starts_with(&prefix)),
                "no warning for {k}: {:?}",
                l.warnings
            );
        }
    }

    #[test]
    fn free_maps_take_any_key_without_warnings() {
        let l = parse_edited(&[
            ("tags.rack", Some("r12")),
            ("postgresql.parameters.wal_compression", Some("lz4")),
            (
                "bootstrap.dcs.postgresql.parameters.shared_buffers",
                Some("1GB"),
            ),
        ])
        .expect("valid");
        assert!(l.warnings.is_empty(), "{:?}", l.warnings);
        assert_eq!(l.config.tags.other.get("rack"), Some(&Value::from("r12")));
        assert!(
            l.config
                .postgresql
                .parameters
                .contains_key("wal_compression")
        );
        assert_eq!(
            l.config
                .bootstrap
                .dcs
                .postgresql
                .parameters
                .get("shared_buffers"),
            Some(&Value::from("1GB"))
        );
    }

    #[test]
    fn known_patroni_keys_warn_as_not_supported() {
        let keys = [
            ("log", "{level: INFO}"),
            ("watchdog", "{mode: automatic}"),
            ("restapi.server_tokens", "minimal"),
            ("restapi.ciphers", "ECDHE-RSA-AES256-GCM-SHA384"),
            ("restapi.request_queue_size", "5"),
            ("etcd3.username", "root"),
            ("etcd3.password", "secret"),
            ("bootstrap.users", "{admin: {password: x}}"),
            ("bootstrap.post_bootstrap", "/usr/local/bin/setup.sh"),
            ("postgresql.callbacks", "{on_start: /bin/true}"),
            (
                "postgresql.create_replica_methods",
                "[pgbackrest, basebackup]",
            ),
            ("postgresql.pgbackrest", "{command: /bin/true}"),
            ("postgresql.pgpass", "/tmp/pgpass0"),
            ("postgresql.authentication.superuser.sslmode", "require"),
        ];
        let edits: Vec<(&str, Option<&str>)> = keys.iter().map(|(k, v)| (*k, Some(*v))).collect();
        let l = parse_edited(&edits).expect("unsupported keys are not fatal");
        assert_eq!(l.warnings.len(), keys.len(), "{:?}", l.warnings);
        for (k, _) in keys {
            let w = l
                .warnings
                .iter()
                .find(|w| w.starts_with(&format!("{k}: ")))
                .unwrap_or_else(|| panic!("no warning for {k}: {:?}", l.warnings));
            assert!(w.contains("not supported by Regent yet, ignored"), "{w}");
        }
        assert!(!l.warnings.iter().any(|w| w.contains("unknown key")));
    }

    #[test]
    fn misplaced_dynamic_keys_say_where_they_belong() {
        let l = parse_edited(&[
            ("ttl", Some("20")),
            ("postgresql.use_pg_rewind", Some("true")),
        ])
        .expect("valid");
        assert_eq!(l.warnings.len(), 2, "{:?}", l.warnings);
        assert!(
            l.warnings
                .iter()
                .any(|w| w.starts_with("ttl: ignored") && w.contains("bootstrap.dcs.ttl"))
        );
        assert!(l.warnings.iter().any(|w| {
            w.starts_with("postgresql.use_pg_rewind: ignored")
                && w.contains("bootstrap.dcs.postgresql.use_pg_rewind")
        }));
        // And the misplaced value is not used.
        assert_eq!(l.config.bootstrap.dcs.ttl, 30);
    }

    #[test]
    fn etcd_v2_section_is_read_with_a_warning() {
        let l = parse_edited(&[("etcd3", None), ("etcd", Some("{host: '10.0.0.1:2379'}"))])
            .expect("valid");
        assert_eq!(l.config.etcd_endpoints(), vec!["10.0.0.1:2379"]);
        assert_eq!(l.warnings.len(), 1, "{:?}", l.warnings);
        assert!(l.warnings[0].starts_with("etcd: ") && l.warnings[0].contains("etcd3"));

        let both = parse_edited(&[("etcd", Some("{host: '10.9.9.9:2379'}"))]).expect("valid");
        assert_eq!(both.config.etcd_endpoints().len(), 3, "etcd3 wins");
        assert!(both.warnings[0].contains("ignored because etcd3 is also set"));
    }

    #[test]
    fn empty_sections_mean_unset() {
        let l = parse_edited(&[("tags", Some("~")), ("bootstrap.dcs", Some("~"))]).expect("valid");
        assert_eq!(l.config.tags, Tags::default());
        assert_eq!(l.config.bootstrap.dcs, DynamicConfig::default());
    }

    // ---- serde errors ----------------------------------------------------------------------

    #[test]
    fn wrong_type_names_the_key_path_and_line() {
        let text = edited(&[("postgresql.data_dir", Some("5"))]);
        let e = parse(&text).expect_err("integer data_dir");
        let ConfigError::WrongType { key, at, .. } = &e else {
            panic!("expected WrongType, got {e:?}");
        };
        assert_eq!(key, "postgresql.data_dir");
        let line = text
            .lines()
            .position(|l| l.trim_start().starts_with("data_dir:"))
            .expect("line present")
            + 1;
        assert_eq!(at.map(|p| p.line), Some(line));
        assert!(
            e.to_string()
                .starts_with("postgresql.data_dir: invalid type: integer `5`, expected a path"),
            "{e}"
        );

        let text = edited(&[(
            "postgresql.authentication.replication.username",
            Some("[a]"),
        )]);
        let e = parse(&text).expect_err("list username");
        let ConfigError::WrongType { key, at, .. } = &e else {
            panic!("expected WrongType, got {e:?}");
        };
        assert_eq!(key, "postgresql.authentication.replication.username");
        let lines: Vec<&str> = text.lines().collect();
        let line = at.expect("located").line;
        assert!(lines[line - 1].contains("username:"), "{line}: {text}");
        assert!(
            lines[..line - 1]
                .iter()
                .rev()
                .find(|l| l.trim_end().ends_with(':'))
                .is_some_and(|l| l.contains("replication")),
            "the replication username, not another one: line {line} in {text}"
        );

        let e = err_of(&[("bootstrap.dcs.ttl", Some("thirty"))]);
        assert!(matches!(&e, ConfigError::WrongType { key, .. } if key == "bootstrap.dcs.ttl"));
        assert!(
            e.to_string().contains("expected a whole number >= 0"),
            "{e}"
        );

        let e = err_of(&[("etcd3.hosts", Some("['10.0.0.1:2379', 2379]"))]);
        assert!(
            matches!(&e, ConfigError::WrongType { key, .. } if key == "etcd3.hosts[1]"),
            "{e:?}"
        );

        let e = err_of(&[("tags.nofailover", Some("maybe"))]);
        assert!(matches!(&e, ConfigError::WrongType { key, .. } if key == "tags.nofailover"));

        let e = err_of(&[("bootstrap.dcs", Some("fast"))]);
        assert!(matches!(&e, ConfigError::WrongType { key, .. } if key == "bootstrap.dcs"));
        assert!(!e.to_string().contains("struct"), "no Rust type names: {e}");
    }

    #[test]
    fn locate_key_follows_indentation() {
        let text = "scope: a\n# comment\nbootstrap:\n  dcs:\n    postgresql:\n      use_slots: x\n  initdb:\n  - data-checksums\npostgresql:\n  use_slots: y\n  data_dir: 5\n";
        let pos = |p: &str| locate_key(text, p).map(|t| (t.line, t.column));
        assert_eq!(pos("postgresql.use_slots"), Some((10, 3)));
        assert_eq!(pos("bootstrap.dcs.postgresql.use_slots"), Some((6, 7)));
        assert_eq!(pos("postgresql.data_dir"), Some((11, 3)));
        assert_eq!(pos("bootstrap.initdb[0]"), Some((7, 3)));
        assert_eq!(pos("bootstrap.data_dir"), None, "not inside bootstrap");
        assert_eq!(pos("scope.x"), None);
        assert_eq!(
            locate_key("postgresql: {data_dir: 5}\n", "postgresql.data_dir"),
            None
        );
    }

    #[test]
    fn missing_required_keys_are_named_with_an_example() {
        let e = err_of(&[("postgresql.data_dir", None)]);
        assert!(matches!(&e, ConfigError::Missing { key, .. } if key == "postgresql.data_dir"));
        assert_eq!(
            e.to_string(),
            "postgresql.data_dir: required key is missing; add `data_dir: /var/lib/postgresql/16/main` under `postgresql:`"
        );
        let e = err_of(&[("scope", None)]);
        assert!(matches!(&e, ConfigError::Missing { key, .. } if key == "scope"));
        let e = err_of(&[("postgresql.authentication.replication.username", None)]);
        assert!(
            matches!(&e, ConfigError::Missing { key, .. } if key == "postgresql.authentication.replication.username")
        );
        let e = err_of(&[("etcd3", None)]);
        assert!(matches!(&e, ConfigError::Missing { key, .. } if key == "etcd3"));
    }

    #[test]
    fn yaml_syntax_errors_carry_line_and_column() {
        let e = parse("scope: batman\nname: [unclosed\nrestapi: {}\n").expect_err("bad YAML");
        let ConfigError::Syntax { at, .. } = &e else {
            panic!("expected Syntax, got {e:?}");
        };
        let at = at.expect("position");
        assert!(at.line >= 2, "{at}");
        assert!(
            e.to_string()
                .starts_with("config is not valid YAML (at line"),
            "{e}"
        );

        let e = parse("scope: a\nscope: b\n").expect_err("duplicate key");
        assert!(matches!(e, ConfigError::Syntax { .. }), "{e:?}");
    }

    #[test]
    fn empty_or_non_mapping_document_is_rejected() {
        for text in ["", "# only a comment\n", "- a\n- b\n"] {
            let e = parse(text).expect_err("not a config");
            assert!(
                matches!(&e, ConfigError::WrongType { key, .. } if key == "(top level)"),
                "{e:?}"
            );
        }
    }

    // ---- timing ----------------------------------------------------------------------------

    #[test]
    fn ttl_below_five_is_rejected() {
        let e = timing(4, 1, 1).expect_err("ttl 4");
        assert_eq!(invalid_key(&e), "bootstrap.dcs.ttl");
        assert!(
            e.to_string().contains("Regent accepts ttl down to 5 s"),
            "{e}"
        );
        timing(5, 1, 2).expect("ttl 5 with 1 + 2×2 is the smallest accepted");
    }

    #[test]
    fn short_ttl_with_fitting_timeouts_is_accepted() {
        let l = timing(10, 1, 3).expect("1 + 2×3 <= 10");
        let d = &l.config.bootstrap.dcs;
        assert_eq!((d.ttl, d.loop_wait, d.retry_timeout), (10, 1, 3));
    }

    #[test]
    fn timeouts_that_do_not_fit_in_ttl_are_explained_not_adjusted() {
        let e = timing(10, 5, 5).expect_err("5 + 2×5 > 10");
        assert_eq!(invalid_key(&e), "bootstrap.dcs.ttl");
        let msg = e.to_string();
        for needle in [
            "loop_wait + 2 × retry_timeout = 15 exceeds ttl 10",
            "renews its leader lease",
            "a replica could promote before the old primary demotes",
            "set bootstrap.dcs.ttl: 15 or more",
            "keep ttl: 10 and set retry_timeout: 2",
        ] {
            assert!(msg.contains(needle), "missing {needle:?} in {msg}");
        }
        // Both suggested fixes are accepted.
        timing(15, 5, 5).expect("raised ttl");
        timing(10, 5, 2).expect("lowered retry_timeout");

        let e = timing(30, 20, 10).expect_err("20 + 2×10 > 30");
        assert!(
            e.to_string().contains("keep ttl: 30 and set loop_wait: 10"),
            "{e}"
        );
    }

    #[test]
    fn suggested_timing_fixes_always_fit() {
        for ttl in MIN_TTL..=80 {
            for lw in 1..=60 {
                for rt in 1..=60 {
                    if lw + 2 * rt <= ttl {
                        continue;
                    }
                    let (l, r) = timing_fix_keeping_ttl(ttl, lw, rt);
                    assert!(
                        l >= 1 && r >= 1 && l + 2 * r <= ttl,
                        "ttl {ttl} lw {lw} rt {rt} -> {l} {r}"
                    );
                    assert!(l <= lw && r <= rt, "a fix only lowers values");
                }
            }
        }
    }

    #[test]
    fn zero_loop_wait_or_retry_timeout_is_rejected() {
        assert_eq!(
            invalid_key(&timing(30, 0, 10).expect_err("loop_wait 0")),
            "bootstrap.dcs.loop_wait"
        );
        assert_eq!(
            invalid_key(&timing(30, 10, 0).expect_err("retry_timeout 0")),
            "bootstrap.dcs.retry_timeout"
        );
        let huge = timing(30, 1, u64::MAX).expect_err("no overflow panic");
        assert_eq!(invalid_key(&huge), "bootstrap.dcs.ttl");
    }

    // ---- etcd endpoints --------------------------------------------------------------------

    #[test]
    fn comma_separated_etcd_hosts() {
        let l = parse_edited(&[(
            "etcd3.hosts",
            Some("'10.0.0.1:2379, 10.0.0.2:2379,10.0.0.3:2379'"),
        )])
        .expect("valid");
        assert_eq!(
            l.config.etcd_endpoints(),
            vec!["10.0.0.1:2379", "10.0.0.2:2379", "10.0.0.3:2379"]
        );
        assert!(matches!(
            l.config.etcd3.as_ref().and_then(|e| e.hosts.as_ref()),
            Some(HostList::Comma(_))
        ));

        let e = err_of(&[("etcd3.hosts", Some("'10.0.0.1:2379,10.0.0.2'"))]);
        assert_eq!(invalid_key(&e), "etcd3.hosts");
        assert!(e.to_string().contains("\"10.0.0.2\": has no port"), "{e}");
    }

    #[test]
    fn bad_etcd_endpoints_are_rejected() {
        let e = err_of(&[(
            "etcd3.hosts",
            Some("['10.0.0.1:2379', 'http://10.0.0.2:2379']"),
        )]);
        assert_eq!(invalid_key(&e), "etcd3.hosts[1]");
        assert!(e.to_string().contains("not a URL"), "{e}");

        let e = err_of(&[("etcd3.hosts", Some("[]"))]);
        assert_eq!(invalid_key(&e), "etcd3.hosts");

        let l = parse_edited(&[
            ("etcd3.hosts", Some("[]")),
            ("etcd3.host", Some("'10.0.0.7:2379'")),
        ])
        .expect("host is the fallback");
        assert_eq!(l.config.etcd_endpoints(), vec!["10.0.0.7:2379"]);

        let e = err_of(&[("etcd3.protocol", Some("tcp"))]);
        assert_eq!(invalid_key(&e), "etcd3.protocol");
    }

    // ---- synchronous_mode and booleans -----------------------------------------------------

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
            ("quorum", SyncMode::Quorum),
            ("Quorum", SyncMode::Quorum),
        ] {
            let l = parse_edited(&[("bootstrap.dcs.synchronous_mode", Some(yaml))])
                .unwrap_or_else(|e| panic!("{yaml}: {e}"));
            assert_eq!(l.config.bootstrap.dcs.synchronous_mode, want, "{yaml}");
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

    #[test]
    fn dynamic_config_round_trips_through_json() {
        let l = parse(FIXTURE).expect("valid");
        let json = serde_json::to_value(&l.config.bootstrap.dcs).expect("serialize");
        let back: DynamicConfig = serde_json::from_value(json).expect("deserialize");
        assert_eq!(back, l.config.bootstrap.dcs);
        // An empty pg_hba is not written (Patroni would replace pg_hba.conf with nothing).
        let empty = serde_json::to_value(DynamicConfig::default()).expect("serialize");
        assert!(empty["postgresql"].get("pg_hba").is_none(), "{empty}");
        // synchronous_mode is written as Patroni writes it, and read back.
        assert_eq!(empty["synchronous_mode"], serde_json::json!(false));
        for (mode, json) in [
            (SyncMode::On, serde_json::json!(true)),
            (SyncMode::Quorum, serde_json::json!("quorum")),
        ] {
            let d = DynamicConfig {
                synchronous_mode: mode,
                ..DynamicConfig::default()
            };
            let v = serde_json::to_value(&d).expect("serialize");
            assert_eq!(v["synchronous_mode"], json);
            let back: DynamicConfig = serde_json::from_value(v).expect("deserialize");
            assert_eq!(back.synchronous_mode, mode);
        }
    }

    // ---- other validation ------------------------------------------------------------------

    #[test]
    fn failover_priority_must_not_be_negative() {
        let e = err_of(&[("tags.failover_priority", Some("-1"))]);
        assert_eq!(invalid_key(&e), "tags.failover_priority");
        assert!(
            e.to_string()
                .starts_with("tags.failover_priority = -1: must be 0 or greater"),
            "{e}"
        );
        parse_edited(&[("tags.failover_priority", Some("0"))]).expect("0 is allowed");
    }

    #[test]
    fn data_dir_must_be_absolute() {
        let e = err_of(&[("postgresql.data_dir", Some("data/postgresql0"))]);
        assert_eq!(invalid_key(&e), "postgresql.data_dir");
        assert!(e.to_string().contains("must be an absolute path"), "{e}");
        let e = err_of(&[("postgresql.data_dir", Some("/"))]);
        assert_eq!(invalid_key(&e), "postgresql.data_dir");
        let e = err_of(&[("postgresql.bin_dir", Some("bin"))]);
        assert_eq!(invalid_key(&e), "postgresql.bin_dir");
        let e = err_of(&[("regent.run_dir", Some("run"))]);
        assert_eq!(invalid_key(&e), "regent.run_dir");
    }

    #[test]
    fn scope_and_name_must_be_single_dcs_segments() {
        let e = err_of(&[("name", Some("pg/1"))]);
        assert_eq!(invalid_key(&e), "name");
        assert!(
            e.to_string().contains("name: \"pg-1\""),
            "suggests a fix: {e}"
        );
        assert_eq!(invalid_key(&err_of(&[("name", Some("''"))])), "name");
        assert_eq!(invalid_key(&err_of(&[("scope", Some("'  '"))])), "scope");
        assert_eq!(invalid_key(&err_of(&[("scope", Some("a/b"))])), "scope");
    }

    #[test]
    fn addresses_must_be_host_port() {
        for (key, value) in [
            ("restapi.listen", "localhost"),
            ("restapi.listen", "'127.0.0.1:0'"),
            ("restapi.listen", "'127.0.0.1:99999'"),
            ("restapi.listen", "':8008'"),
            ("postgresql.listen", "'127.0.0.1:pg'"),
            ("postgresql.connect_address", "'10.0.0.1'"),
        ] {
            let e = err_of(&[(key, Some(value))]);
            assert_eq!(invalid_key(&e), key, "{value}: {e}");
        }
        // A wildcard listen address cannot double as the connect address.
        let e = err_of(&[
            ("restapi.listen", Some("'0.0.0.0:8008'")),
            ("restapi.connect_address", None),
        ]);
        assert_eq!(invalid_key(&e), "restapi.connect_address");
        assert!(e.to_string().contains("defaults to restapi.listen"), "{e}");
        let e = err_of(&[
            ("postgresql.listen", Some("'127.0.0.1,10.0.0.5:5432'")),
            ("postgresql.connect_address", None),
        ]);
        assert_eq!(invalid_key(&e), "postgresql.connect_address");

        let l = parse_edited(&[
            ("restapi.listen", Some("'[::]:8008'")),
            ("restapi.connect_address", Some("'[fd00::5]:8008'")),
            ("postgresql.listen", Some("'127.0.0.1,10.0.0.5:5432'")),
        ])
        .expect("IPv6 and listen lists are fine");
        assert_eq!(l.config.restapi_connect(), "[fd00::5]:8008");
    }

    #[test]
    fn error_messages_are_single_lines() {
        let errors = [
            err_of(&[("postgresql.data_dir", Some("5"))]),
            err_of(&[("postgresql.data_dir", None)]),
            err_of(&[("bootstrap.dcs.ttl", Some("4"))]),
            timing(10, 5, 5).expect_err("timing"),
            parse("a: [\n").expect_err("syntax"),
            err_of(&[("etcd3", None)]),
        ];
        for e in errors {
            let s = e.to_string();
            assert!(!s.contains('\n') && !s.is_empty(), "{s:?}");
        }
    }

    // ---- REST API and ctl ----------------------------------------------------------------

    #[test]
    fn restapi_security_keys_parse_without_warnings() {
        let l = parse_edited(&[
            (
                "restapi.authentication",
                Some("{username: admin, password: s3cret}"),
            ),
            ("restapi.certfile", Some("/etc/regent/tls/node.crt")),
            ("restapi.keyfile", Some("/etc/regent/tls/node.key")),
            ("restapi.cafile", Some("/etc/regent/tls/ca.crt")),
            ("restapi.verify_client", Some("none")),
            (
                "restapi.allowlist",
                Some("[10.0.0.5, 10.1.0.0/16, 'fd00::/8', app1.example.com]"),
            ),
            ("restapi.allowlist_include_members", Some("yes")),
            (
                "restapi.http_extra_headers",
                Some("{X-Frame-Options: DENY}"),
            ),
            (
                "restapi.https_extra_headers",
                Some("{Strict-Transport-Security: max-age=31536000}"),
            ),
            (
                "ctl",
                Some("{insecure: true, cacert: /etc/regent/tls/ca.crt}"),
            ),
        ])
        .expect("valid");
        assert_eq!(l.warnings, Vec::<String>::new());
        let c = &l.config;
        assert_eq!(c.api_scheme(), "https");
        assert_eq!(c.api_url(), "https://127.0.0.1:8008/patroni");
        assert!(c.restapi.allowlist_include_members);
        assert!(c.ctl.insecure);
        // ctl falls back to the REST API's credentials.
        assert_eq!(
            c.ctl_authentication().map(|a| a.username.as_str()),
            Some("admin")
        );
        assert!(
            !format!("{c:?}").contains("s3cret"),
            "passwords stay out of Debug"
        );

        let l = parse_edited(&[
            (
                "restapi.authentication",
                Some("{username: admin, password: a}"),
            ),
            ("ctl.authentication", Some("{username: ops, password: b}")),
        ])
        .expect("valid");
        assert_eq!(
            l.config.ctl_authentication().map(|a| a.username.as_str()),
            Some("ops")
        );
        assert_eq!(l.config.api_url(), "http://127.0.0.1:8008/patroni");
        let l = parse(FIXTURE).expect("fixture");
        assert_eq!(l.config.ctl_authentication(), None);
    }

    #[test]
    fn restapi_security_keys_are_checked() {
        type Case<'a> = (&'a [(&'a str, Option<&'a str>)], &'a str, &'a str);
        let cases: &[Case] = &[
            (
                &[(
                    "restapi.authentication",
                    Some("{username: '', password: x}"),
                )],
                "restapi.authentication.username",
                "must not be empty",
            ),
            (
                &[(
                    "restapi.authentication",
                    Some("{username: 'a:b', password: x}"),
                )],
                "restapi.authentication.username",
                "must not contain `:`",
            ),
            (
                &[(
                    "restapi.authentication",
                    Some("{username: a, password: ''}"),
                )],
                "restapi.authentication.password",
                "an empty password protects nothing",
            ),
            (
                &[("restapi.keyfile", Some("/etc/regent/tls/node.key"))],
                "restapi.keyfile",
                "restapi.certfile is not",
            ),
            (
                &[("restapi.certfile", Some("tls/node.crt"))],
                "restapi.certfile",
                "absolute path",
            ),
            (
                &[
                    ("restapi.certfile", Some("/etc/regent/tls/node.crt")),
                    ("restapi.keyfile_password", Some("pw")),
                ],
                "restapi.keyfile_password",
                "encrypted private keys",
            ),
            (
                &[("restapi.verify_client", Some("required"))],
                "restapi.verify_client",
                "not supported",
            ),
            (
                &[("restapi.verify_client", Some("sometimes"))],
                "restapi.verify_client",
                "none, optional, required",
            ),
            (
                &[("restapi.allowlist", Some("[10.0.0.1, 10.0.0.0/33]"))],
                "restapi.allowlist[1]",
                "prefix length",
            ),
            (
                &[("restapi.allowlist", Some("['not a host']"))],
                "restapi.allowlist[0]",
                "neither an IP address",
            ),
            (
                &[("restapi.allowlist", Some("['10.0.0.x/8']"))],
                "restapi.allowlist[0]",
                "is not an IP address",
            ),
            (
                &[("restapi.http_extra_headers", Some("{'Bad Header': x}"))],
                "restapi.http_extra_headers.Bad Header",
                "not a valid HTTP header name",
            ),
            (
                &[("restapi.https_extra_headers", Some("{X-A: \"a\\nb\"}"))],
                "restapi.https_extra_headers.X-A",
                "not a valid HTTP header value",
            ),
            (
                &[("ctl.keyfile", Some("/etc/regent/tls/client.key"))],
                "ctl.keyfile",
                "ctl.certfile is not",
            ),
            (
                &[("ctl.cacert", Some("ca.crt"))],
                "ctl.cacert",
                "absolute path",
            ),
            (
                &[("ctl.authentication", Some("{username: ops, password: ''}"))],
                "ctl.authentication.password",
                "must not be empty",
            ),
        ];
        for (edits, key, problem) in cases {
            let e = err_of(edits);
            assert_eq!(invalid_key(&e), *key, "{e}");
            let text = e.to_string();
            assert!(text.contains(problem), "{text}");
            assert!(!text.contains('\n'), "{text:?}");
        }
        // The password is never echoed.
        let e = err_of(&[(
            "restapi.authentication",
            Some("{username: a, password: \"sec\\u0007ret\"}"),
        )]);
        assert!(!e.to_string().contains("sec"), "{e}");
        // A missing password names the key.
        let e = err_of(&[("restapi.authentication", Some("{username: a}"))]);
        assert!(
            e.to_string()
                .starts_with("restapi.authentication.password: required key is missing"),
            "{e}"
        );
    }

    #[test]
    fn allowlist_entries_match_addresses() {
        let ip = |s: &str| s.parse::<std::net::IpAddr>().expect("ip");
        let net = AllowEntry::parse("10.1.2.3/16").expect("net");
        assert_eq!(net, AllowEntry::Net(ip("10.1.0.0"), 16));
        assert!(net.contains(ip("10.1.255.1")));
        assert!(!net.contains(ip("10.2.0.1")));
        assert!(net.contains(ip("::ffff:10.1.0.9")), "IPv4-mapped IPv6");
        assert!(!net.contains(ip("fd00::1")));
        let v6 = AllowEntry::parse("fd00::/8").expect("v6 net");
        assert!(v6.contains(ip("fd12::5")));
        assert!(!v6.contains(ip("fe80::1")));
        assert!(
            AllowEntry::parse("0.0.0.0/0")
                .expect("all")
                .contains(ip("192.0.2.1"))
        );
        let one = AllowEntry::parse(" 192.0.2.7 ").expect("one");
        assert!(one.contains(ip("192.0.2.7")) && !one.contains(ip("192.0.2.8")));
        assert_eq!(
            AllowEntry::parse("App1.Example.com.").expect("host"),
            AllowEntry::Host("app1.example.com".into())
        );
        assert!(!AllowEntry::Host("x".into()).contains(ip("192.0.2.7")));
        for bad in ["", "-a.example", "a..b", "10.0.0.0/", "::/129", "a_b c"] {
            assert!(AllowEntry::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn dynamic_config_from_the_api_is_checked() {
        let ok = serde_json::json!({"ttl": 20, "loop_wait": 2, "retry_timeout": 5, "pause": true,
                                    "slots": {"x": {"type": "physical"}}});
        let d = validate_dynamic(&ok).expect("valid");
        assert_eq!((d.ttl, d.pause), (20, Some(true)));
        let e = validate_dynamic(&serde_json::json!({"ttl": 4})).expect_err("ttl");
        assert_eq!(invalid_key(&e), "ttl");
        assert!(e.to_string().contains("set ttl: 30"), "{e}");
        let e =
            validate_dynamic(&serde_json::json!({"ttl": 10, "loop_wait": 5, "retry_timeout": 5}))
                .expect_err("timing");
        assert!(
            e.to_string()
                .starts_with("ttl = 10 with loop_wait 5 and retry_timeout 5"),
            "{e}"
        );
        let e = validate_dynamic(&serde_json::json!({"postgresql": {"use_pg_rewind": "perhaps"}}))
            .expect_err("type");
        assert!(
            e.to_string().starts_with("postgresql.use_pg_rewind: "),
            "{e}"
        );
        let e = validate_dynamic(&serde_json::json!([1])).expect_err("not an object");
        assert!(e.to_string().contains("JSON object"), "{e}");
        let e = validate_dynamic(&serde_json::json!({"synchronous_node_count": 0}))
            .expect_err("no standby");
        assert_eq!(invalid_key(&e), "synchronous_node_count");
        assert!(e.to_string().contains("synchronous_node_count: 1"), "{e}");
        let d = validate_dynamic(&serde_json::json!({"synchronous_mode": true,
            "synchronous_node_count": 2, "synchronous_mode_strict": "on",
            "maximum_lag_on_syncnode": 1048576}))
        .expect("valid");
        assert_eq!(
            (
                d.synchronous_node_count,
                d.synchronous_mode_strict,
                d.maximum_lag_on_syncnode
            ),
            (2, true, 1_048_576)
        );
        // Written only when they differ from Patroni's defaults.
        let v = serde_json::to_value(DynamicConfig::default()).expect("serialize");
        for k in [
            "synchronous_node_count",
            "synchronous_mode_strict",
            "maximum_lag_on_syncnode",
        ] {
            assert!(v.get(k).is_none(), "{k} in {v}");
        }
        assert_eq!(
            serde_json::to_value(&d).expect("serialize")["synchronous_node_count"],
            2
        );
    }

    // ---- load ------------------------------------------------------------------------------

    #[test]
    fn load_reads_a_file_or_names_it_in_the_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("regent.yml");
        std::fs::write(&path, FIXTURE).expect("write");
        let l = load(&path).expect("loads");
        assert_eq!(l.config.name, "postgresql0");

        let missing = dir.path().join("nope.yml");
        let e = load(&missing).expect_err("no file");
        assert!(matches!(&e, ConfigError::Io { path, .. } if *path == missing));
        let s = e.to_string();
        assert!(
            s.contains(&missing.display().to_string()) && s.contains("os error"),
            "{s}"
        );
    }

    // ---- environment -----------------------------------------------------------------------

    fn config_with(data_dir: &Path, bin_dir: Option<&Path>) -> Config {
        let mut c = parse(FIXTURE).expect("valid").config;
        c.postgresql.data_dir = data_dir.to_path_buf();
        c.postgresql.bin_dir = bin_dir.map(Path::to_path_buf);
        c
    }

    fn fake_bin_dir(dir: &Path, except: &[&str]) {
        std::fs::create_dir_all(dir).expect("mkdir");
        for b in PG_BINARIES.iter().filter(|b| !except.contains(b)) {
            let p = dir.join(b);
            std::fs::write(&p, "#!/bin/sh\n").expect("write");
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        }
    }

    fn env_parts(e: &ConfigError) -> (&str, &str) {
        match e {
            ConfigError::Environment { key, problem, .. } => (key, problem),
            other => panic!("expected Environment, got {other:?}"),
        }
    }

    #[test]
    fn missing_data_dir_parent_is_reported_with_mkdir() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let parent = tmp.path().join("pg");
        let c = config_with(&parent.join("data"), None);
        let e = check_data_dir(&c).expect_err("parent missing");
        assert_eq!(env_parts(&e).0, "postgresql.data_dir");
        let s = e.to_string();
        assert!(
            s.contains(&format!(
                "the parent directory {} does not exist",
                parent.display()
            )),
            "{s}"
        );
        assert!(
            s.contains(&format!(
                "mkdir -p {p} && chown postgres: {p}",
                p = parent.display()
            )),
            "{s}"
        );

        std::fs::create_dir(&parent).expect("mkdir");
        check_data_dir(&c).expect("parent exists now");
        assert!(!parent.join("data").exists(), "checks create nothing");

        std::fs::write(parent.join("data"), "").expect("file");
        let e = check_data_dir(&c).expect_err("data_dir is a file");
        assert!(env_parts(&e).1.contains("not a directory"));
    }

    #[test]
    fn bin_dir_without_binaries_is_rejected() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let empty = tmp.path().join("empty");
        std::fs::create_dir(&empty).expect("mkdir");
        let none = tmp.path().join("none");
        let e = resolve_bin_dir_in(Some(&empty), None, &none).expect_err("empty dir");
        let (key, problem) = env_parts(&e);
        assert_eq!(key, "postgresql.bin_dir");
        assert!(problem.contains("has no executable postgres"), "{problem}");
        assert!(problem.contains(&empty.display().to_string()), "{problem}");
        assert!(e.to_string().contains("/usr/lib/postgresql/15/bin"), "{e}");

        let partial = tmp.path().join("partial");
        fake_bin_dir(&partial, &["pg_rewind"]);
        let e = resolve_bin_dir_in(Some(&partial), None, &none).expect_err("no pg_rewind");
        assert!(
            env_parts(&e).1.contains("has no executable pg_rewind"),
            "{e}"
        );

        // Present but not executable counts as missing.
        let p = partial.join("pg_rewind");
        std::fs::write(&p, "").expect("write");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let e = resolve_bin_dir_in(Some(&partial), None, &none).expect_err("not executable");
        assert!(env_parts(&e).1.contains("pg_rewind"), "{e}");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        assert_eq!(
            resolve_bin_dir_in(Some(&partial), None, &none).expect("complete"),
            partial
        );

        let e = resolve_bin_dir_in(Some(&none), None, &none).expect_err("no such dir");
        assert!(env_parts(&e).1.contains("not an existing directory"), "{e}");
    }

    #[test]
    fn bin_dir_is_found_on_path_then_newest_debian_version() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let debian = tmp.path().join("usr-lib-postgresql");
        fake_bin_dir(&debian.join("9.6/bin"), &[]);
        fake_bin_dir(&debian.join("10/bin"), &[]);
        fake_bin_dir(&debian.join("16/bin"), &["pg_controldata"]);
        std::fs::create_dir_all(debian.join("common/bin")).expect("mkdir");
        assert_eq!(
            resolve_bin_dir_in(None, None, &debian).expect("found"),
            debian.join("10/bin"),
            "newest complete version; 10 > 9.6 numerically"
        );

        let on_path = tmp.path().join("opt-pg/bin");
        fake_bin_dir(&on_path, &[]);
        let path_var =
            std::env::join_paths([tmp.path().join("nothing"), on_path.clone()]).expect("join");
        assert_eq!(
            resolve_bin_dir_in(None, Some(path_var), &debian).expect("found"),
            on_path,
            "initdb on PATH wins"
        );

        let e = resolve_bin_dir_in(None, None, &tmp.path().join("none")).expect_err("nothing");
        let (key, problem) = env_parts(&e);
        assert_eq!(key, "postgresql.bin_dir");
        assert!(problem.contains("initdb is not on PATH"), "{problem}");

        let only_partial = tmp.path().join("partial-root");
        fake_bin_dir(&only_partial.join("15/bin"), &["pg_basebackup"]);
        let e = resolve_bin_dir_in(None, None, &only_partial).expect_err("incomplete");
        assert!(
            env_parts(&e).1.contains("has no executable pg_basebackup"),
            "{e}"
        );
    }

    #[test]
    fn check_environment_passes_on_a_prepared_machine() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let bin = tmp.path().join("bin");
        fake_bin_dir(&bin, &[]);
        let c = config_with(&tmp.path().join("data"), Some(&bin));
        check_environment(&c).expect("ready");
        assert_eq!(resolve_bin_dir(&c).expect("bin"), bin);

        let c = config_with(&tmp.path().join("missing/data"), Some(&bin));
        assert!(check_environment(&c).is_err());
    }
}
