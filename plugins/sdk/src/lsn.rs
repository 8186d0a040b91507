//! WAL positions as PostgreSQL prints them.

use std::fmt;

/// `0x3000060` → `"0/3000060"`, like PostgreSQL's `pg_lsn` output.
pub fn fmt(lsn: u64) -> String {
    Lsn(lsn).to_string()
}

/// Displays a WAL position as [`fmt`] does, without a `String` of its own:
/// `format!("at {}", Lsn(wal))`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lsn(pub u64);

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn formats_like_postgres() {
        assert_eq!(super::fmt(0x3000060), "0/3000060");
        assert_eq!(super::fmt(0x1_0000_0000), "1/0");
        assert_eq!(format!("at {}", super::Lsn(0x2_0000_00FF)), "at 2/FF");
    }
}
