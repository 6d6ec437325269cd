//! What may be fetched: the policy (schemes, allow and deny rules, caps, extra roots), its
//! rules, and the decision for one host and one of its addresses.

use crate::ranges::{self, Embedding, Range};
use rustls_pki_types::CertificateDer;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::str::FromStr;
use std::time::Duration;

/// What a fetch may do.
///
/// A zero `max_bytes` or a zero duration means no cap.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Whether `http://` URLs (and redirects to them) are fetched; `https` only when false.
    pub allow_http: bool,
    /// Rules that permit what is refused by default (loopback, private, link-local... see
    /// [`Range`]): a host name matched by one of them, or an address in one of them, is
    /// fetched whatever its address. They do not restrict anything: a public address is
    /// fetched without a rule. A cloud metadata address is permitted only by a
    /// [`Rule::Net`] naming exactly that address.
    pub allow: Vec<Rule>,
    /// Rules that refuse a host name or addresses, public ones too; checked first, so that
    /// a deny rule wins over an allow rule. An address rule also matches the IPv4 address an
    /// IPv4-mapped or NAT64 IPv6 address carries.
    pub deny: Vec<Rule>,
    /// The cap on the decoded body, in bytes.
    pub max_bytes: u64,
    /// Resolving, connecting (TCP) and the TLS handshake of one hop.
    pub connect_timeout: Duration,
    /// From sending a request to its response's head.
    pub first_byte_timeout: Duration,
    /// The longest wait for the next piece of the body.
    pub idle_timeout: Duration,
    /// The whole fetch: every hop, every redirect, and the body.
    pub total_timeout: Duration,
    /// Redirects followed at most.
    pub max_redirects: usize,
    /// Certificates trusted as roots besides the system's.
    pub extra_roots: Vec<CertificateDer<'static>>,
}

impl Default for Policy {
    /// https only, no rules, no cap on the body, 5 redirects; 10 s to connect, 30 s to the
    /// response head, 30 s between body pieces, 1 hour in all.
    fn default() -> Self {
        Policy {
            allow_http: false,
            allow: Vec::new(),
            deny: Vec::new(),
            max_bytes: 0,
            connect_timeout: Duration::from_secs(10),
            first_byte_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(30),
            total_timeout: Duration::from_secs(3600),
            max_redirects: 5,
            extra_roots: Vec::new(),
        }
    }
}

/// A rule of an allow-list or a deny-list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rule {
    /// A host name as written in URLs: exactly `example.org`, or `*.example.org` for every
    /// name under `example.org` (not `example.org` itself). Case and a trailing dot do not
    /// matter.
    Host(String),
    /// An IP network: every address in it.
    Net(Net),
}

/// An IP network: an address and a prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Net {
    addr: IpAddr,
    prefix: u8,
}

/// A rule that does not parse.
#[derive(Debug, thiserror::Error)]
#[error("{text:?} is not a rule: {why} (write a host name like example.org or *.example.org, an address like 10.1.2.3, or a network like 10.0.0.0/8)")]
pub struct RuleError {
    text: String,
    why: &'static str,
}

/// Why an address is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Reason {
    /// It is in a range refused by default.
    Range(Range),
    /// It is an IPv6 address that carries an IPv4 address in a range refused by default.
    Embedded {
        via: Embedding,
        v4: Ipv4Addr,
        range: Range,
    },
    /// A deny rule matches it or its host.
    Denied(Rule),
}

impl Policy {
    /// Whether the host `host` may be fetched at `addr`: `Err` says why not.
    pub fn check(&self, host: &str, addr: IpAddr) -> Result<(), Reason> {
        if let Some(rule) = self.deny.iter().find(|rule| rule.denies(host, addr)) {
            return Err(Reason::Denied(rule.clone()));
        }
        let Some(reason) = ranges::classify(addr) else {
            return Ok(());
        };
        let allowed = match reason {
            Reason::Range(Range::Metadata) => self.allow.contains(&Rule::Net(Net::single(addr))),
            _ => self.allow.iter().any(|rule| rule.allows(host, addr)),
        };
        if allowed {
            Ok(())
        } else {
            Err(reason)
        }
    }
}

impl Rule {
    /// Whether this allow rule matches the host or the address (as it is).
    fn allows(&self, host: &str, addr: IpAddr) -> bool {
        match self {
            Rule::Host(pattern) => host_matches(pattern, host),
            Rule::Net(net) => net.contains(addr),
        }
    }

