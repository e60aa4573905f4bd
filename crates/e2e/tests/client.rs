//! The `wireleap` binary from the command line: init, access key import (file, standard
//! input, duplicates, invalid files, plain-HTTP and foreign-contract refusals, a live
//! contract key mismatch), `accesskeys list`, exec scripts, config validation, and a running
//! client whose `status` says what is wrong (no access key, unreachable contract, empty or
//! stale whitelist) while its SOCKS port answers with the matching reply codes.
//!
//! The full network (contract, directory, relays, curl through 1 and 3 hops) is assembled
//! with the devnet; the client's data path is covered in process by crates/client/tests.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use wireleap_e2e::{
    binary, free_addr, free_port, read_pid_file, run, wait_until, DaemonGuard, Output,
    ProcessGuard, ScratchHome,
};

type TestResult = anyhow::Result<()>;

/// The contract key of the vectors (seed 02).
const CONTRACT_KEY: &str = "gTl3Dqh9F19Wo1Rmw0x-zMuNipG07jeiXfYPW4_Js5Q";
/// Another valid key (relay1 of the vectors, seed 01).
const OTHER_KEY: &str = "iojj3XQJ8ZX9UtstPLpdcspnCb8dlBIb83SIAbQPb1w";
/// A well-formed signature; nothing checks it while the contract is unreachable.
const SIG: &str =
    "FLiewgjYJ_9DcwOXOlFvx75kBXcfJpVdLMcCLFIHUy-iCdNpxevx7s5qIC8f7wCz71fsnTl1jKxd-fj8jYhFDw";

fn wl(home: &Path, args: &[&str]) -> anyhow::Result<Output> {
    run(
        Command::new(binary("wireleap")?)
            .arg("--home")
            .arg(home)
            .args(args),
        Duration::from_secs(60),
    )
}

/// Runs `wireleap` with `input` on standard input.
fn wl_stdin(home: &Path, args: &[&str], input: &str) -> anyhow::Result<Output> {
    let mut child = Command::new(binary("wireleap")?)
        .arg("--home")
        .arg(home)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut stdin = child
        .stdin
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stdin"))?;
    let out = child
        .stdout
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
    let err = child
        .stderr
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stderr"))?;
    let read = |mut r: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = r.read_to_string(&mut s);
            s
        })
    };
    let (out, err) = (read(Box::new(out)), read(Box::new(err)));
    let mut guard = ProcessGuard::child(child);
    stdin.write_all(input.as_bytes())?;
    drop(stdin);
    let status = guard.wait_timeout(Duration::from_secs(60))?;
    Ok(Output {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    })
}

/// One expiration for every pof of a test run: it is part of a pof's identity, so pofs
/// made at different seconds would not be duplicates.
fn far_future() -> i64 {
    static EXP: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    *EXP.get_or_init(|| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        now + 30 * 86_400
    })
}

/// An access key file with one dummy pof per nonce.
fn access_key(endpoint: &str, key: &str, nonces: &[&str]) -> String {
    let exp = far_future();
    let pofs: Vec<serde_json::Value> = nonces
        .iter()
        .map(|n| serde_json::json!({"type": "dummy", "expiration": exp, "nonce": n, "signature": SIG}))
        .collect();
    serde_json::json!({
        "version": "0.1.0",
        "contract": {"endpoint": endpoint, "public_key": key},
        "pofs": pofs,
    })
    .to_string()
}

/// A contract URL nothing listens on.
fn unreachable_contract() -> anyhow::Result<String> {
    Ok(format!("http://127.0.0.1:{}", free_port()?))
}

fn expect(out: &Output, code: i32, what: &str) -> TestResult {
    anyhow::ensure!(
        out.code() == Some(code),
        "{what}: expected exit {code}, got {out}"
    );
    Ok(())
}

fn pof_count(home: &ScratchHome) -> anyhow::Result<usize> {
    let v: serde_json::Value = serde_json::from_str(&home.read("pofs.json")?)?;
    Ok(v.as_array().map_or(0, Vec::len))
}

