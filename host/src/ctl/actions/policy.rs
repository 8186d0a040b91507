//! `policy push|status|promote|rollback`: the failover policies pushed to the cluster through
//! etcd (see [`crate::dcs::PolicySetDoc`]).
//!
//! `push` refuses, before anything is written, a component larger than
//! [`MAX_COMPONENT_BYTES`] and one that does not load here (not a component, another WIT
//! version, a trap or a wrong answer in the self-test): then nothing changes in the cluster.
//! Otherwise it stores the component under its digest, writes the new set with a CAS on the
//! set's mod_revision (a concurrent change is an error, never overwritten), and waits until
//! every member concerned serves the set or reports why it cannot (`policy_error` in its member
//! key). A member that cannot load a set keeps serving its previous policies.
//!
//! `push --shadow` stores the new set as the doc's `shadow` instead: the members run it beside
//! the active set without deciding (`policy_shadow`, `policy_shadow_counters` or
//! `policy_shadow_error` in their member keys, shown by `status`); `promote` makes it active,
//! `rollback` drops it. The transitions themselves are [`PolicySetDoc`]'s methods.

use super::Session;
use crate::ctl::store::Store;
use crate::ctl::table::{Align, Table};
use crate::ctl::{CtlError, PolicyCmd};
use crate::dcs::{
    Cluster, MAX_COMPONENT_BYTES, PolicyRef, PolicySetDoc, SetChangeError, policy_summary,
};
use serde_json::{Value, json};
use std::path::Path;
use std::time::{Duration, Instant};

/// How long `push`, `promote` and `rollback` wait for the members beyond two loops: a cold
/// compile of a large component on a busy machine.
const LOAD_ALLOWANCE: Duration = Duration::from_secs(30);

/// How often the wait reads the member keys.
const WAIT_POLL: Duration = Duration::from_millis(50);

/// Where one member stands with the pushed set.
#[derive(Debug, PartialEq, Eq)]
enum Standing {
    /// It serves what it should.
    Serving,
    /// It keeps its previous policies: the load failed (why).
    Refused(String),
    /// Not yet.
    Pending,
}

fn standing(m: &crate::dcs::Member, doc: &PolicySetDoc) -> Standing {
    let Some(wanted) = doc.wanted_by(&m.name) else {
        return Standing::Serving;
    };
    // The member key's summary names digests, not manifests: the generation tells that the
    // member has acted on this very set.
    if m.data
        .extra
        .get("policy_generation")
        .and_then(Value::as_u64)
        != Some(doc.generation)
    {
        return Standing::Pending;
    }
    if let Some(e) = m.data.extra.get("policy_error").and_then(Value::as_str) {
        return Standing::Refused(e.to_string());
    }
    let shadow = m.data.extra.get("policy_shadow").and_then(Value::as_str);
    match &doc.shadow {
        Some(wanted) => {
            if let Some(e) = m
                .data
                .extra
                .get("policy_shadow_error")
                .and_then(Value::as_str)
            {
                return Standing::Refused(format!("the shadow {e}"));
            }
            if shadow != Some(policy_summary(wanted).as_str()) {
                return Standing::Pending;
            }
        }
        // A shadow dropped (rollback) or made active (promote) must be gone.
        None if shadow.is_some() => return Standing::Pending,
        None => {}
    }
    let summary = m.data.policy.as_deref().unwrap_or_default();
    if wanted.is_empty() || summary == policy_summary(wanted) {
        Standing::Serving
    } else {
        Standing::Pending
    }
}

