//! Reload (`POST /reload`, SIGHUP): re-read the configuration (the file or directory, with the
//! `PATRONI_*` variables captured at start on top) and apply what may change while running
//! (tags, PostgreSQL parameters, policies, the REST API's credentials and certificate); refuse
//! the whole reload, changing nothing, when any part cannot be used. Also the PostgreSQL
//! settings derived from the configuration, and loading the policies.
//!
//! May touch: the configuration file (read), PostgreSQL (`regent.conf`, reload), the policies.

use super::{Supervisor, SupervisorError};
use crate::api::{self};
use crate::config::{Config, DynamicConfig};
use crate::ha::policy::{DefaultPolicy, Policy};
use crate::plugin::PolicySet;
use crate::postgres::{PgSettings, Postgres};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

impl Supervisor {
    /// `POST /reload`, SIGHUP: re-read the configuration file and apply what may change while
    /// running (tags, PostgreSQL parameters, the policies); rescan the policy files; reload
    /// PostgreSQL.
    pub(super) async fn reload(&mut self) -> crate::control::Reply {
        use crate::control::Reply;
        if let Some(source) = &self.config_source {
            // The file (or directory) again, with the variables captured at start: they are no
            // longer in the process environment.
            let loaded = match source.load() {
                Ok(l) => l,
                Err(e) => return reload_refused(e),
            };
            let new = loaded.config;
            let fixed = fixed_keys_changed(&self.cfg, &new);
            if !fixed.is_empty() {
                let msg = format!(
                    "reload failed, the running configuration is unchanged: {} cannot change while regent runs; restart regent to apply them",
                    fixed.join(", ")
                );
                tracing::error!("{msg}");
                return Reply::new(400, msg);
            }
            let peers = match api::PeerClient::from_config(&new) {
                Ok(p) => p,
                Err(e) => return reload_refused(e),
            };
            let api = match self
                .api_reloader
                .as_ref()
                .map(|r| r.prepare(&new, peers.clone()))
            {
                None => None,
                Some(Ok(p)) => Some(p),
                Some(Err(e)) => return reload_refused(e),
            };
            // Once a set was pushed to the cluster it wins over the local directory.
            let policies_changed = !self.rollout.in_force()
                && (new.regent.policies != self.cfg.regent.policies
                    || new.regent.policies_dir != self.cfg.regent.policies_dir);
            let old = std::mem::replace(&mut self.cfg, new);
            if policies_changed {
                // A reload runs between two loops, in place of the loop's sleep: the loading
                // may take as long as that sleep or a share of the loop, no longer (it goes on
                // in the background, its result dropped; compiled code is cached for a retry).
                let budget = self.policy_budget();
                let limit = Duration::from_secs(self.dynamic.loop_wait).max(budget.limit());
                let loaded = match tokio::time::timeout(limit, load_policies(&self.cfg, budget))
                    .await
                {
                    Ok(r) => r,
                    Err(_) => Err(SupervisorError::Fatal(format!(
                        "the policies did not load within {} ms (loop_wait, or the loop's share of the lease): try again (compiled code is cached)",
                        limit.as_millis()
                    ))),
                };
                match loaded {
                    Ok((policy, set, watcher)) => {
                        if let Err(e) = attach_prober(set.as_deref(), &self.pg) {
                            tracing::error!(error = %e, "SQL probes will fail");
                        }
                        self.policy = policy;
                        self.policies = set;
                        self._policy_watcher = watcher;
                        tracing::info!(policies = %self.policy.name(), "policies replaced");
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "reload refused: the new policies do not load");
                        self.cfg = old;
                        return Reply::new(
                            400,
                            format!("reload failed, the running configuration is unchanged: {e}"),
                        );
                    }
                }
            }
            self.http = peers;
            if let Ok(mut w) = self.watchdog.lock() {
                w.set_config(self.cfg.watchdog.clone());
            }
            if let Some(api) = api {
                api.apply();
            }
            self.apply_parameters();
            for w in loaded.warnings {
                tracing::warn!("{w}");
            }
        }
        if let Some(set) = self.policies.clone() {
            // In the background, as the directory watcher does: compiling a changed component
            // must not hold the loop (each outcome is logged and shown in `GET /policy`).
            drop(tokio::task::spawn_blocking(move || set.rescan()));
        }
        if let Err(e) = self.pg.reload() {
            tracing::warn!(error = %e, "could not reload PostgreSQL");
        }
        self.event(crate::plugin::Event::Reloaded(self.role.policy_role()));
        tracing::info!("configuration reloaded");
        Reply::new(202, "reload scheduled")
    }

    /// Recompute the PostgreSQL parameters from the cluster's and the local configuration and
    /// apply a change (rewrite `regent.conf`, reload the server).
    pub(super) fn apply_parameters(&mut self) {
        let params = merged_parameters(&self.cfg, &self.dynamic);
        match self.pg.set_parameters(params) {
            Ok(true) => tracing::info!("PostgreSQL parameters changed: configuration reloaded"),
            Ok(false) => {}
            Err(e) => tracing::error!(error = %e, "could not apply the PostgreSQL parameters"),
        }
        match self.pg.set_standby_cluster(self.dynamic.standby().cloned()) {
            Ok(true) => tracing::info!(
                standby = self.dynamic.standby().is_some(),
                "the standby_cluster section changed"
            ),
            Ok(false) => {}
            Err(e) => tracing::error!(error = %e, "could not apply the standby_cluster section"),
        }
    }
}

