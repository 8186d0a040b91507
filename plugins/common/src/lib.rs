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
//! - [`reason!`]: `format!` in one allocation, for the reasons a policy returns.
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

/// Like `format!`, for the reasons a policy returns: the same text, built in one allocation of
/// 256 bytes (a longer text still grows as usual).
///
/// `format!` sizes its string from the literal parts alone, and not at all when the text
/// starts with a value (`"1 of 3 eligible: ..."`): the string then starts empty and is copied
/// at every doubling, which for the few reasons of a ranking is some 8 % of the whole call.
///
/// ```
/// let (i, total) = (0, 3);
/// let reason = policy_common::reason!("{} of {total} eligible", i + 1);
/// assert_eq!(reason, "1 of 3 eligible");
/// assert!(reason.capacity() >= 256);
/// ```
#[macro_export]
macro_rules! reason {
    ($($arg:tt)*) => {{
        let mut s = ::std::string::String::with_capacity(256);
        // Writing to a String cannot fail.
        let _ = ::std::fmt::Write::write_fmt(&mut s, ::std::format_args!($($arg)*));
        s
    }};
}

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
