//! `switchover` and `failover`: checks the candidate, asks the leader (or the candidate) over
//! REST, and writes etcd's `failover` key instead when the node cannot be reached.

use super::{Session, parse_schedule, unknown_member};
use crate::ctl::CtlError;
use crate::ctl::rest::{Method, refused};
use crate::ctl::store::Store;
use crate::ctl::view::config_flag;
use crate::dcs::{Cluster, Failover, Member};
use serde_json::{Value, json};
use std::time::Duration;

impl<S: Store> Session<'_, S> {
    /// Members that may be promoted: not the leader, not `nofailover` (sorted by name).
    fn candidates(c: &Cluster) -> Vec<String> {
        let leader = c.leader_name();
        c.members
            .iter()
            .filter(|m| Some(m.name.as_str()) != leader && !m.nofailover())
            .map(|m| m.name.clone())
            .collect()
    }

    fn check_candidate(
        &self,
        c: &Cluster,
        name: &str,
        candidates: &[String],
    ) -> Result<(), CtlError> {
        if candidates.iter().any(|x| x == name) {
            return Ok(());
        }
        let msg = if c.leader_name() == Some(name) {
            format!("{name} is already the leader of cluster {}", self.scope)
        } else if c.member(name).is_none() {
            unknown_member(c, name, self.scope)
        } else {
            format!(
                "{name} is tagged nofailover (or failover_priority: 0) and cannot be promoted; candidates: {}",
                candidates.join(", ")
            )
        };
        Err(CtlError::Usage(msg))
    }

    fn manual_timeout(c: &Cluster) -> Duration {
        // The node waits up to 2 × max(10, loop_wait) s for the new leader before answering.
        let loop_wait = c
            .config
            .as_ref()
            .and_then(|(v, _)| v.get("loop_wait"))
            .and_then(Value::as_u64)
            .unwrap_or(10);
        Duration::from_secs(2 * loop_wait.max(10) + 30)
    }

    pub(crate) async fn switchover(
        &mut self,
        leader: Option<String>,
        candidate: Option<String>,
        scheduled: Option<String>,
        force: bool,
    ) -> Result<(), CtlError> {
        let c = self.store.read().await?;
        self.show_members(&c, "Current cluster topology")?;
        let Some(current) = c.leader_name().map(str::to_string) else {
            return Err(CtlError::Failed(format!(
                "cluster {} has no leader, so there is nothing to switch over from; to promote a replica now use `regent ctl failover --candidate NAME`",
                self.scope
            )));
        };
        if let Some(l) = &leader
            && *l != current
        {
            return Err(CtlError::Usage(format!(
                "{l} is not the leader of cluster {}; the leader is {current}",
                self.scope
            )));
        }
        let candidates = Self::candidates(&c);
        if candidates.is_empty() {
            return Err(CtlError::Failed(format!(
                "no member of cluster {} can take over from {current}: there is no replica, or every replica is tagged nofailover",
                self.scope
            )));
        }
        let candidate = match candidate {
            Some(x) => Some(x),
            None if force => None,
            None => {
                let a = self.prompt.ask(
                    &format!("Candidate ({}; empty: the best one)", candidates.join(", ")),
                    "",
                )?;
                (!a.is_empty()).then_some(a)
            }
        };
        if let Some(x) = &candidate {
            self.check_candidate(&c, x, &candidates)?;
        }
        let scheduled_at = match scheduled {
            Some(s) => parse_schedule(&s)?,
            None if force => None,
            None => parse_schedule(&self.prompt.ask(
                "When should the switchover take place (ISO 8601 with a time zone, e.g. 2026-05-01T03:00+00:00)",
                "now",
            )?)?,
        };
        if scheduled_at.is_some() && config_flag(c.config.as_ref().map(|(v, _)| v), "pause") {
            return Err(CtlError::Usage(format!(
                "cluster {} is paused, and a paused cluster cannot schedule a switchover; resume it (`regent ctl resume`) or switch over now",
                self.scope
            )));
        }
        let question = match &scheduled_at {
            Some(at) => format!(
                "Are you sure you want to schedule switchover of cluster {} at {at}, demoting current leader {current}?",
                self.scope
            ),
            None => format!(
                "Are you sure you want to switchover cluster {}, demoting current leader {current}?",
                self.scope
            ),
        };
        self.confirm(force, &question, "no switchover was requested")?;
        let mut body = json!({"leader": current});
        if let Some(x) = &candidate {
            body["candidate"] = json!(x);
        }
        if let Some(at) = &scheduled_at {
            body["scheduled_at"] = json!(at);
        }
        let target = self.member_of(&c, &current)?;
        let fallback = Failover {
            leader: Some(current.clone()),
            member: candidate.clone(),
            scheduled_at: scheduled_at.clone(),
        };
        self.manual("switchover", &c, target, body, fallback).await
    }

    pub(crate) async fn failover(
        &mut self,
        candidate: Option<String>,
        force: bool,
    ) -> Result<(), CtlError> {
        let c = self.store.read().await?;
        self.show_members(&c, "Current cluster topology")?;
        let candidates = Self::candidates(&c);
        if candidates.is_empty() {
            return Err(CtlError::Failed(format!(
                "no member of cluster {} can be promoted: there is no replica, or every replica is tagged nofailover",
                self.scope
            )));
        }
        let needs = || {
            CtlError::Usage(format!(
                "a failover goes to a named member: pass --candidate NAME (one of: {})",
                candidates.join(", ")
            ))
        };
        let candidate = match candidate {
            Some(x) => x,
            None if force => return Err(needs()),
            None => {
                let a = self
                    .prompt
                    .ask(&format!("Candidate ({})", candidates.join(", ")), "")?;
                if a.is_empty() {
                    return Err(needs());
                }
                a
            }
        };
        self.check_candidate(&c, &candidate, &candidates)?;
        let config = c.config.as_ref().map(|(v, _)| v);
        let sync = c
            .sync
            .as_ref()
            .map(|(s, _)| s.members())
            .unwrap_or_default();
        if config_flag(config, "synchronous_mode") && !sync.is_empty() && !sync.contains(&candidate)
        {
            self.confirm(
                force,
                &format!(
                    "Are you sure you want to failover to the asynchronous node {candidate}? It may lack transactions the synchronous standby ({}) acknowledged",
                    sync.join(", ")
                ),
                "no failover was requested",
            )?;
        }
        let current = c.leader_name().map(str::to_string);
        let demote = current
            .as_ref()
            .map(|l| format!(", demoting current leader {l}"))
            .unwrap_or_default();
        self.confirm(
            force,
            &format!(
                "Are you sure you want to failover cluster {}{demote}?",
                self.scope
            ),
            "no failover was requested",
        )?;
        let target = self.member_of(&c, current.as_deref().unwrap_or(&candidate))?;
        let fallback = Failover {
            leader: None,
            member: Some(candidate.clone()),
            scheduled_at: None,
        };
        self.manual(
            "failover",
            &c,
            target,
            json!({"candidate": candidate}),
            fallback,
        )
        .await
    }

    fn member_of<'c>(&self, c: &'c Cluster, name: &str) -> Result<&'c Member, CtlError> {
        c.member(name).ok_or_else(|| {
            CtlError::Failed(format!(
                "{name} has no member key in etcd (its regent is not running?), so its REST API address is unknown"
            ))
        })
    }

    /// Send a switchover/failover request; fall back to the `failover` key if the node cannot
    /// be reached.
    async fn manual(
        &mut self,
        action: &str,
        c: &Cluster,
        target: &Member,
        body: Value,
        fallback: Failover,
    ) -> Result<(), CtlError> {
        let timeout = Self::manual_timeout(c);
        match self
            .rest
            .call(target, Method::POST, action, Some(&body), timeout)
            .await
        {
            Ok(reply) if reply.status == 200 || reply.status == 202 => {
                self.note(&reply.text())?;
                let after = self.store.read().await?;
                self.show_members(&after, "")?;
                self.emit(json!({
                    "action": action,
                    "member": target.name,
                    "status": reply.status,
                    "message": reply.text(),
                    "leader": after.leader_name(),
                }))
            }
            Ok(reply) => Err(refused(target, &Method::POST, action, &reply)),
            Err(e @ CtlError::Unreachable { .. }) => {
                self.store.write_failover(&fallback).await?;
                self.note(&format!(
                    "{e}\nWrote the {action} request into the failover key in etcd instead; the leader carries it out in its next HA loop (watch `regent ctl list`)"
                ))?;
                self.emit(json!({
                    "action": action,
                    "member": target.name,
                    "status": null,
                    "message": format!("written to the failover key: {e}"),
                }))
            }
            Err(e) => Err(e),
        }
    }
}