#[test]
fn init_writes_config_and_scripts() -> TestResult {
    let home = ScratchHome::new()?;
    expect(&wl(home.path(), &["init"])?, 0, "init")?;
    let config: serde_json::Value = serde_json::from_str(&home.read("config.json")?)?;
    assert_eq!(config["address_socks"], "127.0.0.1:13491");
    assert!(config["circuit"]["whitelist"].is_null(), "{config}");
    assert_eq!(config["circuit"]["hops"], 1);
    for s in ["curl", "git", "firefox", "chromium", "list"] {
        assert!(home.file(&format!("scripts/default/{s}")).is_file(), "{s}");
    }
    let list = wl(home.path(), &["exec", "list"])?;
    expect(&list, 0, "exec list")?;
    for s in ["chromium", "curl", "firefox", "git", "list"] {
        assert!(list.stdout.lines().any(|l| l == s), "{list}");
    }
    let nope = wl(home.path(), &["exec", "nope"])?;
    expect(&nope, 1, "exec of a missing script")?;
    assert!(nope.stderr.contains("no script"), "{nope}");
    // exec needs a running client.
    let curl = wl(home.path(), &["exec", "curl", "--version"])?;
    expect(&curl, 1, "exec without a running client")?;
    assert!(curl.stderr.contains("not running"), "{curl}");
    let help = wl(home.path(), &["--help"])?;
    for c in ["import", "accesskeys", "exec", "info", "circuit"] {
        assert!(
            help.stdout
                .lines()
                .any(|l| l.trim_start().starts_with(&format!("{c} "))),
            "{help}"
        );
    }
    Ok(())
}

#[test]
fn config_command_reads_and_sets_keys() -> TestResult {
    let home = ScratchHome::new()?;
    expect(&wl(home.path(), &["init"])?, 0, "init")?;
    let read = |key: &str| -> anyhow::Result<serde_json::Value> {
        let v: serde_json::Value = serde_json::from_str(&home.read("config.json")?)?;
        Ok(key.split('.').fold(v, |v, k| v[k].clone()))
    };
    expect(
        &wl(home.path(), &["config", "circuit.hops", "3"])?,
        0,
        "set hops",
    )?;
    assert_eq!(read("circuit.hops")?, 3);
    let get = wl(home.path(), &["config", "circuit.hops"])?;
    assert_eq!(get.stdout.trim(), "3", "{get}");
    let wl_a = "wireleap://a.example:1";
    let wl_b = "wireleap://b.example:2";
    expect(
        &wl(home.path(), &["config", "circuit.whitelist", wl_a, wl_b])?,
        0,
        "whitelist",
    )?;
    assert_eq!(read("circuit.whitelist")?, serde_json::json!([wl_a, wl_b]));
    expect(
        &wl(home.path(), &["config", "circuit.whitelist", "[]"])?,
        0,
        "empty whitelist",
    )?;
    assert_eq!(read("circuit.whitelist")?, serde_json::json!([]));
    expect(
        &wl(home.path(), &["config", "circuit.whitelist", "null"])?,
        0,
        "null whitelist",
    )?;
    assert!(read("circuit.whitelist")?.is_null());
    let bad = wl(home.path(), &["config", "circuit.hops", "0"])?;
    expect(&bad, 1, "hops 0")?;
    assert!(bad.stderr.contains("circuit.hops"), "{bad}");
    assert_eq!(read("circuit.hops")?, 3, "a refused change is not written");
    let unknown = wl(home.path(), &["config", "circuit.hop", "1"])?;
    expect(&unknown, 1, "unknown key")?;
    assert!(unknown.stderr.contains("no such config key"), "{unknown}");
    Ok(())
}

