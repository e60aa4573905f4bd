//! Relay addresses and tunnel remotes: `wireleap://host:port[/path]`, `https://host[:port][/path]`,
//! `target://host:port` (protocol.md §8.1, §14.2).
//!
//! The original keeps these as general URLs and checks little; we accept exactly the three
//! schemes the protocol uses, a host (DNS name, IPv4, or IPv6 in brackets) and a port, and
//! reject everything else (user info, spaces, control characters, empty hosts, port 0) with a
//! typed error. The text is kept as received so that a parsed value re-serialises to the same
//! bytes (signed relay entries and lists are compared byte for byte).

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// The scheme of an [`Address`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// A relay reached over TLS + HTTP/2 (`wireleap://`).
    Wireleap,
    /// A relay announced with an `https://` address (accepted by the original's validation).
    Https,
    /// The final destination of a circuit (`target://`), only in tunnel payloads.
    Target,
}

impl Scheme {
    /// The scheme text without `://`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Scheme::Wireleap => "wireleap",
            Scheme::Https => "https",
            Scheme::Target => "target",
        }
    }
}

/// The host part of an [`Address`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Host {
    /// A DNS name (letters, digits, `-`, `_`, `.`).
    Domain(String),
    /// A dotted IPv4 address.
    Ipv4(Ipv4Addr),
    /// An IPv6 address (written in brackets in the address).
    Ipv6(Ipv6Addr),
}

impl Host {
    /// Parses a bare host: an IPv6 address with or without brackets, IPv4, or a DNS name.
    pub fn parse(text: &str) -> Result<Self, AddressError> {
        let inner = text
            .strip_prefix('[')
            .and_then(|t| t.strip_suffix(']'))
            .unwrap_or(text);
        if let Ok(ip) = inner.parse::<Ipv6Addr>() {
            return Ok(Host::Ipv6(ip));
        }
        if inner.len() != text.len() {
            return Err(AddressError::BadHost(text.to_string()));
        }
        if let Ok(ip) = text.parse::<Ipv4Addr>() {
            return Ok(Host::Ipv4(ip));
        }
        let ok = !text.is_empty()
            && text.len() <= 253
            && text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if ok {
            Ok(Host::Domain(text.to_string()))
        } else {
            Err(AddressError::BadHost(text.to_string()))
        }
    }

    /// Whether dialing this host would reach the relay's own machine: `localhost`, 127/8,
    /// `::1`, `0.0.0.0`, `::` (the cases the original refuses unless configured otherwise).
    pub fn is_loopback_or_unspecified(&self) -> bool {
        match self {
            Host::Domain(d) => d.eq_ignore_ascii_case("localhost"),
            Host::Ipv4(ip) => ip.is_loopback() || ip.is_unspecified(),
            Host::Ipv6(ip) => {
                ip.is_loopback()
                    || ip.is_unspecified()
                    || ip
                        .to_ipv4_mapped()
                        .is_some_and(|v4| v4.is_loopback() || v4.is_unspecified())
            }
        }
    }
}

impl fmt::Display for Host {
    /// The host as written in an address (IPv6 in brackets).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Domain(d) => f.write_str(d),
            Host::Ipv4(ip) => write!(f, "{ip}"),
            Host::Ipv6(ip) => write!(f, "[{ip}]"),
        }
    }
}

/// A parsed relay address or tunnel remote.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Address {
    raw: String,
    scheme: Scheme,
    host: Host,
    port: u16,
    rest_start: usize,
}

/// Why an address text was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AddressError {
    /// No `scheme://` prefix.
    #[error("address {0:?} has no scheme (expected wireleap://, https:// or target://)")]
    NoScheme(String),
    /// A scheme other than wireleap, https, target.
    #[error("address {text:?} has unsupported scheme {scheme:?}")]
    UnsupportedScheme {
        /// The whole text.
        text: String,
        /// The scheme found.
        scheme: String,
    },
    /// A scheme valid elsewhere but not allowed in this place.
    #[error("address {text:?}: scheme {scheme} is not allowed here")]
    SchemeNotAllowed {
        /// The whole text.
        text: String,
        /// The scheme found.
        scheme: &'static str,
    },
    /// Whitespace, control or non-ASCII characters.
    #[error("address {0:?} contains whitespace, control or non-ASCII characters")]
    BadCharacters(String),
    /// `user@host` forms are not used by the protocol.
    #[error("address {0:?} contains user info")]
    UserInfo(String),
    /// Empty or malformed host.
    #[error("invalid host {0:?}")]
    BadHost(String),
    /// Port missing where required, empty, not a number, 0 or above 65535.
    #[error("address {0:?} needs a port between 1 and 65535")]
    BadPort(String),
    /// A path where none is allowed (target addresses), or one not starting with `/`.
    #[error("address {0:?} has an unexpected path")]
    BadPath(String),
}

