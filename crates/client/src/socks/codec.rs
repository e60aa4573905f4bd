//! The SOCKSv5 wire format (RFC 1928) as typed messages: the method greeting, requests,
//! replies and the UDP request header, each with an encoder and an incremental decoder.
//!
//! Decoders take the bytes received so far and answer "need more", "here is a message and
//! how many bytes it used", or an error that says which reply code the server owes the
//! client. They never panic and never read past what they are given, so a client cannot make
//! the server allocate or wait for more than one bounded message.
//!
//! This file uses only `std`: the fuzz target includes it by path. Sockets, timeouts and
//! what a request leads to live in `socks::server`.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Protocol version byte.
pub const VERSION: u8 = 5;
/// Method: no authentication required.
pub const METHOD_NO_AUTH: u8 = 0x00;
/// Method reply: none of the offered methods is acceptable.
pub const METHOD_NONE_ACCEPTABLE: u8 = 0xFF;
/// Largest greeting: version, count, 255 methods.
pub const MAX_GREETING: usize = 2 + 255;
/// Largest request or reply: 4 fixed bytes, a 255-byte name with its length, a port.
pub const MAX_REQUEST: usize = 4 + 1 + 255 + 2;
/// Longest host name accepted (the DNS limit); longer ones are refused as malformed.
pub const MAX_DOMAIN: usize = 253;

const ATYP_IPV4: u8 = 1;
const ATYP_DOMAIN: u8 = 3;
const ATYP_IPV6: u8 = 4;

/// A request's command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Command {
    /// Open a TCP connection to the address.
    Connect,
    /// Accept one inbound TCP connection (not supported by this server).
    Bind,
    /// Relay UDP datagrams.
    UdpAssociate,
}

impl Command {
    /// The wire code.
    pub const fn code(self) -> u8 {
        match self {
            Command::Connect => 1,
            Command::Bind => 2,
            Command::UdpAssociate => 3,
        }
    }

    /// The command for a wire code.
    pub const fn from_code(code: u8) -> Option<Self> {
        match code {
            1 => Some(Command::Connect),
            2 => Some(Command::Bind),
            3 => Some(Command::UdpAssociate),
            _ => None,
        }
    }
}

/// A destination: an IP address with port, or a host name (resolved by the exit relay).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TargetAddr {
    /// IPv4 or IPv6 address and port.
    Ip(SocketAddr),
    /// Host name (valid DNS characters, at most [`MAX_DOMAIN`] bytes) and port.
    Domain(String, u16),
}

impl TargetAddr {
    /// The port.
    pub fn port(&self) -> u16 {
        match self {
            TargetAddr::Ip(sa) => sa.port(),
            TargetAddr::Domain(_, port) => *port,
        }
    }

    /// `0.0.0.0:0`, the address error replies carry.
    pub const fn unspecified() -> Self {
        TargetAddr::Ip(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0))
    }

    /// Whether the address is all zeros with port 0 (a UDP client that does not know its
    /// own address yet).
    pub fn is_unspecified(&self) -> bool {
        matches!(self, TargetAddr::Ip(sa) if sa.ip().is_unspecified() && sa.port() == 0)
    }

    /// Encoded length on the wire (type byte included).
    pub fn encoded_len(&self) -> usize {
        match self {
            TargetAddr::Ip(SocketAddr::V4(_)) => 1 + 4 + 2,
            TargetAddr::Ip(SocketAddr::V6(_)) => 1 + 16 + 2,
            TargetAddr::Domain(d, _) => 1 + 1 + d.len() + 2,
        }
    }

    /// Appends type, address and port. A name longer than 255 bytes cannot be encoded.
    pub fn encode_into(&self, out: &mut Vec<u8>) -> Result<(), SocksError> {
        match self {
            TargetAddr::Ip(SocketAddr::V4(sa)) => {
                out.push(ATYP_IPV4);
                out.extend_from_slice(&sa.ip().octets());
            }
            TargetAddr::Ip(SocketAddr::V6(sa)) => {
                out.push(ATYP_IPV6);
                out.extend_from_slice(&sa.ip().octets());
            }
            TargetAddr::Domain(d, _) => {
                let len = u8::try_from(d.len()).map_err(|_| SocksError::DomainTooLong(d.len()))?;
                out.push(ATYP_DOMAIN);
                out.push(len);
                out.extend_from_slice(d.as_bytes());
            }
        }
        out.extend_from_slice(&self.port().to_be_bytes());
        Ok(())
    }
}

