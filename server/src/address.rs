//! Who a client is, for the per-address limits: the address it connects from, read from the
//! TCP peer or, behind trusted proxies, from the `X-Forwarded-For` entry that a trusted proxy
//! wrote; and the group it is counted in (an IPv6 client by its /64, which one subscriber
//! usually holds whole).
//!
//! Everything here is a pure function of the request's headers and peer, so that every rule,
//! including how hostile headers are read, has a unit test.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::num::NonZeroU8;
use std::str::FromStr;

use axum::extract::ConnectInfo;
use axum::http::{Extensions, HeaderMap};

use crate::peer::Peer;

/// Most proxies `TRUST_PROXY` may name: a deployment has one or two; a bigger count is more
/// likely a typo than a chain, and would trust entries the client wrote.
pub const MAX_TRUSTED_PROXIES: u8 = 8;

/// How many reverse proxies in front of the server append the address they saw to
/// `X-Forwarded-For` (`TRUST_PROXY`: `false`/`0`, `true` = 1, or a count).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TrustProxy {
    /// Clients reach the server directly: the TCP peer is the client, and `X-Forwarded-For`,
    /// which anyone can write, is ignored.
    #[default]
    None,
    /// This many proxies, each appending its own peer: the client is the entry this many
    /// places from the right. Every entry left of it was written by the client or on its
    /// behalf, and is never read.
    Hops(NonZeroU8),
}

impl FromStr for TrustProxy {
    type Err = String;

    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        let expected = || {
            format!("expected true, false or a number of proxies from 0 to {MAX_TRUSTED_PROXIES}")
        };
        match raw.trim().to_ascii_lowercase().as_str() {
            "false" | "no" | "off" => Ok(TrustProxy::None),
            "true" | "yes" | "on" => Ok(TrustProxy::Hops(NonZeroU8::MIN)),
            count => match count.parse::<u8>() {
                Ok(0) => Ok(TrustProxy::None),
                Ok(n) if n <= MAX_TRUSTED_PROXIES => {
                    Ok(NonZeroU8::new(n).map_or(TrustProxy::None, TrustProxy::Hops))
                }
                _ => Err(expected()),
            },
        }
    }
}

/// The key the per-address limits count a request under: its client address (see
/// [`client_address`]), grouped (see [`group`]).
pub fn client_key(headers: &HeaderMap, extensions: &Extensions, trust: TrustProxy) -> IpAddr {
    let peer = extensions.get::<ConnectInfo<Peer>>().map(|c| c.0.addr.ip());
    group(client_address(peer, headers, trust))
}

/// The address a request comes from.
///
/// Without trusted proxies, the TCP peer. With `n` of them, the `n`-th `X-Forwarded-For`
/// entry from the right (header lines taken in order, as one list): the right-most is what
/// the nearest proxy appended, and only entries appended by trusted proxies are believed.
/// - An entry that is not an address (garbage, `unknown`, an obfuscated name) stands for
///   the TCP peer: skipping it to read the next one would let the client pick its address.
///   All such requests share the proxy's address, and its limit.
/// - A header with fewer than `n` entries means the request came through fewer proxies than
///   configured (an inner proxy was reached directly): the left-most entry, the furthest
///   client any proxy saw. Every entry of such a header was written by a proxy unless the
///   client can reach an inner proxy itself, and then it can forge a full-length header
///   just as well: the proxy chain must be closed to the outside, whatever rule is used here.
/// - No header at all: the TCP peer.
pub fn client_address(peer: Option<IpAddr>, headers: &HeaderMap, trust: TrustProxy) -> IpAddr {
    let peer = peer.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    match trust {
        TrustProxy::None => peer,
        TrustProxy::Hops(n) => forwarded_hop(headers, usize::from(n.get())).unwrap_or(peer),
    }
}

/// The `n`-th `X-Forwarded-For` entry from the right, or the left-most of fewer; `None` when
/// there is no entry or the chosen one is not an address.
fn forwarded_hop(headers: &HeaderMap, n: usize) -> Option<IpAddr> {
    let mut leftmost = None;
    let mut seen = 0;
    // Lines are read as bytes and split on commas: a line that is not text still counts as
    // entries, so that no line can shift which entry is the trusted one.
    for line in headers.get_all("x-forwarded-for").iter().rev() {
        for entry in line.as_bytes().rsplit(|b| *b == b',') {
            seen += 1;
            if seen == n {
                return parse_hop(entry);
            }
            leftmost = Some(entry);
        }
    }
    leftmost.and_then(parse_hop)
}

