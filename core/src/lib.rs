//! Regent's decision core: what a PostgreSQL HA supervisor decides, with no I/O.
//!
//! This crate is to the `regent` supervisor what quinn-proto is to quinn: a sans-I/O state
//! machine under a thin async driver. Its `Cargo.toml` has no async runtime, no etcd or
//! PostgreSQL client and no WebAssembly engine, so "the core does no I/O" is held by the build.
//!
//! - [`ha`]: the decision rules. A [`ha::World`] (a snapshot the supervisor gathered) goes in,
//!   a [`ha::Decision`] (actions, each with its reason) comes out; [`ha::Memory`] is what the
//!   loop remembers between two decisions, updated by the same code in the supervisor and in
//!   the simulation that tests the rules.
//! - [`dcs`]: Patroni's key layout in the DCS and its values (members, leader, `sync`,
//!   `failover`, `history`, `status`), and the [`dcs::Cluster`] view built from one read.
//! - [`time`]: ISO 8601 / RFC 3339 timestamps as Patroni and PostgreSQL write them. The clock is
//!   read by the caller, never here.
#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod dcs;
pub mod ha;
pub mod time;
