//! The local sections of the configuration file, as serde reads them: `restapi`, `ctl`,
//! `etcd3`/`etcd`, `bootstrap`, `postgresql` (with its `authentication`), `tags` and Regent's own
//! `regent` section. Key names and defaults follow Patroni's. Pure: data types only, no I/O.

use super::DynamicConfig;
use super::values::{HostList, InitdbOption, patroni_bool, patroni_int_opt};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

/// Patroni's `restapi` section: this node's REST API.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct RestApi {
    /// `host:port` to bind.
    pub listen: String,
    /// `host:port` other nodes and tools use; defaults to `listen`.
    #[serde(default)]
    pub(crate) connect_address: Option<String>,
    /// HTTP Basic auth required by the mutating endpoints.
    #[serde(default)]
    pub(crate) authentication: Option<BasicAuth>,
    /// PEM certificate (chain); set, the API serves HTTPS only.
    #[serde(default)]
    pub(crate) certfile: Option<PathBuf>,
    /// PEM private key; defaults to the key inside `certfile`.
    #[serde(default)]
    pub(crate) keyfile: Option<PathBuf>,
    /// Refused: encrypted keys are not supported.
    #[serde(default)]
    pub(crate) keyfile_password: Option<String>,
    /// CA certificates (PEM) this node trusts when it calls other members over HTTPS.
    #[serde(default)]
    pub(crate) cafile: Option<PathBuf>,
    /// Only `none` is supported (no client certificates).
    #[serde(default)]
    pub(crate) verify_client: Option<String>,
    /// Who may call the mutating endpoints: IP addresses, CIDR networks and host names.
    #[serde(default)]
    pub(crate) allowlist: Vec<String>,
    /// Also allow the hosts in members' `api_url`s.
    #[serde(default, deserialize_with = "patroni_bool")]
    pub(crate) allowlist_include_members: bool,
    /// Headers added to every response.
    #[serde(default)]
    pub(crate) http_extra_headers: BTreeMap<String, String>,
    /// Headers added to every response when the API serves HTTPS.
    #[serde(default)]
    pub(crate) https_extra_headers: BTreeMap<String, String>,
}

/// A user name and password for HTTP Basic auth (`restapi.authentication`, `ctl.authentication`).
#[derive(Clone, Deserialize, Serialize, PartialEq)]
pub(crate) struct BasicAuth {
    /// The user name; no `:` (Basic auth separates it from the password with one).
    pub(crate) username: String,
    /// The password; never shown by `Debug`.
    pub(crate) password: String,
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
pub(crate) struct Ctl {
    /// Basic auth for calls to REST APIs; defaults to `restapi.authentication`.
    #[serde(default)]
    pub(crate) authentication: Option<BasicAuth>,
    /// Do not verify REST API server certificates.
    #[serde(default, deserialize_with = "patroni_bool")]
    pub(crate) insecure: bool,
    /// CA certificates (PEM) to trust; defaults to `restapi.cafile`.
    #[serde(default)]
    pub(crate) cacert: Option<PathBuf>,
    /// Client certificate (PEM) presented to REST APIs.
    #[serde(default)]
    pub(crate) certfile: Option<PathBuf>,
    /// Its key; defaults to the key inside `certfile`.
    #[serde(default)]
    pub(crate) keyfile: Option<PathBuf>,
    /// Refused: encrypted keys are not supported.
    #[serde(default)]
    pub(crate) keyfile_password: Option<String>,
}

/// An etcd section (`etcd3`, or Patroni's v2 `etcd`): where the etcd cluster is.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Default)]
pub(crate) struct Etcd {
    /// `host:port` list (or comma-separated string, as Patroni allows).
    #[serde(default)]
    pub(crate) hosts: Option<HostList>,
    /// One `host:port`, used when `hosts` gives none.
    #[serde(default)]
    pub(crate) host: Option<String>,
    /// Patroni's `protocol`: `http` or `https` (checked by validation).
    #[serde(default)]
    pub(crate) protocol: Option<String>,
    /// CA certificates (PEM) that sign etcd's server certificates; without it, the system's.
    #[serde(default)]
    pub(crate) cacert: Option<PathBuf>,
    /// The client certificate (PEM) presented to etcd (`--client-cert-auth`); it may hold the
    /// key too.
    #[serde(default)]
    pub(crate) cert: Option<PathBuf>,
    /// The client certificate's private key (PEM); used only with `cert`, as Patroni does.
    #[serde(default)]
    pub(crate) key: Option<PathBuf>,
    /// etcd user (`--auth` enabled); used only with `password`, as Patroni does.
    #[serde(default)]
    pub(crate) username: Option<String>,
    /// The etcd user's password.
    #[serde(default)]
    pub(crate) password: Option<String>,
}

impl Etcd {
    /// How to reach and log in to etcd: the endpoints, TLS when `protocol: https`, and the
    /// user when both `username` and `password` are set (Patroni's rules).
    pub(crate) fn access(&self) -> crate::dcs::EtcdAccess {
        let tls = (self.protocol.as_deref().map(str::trim) == Some("https")).then(|| {
            crate::dcs::EtcdTls {
                cacert: self.cacert.clone(),
                cert: self.cert.clone(),
                key: self.cert.as_ref().and(self.key.clone()),
            }
        });
        let user = match (&self.username, &self.password) {
            (Some(u), Some(p)) if !u.is_empty() => Some((u.clone(), p.clone())),
            _ => None,
        };
        crate::dcs::EtcdAccess {
            endpoints: self.endpoints(),
            tls,
            user,
        }
    }

