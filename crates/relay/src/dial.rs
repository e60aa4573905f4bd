//! Dialing the next hop or the final target, with the relay's address policy.
//!
//! The policy is applied to the addresses a name *resolves to*, and the relay connects to
//! exactly the address it checked, so a DNS name pointing at 127.0.0.1 (or changing its
//! answer between check and connect) cannot open the relay's own machine or network to a
//! client. Loopback and unspecified addresses are refused unless
//! `danger_zone.allow_loopback`; private, link-local, shared, multicast and reserved ranges
//! unless `danger_zone.allow_private`.
//!
//! Not here: what the dialed socket carries (see `tunnel` and `udp`).

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;
use tokio::net::{TcpStream, UdpSocket};
use wireleap_proto::address::Host;
use wireleap_proto::status::Status;
use wireleap_proto::wl_payload::Protocol;

/// Which address ranges may be dialed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DialPolicy {
    /// Loopback and unspecified addresses.
    pub allow_loopback: bool,
    /// Private, link-local, shared, multicast, broadcast and reserved addresses.
    pub allow_private: bool,
}

/// Why an address is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The relay's own machine.
    Loopback,
    /// The relay's own network, or not a unicast internet address.
    Private,
}

/// Why a dial failed. Messages never contain the address (it may be a user's target).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DialError {
    /// The policy forbids every address the name resolved to.
    #[error("{}", match .0 {
        Refusal::Loopback => "dialing loopback or unspecified addresses is not allowed",
        Refusal::Private => "dialing private or non-unicast addresses is not allowed",
    })]
    Refused(Refusal),
    /// Name resolution failed.
    #[error("could not resolve the host: {0}")]
    Resolve(#[source] io::Error),
    /// The name resolved to no address of the requested family.
    #[error("the host has no {0} address")]
    NoAddress(&'static str),
    /// Resolution plus connection took longer than the dial timeout.
    #[error("dial timed out after {0:?}")]
    Timeout(Duration),
    /// Every address refused the connection.
    #[error("dial {network}: {source}")]
    Connect {
        /// tcp or udp.
        network: &'static str,
        /// The last error.
        #[source]
        source: io::Error,
    },
}

impl DialError {
    /// The status sent to the client: 400 refused by policy, 408 timeout, 502 otherwise;
    /// the description is the error text (as the original's dial errors are).
    pub fn to_status(&self) -> Status {
        let code = match self {
            DialError::Refused(_) => 400,
            DialError::Timeout(_) => 408,
            _ => 502,
        };
        Status::new(code, self.to_string())
    }
}

fn v4_class(ip: Ipv4Addr) -> Option<Refusal> {
    let o = ip.octets();
    if ip.is_loopback() || ip.is_unspecified() {
        Some(Refusal::Loopback)
    } else if ip.is_private()
        || ip.is_link_local()
        || ip.is_multicast()
        || ip.is_broadcast()
        || o[0] == 0
        // 100.64.0.0/10 shared address space (carrier-grade NAT).
        || (o[0] == 100 && (o[1] & 0xc0) == 64)
        // 192.0.0.0/24 protocol assignments, 198.18.0.0/15 benchmarking, 240.0.0.0/4 reserved.
        || (o[0] == 192 && o[1] == 0 && o[2] == 0)
        || (o[0] == 198 && (o[1] & 0xfe) == 18)
        || o[0] >= 240
    {
        Some(Refusal::Private)
    } else {
        None
    }
}

fn v6_class(ip: Ipv6Addr) -> Option<Refusal> {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return v4_class(v4);
    }
    let seg = ip.segments();
    if ip.is_loopback() || ip.is_unspecified() {
        Some(Refusal::Loopback)
    } else if ip.is_multicast()
        // fc00::/7 unique local, fe80::/10 link-local.
        || (seg[0] & 0xfe00) == 0xfc00
        || (seg[0] & 0xffc0) == 0xfe80
    {
        Some(Refusal::Private)
    } else if seg[0] == 0x64 && seg[1] == 0xff9b && seg[2..6] == [0, 0, 0, 0] {
        // NAT64 (64:ff9b::/96) reaches the embedded IPv4 address.
        let v4 = Ipv4Addr::new(
            (seg[6] >> 8) as u8,
            seg[6] as u8,
            (seg[7] >> 8) as u8,
            seg[7] as u8,
        );
        v4_class(v4)
    } else {
        None
    }
}

