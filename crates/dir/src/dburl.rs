//! Resolving the `database` config key against the home directory.
//!
//! `sqlite://wireleap-dir.db` means a file in the home directory (as every relative file name
//! of a daemon does, services.md §0.5); `sqlite:///var/lib/dir.db` is absolute;
//! `sqlite::memory:` and `postgres://...` URLs are passed through unchanged.

use std::path::Path;

/// The URL to open for `configured`, with a relative SQLite path made absolute under `home`.
pub fn resolve(configured: &str, home: &Path) -> String {
    let Some(rest) = configured
        .strip_prefix("sqlite://")
        .or_else(|| configured.strip_prefix("sqlite:"))
    else {
        return configured.to_string();
    };
    let (path, query) = match rest.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (rest, None),
    };
    if path.is_empty() || path.starts_with(':') || Path::new(path).is_absolute() {
        return configured.to_string();
    }
    let full = home.join(path);
    match query {
        Some(q) => format!("sqlite://{}?{q}", full.display()),
        None => format!("sqlite://{}", full.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn relative_sqlite_paths_go_under_home() {
        let home = Path::new("/srv/dir");
        assert_eq!(
            resolve("sqlite://wireleap-dir.db", home),
            "sqlite:///srv/dir/wireleap-dir.db"
        );
        assert_eq!(
            resolve("sqlite:data/d.db?mode=rwc", home),
            "sqlite:///srv/dir/data/d.db?mode=rwc"
        );
        assert_eq!(resolve("sqlite:///abs/d.db", home), "sqlite:///abs/d.db");
        assert_eq!(resolve("sqlite::memory:", home), "sqlite::memory:");
        assert_eq!(resolve("postgres://u:p@h/db", home), "postgres://u:p@h/db");
    }

    proptest! {
        #[test]
        fn never_panics_and_keeps_non_sqlite_urls(s in "\\PC{0,80}") {
            let out = resolve(&s, Path::new("/h"));
            if !s.starts_with("sqlite:") {
                prop_assert_eq!(out, s);
            } else {
                prop_assert!(out.starts_with("sqlite:"));
            }
        }
    }
}
