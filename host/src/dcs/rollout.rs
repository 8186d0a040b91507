//! The cluster's pushed policies: `<prefix>regent/policies/<sha256>` holds a component's bytes
//! (content-addressed: a key is written once and never changes), and `<prefix>regent/policy-set`
//! one JSON [`PolicySetDoc`] naming which policies (name, digest, manifest) the members run,
//! the set before it (for `rollback`), the canary members, and the shadow set (run beside the
//! active one on every member without deciding, until `promote` or `rollback`).
//!
//! The transitions (`push`, `push --shadow`, `promote`, `rollback`) are pure methods on the doc.
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
    /// Pushed with `--shadow`: the set every member runs beside `active` on each election
    /// ranking and health check, comparing the answers, without deciding anything. `promote`
    /// makes it `active`; `rollback` drops it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow: Option<Vec<PolicyRef>>,
}

/// Why a change of the pushed set was refused; nothing was written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SetChangeError {
    /// The change would leave the set as it is.
    #[error("{0}; nothing changed")]
    Unchanged(String),
    /// `promote` with neither a canary nor a shadow.
    #[error(
        "nothing to promote: no shadow set, and the pushed set already runs on every member (promote follows `policy push --canary` or `--shadow`)"
    )]
    NothingToPromote,
    /// `rollback` with neither a shadow nor a previous set.
    #[error(
        "nothing to roll back to: only one set was ever pushed; push the policy you want instead"
    )]
    NothingToRollBack,
    /// `push --shadow` while a canary runs.
    #[error(
        "a canary push is in progress (on {0}); finish it with `regent ctl policy promote` or `rollback` before pushing a shadow"
    )]
    CanaryInProgress(String),
}