impl fmt::Display for TargetAddr {
    /// `host:port`, IPv6 in brackets.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TargetAddr::Ip(sa) => write!(f, "{sa}"),
            TargetAddr::Domain(d, port) => write!(f, "{d}:{port}"),
        }
    }
}

impl From<SocketAddr> for TargetAddr {
    fn from(sa: SocketAddr) -> Self {
        TargetAddr::Ip(sa)
    }
}

/// Reply codes (RFC 1928 §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reply {
    /// 0x00 succeeded.
    Succeeded,
    /// 0x01 general SOCKS server failure.
    GeneralFailure,
    /// 0x02 connection not allowed by ruleset.
    NotAllowed,
    /// 0x03 network unreachable.
    NetworkUnreachable,
    /// 0x04 host unreachable.
    HostUnreachable,
    /// 0x05 connection refused.
    ConnectionRefused,
    /// 0x06 TTL expired.
    TtlExpired,
    /// 0x07 command not supported.
    CommandNotSupported,
    /// 0x08 address type not supported.
    AddressTypeNotSupported,
}

impl Reply {
    /// The wire code.
    pub const fn code(self) -> u8 {
        match self {
            Reply::Succeeded => 0,
            Reply::GeneralFailure => 1,
            Reply::NotAllowed => 2,
            Reply::NetworkUnreachable => 3,
            Reply::HostUnreachable => 4,
            Reply::ConnectionRefused => 5,
            Reply::TtlExpired => 6,
            Reply::CommandNotSupported => 7,
            Reply::AddressTypeNotSupported => 8,
        }
    }

    /// The reply for a wire code.
    pub const fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            0 => Reply::Succeeded,
            1 => Reply::GeneralFailure,
            2 => Reply::NotAllowed,
            3 => Reply::NetworkUnreachable,
            4 => Reply::HostUnreachable,
            5 => Reply::ConnectionRefused,
            6 => Reply::TtlExpired,
            7 => Reply::CommandNotSupported,
            8 => Reply::AddressTypeNotSupported,
            _ => return None,
        })
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match self {
            Reply::Succeeded => "succeeded",
            Reply::GeneralFailure => "general SOCKS server failure",
            Reply::NotAllowed => "connection not allowed by ruleset",
            Reply::NetworkUnreachable => "network unreachable",
            Reply::HostUnreachable => "host unreachable",
            Reply::ConnectionRefused => "connection refused",
            Reply::TtlExpired => "TTL expired",
            Reply::CommandNotSupported => "command not supported",
            Reply::AddressTypeNotSupported => "address type not supported",
        };
        write!(f, "{text} (0x{:02x})", self.code())
    }
}

/// The client's method greeting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Greeting {
    /// Offered authentication methods, in the client's order.
    pub methods: Vec<u8>,
}

impl Greeting {
    /// Whether "no authentication" was offered.
    pub fn offers_no_auth(&self) -> bool {
        self.methods.contains(&METHOD_NO_AUTH)
    }

    /// Wire bytes. At most 255 methods are encoded.
    pub fn encode(&self) -> Vec<u8> {
        let n = self.methods.len().min(255);
        let mut out = Vec::with_capacity(2 + n);
        out.push(VERSION);
        out.push(n as u8);
        out.extend_from_slice(self.methods.get(..n).unwrap_or_default());
        out
    }
}

/// A client request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// What to do.
    pub command: Command,
    /// Where (for UDP ASSOCIATE: where the client will send datagrams from, often zero).
    pub addr: TargetAddr,
}

