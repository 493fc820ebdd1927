//! The client's address behind the deployment's own reverse proxies and load balancers.
//!
//! Behind a load balancer every connection comes from the balancer, so the TCP peer alone would
//! make every client one source: one rate limit for all, one network in every audit row, and
//! `context.source_ip` conditions that admit everyone or no one. A proxy says whom it forwards for
//! in a header it appends to; a client can write anything into that header before it reaches
//! the proxy, so only what the operator's own proxies appended is believed.
//!
//! Invariants:
//! - With no trusted proxies (the default) the client is the TCP peer and no header is read.
//! - A header is read only when the peer is a trusted proxy, and from its right end: each entry
//!   was appended by the hop to its right, so it is believed only while that hop is trusted. The
//!   client is the first entry, from the right, that is not a trusted proxy.
//! - Entries are split at every comma, quoted or not, and each is read on its own (its bytes, not
//!   the header line's): nothing a client writes (an open quote, a byte that is not ASCII) can
//!   join what it wrote to an entry a proxy appended, or spoil that entry. A well-formed
//!   address never holds a comma, so what a proxy appends is read whole.
//! - An entry that is not an address (`unknown`, an obfuscated name, garbage) ends the walk at
//!   the trusted hop that passed it on: an address is never made up or taken from further left.
//!   A client can only be read that far when every hop to its right, itself included, is
//!   trusted.
//! - Addresses are compared in their canonical form (an IPv4-mapped IPv6 peer is its IPv4
//!   address), so a dual-stack listener does not change who is trusted.

use std::net::{IpAddr, SocketAddr};

use actix_web::http::header::HeaderMap;
use ipnet::IpNet;

/// The header a deployment's proxies name their client in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ForwardedHeader {
    /// `X-Forwarded-For: client, proxy1, proxy2` (AWS, Google Cloud and Azure load balancers,
    /// nginx, Envoy, HAProxy); an entry may carry a port (Azure Application Gateway's do).
    #[default]
    XForwardedFor,
    /// RFC 7239 `Forwarded: for=client;proto=https, for="[2001:db8::1]:4711"`.
    Forwarded,
}

impl ForwardedHeader {
    /// The setting's value: `x-forwarded-for` or `forwarded`, in any case.
    pub fn parse(value: &str) -> Result<Self, String> {
        match value.to_ascii_lowercase().as_str() {
            "x-forwarded-for" => Ok(Self::XForwardedFor),
            "forwarded" => Ok(Self::Forwarded),
            _ => Err(format!("`{value}` is not x-forwarded-for or forwarded")),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::XForwardedFor => "x-forwarded-for",
            Self::Forwarded => "forwarded",
        }
    }

    /// The address an entry of the header names, if it names one.
    fn address(self, entry: &[u8]) -> Option<IpAddr> {
        let entry = std::str::from_utf8(entry).ok()?;
        match self {
            Self::XForwardedFor => node_address(entry.trim()),
            Self::Forwarded => forwarded_for(entry),
        }
    }
}

/// The proxies whose word on the client's address is believed.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies {
    networks: Vec<IpNet>,
    header: ForwardedHeader,
}

impl TrustedProxies {
    pub fn new(networks: Vec<IpNet>, header: ForwardedHeader) -> Self {
        Self { networks, header }
    }

    /// The client's address of a request that came from `peer` with `headers`.
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let mut client = peer.to_canonical();
        if !self.trusts(client) {
            return client;
        }
        // Several header lines are one list, in their order (RFC 9110, 5.3).
        let lines: Vec<&[u8]> = headers
            .get_all(self.header.name())
            .map(|line| line.as_bytes())
            .collect();
        let entries = lines
            .iter()
            .rev()
            .flat_map(|line| line.split(|&b| b == b',').rev());
        for entry in entries {
            match self.header.address(entry) {
                Some(hop) => client = hop.to_canonical(),
                None => break,
            }
            if !self.trusts(client) {
                break;
            }
        }
        client
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        self.networks.iter().any(|network| network.contains(&ip))
    }
}

/// The `for` parameter of one `Forwarded` element as an address, if it is one; an element that
/// names `for` twice names no one.
fn forwarded_for(element: &str) -> Option<IpAddr> {
    let mut values = element.split(';').filter_map(|pair| {
        let (name, value) = pair.split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("for")
            .then(|| value.trim())
    });
    let value = values.next()?;
    if values.next().is_some() {
        return None;
    }
    let value = match value.strip_prefix('"') {
        Some(quoted) => quoted.strip_suffix('"')?,
        None => value,
    };
    node_address(value)
}

/// An address, with or without a port: `192.0.2.7`, `192.0.2.7:443`, `2001:db8::1`,
/// `[2001:db8::1]`, `[2001:db8::1]:443`.
fn node_address(node: &str) -> Option<IpAddr> {
    if let Ok(ip) = node.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(socket) = node.parse::<SocketAddr>() {
        return Some(socket.ip());
    }
    node.strip_prefix('[')?.strip_suffix(']')?.parse().ok()
}

#[cfg(test)]
mod tests {
    use actix_web::http::header::{HeaderName, HeaderValue};

    use super::*;

    fn proxies(networks: &str, header: ForwardedHeader) -> TrustedProxies {
        let networks = networks
            .split(',')
            .filter(|n| !n.is_empty())
            .map(|n| n.parse().unwrap())
            .collect();
        TrustedProxies::new(networks, header)
    }

