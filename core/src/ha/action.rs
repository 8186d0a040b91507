//! What a decision asks the supervisor to do: [`Action`]s, each carrying the reason the
//! supervisor needs (for its metrics and events) as data, and the [`Decision`] that lists them
//! with one sentence for the log.

use super::election::Election;

/// How to stop being a primary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DemoteMode {
    /// Lost the lock: immediate stop, restart as a replica (Patroni's `immediate-nolock`).
    Immediate,
    /// DCS unreachable and the lease deadline passed: fast stop, restart read-only.
    Offline,
    /// The cluster became a standby cluster: fast stop, keep the leader key, restart as the
    /// standby leader replicating from the remote primary (Patroni's `demote-cluster`).
    ToStandbyLeader,
}

/// Why this node races for the leader key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcquireReason {
    /// The cluster has no leader and the election ranks this node (first, or after the
    /// backoff).
    LeaderMissing,
    /// An operator asked for a failover to this node.
    RequestedFailover,
    /// The cluster is paused and this node runs as primary without the key.
    PausedTakeover,
    /// The leader key expired during a DCS outage that failsafe mode kept this node leading
    /// through: it takes the key again without restarting PostgreSQL.
    FailsafeRetake,
}

impl AcquireReason {
    /// The `reason` label of `regent_elections_total`.
    pub fn election_label(self) -> &'static str {
        match self {
            AcquireReason::LeaderMissing => "leader_missing",
            AcquireReason::RequestedFailover => "manual_failover",
            AcquireReason::PausedTakeover => "paused_takeover",
            AcquireReason::FailsafeRetake => "failsafe_retake",
        }
    }

    /// The `reason` label of `regent_failovers_total` once the key is taken.
    pub fn failover_label(self) -> &'static str {
        match self {
            AcquireReason::LeaderMissing => "leader_lost",
            AcquireReason::RequestedFailover => "manual_failover",
            AcquireReason::PausedTakeover => "paused_takeover",
            AcquireReason::FailsafeRetake => "failsafe_retake",
        }
    }
}

/// Why the leader hands over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandOverReason {
    /// An operator's switchover request in the `failover` key.
    Switchover,
    /// The leader's policies judged it failed for enough loops in a row.
    LeaderUnhealthy,
}

impl HandOverReason {
    /// The `reason` label of `regent_failovers_total`.
    pub fn failover_label(self) -> &'static str {
        match self {
            HandOverReason::Switchover => "switchover",
            HandOverReason::LeaderUnhealthy => "leader_unhealthy",
        }
    }
}

/// One step for the supervisor to carry out, in the order of the decision's list.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// This node is the leader and stays it: the leader's per-loop duties (publish `/status`,
    /// keep the members' slots, synchronous mode) when it holds the lock. It renews nothing:
    /// the lease is renewed before the decision, on its own.
    KeepLeading,
    /// Create the leader key (`create_revision == 0`).
    AcquireLeader {
        /// Why this node races.
        reason: AcquireReason,
    },
    /// Move the leader key, still holding our name, onto this process's lease.
    ReattachLeader,
    /// Delete the leader key if it still holds our name.
    ReleaseLeader,
    /// Race for `initialize`, initdb, start, publish, take the leader key.
    Bootstrap,
    /// A standby cluster's bootstrap: race for `initialize`, clone from the remote primary
    /// (`standby_cluster` host and port, or its `create_replica_methods`), start replicating
    /// from it, take the leader key as the standby leader.
    BootstrapStandby,
    /// Start PostgreSQL read-only, replicating from the standby cluster's remote primary: this
    /// node holds the lock of a standby cluster.
    StartStandbyLeader,
    /// Point the running replica at the standby cluster's remote primary: this node holds the
    /// lock of a standby cluster.
    FollowRemote,
    /// pg_basebackup from `source` (the leader, or a replica tagged `clonefrom`), then start
    /// as its replica.
    CloneFrom {
        /// The member to clone from.
        source: String,
    },
    /// No leader to copy from: create this replica with a method that needs none (`no_leader`,
    /// e.g. a restore from a backup repository), then start read-only to take part in the
    /// election.
    RestoreReplica,
    /// Move the old data directory aside (never delete) and clone again.
    Reclone {
        /// The member to clone from.
        leader: String,
    },
    /// Start PostgreSQL writable: this node holds the lock on a primary's data directory.
    StartPrimary,
    /// Start as a replica streaming from `upstream` (the leader, or the member named by
    /// `replicatefrom`), or read-only with no upstream (no leader yet, or `nostream`).
    StartReplica {
        /// The member to stream from, if any.
        upstream: Option<String>,
    },
    /// Former primary: crash recovery if needed, pg_rewind from the leader, start as its replica.
    Rewind {
        /// The member to rewind from and then follow.
        leader: String,
    },
    /// Promote the running replica: this node holds the lock.
    Promote,
    /// Stop being a primary.
    Demote {
        /// How to stop.
        mode: DemoteMode,
    },
    /// Point an already running replica at a new upstream (none: `nostream`).
    Follow {
        /// The member to stream from.
        upstream: Option<String>,
    },
    /// Graceful hand-over of the leadership to `to` (a switchover, or a leader whose policy
    /// judged it failed): checkpoint, stop PostgreSQL, wait until `to` has received the
    /// shutdown checkpoint, move the leader key onto `to`'s lease, then follow `to`. If `to`
    /// never confirms the checkpoint, start again as primary: nothing is lost.
    HandOver {
        /// The member that takes over.
        to: String,
        /// Why the leader hands over.
        reason: HandOverReason,
    },
    /// Delete the `failover` key: a request that is done, stale or impossible (the REST API
    /// reports "Switchover failed" when the key vanishes without a new leader).
    ClearFailover,
    /// Publish our system identifier in `initialize`.
    WriteInitialize {
        /// The data directory's system identifier.
        sysid: String,
    },
    /// Something an operator must fix; the supervisor stops.
    Fatal(String),
}

/// A decision: what to do and one sentence saying why (logged once per loop).
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// The actions, in order; the supervisor stops at the first that fails.
    pub actions: Vec<Action>,
    /// Why, in one sentence, for the log.
    pub summary: String,
    /// The election behind an `AcquireLeader` or `HandOver`: who was ranked and why.
    pub election: Option<Election>,
}

impl Decision {
    pub(crate) fn new(summary: impl Into<String>, actions: Vec<Action>) -> Decision {
        Decision {
            actions,
            summary: summary.into(),
            election: None,
        }
    }

    /// The same decision, carrying the election it acts on.
    pub(crate) fn with_election(mut self, e: Election) -> Decision {
        self.election = Some(e);
        self
    }
}
