//! What the relay does with one tunnel stream (protocol.md §14.3): parse `wl-payload`;
//! answer PING; for CONNECT verify the sharetoken, store it durably, check the remote
//! against the address policy, dial it, splice, and report failures in the `wl-status`
//! trailer (without newline, never an OK status; §14.4).
//!
//! Order: payload → sharetoken checks → (durable store ∥ policy + dial) → splice. The dial
//! runs while the token is being committed, but no byte moves before the commit returned and
//! a replay ("duplicate sharetoken") is refused before anything is spliced. Status texts
//! follow the original: the error text is the `description`, `origin` is the relay's key,
//! or `target` for last-hop failures after the token was accepted. Target addresses are
//! never logged.

use crate::dial;
use crate::state::{unix_now, ContractView, Shared};
use crate::store::Inserted;
use crate::udp;
use futures_util::future::BoxFuture;
use http::{Method, StatusCode};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use wireleap_net::splice::{splice, SpliceLimits};
use wireleap_net::tunnel::{Handler, PlainReply, ServerStream, TunnelRequest as RawRequest};
use wireleap_proto::address::{Address, Scheme};
use wireleap_proto::keys::PublicKey;
use wireleap_proto::sharetoken::{SharetokenError, VerifyContext};
use wireleap_proto::status::{Status, ToStatus as _};
use wireleap_proto::wl_payload::{Protocol, TunnelRequest};

/// A UDP association without a datagram either way for this long ends.
pub const UDP_IDLE: Duration = Duration::from_secs(120);

/// The relay's tunnel handler.
#[derive(Debug)]
pub struct RelayHandler {
    shared: Arc<Shared>,
}

impl RelayHandler {
    /// A handler over the relay's shared state.
    pub fn new(shared: Arc<Shared>) -> Self {
        RelayHandler { shared }
    }
}

impl Handler for RelayHandler {
    fn tunnel(
        self: Arc<Self>,
        request: RawRequest,
        stream: ServerStream,
    ) -> BoxFuture<'static, ()> {
        Box::pin(async move { handle(&self.shared, request, stream).await })
    }

    fn not_allowed(&self, _method: &Method) -> PlainReply {
        let s = Status::method_not_allowed().with_origin_relay(&self.shared.pubkey);
        PlainReply::text(StatusCode::METHOD_NOT_ALLOWED, s.to_http().body)
    }
}

/// Ends the stream with `status` in the trailer (best effort: the client may be gone).
fn fail(stream: &mut ServerStream, status: &Status) {
    if stream.is_finished() {
        return;
    }
    if let Err(e) = stream.finish_with_status(&status.to_trailer_value()) {
        tracing::debug!(error = %e, "could not send wl-status");
    }
}

async fn handle(shared: &Shared, request: RawRequest, mut stream: ServerStream) {
    let me = shared.pubkey;
    let parsed = match &request.payload {
        Some(b) => match std::str::from_utf8(b) {
            Ok(t) => {
                TunnelRequest::from_header(t).map_err(|e| e.to_status().with_origin_relay(&me))
            }
            Err(_) => Err(
                Status::new(400, "could not parse payload header: not UTF-8")
                    .with_origin_relay(&me),
            ),
        },
        None => TunnelRequest::from_header("").map_err(|e| e.to_status().with_origin_relay(&me)),
    };
    // The headers (payload included) are not needed any more; a long-lived stream should
    // not keep them.
    drop(request);
    match parsed {
        Err(s) => fail(&mut stream, &s),
        Ok(TunnelRequest::Ping) => {
            let reply = PlainReply::text(StatusCode::OK, Status::pong(&me).text());
            if let Err(e) = stream.reply_plain(reply) {
                tracing::debug!(error = %e, "could not answer PING");
            }
        }
        Ok(TunnelRequest::Connect {
            protocol,
            remote,
            token,
            ..
        }) => {
            let Some((view, conn)) = admit(shared, &mut stream, protocol, &remote, *token).await
            else {
                return;
            };
            forward(shared, &mut stream, &remote, view, conn).await;
        }
    }
}

/// A dialed remote.
enum Conn {
    Tcp(tokio::net::TcpStream),
    Udp(tokio::net::UdpSocket),
}

/// Where errors after admission come from: the target on a last hop, else this relay.
fn origin(last_hop: bool, me: &PublicKey, s: Status) -> Status {
    if last_hop {
        s.with_origin_target()
    } else {
        s.with_origin_relay(me)
    }
}

