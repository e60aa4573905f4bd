//! The data path (client.md §9, protocol.md §14): opening a stream to a target through the
//! current circuit.
//!
//! Hop 1 is one TLS connection (pinned to hop 1's key from the signed relay list) carrying
//! an HTTP/2 session that every stream shares. Each stream is a PUT whose `wl-payload` asks
//! hop 1 to CONNECT to hop 2's address (or to `target://host:port` on the last hop), paid by
//! a fresh sharetoken for hop 1. For each further hop a new TLS session (pinned to that
//! hop's key) runs inside the previous stream, a new HTTP/2 session inside that, and the next
//! PUT inside that. The innermost stream is what the caller gets.
//!
//! The circuit is chosen on first use and kept until it fails: a first-hop connect failure,
//! or a relay-originated status (origin ≠ `target`, code ≠ 400) from one of its relays,
//! makes the next stream choose a new one. Errors carry the SOCKS reply code they map to.

use crate::circuit::{self, CircuitError, Hop};
use crate::servicekey::{now, ActiveKey};
use crate::socks::server::{io_reply, BoxStream, ConnectError, Connector, ProxyStream};
use crate::socks::{Reply, TargetAddr};
use futures_util::future::BoxFuture;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use wireleap_net::tls;
use wireleap_net::tunnel::{self, Session, SessionConfig, StatusSlot, TunnelStream};
use wireleap_proto::address::{Address, Host};
use wireleap_proto::keys::PublicKey;
use wireleap_proto::nonce;
use wireleap_proto::relaylist::RelayList;
use wireleap_proto::sharetoken::Sharetoken;
use wireleap_proto::status::{Status, ORIGIN_TARGET};
use wireleap_proto::wl_payload::{Protocol, WlPayload};

/// What the dialer needs from the rest of the client: a servicekey, the relay list, and
/// someone to tell when the network looks different from what the list says.
pub trait Network: Send + Sync + 'static {
    /// The servicekey new streams pay with.
    fn servicekey(&self) -> BoxFuture<'_, Result<Arc<ActiveKey>, DialError>>;
    /// The current verified relay list.
    fn relays(&self) -> Result<Arc<RelayList>, DialError>;
    /// A circuit failed because of a relay: the list may be stale.
    fn circuit_failed(&self) {}
}

/// Why a stream could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DialError {
    /// No contract is configured.
    #[error("no access key imported: run `wireleap import FILE` (or `-` for standard input)")]
    NoContract,
    /// No servicekey could be had.
    #[error("no servicekey: {0}")]
    NoServicekey(String),
    /// No relay list is available yet.
    #[error("no relay list: {0}")]
    NoRelays(String),
    /// No circuit can be built from the list.
    #[error(transparent)]
    Circuit(#[from] CircuitError),
    /// Hop 1 could not be reached.
    #[error("cannot connect to the first relay {address}: {reason}")]
    FirstHop {
        /// Its address.
        address: String,
        /// What failed.
        reason: String,
    },
    /// A further hop could not be set up (TLS or HTTP/2 inside the previous one).
    #[error("cannot set up hop {index} ({address}): {reason}")]
    Hop {
        /// 1-based hop number.
        index: usize,
        /// Its address.
        address: String,
        /// What failed.
        reason: String,
    },
    /// A relay or the target refused, with the status it sent.
    #[error("refused by {}: {status}", origin_name(.status))]
    Refused {
        /// The status object.
        status: Status,
    },
    /// The target cannot be written as a `target://` address.
    #[error("invalid target {0}")]
    BadTarget(String),
}

fn origin_name(s: &Status) -> String {
    match s.origin.as_deref() {
        Some(ORIGIN_TARGET) => "the target".into(),
        Some(o) => format!("relay {o}"),
        None => "the circuit".into(),
    }
}

