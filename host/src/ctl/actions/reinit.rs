//! `reinit`: asks replicas to clone themselves again (`POST /reinitialize`) and, with
//! `--wait`, polls their `GET /patroni` until each runs on a new postmaster.

use super::{Session, all_done, failed_line, names_of, select, unknown_member};
use crate::ctl::rest::Method;
use crate::ctl::store::Store;
use crate::ctl::{CtlError, RoleFilter};
use crate::dcs::Member;
use serde_json::{Value, json};
use std::time::Duration;

impl<S: Store> Session<'_, S> {
    pub(crate) async fn reinit(
        &mut self,
        names: Vec<String>,
        from_leader: bool,
        wait: bool,
        force: bool,
    ) -> Result<(), CtlError> {
        let c = self.store.read().await?;
        let replicas: Vec<String> = select(&c, &[], RoleFilter::Replica, self.scope)
            .map(|ms| ms.iter().map(|m| m.name.clone()).collect())
            .unwrap_or_default();
        let names = if !names.is_empty() {
            names
        } else if force {
            return Err(CtlError::Usage(format!(
                "name the member(s) to reinitialize: {}",
                if replicas.is_empty() {
                    "the cluster has no replica".into()
                } else {
                    replicas.join(", ")
                }
            )));
        } else {
            self.show_members(&c, "")?;
            let a = self.prompt.ask(
                &format!(
                    "Which member do you want to reinitialize ({})?",
                    replicas.join(", ")
                ),
                "",
            )?;
            a.split([',', ' '])
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect()
        };
        for n in &names {
            if c.member(n).is_none() {
                return Err(CtlError::Usage(unknown_member(&c, n, self.scope)));
            }
            if c.leader_name() == Some(n.as_str()) {
                return Err(CtlError::Usage(format!(
                    "{n} is the leader; only replicas can be reinitialized (switch over first)"
                )));
            }
        }
        if names.is_empty() {
            return Err(CtlError::Usage(
                "no member was named; nothing to reinitialize".into(),
            ));
        }
        let members = select(&c, &names, RoleFilter::Replica, self.scope)?;
        self.confirm(
            force,
            &format!(
                "Are you sure you want to reinitialize members {}?",
                names_of(&members)
            ),
            "nothing was reinitialized",
        )?;
        let mut started = Vec::new();
        let mut failed = Vec::new();
        let mut results = Vec::new();
        for m in members {
            let before = self.status_of(m).await.ok();
            let mut force_flag = force;
            loop {
                let body = json!({"force": force_flag, "from_leader": from_leader});
                let outcome = self
                    .rest
                    .call(
                        m,
                        Method::POST,
                        "reinitialize",
                        Some(&body),
                        Duration::from_secs(30),
                    )
                    .await;
                match outcome {
                    Ok(r) if r.ok() => {
                        self.note(&format!("Success: reinitialize for member {}", m.name))?;
                        results.push(json!({"member": m.name, "action": "reinitialize", "ok": true, "status": r.status, "message": r.text()}));
                        started.push((m, before.clone()));
                    }
                    Ok(r)
                        if r.body.trim_end().ends_with("already in progress")
                            && !force_flag
                            && self.format.is_text()
                            && self
                                .prompt
                                .confirm("Do you want to cancel it and reinitialize anyway?")? =>
                    {
                        force_flag = true;
                        continue;
                    }
                    Ok(r) => {
                        self.note(&failed_line("reinitialize", m, &r))?;
                        failed.push(m.name.clone());
                        results.push(json!({"member": m.name, "action": "reinitialize", "ok": false, "status": r.status, "message": r.text()}));
                    }
                    Err(e) => {
                        self.note(&format!("Failed: {e}"))?;
                        failed.push(m.name.clone());
                        results.push(json!({"member": m.name, "action": "reinitialize", "ok": false, "status": null, "message": e.to_string()}));
                    }
                }
                break;
            }
        }
        if wait && !started.is_empty() {
            let waiting: Vec<String> = started.iter().map(|(m, _)| m.name.clone()).collect();
            self.note(&format!(
                "Waiting for reinitialize to complete on: {}",
                waiting.join(", ")
            ))?;
            for (m, before) in started {
                if let Err(e) = self.wait_reinitialized(m, before.as_ref()).await {
                    self.note(&format!("Failed: {e}"))?;
                    failed.push(m.name.clone());
                } else {
                    self.note(&format!("Reinitialize is completed on: {}", m.name))?;
                }
            }
        }
        self.emit(Value::Array(results))?;
        all_done("reinitialize", &failed)
    }

    async fn status_of(&self, m: &Member) -> Result<Value, CtlError> {
        let r = self
            .rest
            .call(m, Method::GET, "patroni", None, Duration::from_secs(5))
            .await?;
        serde_json::from_str(&r.body).map_err(|e| {
            CtlError::Failed(format!(
                "{}: GET /patroni did not answer a JSON status document ({e}): {}",
                m.name,
                r.text()
            ))
        })
    }

    /// Until the member runs again on a new postmaster (or was seen cloning and runs), or fails.
    async fn wait_reinitialized(&self, m: &Member, before: Option<&Value>) -> Result<(), CtlError> {
        let started_at = |v: &Value| v.get("postmaster_start_time").cloned();
        let old_start = before.and_then(started_at);
        let mut seen_clone = false;
        loop {
            tokio::time::sleep(self.poll).await;
            let Ok(doc) = self.status_of(m).await else {
                continue;
            };
            let state = doc.get("state").and_then(Value::as_str).unwrap_or_default();
            if state == "creating replica" {
                seen_clone = true;
                continue;
            }
            if state.ends_with("failed") {
                return Err(CtlError::Failed(format!(
                    "reinitialize of {} ended in state {state:?}; see its regent log",
                    m.name
                )));
            }
            if state == "running" && (seen_clone || started_at(&doc) != old_start) {
                return Ok(());
            }
        }
    }
}
