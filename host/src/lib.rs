//! Regent: a PostgreSQL high-availability supervisor.
pub mod config;
