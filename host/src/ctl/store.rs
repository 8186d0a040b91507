//! The etcd side of `regent ctl`: linearizable reads of the whole cluster prefix (also of other
//! clusters in the same namespace, for `list A B`), the `config` key's compare-and-swap, the
//! `failover` key (the switchover fallback, and `flush switchover`'s), and deleting the
//! cluster's keys (`remove`), and the pushed policies (`policy`).
//!
//! [`Store`] is a trait so the commands can be tested against an in-memory cluster.

use super::CtlError;
use super::target::Target;
use crate::config::dcs_prefix;
use crate::dcs::{Cluster, DcsError, EtcdDcs, Failover, PolicySetDoc};
use serde_json::Value;
use std::time::Duration;

/// What the commands need from the DCS.
#[allow(async_fn_in_trait)]
pub(crate) trait Store {
    async fn read(&self) -> Result<Cluster, CtlError>;
    /// Read another cluster of the same namespace.
    async fn read_scope(&self, scope: &str) -> Result<Cluster, CtlError>;
    /// Write the `config` key if its mod_revision is still `revision`; `false` if it moved.
    async fn write_config(&self, config: &Value, revision: i64) -> Result<bool, CtlError>;
    async fn write_failover(&self, failover: &Failover) -> Result<(), CtlError>;
    /// Write the `failover` key if its mod_revision is still `revision`; `false` if it moved.
    async fn write_failover_if(&self, failover: &Failover, revision: i64)
    -> Result<bool, CtlError>;
    /// Delete every key of the cluster; returns how many there were.
    async fn delete_cluster(&self) -> Result<i64, CtlError>;
    /// The election records, newest first.
    async fn elections(&self) -> Result<Vec<crate::dcs::ElectionRecord>, CtlError>;
    /// The pushed policy set and its mod_revision (`regent/policy-set`).
    async fn policy_set(&self) -> Result<Option<(PolicySetDoc, i64)>, CtlError>;
    /// Write the policy set if its mod_revision is still `revision` (0: absent); `false` if
    /// it moved.
    async fn write_policy_set(&self, doc: &PolicySetDoc, revision: i64) -> Result<bool, CtlError>;
    /// Store a policy component under its digest (`regent/policies/<sha256>`).
    async fn put_component(&self, digest: &str, bytes: &[u8]) -> Result<(), CtlError>;
}

/// The cluster's keys in etcd.
pub(crate) struct EtcdStore {
    dcs: EtcdDcs,
    namespace: String,
    endpoints: String,
    from: String,
}

impl EtcdStore {
    pub(crate) async fn connect(target: &Target, timeout: Duration) -> Result<EtcdStore, CtlError> {
        let endpoints = target.endpoints.join(",");
        let from = target.endpoints_from.clone();
        let access = crate::dcs::EtcdAccess {
            endpoints: target.endpoints.clone(),
            tls: target.etcd_tls.clone(),
            user: target.etcd_user.clone(),
        };
        let dcs = EtcdDcs::connect_with(&access, &target.prefix, timeout)
            .await
            .map_err(|source| CtlError::Etcd {
                op: "connect to etcd",
                endpoints: endpoints.clone(),
                from: from.clone(),
                source: Box::new(source),
            })?;
        Ok(EtcdStore {
            dcs,
            namespace: target.namespace.clone(),
            endpoints,
            from,
        })
    }

    fn err(&self, op: &'static str) -> impl FnOnce(DcsError) -> CtlError + '_ {
        move |source| CtlError::Etcd {
            op,
            endpoints: self.endpoints.clone(),
            from: self.from.clone(),
            source: Box::new(source),
        }
    }
}

impl Store for EtcdStore {
    async fn read(&self) -> Result<Cluster, CtlError> {
        self.dcs
            .read_cluster()
            .await
            .map_err(self.err("read the cluster from etcd"))
    }

    async fn read_scope(&self, scope: &str) -> Result<Cluster, CtlError> {
        self.dcs
            .read_cluster_at(&dcs_prefix(&self.namespace, scope))
            .await
            .map_err(self.err("read the cluster from etcd"))
    }

    async fn write_config(&self, config: &Value, revision: i64) -> Result<bool, CtlError> {
        self.dcs
            .write_config(config, Some(revision))
            .await
            .map_err(self.err("write the config key"))
    }

    async fn write_failover(&self, failover: &Failover) -> Result<(), CtlError> {
        self.dcs
            .write_failover(failover)
            .await
            .map_err(self.err("write the failover key"))
    }

    async fn write_failover_if(
        &self,
        failover: &Failover,
        revision: i64,
    ) -> Result<bool, CtlError> {
        self.dcs
            .write_failover_if(failover, revision)
            .await
            .map_err(self.err("write the failover key"))
    }

    async fn delete_cluster(&self) -> Result<i64, CtlError> {
        self.dcs
            .delete_cluster()
            .await
            .map_err(self.err("delete the cluster's keys"))
    }

    async fn elections(&self) -> Result<Vec<crate::dcs::ElectionRecord>, CtlError> {
        self.dcs
            .elections()
            .await
            .map_err(self.err("read the election records"))
    }

    async fn policy_set(&self) -> Result<Option<(PolicySetDoc, i64)>, CtlError> {
        self.dcs
            .read_policy_set()
            .await
            .map_err(self.err("read the pushed policy set"))
    }

    async fn write_policy_set(&self, doc: &PolicySetDoc, revision: i64) -> Result<bool, CtlError> {
        self.dcs
            .write_policy_set(doc, revision)
            .await
            .map_err(self.err("write the policy set"))
    }

    async fn put_component(&self, digest: &str, bytes: &[u8]) -> Result<(), CtlError> {
        self.dcs
            .put_component(digest, bytes)
            .await
            .map_err(self.err("store the policy component"))
    }
}
