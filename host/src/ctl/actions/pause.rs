//! `pause` and `resume`: sets or clears `pause` in the configuration through a member's REST
//! API (`PATCH /config`, the leader first) and, with `--wait`, polls the member keys in etcd.

use super::{Session, leader_first};
use crate::ctl::CtlError;
use crate::ctl::rest::{Method, refused};
use crate::ctl::store::Store;
use crate::ctl::view::config_flag;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

impl<S: Store> Session<'_, S> {
    pub(crate) async fn toggle_pause(&mut self, paused: bool, wait: bool) -> Result<(), CtlError> {
        let c = self.store.read().await?;
        let word = if paused { "paused" } else { "resumed" };
        if config_flag(c.config.as_ref().map(|(v, _)| v), "pause") == paused {
            // patronictl's words and exit code (1); nothing is sent.
            return Err(CtlError::Failed(
                if paused {
                    "Cluster is already paused"
                } else {
                    "Cluster is not paused"
                }
                .into(),
            ));
        }
        let body = json!({"pause": if paused { Value::Bool(true) } else { Value::Null }});
        let order = leader_first(&c);
        let mut errors = Vec::new();
        let mut accepted = None;
        for m in order {
            match self
                .rest
                .call(
                    m,
                    Method::PATCH,
                    "config",
                    Some(&body),
                    Duration::from_secs(10),
                )
                .await
            {
                Ok(r) if r.status == 200 => {
                    accepted = Some(m.name.clone());
                    break;
                }
                Ok(r) => return Err(refused(m, &Method::PATCH, "config", &r)),
                Err(e) => {
                    eprintln!("warning: {e}; trying the next member");
                    errors.push(e.to_string());
                }
            }
        }
        let Some(by) = accepted else {
            return Err(CtlError::Failed(format!(
                "no member of cluster {} could be reached to {} it: {}",
                self.scope,
                if paused { "pause" } else { "resume" },
                if errors.is_empty() {
                    "no member publishes an api_url".into()
                } else {
                    errors.join("; ")
                }
            )));
        };
        if wait {
            self.note(&format!(
                "'{}' request sent, waiting until it is recognized by all nodes",
                if paused { "pause" } else { "resume" }
            ))?;
            let names: Vec<String> = c.members.iter().map(|m| m.name.clone()).collect();
            let limit = Duration::from_secs(2 * Self::loop_wait(&c) + 5);
            let deadline = Instant::now() + limit;
            loop {
                let now = self.store.read().await?;
                let pending: Vec<String> = now
                    .members
                    .iter()
                    .filter(|m| names.contains(&m.name))
                    .filter(|m| {
                        m.data
                            .extra
                            .get("pause")
                            .is_some_and(|v| v == &Value::Bool(true))
                            != paused
                    })
                    .map(|m| m.name.clone())
                    .collect();
                if pending.is_empty() {
                    break;
                }
                if Instant::now() >= deadline {
                    return Err(CtlError::Failed(format!(
                        "the cluster configuration says {word}, but {} did not report it within {limit:?} (their member keys do not show `pause: {paused}`)",
                        pending.join(", ")
                    )));
                }
                tokio::time::sleep(self.poll).await;
            }
        }
        self.note(&format!("Success: cluster management is {word}"))?;
        self.emit(
            json!({"action": if paused { "pause" } else { "resume" }, "ok": true, "member": by}),
        )
    }
}
