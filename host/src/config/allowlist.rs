//! `restapi.allowlist` entries: an IP address, a network or a host name, and whether a peer's
//! address matches one. Pure: no filesystem or network access (host names are resolved by the
//! REST API when it checks a request, not here).

use super::error::q;

/// One `restapi.allowlist` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum AllowEntry {
    /// One address.
    Ip(std::net::IpAddr),
    /// A network: its address (host bits cleared) and prefix length.
    Net(std::net::IpAddr, u8),
    /// A host name, resolved when a request is checked.
    Host(String),
}

impl AllowEntry {
    /// `10.0.0.5`, `10.0.0.0/24`, `fd00::/8` or `db1.example.com`; the error says what is wrong.
    pub(crate) fn parse(s: &str) -> Result<AllowEntry, String> {
        use std::net::IpAddr;
        let s = s.trim();
        if let Some((addr, len)) = s.split_once('/') {
            let ip: IpAddr = addr
                .parse()
                .map_err(|_| format!("{} is not an IP address", q(addr)))?;
            let max = if ip.is_ipv4() { 32 } else { 128 };
            let len: u8 = len
                .parse()
                .ok()
                .filter(|l| *l <= max)
                .ok_or_else(|| format!("the prefix length {} is not 0 to {max}", q(len)))?;
            return Ok(AllowEntry::Net(mask(ip, len), len));
        }
        if let Ok(ip) = s.parse::<IpAddr>() {
            return Ok(AllowEntry::Ip(ip));
        }
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        };
        let name = s.strip_suffix('.').unwrap_or(s);
        if name.is_empty() || name.len() > 253 || !name.split('.').all(label_ok) {
            return Err(format!(
                "{} is neither an IP address, a network (address/prefix) nor a host name",
                q(s)
            ));
        }
        Ok(AllowEntry::Host(name.to_ascii_lowercase()))
    }

    /// Whether `ip` is this address or in this network (host names never match here).
    pub(crate) fn contains(&self, ip: std::net::IpAddr) -> bool {
        let ip = canonical_ip(ip);
        match self {
            AllowEntry::Ip(a) => canonical_ip(*a) == ip,
            AllowEntry::Net(net, len) => {
                let net = canonical_ip(*net);
                net.is_ipv4() == ip.is_ipv4() && mask(ip, *len) == net
            }
            AllowEntry::Host(_) => false,
        }
    }
}

/// An IPv4-mapped IPv6 address (`::ffff:10.0.0.1`, how a dual-stack socket reports IPv4 peers)
/// as the IPv4 address.
pub(crate) fn canonical_ip(ip: std::net::IpAddr) -> std::net::IpAddr {
    match ip {
        std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, std::net::IpAddr::V4),
        v4 => v4,
    }
}

fn mask(ip: std::net::IpAddr, len: u8) -> std::net::IpAddr {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    match ip {
        IpAddr::V4(a) => {
            let bits = u32::from(a);
            let m = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(bits & m))
        }
        IpAddr::V6(a) => {
            let bits = u128::from(a);
            let m = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(bits & m))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowlist_entries_match_addresses() {
        let ip = |s: &str| s.parse::<std::net::IpAddr>().expect("ip");
        let net = AllowEntry::parse("10.1.2.3/16").expect("net");
        assert_eq!(net, AllowEntry::Net(ip("10.1.0.0"), 16));
        assert!(net.contains(ip("10.1.255.1")));
        assert!(!net.contains(ip("10.2.0.1")));
        assert!(net.contains(ip("::ffff:10.1.0.9")), "IPv4-mapped IPv6");
        assert!(!net.contains(ip("fd00::1")));
        let v6 = AllowEntry::parse("fd00::/8").expect("v6 net");
        assert!(v6.contains(ip("fd12::5")));
        assert!(!v6.contains(ip("fe80::1")));
        assert!(
            AllowEntry::parse("0.0.0.0/0")
                .expect("all")
                .contains(ip("192.0.2.1"))
        );
        let one = AllowEntry::parse(" 192.0.2.7 ").expect("one");
        assert!(one.contains(ip("192.0.2.7")) && !one.contains(ip("192.0.2.8")));
        assert_eq!(
            AllowEntry::parse("App1.Example.com.").expect("host"),
            AllowEntry::Host("app1.example.com".into())
        );
        assert!(!AllowEntry::Host("x".into()).contains(ip("192.0.2.7")));
        for bad in ["", "-a.example", "a..b", "10.0.0.0/", "::/129", "a_b c"] {
            assert!(AllowEntry::parse(bad).is_err(), "{bad:?}");
        }
    }
}