impl DialError {
    /// The SOCKS reply this error earns.
    pub fn reply(&self) -> Reply {
        match self {
            DialError::Circuit(CircuitError::EmptyWhitelist) => Reply::NotAllowed,
            DialError::NoRelays(_)
            | DialError::Circuit(_)
            | DialError::FirstHop { .. }
            | DialError::Hop { .. } => Reply::NetworkUnreachable,
            DialError::Refused { status } => status_reply(status),
            DialError::BadTarget(_) => Reply::HostUnreachable,
            DialError::NoContract | DialError::NoServicekey(_) => Reply::GeneralFailure,
        }
    }
}

/// The SOCKS reply for a status a relay or the target sent.
pub fn status_reply(status: &Status) -> Reply {
    let cause = status
        .cause
        .as_deref()
        .unwrap_or(&status.description)
        .to_ascii_lowercase();
    if status.origin.as_deref() == Some(ORIGIN_TARGET) {
        return match status.code {
            400 | 403 => Reply::NotAllowed,
            408 => Reply::HostUnreachable,
            _ if cause.contains("refused") => Reply::ConnectionRefused,
            _ if cause.contains("network is unreachable") => Reply::NetworkUnreachable,
            _ => Reply::HostUnreachable,
        };
    }
    match status.code {
        402 | 403 => Reply::NotAllowed,
        408 | 410 | 502 | 503 | 504 => Reply::NetworkUnreachable,
        _ => Reply::GeneralFailure,
    }
}

/// Settings taken from the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DialerConfig {
    /// Relays per circuit.
    pub hops: usize,
    /// `circuit.whitelist`.
    pub whitelist: Option<Vec<String>>,
    /// Per-step timeout (TCP connect, TLS, HTTP/2 handshake, stream open).
    pub timeout: Duration,
}

/// A circuit in use.
#[derive(Debug)]
pub struct ActiveCircuit {
    /// Distinguishes circuits (for resets that race with a rebuild).
    pub id: u64,
    /// The relays, first hop first.
    pub hops: Vec<Hop>,
    /// When it was chosen.
    pub since: SystemTime,
}

#[derive(Default)]
struct State {
    circuit: Option<Arc<ActiveCircuit>>,
    session: Option<Arc<Session>>,
}

/// Opens streams through circuits.
pub struct Dialer {
    net: Arc<dyn Network>,
    config: Mutex<DialerConfig>,
    state: Mutex<State>,
    connecting: tokio::sync::Mutex<()>,
    next_id: AtomicU64,
    last_error: Mutex<Option<(SystemTime, String)>>,
}

impl std::fmt::Debug for Dialer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dialer").finish_non_exhaustive()
    }
}

impl Dialer {
    /// A dialer over `net`.
    pub fn new(net: Arc<dyn Network>, config: DialerConfig) -> Arc<Self> {
        Arc::new(Dialer {
            net,
            config: Mutex::new(config),
            state: Mutex::new(State::default()),
            connecting: tokio::sync::Mutex::new(()),
            next_id: AtomicU64::new(1),
            last_error: Mutex::new(None),
        })
    }

    /// Applies new settings; a change of shape or whitelist drops the circuit.
    pub fn set_config(&self, config: DialerConfig) {
        if let Ok(mut c) = self.config.lock() {
            if *c != config {
                *c = config;
                drop(c);
                self.reset(None, "configuration changed");
                // An error under the old settings says nothing about the new ones.
                self.record(None);
            }
        }
    }

    fn config(&self) -> Option<DialerConfig> {
        self.config.lock().ok().map(|c| c.clone())
    }

    /// The circuit in use, if any.
    pub fn circuit(&self) -> Option<Arc<ActiveCircuit>> {
        self.state.lock().ok().and_then(|s| s.circuit.clone())
    }

    /// The last failure to open a stream (cleared by the next success).
    pub fn last_error(&self) -> Option<(SystemTime, String)> {
        self.last_error.lock().ok().and_then(|e| e.clone())
    }

    /// Drops the circuit (only if it is `id`, when given) so the next stream chooses anew.
    pub fn reset(&self, id: Option<u64>, reason: &str) {
        if let Ok(mut s) = self.state.lock() {
            let matches = match (&s.circuit, id) {
                (Some(c), Some(id)) => c.id == id,
                (Some(_), None) => true,
                (None, _) => false,
            };
            if matches {
                tracing::info!(%reason, "circuit dropped; the next connection builds a new one");
                *s = State::default();
            }
        }
    }

