//! Regent: a PostgreSQL high-availability supervisor.
pub mod config;
pub mod dcs;
pub mod ha;
