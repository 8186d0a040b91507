//! The commands. Each reads the cluster from the [`Store`] and, where it acts, calls members'
//! REST APIs with Patroni's endpoints and bodies:
//!
//! | command | request |
//! |---|---|
//! | `switchover` | `POST /switchover {"leader", "candidate"?, "scheduled_at"?}` to the leader |
//! | `failover` | `POST /failover {"candidate"}` to the leader, or to the candidate if there is none |
//! | `restart` | `DELETE /restart` (with `--force`, if one is scheduled), `POST /restart {"schedule"?, "postgres_version"?, "timeout"?, "restart_pending"?}` |
//! | `reinit` | `POST /reinitialize {"force", "from_leader"}`; `--wait` polls `GET /patroni` |
//! | `reload` | `POST /reload` |
//! | `pause`/`resume` | `PATCH /config {"pause": true \| null}`, leader first; `--wait` polls the member keys' `pause` |
//! | `version` | `GET /patroni` |
//!
//! `list`, `topology`, `history`, `show-config` and `edit-config` need etcd only (`edit-config`
//! writes the `config` key with a CAS on its mod_revision, as patronictl does). When the leader's
//! REST API cannot be reached, `switchover` and `failover` write the `failover` key instead, as
//! patronictl does; the leader's HA loop acts on it.
//!
//! In the `json` and `yaml` formats, progress lines go to stderr and stdout carries one document.

use super::edit;
use super::prompt::Prompt;
use super::rest::{Method, Reply, Rest, refused};
use super::store::Store;
use super::view::{self, config_flag};
use super::{CtlCmd, CtlError, Format, RoleFilter, VERSION};
use crate::control::RestartRequest;
use crate::dcs::{Cluster, Failover, Member};
use serde_json::{Value, json};
use std::io::Write;
use std::time::{Duration, Instant};

/// One command run: where the cluster is, how to reach the members, where output goes.
pub struct Session<'a, S: Store> {
    pub store: &'a S,
    pub rest: &'a Rest,
    pub scope: &'a str,
    pub format: Format,
    pub out: &'a mut dyn Write,
    pub prompt: &'a mut dyn Prompt,
    /// Poll interval of the `--wait` loops.
    pub poll: Duration,
}

/// `regent ctl version` without a cluster.
pub fn print_own_version(out: &mut dyn Write, format: Format) -> Result<(), CtlError> {
    let text = match format {
        Format::Pretty => format!("regent ctl {VERSION}\n"),
        f => view::machine(&json!({"regent_ctl": VERSION}), f),
    };
    write_out(out, &text)
}

fn write_out(out: &mut dyn Write, text: &str) -> Result<(), CtlError> {
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| CtlError::Failed(format!("cannot write the output: {e}")))
}

/// Options of `edit-config`.
#[derive(Debug, Default)]
pub struct EditOptions {
    pub set: Vec<String>,
    pub pg: Vec<String>,
    pub apply: Option<String>,
    pub replace: Option<String>,
    pub quiet: bool,
    pub force: bool,
}

/// Options of `restart`.
#[derive(Debug)]
pub struct RestartOptions {
    pub members: Vec<String>,
    pub role: RoleFilter,
    pub any: bool,
    pub scheduled: Option<String>,
    pub pg_version: Option<String>,
    pub pending: bool,
    pub timeout: Option<String>,
    pub force: bool,
}