impl DialPolicy {
    /// Whether `ip` may be dialed.
    pub fn check(&self, ip: IpAddr) -> Result<(), Refusal> {
        let class = match ip {
            IpAddr::V4(v4) => v4_class(v4),
            IpAddr::V6(v6) => v6_class(v6),
        };
        match class {
            Some(Refusal::Loopback) if !self.allow_loopback => Err(Refusal::Loopback),
            Some(Refusal::Private) if !self.allow_private => Err(Refusal::Private),
            _ => Ok(()),
        }
    }

    /// Checks a host before resolving it (only `localhost` can be judged by name).
    pub fn check_host(&self, host: &Host) -> Result<(), Refusal> {
        match host {
            Host::Domain(d) if d.eq_ignore_ascii_case("localhost") && !self.allow_loopback => {
                Err(Refusal::Loopback)
            }
            Host::Domain(_) => Ok(()),
            Host::Ipv4(ip) => self.check(IpAddr::V4(*ip)),
            Host::Ipv6(ip) => self.check(IpAddr::V6(*ip)),
        }
    }
}

/// Resolves `host:port`, keeps the addresses of `protocol`'s family that the policy allows
/// (error if the policy removed all of them).
async fn resolve(
    host: &Host,
    port: u16,
    protocol: Protocol,
    policy: DialPolicy,
) -> Result<Vec<SocketAddr>, DialError> {
    policy.check_host(host).map_err(DialError::Refused)?;
    let all: Vec<SocketAddr> = match host {
        Host::Ipv4(ip) => vec![SocketAddr::new(IpAddr::V4(*ip), port)],
        Host::Ipv6(ip) => vec![SocketAddr::new(IpAddr::V6(*ip), port)],
        Host::Domain(d) => tokio::net::lookup_host((d.as_str(), port))
            .await
            .map_err(DialError::Resolve)?
            .collect(),
    };
    let (want_v4, want_v6, family) = match protocol {
        Protocol::Tcp4 | Protocol::Udp4 => (true, false, "IPv4"),
        Protocol::Tcp6 | Protocol::Udp6 => (false, true, "IPv6"),
        Protocol::Tcp | Protocol::Udp => (true, true, "IP"),
    };
    let of_family: Vec<SocketAddr> = all
        .into_iter()
        .filter(|a| (a.is_ipv4() && want_v4) || (a.is_ipv6() && want_v6))
        .collect();
    if of_family.is_empty() {
        return Err(DialError::NoAddress(family));
    }
    let mut refusal = None;
    let allowed: Vec<SocketAddr> = of_family
        .into_iter()
        .filter(|a| match policy.check(a.ip()) {
            Ok(()) => true,
            Err(r) => {
                refusal.get_or_insert(r);
                false
            }
        })
        .collect();
    match (allowed.is_empty(), refusal) {
        (true, Some(r)) => Err(DialError::Refused(r)),
        _ => Ok(allowed),
    }
}

