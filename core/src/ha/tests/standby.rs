//! Standby clusters through the simulation, step by step: the section added to a cluster
//! with a primary, a standby leader lost, and the section removed.

use super::simulation::{Ev, Sim, deterministic_setup};

fn standby_setup() -> super::simulation::SimSetup {
    let mut setup = deterministic_setup();
    setup.cfg.standby_cluster = true;
    setup
}

/// Ticks every node once.
fn round(sim: &mut Sim) {
    for i in 0..3 {
        sim.step(&Ev::Tick(i)).expect("tick");
        sim.check_safety(true).expect("safe");
    }
}

#[test]
fn adding_the_section_turns_the_primary_into_the_standby_leader_keeping_the_key() {
    let mut sim = Sim::new(&deterministic_setup());
    round(&mut sim);
    assert_eq!(sim.writable_primaries(), vec!["n0"]);
    sim.step(&Ev::SetStandbyCluster(true)).expect("set");
    round(&mut sim);
    assert!(
        sim.writable_primaries().is_empty(),
        "a standby cluster keeps a writable primary\n{}",
        sim.log.join("\n")
    );
    assert_eq!(sim.dcs.leader.as_ref().map(|l| l.name.as_str()), Some("n0"));
    let n0 = &sim.nodes[0];
    assert!(n0.running && n0.in_recovery == Some(true) && n0.follows_remote);
    for n in &sim.nodes[1..] {
        assert_eq!(n.upstream.as_deref(), Some("n0"), "{}", sim.log.join("\n"));
    }
}

#[test]
fn a_lost_standby_leader_is_replaced_by_a_replica_that_follows_the_remote() {
    let mut sim = Sim::new(&standby_setup());
    round(&mut sim);
    assert!(sim.nodes[0].follows_remote, "{}", sim.log.join("\n"));
    sim.step(&Ev::Isolate(0)).expect("isolate");
    sim.step(&Ev::Advance(11_000)).expect("advance");
    for _ in 0..4 {
        round(&mut sim);
        sim.step(&Ev::Advance(1_000)).expect("advance");
    }
    let leader = sim.dcs.leader.clone().expect("a new standby leader");
    assert_ne!(leader.name, "n0");
    let i: usize = leader.name[1..].parse().expect("node index");
    assert!(sim.nodes[i].follows_remote && sim.nodes[i].in_recovery == Some(true));
    assert!(
        sim.writable_primaries().is_empty(),
        "{}",
        sim.log.join("\n")
    );
}

#[test]
fn removing_the_section_promotes_the_standby_leader() {
    let mut sim = Sim::new(&standby_setup());
    round(&mut sim);
    assert!(sim.writable_primaries().is_empty());
    sim.step(&Ev::SetStandbyCluster(false)).expect("unset");
    round(&mut sim);
    assert_eq!(
        sim.writable_primaries(),
        vec!["n0"],
        "{}",
        sim.log.join("\n")
    );
    assert!(!sim.nodes[0].follows_remote);
}