impl Address {
    /// Parses any of the three schemes.
    pub fn parse(text: &str) -> Result<Self, AddressError> {
        if text
            .bytes()
            .any(|b| !b.is_ascii() || b.is_ascii_control() || b == b' ')
        {
            return Err(AddressError::BadCharacters(text.to_string()));
        }
        let (scheme_text, after) = text
            .split_once("://")
            .ok_or_else(|| AddressError::NoScheme(text.to_string()))?;
        let scheme = match scheme_text.to_ascii_lowercase().as_str() {
            "wireleap" => Scheme::Wireleap,
            "https" => Scheme::Https,
            "target" => Scheme::Target,
            _ => {
                return Err(AddressError::UnsupportedScheme {
                    text: text.to_string(),
                    scheme: scheme_text.to_string(),
                })
            }
        };
        let auth_len = after.find(['/', '?', '#']).unwrap_or(after.len());
        let authority = &after[..auth_len];
        if authority.contains('@') {
            return Err(AddressError::UserInfo(text.to_string()));
        }
        let (host_text, port_text) = if authority.starts_with('[') {
            match authority.find(']') {
                Some(end) => {
                    let (h, p) = authority.split_at(end + 1);
                    match p.strip_prefix(':') {
                        Some(p) => (h, Some(p)),
                        None if p.is_empty() => (h, None),
                        None => return Err(AddressError::BadHost(authority.to_string())),
                    }
                }
                None => return Err(AddressError::BadHost(authority.to_string())),
            }
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        // An IPv6 host must be bracketed, or its colons would be read as the port separator.
        if host_text.is_empty() || (!host_text.starts_with('[') && host_text.contains(':')) {
            return Err(AddressError::BadHost(text.to_string()));
        }
        let host = Host::parse(host_text)?;
        let port = match port_text {
            Some(p) => match p.parse::<u16>() {
                Ok(n) if n > 0 && p.bytes().all(|b| b.is_ascii_digit()) => n,
                _ => return Err(AddressError::BadPort(text.to_string())),
            },
            None if scheme == Scheme::Https => 443,
            None => return Err(AddressError::BadPort(text.to_string())),
        };
        let rest_start = scheme_text.len() + 3 + auth_len;
        if scheme == Scheme::Target && rest_start != text.len() {
            return Err(AddressError::BadPath(text.to_string()));
        }
        Ok(Self {
            raw: text.to_string(),
            scheme,
            host,
            port,
            rest_start,
        })
    }

    /// Parses an address a relay may announce: `wireleap://` or `https://`.
    pub fn parse_relay(text: &str) -> Result<Self, AddressError> {
        let a = Self::parse(text)?;
        if a.scheme == Scheme::Target {
            return Err(AddressError::SchemeNotAllowed {
                text: text.to_string(),
                scheme: Scheme::Target.as_str(),
            });
        }
        Ok(a)
    }

    /// `target://host:port` for the final destination of a circuit.
    pub fn target(host: &Host, port: u16) -> Result<Self, AddressError> {
        Self::parse(&format!("target://{host}:{port}"))
    }

    /// The scheme.
    pub fn scheme(&self) -> Scheme {
        self.scheme
    }

    /// The host.
    pub fn host(&self) -> &Host {
        &self.host
    }

    /// The port (443 when an `https://` address has none).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `host:port` for dialing (IPv6 in brackets).
    pub fn host_port(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// Path, query and fragment as written (empty if none). The relay ignores it.
    pub fn path(&self) -> &str {
        &self.raw[self.rest_start..]
    }

    /// The address text exactly as received or built.
    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// The `https://` URL a client requests to open a tunnel to this relay (§14.1).
    pub fn tunnel_url(&self) -> String {
        format!("https://{}{}", self.host_port(), self.path())
    }
}

impl FromStr for Address {
    type Err = AddressError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

impl Serialize for Address {
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        ser.serialize_str(&self.raw)
    }
}

impl<'de> Deserialize<'de> for Address {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        let s = String::deserialize(de)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_protocol_forms() {
        let a = Address::parse("wireleap://relay1.example.com:443/wireleap").unwrap_or_else(|e| {
            unreachable!("{e}");
        });
        assert_eq!(a.scheme(), Scheme::Wireleap);
        assert_eq!(a.host_port(), "relay1.example.com:443");
        assert_eq!(a.path(), "/wireleap");
        assert_eq!(a.tunnel_url(), "https://relay1.example.com:443/wireleap");
        let t = Address::parse("target://[2001:db8::1]:80").unwrap_or_else(|e| unreachable!("{e}"));
        assert_eq!(
            t.host(),
            &Host::Ipv6("2001:db8::1".parse().unwrap_or(Ipv6Addr::UNSPECIFIED))
        );
        assert_eq!(t.host_port(), "[2001:db8::1]:80");
        let h = Address::parse("https://relay.example.com").unwrap_or_else(|e| unreachable!("{e}"));
        assert_eq!(h.port(), 443);
        let q = Address::parse("wireleap://relay.example.com:443/path?x=1&y=<2>");
        assert!(q.is_ok());
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "not a url with spaces",
            "relay.example.com:443",
            "http://relay.example.com:80",
            "wireleap://relay.example.com",
            "wireleap://:443",
            "wireleap://relay.example.com:0",
            "wireleap://relay.example.com:65536",
            "wireleap://relay.example.com:+80",
            "wireleap://user@relay.example.com:443",
            "wireleap://2001:db8::1:443",
            "wireleap://[2001:db8::1]x:443",
            "target://example.org:443/path",
            "target://exa\u{e9}mple.org:443",
            "target://[::1:80",
        ] {
            assert!(Address::parse(bad).is_err(), "{bad}");
        }
        assert!(Address::parse_relay("target://example.org:443").is_err());
    }

    #[test]
    fn loopback_hosts() {
        for h in [
            "localhost",
            "127.0.0.2",
            "::1",
            "0.0.0.0",
            "::",
            "[::ffff:127.0.0.1]",
        ] {
            assert!(
                Host::parse(h)
                    .map(|h| h.is_loopback_or_unspecified())
                    .unwrap_or(false),
                "{h}"
            );
        }
        for h in ["example.org", "192.0.2.1", "2001:db8::1"] {
            assert!(
                !Host::parse(h)
                    .map(|h| h.is_loopback_or_unspecified())
                    .unwrap_or(true),
                "{h}"
            );
        }
    }
}
