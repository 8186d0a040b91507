//! Timestamps: the pure parsing and formatting live in the core crate
//! ([`regent_core::time`]); this module adds the system clock, which the core never reads.

pub(crate) use regent_core::time::*;

/// Now, from the system clock.
pub(crate) fn now() -> Timestamp {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    Timestamp {
        unix: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        micros: d.subsec_micros(),
    }
}
