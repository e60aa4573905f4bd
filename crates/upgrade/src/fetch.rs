//! Getting release files from the release server: the metadata (small, size-limited) and
//! release artifacts, streamed into the quarantine directory while being hashed, then checked
//! against the SHA-512 and length the verified metadata names. Every connect and read has a
//! timeout and every body a size limit (the original had neither, upgrade.md §5). A file that
//! does not match is deleted, never left for someone to run.
//!
//! Layout on the server: `<base>/<component>/metadata.json`, and each target at
//! `<base>/<component>/<target.path>` (the paths were validated as safe relative paths).

use crate::manifest::{Target, MAX_METADATA_BYTES};
use futures_util::StreamExt as _;
use sha2::{Digest as _, Sha512};
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Name of the quarantine directory in the home.
pub const QUARANTINE_DIR: &str = "quarantine";
/// File name of the metadata on the server.
pub const METADATA_FILE: &str = "metadata.json";

/// Why fetching failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FetchError {
    /// The base URL is unusable.
    #[error("release URL {url:?} is invalid: {reason}")]
    BadUrl {
        /// The URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// Connecting, sending or reading failed.
    #[error("GET {url}: {reason}")]
    Transport {
        /// The URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// The server answered with a non-200 status.
    #[error("GET {url}: HTTP status {status}")]
    Status {
        /// The URL.
        url: String,
        /// The status.
        status: u16,
    },
    /// More bytes than allowed or announced.
    #[error("GET {url}: more than {limit} bytes")]
    TooLarge {
        /// The URL.
        url: String,
        /// The limit.
        limit: u64,
    },
    /// The artifact is not what the signed metadata says.
    #[error("{} does not match the signed metadata: {reason}; deleted", path.display())]
    Mismatch {
        /// The (deleted) file.
        path: PathBuf,
        /// Length or digest difference.
        reason: String,
    },
    /// Local file trouble.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

impl FetchError {
    fn io(path: &Path) -> impl FnOnce(std::io::Error) -> FetchError + '_ {
        move |source| FetchError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// How progress of a download is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// A progress bar on the terminal (interactive commands).
    Bar,
    /// A log line at start, every quarter, and at the end (daemons).
    Log,
    /// Nothing.
    Quiet,
}

/// Timeouts and limits of the release client.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connecting.
    pub connect: Duration,
    /// Waiting for the next chunk of a body.
    pub read: Duration,
    /// A whole artifact download.
    pub total: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            connect: Duration::from_secs(10),
            read: Duration::from_secs(30),
            total: Duration::from_secs(30 * 60),
        }
    }
}

/// A client for one component's directory on a release server.
#[derive(Debug, Clone)]
pub struct ReleaseClient {
    http: reqwest::Client,
    base: String,
    component: String,
    limits: Limits,
}

impl ReleaseClient {
    /// A client for `<base>/<component>/`. `base` must be an http(s) URL.
    pub fn new(base: &str, component: &str, limits: Limits) -> Result<Self, FetchError> {
        let bad = |reason: String| FetchError::BadUrl {
            url: base.to_string(),
            reason,
        };
        let parsed = url::Url::parse(base).map_err(|e| bad(e.to_string()))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(bad("scheme must be http or https".into()));
        }
        if parsed.query().is_some() || parsed.fragment().is_some() {
            return Err(bad("must not have a query or fragment".into()));
        }
        if !crate::manifest::valid_name(component) {
            return Err(bad(format!("component {component:?} is not a valid name")));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(limits.connect)
            .read_timeout(limits.read)
            .no_proxy()
            .build()
            .map_err(|e| bad(format!("cannot build the HTTP client: {e}")))?;
        Ok(ReleaseClient {
            http,
            base: base.trim_end_matches('/').to_string(),
            component: component.to_string(),
            limits,
        })
    }

    /// The URL of a file relative to the component directory.
    pub fn url_of(&self, rel: &str) -> String {
        format!("{}/{}/{}", self.base, self.component, rel)
    }

