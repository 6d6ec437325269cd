//! The addresses refused unless an allow rule permits them, and why each is: everything that
//! is not a public unicast address on the internet (loopback, private, link-local, CGNAT,
//! multicast, documentation, reserved...), the cloud metadata endpoints, and IPv6 forms that
//! carry an IPv4 address (checked by that address).

use crate::policy::Reason;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// A kind of address refused by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Range {
    /// 0.0.0.0/8 other than 0.0.0.0 ("this network").
    ThisNetwork,
    /// 0.0.0.0 and `::`.
    Unspecified,
    /// 127.0.0.0/8 and `::1`.
    Loopback,
    /// 10/8, 172.16/12, 192.168/16, and IPv6 unique local fc00::/7 and site-local fec0::/10.
    Private,
    /// 100.64.0.0/10, carrier-grade NAT.
    SharedCgnat,
    /// 169.254.0.0/16 and fe80::/10.
    LinkLocal,
    /// The cloud instance metadata endpoints: 169.254.169.254 (AWS, GCP, Azure, ...),
    /// fd00:ec2::254 (AWS), 100.100.100.200 (Alibaba), 168.63.129.16 (Azure's wire server),
    /// 192.0.0.192 (Oracle).
    Metadata,
    /// 224.0.0.0/4 and ff00::/8.
    Multicast,
    /// 255.255.255.255.
    Broadcast,
    /// 192.0.2/24, 198.51.100/24, 203.0.113/24, 2001:db8::/32, 3fff::/20.
    Documentation,
    /// 198.18.0.0/15 and 2001:2::/48.
    Benchmarking,
    /// 192.0.0.0/24, 192.88.99.0/24, 240.0.0.0/4, and IPv6 ::/8, 64:ff9b:1::/48, 100::/64.
    Reserved,
    /// ::a.b.c.d (IPv4-compatible, deprecated).
    Ipv4Compatible,
    /// 2001::/32, Teredo tunnels (they carry an IPv4 address).
    Teredo,
    /// 2002::/16, 6to4 tunnels (they carry an IPv4 address).
    SixToFour,
}

impl fmt::Display for Range {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Range::ThisNetwork => "a \"this network\" address (0.0.0.0/8)",
            Range::Unspecified => "the unspecified address",
            Range::Loopback => "a loopback address",
            Range::Private => "a private address",
            Range::SharedCgnat => "a carrier-grade NAT address (100.64.0.0/10)",
            Range::LinkLocal => "a link-local address",
            Range::Metadata => "a cloud metadata address",
            Range::Multicast => "a multicast address",
            Range::Broadcast => "the broadcast address",
            Range::Documentation => "a documentation address",
            Range::Benchmarking => "a benchmarking address",
            Range::Reserved => "a reserved address",
            Range::Ipv4Compatible => "an IPv4-compatible IPv6 address (deprecated)",
            Range::Teredo => "a Teredo tunnel address",
            Range::SixToFour => "a 6to4 tunnel address",
        })
    }
}

/// How an IPv6 address carries an IPv4 address that is checked in its place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Embedding {
    /// ::ffff:a.b.c.d
    Mapped,
    /// 64:ff9b::a.b.c.d (NAT64, RFC 6052)
    Nat64,
}

impl fmt::Display for Embedding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Embedding::Mapped => "an IPv4-mapped IPv6 address",
            Embedding::Nat64 => "a NAT64 address",
        })
    }
}

