//! The cluster's pushed policies: `<prefix>regent/policies/<sha256>` holds a component's bytes
//! (content-addressed: a key is written once and never changes), and `<prefix>regent/policy-set`
//! one JSON [`PolicySetDoc`] naming which policies (name, digest, manifest) the members run,
//! the set before it (for `rollback`), and the canary members.
//!
//! `regent ctl policy push|promote|rollback` write the set with a compare-and-swap on its
//! mod_revision; each node reads it once a loop (the watch wakes the loop when it changes),
//! fetches the components it names and loads them off the loop. Both keys sit under the
//! `regent/` folder, which Patroni does not know and ignores, so a mixed cluster is unaffected,
//! and the cluster's `config` key stays Patroni's alone.

use super::etcd::{DcsError, EtcdDcs, Result};
use etcd_client::{Compare, CompareOp, Txn, TxnOp};
use serde::{Deserialize, Serialize};

/// The components' folder, relative to the cluster prefix.
pub const COMPONENTS: &str = "regent/policies/";
/// The pushed set, relative to the cluster prefix.
pub const POLICY_SET: &str = "regent/policy-set";
/// The largest component a push stores: below etcd's default request limit (1.5 MiB), with
/// room for the request's own framing.
pub const MAX_COMPONENT_BYTES: usize = 1024 * 1024;

/// One pushed policy: its name, its component's sha256 and its manifest's text (with
/// `component = "NAME.wasm"`, where a node writes the component it fetched).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyRef {
    /// The policy's name (the manifest's `name`).
    pub name: String,
    /// The sha256 of the component, hex: the key `regent/policies/<digest>`.
    pub digest: String,
    /// The manifest, TOML.
    pub manifest: String,
}

impl PolicyRef {
    /// `name@digest8`, as the member key's `policy` field names a loaded policy.
    pub fn short(&self) -> String {
        format!("{}@{}", self.name, &self.digest[..8.min(self.digest.len())])
    }
}

/// `name@digest8,...` of a list of policies, comparable with the member key's `policy` field.
pub fn summary(list: &[PolicyRef]) -> String {
    list.iter()
        .map(PolicyRef::short)
        .collect::<Vec<_>>()
        .join(",")
}

/// The value of `regent/policy-set`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicySetDoc {
    /// Counts the set's changes (each push, promote and rollback adds one).
    pub generation: u64,
    /// The policies the members run, in order.
    pub active: Vec<PolicyRef>,
    /// The set before the last change: what `rollback` returns to, and what the members not
    /// named in `canary` keep running. `None` after the first push: there is nothing to roll
    /// back to, and members outside `canary` keep what they run (their local policies).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<Vec<PolicyRef>>,
    /// When not empty, only these members run `active`; the others run `previous`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub canary: Vec<String>,
}

impl PolicySetDoc {
    /// The policies member `name` should run; `None`: keep what it runs.
    pub fn wanted_by(&self, name: &str) -> Option<&[PolicyRef]> {
        if self.canary.is_empty() || self.canary.iter().any(|m| m == name) {
            Some(&self.active)
        } else {
            self.previous.as_deref()
        }
    }
}

impl EtcdDcs {
    /// The pushed set and its mod_revision; `None` when nothing was pushed.
    pub async fn read_policy_set(&self) -> Result<Option<(PolicySetDoc, i64)>> {
        let mut c = self.client.clone();
        let resp = self
            .call("get policy-set", c.get(self.key(POLICY_SET), None))
            .await?;
        let Some(kv) = resp.kvs().first() else {
            return Ok(None);
        };
        let doc = serde_json::from_slice(kv.value()).map_err(|e| DcsError::Decode {
            key: POLICY_SET.into(),
            message: format!(
                "{e}; write it again with `regent ctl policy push` or delete it (etcdctl del)"
            ),
        })?;
        Ok(Some((doc, kv.mod_revision())))
    }

    /// Write the set if its mod_revision is still `revision` (0: if it does not exist yet);
    /// `false` when someone else changed it first.
    pub async fn write_policy_set(&self, doc: &PolicySetDoc, revision: i64) -> Result<bool> {
        let key = self.key(POLICY_SET);
        let value = serde_json::to_string(doc).unwrap_or_default();
        let txn = Txn::new()
            .when([Compare::mod_revision(
                key.clone(),
                CompareOp::Equal,
                revision,
            )])
            .and_then([TxnOp::put(key, value, None)]);
        let mut c = self.client.clone();
        let resp = self.call("put policy-set", c.txn(txn)).await?;
        Ok(resp.succeeded())
    }

    /// Store a component under its digest.
    pub async fn put_component(&self, digest: &str, bytes: &[u8]) -> Result<()> {
        let mut c = self.client.clone();
        self.call(
            "put policy component",
            c.put(format!("{}{digest}", self.key(COMPONENTS)), bytes, None),
        )
        .await?;
        Ok(())
    }

    /// A stored component's bytes; `None` when the key does not exist.
    pub async fn get_component(&self, digest: &str) -> Result<Option<Vec<u8>>> {
        let mut c = self.client.clone();
        let resp = self
            .call(
                "get policy component",
                c.get(format!("{}{digest}", self.key(COMPONENTS)), None),
            )
            .await?;
        Ok(resp.kvs().first().map(|kv| kv.value().to_vec()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(name: &str) -> PolicyRef {
        PolicyRef {
            name: name.into(),
            digest: format!("{name}0123456789"),
            manifest: String::new(),
        }
    }

    #[test]
    fn canaries_run_the_new_set_and_the_others_the_previous_one() {
        let doc = PolicySetDoc {
            generation: 2,
            active: vec![r("new")],
            previous: Some(vec![r("old")]),
            canary: vec!["pg1".into()],
        };
        assert_eq!(doc.wanted_by("pg1"), Some(&[r("new")][..]));
        assert_eq!(doc.wanted_by("pg2"), Some(&[r("old")][..]));
        let first = PolicySetDoc {
            previous: None,
            ..doc.clone()
        };
        assert_eq!(
            first.wanted_by("pg2"),
            None,
            "outside the canary: keep the local policies"
        );
        let all = PolicySetDoc {
            canary: vec![],
            ..doc
        };
        assert_eq!(all.wanted_by("pg2"), Some(&[r("new")][..]));
        assert_eq!(summary(&[r("a"), r("b")]), "a@a0123456,b@b0123456");
    }
}
