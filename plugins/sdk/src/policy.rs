//! The [`Policy`] trait, and the glue that [`export!`](crate::export) wires to the WIT exports.
//!
//! A policy is a type: [`Policy::new`] builds it from the manifest's settings when Regent
//! calls `configure`, and the hooks are its methods. Every hook has a default, so a policy
//! writes only the ones it changes; `HOOKS` lists the ones Regent should call (a hook that is
//! not listed is never called: Regent's built-in rules decide instead).
//!
//! Invariants of the glue:
//! - one component exports one policy, so one instance lives in a process-wide slot: set by
//!   `configure`, read by every later call. A call before `configure` (Regent never makes one)
//!   builds the policy from empty settings.
//! - `rank` gets `&self`: a ranking must depend on the view and the settings alone, since
//!   every node ranks the same view and must reach the same answer. `check_health` and
//!   `on_event` get `&mut self` and may keep state between calls (a count of failures, say);
//!   Regent instantiates the component again after any fault, and that state starts over.

use crate::bindings::Guest;
use crate::patroni::Limits;
use crate::settings::{self, Table};
use crate::types::{ClusterView, Event, Health, HealthFacts, Hook, PolicyInfo, Ranking, TagKeys};
use crate::{names, ranking};
use std::any::Any;
use std::sync::{Mutex, PoisonError};

/// The tags `rank` reads from `Member::tags` (the `zone` tag is always there, as
/// `Member::zone`). Every string Regent hands over is copied into the policy for every call,
/// so a policy that names the few tags it reads is called faster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tags {
    /// Every tag of every member.
    All,
    /// Only these keys (none at all when empty).
    Only(&'static [&'static str]),
}

/// A failover policy. Implement `NAME` and [`new`](Policy::new), the hooks you need, and list
/// them in `HOOKS`; then `export!(YourType);`.
pub trait Policy: Sized + Send + 'static {
    /// The policy's name: the manifest's `name`, and the component's file name (`NAME.wasm`).
    const NAME: &'static str;

    /// The hooks Regent calls. The default, `rank-candidates` alone, suits a policy that
    /// ranks.
    const HOOKS: &'static [Hook] = &[Hook::RankCandidates];

    /// The tags [`rank`](Policy::rank) reads from `Member::tags`; none by default.
    const TAGS: Tags = Tags::Only(&[]);

    /// Build the policy from the manifest's `[settings]`: take each setting with a typed
    /// accessor (`settings.u64("max_lag_bytes")?`, ...). A key nobody took is refused after
    /// `new` returns. Return `Err` naming the bad setting and the fix: Regent then refuses to
    /// load the policy.
    fn new(settings: &mut Table) -> Result<Self, String>;

    /// `rank-candidates`: the candidates, best first, each with a non-empty reason, or a veto.
    /// The default is Regent's built-in order ([`ranking::builtin`]).
    fn rank(&self, view: &ClusterView) -> Ranking {
        let (ranking, refused) = ranking::builtin(view, &Limits::of(view, false));
        crate::patroni::log_refused(&refused);
        ranking
    }

    /// `check-health`: `Healthy`, `Degraded(why)` (still eligible) or `Failed(why)`. Called only
    /// when `HOOKS` lists `CheckHealth`; the default panics (a visible fault) if called anyway.
    fn check_health(&mut self, facts: &HealthFacts) -> Health {
        let _ = facts;
        not_listed::<Self>(Hook::CheckHealth)
    }

    /// `on-event`: what happened (a failover, a role change, ...). Called only when `HOOKS`
    /// lists `OnEvent`; the default does nothing.
    fn on_event(&mut self, event: &Event) {
        let _ = event;
    }
}

/// Parse the settings JSON that `configure` receives and build the policy: [`Policy::new`],
/// then refuse any key it did not take. Unit tests use it as Regent's `configure` would.
pub fn configure<P: Policy>(json: &str) -> Result<P, String> {
    settings::read(P::NAME, json, P::new)
}

/// What `describe` answers: `P`'s name, hooks and tags, and `version`.
pub fn info<P: Policy>(version: &str) -> PolicyInfo {
    let tags = match P::TAGS {
        Tags::All => TagKeys::All,
        Tags::Only(keys) => TagKeys::Only(keys.iter().map(|k| k.to_string()).collect()),
    };
    PolicyInfo {
        name: P::NAME.into(),
        version: version.into(),
        hooks: P::HOOKS.to_vec(),
        tags,
    }
}

/// [`info`] with the policy crate's version.
pub fn describe<P: Exported>() -> PolicyInfo {
    info::<P>(P::VERSION)
}

/// A policy that [`export!`](crate::export) exported; not implemented by hand.
pub trait Exported: Policy {
    /// The policy crate's version (`CARGO_PKG_VERSION`).
    const VERSION: &'static str;
}