impl<S: Store> Session<'_, S> {
    pub(crate) async fn policy(&mut self, cmd: PolicyCmd) -> Result<(), CtlError> {
        match cmd {
            PolicyCmd::Push {
                manifest,
                canary,
                shadow,
                no_wait,
            } => self.policy_push(&manifest, canary, shadow, !no_wait).await,
            PolicyCmd::Status => self.policy_status().await,
            PolicyCmd::Promote { no_wait } => {
                self.change_set("promote", !no_wait, PolicySetDoc::promote)
                    .await
            }
            PolicyCmd::Rollback { no_wait } => {
                self.change_set("rollback", !no_wait, PolicySetDoc::rollback)
                    .await
            }
        }
    }

    async fn policy_push(
        &mut self,
        path: &Path,
        canary: Vec<String>,
        shadow: bool,
        wait: bool,
    ) -> Result<(), CtlError> {
        let pushed = checked_policy(path).await?;
        let c = self.store.read().await?;
        if let Some(unknown) = canary.iter().find(|m| c.member(m).is_none()) {
            return Err(CtlError::Usage(format!(
                "--canary {unknown}: no such member in cluster {}; `regent ctl list` shows the members",
                self.scope
            )));
        }
        let (name, digest, bytes) = pushed;
        let new = PolicyRef {
            name: name.clone(),
            digest: digest.clone(),
            manifest: new_manifest(path, &name)?,
        };
        self.store.put_component(&digest, &bytes).await?;
        if shadow {
            self.change_set("push --shadow", wait, move |doc| doc.push_shadow(new))
                .await
        } else {
            self.change_set("push", wait, move |doc| doc.push(new, canary))
                .await
        }
    }

    /// Apply `change` to the pushed set (CAS), then wait for the members.
    async fn change_set(
        &mut self,
        what: &str,
        wait: bool,
        change: impl FnOnce(&mut PolicySetDoc) -> Result<(), SetChangeError>,
    ) -> Result<(), CtlError> {
        let (mut doc, revision) = self.store.policy_set().await?.unwrap_or_default();
        change(&mut doc).map_err(|e| CtlError::Failed(format!("{what}: {e}")))?;
        doc.generation += 1;
        if !self.store.write_policy_set(&doc, revision).await? {
            return Err(CtlError::Failed(format!(
                "{what}: the pushed policy set changed while this command ran (another `regent ctl policy`); nothing was written: run it again"
            )));
        }
        let started = Instant::now();
        self.note(&format!(
            "{what}: generation {} active {}{}{}",
            doc.generation,
            policy_summary(&doc.active),
            if doc.canary.is_empty() {
                String::new()
            } else {
                format!(" on {} only", doc.canary.join(", "))
            },
            doc.shadow
                .as_ref()
                .map(|s| format!(", shadow {}", policy_summary(s)))
                .unwrap_or_default()
        ))?;
        if !wait {
            return self.emit(json!({
                "action": what,
                "generation": doc.generation,
                "active": policy_summary(&doc.active),
                "shadow": doc.shadow.as_deref().map(policy_summary),
            }));
        }
        let c = self.wait_members(&doc).await?;
        let ms = started.elapsed().as_millis() as u64;
        let refused: Vec<String> = c
            .members
            .iter()
            .filter_map(|m| match standing(m, &doc) {
                Standing::Refused(e) => Some(format!("{}: {e}", m.name)),
                _ => None,
            })
            .collect();
        if !refused.is_empty() {
            return Err(CtlError::Failed(format!(
                "{what}: stored, but {} member(s) refused it and keep their previous policies: {}; fix the policy and push again, or `regent ctl policy rollback`",
                refused.len(),
                refused.join("; ")
            )));
        }
        self.note(&format!(
            "{what}: all {} members {} after {ms} ms",
            c.members.len(),
            if doc.shadow.is_some() {
                "serve the active set with the shadow beside it"
            } else {
                "serve it"
            }
        ))?;
        self.emit(json!({
            "action": what,
            "generation": doc.generation,
            "active": policy_summary(&doc.active),
            "shadow": doc.shadow.as_deref().map(policy_summary),
            "serving_after_ms": ms,
        }))
    }

    /// Poll the member keys until none is pending; an error when some still are at the deadline.
    async fn wait_members(&mut self, doc: &PolicySetDoc) -> Result<Cluster, CtlError> {
        let c = self.store.read().await?;
        let limit = Duration::from_secs(2 * Self::loop_wait(&c)) + LOAD_ALLOWANCE;
        let deadline = Instant::now() + limit;
        loop {
            let c = self.store.read().await?;
            let pending: Vec<&str> = c
                .members
                .iter()
                .filter(|m| standing(m, doc) == Standing::Pending)
                .map(|m| m.name.as_str())
                .collect();
            if pending.is_empty() {
                return Ok(c);
            }
            if Instant::now() >= deadline {
                return Err(CtlError::Failed(format!(
                    "the set is stored (generation {}), but {} did not report it within {limit:?}; `regent ctl policy status` shows where they stand",
                    doc.generation,
                    pending.join(", ")
                )));
            }
            // Finer than `self.poll`: the time to serve is measured and reported.
            tokio::time::sleep(self.poll.min(WAIT_POLL)).await;
        }
    }

    async fn policy_status(&mut self) -> Result<(), CtlError> {
        let c = self.store.read().await?;
        let doc = self.store.policy_set().await?.map(|(d, _)| d);
        let rows: Vec<StatusRow> = c
            .members
            .iter()
            .map(|m| status_row(m, doc.as_ref()))
            .collect();
        if self.format.is_text() {
            let text = match &doc {
                None => "No policy set was pushed to this cluster: each member runs its regent.policies from regent.policies_dir.\n".to_string(),
                Some(d) => format!(
                    "Pushed set: generation {}, active {}{}{}{}\n",
                    d.generation,
                    policy_summary(&d.active),
                    d.previous
                        .as_ref()
                        .map(|p| format!(", previous {}", policy_summary(p)))
                        .unwrap_or_default(),
                    if d.canary.is_empty() {
                        String::new()
                    } else {
                        format!(", canary {}", d.canary.join(","))
                    },
                    d.shadow
                        .as_ref()
                        .map(|s| format!(", shadow {}", policy_summary(s)))
                        .unwrap_or_default()
                ),
            };
            let table = Table {
                title: Some(format!("Policies: {}", self.scope)),
                columns: [
                    ("Member", Align::Left),
                    ("Serving", Align::Left),
                    ("Wants", Align::Left),
                    ("State", Align::Left),
                    ("Shadow", Align::Left),
                    ("Divergences", Align::Right),
                ]
                .iter()
                .map(|(h, a)| (h.to_string(), *a))
                .collect(),
                rows: rows
                    .iter()
                    .map(|r| {
                        let state = match r.state.split_once(": ") {
                            Some(("refused", _)) => "refused (below)".to_string(),
                            _ => r.state.clone(),
                        };
                        vec![
                            r.member.clone(),
                            r.serving.clone(),
                            r.wants.clone(),
                            state,
                            r.shadow.clone().unwrap_or_else(|| "-".into()),
                            r.divergences.map_or("-".to_string(), |d| d.to_string()),
                        ]
                    })
                    .collect(),
            };
            let mut out = format!("{text}{}", table.render());
            if !out.ends_with('\n') {
                out.push('\n');
            }
            for r in &rows {
                if let Some(("refused", why)) = r.state.split_once(": ") {
                    out.push_str(&format!(
                        "{} refused the pushed set, keeps its previous policies: {why}\n",
                        r.member
                    ));
                }
            }
            return self.write(&out);
        }
        self.emit(json!({
            "set": doc,
            "members": rows.iter().map(|r| json!({
                "member": r.member,
                "serving": r.serving,
                "wants": r.wants,
                "state": r.state,
                "shadow": r.shadow,
                "shadow_counters": r.counters,
            })).collect::<Vec<_>>(),
        }))
    }
}

