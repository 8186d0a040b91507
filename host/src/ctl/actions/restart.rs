//! `restart` and `reload`: one REST call per selected member (`POST /restart`, `DELETE
//! /restart` for a scheduled one, `POST /reload`), each reported on its own line.

use super::{Session, all_done, failed_line, names_of, parse_schedule, parse_seconds, select};
use crate::control::RestartRequest;
use crate::ctl::rest::Method;
use crate::ctl::store::Store;
use crate::ctl::view::config_flag;
use crate::ctl::{CtlError, RoleFilter};
use serde_json::{Value, json};
use std::time::Duration;

/// Options of `restart`.
#[derive(Debug)]
pub(crate) struct RestartOptions {
    pub(crate) members: Vec<String>,
    pub(crate) role: RoleFilter,
    pub(crate) any: bool,
    pub(crate) scheduled: Option<String>,
    pub(crate) pg_version: Option<String>,
    pub(crate) pending: bool,
    pub(crate) timeout: Option<String>,
    pub(crate) force: bool,
}

impl<S: Store> Session<'_, S> {
    pub(crate) async fn restart(&mut self, o: RestartOptions) -> Result<(), CtlError> {
        let c = self.store.read().await?;
        let mut members = select(&c, &o.members, o.role, self.scope)?;
        let scheduled = match &o.scheduled {
            Some(s) => parse_schedule(s)?,
            None => None,
        };
        let mut body = RestartRequest::default();
        if o.pending {
            body.restart_pending = true;
            // A scheduled restart decides at its time which members still need one.
            if scheduled.is_none() {
                members.retain(|m| m.data.extra.get("pending_restart") == Some(&Value::Bool(true)));
                if members.is_empty() {
                    self.note("No member has a pending restart; nothing to do")?;
                    return self.emit(json!([]));
                }
            }
        }
        if o.any && members.len() > 1 {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos() as usize)
                .unwrap_or_default();
            let one = members[nanos % members.len()];
            members = vec![one];
        }
        if let Some(v) = &o.pg_version {
            check_pg_version(v)?;
            body.postgres_version = Some(v.clone());
        }
        if let Some(at) = &scheduled {
            if config_flag(c.config.as_ref().map(|(v, _)| v), "pause") {
                return Err(CtlError::Usage(format!(
                    "cluster {} is paused, and a paused cluster cannot schedule a restart; resume it or restart now",
                    self.scope
                )));
            }
            body.schedule = Some(at.clone());
        }
        if let Some(t) = &o.timeout {
            body.timeout = Some(parse_seconds(t)?);
        }
        if !o.force {
            self.show_members(&c, "")?;
        }
        let names = names_of(&members);
        let question = match &scheduled {
            Some(at) => {
                format!("Are you sure you want to schedule restart of members {names} at {at}?")
            }
            None => format!("Are you sure you want to restart members {names}?"),
        };
        self.confirm(o.force, &question, "nothing was restarted")?;
        let body_json = serde_json::to_value(&body)
            .map_err(|e| CtlError::Failed(format!("cannot encode the restart request: {e}")))?;
        let timeout = Duration::from_secs(body.timeout.unwrap_or(90) + 30);
        let mut results = Vec::new();
        let mut failed = Vec::new();
        for m in members {
            if scheduled.is_some() && o.force && m.data.extra.contains_key("scheduled_restart") {
                match self
                    .rest
                    .call(m, Method::DELETE, "restart", None, Duration::from_secs(10))
                    .await
                {
                    Ok(r) if r.ok() => {}
                    Ok(r) => self.note(&format!(
                        "Failed: flush scheduled restart for member {}, status code={}, ({})",
                        m.name,
                        r.status,
                        r.text()
                    ))?,
                    Err(e) => self.note(&format!("Failed: {e}"))?,
                }
            }
            let outcome = self
                .rest
                .call(m, Method::POST, "restart", Some(&body_json), timeout)
                .await;
            let (ok, line, status, message) = match &outcome {
                Ok(r) if r.status == 200 => (
                    true,
                    format!("Success: restart on member {}", m.name),
                    Some(r.status),
                    r.text(),
                ),
                Ok(r) if r.status == 202 => (
                    true,
                    format!("Success: restart scheduled on member {}", m.name),
                    Some(r.status),
                    r.text(),
                ),
                Ok(r) if r.status == 409 => (
                    false,
                    format!(
                        "Failed: another restart is already scheduled on member {} (drop it with --force)",
                        m.name
                    ),
                    Some(r.status),
                    r.text(),
                ),
                Ok(r) => (
                    false,
                    failed_line("restart", m, r),
                    Some(r.status),
                    r.text(),
                ),
                Err(e) => (false, format!("Failed: {e}"), None, e.to_string()),
            };
            self.note(&line)?;
            if !ok {
                failed.push(m.name.clone());
            }
            results.push(json!({"member": m.name, "action": "restart", "ok": ok, "status": status, "message": message}));
        }
        self.emit(Value::Array(results))?;
        all_done("restart", &failed)
    }

    pub(crate) async fn reload(
        &mut self,
        names: Vec<String>,
        role: RoleFilter,
        force: bool,
    ) -> Result<(), CtlError> {
        let c = self.store.read().await?;
        let members = select(&c, &names, role, self.scope)?;
        if !force {
            self.show_members(&c, "")?;
        }
        self.confirm(
            force,
            &format!(
                "Are you sure you want to reload members {}?",
                names_of(&members)
            ),
            "nothing was reloaded",
        )?;
        let loop_wait = Self::loop_wait(&c);
        let mut failed = Vec::new();
        let mut results = Vec::new();
        for m in members {
            let outcome = self
                .rest
                .call(m, Method::POST, "reload", None, Duration::from_secs(10))
                .await;
            let (ok, line, status) = match &outcome {
                Ok(r) if r.status == 200 => (
                    true,
                    format!("No changes to apply on member {}", m.name),
                    Some(r.status),
                ),
                Ok(r) if r.status == 202 => (
                    true,
                    format!(
                        "Reload request received for member {} and will be processed within {loop_wait} seconds",
                        m.name
                    ),
                    Some(r.status),
                ),
                Ok(r) => (false, failed_line("reload", m, r), Some(r.status)),
                Err(e) => (false, format!("Failed: {e}"), None),
            };
            self.note(&line)?;
            if !ok {
                failed.push(m.name.clone());
            }
            results.push(json!({"member": m.name, "action": "reload", "ok": ok, "status": status, "message": line}));
        }
        self.emit(Value::Array(results))?;
        all_done("reload", &failed)
    }
}

/// `--pg-version`: `15`, `15.2`, `9.6.24`.
fn check_pg_version(v: &str) -> Result<(), CtlError> {
    let parts: Vec<&str> = v.split('.').collect();
    if (1..=3).contains(&parts.len())
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
    {
        Ok(())
    } else {
        Err(CtlError::Usage(format!(
            "--pg-version {v}: expected a PostgreSQL version such as 15.8 or 9.6.24"
        )))
    }
}