    /// Whether this deny rule matches the host, the address, or the IPv4 address the
    /// address carries.
    fn denies(&self, host: &str, addr: IpAddr) -> bool {
        let carried = match addr {
            IpAddr::V6(v6) => ranges::embedded_v4(v6).map(|(_, v4)| IpAddr::V4(v4)),
            IpAddr::V4(_) => None,
        };
        self.allows(host, addr) || carried.is_some_and(|v4| self.allows(host, v4))
    }
}

/// Whether `host` (from a parsed URL: lowercase, IDNA-encoded) matches `pattern`.
fn host_matches(pattern: &str, host: &str) -> bool {
    let pattern = pattern.trim_end_matches('.').to_ascii_lowercase();
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    match pattern.strip_prefix("*.") {
        Some(parent) => host
            .strip_suffix(parent)
            .is_some_and(|sub| sub.len() > 1 && sub.ends_with('.')),
        None => host == pattern,
    }
}

impl Net {
    /// The network of `addr` with `prefix` leading bits; `None` if `prefix` is longer than
    /// the address.
    pub fn new(addr: IpAddr, prefix: u8) -> Option<Net> {
        let bits = if addr.is_ipv4() { 32 } else { 128 };
        (prefix <= bits).then_some(Net { addr, prefix })
    }

    /// The network of one address.
    pub fn single(addr: IpAddr) -> Net {
        let prefix = if addr.is_ipv4() { 32 } else { 128 };
        Net { addr, prefix }
    }

    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// Whether `addr` is in this network (an IPv4 address is never in an IPv6 network).
    pub fn contains(&self, addr: IpAddr) -> bool {
        match (self.addr, addr) {
            (IpAddr::V4(net), IpAddr::V4(addr)) => ranges::v4_within(addr, net, self.prefix),
            (IpAddr::V6(net), IpAddr::V6(addr)) => ranges::v6_within(addr, net, self.prefix),
            _ => false,
        }
    }
}

impl fmt::Display for Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl FromStr for Net {
    type Err = RuleError;

    /// `10.0.0.0/8`, `fc00::/7`, or one address (`127.0.0.1`, `::1`, `[::1]`).
    fn from_str(text: &str) -> Result<Net, RuleError> {
        let fail = |why| RuleError {
            text: text.to_owned(),
            why,
        };
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let addr: IpAddr = addr
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse()
            .map_err(|_| fail("not an IP address"))?;
        match prefix {
            None => Ok(Net::single(addr)),
            Some(prefix) => {
                let prefix = prefix.parse().map_err(|_| fail("not a prefix length"))?;
                Net::new(addr, prefix).ok_or_else(|| fail("the prefix is longer than the address"))
            }
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rule::Host(host) => f.write_str(host),
            Rule::Net(net) => net.fmt(f),
        }
    }
}

impl FromStr for Rule {
    type Err = RuleError;

    /// An address or a network (see [`Net`]), else a host name: `example.org`,
    /// `*.example.org`, international names too (matched in their IDNA form).
    fn from_str(text: &str) -> Result<Rule, RuleError> {
        let text = text.trim();
        if let Ok(net) = text.parse::<Net>() {
            return Ok(Rule::Net(net));
        }
        let fail = |why| RuleError {
            text: text.to_owned(),
            why,
        };
        if text.contains('/') {
            return Err(fail("not a network"));
        }
        let (wildcard, name) = match text.strip_prefix("*.") {
            Some(name) => (true, name),
            None => (false, text),
        };
        let host = match url::Host::parse(name) {
            Ok(url::Host::Domain(domain)) if !domain.is_empty() && !domain.contains('*') => domain,
            _ => return Err(fail("not a host name")),
        };
        Ok(Rule::Host(if wildcard {
            format!("*.{host}")
        } else {
            host
        }))
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Range(range) => range.fmt(f),
            Reason::Embedded { via, v4, range } => write!(f, "{via} of {v4}, {range}"),
            Reason::Denied(rule) => write!(f, "denied by the rule {rule} in sources.deny"),
        }
    }
}

impl Reason {
    /// How to permit it, if that is what was meant.
    pub(crate) fn fix(&self) -> &'static str {
        match self {
            Reason::Range(Range::Metadata)
            | Reason::Embedded {
                range: Range::Metadata,
                ..
            } => "only a sources.allow rule naming exactly this address permits it",
            Reason::Range(_) | Reason::Embedded { .. } => "add it to sources.allow to permit it",
            Reason::Denied(_) => "remove the rule from sources.deny to permit it",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("a test address")
    }