    fn record(&self, err: Option<&DialError>) {
        if let Ok(mut e) = self.last_error.lock() {
            *e = err.map(|e| (SystemTime::now(), e.to_string()));
        }
    }

    /// Opens a stream to `target` over `protocol` through the circuit.
    pub async fn open(
        self: &Arc<Self>,
        protocol: Protocol,
        target: &TargetAddr,
    ) -> Result<CircuitStream, DialError> {
        let result = self.open_inner(protocol, target).await;
        self.record(result.as_ref().err());
        result
    }

    async fn open_inner(
        self: &Arc<Self>,
        protocol: Protocol,
        target: &TargetAddr,
    ) -> Result<CircuitStream, DialError> {
        let remote = target_address(target)?;
        // The circuit comes first: a whitelist or relay problem should not spend a pof.
        let mut key: Option<Arc<ActiveKey>> = None;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (circuit, session) = self.session().await;
            let (circuit, session) = match (circuit, session) {
                (Ok(c), Ok(s)) => (c, s),
                (Err(e), _) | (_, Err(e)) => {
                    if attempt < 2 && matches!(e, DialError::FirstHop { .. }) {
                        continue;
                    }
                    return Err(e);
                }
            };
            let key = match &key {
                Some(k) => k.clone(),
                None => key.insert(self.net.servicekey().await?).clone(),
            };
            match self
                .open_on(&circuit, &session, protocol, &remote, &key)
                .await
            {
                Ok(stream) => return Ok(stream),
                Err(e) => {
                    let relay_fault = match &e {
                        DialError::Refused { status } => is_circuit_fault(status, &circuit.hops),
                        DialError::Hop { .. } => true,
                        _ => false,
                    };
                    if relay_fault {
                        self.reset(Some(circuit.id), &e.to_string());
                        self.net.circuit_failed();
                        if attempt < 2 {
                            continue;
                        }
                    }
                    return Err(e);
                }
            }
        }
    }

    /// The circuit and its hop-1 session, building or reconnecting as needed. Returns the
    /// two results apart so the caller can tell a choice failure from a connect failure.
    async fn session(
        &self,
    ) -> (
        Result<Arc<ActiveCircuit>, DialError>,
        Result<Arc<Session>, DialError>,
    ) {
        if let Some((c, s)) = self.ready() {
            return (Ok(c), Ok(s));
        }
        let _one = self.connecting.lock().await;
        if let Some((c, s)) = self.ready() {
            return (Ok(c), Ok(s));
        }
        let Some(config) = self.config() else {
            return (
                Err(DialError::NoRelays("dialer state poisoned".into())),
                Err(DialError::NoRelays("dialer state poisoned".into())),
            );
        };
        let existing = self.circuit();
        let circuit = match existing {
            Some(c) => c,
            None => match self.choose(&config) {
                Ok(c) => c,
                Err(e) => {
                    let again = DialError::NoRelays(e.to_string());
                    return (Err(e), Err(again));
                }
            },
        };
        let Some(first) = circuit.hops.first() else {
            return (
                Err(DialError::Circuit(CircuitError::NoHops)),
                Err(DialError::Circuit(CircuitError::NoHops)),
            );
        };
        match connect_first(first, config.timeout).await {
            Ok(session) => {
                let session = Arc::new(session);
                if let Ok(mut s) = self.state.lock() {
                    s.circuit = Some(circuit.clone());
                    s.session = Some(session.clone());
                }
                (Ok(circuit), Ok(session))
            }
            Err(e) => {
                // A relay that cannot be reached is not worth keeping (client.md §13.3).
                tracing::warn!(relay = %first.address, error = %e, "first hop unreachable");
                if let Ok(mut s) = self.state.lock() {
                    *s = State::default();
                }
                self.net.circuit_failed();
                (Ok(circuit), Err(e))
            }
        }
    }

    fn ready(&self) -> Option<(Arc<ActiveCircuit>, Arc<Session>)> {
        let s = self.state.lock().ok()?;
        match (&s.circuit, &s.session) {
            (Some(c), Some(sess)) if !sess.is_closed() => Some((c.clone(), sess.clone())),
            _ => None,
        }
    }

    fn choose(&self, config: &DialerConfig) -> Result<Arc<ActiveCircuit>, DialError> {
        let relays = self.net.relays()?;
        let choice = circuit::choose(
            &relays,
            config.hops,
            config.whitelist.as_deref(),
            &mut rand::rngs::OsRng,
        )?;
        for missing in &choice.missing_whitelisted {
            tracing::warn!(relay = %missing, "whitelisted relay is not in the directory's list; skipped");
        }
        let circuit = Arc::new(ActiveCircuit {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            hops: choice.hops,
            since: SystemTime::now(),
        });
        let path: Vec<String> = circuit
            .hops
            .iter()
            .map(|h| format!("{} {}", h.role, h.address))
            .collect();
        tracing::info!(circuit = circuit.id, hops = %path.join(" -> "), "circuit chosen");
        Ok(circuit)
    }

    async fn open_on(
        self: &Arc<Self>,
        circuit: &Arc<ActiveCircuit>,
        session: &Session,
        protocol: Protocol,
        remote: &Address,
        key: &ActiveKey,
    ) -> Result<CircuitStream, DialError> {
        let timeout = self
            .config()
            .map(|c| c.timeout)
            .unwrap_or(Duration::from_secs(5));
        let hops = &circuit.hops;
        let payload = |i: usize| -> Result<String, DialError> {
            let hop = &hops[i];
            let (proto, next) = match hops.get(i + 1) {
                Some(next) => (Protocol::Tcp, next.address.clone()),
                None => (protocol, remote.clone()),
            };
            let token = Sharetoken::new_signed(
                &key.key.keypair,
                key.key.contract.clone(),
                hop.pubkey,
                now(),
                nonce::generate(32),
            );
            Ok(WlPayload::connect(proto, next, token).to_header_value())
        };
        let mut slots: Vec<(PublicKey, StatusSlot)> = Vec::with_capacity(hops.len());
        let first = &hops[0];
        let mut stream = session
            .open(&first.address.tunnel_url(), payload(0)?.as_bytes())
            .await
            .map_err(|e| DialError::Hop {
                index: 1,
                address: first.address.to_string(),
                reason: e.to_string(),
            })?;
        slots.push((first.pubkey, stream.status_slot()));
        for (i, hop) in hops.iter().enumerate().skip(1) {
            let hop_err =
                |reason: String, slots: &[(PublicKey, StatusSlot)]| match refused_status(slots) {
                    Some(status) => DialError::Refused { status },
                    None => DialError::Hop {
                        index: i + 1,
                        address: hop.address.to_string(),
                        reason,
                    },
                };
            let tls = match tls::dial_tls(stream, None, Some(hop.pubkey.0), timeout).await {
                Ok(t) => t,
                Err(e) => return Err(hop_err(format!("TLS: {e}"), &slots)),
            };
            let inner = match Session::handshake(tls, inner_session_config(timeout)).await {
                Ok(s) => s,
                Err(e) => return Err(hop_err(format!("HTTP/2: {e}"), &slots)),
            };
            stream = match inner
                .open(&hop.address.tunnel_url(), payload(i)?.as_bytes())
                .await
            {
                Ok(s) => s,
                Err(e) => return Err(hop_err(e.to_string(), &slots)),
            };
            slots.push((hop.pubkey, stream.status_slot()));
        }
        Ok(CircuitStream {
            inner: stream,
            slots,
            circuit: circuit.clone(),
            dialer: self.clone(),
            reported: false,
        })
    }
}