/// The configured policy (see the module's invariants).
static POLICY: Mutex<Option<Box<dyn Any + Send>>> = Mutex::new(None);

/// Run `f` on the configured policy.
fn with_policy<P: Policy, R>(f: impl FnOnce(&mut P) -> R) -> R {
    let mut slot = POLICY.lock().unwrap_or_else(PoisonError::into_inner);
    if !slot.as_ref().is_some_and(|p| p.is::<P>()) {
        let policy = configure::<P>("").unwrap_or_else(|e| {
            panic!(
                "{}: called before configure, and empty settings fail: {e}",
                P::NAME
            )
        });
        *slot = Some(Box::new(policy));
    }
    match slot.as_mut().and_then(|p| p.downcast_mut::<P>()) {
        Some(policy) => f(policy),
        None => unreachable!("the slot was just filled with a {}", P::NAME),
    }
}

fn not_listed<P: Policy>(hook: Hook) -> ! {
    panic!(
        "{} does not implement {} (its HOOKS do not list it)",
        P::NAME,
        names::hook(hook)
    )
}

impl<P: Exported> Guest for P {
    fn describe() -> PolicyInfo {
        describe::<P>()
    }

    fn configure(settings: String) -> Result<(), String> {
        let policy = configure::<P>(&settings)?;
        *POLICY.lock().unwrap_or_else(PoisonError::into_inner) = Some(Box::new(policy));
        Ok(())
    }

    fn rank_candidates(view: ClusterView) -> Ranking {
        if !P::HOOKS.contains(&Hook::RankCandidates) {
            not_listed::<P>(Hook::RankCandidates)
        }
        with_policy(|p: &mut P| p.rank(&view))
    }

    fn check_health(facts: HealthFacts) -> Health {
        with_policy(|p: &mut P| p.check_health(&facts))
    }

    fn on_event(e: Event) {
        with_policy(|p: &mut P| p.on_event(&e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{member, view};
    use crate::types::{Member, Role};

    struct Builtin;

    impl Policy for Builtin {
        const NAME: &'static str = "builtin-test";
        fn new(_settings: &mut Table) -> Result<Self, String> {
            Ok(Builtin)
        }
    }

    struct Counting {
        limit: u32,
        seen: u32,
    }

    impl Policy for Counting {
        const NAME: &'static str = "counting";
        const HOOKS: &'static [Hook] = &[Hook::CheckHealth];
        const TAGS: Tags = Tags::All;
        fn new(settings: &mut Table) -> Result<Self, String> {
            let limit = settings.u32("limit")?.unwrap_or(2);
            Ok(Counting { limit, seen: 0 })
        }
        fn check_health(&mut self, _facts: &HealthFacts) -> Health {
            self.seen += 1;
            if self.seen > self.limit {
                Health::Failed(format!("{} checks", self.seen))
            } else {
                Health::Healthy
            }
        }
    }

    #[test]
    fn defaults_rank_in_the_builtin_order() {
        let p: Builtin = configure("{}").unwrap();
        let v = view(vec![
            Member {
                wal_position: Some(900),
                ..member("pg-1")
            },
            member("pg-2"),
        ]);
        let Ranking::Candidates(c) = p.rank(&v) else {
            panic!("veto")
        };
        let names: Vec<&str> = c.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["pg-2", "pg-1"]);
        let mut v = v;
        v.members[0].role = Role::Primary;
        assert_eq!(
            p.rank(&v),
            Ranking::Veto("primary pg-1 is still alive".into())
        );
    }

    #[test]
    fn configure_refuses_keys_new_did_not_take() {
        assert_eq!(
            configure::<Builtin>(r#"{"x": 1}"#).err().unwrap(),
            "builtin-test: unknown setting `x` (this policy takes no settings)"
        );
        assert_eq!(
            configure::<Counting>(r#"{"limit": "two"}"#).err().unwrap(),
            "counting: setting `limit` must be a whole number, not a string"
        );
    }

    #[test]
    fn info_lists_name_hooks_and_tags() {
        let i = info::<Counting>("1.2.3");
        assert_eq!(i.name, "counting");
        assert_eq!(i.version, "1.2.3");
        assert_eq!(i.hooks, [Hook::CheckHealth]);
        assert_eq!(i.tags, TagKeys::All);
        let i = info::<Builtin>("0.1.0");
        assert_eq!(i.hooks, [Hook::RankCandidates]);
        assert_eq!(i.tags, TagKeys::Only(Vec::new()));
    }

    #[test]
    fn hooks_with_mut_self_keep_state() {
        let mut p: Counting = configure(r#"{"limit": 1}"#).unwrap();
        let facts = crate::testing::facts("pg-0");
        assert_eq!(p.check_health(&facts), Health::Healthy);
        assert_eq!(p.check_health(&facts), Health::Failed("2 checks".into()));
    }
}
