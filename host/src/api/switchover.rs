//! `POST /switchover`, `POST /failover` and `DELETE /switchover`, with Patroni's checks, status
//! codes and answer texts (patronictl prints them).
//!
//! The API checks the request and the candidates (each polled at its `api_url`), writes the
//! `failover` key (compare-and-swap on the revision it read, so two concurrent requests cannot
//! overwrite each other) and wakes the HA loop. The leader's HA loop carries the switchover out.
//! An immediate request then waits, polling the DCS, until a new leader holds the key.

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::{Map, Value};

use super::read::dynamic_config;
use super::request::{json_object, opt_string, require_length, schedule};
use super::{Answer, ApiContext, Refusal, fetch_peer_status, text};
use crate::config::{DynamicConfig, SyncMode};
use crate::control::Command;
use crate::dcs::{Cluster, Failover, SyncState};

/// How often the DCS is polled for the outcome.
const POLL_INTERVAL: Duration = Duration::from_millis(250);
/// How long the failover key may be gone while the old leader still holds the leader key
/// before the switchover counts as failed (the leader may clear the key just before it steps
/// down).
const FAILED_GRACE: Duration = Duration::from_secs(2);
/// How long a candidate's REST API has to answer.
const CANDIDATE_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Action {
    Switchover,
    Failover,
}

impl Action {
    fn lower(self) -> &'static str {
        match self {
            Action::Switchover => "switchover",
            Action::Failover => "failover",
        }
    }
    fn title(self) -> &'static str {
        match self {
            Action::Switchover => "Switchover",
            Action::Failover => "Failover",
        }
    }
    /// `switched` / `failed`, as in `Successfully switched over to "X"`.
    fn past(self) -> &'static str {
        match self {
            Action::Switchover => "switched",
            Action::Failover => "failed",
        }
    }
    fn past_title(self) -> &'static str {
        match self {
            Action::Switchover => "Switched",
            Action::Failover => "Failed",
        }
    }
}

fn bad(message: &str) -> Refusal {
    Refusal::bad_request(message)
}

/// The keys of a switchover or failover request; Patroni ignores any other, and so does Regent.
const KEYS: [&str; 4] = ["leader", "candidate", "member", "scheduled_at"];

/// `POST /switchover {"leader", "candidate", "scheduled_at"}` and
/// `POST /failover {"candidate", "leader"}` (`member` is accepted for `candidate`). Other keys
/// are ignored and the request is answered on these, as Patroni does; an empty object is
/// answered on them too (400, the action needs a leader or a candidate).
pub(super) async fn post(
    ctx: &ApiContext,
    action: Action,
    headers: &HeaderMap,
    body: Body,
) -> Answer {
    require_length(headers)?;
    let body = json_object(headers, body, false).await?;
    let ignored: Vec<&str> = body
        .keys()
        .map(String::as_str)
        .filter(|k| !KEYS.contains(k))
        .collect();
    if !ignored.is_empty() {
        tracing::info!(
            action = action.lower(),
            keys = ignored.join(", "),
            "ignoring keys a {} request does not have, as Patroni does",
            action.lower()
        );
    }
    let req = Request::read(&body)?;
    let dcs = ctx.dcs()?;
    let cluster = ctx.read_cluster().await?;
    let config = dynamic_config(&cluster);
    let (action, scheduled_at) = check(action, &req, config.pause == Some(true))?;
    let Request {
        leader, candidate, ..
    } = req;
    if scheduled_at.is_none()
        && let Some(problem) = not_possible(
            ctx,
            &cluster,
            &config,
            leader.as_deref(),
            candidate.as_deref(),
            action,
        )
        .await
    {
        return Err(Refusal::new(StatusCode::PRECONDITION_FAILED, problem));
    }

    let revision = cluster.failover.as_ref().map_or(0, |(_, rev)| *rev);
    let request = Failover {
        leader: leader.clone(),
        member: candidate.clone(),
        scheduled_at: scheduled_at.clone(),
    };
    match dcs.write_failover_if(&request, revision).await {
        Ok(true) => {}
        Ok(false) => {
            return Err(Refusal::new(
                StatusCode::CONFLICT,
                "another switchover or failover request changed the failover key at the same time; check GET /cluster and retry",
            ));
        }
        Err(e) => {
            return Err(Refusal::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("failed to write failover key into DCS: {e}"),
            ));
        }
    }
    tracing::info!(
        action = action.lower(),
        leader = leader.as_deref().unwrap_or(""),
        candidate = candidate.as_deref().unwrap_or(""),
        scheduled_at = scheduled_at.as_deref().unwrap_or(""),
        "failover key written"
    );
    ctx.control().notify(Command::Wake);
    if scheduled_at.is_some() {
        return Ok(text(
            StatusCode::ACCEPTED,
            format!("{} scheduled", action.title()),
        ));
    }
    let timeout = ctx
        .settings()
        .switchover_timeout
        .unwrap_or_else(|| Duration::from_secs(2 * config.loop_wait.max(10)));
    Ok(wait_for_leader(
        ctx,
        cluster.leader_name().map(str::to_string),
        candidate,
        action,
        timeout,
    )
    .await)
}