/// Load the configured WebAssembly policies (compiling off the async threads), refusing any
/// whose calls do not fit `budget`, and watch their directory for hot reloads. No
/// `regent.policies`: the built-in rules.
pub(super) async fn load_policies(
    cfg: &Config,
    budget: crate::plugin::LoopBudget,
) -> Result<
    (
        Arc<dyn Policy>,
        Option<Arc<PolicySet>>,
        Option<crate::plugin::WatcherHandle>,
    ),
    SupervisorError,
> {
    let (Some(dir), false) = (
        cfg.regent.policies_dir.clone(),
        cfg.regent.policies.is_empty(),
    ) else {
        return Ok((Arc::new(DefaultPolicy), None, None));
    };
    let names = cfg.regent.policies.clone();
    let cache = policy_cache(cfg);
    let set = tokio::task::spawn_blocking(move || {
        PolicySet::load_within(&dir, &names, cache.as_deref(), Some(budget))
    })
    .await
    .map_err(|e| SupervisorError::Fatal(format!("policy loader panicked: {e}")))?
    .map_err(|e| SupervisorError::Fatal(format!("regent.policies: {e}")))?;
    let set = Arc::new(set);
    let watcher = set
        .watch()
        .map_err(|e| SupervisorError::Fatal(format!("regent.policies_dir: {e}")))?;
    tracing::info!(policies = %set.digest_summary(), "failover policies loaded");
    let policy: Arc<dyn Policy> = set.clone();
    Ok((policy, Some(set), Some(watcher)))
}

/// The compiled-policy cache, `<run_dir>/.<name>-policy-cache`, created (mode 0700) if
/// absent; `None`, with an error naming the directory and the fix, when it cannot be trusted
/// (a link, another user's, writable by others): policies then compile at every start.
pub(super) fn policy_cache(cfg: &Config) -> Option<std::path::PathBuf> {
    let cache = cfg.run_dir().join(format!(".{}-policy-cache", cfg.name));
    match crate::plugin::open_cache_dir(&cache, true) {
        Ok(_) => Some(cache),
        Err(e) => {
            tracing::error!(error = %e,
                "not using the compiled-policy cache: policies are compiled at every start");
            None
        }
    }
}

/// Give the policies granted `sql-probe` their connection to the local PostgreSQL.
pub(super) fn attach_prober(set: Option<&PolicySet>, pg: &Postgres) -> Result<(), SupervisorError> {
    if let Some(set) = set {
        let prober = crate::postgres::Prober::start(pg.probe_target())
            .map_err(|e| SupervisorError::Io(format!("cannot start the SQL probe thread: {e}")))?;
        set.set_sql_prober(Arc::new(prober));
    }
    Ok(())
}

/// The answer to a reload whose new configuration cannot be used: 400, nothing changed.
pub(super) fn reload_refused(e: impl std::fmt::Display) -> crate::control::Reply {
    tracing::error!(error = %e, "reload refused; the running configuration is unchanged");
    crate::control::Reply::new(
        400,
        format!("reload failed, the running configuration is unchanged: {e}"),
    )
}

