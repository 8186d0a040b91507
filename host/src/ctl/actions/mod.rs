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
//! | `flush … restart` | `DELETE /restart` on each member with a scheduled restart |
//! | `flush … switchover` | `DELETE /switchover`, leader first, then the other members |
//!
//! `list`, `topology`, `history`, `explain` (the election records), `dsn`, `show-config`, `edit-config`,
//! `policy` (the pushed policies: `regent/policy-set`, CAS) and `remove` need etcd
//! only (`edit-config` writes the `config` key with a CAS on its mod_revision, as patronictl
//! does; `remove` deletes the cluster's prefix). When the leader's REST API cannot be reached,
//! `switchover` and `failover` write the `failover` key instead, as patronictl does; the leader's
//! HA loop acts on it. `flush switchover` clears the key itself (CAS) when no member answers.
//! `query` connects to a member's PostgreSQL (its `conn_url`) and runs SQL there.
//!
//! In the `json` and `yaml` formats, progress lines go to stderr and stdout carries one document.
//!
//! This module holds the [`Session`], its output helpers and what several commands share
//! (choosing members, reporting failures). Each command family has its own file: `list.rs`
//! (the read-only views), `config.rs` (`show-config`, `edit-config`), `switchover.rs`
//! (`switchover`, `failover`), `restart.rs` (`restart`, `reload`), `reinit.rs`, `pause.rs`
//! (`pause`, `resume`), `policy.rs` (`policy push|status|promote|rollback`), `dsn.rs`, `query.rs`, `flush.rs`, `remove.rs` and `explain.rs`; `watch.rs` repeats
//! `list`/`topology`/`query` (`-W`, `-w`); `parse.rs` reads the `--timeout` and `--scheduled`
//! values.

mod config;
mod dsn;
mod explain;
mod flush;
mod list;
mod parse;
mod pause;
mod policy;
mod query;
mod reinit;
mod remove;
mod restart;
mod switchover;
mod watch;

pub(crate) use config::EditOptions;
pub(crate) use explain::Which;
pub(crate) use parse::{parse_schedule, parse_seconds};
pub(crate) use query::QueryOptions;
#[cfg(test)]
pub(crate) use query::{Rows, render_rows};
pub(crate) use restart::RestartOptions;
pub(crate) use watch::{Watching, timestamp};

use super::prompt::Prompt;
use super::rest::{Reply, Rest};
use super::store::Store;
use super::target::PgLogin;
use super::view;
use super::{CtlCmd, CtlError, Format, RoleFilter, VERSION};
use crate::dcs::{Cluster, Member};
use serde_json::{Value, json};
use std::io::Write;
use std::time::Duration;

/// One command run: where the cluster is, how to reach the members, where output goes.
pub(crate) struct Session<'a, S: Store> {
    pub(crate) store: &'a S,
    pub(crate) rest: &'a Rest,
    pub(crate) scope: &'a str,
    pub(crate) format: Format,
    pub(crate) out: &'a mut dyn Write,
    pub(crate) prompt: &'a mut dyn Prompt,
    /// Poll interval of the `--wait` loops.
    pub(crate) poll: Duration,
    /// `postgresql.authentication.superuser` from the config file (`query`'s default login).
    pub(crate) pg_login: PgLogin,
}

/// `regent ctl version` without a cluster.
pub(crate) fn print_own_version(out: &mut dyn Write, format: Format) -> Result<(), CtlError> {
    let text = match format {
        f if f.is_text() => format!("regent ctl {VERSION}\n"),
        f => view::machine(&json!({"regent_ctl": VERSION}), f),
    };
    write_out(out, &text)
}

fn write_out(out: &mut dyn Write, text: &str) -> Result<(), CtlError> {
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| CtlError::Failed(format!("cannot write the output: {e}")))
}

impl<S: Store> Session<'_, S> {
    pub(crate) async fn dispatch(&mut self, cmd: CtlCmd) -> Result<(), CtlError> {
        match cmd {
            CtlCmd::List {
                clusters,
                extended,
                timestamp,
                watch,
            } => {
                let every = Watching::every(watch.interval()?);
                self.list(&clusters, extended, false, timestamp, every)
                    .await
            }
            CtlCmd::Topology { clusters, watch } => {
                let every = Watching::every(watch.interval()?);
                self.list(&clusters, false, true, false, every).await
            }
            CtlCmd::History { .. } => self.history().await,
            CtlCmd::Explain {
                which, last, view, ..
            } => {
                let which = match (which, last) {
                    (Some(w), false) => Which::parse(&w)?,
                    (None, _) => Which::Last,
                    (Some(w), true) => {
                        return Err(CtlError::Usage(format!(
                            "explain --last {w}: give --last or an election number, not both"
                        )));
                    }
                };
                self.explain(which, view).await
            }
            CtlCmd::Dsn { role, member, .. } => self.dsn(role, member).await,
            CtlCmd::Query(q) => {
                let o = QueryOptions::from_args(&q)?;
                self.query(o).await
            }
            CtlCmd::Flush { args, role, force } => self.flush(args, role, force).await,
            CtlCmd::Remove { cluster } => self.remove(&cluster).await,
            CtlCmd::ShowConfig { .. } => self.show_config().await,
            CtlCmd::EditConfig {
                set,
                pg,
                apply,
                replace,
                quiet,
                force,
                ..
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
                ..
            } => self.switchover(leader, candidate, scheduled, force).await,
            CtlCmd::Failover {
                candidate, force, ..
            } => self.failover(candidate, force).await,
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
            CtlCmd::Pause { wait, .. } => self.toggle_pause(true, wait).await,
            CtlCmd::Resume { wait, .. } => self.toggle_pause(false, wait).await,
            CtlCmd::Version { members } => self.version(members).await,
            CtlCmd::Policy(cmd) => self.policy(cmd).await,
        }
    }

    fn write(&mut self, text: &str) -> Result<(), CtlError> {
        write_out(self.out, text)
    }

    /// A progress or result line: stdout in the pretty format, stderr otherwise.
    fn note(&mut self, line: &str) -> Result<(), CtlError> {
        if self.format.is_text() {
            self.write(&format!("{line}\n"))
        } else {
            eprintln!("{line}");
            Ok(())
        }
    }

    /// The machine-readable result (json/yaml formats only).
    fn emit(&mut self, doc: Value) -> Result<(), CtlError> {
        if self.format.is_text() {
            return Ok(());
        }
        let text = view::machine(&doc, self.format);
        self.write(&text)
    }

    fn show_members(&mut self, cluster: &Cluster, heading: &str) -> Result<(), CtlError> {
        if !self.format.is_text() {
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

    fn loop_wait(c: &Cluster) -> u64 {
        c.config
            .as_ref()
            .and_then(|(v, _)| v.get("loop_wait"))
            .and_then(Value::as_u64)
            .unwrap_or(10)
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

/// The members that publish an `api_url`, the leader first (patronictl's order for requests
/// any member can answer).
fn leader_first(c: &Cluster) -> Vec<&Member> {
    let leader = c.leader_name();
    c.members
        .iter()
        .filter(|m| Some(m.name.as_str()) == leader)
        .chain(c.members.iter().filter(|m| Some(m.name.as_str()) != leader))
        .filter(|m| m.data.api_url.is_some())
        .collect()
}

fn names_of(members: &[&Member]) -> String {
    members
        .iter()
        .map(|m| m.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// `X is not a member of cluster S; its members are: …`.
pub(crate) fn unknown_member(c: &Cluster, name: &str, scope: &str) -> String {
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
pub(crate) fn select<'c>(
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