impl Connector for Arc<Dialer> {
    fn connect(
        &self,
        protocol: Protocol,
        target: TargetAddr,
    ) -> BoxFuture<'static, Result<BoxStream, ConnectError>> {
        let dialer = self.clone();
        Box::pin(async move {
            match dialer.open(protocol, &target).await {
                Ok(s) => Ok(Box::new(s) as BoxStream),
                Err(e) => Err(ConnectError::new(e.reply(), e.to_string())),
            }
        })
    }
}

/// `target://host:port` for a SOCKS destination.
pub fn target_address(target: &TargetAddr) -> Result<Address, DialError> {
    let (host, port) = match target {
        TargetAddr::Ip(SocketAddr::V4(sa)) => (Host::Ipv4(*sa.ip()), sa.port()),
        TargetAddr::Ip(SocketAddr::V6(sa)) => (Host::Ipv6(*sa.ip()), sa.port()),
        TargetAddr::Domain(d, port) => (
            Host::parse(d).map_err(|e| DialError::BadTarget(e.to_string()))?,
            *port,
        ),
    };
    Address::target(&host, port).map_err(|e| DialError::BadTarget(e.to_string()))
}

/// A relay status that should make the client leave this circuit: a circuit error
/// (origin ≠ target, code ≠ 400) from one of its relays.
fn is_circuit_fault(status: &Status, hops: &[Hop]) -> bool {
    status.is_circuit_error()
        && status
            .origin
            .as_deref()
            .is_some_and(|o| hops.iter().any(|h| h.pubkey.to_b64() == o))
}