/// One `X-Forwarded-For` entry: an IPv4 or IPv6 address, optionally with a port
/// (`1.2.3.4:5678`, `[2001:db8::1]:443`) or, for IPv6, a zone (`fe80::1%eth0`, dropped: a
/// zone names an interface of the proxy, not a client). Blanks around it are allowed;
/// anything else is not an address.
fn parse_hop(entry: &[u8]) -> Option<IpAddr> {
    let text = std::str::from_utf8(entry).ok()?.trim_matches([' ', '\t']);
    if let Some(rest) = text.strip_prefix('[') {
        let (host, tail) = rest.split_once(']')?;
        if !(tail.is_empty() || tail.strip_prefix(':').is_some_and(is_port)) {
            return None;
        }
        return parse_v6(host).map(IpAddr::V6);
    }
    match text.matches(':').count() {
        0 => text.parse::<Ipv4Addr>().ok().map(IpAddr::V4),
        1 => match text.split_once(':') {
            Some((host, port)) if is_port(port) => host.parse::<Ipv4Addr>().ok().map(IpAddr::V4),
            _ => None,
        },
        _ => parse_v6(text).map(IpAddr::V6),
    }
}

fn parse_v6(text: &str) -> Option<Ipv6Addr> {
    let host = match text.split_once('%') {
        Some((host, zone)) if is_zone(zone) => host,
        Some(_) => return None,
        None => text,
    };
    host.parse().ok()
}

fn is_port(text: &str) -> bool {
    !text.is_empty() && text.len() <= 5 && text.parse::<u16>().is_ok()
}

