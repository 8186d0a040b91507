//! Regent: a PostgreSQL high-availability supervisor.
//!
//! See ARCHITECTURE.md for the map of the modules.
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
pub mod postgres;
pub mod postmaster;
pub mod supervisor;
pub mod time;