/// `list` with `new` in place of the policy of the same name, or appended.
fn with_policy(list: &[PolicyRef], new: PolicyRef) -> Vec<PolicyRef> {
    let mut out = list.to_vec();
    match out.iter_mut().find(|p| p.name == new.name) {
        Some(p) => *p = new,
        None => out.push(new),
    }
    out
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

    /// `push`: `new` replaces the active policy of its name (or joins the set); the set before
    /// becomes `previous`; only `canary` (when not empty) runs it. A shadow stays.
    pub fn push(
        &mut self,
        new: PolicyRef,
        canary: Vec<String>,
    ) -> std::result::Result<(), SetChangeError> {
        let short = new.short();
        let active = with_policy(&self.active, new);
        if active == self.active && canary.is_empty() {
            return Err(SetChangeError::Unchanged(format!(
                "{short} is already the cluster's"
            )));
        }
        self.previous = Some(std::mem::replace(&mut self.active, active)).filter(|p| !p.is_empty());
        self.canary = canary;
        Ok(())
    }

    /// `push --shadow`: the shadow becomes the active set with `new` in place of the policy of
    /// its name (or added); the active set, `previous` and the members stay as they are.
    pub fn push_shadow(&mut self, new: PolicyRef) -> std::result::Result<(), SetChangeError> {
        if !self.canary.is_empty() {
            return Err(SetChangeError::CanaryInProgress(self.canary.join(", ")));
        }
        let short = new.short();
        let shadow = with_policy(&self.active, new);
        if shadow == self.active {
            return Err(SetChangeError::Unchanged(format!(
                "{short} is already the cluster's active policy"
            )));
        }
        if self.shadow.as_ref() == Some(&shadow) {
            return Err(SetChangeError::Unchanged(format!(
                "{short} already runs as the shadow"
            )));
        }
        self.shadow = Some(shadow);
        Ok(())
    }

    /// `promote`: a shadow becomes the active set (the active one kept as `previous`); else a
    /// canary set runs on every member.
    pub fn promote(&mut self) -> std::result::Result<(), SetChangeError> {
        if let Some(shadow) = self.shadow.take() {
            self.previous =
                Some(std::mem::replace(&mut self.active, shadow)).filter(|p| !p.is_empty());
            self.canary.clear();
            return Ok(());
        }
        if self.canary.is_empty() {
            return Err(SetChangeError::NothingToPromote);
        }
        self.canary.clear();
        Ok(())
    }

    /// `rollback`: a shadow is dropped (nothing else changes); else the active set and
    /// `previous` swap places, on every member.
    pub fn rollback(&mut self) -> std::result::Result<(), SetChangeError> {
        if self.shadow.take().is_some() {
            return Ok(());
        }
        let Some(previous) = self.previous.take() else {
            return Err(SetChangeError::NothingToRollBack);
        };
        self.previous = Some(std::mem::replace(&mut self.active, previous));
        self.canary.clear();
        Ok(())
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
            shadow: None,
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

    #[test]
    fn an_old_doc_without_a_shadow_still_parses() {
        let old = r#"{"generation":3,"active":[{"name":"a","digest":"d","manifest":""}]}"#;
        let doc: PolicySetDoc = serde_json::from_str(old).expect("parse");
        assert_eq!(doc.shadow, None);
        assert_eq!(doc.generation, 3);
        let text = serde_json::to_string(&doc).expect("write");
        assert!(!text.contains("shadow"), "{text}");
    }

    #[test]
    fn a_shadow_runs_beside_the_active_set_then_promote_or_rollback() {
        let mut doc = PolicySetDoc::default();
        doc.push(r("old"), vec![]).expect("first push");
        assert_eq!(doc.previous, None);
        doc.push_shadow(r("new")).expect("shadow");
        assert_eq!(doc.active, vec![r("old")], "the active set does not change");
        assert_eq!(doc.shadow, Some(vec![r("old"), r("new")]));
        assert_eq!(doc.wanted_by("pg1"), Some(&[r("old")][..]));
        assert_eq!(
            doc.push_shadow(r("new")),
            Err(SetChangeError::Unchanged(
                "new@new01234 already runs as the shadow".into()
            ))
        );
        assert!(matches!(
            doc.push_shadow(r("old")),
            Err(SetChangeError::Unchanged(_))
        ));

        // rollback drops the shadow and nothing else.
        let before = doc.clone();
        let mut dropped = doc.clone();
        dropped.rollback().expect("drop the shadow");
        assert_eq!(
            dropped,
            PolicySetDoc {
                shadow: None,
                ..before.clone()
            }
        );

        // promote: the shadow is active, the active set is previous; rollback returns to it.
        doc.promote().expect("promote");
        assert_eq!(doc.active, vec![r("old"), r("new")]);
        assert_eq!(doc.previous, Some(vec![r("old")]));
        assert_eq!(doc.shadow, None);
        assert_eq!(doc.promote(), Err(SetChangeError::NothingToPromote));
        doc.rollback().expect("rollback");
        assert_eq!(doc.active, vec![r("old")]);
        assert_eq!(doc.previous, Some(vec![r("old"), r("new")]));
    }

    #[test]
    fn a_shadow_waits_for_a_canary_and_a_canary_promotes_as_before() {
        let mut doc = PolicySetDoc::default();
        doc.push(r("a"), vec![]).expect("push");
        doc.push(r("b"), vec!["pg2".into()]).expect("canary");
        assert!(matches!(
            doc.push_shadow(r("c")),
            Err(SetChangeError::CanaryInProgress(m)) if m == "pg2"
        ));
        doc.promote().expect("promote the canary");
        assert!(doc.canary.is_empty());
        assert_eq!(doc.active, vec![r("a"), r("b")]);
        let mut fresh = PolicySetDoc::default();
        assert_eq!(fresh.rollback(), Err(SetChangeError::NothingToRollBack));
        assert_eq!(fresh.promote(), Err(SetChangeError::NothingToPromote));
        fresh.push(r("a"), vec![]).expect("push");
        assert!(matches!(
            fresh.push(r("a"), vec![]),
            Err(SetChangeError::Unchanged(_))
        ));
    }
}
