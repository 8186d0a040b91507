//! Shared building blocks of Regent's policy plugins.
//!
//! - [`types`] and [`host`]: the bindings of the `regent:policy@0.1.0` WIT package
//!   (`../../wit/policy.wit`), generated once here so that every plugin and these helpers speak
//!   the same Rust types. A plugin maps them into its own `wit_bindgen::generate!` with `with:`
//!   (see any plugin's `lib.rs`).
//! - [`settings`]: the manifest's `[settings]` table arrives as JSON; parse it into a struct with
//!   a clear error.
//! - [`patroni`]: Patroni's eligibility rules and ranking order, the same as Regent's built-in
//!   `DefaultPolicy`.
//! - [`allocator`]: a fast allocator for the many small blocks a call's arguments need; on
//!   `wasm32` it is the plugin's global allocator and `cabi_realloc`.
//! - [`tags`]: a member's tags by key.
//! - [`lsn`]: format a WAL position the way PostgreSQL does (`0/3000060`).
//! - [`names`]: roles, PostgreSQL states and hooks as the WIT spells them.
//! - [`testing`]: builders for views and members, and (feature `manifest`) a check that a
//!   manifest agrees with its plugin, for the plugins' unit tests.
//!
//! Everything here is plain Rust over the WIT types: it compiles and is tested natively
//! (`cargo test` in `plugins/`). Only the host imports ([`host::log`], ...) need a WebAssembly
//! host; natively they are stubs that panic.

#[allow(clippy::all, missing_docs)]
mod bindings {
    wit_bindgen::generate!({
        world: "policy",
        path: "../../wit",
        additional_derives: [PartialEq, Eq],
    });
}

/// The WIT `types` interface: `ClusterView`, `Member`, `Ranking`, `Health`, ...
pub use bindings::regent::policy::types;

/// The WIT `host` interface: what Regent offers a policy (`log`, `now_ms`, `sql_probe`).
pub use bindings::regent::policy::host;

pub mod allocator;
pub mod lsn;
pub mod names;
pub mod patroni;
pub mod settings;
pub mod tags;
pub mod testing;

#[cfg(target_arch = "wasm32")]
#[global_allocator]
static ALLOCATOR: allocator::SizeClasses = allocator::SizeClasses::new();
