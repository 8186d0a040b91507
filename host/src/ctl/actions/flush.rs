//! `flush`: discard scheduled events, as patronictl does. `flush [MEMBER...] restart` sends
//! `DELETE /restart` to each chosen member with a scheduled restart; `flush switchover` sends
//! `DELETE /switchover` to the leader, then to the other members, until one answers 200 or 404,
//! and when none can be reached clears the `failover` key itself (compare-and-swap on its
//! revision, so a request written meanwhile is kept).

use super::{Session, all_done, leader_first, names_of, select, timestamp};
use crate::ctl::rest::Method;
use crate::ctl::store::Store;
use crate::ctl::{CtlError, RoleFilter};
use crate::dcs::Failover;
use serde_json::{Value, json};
use std::time::Duration;

/// What `flush` discards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FlushTarget {
    Restart,
    Switchover,
}

/// `[MEMBER...] restart|switchover` (the cluster name already taken off): the members and
/// what to flush.
pub(crate) fn split_flush_args(args: &[String]) -> Result<(Vec<String>, FlushTarget), CtlError> {
    let (last, members) = args
        .split_last()
        .ok_or_else(|| CtlError::Usage("flush what? end with `restart` or `switchover`".into()))?;
    let target = match last.as_str() {
        "restart" => FlushTarget::Restart,
        "switchover" => FlushTarget::Switchover,
        other => {
            return Err(CtlError::Usage(format!(
                "flush {other}: the last argument says what to flush, `restart` or `switchover`"
            )));
        }
    };
    if target == FlushTarget::Switchover && !members.is_empty() {
        return Err(CtlError::Usage(format!(
            "flush switchover takes no member names ({} given): the scheduled switchover is the cluster's",
            members.join(", ")
        )));
    }
    Ok((members.to_vec(), target))
}

impl<S: Store> Session<'_, S> {
    pub(crate) async fn flush(
        &mut self,
        args: Vec<String>,
        role: RoleFilter,
        force: bool,
    ) -> Result<(), CtlError> {
        let (members, target) = split_flush_args(&args)?;
        match target {
            FlushTarget::Restart => self.flush_restarts(&members, role, force).await,
            FlushTarget::Switchover => self.flush_switchover().await,
        }
    }

    async fn flush_restarts(
        &mut self,
        names: &[String],
        role: RoleFilter,
        force: bool,
    ) -> Result<(), CtlError> {
        let c = self.store.read().await?;
        let members = select(&c, names, role, self.scope)?;
        if !force {
            self.show_members(&c, "")?;
        }
        self.confirm(
            force,
            &format!(
                "Are you sure you want to flush the scheduled restarts of members {}?",
                names_of(&members)
            ),
            "nothing was flushed",
        )?;
        let mut failed = Vec::new();
        let mut results = Vec::new();
        for m in members {
            if !m.data.extra.get("scheduled_restart").is_some_and(truthy) {
                self.note(&format!("No scheduled restart for member {}", m.name))?;
                results.push(json!({"member": m.name, "action": "flush restart", "ok": true, "status": null}));
                continue;
            }
            let outcome = self
                .rest
                .call(m, Method::DELETE, "restart", None, Duration::from_secs(10))
                .await;
            let (ok, status) = match &outcome {
                Ok(r) if r.status < 400 => {
                    self.note(&format!(
                        "Success: flush scheduled restart for member {}",
                        m.name
                    ))?;
                    (true, Some(r.status))
                }
                Ok(r) => {
                    self.note(&format!(
                        "Failed: flush scheduled restart for member {}, status code={}, ({})",
                        m.name,
                        r.status,
                        r.text()
                    ))?;
                    (false, Some(r.status))
                }
                Err(e) => {
                    self.note(&format!("Failed: {e}"))?;
                    (false, None)
                }
            };
            if !ok {
                failed.push(m.name.clone());
            }
            results.push(
                json!({"member": m.name, "action": "flush restart", "ok": ok, "status": status}),
            );
        }
        self.emit(Value::Array(results))?;
        all_done("flush", &failed)
    }

    async fn flush_switchover(&mut self) -> Result<(), CtlError> {
        let c = self.store.read().await?;
        let Some((_, revision)) = c
            .failover
            .as_ref()
            .filter(|(f, _)| f.scheduled_at.is_some())
        else {
            self.note("No pending scheduled switchover")?;
            return self.emit(json!({"action": "flush switchover", "ok": true, "flushed": false}));
        };
        let order = leader_first(&c);
        for m in order {
            match self
                .rest
                .call(
                    m,
                    Method::DELETE,
                    "switchover",
                    None,
                    Duration::from_secs(10),
                )
                .await
            {
                Ok(r) if r.status == 200 || r.status == 404 => {
                    let ok = r.status == 200;
                    let word = if ok { "Success" } else { "Failed" };
                    self.note(&format!("{word}: {}", r.text()))?;
                    self.emit(json!({"action": "flush switchover", "ok": ok, "member": m.name, "status": r.status, "message": r.text()}))?;
                    return if ok {
                        Ok(())
                    } else {
                        Err(CtlError::Failed(format!(
                            "{} found no scheduled switchover to flush: {}",
                            m.name,
                            r.text()
                        )))
                    };
                }
                Ok(r) => self.note(&format!(
                    "Failed: member={}, status_code={}, ({})",
                    m.name,
                    r.status,
                    r.text()
                ))?,
                Err(e) => eprintln!("warning: {e}; trying the next member"),
            }
        }
        self.note(&format!(
            "{} Could not find any accessible member of cluster {}",
            timestamp(),
            self.scope
        ))?;
        if !self
            .store
            .write_failover_if(&Failover::default(), *revision)
            .await?
        {
            return Err(CtlError::Failed(format!(
                "the failover key of cluster {} changed while it was being cleared, so nothing was flushed; look at `regent ctl list` and run flush again",
                self.scope
            )));
        }
        self.note("Cleared the scheduled switchover in the failover key in etcd")?;
        self.emit(json!({"action": "flush switchover", "ok": true, "member": null, "status": null, "message": "cleared in etcd"}))
    }
}

fn truthy(v: &Value) -> bool {
    !matches!(v, Value::Null | Value::Bool(false))
}