/// One member's line of `policy status`.
struct StatusRow {
    member: String,
    serving: String,
    wants: String,
    state: String,
    /// The shadow set it runs (`name@digest8,...`).
    shadow: Option<String>,
    /// Its shadow's divergences (both hooks) since the shadow loaded.
    divergences: Option<u64>,
    /// Its shadow's counters as the member key carries them.
    counters: Option<Value>,
}

fn status_row(m: &crate::dcs::Member, doc: Option<&PolicySetDoc>) -> StatusRow {
    let serving = m.data.policy.clone().unwrap_or_else(|| "-".into());
    let (wants, state) = match doc {
        None => ("(local)".to_string(), String::from("local policies")),
        Some(d) => (
            d.wanted_by(&m.name)
                .map_or("(local)".to_string(), policy_summary),
            match standing(m, d) {
                Standing::Serving => "serving".into(),
                Standing::Pending => "loading".into(),
                Standing::Refused(e) => format!("refused: {e}"),
            },
        ),
    };
    let counters = m.data.extra.get("policy_shadow_counters").cloned();
    StatusRow {
        member: m.name.clone(),
        serving,
        wants,
        state,
        shadow: m
            .data
            .extra
            .get("policy_shadow")
            .and_then(Value::as_str)
            .map(str::to_string),
        divergences: counters
            .as_ref()
            .and_then(|c| c.get("divergences"))
            .and_then(Value::as_u64),
        counters,
    }
}

/// Load the policy of `path` here as a node would (compile, WIT version, describe, settings,
/// self-test) after checking the component's size: (name, sha256, component bytes).
async fn checked_policy(path: &Path) -> Result<(String, String, Vec<u8>), CtlError> {
    let manifest = crate::plugin::Manifest::load(path)
        .map_err(|e| CtlError::Usage(format!("policy push: {e}")))?;
    let bytes = std::fs::read(&manifest.component).map_err(|e| {
        CtlError::Usage(format!(
            "policy push: cannot read the component {} named by {}: {e}",
            manifest.component.display(),
            path.display()
        ))
    })?;
    if bytes.len() > MAX_COMPONENT_BYTES {
        return Err(CtlError::Failed(format!(
            "policy push: {} is {} bytes, over the limit of {MAX_COMPONENT_BYTES} bytes (1 MiB: etcd refuses requests over 1.5 MiB); nothing was pushed. Build it in release mode and strip it (`wasm-tools strip`)",
            manifest.component.display(),
            bytes.len()
        )));
    }
    let p = path.to_path_buf();
    tokio::task::spawn_blocking(move || crate::plugin::check(&p))
        .await
        .map_err(|e| CtlError::Failed(format!("policy push: the policy check stopped: {e}")))?
        .map_err(|e| {
            CtlError::Failed(format!(
                "policy push: the policy does not load, nothing was pushed: {e}"
            ))
        })?;
    Ok((manifest.name, crate::plugin::digest(&bytes), bytes))
}

/// The manifest's text as pushed: its `component` names `NAME.wasm`, where nodes write it.
fn new_manifest(path: &Path, name: &str) -> Result<String, CtlError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        CtlError::Usage(format!("policy push: cannot read {}: {e}", path.display()))
    })?;
    crate::plugin::with_component(&text, &format!("{name}.wasm"))
        .map_err(|e| CtlError::Usage(format!("policy push: {}: {e}", path.display())))
}