#[test]
fn config_problems_are_named() -> TestResult {
    let home = ScratchHome::new()?;
    home.write(
        "config.json",
        r#"{"circuit": {"hops": 0, "whitelist": ["not-an-address"]}, "address_socks": "nope"}"#,
    )?;
    let out = wl(home.path(), &["check-config"])?;
    expect(&out, 1, "check-config")?;
    for key in ["circuit.hops", "circuit.whitelist[0]", "address_socks"] {
        assert!(out.stderr.contains(key), "{key}: {out}");
    }
    home.write("config.json", r#"{"circuit": {"whitelist": []}}"#)?;
    expect(
        &wl(home.path(), &["check-config"])?,
        0,
        "an empty whitelist is valid config",
    )?;
    Ok(())
}

#[test]
fn import_file_stdin_duplicates_and_invalid() -> TestResult {
    let home = ScratchHome::new()?;
    expect(&wl(home.path(), &["init"])?, 0, "init")?;
    let contract = unreachable_contract()?;
    home.write(
        "key1.json",
        access_key(
            &contract,
            CONTRACT_KEY,
            &["000000000000000001", "000000000000000002"],
        ),
    )?;

    let first = wl(
        home.path(),
        &["import", &home.file("key1.json").display().to_string()],
    )?;
    expect(&first, 0, "import from a file")?;
    assert!(first.stdout.contains("imported 2"), "{first}");
    assert!(
        first.stderr.contains("unreachable"),
        "contract check postponed: {first}"
    );
    assert_eq!(pof_count(&home)?, 2);
    let config: serde_json::Value = serde_json::from_str(&home.read("config.json")?)?;
    assert_eq!(config["contract"], contract.as_str());

    // The same key again, from standard input: every pof is a duplicate, with a warning.
    let again = wl_stdin(home.path(), &["import", "-"], &home.read("key1.json")?)?;
    expect(&again, 0, "duplicate import from stdin")?;
    assert_eq!(
        again.stderr.matches("skipping duplicate").count(),
        2,
        "{again}"
    );
    assert!(again.stdout.contains("imported 0"), "{again}");
    assert_eq!(pof_count(&home)?, 2);

    // One new, one old, via a file:// URL.
    home.write(
        "key2.json",
        access_key(
            &contract,
            CONTRACT_KEY,
            &["000000000000000002", "000000000000000003"],
        ),
    )?;
    let url = format!("file://{}", home.file("key2.json").display());
    let mixed = wl(home.path(), &["accesskeys", "import", &url])?;
    expect(&mixed, 0, "mixed import")?;
    assert!(mixed.stdout.contains("imported 1"), "{mixed}");
    assert_eq!(
        mixed.stderr.matches("skipping duplicate").count(),
        1,
        "{mixed}"
    );
    assert_eq!(pof_count(&home)?, 3);

    let list = wl(home.path(), &["accesskeys", "list"])?;
    expect(&list, 0, "accesskeys list")?;
    let v: serde_json::Value = serde_json::from_str(&list.stdout)?;
    let arr = v.as_array().cloned().unwrap_or_default();
    assert_eq!(arr.len(), 3, "{list}");
    assert!(
        arr.iter()
            .all(|a| a["state"] == "inactive" && a["contract"] == contract.as_str()),
        "{list}"
    );

    // Invalid files are refused with the reason and change nothing.
    let refusals: [(&str, &str); 4] = [
        (
            r#"{"version":"0.1.0","contract":{"endpoint":"http://x"}}"#,
            "contract.public_key",
        ),
        (
            &access_key(&contract, CONTRACT_KEY, &["09"]).replace("0.1.0", "0.2.0"),
            "incompatible accesskey version 0.2.0",
        ),
        ("this is not json", "invalid accesskey"),
        (
            &access_key(&unreachable_contract()?, CONTRACT_KEY, &["09"]),
            "separate home",
        ),
    ];
    for (text, reason) in refusals {
        let out = wl_stdin(home.path(), &["import", "-"], text)?;
        expect(&out, 1, reason)?;
        assert!(out.stderr.contains(reason), "{reason}: {out}");
    }
    let http = wl(home.path(), &["import", "http://127.0.0.1:1/key.json"])?;
    expect(&http, 1, "plain http")?;
    assert!(http.stderr.contains("plain HTTP"), "{http}");
    let missing = wl(home.path(), &["import", "/nonexistent/key.json"])?;
    expect(&missing, 1, "missing file")?;
    assert!(missing.stderr.contains("cannot read"), "{missing}");
    // The pinned contract key: a file naming another key for the same contract is refused.
    let other = wl_stdin(
        home.path(),
        &["import", "-"],
        &access_key(&contract, OTHER_KEY, &["0a"]),
    )?;
    expect(&other, 1, "another contract key")?;
    assert!(other.stderr.contains("mismatch"), "{other}");
    assert_eq!(pof_count(&home)?, 3);
    Ok(())
}

/// Serves `GET /info` with a contract info naming `key`, until the test ends.
fn fake_contract(key: &'static str) -> anyhow::Result<SocketAddr> {
    let l = TcpListener::bind("127.0.0.1:0")?;
    let addr = l.local_addr()?;
    l.set_nonblocking(true)?;
    std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            let Ok((mut s, _)) = l.accept() else {
                std::thread::sleep(Duration::from_millis(10));
                continue;
            };
            let _ = s.set_nonblocking(false);
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let mut req = Vec::new();
            let mut buf = [0u8; 1024];
            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => req.extend_from_slice(&buf[..n]),
                }
            }
            let body = format!(
                r#"{{"pubkey":"{key}","version":"0.1.0","servicekey":{{"currency":"usd","value":"1","duration":"1h0m0s"}},"settlement":{{"submission_window":"1h0m0s"}},"payout":{{"endpoint":null,"type":""}},"directory":{{"endpoint":"http://127.0.0.1:1","public_key":"{key}"}},"metadata":{{}}}}"#
            );
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    Ok(addr)
}