/// The fields of a switchover or failover request (`member` stands for `candidate`); `null`
/// and `""` count as absent.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Request {
    leader: Option<String>,
    candidate: Option<String>,
    scheduled_at: Option<String>,
}

impl Request {
    fn read(body: &Map<String, Value>) -> Result<Request, Refusal> {
        Ok(Request {
            leader: opt_string(body, "leader")?,
            candidate: match opt_string(body, "candidate")? {
                Some(c) => Some(c),
                None => opt_string(body, "member")?,
            },
            scheduled_at: opt_string(body, "scheduled_at")?,
        })
    }
}

/// Patroni's checks of a request before the candidates are polled, in its order and with its
/// texts (patronictl prints them). Returns the action to carry out (a failover naming the
/// leader is a switchover, as in Patroni) and the schedule, in UTC. Paused, a switchover needs
/// a candidate and cannot be scheduled.
fn check(action: Action, req: &Request, paused: bool) -> Result<(Action, Option<String>), Refusal> {
    let (leader, candidate) = (&req.leader, &req.candidate);
    if action == Action::Failover && candidate.is_none() {
        return Err(bad(
            "Failover could be performed only to a specific candidate",
        ));
    }
    if action == Action::Switchover && leader.is_none() {
        return Err(bad(
            "Switchover could be performed only from a specific leader",
        ));
    }
    let mut scheduled_at = None;
    if let Some(s) = &req.scheduled_at {
        if action == Action::Failover {
            return Err(bad("Failover can't be scheduled"));
        }
        if paused {
            return Err(bad("Can't schedule switchover in the paused state"));
        }
        scheduled_at = Some(schedule(s, "switchover")?);
    }
    if paused && candidate.is_none() {
        return Err(bad(
            "Switchover is possible only to a specific candidate in a paused state",
        ));
    }
    let action = if action == Action::Failover && leader.is_some() {
        Action::Switchover
    } else {
        action
    };
    if leader.is_some() && leader == candidate {
        return Err(bad("Switchover target and source are the same"));
    }
    Ok((action, scheduled_at))
}