impl<S: Store> Session<'_, S> {
    pub async fn dispatch(&mut self, cmd: CtlCmd) -> Result<(), CtlError> {
        match cmd {
            CtlCmd::List { extended } => self.list(extended, false).await,
            CtlCmd::Topology => self.list(false, true).await,
            CtlCmd::History => self.history().await,
            CtlCmd::ShowConfig => self.show_config().await,
            CtlCmd::EditConfig {
                set,
                pg,
                apply,
                replace,
                quiet,
                force,
            } => {
                self.edit_config(EditOptions {
                    set,
                    pg,
                    apply,
                    replace,
                    quiet,
                    force,
                })
                .await
            }
            CtlCmd::Switchover {
                leader,
                candidate,
                scheduled,
                force,
            } => self.switchover(leader, candidate, scheduled, force).await,
            CtlCmd::Failover { candidate, force } => self.failover(candidate, force).await,
            CtlCmd::Restart {
                members,
                role,
                any,
                scheduled,
                pg_version,
                pending,
                timeout,
                force,
            } => {
                self.restart(RestartOptions {
                    members,
                    role,
                    any,
                    scheduled,
                    pg_version,
                    pending,
                    timeout,
                    force,
                })
                .await
            }
            CtlCmd::Reinit {
                members,
                from_leader,
                wait,
                force,
            } => self.reinit(members, from_leader, wait, force).await,
            CtlCmd::Reload {
                members,
                role,
                force,
            } => self.reload(members, role, force).await,
            CtlCmd::Pause { wait } => self.toggle_pause(true, wait).await,
            CtlCmd::Resume { wait } => self.toggle_pause(false, wait).await,
            CtlCmd::Version { members } => self.version(members).await,
        }
    }

    fn write(&mut self, text: &str) -> Result<(), CtlError> {
        write_out(self.out, text)
    }

    /// A progress or result line: stdout in the pretty format, stderr otherwise.
    fn note(&mut self, line: &str) -> Result<(), CtlError> {
        if self.format == Format::Pretty {
            self.write(&format!("{line}\n"))
        } else {
            eprintln!("{line}");
            Ok(())
        }
    }

    /// The machine-readable result (json/yaml formats only).
    fn emit(&mut self, doc: Value) -> Result<(), CtlError> {
        if self.format == Format::Pretty {
            return Ok(());
        }
        let text = view::machine(&doc, self.format);
        self.write(&text)
    }

    fn show_members(&mut self, cluster: &Cluster, heading: &str) -> Result<(), CtlError> {
        if self.format != Format::Pretty {
            return Ok(());
        }
        let table = view::render_members(cluster, self.scope, Format::Pretty, false, false);
        let text = if heading.is_empty() {
            table
        } else {
            format!("{heading}\n{table}")
        };
        self.write(&text)
    }

    fn confirm(&mut self, force: bool, question: &str, declined: &str) -> Result<(), CtlError> {
        if force || self.prompt.confirm(question)? {
            Ok(())
        } else {
            Err(CtlError::Failed(format!("aborted: {declined}")))
        }
    }

    // ---- DCS-only commands ---------------------------------------------------------------

    async fn list(&mut self, extended: bool, topology: bool) -> Result<(), CtlError> {
        let c = self.store.read().await?;
        if c.members.is_empty() && c.initialize.is_none() && c.config.is_none() {
            eprintln!(
                "warning: etcd has no keys for cluster {}; check the scope (--scope, `scope:`) and the namespace",
                self.scope
            );
        }
        let text = view::render_members(&c, self.scope, self.format, extended, topology);
        self.write(&text)
    }

    async fn history(&mut self) -> Result<(), CtlError> {
        let c = self.store.read().await?;
        let text = view::render_history(&c, self.format);
        self.write(&text)
    }

    fn config_of(&self, c: &Cluster) -> Result<(Value, i64), CtlError> {
        c.config.clone().ok_or_else(|| {
            CtlError::Failed(format!(
                "cluster {} has no (valid) config key in etcd: it is not bootstrapped yet, or the key is not JSON",
                self.scope
            ))
        })
    }

    async fn show_config(&mut self) -> Result<(), CtlError> {
        let c = self.store.read().await?;
        let (config, _) = self.config_of(&c)?;
        let text = match self.format {
            Format::Json => format!(
                "{}\n",
                serde_json::to_string_pretty(&config).unwrap_or_default()
            ),
            _ => edit::to_yaml(&config),
        };
        self.write(&text)
    }

    pub async fn edit_config(&mut self, o: EditOptions) -> Result<(), CtlError> {
        let c = self.store.read().await?;
        let (config, revision) = self.config_of(&c)?;
        let before = edit::to_yaml(&config);
        let mut changed = config.clone();
        let mut requested = false;
        if let Some(f) = &o.replace {
            let text = edit::read_input(f, "--replace")?;
            changed = edit::parse_document(&text, &format!("--replace {f}"))?;
            requested = true;
        }
        if let Some(f) = &o.apply {
            let text = edit::read_input(f, "--apply")?;
            let patch = edit::parse_document(&text, &format!("--apply {f}"))?;
            edit::merge_patch(&mut changed, &patch);
            requested = true;
        }
        if !o.set.is_empty() || !o.pg.is_empty() {
            changed = edit::apply_assignments(&changed, &o.set, &o.pg)?;
            requested = true;
        }
        if !requested {
            let text = edit::run_editor(&before, self.scope)?;
            changed = edit::parse_document(&text, "the edited configuration")?;
        }
        if changed == config {
            self.note("Not changed")?;
            return self.emit(json!({"changed": false, "config": config}));
        }
        edit::validate(&changed)?;
        if !o.quiet {
            let d = edit::diff(&before, &edit::to_yaml(&changed));
            if self.format == Format::Pretty {
                self.write(&d)?;
            } else {
                eprint!("{d}");
            }
        }
        self.confirm(
            o.force,
            "Apply these changes?",
            "the configuration was not changed",
        )?;
        if !self.store.write_config(&changed, revision).await? {
            return Err(CtlError::Failed(
                "Config modification aborted due to concurrent changes: the config key changed after it was read; nothing was written, run the command again".into(),
            ));
        }
        self.note("Configuration changed")?;
        self.emit(json!({"changed": true, "config": changed}))
    }

    // ---- switchover / failover -----------------------------------------------------------

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

    pub async fn switchover(
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

    pub async fn failover(
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

    // ---- per-member actions ---------------------------------------------------------------

    fn loop_wait(c: &Cluster) -> u64 {
        c.config
            .as_ref()
            .and_then(|(v, _)| v.get("loop_wait"))
            .and_then(Value::as_u64)
            .unwrap_or(10)
    }

    pub async fn restart(&mut self, o: RestartOptions) -> Result<(), CtlError> {
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

    pub async fn reinit(
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
                            && self.format == Format::Pretty
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

    pub async fn reload(
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

    pub async fn toggle_pause(&mut self, paused: bool, wait: bool) -> Result<(), CtlError> {
        let c = self.store.read().await?;
        let word = if paused { "paused" } else { "resumed" };
        if config_flag(c.config.as_ref().map(|(v, _)| v), "pause") == paused {
            return Err(CtlError::Failed(format!(
                "cluster {} is {}",
                self.scope,
                if paused {
                    "already paused"
                } else {
                    "not paused"
                }
            )));
        }
        let body = json!({"pause": if paused { Value::Bool(true) } else { Value::Null }});
        let leader = c.leader_name();
        let order: Vec<&Member> = c
            .members
            .iter()
            .filter(|m| Some(m.name.as_str()) == leader)
            .chain(c.members.iter().filter(|m| Some(m.name.as_str()) != leader))
            .filter(|m| m.data.api_url.is_some())
            .collect();
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

    pub async fn version(&mut self, names: Vec<String>) -> Result<(), CtlError> {
        let c = self.store.read().await?;
        for n in &names {
            if c.member(n).is_none() {
                return Err(CtlError::Usage(unknown_member(&c, n, self.scope)));
            }
        }
        self.note(&format!("regent ctl {VERSION}"))?;
        let mut docs = Vec::new();
        let mut failed = Vec::new();
        let members: Vec<&Member> = c
            .members
            .iter()
            .filter(|m| names.is_empty() || names.contains(&m.name))
            .filter(|m| m.data.api_url.is_some())
            .collect();
        for m in members {
            match self
                .rest
                .call(m, Method::GET, "patroni", None, Duration::from_secs(5))
                .await
                .and_then(|r| version_of(m, &r))
            {
                Ok((product, version, pg)) => {
                    let pg_text = pg
                        .as_ref()
                        .map(|p| format!(", PostgreSQL {p}"))
                        .unwrap_or_default();
                    self.note(&format!("{}: {product} {version}{pg_text}", m.name))?;
                    docs.push(json!({"member": m.name, "product": product, "version": version, "postgresql": pg}));
                }
                Err(e) => {
                    self.note(&format!("{}: failed to get version: {e}", m.name))?;
                    failed.push(m.name.clone());
                    docs.push(json!({"member": m.name, "error": e.to_string()}));
                }
            }
        }
        self.emit(json!({"regent_ctl": VERSION, "members": docs}))?;
        all_done("version", &failed)
    }
}

/// `(product, version, PostgreSQL version)` from a `GET /patroni` answer.
fn version_of(m: &Member, r: &Reply) -> Result<(String, String, Option<String>), CtlError> {
    if !r.ok() {
        return Err(refused(m, &Method::GET, "patroni", r));
    }
    let doc: Value = serde_json::from_str(&r.body).map_err(|e| {
        CtlError::Failed(format!(
            "GET /patroni did not answer JSON ({e}): {}",
            r.text()
        ))
    })?;
    let version = doc
        .pointer("/patroni/version")
        .and_then(Value::as_str)
        .unwrap_or("unknown")
        .to_string();
    let product = if r.server.as_deref().is_some_and(|s| s.starts_with("Regent")) {
        "Regent"
    } else {
        "Patroni"
    };
    let pg = doc
        .get("server_version")
        .and_then(Value::as_u64)
        .map(format_pg_version);
    Ok((product.into(), version, pg))
}

/// `150014` → `15.14`, `90624` → `9.6.24`.
pub fn format_pg_version(v: u64) -> String {
    if v >= 100_000 {
        format!("{}.{}", v / 10_000, v % 10_000)
    } else {
        format!("{}.{}.{}", v / 10_000, v / 100 % 100, v % 100)
    }
}

fn failed_line(action: &str, m: &Member, r: &Reply) -> String {
    format!(
        "Failed: {action} for member {}, status code={}, ({})",
        m.name,
        r.status,
        r.text()
    )
}

fn all_done(action: &str, failed: &[String]) -> Result<(), CtlError> {
    if failed.is_empty() {
        Ok(())
    } else {
        Err(CtlError::Failed(format!(
            "{action} failed on {} (see above)",
            failed.join(", ")
        )))
    }
}

fn names_of(members: &[&Member]) -> String {
    members
        .iter()
        .map(|m| m.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// `X is not a member of cluster S; its members are: …`.
pub fn unknown_member(c: &Cluster, name: &str, scope: &str) -> String {
    if c.members.is_empty() {
        format!("{name} is not a member of cluster {scope}: the cluster has no members in etcd")
    } else {
        let names: Vec<&str> = c.members.iter().map(|m| m.name.as_str()).collect();
        format!(
            "{name} is not a member of cluster {scope}; its members are: {}",
            names.join(", ")
        )
    }
}

/// The members a per-member command addresses: the named ones (all if none) with `role`.
pub fn select<'c>(
    c: &'c Cluster,
    names: &[String],
    role: RoleFilter,
    scope: &str,
) -> Result<Vec<&'c Member>, CtlError> {
    for n in names {
        if c.member(n).is_none() {
            return Err(CtlError::Usage(unknown_member(c, n, scope)));
        }
    }
    let leader = c.leader_name();
    let leader_is_standby = leader
        .and_then(|l| c.member(l))
        .and_then(|m| m.data.role.as_deref())
        == Some("standby_leader");
    let matches = |m: &Member| {
        let is_leader = Some(m.name.as_str()) == leader;
        match role {
            RoleFilter::Any => true,
            RoleFilter::Leader => is_leader,
            RoleFilter::Primary => is_leader && !leader_is_standby,
            RoleFilter::StandbyLeader => is_leader && leader_is_standby,
            RoleFilter::Replica | RoleFilter::Standby => !is_leader,
        }
    };
    let chosen: Vec<&Member> = c
        .members
        .iter()
        .filter(|m| names.is_empty() || names.contains(&m.name))
        .filter(|m| matches(m))
        .collect();
    if chosen.is_empty() {
        let what = role.describe();
        return Err(CtlError::Usage(if names.is_empty() {
            format!("cluster {scope} has no {what} member")
        } else {
            format!(
                "none of {} is a {what} of cluster {scope}",
                names.join(", ")
            )
        }));
    }
    Ok(chosen)
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

/// `--timeout`: seconds, or with a unit (`500ms` rounds up, `30s`, `2min`, `1h`, `1d`).
pub fn parse_seconds(t: &str) -> Result<u64, CtlError> {
    let s = t.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().map_err(|_| {
        CtlError::Usage(format!(
            "--timeout {t}: expected seconds, e.g. 60, 60s or 2min"
        ))
    })?;
    let secs = match unit.trim() {
        "" | "s" => Some(n),
        "ms" => Some(n.div_ceil(1000)),
        "min" => n.checked_mul(60),
        "h" => n.checked_mul(3600),
        "d" => n.checked_mul(86_400),
        _ => None,
    };
    match secs {
        Some(s) if s > 0 => Ok(s),
        _ => Err(CtlError::Usage(format!(
            "--timeout {t}: expected a positive number of seconds, e.g. 60, 60s or 2min"
        ))),
    }
}

/// `--scheduled`: `now` (or empty) → `None`; else an ISO 8601 time with a time zone, returned
/// as `YYYY-MM-DDTHH:MM:SS[.f]±HH:MM`. A time without a zone is refused rather than guessed.
pub fn parse_schedule(s: &str) -> Result<Option<String>, CtlError> {
    let t = s.trim();
    if t.is_empty() || t.eq_ignore_ascii_case("now") {
        return Ok(None);
    }
    let bad = || {
        CtlError::Usage(format!(
            "--scheduled {s}: expected `now` or an ISO 8601 time with a time zone, e.g. 2026-05-01T03:00+00:00 or 2026-05-01T03:00:00Z"
        ))
    };
    let num = |x: &str, lo: u32, hi: u32| -> Option<u32> {
        (x.len() == 2 || x.len() == 4)
            .then(|| x.parse::<u32>().ok())
            .flatten()
            .filter(|v| (lo..=hi).contains(v))
    };
    let (date, rest) = t.split_at_checked(10).ok_or_else(bad)?;
    let d: Vec<&str> = date.split('-').collect();
    if d.len() != 3
        || d[0].len() != 4
        || num(d[0], 1970, 9999).is_none()
        || num(d[1], 1, 12).is_none()
        || num(d[2], 1, 31).is_none()
    {
        return Err(bad());
    }
    let rest = rest.strip_prefix(['T', 't', ' ']).ok_or_else(bad)?;
    let zone_at = rest.find(['Z', 'z', '+', '-']).ok_or_else(bad)?;
    let (time, zone) = rest.split_at(zone_at);
    let (hms, frac) = match time.split_once('.') {
        Some((h, f)) if !f.is_empty() && f.chars().all(|c| c.is_ascii_digit()) => (h, Some(f)),
        Some(_) => return Err(bad()),
        None => (time, None),
    };
    let p: Vec<&str> = hms.split(':').collect();
    let ok_time = match p.len() {
        2 | 3 => {
            num(p[0], 0, 23).is_some()
                && num(p[1], 0, 59).is_some()
                && p.get(2).is_none_or(|sec| num(sec, 0, 60).is_some())
                && p.iter().all(|x| x.len() == 2)
        }
        _ => false,
    };
    if !ok_time {
        return Err(bad());
    }
    let offset = if zone.eq_ignore_ascii_case("z") {
        "+00:00".to_string()
    } else {
        let (sign, hhmm) = zone.split_at(1);
        let digits: String = hhmm.chars().filter(|c| *c != ':').collect();
        let (hh, mm) = match digits.len() {
            2 => (&digits[..2], "00"),
            4 => (&digits[..2], &digits[2..]),
            _ => return Err(bad()),
        };
        if num(hh, 0, 23).is_none() || num(mm, 0, 59).is_none() {
            return Err(bad());
        }
        format!("{sign}{hh}:{mm}")
    };
    let secs = p.get(2).copied().unwrap_or("00");
    let frac = frac.map(|f| format!(".{f}")).unwrap_or_default();
    Ok(Some(format!(
        "{date}T{}:{}:{secs}{frac}{offset}",
        p[0], p[1]
    )))
}
