//! Standby clusters (`standby_cluster` in the cluster config): the whole cluster replicates
//! from a remote primary. The member holding the leader key is the *standby leader*: it
//! streams (or restores) from the remote and the other members stream from it, as they would
//! from a primary. Nothing in a standby cluster is ever writable:
//!
//! - the bootstrap clones from the remote instead of running initdb;
//! - the lock holder follows the remote instead of promoting, and a primary holding the lock
//!   (the section was just added) stops and comes back as the standby leader, keeping the key;
//! - removing the section makes the standby leader an ordinary lock holder, which promotes.
//!
//! Elections run as in any cluster: the winner takes the key and, on the next loop, follows
//! the remote.

use super::{Action, Decision, DemoteMode, World};

/// The lock holder of a standby cluster, PostgreSQL running in recovery: follow the remote.
pub(super) fn lead_replica(w: &World) -> Decision {
    if w.pg.follows_remote {
        return Decision::new(
            format!(
                "no action: I am ({}) the standby leader, replicating from the remote primary",
                w.me
            ),
            vec![Action::KeepLeading],
        );
    }
    Decision::new(
        "I hold the lock of a standby cluster: following the remote primary as the standby leader",
        vec![Action::KeepLeading, Action::FollowRemote],
    )
}

/// The lock holder of a standby cluster, PostgreSQL stopped: start as the standby leader.
pub(super) fn lead_stopped() -> Decision {
    Decision::new(
        "PostgreSQL is not running and I hold the lock of a standby cluster: starting as the standby leader",
        vec![Action::KeepLeading, Action::StartStandbyLeader],
    )
}

/// A primary holding the lock when the cluster became a standby cluster.
pub(super) fn lead_primary() -> Decision {
    Decision::new(
        "the cluster became a standby cluster: stopping the primary and restarting it as the standby leader",
        vec![
            Action::KeepLeading,
            Action::Demote {
                mode: DemoteMode::ToStandbyLeader,
            },
        ],
    )
}

/// A new standby cluster with no `initialize` key: race for it and clone from the remote.
pub(super) fn bootstrap() -> Decision {
    Decision::new(
        "no standby cluster yet: racing to bootstrap the standby leader from the remote primary",
        vec![Action::BootstrapStandby],
    )
}