/// The first status any hop ended with, parsed (unparsable values are reported as a 502 of
/// unknown origin).
fn refused_status(slots: &[(PublicKey, StatusSlot)]) -> Option<Status> {
    slots.iter().find_map(|(_, slot)| {
        let value = slot.get()?;
        Some(Status::from_header(value).unwrap_or_else(|_| {
            Status::new(502, "gateway is unreachable or down").with_cause(value.to_string())
        }))
    })
}

/// TCP, TLS pinned to hop 1's key, HTTP/2.
async fn connect_first(hop: &Hop, timeout: Duration) -> Result<Session, DialError> {
    let fail = |reason: String| DialError::FirstHop {
        address: hop.address.to_string(),
        reason,
    };
    let tcp = tls::dial_tcp(&hop.address.host_port(), timeout)
        .await
        .map_err(|e| fail(e.to_string()))?;
    // SNI only for names: fronting relays behind a web server need it; IPs never carry it.
    let sni = match hop.address.host() {
        Host::Domain(d) => Some(d.clone()),
        Host::Ipv4(ip) => Some(ip.to_string()),
        Host::Ipv6(ip) => Some(ip.to_string()),
    };
    let tls = tls::dial_tls(tcp, sni.as_deref(), Some(hop.pubkey.0), timeout)
        .await
        .map_err(|e| fail(format!("TLS: {e}")))?;
    let config = SessionConfig {
        handshake_timeout: timeout,
        open_timeout: timeout,
        response_timeout: RESPONSE_TIMEOUT,
        ..SessionConfig::default()
    };
    Session::handshake(tls, config)
        .await
        .map_err(|e| fail(format!("HTTP/2: {e}")))
}

/// How long a stream's first read waits for the relay's response headers. Relays send them
/// once the next hop or target is dialed, so this bounds a stuck dial, not idle targets.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);

fn inner_session_config(timeout: Duration) -> SessionConfig {
    SessionConfig {
        handshake_timeout: timeout,
        open_timeout: timeout,
        response_timeout: RESPONSE_TIMEOUT,
        // The outer session already detects a dead first hop; pings inside every nested
        // session would only add traffic.
        keepalive: None,
        ..SessionConfig::default()
    }
}

/// A stream through a circuit: the innermost tunnel stream plus what is needed to
/// attribute its failure to a hop.
pub struct CircuitStream {
    inner: TunnelStream,
    slots: Vec<(PublicKey, StatusSlot)>,
    circuit: Arc<ActiveCircuit>,
    dialer: Arc<Dialer>,
    reported: bool,
}

impl std::fmt::Debug for CircuitStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CircuitStream")
            .field("circuit", &self.circuit.id)
            .finish_non_exhaustive()
    }
}