#[test]
fn import_checks_the_live_contract_key() -> TestResult {
    let home = ScratchHome::new()?;
    expect(&wl(home.path(), &["init"])?, 0, "init")?;
    let addr = fake_contract(OTHER_KEY)?;
    let out = wl_stdin(
        home.path(),
        &["import", "-"],
        &access_key(&format!("http://{addr}"), CONTRACT_KEY, &["01"]),
    )?;
    expect(&out, 1, "key mismatch with the live contract")?;
    assert!(
        out.stderr.contains("mismatch") && out.stderr.contains(OTHER_KEY),
        "{out}"
    );
    assert!(!home.file("pofs.json").exists(), "nothing imported");
    // The right key imports, verified now.
    let ok = wl_stdin(
        home.path(),
        &["import", "-"],
        &access_key(&format!("http://{addr}"), OTHER_KEY, &["01"]),
    )?;
    expect(&ok, 0, "matching key")?;
    assert!(!ok.stdout.contains("not verified"), "{ok}");
    Ok(())
}

/// SOCKS CONNECT to 127.0.0.1:9; returns the reply code.
fn socks_reply(socks: SocketAddr) -> anyhow::Result<u8> {
    let mut s = TcpStream::connect_timeout(&socks, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(20)))?;
    s.write_all(&[5, 1, 0, 5, 1, 0, 1, 127, 0, 0, 1, 0, 9])?;
    let mut r = [0u8; 12];
    s.read_exact(&mut r)?;
    anyhow::ensure!(r[..2] == [5, 0] && r[2] == 5, "bad reply {r:?}");
    Ok(r[3])
}

fn status(home: &Path) -> anyhow::Result<Output> {
    wl(home, &["status"])
}