    /// The endpoints, `host:port` each: `hosts` (list or comma-separated), else `host`.
    pub(crate) fn endpoints(&self) -> Vec<String> {
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

/// Patroni's `bootstrap` section: how a new cluster starts.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Default)]
pub(crate) struct Bootstrap {
    /// The dynamic configuration a new cluster starts with (written to the DCS `config` key).
    #[serde(default)]
    pub(crate) dcs: DynamicConfig,
    /// initdb options: strings (`data-checksums`) or single-key maps (`encoding: UTF8`).
    #[serde(default)]
    pub(crate) initdb: Vec<InitdbOption>,
    /// `pg_hba.conf` lines, used when neither `postgresql.pg_hba` nor the dynamic
    /// configuration's `postgresql.pg_hba` has any.
    #[serde(default)]
    pub(crate) pg_hba: Vec<String>,
    /// `initdb` or the name of a section below with the command that creates the cluster.
    #[serde(default)]
    pub(crate) method: Option<String>,
    /// Run once after the bootstrap, with the superuser's connection string.
    #[serde(default)]
    pub(crate) post_bootstrap: Option<String>,
    /// Patroni's older name of `post_bootstrap`.
    #[serde(default)]
    pub(crate) post_init: Option<String>,
    /// The other keys: the section `method` names ([`super::methods`] reads it).
    #[serde(flatten)]
    pub(crate) method_sections: BTreeMap<String, serde_yaml::Value>,
}

/// Patroni's `postgresql` section: this node's PostgreSQL.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub(crate) struct Postgresql {
    /// `host:port` PostgreSQL listens on (`listen_addresses` and `port`).
    pub(crate) listen: String,
    /// `host:port` other nodes use to reach this PostgreSQL; defaults to `listen`.
    #[serde(default)]
    pub(crate) connect_address: Option<String>,
    /// The data directory (absolute).
    pub(crate) data_dir: PathBuf,
    /// The directory of the PostgreSQL programs; not set: found on `PATH` or under
    /// `/usr/lib/postgresql` (see [`resolve_bin_dir`](super::resolve_bin_dir)).
    #[serde(default)]
    pub(crate) bin_dir: Option<PathBuf>,
    /// The roles Regent connects as.
    pub(crate) authentication: Authentication,
    /// PostgreSQL parameters for this node; they override the dynamic configuration's.
    #[serde(default)]
    pub(crate) parameters: BTreeMap<String, serde_yaml::Value>,
    /// `pg_hba.conf` lines; when empty, the dynamic configuration's, then `bootstrap.pg_hba`.
    #[serde(default)]
    pub(crate) pg_hba: Vec<String>,
    /// Regent extension: the OS user PostgreSQL runs as when `regent` runs as root.
    #[serde(default)]
    pub(crate) os_user: Option<String>,
    /// How replicas are created, in order; empty: `basebackup`.
    #[serde(default, deserialize_with = "super::values::one_or_many")]
    pub(crate) create_replica_methods: Vec<String>,
    /// pg_basebackup options (a list of flags and one-key maps, or a map).
    #[serde(default)]
    pub(crate) basebackup: Option<serde_yaml::Value>,
    /// The other keys: the sections of the methods `create_replica_methods` names
    /// ([`super::methods`] reads them).
    #[serde(flatten)]
    pub(crate) method_sections: BTreeMap<String, serde_yaml::Value>,
    /// Scripts run on PostgreSQL's transitions as `COMMAND ACTION ROLE SCOPE`.
    #[serde(default)]
    pub(crate) callbacks: Callbacks,
    /// A script run before a promotion; a non-zero exit vetoes it.
    #[serde(default)]
    pub(crate) pre_promote: Option<String>,
    /// A script run before PostgreSQL is stopped; its exit code is logged.
    #[serde(default)]
    pub(crate) before_stop: Option<String>,
}

/// `postgresql.callbacks`: Patroni's script callbacks, one command line per action (split as
/// a POSIX shell splits words; the action, the role and the scope are appended).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Default)]
pub(crate) struct Callbacks {
    /// After PostgreSQL started.
    #[serde(default)]
    pub(crate) on_start: Option<String>,
    /// After PostgreSQL stopped.
    #[serde(default)]
    pub(crate) on_stop: Option<String>,
    /// After PostgreSQL restarted.
    #[serde(default)]
    pub(crate) on_restart: Option<String>,
    /// After PostgreSQL reloaded its configuration.
    #[serde(default)]
    pub(crate) on_reload: Option<String>,
    /// After a promotion or a demotion.
    #[serde(default)]
    pub(crate) on_role_change: Option<String>,
}

impl Callbacks {
    /// Each action's name with its command, if set.
    pub(crate) fn entries(&self) -> [(&'static str, Option<&str>); 5] {
        [
            ("on_start", self.on_start.as_deref()),
            ("on_stop", self.on_stop.as_deref()),
            ("on_restart", self.on_restart.as_deref()),
            ("on_reload", self.on_reload.as_deref()),
            ("on_role_change", self.on_role_change.as_deref()),
        ]
    }
}

/// `postgresql.authentication`: the roles Regent connects as.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub(crate) struct Authentication {
    /// The superuser Regent manages PostgreSQL with.
    pub(crate) superuser: Credentials,
    /// The role replicas stream (and clone) with.
    pub(crate) replication: Credentials,
    /// The role `pg_rewind` connects as; not set: the superuser.
    #[serde(default)]
    pub(crate) rewind: Option<Credentials>,
}

/// A PostgreSQL role and its password.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub(crate) struct Credentials {
    /// The role name.
    pub(crate) username: String,
    /// Its password, if it has one.
    #[serde(default)]
    pub(crate) password: Option<String>,
    /// libpq's TLS settings for connections as this role (Patroni passes them into every
    /// connection string it builds for the role).
    #[serde(default)]
    pub(crate) sslmode: Option<String>,
    #[serde(default)]
    pub(crate) sslcert: Option<String>,
    #[serde(default)]
    pub(crate) sslkey: Option<String>,
    #[serde(default)]
    pub(crate) sslrootcert: Option<String>,
    #[serde(default)]
    pub(crate) channel_binding: Option<String>,
}

impl Credentials {
    /// The libpq connection parameters besides user and password, as `(keyword, value)`.
    pub(crate) fn conn_params(&self) -> Vec<(String, String)> {
        [
            ("sslmode", &self.sslmode),
            ("sslcert", &self.sslcert),
            ("sslkey", &self.sslkey),
            ("sslrootcert", &self.sslrootcert),
            ("channel_binding", &self.channel_binding),
        ]
        .into_iter()
        .filter_map(|(k, v)| Some((k.to_string(), v.as_ref()?.trim().to_string())))
        .filter(|(_, v)| !v.is_empty())
        .collect()
    }
}

/// Patroni's `tags` section: this node's tags, published in its member key.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Default)]
pub(crate) struct Tags {
    /// Never promote this node.
    #[serde(default, deserialize_with = "patroni_bool")]
    pub(crate) nofailover: bool,
    /// Among equally caught-up replicas the higher wins; 0: never promote this node.
    #[serde(default, deserialize_with = "patroni_int_opt")]
    pub(crate) failover_priority: Option<i64>,
    /// Keep this node out of load balancing (its replica health check fails).
    #[serde(default, deserialize_with = "patroni_bool")]
    pub(crate) noloadbalance: bool,
    /// Never make this node a synchronous standby.
    #[serde(default, deserialize_with = "patroni_bool")]
    pub(crate) nosync: bool,
    /// Any other tag (e.g. `zone`), published as is.
    #[serde(flatten)]
    pub(crate) other: BTreeMap<String, serde_yaml::Value>,
}

/// Regent's own keys (not in Patroni).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub(crate) struct RegentSection {
    /// Directory for the fencing guard's state and pid files; defaults to the data directory's parent.
    #[serde(default)]
    pub(crate) run_dir: Option<PathBuf>,
    /// Directory of policy manifests (`NAME.toml`) and components, watched for changes.
    #[serde(default)]
    pub(crate) policies_dir: Option<PathBuf>,
    /// Policies to run, in order: the first with an active `rank-candidates` hook ranks
    /// elections, every `check-health` hook judges health, every `on-event` hook gets events.
    /// Empty: the built-in rules.
    #[serde(default)]
    pub(crate) policies: Vec<String>,
    /// A leader whose policies judge it `failed` for this many consecutive loops hands over
    /// to a healthy replica.
    #[serde(default = "d_failed_loops")]
    pub(crate) failed_loops_before_handover: u32,
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