/// Patroni's `is_failover_possible`: `None` when some candidate is fit, else why not.
async fn not_possible(
    ctx: &ApiContext,
    c: &Cluster,
    config: &DynamicConfig,
    leader: Option<&str>,
    candidate: Option<&str>,
    action: Action,
) -> Option<String> {
    if let Some(l) = leader
        && c.leader_name() != Some(l)
    {
        return Some("leader name does not match".into());
    }
    // Quorum mode has no single sync standby to insist on.
    let sync_mode = config.synchronous_mode == SyncMode::On;
    let sync = c
        .sync
        .as_ref()
        .map(|(s, _)| s.members())
        .unwrap_or_default();
    let members: Vec<_> = if let Some(cand) = candidate {
        if action == Action::Switchover && sync_mode && !sync.iter().any(|s| s == cand) {
            return Some("candidate name does not match with sync_standby".into());
        }
        let m: Vec<_> = c.members.iter().filter(|m| m.name == cand).collect();
        if m.is_empty() {
            return Some("candidate does not exists".into());
        }
        if action == Action::Failover && sync_mode && !sync.iter().any(|s| s == cand) {
            // While the leader key is held, the leader (or its lease) is alive: commits may
            // still be acknowledged, and the positions the members published are not final.
            if let Some(l) = c.leader_name() {
                return Some(format!(
                    "{} is not possible: {cand} is not a synchronous standby ({}) and {l} still holds the leader key, so commits may still be acknowledged that {cand} lacks; fail over to a synchronous standby, or wait until the leader key expires",
                    action.lower(),
                    sync.join(", ")
                ));
            }
            let proof = match c.sync.as_ref() {
                // A key naming no standby: its leader alone holds every commit.
                Some((key, _)) if sync.is_empty() => quorum_proof(ctx, c, key, cand).await,
                _ => {
                    let (have, standbys) = sync_positions(ctx, c, cand, &sync, false).await;
                    crate::ha::sync::holds_every_acknowledged_commit(cand, have, &standbys)
                }
            };
            if let Err(why) = proof {
                return Some(format!("{} is not possible: {why}", action.lower()));
            }
        }
        // Quorum commit, no leader: the candidate must reach or pass quorum + 1 members of the
        // key's voting set (while the leader holds the key, it hands over and decides).
        if action == Action::Failover
            && config.synchronous_mode == SyncMode::Quorum
            && c.leader_name().is_none()
            && let Some((key, _)) = c.sync.as_ref()
            && let Err(why) = quorum_proof(ctx, c, key, cand).await
        {
            return Some(format!("{} is not possible: {why}", action.lower()));
        }
        m
    } else if sync_mode {
        let m: Vec<_> = c
            .members
            .iter()
            .filter(|m| sync.contains(&m.name))
            .collect();
        if m.is_empty() {
            return Some(format!(
                "{} is not possible: can not find sync_standby",
                action.lower()
            ));
        }
        m
    } else {
        let m: Vec<_> = c
            .members
            .iter()
            .filter(|m| Some(m.name.as_str()) != c.leader_name() && m.data.api_url.is_some())
            .collect();
        if m.is_empty() {
            return Some(format!(
                "{} is not possible: cluster does not have members except leader",
                action.lower()
            ));
        }
        m
    };
    let mut polls = tokio::task::JoinSet::new();
    for m in members {
        let Some(url) = m.data.api_url.clone() else {
            continue;
        };
        let peers = ctx.peers().clone();
        let name = m.name.clone();
        polls.spawn(async move {
            let status = fetch_peer_status(&peers, &url, CANDIDATE_TIMEOUT).await;
            (name, status)
        });
    }
    while let Some(done) = polls.join_next().await {
        match done {
            Ok((_, Ok(status))) if !status.nofailover => return None,
            Ok((name, Ok(_))) => {
                tracing::info!(candidate = %name, "candidate is not allowed to promote")
            }
            Ok((name, Err(e))) => {
                tracing::info!(candidate = %name, error = %e, "candidate is not reachable")
            }
            Err(e) => tracing::warn!(error = %e, "candidate check failed"),
        }
    }
    Some(format!(
        "{} is not possible: no good candidates have been found",
        action.lower()
    ))
}

