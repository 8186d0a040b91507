//! Whole rankings: Regent's built-in one, and the built-in one with a preference on top.
//!
//! Both apply Patroni's rules ([`crate::patroni`]): a veto while a reachable member still runs
//! as primary, otherwise the eligible members in Patroni's order (WAL position, failover
//! priority, name), each with a reason that says its place and position:
//! `1 of 3 eligible: wal position 0/3000060 (0 bytes behind the leader), failover priority 1`.

use crate::patroni::{self, Limits, Refused};
use crate::types::{Candidate, ClusterView, Member, Ranking};

/// The built-in ranking under `limits` (the cluster's own: `Limits::of(view, false)`), and
/// the members that are not eligible with the reason (for [`patroni::log_refused`]).
pub fn builtin<'a>(view: &'a ClusterView, limits: &Limits) -> (Ranking, Refused<'a>) {
    if let Some(primary) = patroni::live_primary(view) {
        return (Ranking::Veto(patroni::primary_alive(primary)), Vec::new());
    }
    let (mut eligible, refused) = patroni::partition(view, limits);
    eligible.sort_by(|a, b| patroni::order(a, b));
    let total = eligible.len();
    let candidates = eligible
        .iter()
        .enumerate()
        .map(|(i, m)| Candidate {
            name: m.name.clone(),
            reason: crate::reason!(
                "{} of {total} eligible: {}",
                i + 1,
                patroni::position(view, m)
            ),
        })
        .collect();
    (Ranking::Candidates(candidates), refused)
}

/// The built-in ranking (the cluster's own limits) with the members for which `preferred`
/// holds first; each group keeps the built-in order. `why` names the preference in the
/// reasons: `1 of 3 eligible, preferred (tag dc=east): wal position ...`, and for the others
/// `3 of 3 eligible, not preferred (tag dc=east): ...`. The refused members are logged at
/// debug level.
pub fn prefer(view: &ClusterView, preferred: impl Fn(&Member) -> bool, why: &str) -> Ranking {
    if let Some(primary) = patroni::live_primary(view) {
        return Ranking::Veto(patroni::primary_alive(primary));
    }
    let (mut eligible, refused) = patroni::partition(view, &Limits::of(view, false));
    patroni::log_refused(&refused);
    // `false` sorts first: the preferred members lead, the order within each group stays.
    eligible.sort_by(|a, b| {
        (!preferred(a))
            .cmp(&!preferred(b))
            .then_with(|| patroni::order(a, b))
    });
    let total = eligible.len();
    let candidates = eligible
        .iter()
        .enumerate()
        .map(|(i, m)| Candidate {
            name: m.name.clone(),
            reason: crate::reason!(
                "{} of {total} eligible, {}preferred ({why}): {}",
                i + 1,
                if preferred(m) { "" } else { "not " },
                patroni::position(view, m)
            ),
        })
        .collect();
    Ranking::Candidates(candidates)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tags;
    use crate::testing::{member, tagged, view};

    fn names(r: &Ranking) -> Vec<&str> {
        match r {
            Ranking::Candidates(c) => c.iter().map(|c| c.name.as_str()).collect(),
            Ranking::Veto(v) => panic!("unexpected veto: {v}"),
        }
    }

    #[test]
    fn prefer_puts_the_preferred_first_in_builtin_order() {
        let v = view(vec![
            Member {
                wal_position: Some(990),
                ..tagged(member("pg-1"), &[("dc", "east")])
            },
            tagged(member("pg-2"), &[("dc", "west")]),
            Member {
                wal_position: Some(980),
                ..tagged(member("pg-3"), &[("dc", "east")])
            },
            Member {
                reachable: false,
                ..tagged(member("pg-4"), &[("dc", "east")])
            },
        ]);
        let east = |m: &Member| tags::get(m, "dc") == Some("east");
        let r = prefer(&v, east, "tag dc=east");
        assert_eq!(names(&r), ["pg-1", "pg-3", "pg-2"]);
        let Ranking::Candidates(c) = &r else {
            unreachable!()
        };
        assert_eq!(
            c[2].reason,
            "3 of 3 eligible, not preferred (tag dc=east): wal position 0/3E8 (leader optime \
             unknown), failover priority 1"
        );
        // Nobody preferred: the built-in order.
        let r = prefer(&v, |_| false, "nothing");
        assert_eq!(names(&r), names(&builtin(&v, &Limits::of(&v, false)).0));
    }
}
