//! The SDK of Regent's policy plugins: write a failover policy as a plain Rust type.
//!
//! A policy implements [`Policy`]: a name, the hooks it implements, its settings, and only the
//! hooks it needs (every one has a default). [`export!`] turns the type into the
//! `regent:policy@0.1.0` component that Regent loads. The smallest useful policy:
//!
//! ```
//! use regent_policy_sdk::prelude::*;
//!
//! /// Promote a replica tagged `dc: <dc>` (setting `dc`, default `primary-dc`) while one is
//! /// eligible; otherwise Regent's built-in order.
//! pub struct PreferDc {
//!     dc: String,
//! }
//!
//! impl Policy for PreferDc {
//!     const NAME: &'static str = "prefer-dc";
//!     const TAGS: Tags = Tags::Only(&["dc"]);
//!
//!     fn new(settings: &mut Settings) -> Result<Self, String> {
//!         let dc = settings.string("dc")?.unwrap_or_else(|| "primary-dc".into());
//!         Ok(PreferDc { dc })
//!     }
//!
//!     fn rank(&self, view: &ClusterView) -> Ranking {
//!         let why = reason!("tag dc={}", self.dc);
//!         ranking::prefer(view, |m| tags::get(m, "dc") == Some(self.dc.as_str()), &why)
//!     }
//! }
//!
//! export!(PreferDc);
//! # fn main() {}
//! ```
//!
//! The modules:
//! - [`policy`]: the [`Policy`] trait and the glue [`export!`] wires to the WIT exports.
//! - [`types`] and [`host`]: the bindings of the WIT package (`wit/policy.wit`), generated once
//!   here so that every policy and these helpers speak the same Rust types.
//! - [`settings`]: the manifest's `[settings]` table, with typed accessors and a clear error
//!   for an unknown key or a wrong type.
//! - [`ranking`]: the built-in ranking, and the built-in ranking with a preference on top.
//! - [`patroni`]: Patroni's eligibility rules and order, the same as Regent's built-in
//!   `DefaultPolicy`.
//! - [`allocator`]: a fast allocator for the many small blocks a call's arguments need; on
//!   `wasm32` it is the plugin's global allocator and `cabi_realloc`.
//! - [`tags`]: a member's tags by key. [`lsn`]: WAL positions as PostgreSQL prints them.
//!   [`names`]: roles, PostgreSQL states and hooks as the WIT spells them.
//! - [`reason!`]: `format!` in one allocation, for the reasons a policy returns.
//! - [`testing`]: builders for views and members, and (feature `manifest`) a check that a
//!   manifest agrees with its policy, for unit tests.
//!
//! Everything here is plain Rust over the WIT types: it compiles and is tested natively
//! (`cargo test`). Only the host imports ([`host::log`], ...) need a WebAssembly host; natively
//! they panic, so the helpers that log ([`patroni::log_refused`]) do nothing natively.

#[doc(hidden)]
#[allow(clippy::all, missing_docs)]
pub mod bindings {
    wit_bindgen::generate!({
        world: "policy",
        path: "wit",
        additional_derives: [PartialEq, Eq],
        // `export!` (below) calls this macro with the policy's type.
        pub_export_macro: true,
        export_macro_name: "__export_policy_world",
    });
}

/// The WIT `types` interface: `ClusterView`, `Member`, `Ranking`, `Health`, ...
pub use bindings::regent::policy::types;

/// The WIT `host` interface: what Regent offers a policy (`log`, `now_ms`, `sql_probe`).
pub use bindings::regent::policy::host;

pub use policy::{Policy, Tags, configure};

/// What a policy's `lib.rs` needs: `use regent_policy_sdk::prelude::*;`.
pub mod prelude {
    pub use crate::policy::{Policy, Tags};
    pub use crate::settings::Table as Settings;
    pub use crate::types::{
        Candidate, ClusterView, Event, Health, HealthFacts, Hook, LogLevel, Member, PgState,
        Ranking, Role,
    };
    pub use crate::{export, host, patroni, ranking, reason, tags};
}

/// Like `format!`, for the reasons a policy returns: the same text, built in one allocation of
/// 256 bytes (a longer text still grows as usual).
///
/// `format!` sizes its string from the literal parts alone, and not at all when the text
/// starts with a value (`"1 of 3 eligible: ..."`): the string then starts empty and is copied
/// at every doubling, which for the few reasons of a ranking is some 8 % of the whole call.
///
/// ```
/// let (i, total) = (0, 3);
/// let reason = regent_policy_sdk::reason!("{} of {total} eligible", i + 1);
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

/// Export a [`Policy`] as the component's `regent:policy@0.1.0` world: `export!(MyPolicy);`,
/// once, in the crate's `lib.rs` (a `cdylib`).
///
/// It implements [`policy::Exported`] for the type (with the crate's version,
/// `CARGO_PKG_VERSION`, as the policy's version), generates the WIT exports that call it, and
/// adds `MyPolicy::describe()`, the `PolicyInfo` Regent receives (for a unit test against the
/// manifest, see [`testing::Manifest`]).
#[macro_export]
macro_rules! export {
    ($policy:ident) => {
        impl $crate::policy::Exported for $policy {
            const VERSION: &'static str = ::std::env!("CARGO_PKG_VERSION");
        }

        impl $policy {
            /// What `describe` answers Regent: name, version, hooks, tags.
            #[allow(dead_code)]
            pub fn describe() -> $crate::types::PolicyInfo {
                $crate::policy::describe::<$policy>()
            }
        }

        $crate::bindings::__export_policy_world!($policy with_types_in $crate::bindings);
    };
}

pub mod allocator;
pub mod lsn;
pub mod names;
pub mod patroni;
pub mod policy;
pub mod ranking;
pub mod settings;
pub mod tags;
pub mod testing;

#[cfg(target_arch = "wasm32")]
#[global_allocator]
static ALLOCATOR: allocator::SizeClasses = allocator::SizeClasses::new();