/// [`crate::ha::quorum::proves`] for `cand` under `key`, with the positions the members of
/// its voting set report now.
async fn quorum_proof(
    ctx: &ApiContext,
    c: &Cluster,
    key: &SyncState,
    cand: &str,
) -> Result<(), String> {
    let set: Vec<String> = crate::ha::quorum::voting_set(key).into_iter().collect();
    let (have, positions) = sync_positions(ctx, c, cand, &set, true).await;
    let position = |n: &str| positions.iter().find(|(s, _)| s == n).and_then(|p| p.1);
    crate::ha::quorum::proves(cand, have, key, &position)
}

/// How much WAL the candidate and each synchronous standby have received, from their REST
/// APIs (`None`: no answer, or with `running_only` a PostgreSQL not running): a failover
/// outside the `sync` key must prove it loses nothing.
async fn sync_positions(
    ctx: &ApiContext,
    c: &Cluster,
    candidate: &str,
    sync: &[String],
    running_only: bool,
) -> (Option<u64>, Vec<(String, Option<u64>)>) {
    let mut polls = tokio::task::JoinSet::new();
    for name in sync.iter().map(String::as_str).chain([candidate]) {
        let url = c.member(name).and_then(|m| m.data.api_url.clone());
        let (peers, name) = (ctx.peers().clone(), name.to_string());
        polls.spawn(async move {
            let lsn = match url {
                Some(url) => fetch_peer_status(&peers, &url, CANDIDATE_TIMEOUT)
                    .await
                    .ok()
                    .filter(|p| !running_only || p.state == "running")
                    .map(|p| p.received_lsn.unwrap_or(p.wal_position)),
                None => None,
            };
            (name, lsn)
        });
    }
    let mut have = None;
    let mut standbys: Vec<(String, Option<u64>)> = sync.iter().map(|s| (s.clone(), None)).collect();
    while let Some(Ok((name, lsn))) = polls.join_next().await {
        if name == candidate {
            have = lsn;
        } else if let Some(slot) = standbys.iter_mut().find(|(s, _)| *s == name) {
            slot.1 = lsn;
        }
    }
    (have, standbys)
}

/// Poll the DCS until a leader other than `old_leader` holds the key (200), the request is gone
/// while the old leader stays (503 failed), or `timeout` passes (503 status unknown).
async fn wait_for_leader(
    ctx: &ApiContext,
    old_leader: Option<String>,
    candidate: Option<String>,
    action: Action,
    timeout: Duration,
) -> Response {
    let started = Instant::now();
    let deadline = started + timeout;
    let mut gone_since: Option<Instant> = None;
    loop {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        tokio::time::sleep(POLL_INTERVAL.min(deadline - now)).await;
        let Ok(c) = ctx.read_cluster().await else {
            continue;
        };
        if let Some(new) = c.leader_name()
            && Some(new) != old_leader.as_deref()
        {
            let body = match candidate.as_deref() {
                Some(wanted) if wanted != new => format!(
                    "{} over to \"{new}\" instead of \"{wanted}\"",
                    action.past_title()
                ),
                _ => format!("Successfully {} over to \"{new}\"", action.past()),
            };
            return text(StatusCode::OK, body);
        }
        let pending = c.failover.as_ref().is_some_and(|(f, _)| !f.is_empty());
        let old_still_leads = c.leader.is_some() && c.leader_name() == old_leader.as_deref();
        if !pending && old_still_leads {
            let since = *gone_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= FAILED_GRACE {
                return text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("{} failed", action.title()),
                );
            }
        } else {
            gone_since = None;
        }
    }
    text(
        StatusCode::SERVICE_UNAVAILABLE,
        format!(
            "{} status unknown after {} seconds; operation may still be in progress",
            action.title(),
            timeout.as_secs()
        ),
    )
}

