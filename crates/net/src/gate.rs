//! Accepting only while a gate is open: during a zero-downtime upgrade two processes hold the
//! same listening socket, and each accepts only while it is the one meant to (a successor
//! once it is ready, a predecessor until its successor is). A connection nobody accepts waits
//! in the kernel's backlog, so closing one process's gate loses nothing.

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Accepts from `listener` while `gate` reads `true`; `None` always accepts. Cancel-safe. A
/// gate whose sender is gone counts as open from then on.
pub async fn accept(
    listener: &TcpListener,
    gate: &mut Option<watch::Receiver<bool>>,
) -> std::io::Result<(TcpStream, std::net::SocketAddr)> {
    loop {
        let Some(rx) = gate.as_mut() else {
            return listener.accept().await;
        };
        if rx.wait_for(|open| *open).await.is_err() {
            *gate = None;
            continue;
        }
        let sender_gone = tokio::select! {
            r = listener.accept() => return r,
            closed = rx.wait_for(|open| !*open) => closed.is_err(),
        };
        if sender_gone {
            *gate = None;
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_closed_gate_leaves_connections_in_the_backlog() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let (tx, rx) = watch::channel(false);
        let mut gate = Some(rx);
        let _c = TcpStream::connect(addr).await.unwrap();
        let waited = tokio::time::timeout(Duration::from_millis(200), accept(&l, &mut gate)).await;
        assert!(waited.is_err(), "accepted through a closed gate");
        tx.send_replace(true);
        let (_, peer) = tokio::time::timeout(Duration::from_secs(5), accept(&l, &mut gate))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(peer.ip(), addr.ip());
        // Closed again, then the sender goes away: open from then on.
        tx.send_replace(false);
        let _c2 = TcpStream::connect(addr).await.unwrap();
        drop(tx);
        tokio::time::timeout(Duration::from_secs(5), accept(&l, &mut gate))
            .await
            .unwrap()
            .unwrap();
        assert!(gate.is_none());
    }
}