/// Why `addr` is refused by default, or `None` for a public address.
pub(crate) fn classify(addr: IpAddr) -> Option<Reason> {
    match addr {
        IpAddr::V4(v4) => classify_v4(v4).map(Reason::Range),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

const METADATA_V4: [Ipv4Addr; 4] = [
    Ipv4Addr::new(169, 254, 169, 254),
    Ipv4Addr::new(100, 100, 100, 200),
    Ipv4Addr::new(168, 63, 129, 16),
    Ipv4Addr::new(192, 0, 0, 192),
];

const METADATA_V6: [Ipv6Addr; 1] = [Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254)];

/// The IPv4 ranges refused by default, first match wins (the exact addresses are checked
/// before).
const V4: &[(Ipv4Addr, u8, Range)] = &[
    (Ipv4Addr::new(0, 0, 0, 0), 8, Range::ThisNetwork),
    (Ipv4Addr::new(10, 0, 0, 0), 8, Range::Private),
    (Ipv4Addr::new(100, 64, 0, 0), 10, Range::SharedCgnat),
    (Ipv4Addr::new(127, 0, 0, 0), 8, Range::Loopback),
    (Ipv4Addr::new(169, 254, 0, 0), 16, Range::LinkLocal),
    (Ipv4Addr::new(172, 16, 0, 0), 12, Range::Private),
    (Ipv4Addr::new(192, 0, 0, 0), 24, Range::Reserved),
    (Ipv4Addr::new(192, 0, 2, 0), 24, Range::Documentation),
    (Ipv4Addr::new(192, 88, 99, 0), 24, Range::Reserved),
    (Ipv4Addr::new(192, 168, 0, 0), 16, Range::Private),
    (Ipv4Addr::new(198, 18, 0, 0), 15, Range::Benchmarking),
    (Ipv4Addr::new(198, 51, 100, 0), 24, Range::Documentation),
    (Ipv4Addr::new(203, 0, 113, 0), 24, Range::Documentation),
    (Ipv4Addr::new(224, 0, 0, 0), 4, Range::Multicast),
    (Ipv4Addr::new(240, 0, 0, 0), 4, Range::Reserved),
];

/// The IPv6 ranges refused by default, first match wins (the exact addresses and the forms
/// that carry an IPv4 address are checked before).
const V6: &[(Ipv6Addr, u8, Range)] = &[
    (
        Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 0),
        96,
        Range::Ipv4Compatible,
    ),
    (Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 0), 8, Range::Reserved),
    (
        Ipv6Addr::new(0x64, 0xff9b, 1, 0, 0, 0, 0, 0),
        48,
        Range::Reserved,
    ),
    (
        Ipv6Addr::new(0x100, 0, 0, 0, 0, 0, 0, 0),
        64,
        Range::Reserved,
    ),
    (
        Ipv6Addr::new(0x2001, 0, 0, 0, 0, 0, 0, 0),
        32,
        Range::Teredo,
    ),
    (
        Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 0),
        48,
        Range::Benchmarking,
    ),
    (
        Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0),
        32,
        Range::Documentation,
    ),
    (
        Ipv6Addr::new(0x2002, 0, 0, 0, 0, 0, 0, 0),
        16,
        Range::SixToFour,
    ),
    (
        Ipv6Addr::new(0x3fff, 0, 0, 0, 0, 0, 0, 0),
        20,
        Range::Documentation,
    ),
    (
        Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, 0),
        7,
        Range::Private,
    ),
    (
        Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0),
        10,
        Range::LinkLocal,
    ),
    (
        Ipv6Addr::new(0xfec0, 0, 0, 0, 0, 0, 0, 0),
        10,
        Range::Private,
    ),
    (
        Ipv6Addr::new(0xff00, 0, 0, 0, 0, 0, 0, 0),
        8,
        Range::Multicast,
    ),
];

fn classify_v4(addr: Ipv4Addr) -> Option<Range> {
    if METADATA_V4.contains(&addr) {
        return Some(Range::Metadata);
    }
    if addr == Ipv4Addr::BROADCAST {
        return Some(Range::Broadcast);
    }
    if addr == Ipv4Addr::UNSPECIFIED {
        return Some(Range::Unspecified);
    }
    V4.iter()
        .find(|(net, len, _)| v4_within(addr, *net, *len))
        .map(|(_, _, range)| *range)
}

fn classify_v6(addr: Ipv6Addr) -> Option<Reason> {
    if METADATA_V6.contains(&addr) {
        return Some(Reason::Range(Range::Metadata));
    }
    if addr == Ipv6Addr::UNSPECIFIED {
        return Some(Reason::Range(Range::Unspecified));
    }
    if addr == Ipv6Addr::LOCALHOST {
        return Some(Reason::Range(Range::Loopback));
    }
    if let Some((via, v4)) = embedded_v4(addr) {
        return classify_v4(v4).map(|range| Reason::Embedded { via, v4, range });
    }
    V6.iter()
        .find(|(net, len, _)| v6_within(addr, *net, *len))
        .map(|(_, _, range)| Reason::Range(*range))
}

/// The IPv4 address an IPv6 address stands for, where it is one that reaches IPv4 hosts.
pub(crate) fn embedded_v4(addr: Ipv6Addr) -> Option<(Embedding, Ipv4Addr)> {
    let low = Ipv4Addr::from(u32::try_from(u128::from(addr) & 0xffff_ffff).ok()?);
    if v6_within(addr, Ipv6Addr::new(0, 0, 0, 0, 0, 0xffff, 0, 0), 96) {
        Some((Embedding::Mapped, low))
    } else if v6_within(addr, Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, 0, 0), 96) {
        Some((Embedding::Nat64, low))
    } else {
        None
    }
}

/// Whether `addr` is in `net`/`len`.
pub(crate) fn v4_within(addr: Ipv4Addr, net: Ipv4Addr, len: u8) -> bool {
    let mask = u32::MAX
        .checked_shl(32 - u32::from(len.min(32)))
        .unwrap_or(0);
    u32::from(addr) & mask == u32::from(net) & mask
}