/// Opens a TCP connection to `host:port` within `timeout` (resolution included), trying the
/// allowed addresses in order. Nagle is off: the tunnel batches on its own.
pub async fn dial_tcp(
    host: &Host,
    port: u16,
    protocol: Protocol,
    policy: DialPolicy,
    timeout: Duration,
) -> Result<TcpStream, DialError> {
    let attempt = async {
        let addrs = resolve(host, port, protocol, policy).await?;
        let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
        for a in addrs {
            match TcpStream::connect(a).await {
                Ok(s) => {
                    let _ = s.set_nodelay(true);
                    return Ok(s);
                }
                Err(e) => last = e,
            }
        }
        Err(DialError::Connect {
            network: "tcp",
            source: last,
        })
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .map_err(|_| DialError::Timeout(timeout))?
}

/// A UDP socket connected to `host:port` (first allowed address), bound to the wildcard
/// address of its family.
pub async fn dial_udp(
    host: &Host,
    port: u16,
    protocol: Protocol,
    policy: DialPolicy,
    timeout: Duration,
) -> Result<UdpSocket, DialError> {
    let attempt = async {
        let addrs = resolve(host, port, protocol, policy).await?;
        let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
        for a in addrs {
            let local: SocketAddr = if a.is_ipv4() {
                (Ipv4Addr::UNSPECIFIED, 0).into()
            } else {
                (Ipv6Addr::UNSPECIFIED, 0).into()
            };
            let sock = match UdpSocket::bind(local).await {
                Ok(s) => s,
                Err(e) => {
                    last = e;
                    continue;
                }
            };
            match sock.connect(a).await {
                Ok(()) => return Ok(sock),
                Err(e) => last = e,
            }
        }
        Err(DialError::Connect {
            network: "udp",
            source: last,
        })
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .map_err(|_| DialError::Timeout(timeout))?
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const STRICT: DialPolicy = DialPolicy {
        allow_loopback: false,
        allow_private: false,
    };

    #[test]
    fn classifies_addresses() {
        let refused = |s: &str| STRICT.check(s.parse().unwrap()).err();
        for lo in [
            "127.0.0.1",
            "127.9.9.9",
            "0.0.0.0",
            "::1",
            "::",
            "::ffff:127.0.0.1",
        ] {
            assert_eq!(refused(lo), Some(Refusal::Loopback), "{lo}");
        }
        for p in [
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "100.127.255.255",
            "224.0.0.1",
            "255.255.255.255",
            "0.1.2.3",
            "198.18.0.1",
            "240.0.0.1",
            "fd00::1",
            "fe80::1",
            "ff02::1",
            "::ffff:10.0.0.1",
            "64:ff9b::a00:1",
        ] {
            assert_eq!(refused(p), Some(Refusal::Private), "{p}");
        }
        for ok in [
            "1.1.1.1",
            "172.32.0.1",
            "100.128.0.1",
            "192.0.2.1",
            "2001:db8::1",
            "64:ff9b::101:101",
        ] {
            assert_eq!(refused(ok), None, "{ok}");
        }
        let lo_ok = DialPolicy {
            allow_loopback: true,
            allow_private: false,
        };
        assert!(lo_ok.check("127.0.0.1".parse().unwrap()).is_ok());
        assert!(lo_ok.check("10.0.0.1".parse().unwrap()).is_err());
        assert_eq!(
            STRICT.check_host(&Host::Domain("LocalHost".into())),
            Err(Refusal::Loopback)
        );
    }

    #[tokio::test]
    async fn refuses_before_connecting_and_maps_statuses() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let host = Host::Ipv4(Ipv4Addr::LOCALHOST);
        let t = Duration::from_secs(5);
        let e = dial_tcp(&host, port, Protocol::Tcp, STRICT, t)
            .await
            .unwrap_err();
        assert!(matches!(e, DialError::Refused(Refusal::Loopback)));
        assert_eq!(e.to_status().code, 400);
        let allow = DialPolicy {
            allow_loopback: true,
            allow_private: false,
        };
        dial_tcp(&host, port, Protocol::Tcp, allow, t)
            .await
            .unwrap();
        // IPv6-only dial of an IPv4 literal: no address of that family.
        let e = dial_tcp(&host, port, Protocol::Tcp6, allow, t)
            .await
            .unwrap_err();
        assert!(matches!(e, DialError::NoAddress("IPv6")), "{e}");
        drop(l);
        let e = dial_tcp(&host, port, Protocol::Tcp, allow, t)
            .await
            .unwrap_err();
        assert_eq!(e.to_status().code, 502, "{e}");
        assert!(!e.to_string().contains("127.0.0.1"), "{e}");
        let e = dial_tcp(
            &Host::Domain("localhost".into()),
            port,
            Protocol::Tcp,
            STRICT,
            t,
        )
        .await
        .unwrap_err();
        assert!(matches!(e, DialError::Refused(Refusal::Loopback)));
        assert_eq!(DialError::Timeout(t).to_status().code, 408);
    }

    proptest::proptest! {
        #[test]
        fn v4_mapped_matches_v4(bits in proptest::prelude::any::<u32>()) {
            let v4 = Ipv4Addr::from(bits);
            proptest::prop_assert_eq!(v4_class(v4), v6_class(v4.to_ipv6_mapped()));
        }
    }
}
