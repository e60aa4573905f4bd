//! Throughput through the SOCKS port against direct loopback, measured in the same run.
//!
//! A source server streams `WIRELEAP_BENCH_MB` MiB (default 256) to each connection. The
//! baseline reads it over a direct loopback TCP connection; the client cases read it through
//! the SOCKS server and the real dialer over 1 and 3 hops. The hops are tunnel servers built
//! from crates/net that verify every sharetoken with proto (tests/common), not the
//! wireleap-relay binary, which was not available when this was written. Also reports the
//! time from SOCKS connect to the first byte (circuit stream setup), median of 20.
//!
//! Run: `cargo bench -p wireleap --bench socks`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use wireleap::dialer::{Dialer, DialerConfig};
use wireleap::socks::{SocksConfig, SocksServer};
use wireleap_daemon::CancellationToken;
use wireleap_proto::relayentry::Role;

async fn read_all(mut s: TcpStream, expect: usize) -> usize {
    let mut buf = vec![0u8; 256 << 10];
    let mut total = 0;
    loop {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => total += n,
        }
        if total >= expect {
            break;
        }
    }
    total
}

struct Case {
    name: String,
    bytes: usize,
    secs: f64,
}

fn mbps(bytes: usize, secs: f64) -> f64 {
    bytes as f64 / secs / (1024.0 * 1024.0)
}

async fn socks_for(
    hops: usize,
    relays: &[&common::TestRelay],
    target_wait: Duration,
    stop: &CancellationToken,
) -> SocketAddr {
    let net = common::StaticNetwork::new(relays);
    let dialer = Dialer::new(
        net,
        DialerConfig {
            hops,
            whitelist: None,
            timeout: Duration::from_secs(10),
        },
    );
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let config = SocksConfig {
        target_wait,
        ..SocksConfig::default()
    };
    tokio::spawn(SocksServer::new(Arc::new(dialer), config).serve(l, stop.clone()));
    addr
}

fn main() {
    let mb: usize = std::env::var("WIRELEAP_BENCH_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    let total = mb << 20;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let stop = CancellationToken::new();
        let (source, _s) = common::tcp_source(total).await;
        let (echo, _e) = common::tcp_echo().await;
        let fronting = common::relay(101, Role::Fronting).await;
        let entropic = common::relay(102, Role::Entropic).await;
        let backing = common::relay(103, Role::Backing).await;
        let wait = SocksConfig::default().target_wait;
        let one_hop = socks_for(1, &[&backing], wait, &stop).await;
        let three_hops = socks_for(3, &[&fronting, &entropic, &backing], wait, &stop).await;
        // The 0.1 behaviour for comparison: wait 100 ms for the target's first bytes.
        let old_wait = Duration::from_millis(100);
        let one_hop_old = socks_for(1, &[&backing], old_wait, &stop).await;
        let three_hops_old =
            socks_for(3, &[&fronting, &entropic, &backing], old_wait, &stop).await;

        let mut cases = Vec::new();
        for round in 0..2 {
            // Round 0 warms up connections and caches; only round 1 is reported.
            let t = Instant::now();
            let n = read_all(TcpStream::connect(source).await.unwrap(), total).await;
            let direct = Case { name: "direct loopback".into(), bytes: n, secs: t.elapsed().as_secs_f64() };
            let t = Instant::now();
            let n = read_all(common::socks_open(one_hop, source).await, total).await;
            let one = Case { name: "SOCKS, 1 hop".into(), bytes: n, secs: t.elapsed().as_secs_f64() };
            let t = Instant::now();
            let n = read_all(common::socks_open(three_hops, source).await, total).await;
            let three = Case { name: "SOCKS, 3 hops".into(), bytes: n, secs: t.elapsed().as_secs_f64() };
            if round == 1 {
                cases = vec![direct, one, three];
            }
        }
        let base = mbps(cases[0].bytes, cases[0].secs);
        println!("download of {mb} MiB per case (bytes/s through the SOCKS port vs direct, same run)");
        for c in &cases {
            let rate = mbps(c.bytes, c.secs);
            println!(
                "  {:<16} {:>9.1} MiB/s  {:>6.3} s  {:>5.1}% of direct  ({} bytes)",
                c.name,
                rate,
                c.secs,
                100.0 * rate / base,
                c.bytes
            );
            assert_eq!(c.bytes, total, "{} moved every byte", c.name);
        }

        // Stream setup: SOCKS connect to the first echoed byte. The echo target waits for
        // the client, so with a target_wait the reply comes only after that wait.
        for (name, socks, wait) in [
            ("1 hop", one_hop, wait),
            ("3 hops", three_hops, wait),
            ("1 hop", one_hop_old, old_wait),
            ("3 hops", three_hops_old, old_wait),
        ] {
            let mut times = Vec::new();
            for _ in 0..20 {
                let t = Instant::now();
                let mut c = common::socks_open(socks, echo).await;
                c.write_all(b"x").await.unwrap();
                let mut b = [0u8; 1];
                c.read_exact(&mut b).await.unwrap();
                times.push(t.elapsed());
            }
            times.sort();
            println!(
                "  setup {name:<7} median {:>7.2} ms (SOCKS connect to first echoed byte, target_wait {} ms)",
                times[10].as_secs_f64() * 1000.0,
                wait.as_millis()
            );
        }
        stop.cancel();
    });
}