#[test]
fn running_client_says_what_is_wrong() -> TestResult {
    let home = ScratchHome::new()?;
    let mut guard = DaemonGuard::new(home.file("wireleap.pid"));
    expect(&wl(home.path(), &["init"])?, 0, "init")?;
    let (api, socks) = (free_addr()?, free_addr()?);
    let write_config = |extra: &str| -> TestResult {
        home.write(
            "config.json",
            format!(r#"{{"address": "{api}", "address_socks": "{socks}" {extra}}}"#),
        )?;
        Ok(())
    };
    write_config("")?;
    let start = wl(home.path(), &["start"])?;
    expect(&start, 0, "start")?;
    if let Some(pid) = read_pid_file(&home.file("wireleap.pid")) {
        guard.note(pid);
    }
    let st = status(home.path())?;
    expect(&st, 0, "status")?;
    assert!(
        st.stdout.contains("running") && st.stdout.contains("no access key imported"),
        "{st}"
    );
    assert_eq!(
        socks_reply(socks)?,
        1,
        "general failure without an access key"
    );

    // Import while running (contract unreachable): the client reloads and says so.
    let contract = unreachable_contract()?;
    let relay_port = free_port()?;
    let relay = format!("wireleap://127.0.0.1:{relay_port}");
    // A relay list as the directory would have sent it (the client keeps the last one).
    home.write(
        "relays.json",
        serde_json::json!({ relay.clone(): {
            "role": "backing", "address": relay, "pubkey": OTHER_KEY,
            "versions": {"software": "0.6.1", "client-relay": "0.2.0"}
        }})
        .to_string(),
    )?;
    let import = wl_stdin(
        home.path(),
        &["import", "-"],
        &access_key(&contract, CONTRACT_KEY, &["01"]),
    )?;
    expect(&import, 0, "import")?;
    assert!(import.stdout.contains("reload"), "{import}");
    let mut last = String::new();
    wait_until(
        Duration::from_secs(20),
        "status to report the failed sync",
        || {
            last = status(home.path()).map(|o| o.stdout).unwrap_or_default();
            last.contains("relay list sync failed")
        },
    )
    .map_err(|e| anyhow::anyhow!("{e}: {last}"))?;
    assert!(last.contains(&contract), "{last}");
    // The relay from the saved list is unreachable: network unreachable, and no pof spent.
    assert_eq!(socks_reply(socks)?, 3);
    assert_eq!(
        pof_count(&home)?,
        1,
        "no servicekey activated for a circuit that failed"
    );

    // An empty whitelist allows no relay: status and the SOCKS reply say so.
    let contract_key = format!(r#", "contract": "{contract}""#);
    write_config(&format!(
        r#"{contract_key}, "circuit": {{"whitelist": []}}"#
    ))?;
    expect(&wl(home.path(), &["reload"])?, 0, "reload")?;
    let st = status(home.path())?;
    assert!(st.stdout.contains("circuit.whitelist is empty"), "{st}");
    assert_eq!(socks_reply(socks)?, 2, "not allowed by ruleset");

    // A whitelist naming a relay the directory does not list: a warning, not a failure.
    write_config(&format!(
        r#"{contract_key}, "circuit": {{"whitelist": ["{relay}", "wireleap://gone.invalid:1"]}}"#
    ))?;
    expect(&wl(home.path(), &["reload"])?, 0, "reload")?;
    let st = status(home.path())?;
    assert!(
        st.stdout
            .contains("wireleap://gone.invalid:1 is not in the directory"),
        "{st}"
    );
    assert!(!st.stdout.contains("no circuit possible"), "{st}");

    // null whitelist: any relay; 2 hops need two relays, the list has one.
    write_config(&format!(
        r#"{contract_key}, "circuit": {{"whitelist": null, "hops": 2}}"#
    ))?;
    expect(&wl(home.path(), &["reload"])?, 0, "reload")?;
    let st = status(home.path())?;
    assert!(
        st.stdout.contains("need 2 hops, have 1 suitable relays"),
        "{st}"
    );
    assert!(
        !st.stdout.contains("last connection failed"),
        "stale errors are cleared on reload: {st}"
    );
    let info = wl(home.path(), &["info"])?;
    expect(&info, 0, "info")?;
    let v: serde_json::Value = serde_json::from_str(&info.stdout)?;
    assert_eq!(v["state"], "degraded");
    assert_eq!(v["hops"], 2);

    expect(&wl(home.path(), &["stop"])?, 0, "stop")?;
    let st = status(home.path())?;
    expect(&st, 1, "status after stop")?;
    assert!(st.stdout.contains("not running"), "{st}");
    Ok(())
}