impl Request {
    /// Wire bytes.
    pub fn encode(&self) -> Result<Vec<u8>, SocksError> {
        let mut out = Vec::with_capacity(3 + self.addr.encoded_len());
        out.extend_from_slice(&[VERSION, self.command.code(), 0]);
        self.addr.encode_into(&mut out)?;
        Ok(out)
    }
}

/// A server reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyMsg {
    /// The outcome.
    pub reply: Reply,
    /// The bound address (where the server connects from, or the UDP relay address).
    pub bound: TargetAddr,
}

impl ReplyMsg {
    /// An error reply (bound address `0.0.0.0:0`).
    pub fn error(reply: Reply) -> Self {
        ReplyMsg {
            reply,
            bound: TargetAddr::unspecified(),
        }
    }

    /// Wire bytes.
    pub fn encode(&self) -> Result<Vec<u8>, SocksError> {
        let mut out = Vec::with_capacity(3 + self.bound.encoded_len());
        out.extend_from_slice(&[VERSION, self.reply.code(), 0]);
        self.bound.encode_into(&mut out)?;
        Ok(out)
    }
}

/// A parsed UDP request header; the payload starts at `header_len`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UdpHeader {
    /// Fragment number; 0 = standalone datagram (the only kind this server relays).
    pub frag: u8,
    /// Destination (client → server) or source (server → client).
    pub addr: TargetAddr,
    /// Bytes before the payload.
    pub header_len: usize,
}

/// Encodes a UDP datagram with its SOCKS header.
pub fn encode_udp(addr: &TargetAddr, payload: &[u8]) -> Result<Vec<u8>, SocksError> {
    let mut out = Vec::with_capacity(3 + addr.encoded_len() + payload.len());
    out.extend_from_slice(&[0, 0, 0]);
    addr.encode_into(&mut out)?;
    out.extend_from_slice(payload);
    Ok(out)
}

/// What is wrong with received bytes. [`SocksError::reply`] says which reply code it earns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SocksError {
    /// The version byte is not 5.
    BadVersion(u8),
    /// An unknown command code.
    UnknownCommand(u8),
    /// The reserved byte(s) are not zero.
    BadReserved(u8),
    /// An unknown address type.
    UnknownAddressType(u8),
    /// A host name of length 0.
    EmptyDomain,
    /// A host name longer than [`MAX_DOMAIN`].
    DomainTooLong(usize),
    /// A host name with characters a DNS name cannot have (shown escaped).
    BadDomain(String),
    /// A reply code outside 0..=8 (client side).
    UnknownReply(u8),
    /// A UDP datagram that ends inside its header.
    Truncated {
        /// Bytes the header needs.
        needed: usize,
        /// Bytes the datagram has.
        got: usize,
    },
}

impl SocksError {
    /// The reply code a server sends for this error before closing.
    pub fn reply(&self) -> Reply {
        match self {
            SocksError::UnknownCommand(_) => Reply::CommandNotSupported,
            SocksError::UnknownAddressType(_) => Reply::AddressTypeNotSupported,
            _ => Reply::GeneralFailure,
        }
    }
}

impl fmt::Display for SocksError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SocksError::BadVersion(v) => write!(f, "not SOCKS version 5: version byte 0x{v:02x}"),
            SocksError::UnknownCommand(c) => write!(f, "unknown command 0x{c:02x}"),
            SocksError::BadReserved(r) => write!(f, "reserved byte is 0x{r:02x}, not 0"),
            SocksError::UnknownAddressType(t) => write!(f, "unknown address type 0x{t:02x}"),
            SocksError::EmptyDomain => f.write_str("empty host name"),
            SocksError::DomainTooLong(n) => {
                write!(f, "host name of {n} bytes is longer than {MAX_DOMAIN}")
            }
            SocksError::BadDomain(d) => write!(f, "invalid host name {d}"),
            SocksError::UnknownReply(r) => write!(f, "unknown reply code 0x{r:02x}"),
            SocksError::Truncated { needed, got } => {
                write!(
                    f,
                    "UDP datagram of {got} bytes ends inside its {needed}-byte header"
                )
            }
        }
    }
}