/// `DELETE /switchover`: cancel a scheduled switchover (compare-and-swap on the key).
pub(super) async fn cancel(ctx: &ApiContext) -> Answer {
    let dcs = ctx.dcs()?;
    let cluster = ctx.read_cluster().await?;
    let Some((_, revision)) = cluster
        .failover
        .as_ref()
        .filter(|(f, _)| f.scheduled_at.is_some())
    else {
        return Err(Refusal::new(
            StatusCode::NOT_FOUND,
            "no switchover is scheduled",
        ));
    };
    match dcs.write_failover_if(&Failover::default(), *revision).await {
        Ok(true) => {
            ctx.control().notify(Command::Wake);
            Ok(text(StatusCode::OK, "scheduled switchover deleted"))
        }
        Ok(false) => Err(Refusal::new(
            StatusCode::CONFLICT,
            "the scheduled switchover changed while it was being deleted; check GET /cluster and retry",
        )),
        Err(e) => Err(Refusal::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("cannot delete the scheduled switchover: {e}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The answer to a request body, paused or not: the action carried out, or the refusal.
    fn answer(action: Action, body: Value, paused: bool) -> Result<Action, (u16, String)> {
        let map = body.as_object().cloned().unwrap_or_default();
        Request::read(&map)
            .and_then(|r| check(action, &r, paused))
            .map(|(a, _)| a)
            .map_err(|r| (r.status.as_u16(), r.message))
    }

    /// Issue 12 item 8: Patroni's codes and texts for the requests it refuses before polling
    /// candidates, paused or not; keys a request does not have are ignored.
    #[test]
    fn requests_are_checked_as_patroni_checks_them() {
        use Action::{Failover as F, Switchover as S};
        let future = "2099-01-01T00:00:00+00:00";
        let refused = |text: &str| Err((400, text.to_string()));
        for (action, body, paused, expected) in [
            // Paused: a switchover to a named candidate is allowed, never scheduled.
            (S, json!({"leader": "a", "candidate": "b"}), true, Ok(S)),
            (
                S,
                json!({"leader": "a"}),
                true,
                refused("Switchover is possible only to a specific candidate in a paused state"),
            ),
            (
                S,
                json!({"leader": "a", "candidate": "b", "scheduled_at": future}),
                true,
                refused("Can't schedule switchover in the paused state"),
            ),
            (
                S,
                json!({"leader": "a", "candidate": "b", "scheduled_at": "not a time"}),
                true,
                refused("Can't schedule switchover in the paused state"),
            ),
            (
                S,
                json!({"leader": "a", "scheduled_at": future}),
                false,
                Ok(S),
            ),
            (S, json!({"leader": "a"}), false, Ok(S)),
            // A failover to a named candidate while paused is allowed too.
            (F, json!({"candidate": "b"}), true, Ok(F)),
            (F, json!({"leader": "a", "candidate": "b"}), true, Ok(S)),
            // Unknown keys are ignored; the answer is on the keys Patroni knows.
            (
                F,
                json!({"foo": "bar"}),
                false,
                refused("Failover could be performed only to a specific candidate"),
            ),
            (
                F,
                json!({}),
                false,
                refused("Failover could be performed only to a specific candidate"),
            ),
            (F, json!({"candidate": "b", "force": true}), false, Ok(F)),
            (F, json!({"member": "b", "foo": 1}), false, Ok(F)),
            (
                S,
                json!({}),
                false,
                refused("Switchover could be performed only from a specific leader"),
            ),
            (
                S,
                json!({"candidate": "b", "to": "c"}),
                true,
                refused("Switchover could be performed only from a specific leader"),
            ),
            (S, json!({"leader": "a", "to": "b"}), false, Ok(S)),
            (
                F,
                json!({"candidate": "b", "scheduled_at": future}),
                true,
                refused("Failover can't be scheduled"),
            ),
            (
                S,
                json!({"leader": "a", "candidate": "a"}),
                true,
                refused("Switchover target and source are the same"),
            ),
        ] {
            assert_eq!(
                answer(action, body.clone(), paused),
                expected,
                "{action:?} {body} paused={paused}"
            );
        }
    }
}
