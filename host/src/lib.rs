//! Regent: a PostgreSQL high-availability supervisor.
//!
//! See ARCHITECTURE.md for the map of the modules.
#![warn(missing_docs)]

pub mod api;
pub mod config;
pub mod control;
pub mod ctl;
pub mod dcs;
pub mod fence;
pub use regent_core::ha;
pub mod lab;
pub mod metrics;
pub mod plugin;
pub(crate) mod postgres;
pub(crate) mod postmaster;
pub(crate) mod safe_fs;
pub mod supervisor;
pub(crate) mod time;
pub(crate) mod watchdog;
