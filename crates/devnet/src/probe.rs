//! Small blocking clients the devnet uses to tell whether the network works: a SOCKSv5
//! CONNECT followed by an HTTP/1.1 GET, and a plain HTTP GET.

use anyhow::{bail, Context as _, Result};
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// GET `http://{host}:{port}{path}` through the SOCKSv5 proxy at `socks`, with the host name
/// resolved by the proxy (as `curl --socks5-hostname`). Returns the status code and body.
pub fn http_via_socks(
    socks: SocketAddr,
    host: &str,
    port: u16,
    path: &str,
    timeout: Duration,
) -> Result<(u16, Vec<u8>)> {
    let s = socks_connect(socks, host, port, timeout)?;
    http_exchange(s, host, path)
}

/// A SOCKSv5 CONNECT to `host:port` (resolved by the proxy) through `socks`; returns the
/// stream once the proxy reported success. Reads and writes on it time out after `timeout`.
pub fn socks_connect(
    socks: SocketAddr,
    host: &str,
    port: u16,
    timeout: Duration,
) -> Result<TcpStream> {
    let mut s = TcpStream::connect_timeout(&socks, timeout)
        .with_context(|| format!("connecting to the SOCKS port {socks}"))?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    let _ = s.set_nodelay(true);
    s.write_all(&[5, 1, 0])?;
    let mut reply = [0u8; 2];
    s.read_exact(&mut reply)
        .context("reading the SOCKS greeting reply")?;
    if reply != [5, 0] {
        bail!("SOCKS server refused no-auth: {reply:?}");
    }
    let host_len = u8::try_from(host.len()).context("host name longer than 255 bytes")?;
    let mut req = vec![5, 1, 0, 3, host_len];
    req.extend_from_slice(host.as_bytes());
    req.extend_from_slice(&port.to_be_bytes());
    s.write_all(&req)?;
    let mut head = [0u8; 4];
    s.read_exact(&mut head)
        .context("reading the SOCKS CONNECT reply")?;
    if head[1] != 0 {
        bail!("SOCKS CONNECT failed with reply code {}", head[1]);
    }
    let addr_len = match head[3] {
        1 => 4,
        4 => 16,
        3 => {
            let mut l = [0u8; 1];
            s.read_exact(&mut l)?;
            usize::from(l[0])
        }
        t => bail!("SOCKS reply with unknown address type {t}"),
    };
    let mut rest = vec![0u8; addr_len + 2];
    s.read_exact(&mut rest)?;
    Ok(s)
}

/// GET `http://{addr}{path}` directly.
pub fn http_get(addr: SocketAddr, path: &str, timeout: Duration) -> Result<(u16, Vec<u8>)> {
    reply_parts(wireleap_e2e::http_get(addr, path, timeout)?)
}

/// POST a JSON body to `http://{addr}{path}`; any status but 200 is an error.
pub fn post_json(addr: SocketAddr, path: &str, body: &str, timeout: Duration) -> Result<Vec<u8>> {
    let reply = wireleap_e2e::http_post(
        addr,
        path,
        &[("Content-Type", "application/json")],
        body.as_bytes(),
        timeout,
    )?;
    let (code, body) = reply_parts(reply)?;
    if code != 200 {
        bail!(
            "POST {path} answered {code}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    Ok(body)
}

fn http_exchange(mut s: TcpStream, host: &str, path: &str) -> Result<(u16, Vec<u8>)> {
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nUser-Agent: wireleap-devnet\r\n\r\n"
    )?;
    read_reply(s)
}

/// Reads a whole `Connection: close` reply (bounded) and parses it with the e2e harness.
fn read_reply(s: TcpStream) -> Result<(u16, Vec<u8>)> {
    let mut raw = Vec::new();
    s.take(MAX_REPLY)
        .read_to_end(&mut raw)
        .context("reading the HTTP reply")?;
    reply_parts(wireleap_e2e::parse_http_response(&raw)?)
}

/// Largest reply the probes read.
const MAX_REPLY: u64 = 256 << 20;

fn reply_parts(resp: wireleap_e2e::HttpResponse) -> Result<(u16, Vec<u8>)> {
    let chunked = resp
        .header("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
    let body = if chunked {
        dechunk(&resp.body)?
    } else {
        resp.body
    };
    Ok((resp.status, body))
}

fn dechunk(mut raw: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = raw
            .windows(2)
            .position(|w| w == b"\r\n")
            .context("bad chunked encoding")?;
        let size = usize::from_str_radix(String::from_utf8_lossy(&raw[..line_end]).trim(), 16)
            .context("bad chunk size")?;
        raw = &raw[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        if raw.len() < size + 2 {
            bail!("truncated chunk");
        }
        out.extend_from_slice(&raw[..size]);
        raw = &raw[size + 2..];
    }
}

/// Sends `payload` to the UDP service at `to` through the SOCKSv5 proxy's UDP ASSOCIATE and
/// returns the first datagram that comes back (the association's TCP connection is held
/// open meanwhile, as RFC 1928 requires).
pub fn udp_via_socks(
    socks: SocketAddr,
    to: SocketAddr,
    payload: &[u8],
    timeout: Duration,
) -> Result<Vec<u8>> {
    let SocketAddr::V4(target) = to else {
        bail!("only IPv4 targets are supported here, got {to}");
    };
    let mut ctl = TcpStream::connect_timeout(&socks, timeout)
        .with_context(|| format!("connecting to the SOCKS port {socks}"))?;
    ctl.set_read_timeout(Some(timeout))?;
    ctl.write_all(&[5, 1, 0])?;
    let mut reply = [0u8; 2];
    ctl.read_exact(&mut reply)?;
    if reply != [5, 0] {
        bail!("SOCKS server refused no-auth: {reply:?}");
    }
    ctl.write_all(&[5, 3, 0, 1, 0, 0, 0, 0, 0, 0])?;
    let mut head = [0u8; 4];
    ctl.read_exact(&mut head)
        .context("reading the UDP ASSOCIATE reply")?;
    if head[1] != 0 {
        bail!("SOCKS UDP ASSOCIATE failed with reply code {}", head[1]);
    }
    if head[3] != 1 {
        bail!(
            "UDP ASSOCIATE reply with address type {} (expected IPv4)",
            head[3]
        );
    }
    let mut bnd = [0u8; 6];
    ctl.read_exact(&mut bnd)?;
    let mut relay_ip = std::net::Ipv4Addr::new(bnd[0], bnd[1], bnd[2], bnd[3]);
    if relay_ip.is_unspecified() {
        relay_ip = match socks.ip() {
            std::net::IpAddr::V4(ip) => ip,
            std::net::IpAddr::V6(_) => std::net::Ipv4Addr::LOCALHOST,
        };
    }
    let relay = SocketAddr::from((relay_ip, u16::from_be_bytes([bnd[4], bnd[5]])));
    let udp = std::net::UdpSocket::bind("127.0.0.1:0")?;
    udp.set_read_timeout(Some(timeout))?;
    let mut dgram = vec![0, 0, 0, 1];
    dgram.extend_from_slice(&target.ip().octets());
    dgram.extend_from_slice(&target.port().to_be_bytes());
    dgram.extend_from_slice(payload);
    udp.send_to(&dgram, relay)?;
    let mut buf = vec![0u8; 65_536];
    let (n, _) = udp
        .recv_from(&mut buf)
        .context("waiting for the echoed datagram")?;
    if n < 10 || buf[3] != 1 {
        bail!("malformed SOCKS UDP datagram of {n} bytes");
    }
    drop(ctl);
    Ok(buf[10..n].to_vec())
}
