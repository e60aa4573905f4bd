//! A static HTTP server for a release repository: GET and HEAD of files under the root, with
//! Content-Length, streamed from disk. Paths must be safe relative paths (no `..`, no hidden
//! parts), so nothing outside the root is reachable. Meant for the devnet and tests on
//! loopback; production repositories can live on any web server or CDN, since installations
//! trust the signed metadata, not the server.

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, Method, StatusCode, Uri};
use axum::response::{IntoResponse as _, Response};
use std::path::PathBuf;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// Serves `root` on `listener` until `stop` is cancelled.
pub async fn serve(
    root: PathBuf,
    listener: tokio::net::TcpListener,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let app = axum::Router::new()
        .fallback(file)
        .with_state(Arc::new(root));
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await
}

fn content_type(path: &str) -> &'static str {
    if path.ends_with(".json") {
        "application/json"
    } else if path.ends_with(".md") {
        "text/markdown; charset=utf-8"
    } else {
        "application/octet-stream"
    }
}

async fn file(State(root): State<Arc<PathBuf>>, method: Method, uri: Uri) -> Response {
    let rel = uri.path().trim_start_matches('/');
    let status = |s: StatusCode| {
        tracing::info!(%method, path = %uri.path(), status = s.as_u16(), "request");
        s.into_response()
    };
    if method != Method::GET && method != Method::HEAD {
        return status(StatusCode::METHOD_NOT_ALLOWED);
    }
    if !wireleap_upgrade::manifest::valid_path(rel) {
        return status(StatusCode::NOT_FOUND);
    }
    let path = root.join(rel);
    let f = match tokio::fs::File::open(&path).await {
        Ok(f) => f,
        Err(_) => return status(StatusCode::NOT_FOUND),
    };
    let len = match f.metadata().await {
        Ok(m) if m.is_file() => m.len(),
        _ => return status(StatusCode::NOT_FOUND),
    };
    tracing::info!(%method, path = %uri.path(), status = 200, bytes = len, "request");
    let body = if method == Method::HEAD {
        Body::empty()
    } else {
        Body::from_stream(tokio_util::io::ReaderStream::new(f))
    };
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_LENGTH, len)
        .header(header::CONTENT_TYPE, content_type(rel))
        .header(header::CACHE_CONTROL, "no-cache")
        .body(body)
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn serves_files_and_nothing_outside() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("repo");
        std::fs::create_dir_all(root.join("c/0.1.0")).unwrap();
        std::fs::write(root.join("c/metadata.json"), "{}").unwrap();
        std::fs::write(root.join("c/0.1.0/bin"), vec![7u8; 100_000]).unwrap();
        std::fs::write(d.path().join("secret"), "no").unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let task = tokio::spawn(serve(root, listener, stop.clone()));
        let http = reqwest::Client::new();
        let get = |p: &str| http.get(format!("http://{addr}{p}")).send();
        let r = get("/c/0.1.0/bin").await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.content_length(), Some(100_000));
        assert_eq!(r.bytes().await.unwrap().len(), 100_000);
        let r = get("/c/metadata.json").await.unwrap();
        assert_eq!(r.headers()["content-type"], "application/json");
        for bad in [
            "/../secret",
            "/c/../../secret",
            "/%2e%2e/secret",
            "/c",
            "/missing",
            "/c/.x",
        ] {
            assert_eq!(get(bad).await.unwrap().status(), 404, "{bad}");
        }
        let r = http
            .head(format!("http://{addr}/c/0.1.0/bin"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["content-length"], "100000");
        let r = http
            .post(format!("http://{addr}/c/metadata.json"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 405);
        stop.cancel();
        task.await.unwrap().unwrap();
    }
}
