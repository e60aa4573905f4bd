//! End-to-end: the whole network from the devnet launcher, real binaries on loopback, driven
//! with a real SOCKS client (curl when installed, and the launcher's own probe).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead as _, BufReader, Write as _};
use std::net::{SocketAddr, TcpListener};
use std::process::{Command, Stdio};
use std::time::Duration;
use wireleap_devnet::probe::http_via_socks;
use wireleap_devnet::{Devnet, Options};
use wireleap_e2e as harness;

/// A tiny HTTP server on 127.0.0.1 answering every GET with `body`; runs until the test ends.
fn web_server(body: Vec<u8>) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in l.incoming().take(1000) {
            let Ok(mut s) = conn else { continue };
            let body = body.clone();
            std::thread::spawn(move || {
                let mut r = BufReader::new(s.try_clone().unwrap());
                let mut line = String::new();
                while r.read_line(&mut line).map(|n| n > 2).unwrap_or(false) {
                    line.clear();
                }
                let _ = write!(
                    s,
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = s.write_all(&body);
            });
        }
    });
    addr
}

fn curl_available() -> bool {
    Command::new("curl")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn curl_via(socks: &str, url: &str) -> Vec<u8> {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "30", "--socks5-hostname", socks, url])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "curl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn client(net: &Devnet, args: &[&str], stdin: Option<&[u8]>) -> harness::Output {
    let bin = harness::binary("wireleap").unwrap();
    let mut cmd = Command::new(bin);
    cmd.arg("--home").arg(&net.info.client.home).args(args);
    match stdin {
        None => harness::run(&mut cmd, Duration::from_secs(30)).unwrap(),
        Some(input) => {
            let mut child = cmd
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            child.stdin.take().unwrap().write_all(input).unwrap();
            let out = child.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            harness::Output {
                status: out.status,
                stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            }
        }
    }
}

#[test]
fn traffic_through_one_and_three_hops_import_and_relay_expiry() {
    let scratch = tempfile::tempdir().unwrap();
    let socks_port = harness::free_port().unwrap();
    let net = Devnet::launch(&Options {
        socks_port: Some(socks_port),
        ..Options::new(scratch.path().join("net"))
    })
    .expect("the devnet comes up");
    let socks: SocketAddr = net.info.client.socks.parse().unwrap();

    // 1 MiB of random-looking bytes, fetched through the 3-hop circuit, arrives intact.
    let body: Vec<u8> = (0..(1u32 << 20))
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let web = web_server(body.clone());
    let (code, got) = http_via_socks(
        socks,
        "localhost",
        web.port(),
        "/x",
        Duration::from_secs(30),
    )
    .unwrap();
    assert_eq!(code, 200);
    assert!(got == body, "3 hops: body differs ({} bytes)", got.len());
    if curl_available() {
        let got = curl_via(
            &net.info.client.socks,
            &format!("http://localhost:{}/", web.port()),
        );
        assert!(got == body, "curl through 3 hops: body differs");
    } else {
        eprintln!(
            "curl is not installed: the curl half of this test used the built-in SOCKS client only"
        );
    }

    // UDP ASSOCIATE: a datagram to a UDP echo server on 127.0.0.1 goes through the 3-hop
    // circuit and its echo comes back.
    let echo = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let echo_addr = echo.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        for _ in 0..100 {
            let Ok((n, from)) = echo.recv_from(&mut buf) else {
                return;
            };
            let _ = echo.send_to(&buf[..n], from);
        }
    });
    let got = harness::wait_for(Duration::from_secs(30), "a UDP echo through 3 hops", || {
        wireleap_devnet::probe::udp_via_socks(
            socks,
            echo_addr,
            b"wireleap udp ping",
            Duration::from_secs(5),
        )
        .ok()
    })
    .unwrap();
    assert_eq!(got, b"wireleap udp ping");

    // The same through a 1-hop circuit, switched on the running client.
    let out = client(&net, &["config", "circuit.hops", "1"], None);
    assert_eq!(out.code(), Some(0), "{}", out.all());
    harness::wait_for(Duration::from_secs(20), "a page through 1 hop", || {
        http_via_socks(
            socks,
            "localhost",
            web.port(),
            "/y",
            Duration::from_secs(10),
        )
        .ok()
        .filter(|(c, b)| *c == 200 && *b == body)
    })
    .unwrap();

    // Import the spare access key from standard input; importing it again skips duplicates.
    let key = std::fs::read(&net.info.accesskeys).unwrap();
    let first = client(&net, &["import", "-"], Some(&key));
    let again = client(&net, &["import", "-"], Some(&key));
    assert!(
        again.all().to_lowercase().contains("duplicate"),
        "second import should warn about duplicates: {}\n(first: {})",
        again.all(),
        first.all()
    );

    // Every relay of the 3-hop circuit stored a sharetoken per connection it carried, and
    // the backing relay (in both circuits) at least two.
    for r in &net.info.relays {
        let api: SocketAddr = r.api.trim_start_matches("http://").parse().unwrap();
        let resp = harness::http_get(api, "/api/status", Duration::from_secs(5)).unwrap();
        assert_eq!(resp.status, 200, "{}", resp.text());
        let status: serde_json::Value = serde_json::from_slice(&resp.body).unwrap();
        let t = &status["sharetokens"];
        let total = ["pending", "accepted", "dropped"]
            .iter()
            .map(|k| t[k].as_u64().unwrap_or(0))
            .sum::<u64>();
        let want = if r.role == "backing" { 2 } else { 1 };
        assert!(
            total >= want,
            "{} relay stored {total} sharetokens: {t}",
            r.role
        );
    }

    // A relay killed with SIGKILL drops out of the directory after its TTL.
    let victim = net
        .info
        .relays
        .iter()
        .find(|r| r.role == "entropic")
        .unwrap();
    let pid = harness::read_pid_file(&victim.home.join("wireleap-relay.pid")).unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let dir: SocketAddr = net
        .info
        .directory
        .trim_start_matches("http://")
        .parse()
        .unwrap();
    harness::wait_until(
        Duration::from_secs(60),
        "the killed relay to expire",
        || wireleap_devnet::launch::listed_relays(dir).is_ok_and(|v| v.len() == 2),
    )
    .unwrap();
    drop(net);
    let leftover = harness::processes_mentioning(scratch.path());
    assert!(leftover.is_empty(), "processes left running: {leftover:?}");
}

