//! The local control socket through which `upgrade`, `rollback` and `upgrade-status`
//! commands reach the running daemon's agent (only the running process holds the listening
//! sockets, so only it can hand over without downtime).
//!
//! A Unix stream socket `<home>/<name>.upgrade.sock`, mode 0600 (only the daemon's user may
//! ask for an upgrade; and the agent re-verifies everything it is asked to install). One
//! request per connection: a JSON line in, a JSON line out.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};

/// Longest request or reply line.
pub const MAX_LINE: usize = 64 * 1024;

/// The socket of the daemon in `home` called `name`.
pub fn socket_path(home: &Path, name: &str) -> PathBuf {
    home.join(format!("{name}.upgrade.sock"))
}

/// What a command asks the agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum ControlRequest {
    /// Upgrade now (manual: rollout and skips do not apply), to `version` or the channel's.
    Upgrade {
        /// A specific version.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        version: Option<String>,
    },
    /// Hand over to `<bin>.prev`.
    Rollback {},
    /// Report the agent's status.
    Status {},
}

/// The agent's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControlReply {
    /// Whether it worked.
    pub ok: bool,
    /// What happened.
    pub message: String,
    /// Status details (for `Status`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<serde_json::Value>,
}

/// Why a control call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ControlError {
    /// Nobody listens (no daemon, or one without an upgrade agent).
    #[error("cannot reach {}: {source}", path.display())]
    Connect {
        /// The socket.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The exchange failed.
    #[error("talking to {}: {reason}", path.display())]
    Exchange {
        /// The socket.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

/// Reads one line of at most [`MAX_LINE`] bytes.
pub async fn read_line<R: tokio::io::AsyncRead + Unpin>(r: R) -> std::io::Result<String> {
    use tokio::io::AsyncReadExt as _;
    let mut reader = BufReader::new(r.take(MAX_LINE as u64 + 1));
    let mut line = String::new();
    reader.read_line(&mut line).await?;
    if line.len() > MAX_LINE {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "line too long",
        ));
    }
    Ok(line)
}

/// How long a call keeps trying to reach an agent whose socket refuses connections.
const CONNECT_PATIENCE: Duration = Duration::from_secs(5);

/// Sends `req` to the agent behind `path` and waits up to `timeout` for the reply.
pub async fn call(
    path: &Path,
    req: &ControlRequest,
    timeout: Duration,
) -> Result<ControlReply, ControlError> {
    // Right after a hand-over the socket file may still be the old process's (refused) or
    // gone, until the new process takes charge and binds it (within a fraction of a second).
    let deadline = tokio::time::Instant::now() + CONNECT_PATIENCE;
    let mut stream = loop {
        match tokio::net::UnixStream::connect(path).await {
            Ok(s) => break s,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::NotFound
                ) && tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(source) => {
                return Err(ControlError::Connect {
                    path: path.to_path_buf(),
                    source,
                })
            }
        }
    };
    let ex = |reason: String| ControlError::Exchange {
        path: path.to_path_buf(),
        reason,
    };
    let mut line = serde_json::to_vec(req).map_err(|e| ex(e.to_string()))?;
    line.push(b'\n');
    stream
        .write_all(&line)
        .await
        .map_err(|e| ex(e.to_string()))?;
    let reply = tokio::time::timeout(timeout, read_line(&mut stream))
        .await
        .map_err(|_| ex(format!("no reply within {timeout:?}")))?
        .map_err(|e| ex(e.to_string()))?;
    if reply.is_empty() {
        return Err(ex("the agent closed the connection without a reply".into()));
    }
    serde_json::from_str(&reply).map_err(|e| ex(format!("bad reply {reply:?}: {e}")))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn requests_have_a_fixed_shape() {
        let r: ControlRequest =
            serde_json::from_str(r#"{"op":"upgrade","version":"1.2.3"}"#).unwrap();
        assert_eq!(
            r,
            ControlRequest::Upgrade {
                version: Some("1.2.3".into())
            }
        );
        assert_eq!(
            serde_json::to_string(&ControlRequest::Rollback {}).unwrap(),
            r#"{"op":"rollback"}"#
        );
        assert!(serde_json::from_str::<ControlRequest>(r#"{"op":"format_disk"}"#).is_err());
        assert!(serde_json::from_str::<ControlRequest>(r#"{"op":"status","x":1}"#).is_err());
    }

    proptest::proptest! {
        #[test]
        fn request_parser_never_panics(s in ".{0,200}") {
            let _ = serde_json::from_str::<ControlRequest>(&s);
        }
    }
}