/// The keys a reload cannot change (they identify the node or are bound at start) that the
/// new configuration changes.
pub(super) fn fixed_keys_changed(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut out = Vec::new();
    if old.scope != new.scope {
        out.push("scope");
    }
    if old.name != new.name {
        out.push("name");
    }
    if old.dcs_prefix() != new.dcs_prefix() {
        out.push("namespace");
    }
    let (was, now) = (old.etcd_access(), new.etcd_access());
    if was.endpoints != now.endpoints {
        out.push("etcd3.hosts");
    }
    if was.tls != now.tls || was.user != now.user {
        out.push("etcd3 TLS or user (protocol, cacert, cert, key, username, password)");
    }
    if old.restapi.listen != new.restapi.listen {
        out.push("restapi.listen");
    }
    // A new certificate or key is loaded; switching between HTTP and HTTPS is not.
    if old.restapi.certfile.is_some() != new.restapi.certfile.is_some() {
        out.push("restapi.certfile (set or unset)");
    }
    if old.postgresql.listen != new.postgresql.listen {
        out.push("postgresql.listen");
    }
    if old.postgresql.data_dir != new.postgresql.data_dir {
        out.push("postgresql.data_dir");
    }
    if old.postgresql.bin_dir != new.postgresql.bin_dir {
        out.push("postgresql.bin_dir");
    }
    if old.regent.run_dir != new.regent.run_dir {
        out.push("regent.run_dir");
    }
    out
}

/// What the PostgreSQL adapter needs from the configuration.
pub(super) fn pg_settings(
    cfg: &Config,
    dynamic: &DynamicConfig,
    bin_dir: std::path::PathBuf,
    listen_host: String,
    port: u16,
) -> PgSettings {
    let parameters = merged_parameters(cfg, dynamic);
    let a = &cfg.postgresql.authentication;
    let creds = |c: &crate::config::Credentials| crate::postgres::Creds {
        user: c.username.clone(),
        password: c.password.clone(),
        params: c.conn_params(),
    };
    let mut pg_hba = cfg.postgresql.pg_hba.clone();
    if pg_hba.is_empty() {
        pg_hba = dynamic.postgresql.pg_hba.clone();
    }
    if pg_hba.is_empty() {
        pg_hba = cfg.bootstrap.pg_hba.clone();
    }
    PgSettings {
        name: cfg.name.clone(),
        scope: cfg.scope.clone(),
        bin_dir,
        data_dir: cfg.postgresql.data_dir.clone(),
        run_dir: cfg.run_dir(),
        listen_host,
        port,
        superuser: creds(&a.superuser),
        replication: creds(&a.replication),
        rewind: a.rewind.as_ref().map(creds),
        parameters,
        pg_hba,
        initdb: cfg
            .bootstrap
            .initdb
            .iter()
            .flat_map(|o| match o {
                crate::config::InitdbOption::Flag(f) => vec![format!("--{f}")],
                crate::config::InitdbOption::Value(m) => m
                    .iter()
                    .map(|(k, v)| format!("--{k}={}", yaml_scalar(v)))
                    .collect(),
            })
            .collect(),
        os_user: cfg.postgresql.os_user.clone(),
        // Checked when the configuration was loaded.
        methods: cfg.methods().unwrap_or_default(),
    }
}

/// PostgreSQL parameters: Regent's defaults, then the cluster's (`/config`), then the local
/// ones.
pub(super) fn merged_parameters(cfg: &Config, dynamic: &DynamicConfig) -> BTreeMap<String, String> {
    let mut parameters: BTreeMap<String, String> = [
        ("wal_level", "replica"),
        ("hot_standby", "on"),
        ("max_connections", "100"),
        ("max_wal_senders", "10"),
        ("max_replication_slots", "10"),
        ("wal_log_hints", "on"),
        ("wal_keep_size", "128MB"),
        // A replica whose upstream just changed (a failover) reconnects after 1 s, not 5.
        ("wal_retrieve_retry_interval", "1s"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let given = || {
        dynamic
            .postgresql
            .parameters
            .iter()
            .chain(cfg.postgresql.parameters.iter())
    };
    // A wal_keep_segments from an older configuration replaces the default wal_keep_size
    // (written as wal_keep_size on PostgreSQL 13+; see `postgres::conf::across_versions`).
    if given().any(|(k, _)| k == "wal_keep_segments") && !given().any(|(k, _)| k == "wal_keep_size")
    {
        parameters.remove("wal_keep_size");
    }
    for (k, v) in given() {
        parameters.insert(k.clone(), yaml_scalar(v));
    }
    parameters
}

/// A YAML scalar as PostgreSQL reads a parameter value (`true` → `on`).
pub(super) fn yaml_scalar(v: &serde_yaml::Value) -> String {
    match v {
        serde_yaml::Value::String(s) => s.clone(),
        serde_yaml::Value::Bool(b) => if *b { "on" } else { "off" }.to_string(),
        serde_yaml::Value::Number(n) => n.to_string(),
        serde_yaml::Value::Null => String::new(),
        other => serde_yaml::to_string(other)
            .unwrap_or_default()
            .trim()
            .to_string(),
    }
}