impl std::error::Error for SocksError {}

/// A decoded message and the number of bytes it used, or `None` when more bytes are needed.
pub type Decoded<T> = Result<Option<(T, usize)>, SocksError>;

/// Decodes a greeting from the start of `buf`.
pub fn decode_greeting(buf: &[u8]) -> Decoded<Greeting> {
    let Some(&version) = buf.first() else {
        return Ok(None);
    };
    if version != VERSION {
        return Err(SocksError::BadVersion(version));
    }
    let Some(&n) = buf.get(1) else {
        return Ok(None);
    };
    let end = 2 + usize::from(n);
    match buf.get(2..end) {
        Some(methods) => Ok(Some((
            Greeting {
                methods: methods.to_vec(),
            },
            end,
        ))),
        None => Ok(None),
    }
}

/// Decodes a request from the start of `buf`. Errors are reported as soon as the byte that
/// causes them has arrived, in wire order (version, command, reserved, address).
pub fn decode_request(buf: &[u8]) -> Decoded<Request> {
    decode_message(buf, |code| {
        Command::from_code(code).ok_or(SocksError::UnknownCommand(code))
    })
    .map(|o| o.map(|((command, addr), n)| (Request { command, addr }, n)))
}

/// Decodes a reply from the start of `buf` (the client side).
pub fn decode_reply(buf: &[u8]) -> Decoded<ReplyMsg> {
    decode_message(buf, |code| {
        Reply::from_code(code).ok_or(SocksError::UnknownReply(code))
    })
    .map(|o| o.map(|((reply, bound), n)| (ReplyMsg { reply, bound }, n)))
}

/// Requests and replies share a layout: version, code, reserved, address.
fn decode_message<T>(
    buf: &[u8],
    code: impl FnOnce(u8) -> Result<T, SocksError>,
) -> Decoded<(T, TargetAddr)> {
    let Some(&version) = buf.first() else {
        return Ok(None);
    };
    if version != VERSION {
        return Err(SocksError::BadVersion(version));
    }
    let Some(&c) = buf.get(1) else {
        return Ok(None);
    };
    let value = code(c)?;
    let Some(&rsv) = buf.get(2) else {
        return Ok(None);
    };
    if rsv != 0 {
        return Err(SocksError::BadReserved(rsv));
    }
    Ok(decode_addr(buf, 3)?.map(|(addr, end)| ((value, addr), end)))
}

/// Decodes type, address and port starting at `at`; returns the address and the end offset.
fn decode_addr(buf: &[u8], at: usize) -> Decoded<TargetAddr> {
    let Some(&atyp) = buf.get(at) else {
        return Ok(None);
    };
    let start = at + 1;
    let (ip_or_name, end) = match atyp {
        ATYP_IPV4 => {
            let Some(b) = buf.get(start..start + 4) else {
                return Ok(None);
            };
            let ip = Ipv4Addr::new(b[0], b[1], b[2], b[3]);
            (Ok(IpAddr::V4(ip)), start + 4)
        }
        ATYP_IPV6 => {
            let Some(b) = buf.get(start..start + 16) else {
                return Ok(None);
            };
            let mut octets = [0u8; 16];
            octets.copy_from_slice(b);
            (Ok(IpAddr::V6(Ipv6Addr::from(octets))), start + 16)
        }
        ATYP_DOMAIN => {
            let Some(&len) = buf.get(start) else {
                return Ok(None);
            };
            let len = usize::from(len);
            if len == 0 {
                return Err(SocksError::EmptyDomain);
            }
            if len > MAX_DOMAIN {
                return Err(SocksError::DomainTooLong(len));
            }
            let Some(name) = buf.get(start + 1..start + 1 + len) else {
                return Ok(None);
            };
            (Err(check_domain(name)?), start + 1 + len)
        }
        other => return Err(SocksError::UnknownAddressType(other)),
    };
    let Some(p) = buf.get(end..end + 2) else {
        return Ok(None);
    };
    let port = u16::from_be_bytes([p[0], p[1]]);
    let addr = match ip_or_name {
        Ok(ip) => TargetAddr::Ip(SocketAddr::new(ip, port)),
        // A client that passes an IP literal as a name (curl does for [::1]) means the IP.
        Err(name) => match parse_ip_literal(&name) {
            Some(ip) => TargetAddr::Ip(SocketAddr::new(ip, port)),
            None => TargetAddr::Domain(name, port),
        },
    };
    Ok(Some((addr, end + 2)))
}