/// Checks the sharetoken, then stores it durably while dialing the remote (the dial sends
/// nothing, so overlapping it with the commit keeps the fsync off the connection's critical
/// path without forwarding a byte before the token is safe). Returns the contract and the
/// connection, or `None` if the stream was refused (and answered).
async fn admit(
    shared: &Shared,
    stream: &mut ServerStream,
    protocol: Protocol,
    remote: &Address,
    token: wireleap_proto::sharetoken::Sharetoken,
) -> Option<(ContractView, Conn)> {
    let me = shared.pubkey;
    let refuse = |stream: &mut ServerStream, text: String| {
        shared.refused_tokens.fetch_add(1, Ordering::Relaxed);
        fail(stream, &Status::new(400, text).with_origin_relay(&me));
    };
    let last_hop = remote.scheme() == Scheme::Target;
    if protocol.is_udp() && !last_hop {
        refuse(
            stream,
            format!("protocol {protocol} is only allowed for target:// remotes"),
        );
        return None;
    }

    let now = unix_now();
    let contracts = shared.contracts.snapshot();
    let available = |k: &PublicKey| contracts.available(k);
    let ctx = VerifyContext::new(me, &contracts.keys, now).with_enrollment(&available);
    let verified = match token.verify(&ctx) {
        Ok(v) => v,
        Err(e) => {
            refuse(stream, e.to_string());
            return None;
        }
    };
    let settings = shared.settings();
    let (host, port) = (remote.host(), remote.port());
    let dial = async {
        if protocol.is_udp() {
            dial::dial_udp(host, port, protocol, settings.policy, settings.timeout)
                .await
                .map(Conn::Udp)
        } else {
            dial::dial_tcp(host, port, protocol, settings.policy, settings.timeout)
                .await
                .map(Conn::Tcp)
        }
    };
    let (stored, dialed) = tokio::join!(shared.store.insert(&verified, now), dial);
    match stored {
        Ok(Inserted::New) => {}
        Ok(Inserted::Duplicate) => {
            refuse(stream, SharetokenError::Duplicate.to_string());
            return None;
        }
        Err(e) => {
            tracing::error!(error = %e, "sharetoken not stored; refusing the stream");
            fail(stream, &Status::internal().with_origin_relay(&me));
            return None;
        }
    }
    let Some(view) = verified
        .contract
        .as_ref()
        .and_then(|c| c.public_key)
        .and_then(|k| contracts.by_key.get(&k).cloned())
    else {
        // verify() only passes tokens of contracts in the snapshot.
        fail(stream, &Status::internal().with_origin_relay(&me));
        return None;
    };
    match dialed {
        Ok(conn) => Some((view, conn)),
        Err(e) => {
            fail(stream, &origin(last_hop, &me, e.to_status()));
            None
        }
    }
}

/// How far a bulk stream's splice buffers grow from `bufsize` (see
/// [`SpliceLimits::max_buffer_size`]): with the original's 4 KiB, every 4 KiB became its own
/// HTTP/2 frame and a download ran at a third of the speed.
const BULK_BUFFER: usize = 128 << 10;

/// Splices the stream with the dialed remote until either side ends.
async fn forward(
    shared: &Shared,
    stream: &mut ServerStream,
    remote: &Address,
    view: ContractView,
    conn: Conn,
) {
    let me = shared.pubkey;
    let last_hop = remote.scheme() == Scheme::Target;
    let settings = shared.settings();
    let meter = view.meter.clone();
    if stream.send_headers().is_err() {
        return;
    }
    let result = match conn {
        Conn::Udp(sock) => {
            let count = move |n: usize| {
                meter.fetch_add(n as u64, Ordering::Relaxed);
            };
            tokio::select! {
                r = udp::splice_udp(&mut *stream, &sock, UDP_IDLE, settings.maxtime, &count) => r.map(drop).map_err(|e| e.to_string()),
                () = view.cut.cancelled() => Err("network usage limit reached".to_string()),
            }
        }
        Conn::Tcp(mut tcp) => {
            let limits = SpliceLimits {
                buffer_size: settings.bufsize,
                max_buffer_size: BULK_BUFFER,
                max_lifetime: settings.maxtime,
                // The original has no idle limit; dead clients are found by HTTP/2 keepalive.
                idle_timeout: None,
                half_close: true,
            };
            tokio::select! {
                r = splice(&mut *stream, &mut tcp, &limits, |_, n| {
                    meter.fetch_add(n as u64, Ordering::Relaxed);
                }) => r.map(drop).map_err(|e| e.to_string()),
                () = view.cut.cancelled() => Err("network usage limit reached".to_string()),
            }
        }
    };
    finish(stream, result, &|s| origin(last_hop, &me, s));
}

fn finish(
    stream: &mut ServerStream,
    result: Result<(), String>,
    origin: &dyn Fn(Status) -> Status,
) {
    match result {
        Ok(()) => {
            if let Err(e) = stream.finish_ok() {
                tracing::debug!(error = %e, "could not finish the stream");
            }
        }
        Err(text) => fail(stream, &origin(Status::new(410, text))),
    }
}
