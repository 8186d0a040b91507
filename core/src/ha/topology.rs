//! Replica topology, from Patroni's tags: which member a replica streams from
//! (`replicatefrom` for cascading, nothing with `nostream`), which member a new replica is
//! cloned from (`clonefrom`), and which members' physical slots a node keeps.
//!
//! One rule, [`upstream_of`], answers "whom does member M stream from" for every node, so
//! that the member that keeps a slot and the member that streams through it agree: they read
//! the same cluster.

use super::World;
use crate::dcs::{Cluster, Member, tag_bool};

/// The `replicatefrom` tag of a member, when it names another member.
fn replicatefrom_tag(m: &Member) -> Option<&str> {
    m.data
        .tags
        .get("replicatefrom")
        .and_then(|v| v.as_str())
        .map(str::trim)
        .filter(|s| !s.is_empty() && *s != m.name)
}

/// The member runs PostgreSQL as a replica (or is the leader): something to stream from.
fn serves_wal(c: &Cluster, m: &Member) -> bool {
    m.data.state.as_deref() == Some("running")
        && (c.leader_name() == Some(m.name.as_str())
            || matches!(m.data.role.as_deref(), Some("replica" | "standby_leader")))
}

/// Whom `name` streams from in cluster `c`, whose leader is `leader`:
/// - nobody with `nostream` (WAL from the archive only);
/// - the member its `replicatefrom` tag names, if that member runs as a replica (or leads)
///   and its own chain of upstreams leads to the leader without coming back to `name`
///   (two replicas naming each other would stream from nobody);
/// - else the leader.
///
/// `tags` are `name`'s own (a node passes its configuration's tags, which its member key
/// carries too).
pub fn upstream_of(
    c: &Cluster,
    leader: &str,
    name: &str,
    nostream: bool,
    replicatefrom: Option<&str>,
) -> Option<String> {
    if nostream {
        return None;
    }
    if name == leader {
        return None;
    }
    let Some(first) = replicatefrom.map(str::trim).filter(|r| !r.is_empty()) else {
        return Some(leader.to_string());
    };
    if first == name || first == leader {
        return Some(leader.to_string());
    }
    // Walk the chain from the named member, at most one step per member: it must end at a
    // member that streams from the leader (or from the archive) without passing through
    // `name`. A member whose own upstream is gone streams from the leader.
    let mut at = first;
    for _ in 0..=c.members.len() {
        let Some(m) = c.member(at).filter(|m| serves_wal(c, m)) else {
            return Some(leader.to_string());
        };
        if tag_bool(&m.data.tags, "nostream") {
            return Some(first.to_string());
        }
        match replicatefrom_tag(m) {
            None => return Some(first.to_string()),
            Some(next) if next == name => return Some(leader.to_string()),
            Some(next) if next == leader => return Some(first.to_string()),
            Some(next) if !c.member(next).is_some_and(|n| serves_wal(c, n)) => {
                return Some(first.to_string());
            }
            Some(next) => at = next,
        }
    }
    Some(leader.to_string())
}

/// [`upstream_of`] for a member as its key describes it.
pub fn member_upstream(c: &Cluster, leader: &str, m: &Member) -> Option<String> {
    upstream_of(
        c,
        leader,
        &m.name,
        tag_bool(&m.data.tags, "nostream"),
        replicatefrom_tag(m),
    )
}

/// Where a new replica named `me` clones from: a running replica tagged `clonefrom` (the
/// one with the most WAL, then by name), else the leader. pg_basebackup works from a standby,
/// which takes the copy's load off the primary.
pub fn clone_source(c: &Cluster, leader: &str, me: &str) -> String {
    c.members
        .iter()
        .filter(|m| m.name != me && m.name != leader)
        .filter(|m| tag_bool(&m.data.tags, "clonefrom") && serves_wal(c, m))
        .filter(|m| !tag_bool(&m.data.tags, "nostream"))
        .max_by(|a, b| {
            let pos = |m: &Member| {
                m.data
                    .receive_lsn
                    .max(m.data.replay_lsn)
                    .max(m.data.xlog_location)
            };
            pos(a).cmp(&pos(b)).then_with(|| b.name.cmp(&a.name))
        })
        .map(|m| m.name.clone())
        .unwrap_or_else(|| leader.to_string())
}

/// A physical slot `me` keeps for another member, and whether that member streams through
/// it. A slot nobody streams through holds WAL back until it is advanced: the supervisor
/// moves it to the position the member reports in its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotFor {
    /// The member the slot is for.
    pub member: String,
    /// The member streams from `me`.
    pub streams_here: bool,
    /// The WAL position the member reports (received or replayed, the larger).
    pub reported_lsn: Option<u64>,
}

/// The members whose physical slots `me` keeps. The leader keeps one for every member that
/// streams (not `nostream`): a replica cascading from another member today may stream from
/// the leader tomorrow, and needs the WAL from where it is. A replica keeps one for each
/// member that streams from it.
pub fn slots_kept_by(c: &Cluster, me: &str) -> Vec<SlotFor> {
    let Some(leader) = c.leader_name() else {
        return Vec::new();
    };
    c.members
        .iter()
        .filter(|m| m.name != me && !tag_bool(&m.data.tags, "nostream"))
        .filter_map(|m| {
            let up = member_upstream(c, leader, m);
            let streams_here = up.as_deref() == Some(me);
            (me == leader || streams_here).then(|| SlotFor {
                member: m.name.clone(),
                streams_here,
                reported_lsn: m.data.receive_lsn.max(m.data.replay_lsn),
            })
        })
        .collect()
}

/// A tag's text (as [`Settings::tags`](super::Settings) holds it) is true, by the same rule as
/// [`tag_bool`].
fn text_true(v: &str) -> bool {
    let v = v.trim().to_ascii_lowercase();
    matches!(v.as_str(), "true" | "on" | "yes") || v.parse::<i64>().is_ok_and(|n| n != 0)
}

impl World {
    /// This node's `nostream` tag: it replays WAL from the archive only.
    pub fn nostream(&self) -> bool {
        self.settings
            .tags
            .get("nostream")
            .is_some_and(|v| text_true(v))
    }

    /// Whom this replica streams from while `leader` (not this node) leads ([`upstream_of`]).
    pub fn upstream_under(&self, leader: &str) -> Option<String> {
        let Some(c) = &self.cluster else {
            return Some(leader.to_string());
        };
        upstream_of(
            c,
            leader,
            &self.me,
            self.nostream(),
            self.settings.tags.get("replicatefrom").map(String::as_str),
        )
    }

    /// Where this new replica clones from while `leader` leads ([`clone_source`]).
    pub fn clone_source_under(&self, leader: &str) -> String {
        match &self.cluster {
            Some(c) => clone_source(c, leader, &self.me),
            None => leader.to_string(),
        }
    }
}
