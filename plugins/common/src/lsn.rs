//! WAL positions as PostgreSQL prints them.

/// `0x3000060` → `"0/3000060"`, like PostgreSQL's `pg_lsn` output.
pub fn fmt(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xFFFF_FFFF)
}

#[cfg(test)]
mod tests {
    #[test]
    fn formats_like_postgres() {
        assert_eq!(super::fmt(0x3000060), "0/3000060");
        assert_eq!(super::fmt(0x1_0000_0000), "1/0");
    }
}
