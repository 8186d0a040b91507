//! A standby cluster's PostgreSQL settings: the remote primary as an upstream (its slot,
//! its `recovery_min_apply_delay`), the archive settings every member of a standby cluster
//! recovers with, and the replica methods its standby leader is created with.

use super::{PgError, Postgres, Result, Upstream};
use crate::config::{ReplicaMethod, StandbyCluster};
use std::collections::BTreeMap;

impl Postgres {
    /// Take the cluster's `standby_cluster` section (`None`: not a standby cluster). A change
    /// rewrites `regent.conf` with the role and upstream of the last `configure` and reloads a
    /// running server. Returns whether anything changed.
    pub(crate) fn set_standby_cluster(&self, standby: Option<StandbyCluster>) -> Result<bool> {
        {
            let Ok(mut g) = self.standby.lock() else {
                return Ok(false);
            };
            if *g == standby {
                return Ok(false);
            }
            *g = standby;
        }
        let last = self.last_configured.lock().ok().and_then(|g| g.clone());
        if let Some((true, upstream)) = last {
            self.configure(true, upstream.as_ref())?;
            self.reload()?;
        }
        Ok(true)
    }

    fn standby_section(&self) -> Option<StandbyCluster> {
        self.standby.lock().ok().and_then(|g| g.clone())
    }

    /// The standby cluster's remote primary as an upstream (`None`: not a standby cluster).
    /// A section with a `restore_command` and no address gives an upstream with an empty
    /// host: the standby leader recovers from the archive only.
    pub(crate) fn remote_upstream(&self) -> Option<Upstream> {
        let s = self.standby_section()?;
        let (host, port) = s.remote().unwrap_or_default();
        Some(Upstream {
            name: if host.is_empty() {
                "the archive".into()
            } else {
                format!("{host}:{port}")
            },
            host,
            port,
            remote: true,
        })
    }

    /// The slot the standby leader streams through on the remote (empty: none).
    pub(super) fn remote_slot(&self) -> String {
        self.standby_section()
            .and_then(|s| s.primary_slot_name)
            .unwrap_or_default()
    }

    /// Recovery settings of a standby cluster's member: `restore_command` and
    /// `archive_cleanup_command` on all, `recovery_min_apply_delay` on the standby leader.
    pub(super) fn standby_recovery(
        &self,
        params: &mut BTreeMap<String, String>,
        upstream: Option<&Upstream>,
    ) {
        let Some(s) = self.standby_section() else {
            return;
        };
        for (key, value) in [
            ("restore_command", &s.restore_command),
            ("archive_cleanup_command", &s.archive_cleanup_command),
        ] {
            if let Some(v) = value {
                params.insert(key.into(), v.clone());
            }
        }
        if upstream.is_some_and(|u| u.remote)
            && let Some(v) = &s.recovery_min_apply_delay
        {
            params.insert("recovery_min_apply_delay".into(), v.clone());
        }
    }

    /// Create the standby leader's data directory from the remote primary (or, with no
    /// remote address, with a method that needs none), with the methods
    /// `standby_cluster.create_replica_methods` names, else this node's own.
    pub(crate) async fn create_standby_leader(&self) -> Result<String> {
        let remote = self.remote_upstream().filter(|u| !u.host.is_empty());
        let names = self
            .standby_section()
            .and_then(|s| s.create_replica_methods);
        let methods = match names {
            None => self.s.methods.replica.clone(),
            Some(names) => self.methods_named(&names)?,
        };
        self.create_replica_with(&methods, remote.as_ref()).await
    }

    fn methods_named(&self, names: &[String]) -> Result<Vec<ReplicaMethod>> {
        names
            .iter()
            .map(|n| {
                if n == "basebackup" || n == "pg_basebackup" {
                    return Ok(ReplicaMethod::Basebackup);
                }
                self.s
                    .methods
                    .replica
                    .iter()
                    .find(|m| matches!(m, ReplicaMethod::Command(c) if c.name == *n))
                    .cloned()
                    .ok_or_else(|| {
                        PgError::Io(format!(
                            "standby_cluster.create_replica_methods names {n}, which this node does not define: list {n} in its postgresql.create_replica_methods with a postgresql.{n} section"
                        ))
                    })
            })
            .collect()
    }
}