    fn client(proxies: &TrustedProxies, peer: &str, lines: &[(&str, &str)]) -> String {
        let mut headers = HeaderMap::new();
        for (name, value) in lines {
            headers.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_bytes(value.as_bytes()).unwrap(),
            );
        }
        proxies.client(peer.parse().unwrap(), &headers).to_string()
    }

    const XFF: &str = "x-forwarded-for";

    #[test]
    fn without_trusted_proxies_the_client_is_the_peer() {
        let none = TrustedProxies::default();
        assert_eq!(
            client(&none, "10.0.0.2", &[(XFF, "198.51.100.7")]),
            "10.0.0.2"
        );
        // A peer that is not a trusted proxy says nothing about anyone else either.
        let lb = proxies("10.0.0.0/8", ForwardedHeader::XForwardedFor);
        assert_eq!(
            client(&lb, "203.0.113.5", &[(XFF, "198.51.100.7")]),
            "203.0.113.5"
        );
    }

    #[test]
    fn the_client_is_the_first_untrusted_entry_from_the_right() {
        let lb = proxies("10.0.0.0/8", ForwardedHeader::XForwardedFor);
        assert_eq!(
            client(&lb, "10.0.0.2", &[(XFF, "198.51.100.7")]),
            "198.51.100.7"
        );
        // What the client wrote itself (the first entry) is not believed over its real address.
        assert_eq!(
            client(&lb, "10.0.0.2", &[(XFF, "1.2.3.4, 198.51.100.7, 10.0.0.9")]),
            "198.51.100.7"
        );
        // Header lines are one list in their order.
        assert_eq!(
            client(
                &lb,
                "10.0.0.2",
                &[(XFF, "1.2.3.4, 198.51.100.7"), (XFF, "10.0.0.9")]
            ),
            "198.51.100.7"
        );
        // Only trusted hops all the way: the leftmost of them.
        assert_eq!(client(&lb, "10.0.0.2", &[(XFF, "10.1.1.1")]), "10.1.1.1");
        // No header: the proxy itself.
        assert_eq!(client(&lb, "10.0.0.2", &[]), "10.0.0.2");
    }

    #[test]
    fn what_a_client_writes_cannot_spoil_the_entry_a_proxy_appended() {
        let lb = proxies("10.0.0.0/8", ForwardedHeader::XForwardedFor);
        // A quote (X-Forwarded-For has no quoting) and a byte that is not ASCII, each in front of
        // the address the proxy appended to the same line.
        for sent in ["\"", "\u{ff}", "10.0.0.5\"", "\"10.0.0.5"] {
            let line = format!("{sent}, 198.51.100.7");
            assert_eq!(
                client(&lb, "10.0.0.2", &[(XFF, line.as_str())]),
                "198.51.100.7",
                "{sent}"
            );
        }
    }

    #[test]
    fn an_entry_that_is_not_an_address_ends_the_walk_at_the_hop_that_passed_it() {
        let lb = proxies("10.0.0.0/8", ForwardedHeader::XForwardedFor);
        assert_eq!(
            client(&lb, "10.0.0.2", &[(XFF, "198.51.100.7, garbage")]),
            "10.0.0.2"
        );
        assert_eq!(
            client(&lb, "10.0.0.2", &[(XFF, "198.51.100.7, unknown, 10.0.0.3")]),
            "10.0.0.3"
        );
        assert_eq!(client(&lb, "10.0.0.2", &[(XFF, "")]), "10.0.0.2");
    }

    #[test]
    fn ports_brackets_and_mapped_addresses_are_understood() {
        let lb = proxies(
            "10.0.0.0/8,2001:db8:ff::/48",
            ForwardedHeader::XForwardedFor,
        );
        assert_eq!(
            client(&lb, "::ffff:10.0.0.2", &[(XFF, "198.51.100.7:53211")]),
            "198.51.100.7"
        );
        assert_eq!(
            client(&lb, "2001:db8:ff::1", &[(XFF, "[2001:db8::7]:443")]),
            "2001:db8::7"
        );
        assert_eq!(
            client(&lb, "10.0.0.2", &[(XFF, "::ffff:203.0.113.9")]),
            "203.0.113.9"
        );
    }

    #[test]
    fn forwarded_elements_are_read_by_their_for_parameter() {
        let lb = proxies("10.0.0.0/8", ForwardedHeader::Forwarded);
        let header =
            "for=1.2.3.4, for=\"[2001:db8:cafe::17]:4711\";proto=https, by=10.0.0.2;For=10.0.0.9";
        assert_eq!(
            client(&lb, "10.0.0.2", &[("forwarded", header)]),
            "2001:db8:cafe::17"
        );
        assert_eq!(
            client(&lb, "10.0.0.2", &[("forwarded", "for=_hidden")]),
            "10.0.0.2"
        );
        // What a client writes, quoted or not, is read as its own elements and reached only
        // past the element a proxy appended for it.
        assert_eq!(
            client(
                &lb,
                "10.0.0.2",
                &[("forwarded", "for=\"x, for=10.0.0.5\", for=10.0.0.7")]
            ),
            "10.0.0.7"
        );
        // An open quote does not swallow the element the proxy appended to the same line.
        assert_eq!(
            client(
                &lb,
                "10.0.0.2",
                &[("forwarded", "for=10.0.0.5;x=\", for=198.51.100.7")]
            ),
            "198.51.100.7"
        );
        // An element naming `for` twice names no one.
        assert_eq!(
            client(
                &lb,
                "10.0.0.2",
                &[("forwarded", "for=198.51.100.7;for=10.0.0.5")]
            ),
            "10.0.0.2"
        );
        // The other header is not read.
        assert_eq!(
            client(&lb, "10.0.0.2", &[(XFF, "198.51.100.7")]),
            "10.0.0.2"
        );
    }
}
