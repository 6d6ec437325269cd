//! What can go wrong with a fetch: one error enum, each message naming the problem and how to
//! fix it, and a stable short code per kind for job errors.

use crate::policy::Reason;
use std::net::IpAddr;
use std::time::Duration;

/// Why a fetch failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FetchError {
    /// The URL does not parse, has no host, or carries a user name or password.
    #[error("{url:?} is not a URL that can be fetched: {why}")]
    BadUrl { url: String, why: String },
    /// A scheme other than https (or http when allowed).
    #[error("{scheme}:// URLs are refused: {fix}")]
    SchemeRefused { scheme: String, fix: &'static str },
    /// An address the URL's host is or resolves to is one the policy refuses; nothing was
    /// sent to any address of the host.
    #[error("{}", refused_message(host, addr, why))]
    AddressRefused {
        host: String,
        addr: IpAddr,
        why: Reason,
    },
    /// The host name did not resolve.
    #[error("{host} could not be resolved: {source} (check the host name in the URL)")]
    Resolve {
        host: String,
        #[source]
        source: std::io::Error,
    },
    /// The host name resolved to no address at all.
    #[error("{host} resolved to no address (check the host name in the URL)")]
    NoAddress { host: String },
    /// No TCP connection to any of the host's addresses.
    #[error("could not connect to {host} at {addr}: {source} (is the server up on that port?)")]
    Connect {
        host: String,
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// The TLS handshake failed, typically a certificate that is not trusted or not for the
    /// host.
    #[error("TLS with {host} failed: {source} (the server's certificate must be valid for {host} and signed by a trusted root)")]
    Tls {
        host: String,
        #[source]
        source: std::io::Error,
    },
    /// No root certificate to trust: the system has none and the policy adds none.
    #[error("no trusted root certificates: the system has none (install the ca-certificates package) and none are configured")]
    NoRoots,
    /// One of the policy's extra roots cannot be used as a root.
    #[error("an extra root certificate cannot be used: {source} (check the configured CA file)")]
    BadRoot {
        #[source]
        source: rustls::Error,
    },
    /// The HTTP exchange failed (a protocol error, or the connection closed mid-request).
    #[error("the HTTP exchange with {host} failed: {source}")]
    Http {
        host: String,
        #[source]
        source: hyper::Error,
    },
    /// One of the policy's time caps passed.
    #[error("{}", timeout_message(*which, *after))]
    Timeout { which: Timeout, after: Duration },
    /// The body (decoded) is larger than the policy's `max_bytes`.
    #[error("the body is larger than the cap of {max} bytes (raise sources.max_fetch_bytes to fetch it)")]
    TooLarge { max: u64 },
    /// The origin answered with a status other than 2xx, a followed redirect or a 304.
    #[error("the server answered HTTP {status} (a 2xx answer is needed; check the URL)")]
    Status { status: u16 },
    /// More redirects than the policy's `max_redirects`.
    #[error("more than {max} redirects: refused (the URL may redirect in a loop; fetch the final URL directly)")]
    TooManyRedirects { max: usize },
    /// A redirect without a usable `Location`.
    #[error("the server answered HTTP {status} with {why}: the redirect cannot be followed")]
    BadRedirect { status: u16, why: String },
    /// A `Content-Encoding` this crate does not decode.
    #[error(
        "the body's Content-Encoding {encoding:?} is not supported (gzip, deflate and br are)"
    )]
    Encoding { encoding: String },
    /// The body could not be read or decoded.
    #[error("the body could not be read: {source}")]
    Body {
        #[source]
        source: std::io::Error,
    },
}

/// Which time cap passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timeout {
    /// Resolving, connecting and the TLS handshake of one hop.
    Connect,
    /// From sending the request to the response's head.
    FirstByte,
    /// Between two pieces of the body.
    Idle,
    /// The whole fetch, redirects and body included.
    Total,
}

impl Timeout {
    /// What the cap is called in the server's configuration.
    fn setting(self) -> &'static str {
        match self {
            Timeout::Connect => "connect",
            Timeout::FirstByte => "first-byte",
            Timeout::Idle => "idle",
            Timeout::Total => "total",
        }
    }
}

impl FetchError {
    /// A stable short code for job errors and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            FetchError::BadUrl { .. } => "bad_url",
            FetchError::SchemeRefused { .. } => "scheme_refused",
            FetchError::AddressRefused { .. } => "address_refused",
            FetchError::Resolve { .. } | FetchError::NoAddress { .. } => "resolve_failed",
            FetchError::Connect { .. } => "connect_failed",
            FetchError::Tls { .. } | FetchError::NoRoots | FetchError::BadRoot { .. } => {
                "tls_failed"
            }
            FetchError::Http { .. } => "http_failed",
            FetchError::Timeout { .. } => "fetch_timeout",
            FetchError::TooLarge { .. } => "too_large",
            FetchError::Status { .. } => "http_status",
            FetchError::TooManyRedirects { .. } => "too_many_redirects",
            FetchError::BadRedirect { .. } => "bad_redirect",
            FetchError::Encoding { .. } => "unsupported_encoding",
            FetchError::Body { .. } => "body_failed",
        }
    }
}

fn refused_message(host: &str, addr: &IpAddr, why: &Reason) -> String {
    let subject = if host == addr.to_string() {
        format!("{addr} is")
    } else {
        format!("{host} resolves to {addr}, which is")
    };
    format!("{subject} {why}: fetching it is refused ({})", why.fix())
}

fn timeout_message(which: Timeout, after: Duration) -> String {
    let what = match which {
        Timeout::Connect => "no connection (TCP and TLS)",
        Timeout::FirstByte => "no response head",
        Timeout::Idle => "no body data",
        Timeout::Total => "the fetch was not done",
    };
    format!(
        "{what} within {after:?}: the {} timeout passed (raise it if the server is just slow)",
        which.setting()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_stable() {
        let cases: [(FetchError, &str); 5] = [
            (FetchError::TooLarge { max: 1 }, "too_large"),
            (FetchError::Status { status: 500 }, "http_status"),
            (
                FetchError::Timeout {
                    which: Timeout::Idle,
                    after: Duration::from_millis(300),
                },
                "fetch_timeout",
            ),
            (
                FetchError::TooManyRedirects { max: 5 },
                "too_many_redirects",
            ),
            (
                FetchError::AddressRefused {
                    host: "127.0.0.1".into(),
                    addr: "127.0.0.1".parse().expect("an address"),
                    why: Reason::Range(crate::ranges::Range::Loopback),
                },
                "address_refused",
            ),
        ];
        for (error, code) in cases {
            assert_eq!(error.code(), code, "{error}");
        }
    }

    #[test]
    fn refusals_name_the_address_and_the_fix() {
        let refused = FetchError::AddressRefused {
            host: "127.0.0.1".into(),
            addr: "127.0.0.1".parse().expect("an address"),
            why: Reason::Range(crate::ranges::Range::Loopback),
        };
        assert_eq!(
            refused.to_string(),
            "127.0.0.1 is a loopback address: fetching it is refused \
             (add it to sources.allow to permit it)"
        );
        let by_name = FetchError::AddressRefused {
            host: "localhost".into(),
            addr: "::1".parse().expect("an address"),
            why: Reason::Range(crate::ranges::Range::Loopback),
        };
        assert_eq!(
            by_name.to_string(),
            "localhost resolves to ::1, which is a loopback address: fetching it is refused \
             (add it to sources.allow to permit it)"
        );
    }
}
