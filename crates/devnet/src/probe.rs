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
    let mut s = TcpStream::connect_timeout(&socks, timeout)
        .with_context(|| format!("connecting to the SOCKS port {socks}"))?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
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
    http_exchange(s, host, path)
}

/// GET `http://{addr}{path}` directly.
pub fn http_get(addr: SocketAddr, path: &str, timeout: Duration) -> Result<(u16, Vec<u8>)> {
    let s = TcpStream::connect_timeout(&addr, timeout)
        .with_context(|| format!("connecting to {addr}"))?;
    s.set_read_timeout(Some(timeout))?;
    http_exchange(s, &addr.to_string(), path)
}

fn http_exchange(mut s: TcpStream, host: &str, path: &str) -> Result<(u16, Vec<u8>)> {
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nUser-Agent: wireleap-devnet\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).context("reading the HTTP reply")?;
    let text_end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("HTTP reply without end of headers")?;
    let head = String::from_utf8_lossy(&raw[..text_end]);
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .context("HTTP reply without status code")?;
    Ok((code, raw[text_end + 4..].to_vec()))
}
