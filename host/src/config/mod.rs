//! Configuration: Patroni-compatible YAML (the supported subset), parsed with serde.
//!
//! Key names follow Patroni's so that an existing Patroni config starts a Regent node unchanged.
//! [`ConfigSource`] chooses where the configuration comes from as Patroni does (a file or a
//! directory with the `PATRONI_*` variables on top, else `PATRONI_CONFIGURATION`, else the
//! variables alone); [`ConfigSource::load`] / [`load`] / [`parse`](fn@parse) read the YAML,
//! collect a warning for every key Regent does not use (never fatal), deserialize it and run
//! [`Config::validate`]; [`check_environment`] then looks (read-only) at the filesystem. Every
//! [`ConfigError`] is one line naming the key path (or the variable), the offending value, what
//! is allowed and how to fix it.
//!
//! The files, one job each:
//! - `mod.rs`: the schema root [`Config`], its accessors, and the re-exports that keep every
//!   `crate::config::…` path short;
//! - `schema.rs`: the local sections (`restapi`, `ctl`, `etcd3`, `bootstrap`, `postgresql`,
//!   `tags`, `regent`); `dynamic.rs`: the dynamic (cluster-wide) configuration kept in the DCS;
//! - `values.rs`: Patroni's value conventions (booleans, host lists, initdb options,
//!   `host:port`, the DCS prefix); `allowlist.rs`: `restapi.allowlist` entries;
//! - `error.rs`: [`ConfigError`] and the message helpers;
//! - `source.rs`: choosing the source, reading the file or directory, the deep merge;
//!   `from_env.rs`: the `PATRONI_*` variables as a YAML document, and the names to remove from
//!   the process environment;
//! - `parse.rs`: parsing, serde errors turned into messages; `keys.rs`: the
//!   known-key tables and the warnings for the keys Regent does not use;
//! - `validate.rs`: the pure checks, timing rules and [`validate_dynamic`]; `validate_api.rs`:
//!   the `restapi` and `ctl` sections;
//! - `environment.rs`: the read-only filesystem checks (data directory, bin directory).
//!
//! Each file's tests sit in it; `test_support.rs` holds their shared fixture and helpers.
//!
//! Only `source.rs` (reading the files) and `environment.rs` (looking, never writing) touch the
//! filesystem, and only `from_env.rs` the process environment ([`EnvConfig::capture`] reads it,
//! [`remove_consumed`] removes what was read); everything else is pure.

mod allowlist;
mod dynamic;
mod environment;
mod error;
mod from_env;
mod keys;
mod methods;
mod parse;
mod schema;
mod slots;
mod source;
mod standby;
#[cfg(test)]
mod test_support;
mod validate;
mod validate_api;
mod values;
mod watchdog;