/// A zone id as operating systems name interfaces (`eth0`, `en0`, `3`, `wlp2s0.1`).
fn is_zone(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 32
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// The group an address is counted in: an IPv4 address is its own group (an IPv4-mapped IPv6
/// address, as a dual-stack socket reports IPv4 peers, is the IPv4 address); an IPv6 address
/// is its /64 with the host bits zeroed. One subscriber is usually given a whole /64 (or more)
/// and can use any address in it, so counting single IPv6 addresses would give each client
/// 2⁶⁴ identities.
pub fn group(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !u128::from(u64::MAX))),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    const PEER: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 9));

    fn headers(lines: &[&[u8]]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for line in lines {
            let value = HeaderValue::from_bytes(line).expect("a header value");
            map.append("x-forwarded-for", value);
        }
        map
    }

    fn hops(n: u8) -> TrustProxy {
        NonZeroU8::new(n).map_or(TrustProxy::None, TrustProxy::Hops)
    }

    fn addr(lines: &[&[u8]], n: u8) -> IpAddr {
        client_address(Some(PEER), &headers(lines), hops(n))
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("an address")
    }

    #[test]
    fn trust_proxy_reads_booleans_and_counts() {
        for (raw, want) in [
            ("false", TrustProxy::None),
            ("0", TrustProxy::None),
            ("no", TrustProxy::None),
            ("true", hops(1)),
            ("TRUE", hops(1)),
            ("1", hops(1)),
            (" 2 ", hops(2)),
            ("8", hops(8)),
        ] {
            assert_eq!(raw.parse::<TrustProxy>(), Ok(want), "{raw:?}");
        }
        for raw in ["9", "-1", "maybe", "1.5", "256", ""] {
            assert!(
                raw.parse::<TrustProxy>().is_err(),
                "{raw:?} must be refused"
            );
        }
    }

    #[test]
    fn the_configuration_reads_trust_proxy_and_names_it_when_wrong() {
        let config = |value: &str| {
            let value = value.to_owned();
            crate::config::Config::from_lookup(move |var| {
                (var == "TRUST_PROXY").then(|| value.clone())
            })
        };
        let limits = |value| config(value).expect("valid").limits.trust_proxy;
        assert_eq!(limits("true"), hops(1));
        assert_eq!(limits("2"), hops(2));
        assert_eq!(limits("false"), TrustProxy::None);
        assert_eq!(limits(""), TrustProxy::None, "unset");
        let e = config("all").expect_err("not a count");
        assert_eq!(e.var, "TRUST_PROXY");
        assert!(e.reason.contains("number of proxies"), "{}", e.reason);
    }

    #[test]
    fn without_trust_the_header_is_ignored() {
        assert_eq!(addr(&[b"1.2.3.4"], 0), PEER);
        assert_eq!(
            client_address(None, &HeaderMap::new(), TrustProxy::None),
            ip("0.0.0.0"),
            "no peer known (never so behind axum): one shared group"
        );
    }

    #[test]
    fn the_right_most_hop_is_the_one_the_proxy_wrote() {
        // The client wrote "6.6.6.6, 7.7.7.7"; the proxy appended the address it saw.
        assert_eq!(
            addr(&[b"6.6.6.6, 7.7.7.7, 203.0.113.5"], 1),
            ip("203.0.113.5")
        );
        // Two proxies: the second from the right.
        assert_eq!(
            addr(&[b"6.6.6.6, 203.0.113.5, 10.1.1.1"], 2),
            ip("203.0.113.5")
        );
        // A proxy that adds its own header line rather than appending to the client's.
        assert_eq!(addr(&[b"6.6.6.6", b"203.0.113.5"], 1), ip("203.0.113.5"));
        assert_eq!(
            addr(&[b"6.6.6.6, 203.0.113.5", b"10.1.1.1"], 2),
            ip("203.0.113.5")
        );
        // No header: the TCP peer.
        assert_eq!(addr(&[], 1), PEER);
    }

    #[test]
    fn forged_entries_left_of_the_trusted_one_change_nothing() {
        let want = ip("198.51.100.7");
        for forged in [
            &b"1.1.1.1, 198.51.100.7"[..],
            b"2.2.2.2,3.3.3.3,198.51.100.7",
            b"garbage, ,,, 198.51.100.7",
            b"::1, [::2]:80, 198.51.100.7",
            b"\xff\xfe, 198.51.100.7",
        ] {
            assert_eq!(
                addr(&[forged], 1),
                want,
                "{:?}",
                String::from_utf8_lossy(forged)
            );
        }
        let many = format!("{}198.51.100.7", "9.9.9.9, ".repeat(2000));
        assert_eq!(addr(&[many.as_bytes()], 1), want, "thousands of hops");
    }

    #[test]
    fn a_malformed_trusted_entry_means_the_peer_not_the_next_one() {
        // Skipping a bad entry would hand the choice to the entries the client wrote.
        for bad in [
            &b"1.2.3.4, garbage"[..],
            b"1.2.3.4, unknown",
            b"1.2.3.4, _hidden",
            b"1.2.3.4, ",
            b"1.2.3.4,",
            b"1.2.3.4, 5.6.7.8 9.9.9.9",
            b"1.2.3.4, 5.6.7.8:99999",
            b"1.2.3.4, 5.6.7.8:",
            b"1.2.3.4, [2001:db8::1",
            b"1.2.3.4, [2001:db8::1]x",
            b"1.2.3.4, 1.2.3.4%eth0",
            b"1.2.3.4, fe80::1%",
            b"1.2.3.4, fe80::1%eth 0",
            b"1.2.3.4, 256.1.1.1",
            b"1.2.3.4, \xff\xfe",
        ] {
            assert_eq!(addr(&[bad], 1), PEER, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn entries_may_carry_blanks_ports_brackets_and_zones() {
        for (entry, want) in [
            ("  203.0.113.5\t", "203.0.113.5"),
            ("203.0.113.5:4711", "203.0.113.5"),
            ("2001:db8::1", "2001:db8::1"),
            ("[2001:db8::1]", "2001:db8::1"),
            ("[2001:db8::1]:443", "2001:db8::1"),
            ("fe80::1%eth0", "fe80::1"),
            ("[fe80::1%25]:80", "fe80::1"),
            ("::ffff:203.0.113.5", "::ffff:203.0.113.5"),
        ] {
            let line = format!("6.6.6.6, {entry}");
            assert_eq!(addr(&[line.as_bytes()], 1), ip(want), "{entry:?}");
        }
    }

    #[test]
    fn fewer_hops_than_proxies_take_the_left_most() {
        assert_eq!(addr(&[b"203.0.113.5"], 2), ip("203.0.113.5"));
        assert_eq!(addr(&[b"203.0.113.5, 10.1.1.1"], 3), ip("203.0.113.5"));
        assert_eq!(
            addr(&[b"junk, 10.1.1.1"], 3),
            PEER,
            "and that one is checked too"
        );
    }

    #[test]
    fn ipv6_clients_are_grouped_by_their_64() {
        assert_eq!(
            group(ip("2001:db8:1:2:aaaa:bbbb:cccc:dddd")),
            ip("2001:db8:1:2::")
        );
        assert_eq!(
            group(ip("2001:db8:1:2::1")),
            group(ip("2001:db8:1:2:ffff::9"))
        );
        assert_ne!(group(ip("2001:db8:1:2::1")), group(ip("2001:db8:1:3::1")));
        assert_eq!(group(ip("::ffff:203.0.113.5")), ip("203.0.113.5"));
        assert_eq!(group(ip("203.0.113.5")), ip("203.0.113.5"));
        assert_eq!(group(ip("::1")), ip("::"));
    }

    #[test]
    fn the_key_groups_the_chosen_address() {
        let mut extensions = Extensions::new();
        let peer = std::net::SocketAddr::new(ip("::ffff:10.0.0.9"), 5000);
        extensions.insert(ConnectInfo(Peer::detached(peer)));
        let forwarded = headers(&[b"1.1.1.1, [2001:db8:0:7::5]:1234"]);
        assert_eq!(
            client_key(&forwarded, &extensions, hops(1)),
            ip("2001:db8:0:7::")
        );
        assert_eq!(
            client_key(&forwarded, &extensions, TrustProxy::None),
            ip("10.0.0.9"),
            "an IPv4 peer on a dual-stack socket"
        );
    }
}