fn parse_ip_literal(name: &str) -> Option<IpAddr> {
    let inner = name
        .strip_prefix('[')
        .and_then(|n| n.strip_suffix(']'))
        .unwrap_or(name);
    inner.parse().ok()
}

/// A host name must be DNS characters (letters, digits, `-`, `_`, `.`) or an IP literal
/// (digits, hex, `:`, brackets) so that it can travel inside a `target://` URL unchanged.
fn check_domain(name: &[u8]) -> Result<String, SocksError> {
    let ok = name.iter().all(|&b| {
        b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':' | b'[' | b']')
    });
    let text = String::from_utf8_lossy(name);
    if !ok {
        return Err(SocksError::BadDomain(format!("{:?}", text)));
    }
    let text = text.into_owned();
    if (text.contains([':', '[', ']'])) && parse_ip_literal(&text).is_none() {
        return Err(SocksError::BadDomain(format!("{text:?}")));
    }
    Ok(text)
}

/// Decodes the SOCKS header of a whole UDP datagram.
pub fn decode_udp(datagram: &[u8]) -> Result<UdpHeader, SocksError> {
    let truncated = |needed: usize| SocksError::Truncated {
        needed,
        got: datagram.len(),
    };
    let Some(head) = datagram.get(..4) else {
        return Err(truncated(4));
    };
    if head[0] != 0 || head[1] != 0 {
        return Err(SocksError::BadReserved(if head[0] != 0 {
            head[0]
        } else {
            head[1]
        }));
    }
    let frag = head[2];
    // The shortest address is a one-byte name: type, length, name, port.
    match decode_addr(datagram, 3)? {
        Some((addr, end)) => Ok(UdpHeader {
            frag,
            addr,
            header_len: end,
        }),
        None => Err(truncated(min_header_len(datagram))),
    }
}

