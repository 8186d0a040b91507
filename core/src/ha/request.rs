//! Operators' requests in the `failover` key: a switchover (the leader named) or a failover
//! (no leader named), maybe scheduled; when one is due, and the leader's answer to it.

use super::election::{Chosen, Election};
use super::policy::{self, ElectionReason, Policy, Ranking};
use super::ranking::{streaming_only, sync_only};
use super::{Action, HandOverReason, World};

/// A switchover (`leader` set) or failover (`leader` unset) request from the `failover` key.
#[derive(Debug, Clone, Copy)]
pub(super) struct Request<'a> {
    /// The leader the switchover is from (`None`: a failover).
    pub(super) leader: Option<&'a str>,
    /// The member asked to take over (`None`: the best candidate).
    pub(super) candidate: Option<&'a str>,
    /// When the switchover is to run (`None`: now).
    pub(super) scheduled_at: Option<&'a str>,
}

/// When a request may run.
pub(super) enum Due {
    /// Now (not scheduled, or in this loop).
    Now,
    /// Scheduled later (ms from now).
    Later(u64),
    /// More than 1.5 loops past its time: dropped (Patroni does the same).
    Stale,
    /// `scheduled_at` does not parse.
    Invalid,
}

impl Request<'_> {
    pub(super) fn due(&self, w: &World) -> Due {
        let Some(at) = self.scheduled_at else {
            return Due::Now;
        };
        let Some(at_ms) = crate::dcs::parse_iso8601_ms(at) else {
            return Due::Invalid;
        };
        if at_ms > w.now_unix_ms {
            return Due::Later(at_ms - w.now_unix_ms);
        }
        let late = w.now_unix_ms - at_ms;
        if late > (w.settings.loop_wait_ms * 3 / 2).max(1_500) {
            Due::Stale
        } else {
            Due::Now
        }
    }

    fn describe(&self) -> String {
        match self.candidate {
            Some(c) => format!("to {c}"),
            None => "to the best candidate".into(),
        }
    }
}

impl World {
    /// The switchover/failover request in the `failover` key, if any.
    pub(super) fn request(&self) -> Option<Request<'_>> {
        let (f, _) = self.cluster.as_ref()?.failover.as_ref()?;
        if f.is_empty() {
            return None;
        }
        Some(Request {
            leader: f.leader.as_deref().filter(|l| !l.is_empty()),
            candidate: f.member.as_deref().filter(|m| !m.is_empty()),
            scheduled_at: f.scheduled_at.as_deref().filter(|s| !s.is_empty()),
        })
    }
}

/// The leader's answer to a request in the `failover` key: a summary and the actions besides
/// renewing the lease.
pub(super) fn leader_request(
    w: &World,
    req: Request<'_>,
    policy: &dyn Policy,
) -> (String, Vec<Action>, Option<Election>) {
    let what = req.describe();
    if let Some(l) = req.leader
        && l != w.me
    {
        return (
            format!("dropping the switchover request {what}: it names {l} as leader, but I am"),
            vec![Action::ClearFailover],
            None,
        );
    }
    if req.candidate == Some(w.me.as_str()) {
        return (
            format!("dropping the switchover request {what}: I am already the leader"),
            vec![Action::ClearFailover],
            None,
        );
    }
    if w.settings.paused && req.candidate.is_none() {
        return (
            "dropping the switchover request: in a paused cluster a switchover needs a named candidate"
                .into(),
            vec![Action::ClearFailover],
            None,
        );
    }
    match req.due(w) {
        Due::Now => {}
        Due::Later(ms) => {
            return (
                format!(
                    "I am ({}) the leader; switchover {what} scheduled in {} s",
                    w.me,
                    ms.div_ceil(1000)
                ),
                vec![],
                None,
            );
        }
        Due::Stale => {
            return (
                format!(
                    "dropping the switchover {what} scheduled at {}: more than 1.5 loops late",
                    req.scheduled_at.unwrap_or_default()
                ),
                vec![Action::ClearFailover],
                None,
            );
        }
        Due::Invalid => {
            return (
                format!(
                    "dropping the switchover {what}: scheduled_at {:?} is not an ISO 8601 time",
                    req.scheduled_at.unwrap_or_default()
                ),
                vec![Action::ClearFailover],
                None,
            );
        }
    }
    let others = w
        .cluster
        .as_ref()
        .is_some_and(|c| c.members.iter().any(|m| m.name != w.me));
    if w.peers.is_empty() && others {
        return (
            format!("switchover {what} requested: asking the members for their state"),
            vec![],
            None,
        );
    }
    let view = w.handover_view(ElectionReason::Switchover);
    let ranking = sync_only(&view, policy.rank(&view));
    let not_streaming = |c: &str| {
        matches!(&ranking, Ranking::Candidates(l) if l.iter().any(|r| r.name == c))
            && !w.pg.streaming.iter().any(|s| s == c)
    };
    if let Some(c) = req.candidate
        && not_streaming(c)
    {
        let waited = w
            .memory
            .request_since_ms()
            .map_or(0, |s| w.now_ms.saturating_sub(s));
        if waited < w.settings.ttl_ms {
            return (
                format!("switchover {what}: waiting for {c} to stream from me"),
                vec![],
                None,
            );
        }
        return (
            format!(
                "switchover {what} is not possible: {c} has not streamed from me for {} s",
                waited / 1000
            ),
            vec![Action::ClearFailover],
            None,
        );
    }
    let filtered = streaming_only(w, ranking);
    let list = match &filtered {
        Ranking::Veto(why) => {
            return (
                format!("switchover {what} is not possible: {why}"),
                vec![Action::ClearFailover],
                None,
            );
        }
        Ranking::Candidates(list) => list,
    };
    let chosen = match req.candidate {
        Some(c) => list.iter().find(|r| r.name == c),
        None => list.first(),
    };
    match chosen {
        Some(r) => (
            format!(
                "switchover {what}: handing over to {} ({})",
                r.name, r.reason
            ),
            vec![Action::HandOver {
                to: r.name.clone(),
                reason: HandOverReason::Switchover,
            }],
            Some(Election::new(
                &view,
                policy.name(),
                &filtered,
                &r.name,
                if req.candidate.is_some() {
                    Chosen::RequestedSwitchover
                } else {
                    Chosen::HandOver
                },
            )),
        ),
        None => {
            let why = match req.candidate {
                Some(c) => view
                    .members
                    .iter()
                    .find(|m| m.name == c)
                    .map(|m| {
                        policy::DefaultPolicy::ineligible(&view, m)
                            .unwrap_or_else(|| "the policy does not rank it".into())
                    })
                    .unwrap_or_else(|| "it is not a member of the cluster".into()),
                None => "no eligible candidate".into(),
            };
            (
                format!("switchover {what} is not possible: {why}"),
                vec![Action::ClearFailover],
                None,
            )
        }
    }
}