/// Kills (SIGKILL) every process still mentioning the directory when dropped, so a failed
/// test leaves nothing behind.
struct KillMentioning(std::path::PathBuf);

impl Drop for KillMentioning {
    fn drop(&mut self) {
        for pid in harness::processes_mentioning(&self.0) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// Ctrl-C while the devnet is still starting its daemons ends the devnet and every daemon
/// (and the release server) it had started: nothing is left running.
#[test]
fn interrupt_during_start_up_leaves_no_process_behind() {
    let scratch = tempfile::tempdir().unwrap();
    let _cleanup = KillMentioning(scratch.path().to_path_buf());
    // Built beforehand, so what the interrupt lands in is the start-up, not cargo.
    harness::binaries(&wireleap_devnet::launch::BINARIES).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_wireleap-devnet"))
        .arg("--dir")
        .arg(scratch.path().join("net"))
        .arg("--socks-port")
        .arg(harness::free_port().unwrap().to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut devnet = harness::ProcessGuard::child(child);
    let stderr = devnet.child_mut().unwrap().stderr.take().unwrap();
    let (lines_tx, lines) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                return;
            }
        }
    });
    let mut seen = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    // The second relay: contract, directory, auth, ps-dummy, the release server and the
    // first relay are running by then.
    while !seen
        .iter()
        .any(|l: &String| l.contains("starting relay-entropic"))
    {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => seen.push(line),
            Err(_) => panic!(
                "the devnet never started its second relay:\n{}",
                seen.join("\n")
            ),
        }
    }
    let running: Vec<i32> = harness::processes_mentioning(scratch.path())
        .into_iter()
        .filter(|pid| *pid != devnet.id())
        .collect();
    assert!(
        running.len() >= 5,
        "daemons are running before the interrupt: {running:?}"
    );
    devnet.signal(nix::sys::signal::Signal::SIGINT).unwrap();
    let status = devnet.wait_timeout(Duration::from_secs(90)).unwrap();
    seen.extend(lines.try_iter());
    assert!(!status.success(), "an interrupted start-up is a failure");
    assert!(
        seen.iter().any(|l| l.contains("interrupted")),
        "the devnet says it was interrupted:\n{}",
        seen.join("\n")
    );
    let leftover = harness::processes_mentioning(scratch.path());
    assert!(
        leftover.is_empty(),
        "processes left running: {leftover:?}\n{}",
        seen.join("\n")
    );
}