/// Whether `addr` is in `net`/`len`.
pub(crate) fn v6_within(addr: Ipv6Addr, net: Ipv6Addr, len: u8) -> bool {
    let mask = u128::MAX
        .checked_shl(128 - u32::from(len.min(128)))
        .unwrap_or(0);
    u128::from(addr) & mask == u128::from(net) & mask
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(text: &str) -> Option<String> {
        let addr: IpAddr = text.parse().expect("a test address");
        classify(addr).map(|reason| reason.to_string())
    }

    #[test]
    fn refused_addresses_and_why() {
        let table = [
            ("127.0.0.1", "a loopback address"),
            ("127.255.255.254", "a loopback address"),
            ("::1", "a loopback address"),
            ("10.0.0.1", "a private address"),
            ("172.16.0.1", "a private address"),
            ("172.31.255.255", "a private address"),
            ("192.168.1.1", "a private address"),
            ("fc00::1", "a private address"),
            ("fd12:3456::1", "a private address"),
            ("fec0::1", "a private address"),
            ("169.254.1.1", "a link-local address"),
            ("fe80::1", "a link-local address"),
            ("100.64.0.1", "a carrier-grade NAT address (100.64.0.0/10)"),
            (
                "100.127.255.255",
                "a carrier-grade NAT address (100.64.0.0/10)",
            ),
            ("169.254.169.254", "a cloud metadata address"),
            ("fd00:ec2::254", "a cloud metadata address"),
            ("100.100.100.200", "a cloud metadata address"),
            ("168.63.129.16", "a cloud metadata address"),
            ("224.0.0.1", "a multicast address"),
            ("239.255.255.250", "a multicast address"),
            ("ff02::1", "a multicast address"),
            ("0.0.0.0", "the unspecified address"),
            ("::", "the unspecified address"),
            ("255.255.255.255", "the broadcast address"),
            ("0.1.2.3", "a \"this network\" address (0.0.0.0/8)"),
            ("192.0.2.1", "a documentation address"),
            ("198.51.100.1", "a documentation address"),
            ("203.0.113.1", "a documentation address"),
            ("2001:db8::1", "a documentation address"),
            ("198.18.0.1", "a benchmarking address"),
            ("240.0.0.1", "a reserved address"),
            ("192.0.0.8", "a reserved address"),
            (
                "::ffff:127.0.0.1",
                "an IPv4-mapped IPv6 address of 127.0.0.1, a loopback address",
            ),
            (
                "::ffff:10.1.2.3",
                "an IPv4-mapped IPv6 address of 10.1.2.3, a private address",
            ),
            (
                "::ffff:169.254.169.254",
                "an IPv4-mapped IPv6 address of 169.254.169.254, a cloud metadata address",
            ),
            (
                "64:ff9b::127.0.0.1",
                "a NAT64 address of 127.0.0.1, a loopback address",
            ),
            (
                "64:ff9b::a9fe:a9fe",
                "a NAT64 address of 169.254.169.254, a cloud metadata address",
            ),
            (
                "::127.0.0.1",
                "an IPv4-compatible IPv6 address (deprecated)",
            ),
            ("::8.8.8.8", "an IPv4-compatible IPv6 address (deprecated)"),
            ("2001::1", "a Teredo tunnel address"),
            ("2002:7f00:1::", "a 6to4 tunnel address"),
            ("64:ff9b:1::1", "a reserved address"),
            ("100::1", "a reserved address"),
        ];
        for (addr, why) in table {
            assert_eq!(verdict(addr).as_deref(), Some(why), "{addr}");
        }
    }

    #[test]
    fn public_addresses_pass() {
        for addr in [
            "1.1.1.1",
            "8.8.8.8",
            "93.184.215.14",
            "172.15.255.255",
            "172.32.0.1",
            "100.63.255.255",
            "100.128.0.1",
            "169.253.255.255",
            "223.255.255.255",
            "2606:4700:4700::1111",
            "2a00:1450:4001:80b::200e",
            "::ffff:8.8.8.8",
            "64:ff9b::8.8.8.8",
        ] {
            assert_eq!(verdict(addr), None, "{addr}");
        }
    }

    #[test]
    fn prefixes() {
        let net = Ipv4Addr::new(10, 0, 0, 0);
        assert!(v4_within(Ipv4Addr::new(10, 255, 0, 1), net, 8));
        assert!(!v4_within(Ipv4Addr::new(11, 0, 0, 1), net, 8));
        assert!(v4_within(Ipv4Addr::new(11, 0, 0, 1), net, 0));
        assert!(v4_within(net, net, 32));
        assert!(!v4_within(Ipv4Addr::new(10, 0, 0, 1), net, 32));
        assert!(v6_within(Ipv6Addr::LOCALHOST, Ipv6Addr::LOCALHOST, 128));
        assert!(v6_within(Ipv6Addr::LOCALHOST, Ipv6Addr::UNSPECIFIED, 0));
    }
}