    fn rule(text: &str) -> Rule {
        text.parse().expect("a test rule")
    }

    fn with(allow: &[&str], deny: &[&str]) -> Policy {
        Policy {
            allow: allow.iter().map(|text| rule(text)).collect(),
            deny: deny.iter().map(|text| rule(text)).collect(),
            ..Policy::default()
        }
    }

    #[test]
    fn defaults_refuse_special_addresses_and_pass_public_ones() {
        let policy = Policy::default();
        assert_eq!(
            policy.check("127.0.0.1", ip("127.0.0.1")),
            Err(Reason::Range(Range::Loopback))
        );
        assert_eq!(
            policy.check("localhost", ip("::1")),
            Err(Reason::Range(Range::Loopback))
        );
        assert_eq!(policy.check("example.org", ip("93.184.215.14")), Ok(()));
    }

    #[test]
    fn allow_rules_permit_by_address_or_host() {
        let policy = with(
            &["127.0.0.1", "10.0.0.0/8", "*.corp.example", "intranet"],
            &[],
        );
        assert_eq!(policy.check("127.0.0.1", ip("127.0.0.1")), Ok(()));
        assert!(policy.check("127.0.0.2", ip("127.0.0.2")).is_err());
        assert_eq!(policy.check("x", ip("10.200.0.1")), Ok(()));
        assert_eq!(policy.check("a.b.corp.example", ip("192.168.0.1")), Ok(()));
        assert_eq!(policy.check("INTRANET.", ip("192.168.0.1")), Ok(()));
        assert!(policy.check("corp.example", ip("192.168.0.1")).is_err());
        assert!(policy.check("evilcorp.example", ip("192.168.0.1")).is_err());
        // A v4 rule does not cover the mapped form of its addresses.
        assert!(policy.check("x", ip("::ffff:127.0.0.1")).is_err());
    }

    #[test]
    fn metadata_needs_its_own_rule() {
        let wide = with(&["169.254.0.0/16", "metadata.internal"], &[]);
        assert_eq!(wide.check("x", ip("169.254.1.1")), Ok(()));
        assert_eq!(
            wide.check("metadata.internal", ip("169.254.169.254")),
            Err(Reason::Range(Range::Metadata))
        );
        let exact = with(&["169.254.169.254"], &[]);
        assert_eq!(exact.check("x", ip("169.254.169.254")), Ok(()));
    }

    #[test]
    fn deny_rules_win_and_see_through_mapped_addresses() {
        let policy = with(
            &["10.0.0.0/8"],
            &["10.9.0.0/16", "*.example.org", "8.8.8.8"],
        );
        assert_eq!(
            policy.check("x", ip("10.9.1.1")),
            Err(Reason::Denied(rule("10.9.0.0/16")))
        );
        assert_eq!(
            policy.check("www.example.org", ip("1.1.1.1")),
            Err(Reason::Denied(rule("*.example.org")))
        );
        assert_eq!(
            policy.check("x", ip("::ffff:8.8.8.8")),
            Err(Reason::Denied(rule("8.8.8.8")))
        );
        assert_eq!(
            policy.check("x", ip("64:ff9b::808:808")),
            Err(Reason::Denied(rule("8.8.8.8")))
        );
        assert_eq!(policy.check("x", ip("8.8.4.4")), Ok(()));
    }

    #[test]
    fn rules_parse() {
        assert_eq!(rule("127.0.0.1"), Rule::Net(Net::single(ip("127.0.0.1"))));
        assert_eq!(rule("[::1]"), Rule::Net(Net::single(ip("::1"))));
        assert_eq!(rule("fc00::/7").to_string(), "fc00::/7");
        assert_eq!(rule("Example.ORG"), Rule::Host("example.org".into()));
        assert_eq!(rule("*.Example.org"), Rule::Host("*.example.org".into()));
        assert_eq!(
            rule("bücher.example"),
            Rule::Host("xn--bcher-kva.example".into())
        );
        for bad in [
            "10.0.0.0/33",
            "10.0.0.0/x",
            "a/b",
            "*",
            "a.*.b",
            "",
            "exa mple.org",
        ] {
            assert!(bad.parse::<Rule>().is_err(), "{bad:?}");
        }
    }
}
