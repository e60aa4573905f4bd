//! The relay's local status API (services.md §1.10): `GET /api/status` on a unix socket
//! (`rest_api.address: file:///path`, mode `socket_umask`, default 0600) or on TCP
//! (`http://127.0.0.1:port`). Unauthenticated: keep it local. Other methods on the path get
//! 405, other paths 404 (status objects).
//!
//! The listener is handed over on upgrade like the tunnel listeners. The socket file is
//! removed at shutdown only if it is still the one this process bound, so an old process
//! ending after a hand-over does not delete its successor's socket.

use crate::config::RestAddress;
use crate::runtime::{RelayHandle, LISTENER_REST};
use anyhow::Context as _;
use axum::extract::State;
use axum::routing::get;
use axum::Router;
use std::os::fd::{AsFd as _, OwnedFd};
use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _, PermissionsExt as _};
use std::path::PathBuf;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use wireleap_api::StatusReply;
use wireleap_proto::status::Status;

/// The API's router over a relay handle.
pub fn router(handle: RelayHandle) -> Router {
    Router::new()
        .route(
            "/api/status",
            get(status).fallback(|| async { StatusReply(Status::method_not_allowed()) }),
        )
        .fallback(|| async { StatusReply(Status::not_found()) })
        .with_state(handle)
}

async fn status(State(h): State<RelayHandle>) -> axum::Json<crate::runtime::RelayStatus> {
    axum::Json(h.status().await)
}

/// A running API server.
#[derive(Debug)]
pub struct RestServer {
    stop: CancellationToken,
    task: JoinHandle<()>,
    /// Socket path and the inode this process created there.
    unix: Option<(PathBuf, u64)>,
    fd: OwnedFd,
}

impl RestServer {
    /// Binds (or adopts the inherited listener) and serves.
    /// A TCP listener accepts only while `gate` reads `true` (the upgrade agent's gate); a
    /// unix socket ignores it (the hand-over probe only connects to those).
    pub async fn start(
        addr: &RestAddress,
        handle: RelayHandle,
        gate: Option<tokio::sync::watch::Receiver<bool>>,
    ) -> anyhow::Result<RestServer> {
        let stop = CancellationToken::new();
        let app = router(handle);
        match addr {
            RestAddress::Tcp(hostport) => {
                let listener = wireleap_daemon::listeners::bind_tcp(LISTENER_REST, hostport)
                    .await
                    .with_context(|| format!("REST API: could not listen on {hostport}"))?;
                let fd = listener.as_fd().try_clone_to_owned()?;
                tracing::info!(address = %listener.local_addr()?, "REST API listening");
                let s = stop.clone();
                let task = tokio::spawn(async move {
                    if let Err(e) = wireleap_api::serve_gated(
                        listener,
                        app,
                        None,
                        s,
                        Duration::from_secs(2),
                        gate,
                    )
                    .await
                    {
                        tracing::warn!("REST API server ended: {e}");
                    }
                });
                Ok(RestServer {
                    stop,
                    task,
                    unix: None,
                    fd,
                })
            }
            RestAddress::Unix { path, mode } => {
                let std_listener = unix_listener(path, *mode)?;
                let ino = std::fs::metadata(path).map(|m| m.ino()).unwrap_or(0);
                let fd = std_listener.as_fd().try_clone_to_owned()?;
                std_listener.set_nonblocking(true)?;
                let listener = tokio::net::UnixListener::from_std(std_listener)?;
                tracing::info!(path = %path.display(), "REST API listening");
                let s = stop.clone();
                let task = tokio::spawn(async move {
                    let r = axum::serve(listener, app)
                        .with_graceful_shutdown(s.cancelled_owned())
                        .await;
                    if let Err(e) = r {
                        tracing::warn!("REST API server ended: {e}");
                    }
                });
                Ok(RestServer {
                    stop,
                    task,
                    unix: Some((path.clone(), ino)),
                    fd,
                })
            }
        }
    }

    /// A duplicate of the listening socket, for hand-over.
    pub fn dup_fd(&self) -> anyhow::Result<Option<OwnedFd>> {
        Ok(Some(self.fd.try_clone()?))
    }

    /// Stops serving; removes the socket file if it is still ours.
    pub async fn stop(self) {
        self.stop.cancel();
        if tokio::time::timeout(Duration::from_secs(3), self.task)
            .await
            .is_err()
        {
            tracing::warn!("REST API did not stop in time");
        }
        if let Some((path, ino)) = self.unix {
            let ours = std::fs::metadata(&path).is_ok_and(|m| m.ino() == ino);
            if ours {
                if let Err(e) = std::fs::remove_file(&path) {
                    tracing::warn!(path = %path.display(), "could not remove the REST API socket: {e}");
                }
            }
        }
    }
}

/// The inherited unix listener for `path`, or a new one (a stale socket file is replaced;
/// any other kind of file is left alone and is an error).
fn unix_listener(
    path: &std::path::Path,
    mode: u32,
) -> anyhow::Result<std::os::unix::net::UnixListener> {
    if let Some(fd) = wireleap_daemon::listeners::take_inherited(LISTENER_REST) {
        let l = std::os::unix::net::UnixListener::from(fd);
        let same = l
            .local_addr()
            .ok()
            .and_then(|a| a.as_pathname().map(|p| p == path))
            .unwrap_or(false);
        if same {
            tracing::info!(path = %path.display(), "adopted the inherited REST API socket");
            return Ok(l);
        }
        tracing::warn!(
            "inherited REST API socket is not {}; binding anew",
            path.display()
        );
    }
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => std::fs::remove_file(path)
            .with_context(|| format!("could not remove the stale socket {}", path.display()))?,
        Ok(_) => anyhow::bail!(
            "{} exists and is not a socket; refusing to replace it",
            path.display()
        ),
        Err(_) => {}
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("could not create {}", dir.display()))?;
    }
    let l = std::os::unix::net::UnixListener::bind(path)
        .with_context(|| format!("REST API: could not bind {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("could not chmod {} to {mode:o}", path.display()))?;
    Ok(l)
}
