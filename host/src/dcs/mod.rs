//! The distributed configuration store. Patroni's key layout and value encodings, and the
//! cluster view built from them, are pure and live in the core crate ([`regent_core::dcs`],
//! re-exported here); [`etcd`] is the etcd v3 adapter that reads and writes them, and
//! [`access`] says how to reach and log in to etcd (TLS, client certificates, user);
//! [`elections`] stores the election records beside the cluster's keys;
//! [`rollout`] the policies pushed to the cluster (`regent ctl policy`).

mod access;
mod elections;
pub(crate) mod etcd;
mod rollout;

pub use access::{EtcdAccess, EtcdFileError, EtcdTls};

pub use elections::{ELECTIONS, ElectionRecord, KEEP as ELECTIONS_KEPT, Phases};
pub use etcd::{DcsError, EtcdDcs, Renewal};
pub use regent_core::dcs::*;
pub use rollout::{
    COMPONENTS, MAX_COMPONENT_BYTES, POLICY_SET, PolicyRef, PolicySetDoc, SetChangeError,
    summary as policy_summary,
};