    async fn get(&self, url: &str) -> Result<reqwest::Response, FetchError> {
        let resp = tokio::time::timeout(
            self.limits.read + self.limits.connect,
            self.http.get(url).send(),
        )
        .await
        .map_err(|_| FetchError::Transport {
            url: url.to_string(),
            reason: "timed out waiting for the response".into(),
        })?
        .map_err(|e| FetchError::Transport {
            url: url.to_string(),
            reason: error_chain(&e),
        })?;
        let status = resp.status().as_u16();
        if status != 200 {
            return Err(FetchError::Status {
                url: url.to_string(),
                status,
            });
        }
        Ok(resp)
    }

    /// Downloads the metadata envelope (at most [`MAX_METADATA_BYTES`]).
    pub async fn metadata(&self) -> Result<Vec<u8>, FetchError> {
        let url = self.url_of(METADATA_FILE);
        let resp = self.get(&url).await?;
        let limit = MAX_METADATA_BYTES as u64;
        let mut body = Vec::new();
        let mut stream = resp.bytes_stream();
        while let Some(chunk) = next_chunk(&mut stream, &url, self.limits.read).await? {
            if body.len() as u64 + chunk.len() as u64 > limit {
                return Err(FetchError::TooLarge { url, limit });
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    /// Downloads `target` to `dest` (created 0600 next to a `.partial` name, renamed on
    /// success), hashing while writing; checks length and SHA-512, deletes the file on any
    /// failure. The result is not executable: [`make_executable`] does that for binaries.
    pub async fn download(
        &self,
        target: &Target,
        dest: &Path,
        progress: Progress,
    ) -> Result<(), FetchError> {
        let url = self.url_of(&target.path);
        let partial = dest.with_extension("partial");
        let result = tokio::time::timeout(
            self.limits.total,
            self.download_inner(&url, target, &partial, progress),
        )
        .await
        .unwrap_or_else(|_| {
            Err(FetchError::Transport {
                url: url.clone(),
                reason: format!("download took longer than {:?}", self.limits.total),
            })
        });
        match result {
            Ok(()) => std::fs::rename(&partial, dest).map_err(FetchError::io(dest)),
            Err(e) => {
                let _ = std::fs::remove_file(&partial);
                Err(e)
            }
        }
    }

    async fn download_inner(
        &self,
        url: &str,
        target: &Target,
        partial: &Path,
        progress: Progress,
    ) -> Result<(), FetchError> {
        let resp = self.get(url).await?;
        if let Some(announced) = resp.content_length() {
            if announced != target.length {
                return Err(FetchError::Mismatch {
                    path: partial.to_path_buf(),
                    reason: format!(
                        "server announces {announced} bytes, the metadata says {}",
                        target.length
                    ),
                });
            }
        }
        let _ = std::fs::remove_file(partial);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(partial)
            .map_err(FetchError::io(partial))?;
        let shown = Shown::new(progress, url, target.length);
        let mut hasher = Sha512::new();
        let mut got: u64 = 0;
        let mut stream = resp.bytes_stream();
        while let Some(chunk) = next_chunk(&mut stream, url, self.limits.read).await? {
            got += chunk.len() as u64;
            if got > target.length {
                return Err(FetchError::TooLarge {
                    url: url.to_string(),
                    limit: target.length,
                });
            }
            hasher.update(&chunk);
            file.write_all(&chunk).map_err(FetchError::io(partial))?;
            shown.advance(got);
        }
        file.sync_all().map_err(FetchError::io(partial))?;
        shown.finish();
        if got != target.length {
            return Err(FetchError::Mismatch {
                path: partial.to_path_buf(),
                reason: format!("{got} bytes received, the metadata says {}", target.length),
            });
        }
        let digest = hex::encode(hasher.finalize());
        if digest != target.sha512 {
            return Err(FetchError::Mismatch {
                path: partial.to_path_buf(),
                reason: format!("sha512 is {digest}, the metadata says {}", target.sha512),
            });
        }
        Ok(())
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

async fn next_chunk<S>(
    stream: &mut S,
    url: &str,
    read: Duration,
) -> Result<Option<bytes::Bytes>, FetchError>
where
    S: futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Unpin,
{
    match tokio::time::timeout(read, stream.next()).await {
        Err(_) => Err(FetchError::Transport {
            url: url.to_string(),
            reason: format!("no data for {read:?}"),
        }),
        Ok(None) => Ok(None),
        Ok(Some(Ok(c))) => Ok(Some(c)),
        Ok(Some(Err(e))) => Err(FetchError::Transport {
            url: url.to_string(),
            reason: error_chain(&e),
        }),
    }
}

struct Shown {
    mode: Progress,
    bar: Option<indicatif::ProgressBar>,
    url: String,
    total: u64,
    logged_quarter: std::cell::Cell<u64>,
}

impl Shown {
    fn new(mode: Progress, url: &str, total: u64) -> Self {
        let bar = (mode == Progress::Bar).then(|| {
            let bar = indicatif::ProgressBar::new(total);
            if let Ok(style) = indicatif::ProgressStyle::with_template(
                "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            ) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.set_message("downloading");
            bar
        });
        if mode == Progress::Log {
            tracing::info!(%url, bytes = total, "downloading");
        }
        Shown {
            mode,
            bar,
            url: url.to_string(),
            total,
            logged_quarter: std::cell::Cell::new(0),
        }
    }

    fn advance(&self, got: u64) {
        if let Some(bar) = &self.bar {
            bar.set_position(got);
        }
        if self.mode == Progress::Log && self.total > 0 {
            let quarter = got.saturating_mul(4) / self.total;
            if quarter > self.logged_quarter.get() && quarter < 4 {
                self.logged_quarter.set(quarter);
                tracing::info!(url = %self.url, percent = quarter * 25, "downloading");
            }
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_with_message("downloaded");
        }
        if self.mode == Progress::Log {
            tracing::info!(url = %self.url, bytes = self.total, "downloaded");
        }
    }
}

/// Creates (or fixes the mode of) `<home>/quarantine`, mode 0700.
pub fn quarantine_dir(home: &Path) -> Result<PathBuf, FetchError> {
    use std::os::unix::fs::DirBuilderExt as _;
    let dir = home.join(QUARANTINE_DIR);
    match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(FetchError::io(&dir)(e)),
    }
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
        .map_err(FetchError::io(&dir))?;
    Ok(dir)
}

/// chmod 0755.
pub fn make_executable(path: &Path) -> Result<(), FetchError> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
        .map_err(FetchError::io(path))
}

/// Checks that the file at `path` has exactly `target`'s length and SHA-512 (used again right
/// before a staged binary is run).
pub fn check_file(path: &Path, target: &Target) -> Result<(), FetchError> {
    use std::io::Read as _;
    let mut f = std::fs::File::open(path).map_err(FetchError::io(path))?;
    let mut hasher = Sha512::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut got: u64 = 0;
    loop {
        let n = f.read(&mut buf).map_err(FetchError::io(path))?;
        if n == 0 {
            break;
        }
        got += n as u64;
        if got > target.length {
            break;
        }
        hasher.update(&buf[..n]);
    }
    if got != target.length {
        return Err(FetchError::Mismatch {
            path: path.to_path_buf(),
            reason: format!("{got}+ bytes, the metadata says {}", target.length),
        });
    }
    let digest = hex::encode(hasher.finalize());
    if digest != target.sha512 {
        return Err(FetchError::Mismatch {
            path: path.to_path_buf(),
            reason: format!("sha512 is {digest}, the metadata says {}", target.sha512),
        });
    }
    Ok(())
}

/// SHA-512 (hex) and length of a file.
pub fn digest_file(path: &Path) -> std::io::Result<(String, u64)> {
    use std::io::Read as _;
    let mut f = std::fs::File::open(path)?;
    let mut hasher = Sha512::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut len = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        len += n as u64;
        hasher.update(&buf[..n]);
    }
    Ok((hex::encode(hasher.finalize()), len))
}