impl CircuitStream {
    /// The status the stream ended with, if any. Outer hops are looked at first: when one
    /// fails it takes the inner ones down with it, so its status is the cause.
    pub fn status(&self) -> Option<Status> {
        refused_status(&self.slots)
    }

    fn on_failure(&mut self, err: &io::Error) {
        if self.reported {
            return;
        }
        self.reported = true;
        let status = tunnel::status_of(err)
            .and_then(|s| Status::from_header(s).ok())
            .or_else(|| self.status());
        match status {
            Some(s) if is_circuit_fault(&s, &self.circuit.hops) => {
                tracing::info!(circuit = self.circuit.id, status = %s, "circuit error reported by a relay");
                self.dialer.reset(Some(self.circuit.id), &s.to_string());
                self.dialer.net.circuit_failed();
            }
            Some(s) => tracing::debug!(status = %s, "stream ended with a status"),
            None => tracing::debug!(error = %err, "stream ended with an error"),
        }
    }
}

impl ProxyStream for CircuitStream {
    fn failure_reply(&self, err: &io::Error) -> Reply {
        let status = tunnel::status_of(err)
            .and_then(|s| Status::from_header(s).ok())
            .or_else(|| self.status());
        match status {
            Some(s) => status_reply(&s),
            None => io_reply(err),
        }
    }

    fn poll_established(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.inner.poll_established(cx) {
            Poll::Ready(Err(e)) => {
                self.on_failure(&e);
                Poll::Ready(Err(e))
            }
            other => other,
        }
    }
}

impl AsyncRead for CircuitStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Err(e)) => {
                this.on_failure(&e);
                Poll::Ready(Err(e))
            }
            other => other,
        }
    }
}

impl AsyncWrite for CircuitStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn status_replies() {
        let target = |code, cause: &str| {
            Status::new(code, "x")
                .with_origin_target()
                .with_cause(cause.to_string())
        };
        assert_eq!(
            status_reply(&target(
                502,
                "dial tcp 127.0.0.1:1: connect: connection refused"
            )),
            Reply::ConnectionRefused
        );
        assert_eq!(
            status_reply(&target(502, "lookup nope: no such host")),
            Reply::HostUnreachable
        );
        assert_eq!(
            status_reply(&target(408, "i/o timeout")),
            Reply::HostUnreachable
        );
        assert_eq!(status_reply(&target(400, "loopback")), Reply::NotAllowed);
        let relay = |code| Status::new(code, "x").with_origin("aaaa");
        assert_eq!(status_reply(&relay(502)), Reply::NetworkUnreachable);
        assert_eq!(status_reply(&relay(400)), Reply::GeneralFailure);
        assert_eq!(status_reply(&relay(403)), Reply::NotAllowed);
    }

    #[test]
    fn targets_become_target_urls() {
        let a = target_address(&TargetAddr::Domain("example.com".into(), 80)).unwrap();
        assert_eq!(a.as_str(), "target://example.com:80");
        let a = target_address(&TargetAddr::Ip("[::1]:53".parse().unwrap())).unwrap();
        assert_eq!(a.as_str(), "target://[::1]:53");
        assert!(target_address(&TargetAddr::Domain("a b".into(), 1)).is_err());
    }

    #[test]
    fn circuit_faults_need_a_relay_of_the_circuit() {
        use wireleap_proto::keys::Keypair;
        use wireleap_proto::relayentry::Role;
        let k = Keypair::from_seed([9; 32]).public();
        let hops = vec![Hop {
            role: Role::Backing,
            address: Address::parse("wireleap://r.example:1").unwrap(),
            pubkey: k,
        }];
        let from = |code, origin: &str| Status::new(code, "x").with_origin(origin.to_string());
        assert!(is_circuit_fault(&from(502, &k.to_b64()), &hops));
        assert!(
            !is_circuit_fault(&from(400, &k.to_b64()), &hops),
            "400 is the client's fault"
        );
        assert!(
            !is_circuit_fault(&from(502, "target"), &hops),
            "target errors are not the circuit's"
        );
        assert!(!is_circuit_fault(&from(502, "someone-else"), &hops));
    }
}
