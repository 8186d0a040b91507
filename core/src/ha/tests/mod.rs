//! Tests of the pure HA decision core.
//!
//! * **Unit tests** ([`unit`], [`unit_operators`]) pin every branch of
//!   [`decide`](crate::ha::decide) on a hand-built [`World`](crate::ha::World) ([`fixtures`]).
//!   Those named `regression_*` reproduce bugs found and fixed, and must keep passing.
//! * **Property tests** ([`properties`]) generate whole clusters (1–7 nodes, a DCS view, and
//!   one `World` per node as that node sees it; [`generators`]), run `decide` for every node
//!   and check per-node and cross-node [`invariants`].
//! * **Failsafe mode** ([`failsafe`]): its rules, and the deadline a sequence of rounds earns.
//! * **Quorum commit** ([`quorum`]): a five-node simulation of `synchronous_mode: quorum` in
//!   which no promotion may lose an acknowledged commit; the leader's steps and a candidate's
//!   proof one by one in [`quorum_plan`].
//! * **Simulation** ([`simulation`]): a 3-node cluster where the actions are applied
//!   abstractly (leader key CAS, leases expiring as time passes, partitions, crashes),
//!   checking that no two primaries can accept writes at the same time and that a leaderless
//!   cluster with an eligible replica gets a leader within a bounded number of loops.
//!   Its runs add and remove `standby_cluster` too; [`standby`] pins those transitions.

mod failsafe;
mod fixtures;
mod generators;
mod invariants;
mod properties;
mod quorum;
mod quorum_plan;
mod simulation;
mod standby;
mod sync_oracle;
mod topology;
mod unit;
mod unit_operators;
