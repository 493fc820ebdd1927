//! Source addresses: who a request comes from, behind the deployment's proxies, and how the
//! security controls count them.

pub mod proxies;

use std::net::{IpAddr, Ipv6Addr};

/// The block of addresses one party is taken to hold, for counting its requests and failures:
/// an IPv4 address on its own, an IPv6 address's /64 (a host or a customer is routinely given a
/// whole /64, so counting its addresses apart would let one party rotate past any limit), and
/// an IPv4-mapped IPv6 address as its IPv4 address.
pub fn source_block(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !u128::from(u64::MAX))),
        },
    }
}

/// A [`source_block`] as text: an IPv4 address as itself, an IPv6 block as `<prefix>::/64`.
pub fn source_block_text(ip: IpAddr) -> String {
    match source_block(ip) {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("{v6}/64"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(ip: &str) -> String {
        source_block_text(ip.parse().unwrap())
    }

    #[test]
    fn an_ipv6_source_is_its_64_and_an_ipv4_one_itself() {
        assert_eq!(block("2001:db8:1:2:aaaa::1"), "2001:db8:1:2::/64");
        assert_eq!(
            block("2001:db8:1:2:ffff:ffff:ffff:ffff"),
            "2001:db8:1:2::/64"
        );
        assert_ne!(block("2001:db8:1:3::1"), block("2001:db8:1:2::1"));
        assert_eq!(block("192.0.2.7"), "192.0.2.7");
        assert_eq!(block("::ffff:192.0.2.7"), "192.0.2.7");
        assert_eq!(block("::1"), "::/64");
    }
}
