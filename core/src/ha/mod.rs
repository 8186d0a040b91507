//! The HA decision core: a snapshot of the world in, a list of actions out.
//!
//! No I/O happens here, and no clock is read: every time arrives in the [`World`]. So every
//! decision can be tested by simulation (see `tests/`); the supervisor (`regent::supervisor`)
//! gathers the [`World`], calls [`decide`], and carries out the [`Action`]s.
//!
//! - [`world`](World): the snapshot and the views handed to a policy.
//! - [`Memory`]: what the loop carries from one decision to the next, and the write deadline
//!   formula ([`write_deadline_ms`]).
//! - [`decide`]: the rules, by the state of the local PostgreSQL; elections and
//!   operators' requests in their own files.
//! - [`policy`]: the [`Policy`](policy::Policy) trait and the built-in rules.
//! - [`election`]: the record of an election (ranking, exclusions, the view).
//! - [`sync`]: synchronous replication on the leader.
//! - [`quorum`]: quorum commit (`synchronous_mode: quorum`): the leader's plan and the proof a
//!   candidate needs.
//! - [`topology`]: whom a replica streams and clones from, and which slots a node keeps.
//! - `failsafe`: failsafe mode (a leader without the DCS, kept by its members' answers).
//! - `standby`: standby clusters (the lock holder follows a remote primary, never promotes).

mod action;
mod decide;
mod elect;
pub mod election;
mod failsafe;
mod memory;
pub mod policy;
pub mod quorum;
mod ranking;
mod request;
mod standby;
pub mod sync;
pub mod topology;
mod world;

pub use action::{AcquireReason, Action, Decision, DemoteMode, HandOverReason};
pub use decide::{HANDOVER_RETRY_MS, decide};
pub use election::{Chosen, Election};
pub use failsafe::{FailsafePing, FailsafeRound};
pub use memory::{Memory, Observed, safety_margin_ms, write_deadline_ms};
pub use world::{DataDir, PeerState, PgView, Settings, World};

#[cfg(test)]
mod tests;