/// How long the header of a truncated datagram would at least be (for the message).
fn min_header_len(datagram: &[u8]) -> usize {
    match datagram.get(3) {
        Some(&ATYP_IPV4) => 3 + 1 + 4 + 2,
        Some(&ATYP_IPV6) => 3 + 1 + 16 + 2,
        Some(&ATYP_DOMAIN) => 3 + 2 + usize::from(datagram.get(4).copied().unwrap_or(1)) + 2,
        _ => 4,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn v4(a: [u8; 4], port: u16) -> TargetAddr {
        TargetAddr::Ip(SocketAddr::from((a, port)))
    }

    #[test]
    fn greeting_exact_bytes() {
        assert_eq!(decode_greeting(&[5]), Ok(None));
        assert_eq!(decode_greeting(&[5, 2, 0]), Ok(None));
        assert_eq!(
            decode_greeting(&[5, 2, 0, 2, 9]),
            Ok(Some((
                Greeting {
                    methods: vec![0, 2]
                },
                4
            )))
        );
        assert_eq!(decode_greeting(&[4, 1, 0]), Err(SocksError::BadVersion(4)));
        let g = decode_greeting(&[5, 0]).unwrap().unwrap().0;
        assert!(!g.offers_no_auth());
        assert_eq!(g.encode(), vec![5, 0]);
    }

    #[test]
    fn request_exact_bytes() {
        let connect_v4 = [5, 1, 0, 1, 127, 0, 0, 1, 0x1f, 0x90];
        for cut in 0..connect_v4.len() {
            assert_eq!(decode_request(&connect_v4[..cut]), Ok(None), "cut {cut}");
        }
        assert_eq!(
            decode_request(&connect_v4),
            Ok(Some((
                Request {
                    command: Command::Connect,
                    addr: v4([127, 0, 0, 1], 8080)
                },
                10
            )))
        );
        let name = b"example.com";
        let mut connect_name = vec![5, 1, 0, 3, name.len() as u8];
        connect_name.extend_from_slice(name);
        connect_name.extend_from_slice(&[0, 80, 0xAA]);
        assert_eq!(
            decode_request(&connect_name),
            Ok(Some((
                Request {
                    command: Command::Connect,
                    addr: TargetAddr::Domain("example.com".into(), 80)
                },
                connect_name.len() - 1
            )))
        );
        let mut udp_v6 = vec![5, 3, 0, 4];
        udp_v6.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
        udp_v6.extend_from_slice(&[0, 53]);
        let (r, n) = decode_request(&udp_v6).unwrap().unwrap();
        assert_eq!(n, 22);
        assert_eq!(r.command, Command::UdpAssociate);
        assert_eq!(r.addr, TargetAddr::Ip("[::1]:53".parse().unwrap()));
    }

    #[test]
    fn request_errors_and_their_replies() {
        let cases: [(&[u8], SocksError, u8); 9] = [
            (&[4, 1, 0, 1], SocksError::BadVersion(4), 1),
            (&[5, 9], SocksError::UnknownCommand(9), 7),
            (&[5, 0, 0, 1], SocksError::UnknownCommand(0), 7),
            (&[5, 1, 1, 1], SocksError::BadReserved(1), 1),
            (&[5, 1, 0, 2, 0, 0], SocksError::UnknownAddressType(2), 8),
            (&[5, 1, 0, 3, 0, 0, 80], SocksError::EmptyDomain, 1),
            (&[5, 1, 0, 3, 254], SocksError::DomainTooLong(254), 1),
            (
                &[5, 1, 0, 3, 3, b'a', b' ', b'b', 0, 80],
                SocksError::BadDomain("\"a b\"".into()),
                1,
            ),
            (
                &[5, 1, 0, 3, 3, b'a', b':', b'b', 0, 80],
                SocksError::BadDomain("\"a:b\"".into()),
                1,
            ),
        ];
        for (bytes, err, code) in cases {
            let got = decode_request(bytes).unwrap_err();
            assert_eq!(got, err, "{bytes:?}");
            assert_eq!(got.reply().code(), code, "{bytes:?}");
        }
        // Bind parses (the server answers "not supported" itself).
        assert_eq!(
            decode_request(&[5, 2, 0, 1, 1, 2, 3, 4, 0, 1])
                .unwrap()
                .unwrap()
                .0
                .command,
            Command::Bind
        );
        // An IP literal sent as a name is the IP.
        let mut lit = vec![5, 1, 0, 3, 5];
        lit.extend_from_slice(b"[::1]");
        lit.extend_from_slice(&[0, 22]);
        assert_eq!(
            decode_request(&lit).unwrap().unwrap().0.addr,
            TargetAddr::Ip("[::1]:22".parse().unwrap())
        );
    }

    #[test]
    fn reply_exact_bytes() {
        let ok = ReplyMsg {
            reply: Reply::Succeeded,
            bound: v4([127, 0, 0, 1], 13491),
        };
        assert_eq!(ok.encode().unwrap(), [5, 0, 0, 1, 127, 0, 0, 1, 0x34, 0xb3]);
        assert_eq!(
            ReplyMsg::error(Reply::CommandNotSupported)
                .encode()
                .unwrap(),
            [5, 7, 0, 1, 0, 0, 0, 0, 0, 0]
        );
        assert_eq!(
            decode_reply(&[5, 9, 0, 1]),
            Err(SocksError::UnknownReply(9))
        );
    }

    #[test]
    fn udp_exact_bytes() {
        let d = encode_udp(&v4([10, 0, 0, 1], 53), b"hi").unwrap();
        assert_eq!(d, [0, 0, 0, 1, 10, 0, 0, 1, 0, 53, b'h', b'i']);
        let h = decode_udp(&d).unwrap();
        assert_eq!(h.frag, 0);
        assert_eq!(h.header_len, 10);
        assert_eq!(&d[h.header_len..], b"hi");
        assert_eq!(
            decode_udp(&[0, 0, 0, 1, 10]),
            Err(SocksError::Truncated { needed: 10, got: 5 })
        );
        assert_eq!(decode_udp(&[0, 1, 0, 1]), Err(SocksError::BadReserved(1)));
        assert_eq!(decode_udp(&[0, 0, 2, 1, 1, 2, 3, 4, 0, 1]).unwrap().frag, 2);
    }

    fn arb_addr() -> impl Strategy<Value = TargetAddr> {
        prop_oneof![
            (any::<IpAddr>(), any::<u16>())
                .prop_map(|(ip, port)| TargetAddr::Ip(SocketAddr::new(ip, port))),
            ("[a-z0-9][a-z0-9.-]{0,60}", any::<u16>()).prop_map(|(d, p)| TargetAddr::Domain(d, p)),
        ]
    }

    fn arb_command() -> impl Strategy<Value = Command> {
        prop_oneof![
            Just(Command::Connect),
            Just(Command::Bind),
            Just(Command::UdpAssociate)
        ]
    }

    proptest! {
        #[test]
        fn request_round_trips(command in arb_command(), addr in arb_addr(), tail in proptest::collection::vec(any::<u8>(), 0..8)) {
            let req = Request { command, addr };
            let mut bytes = req.encode().unwrap();
            let len = bytes.len();
            bytes.extend_from_slice(&tail);
            prop_assert_eq!(decode_request(&bytes), Ok(Some((req, len))));
            for cut in 0..len {
                prop_assert_eq!(decode_request(&bytes[..cut]), Ok(None));
            }
        }

        #[test]
        fn reply_round_trips(code in 0u8..=8, addr in arb_addr()) {
            let msg = ReplyMsg { reply: Reply::from_code(code).unwrap(), bound: addr };
            let bytes = msg.encode().unwrap();
            prop_assert_eq!(decode_reply(&bytes), Ok(Some((msg, bytes.len()))));
        }

        #[test]
        fn greeting_round_trips(methods in proptest::collection::vec(any::<u8>(), 0..=255)) {
            let g = Greeting { methods };
            let bytes = g.encode();
            prop_assert_eq!(decode_greeting(&bytes), Ok(Some((g, bytes.len()))));
        }

        #[test]
        fn udp_round_trips(addr in arb_addr(), payload in proptest::collection::vec(any::<u8>(), 0..64)) {
            let d = encode_udp(&addr, &payload).unwrap();
            let h = decode_udp(&d).unwrap();
            prop_assert_eq!(h.frag, 0);
            prop_assert_eq!(&h.addr, &addr);
            prop_assert_eq!(&d[h.header_len..], &payload[..]);
        }

        #[test]
        fn decoders_never_panic_and_stay_in_bounds(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            if let Ok(Some((_, n))) = decode_greeting(&bytes) { prop_assert!(n <= bytes.len() && n <= MAX_GREETING); }
            if let Ok(Some((_, n))) = decode_request(&bytes) { prop_assert!(n <= bytes.len() && n <= MAX_REQUEST); }
            if let Ok(Some((_, n))) = decode_reply(&bytes) { prop_assert!(n <= bytes.len()); }
            if let Ok(h) = decode_udp(&bytes) { prop_assert!(h.header_len <= bytes.len()); }
        }

        #[test]
        fn a_decoded_request_re_encodes_to_its_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..40)) {
            // Names that are IP literals are normalised, so compare only when the type byte
            // says IP or the name is not a literal.
            if let Ok(Some((req, n))) = decode_request(&bytes) {
                if bytes.get(3) != Some(&3) {
                    prop_assert_eq!(req.encode().unwrap(), bytes[..n].to_vec());
                }
            }
        }
    }
}