pub(crate) use allowlist::{AllowEntry, canonical_ip};
pub use dynamic::{DynamicConfig, Timing, TimingFit};
pub use environment::check_environment;
pub(crate) use environment::{find_bin_dir, resolve_bin_dir};
pub use error::{ConfigError, TextPos};
pub use from_env::{EnvConfig, remove_consumed};
pub(crate) use methods::{BootstrapMethod, CommandMethod, Methods, ReplicaMethod};
pub use parse::{Loaded, parse};
pub(crate) use regent_core::ha::sync::SyncMode;
pub use schema::RestApi;
pub(crate) use schema::{
    BasicAuth, Bootstrap, Credentials, Ctl, Etcd, Postgresql, RegentSection, Tags,
};
pub(crate) use slots::IgnoreSlot;
pub use source::{ConfigSource, load};
pub use standby::StandbyCluster;
pub use validate::{DynamicChange, check_dynamic_change, validate_dynamic};
pub(crate) use values::{HostList, InitdbOption, dcs_prefix, split_host_port};
pub(crate) use watchdog::{WatchdogConfig, WatchdogMode};

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The whole local configuration file.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct Config {
    /// The cluster name, the same on every node; one segment of the DCS keys.
    pub(crate) scope: String,
    /// This node's member name, unique in the cluster; one segment of the DCS keys.
    pub(crate) name: String,
    /// The DCS namespace the cluster's keys live under (default `/service/`).
    #[serde(default = "default_namespace")]
    pub(crate) namespace: String,
    /// The REST API: where it listens, how others reach it, its authentication and TLS.
    pub restapi: RestApi,
    /// The etcd cluster (v3 API) Regent uses as its DCS; preferred over `etcd`.
    #[serde(default)]
    pub(crate) etcd3: Option<Etcd>,
    /// Patroni's `etcd:` (v2) section; accepted for its `hosts`/`host` keys only, the protocol is always v3.
    #[serde(default)]
    pub(crate) etcd: Option<Etcd>,
    /// How a new cluster starts: its initial dynamic configuration, initdb options, pg_hba lines.
    #[serde(default)]
    pub(crate) bootstrap: Bootstrap,
    /// This node's PostgreSQL: addresses, directories, roles, parameters.
    pub(crate) postgresql: Postgresql,
    /// This node's tags, published in its member key.
    #[serde(default)]
    pub(crate) tags: Tags,
    /// Regent's own keys (not in Patroni).
    #[serde(default)]
    pub(crate) regent: RegentSection,
    /// Patroni's `ctl` section: how this node (peer polls) and `regent ctl` call REST APIs.
    /// The watchdog device, armed while this node is a writable primary.
    #[serde(default)]
    pub(crate) watchdog: WatchdogConfig,
    #[serde(default)]
    pub(crate) ctl: Ctl,
}

fn default_namespace() -> String {
    "/service/".to_string()
}

impl Config {
    /// `https` when the REST API serves TLS (`restapi.certfile` set), else `http`.
    pub(crate) fn api_scheme(&self) -> &'static str {
        if self.restapi.certfile.is_some() {
            "https"
        } else {
            "http"
        }
    }

    /// The `api_url` published in this node's member key: `http(s)://<connect_address>/patroni`.
    pub(crate) fn api_url(&self) -> String {
        format!("{}://{}/patroni", self.api_scheme(), self.restapi_connect())
    }

    /// The credentials this node sends when it calls REST APIs: `ctl.authentication`, else
    /// `restapi.authentication` (as Patroni does).
    pub(crate) fn ctl_authentication(&self) -> Option<&BasicAuth> {
        self.ctl
            .authentication
            .as_ref()
            .or(self.restapi.authentication.as_ref())
    }

    /// The etcd endpoints, `host:port` each, from `etcd3` (preferred) or `etcd`.
    pub(crate) fn etcd_endpoints(&self) -> Vec<String> {
        self.etcd_access().endpoints
    }

    /// How to reach etcd: endpoints, TLS and user, from `etcd3` (preferred) or `etcd`.
    pub(crate) fn etcd_access(&self) -> crate::dcs::EtcdAccess {
        self.etcd3
            .as_ref()
            .or(self.etcd.as_ref())
            .map(Etcd::access)
            .unwrap_or_default()
    }

    /// The DCS prefix `/<namespace>/<scope>/` with duplicate slashes collapsed.
    pub(crate) fn dcs_prefix(&self) -> String {
        dcs_prefix(&self.namespace, &self.scope)
    }

    /// The REST API's address as other nodes and tools reach it: `restapi.connect_address`,
    /// else `restapi.listen`.
    pub(crate) fn restapi_connect(&self) -> &str {
        self.restapi
            .connect_address
            .as_deref()
            .unwrap_or(&self.restapi.listen)
    }

    /// PostgreSQL's address as other nodes reach it: `postgresql.connect_address`, else
    /// `postgresql.listen`.
    pub(crate) fn pg_connect(&self) -> &str {
        self.postgresql
            .connect_address
            .as_deref()
            .unwrap_or(&self.postgresql.listen)
    }

    /// Where the guard keeps its files.
    pub(crate) fn run_dir(&self) -> PathBuf {
        self.regent.run_dir.clone().unwrap_or_else(|| {
            self.postgresql
                .data_dir
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_else(|| PathBuf::from("."))
        })
    }
}
