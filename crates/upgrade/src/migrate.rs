//! Migrations of persisted files between versions, always applied to copies.
//!
//! A migration belongs to the release that introduced it and has an `apply` (old format →
//! new) and a `rollback` (new → old). Running them never touches the files the running
//! process uses: `config.json` is copied to `config.json.next`, each data file a migration
//! declares to `<file>.next`, and the migrations edit only those copies. The copies take the
//! place of the originals when an upgrade commits (see [`crate::install`]); until then an old
//! binary never reads them (it is not started with `--config-next`). If a migration fails, the
//! ones already applied are rolled back on the copies and the copies deleted.
//!
//! Upgrading from A to B runs, in ascending order, the `apply` of every migration with
//! A < version ≤ B; rolling back from B to A runs their `rollback`s in descending order. The
//! newer binary always does the work, since only it knows its migrations.
//!
//! Every persisted file carries a schema version: for configs, a top-level `schema_version`
//! key (when the config has one) is set to the version the copy was migrated to, and
//! [`check_config_schema`] lets a binary refuse a config written for a newer version.

use semver::Version;
use std::path::{Path, PathBuf};

/// Suffix of the migrated copies.
pub const NEXT_SUFFIX: &str = ".next";
/// The config file every daemon has.
pub const CONFIG_FILE: &str = "config.json";

/// A migration step.
pub type MigrationFn = fn(&MigrationCtx<'_>) -> Result<(), String>;

/// One migration.
#[derive(Debug, Clone)]
pub struct Migration {
    /// The release that introduced it.
    pub version: Version,
    /// A short name for logs and errors.
    pub name: &'static str,
    /// Data files (relative to the home) it rewrites besides `config.json`.
    pub files: &'static [&'static str],
    /// Old format → new, on the copies.
    pub apply: MigrationFn,
    /// New format → old, on the copies.
    pub rollback: MigrationFn,
}

/// Which way migrations run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// `apply`, ascending.
    Up,
    /// `rollback`, descending.
    Down,
}

/// What a migration step works on: the copies in the home.
#[derive(Debug)]
pub struct MigrationCtx<'a> {
    home: &'a Path,
}

impl<'a> MigrationCtx<'a> {
    /// A context over the copies in `home` (the upgrade machinery makes them; tests of a
    /// component's migrations make their own).
    pub fn new(home: &'a Path) -> Self {
        MigrationCtx { home }
    }

    /// The config copy (`config.json.next`).
    pub fn config(&self) -> PathBuf {
        next_path(&self.home.join(CONFIG_FILE))
    }

    /// The copy of a declared data file.
    pub fn file(&self, rel: &str) -> PathBuf {
        next_path(&self.home.join(rel))
    }

    /// Edits the config copy as a JSON value and writes it back (indented).
    pub fn edit_config(
        &self,
        f: impl FnOnce(&mut serde_json::Value) -> Result<(), String>,
    ) -> Result<(), String> {
        edit_json(&self.config(), f)
    }
}

/// Reads a JSON file, lets `f` change it, writes it back atomically.
pub fn edit_json(
    path: &Path,
    f: impl FnOnce(&mut serde_json::Value) -> Result<(), String>,
) -> Result<(), String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut v: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", path.display()))?;
    f(&mut v)?;
    let mut out = serde_json::to_vec_pretty(&v).map_err(|e| e.to_string())?;
    out.push(b'\n');
    let mode = file_mode(path).unwrap_or(0o644);
    wireleap_daemon::write_atomic(path, &out, mode).map_err(|e| e.to_string())
}

fn file_mode(path: &Path) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path)
        .ok()
        .map(|m| m.permissions().mode() & 0o7777)
}

/// `<path>.next`.
pub fn next_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(NEXT_SUFFIX);
    PathBuf::from(s)
}

/// Why migrating failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MigrationError {
    /// A step failed (already-applied steps were undone and the copies removed).
    #[error("migration {version} {name:?} failed ({direction:?}): {reason}")]
    Step {
        /// Its version.
        version: Version,
        /// Its name.
        name: &'static str,
        /// Which way.
        direction: Direction,
        /// What it said.
        reason: String,
    },
    /// Making the copies failed.
    #[error("could not copy {} for migration: {source}", path.display())]
    Copy {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The config's schema is newer than this binary.
    #[error("{} has schema_version {found}, newer than this binary ({running}); it belongs to a newer release", path.display())]
    NewerSchema {
        /// The file.
        path: PathBuf,
        /// Its schema.
        found: String,
        /// This binary.
        running: Version,
    },
}

/// The migrations to run between `from` and `to`, in order, and the direction.
pub fn plan<'a>(
    migrations: &'a [Migration],
    from: &Version,
    to: &Version,
) -> (Direction, Vec<&'a Migration>) {
    if to >= from {
        let mut v: Vec<&Migration> = migrations
            .iter()
            .filter(|m| m.version > *from && m.version <= *to)
            .collect();
        v.sort_by(|a, b| a.version.cmp(&b.version));
        (Direction::Up, v)
    } else {
        let mut v: Vec<&Migration> = migrations
            .iter()
            .filter(|m| m.version > *to && m.version <= *from)
            .collect();
        v.sort_by(|a, b| b.version.cmp(&a.version));
        (Direction::Down, v)
    }
}

/// Makes fresh copies of `config.json` and each data file any step of the plan declares, runs
/// the plan on them, and stamps the config copy's `schema_version` (if present) with `to`.
/// Returns the paths (relative to the home) of the files that now have a `.next` copy,
/// `config.json` first. On failure nothing is left behind.
pub fn migrate_copies(
    home: &Path,
    migrations: &[Migration],
    from: &Version,
    to: &Version,
) -> Result<Vec<String>, MigrationError> {
    let (direction, steps) = plan(migrations, from, to);
    let mut files: Vec<String> = vec![CONFIG_FILE.to_string()];
    for m in &steps {
        for f in m.files {
            if !files.iter().any(|x| x == f) {
                files.push((*f).to_string());
            }
        }
    }
    discard_copies(home, &files);
    let mut made = Vec::new();
    for f in &files {
        let src = home.join(f);
        if !src.exists() {
            continue;
        }
        if let Err(source) = copy_tree(&src, &next_path(&src)) {
            discard_copies(home, &files);
            return Err(MigrationError::Copy { path: src, source });
        }
        made.push(f.clone());
    }
    let ctx = MigrationCtx { home };
    for (i, m) in steps.iter().enumerate() {
        let step = match direction {
            Direction::Up => m.apply,
            Direction::Down => m.rollback,
        };
        tracing::info!(version = %m.version, name = m.name, ?direction, "running migration");
        if let Err(reason) = step(&ctx) {
            for done in steps[..i].iter().rev() {
                let undo = match direction {
                    Direction::Up => done.rollback,
                    Direction::Down => done.apply,
                };
                if let Err(e) = undo(&ctx) {
                    tracing::warn!(
                        name = done.name,
                        "undoing migration on the copy failed: {e}"
                    );
                }
            }
            discard_copies(home, &files);
            return Err(MigrationError::Step {
                version: m.version.clone(),
                name: m.name,
                direction,
                reason,
            });
        }
    }
    let config_next = ctx.config();
    if config_next.exists() {
        let stamp = edit_json(&config_next, |v| {
            if let Some(obj) = v.as_object_mut() {
                if obj.contains_key("schema_version") {
                    obj.insert(
                        "schema_version".into(),
                        serde_json::Value::String(to.to_string()),
                    );
                }
            }
            Ok(())
        });
        if let Err(reason) = stamp {
            discard_copies(home, &files);
            return Err(MigrationError::Step {
                version: to.clone(),
                name: "schema_version",
                direction,
                reason,
            });
        }
    }
    Ok(made)
}

/// Removes the `.next` copies of `files`.
pub fn discard_copies(home: &Path, files: &[String]) {
    for f in files {
        let p = next_path(&home.join(f));
        let r = if p.is_dir() {
            std::fs::remove_dir_all(&p)
        } else {
            std::fs::remove_file(&p)
        };
        if let Err(e) = r {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(file = %p.display(), "could not remove a migration copy: {e}");
            }
        }
    }
}

/// Copies a file (keeping its mode) or a directory tree.
fn copy_tree(src: &Path, dst: &Path) -> std::io::Result<()> {
    if src.is_dir() {
        std::fs::create_dir(dst)?;
        for entry in std::fs::read_dir(src)? {
            let entry = entry?;
            copy_tree(&entry.path(), &dst.join(entry.file_name()))?;
        }
        Ok(())
    } else {
        std::fs::copy(src, dst)?;
        std::fs::File::open(dst)?.sync_all()
    }
}

/// Refuses a config whose top-level `schema_version` names a version newer than `running`
/// (call it before parsing a config, so an old binary never runs on a next-version config).
/// A config without the key, or with an unparsable one, passes (it predates the key).
pub fn check_config_schema(
    path: &Path,
    bytes: &[u8],
    running: &Version,
) -> Result<(), MigrationError> {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(bytes) else {
        return Ok(());
    };
    let Some(text) = v.get("schema_version").and_then(|s| s.as_str()) else {
        return Ok(());
    };
    match wireleap_proto::version::parse_strict(text) {
        Ok(found) if found > *running => Err(MigrationError::NewerSchema {
            path: path.to_path_buf(),
            found: text.to_string(),
            running: running.clone(),
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;

    fn rename_key(ctx: &MigrationCtx<'_>) -> Result<(), String> {
        ctx.edit_config(|v| {
            let o = v.as_object_mut().ok_or("not an object")?;
            if let Some(g) = o.remove("greeting") {
                o.insert("banner".into(), g);
            }
            Ok(())
        })
    }
    fn rename_back(ctx: &MigrationCtx<'_>) -> Result<(), String> {
        ctx.edit_config(|v| {
            let o = v.as_object_mut().ok_or("not an object")?;
            if let Some(g) = o.remove("banner") {
                o.insert("greeting".into(), g);
            }
            Ok(())
        })
    }
    fn append_data(ctx: &MigrationCtx<'_>) -> Result<(), String> {
        let p = ctx.file("data.txt");
        let mut s = std::fs::read_to_string(&p).map_err(|e| e.to_string())?;
        s.push_str("+v3");
        std::fs::write(&p, s).map_err(|e| e.to_string())
    }
    fn strip_data(ctx: &MigrationCtx<'_>) -> Result<(), String> {
        let p = ctx.file("data.txt");
        let s = std::fs::read_to_string(&p).map_err(|e| e.to_string())?;
        std::fs::write(&p, s.trim_end_matches("+v3")).map_err(|e| e.to_string())
    }
    fn fail(_: &MigrationCtx<'_>) -> Result<(), String> {
        Err("disk says no".into())
    }

    fn v(s: &str) -> Version {
        Version::parse(s).unwrap()
    }

    fn set() -> Vec<Migration> {
        vec![
            Migration {
                version: v("0.3.0"),
                name: "data",
                files: &["data.txt"],
                apply: append_data,
                rollback: strip_data,
            },
            Migration {
                version: v("0.2.0"),
                name: "rename",
                files: &[],
                apply: rename_key,
                rollback: rename_back,
            },
        ]
    }

    fn home() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(
            d.path().join(CONFIG_FILE),
            r#"{"schema_version": "0.1.0", "greeting": "hi"}"#,
        )
        .unwrap();
        std::fs::write(d.path().join("data.txt"), "v1").unwrap();
        d
    }

    fn read_json(p: &Path) -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
    }

    #[test]
    fn plans_select_the_range_in_order() {
        let m = set();
        let (d, p) = plan(&m, &v("0.1.0"), &v("0.3.0"));
        assert_eq!(d, Direction::Up);
        assert_eq!(
            p.iter().map(|m| m.name).collect::<Vec<_>>(),
            ["rename", "data"]
        );
        let (_, p) = plan(&m, &v("0.2.0"), &v("0.3.0"));
        assert_eq!(p.iter().map(|m| m.name).collect::<Vec<_>>(), ["data"]);
        let (d, p) = plan(&m, &v("0.3.0"), &v("0.1.0"));
        assert_eq!(d, Direction::Down);
        assert_eq!(
            p.iter().map(|m| m.name).collect::<Vec<_>>(),
            ["data", "rename"]
        );
        assert!(plan(&m, &v("0.3.0"), &v("0.3.0")).1.is_empty());
    }

    #[test]
    fn up_then_down_on_copies_only() {
        let d = home();
        let made = migrate_copies(d.path(), &set(), &v("0.1.0"), &v("0.3.0")).unwrap();
        assert_eq!(made, ["config.json", "data.txt"]);
        // Originals untouched.
        assert_eq!(read_json(&d.path().join(CONFIG_FILE))["greeting"], "hi");
        assert_eq!(
            std::fs::read_to_string(d.path().join("data.txt")).unwrap(),
            "v1"
        );
        let next = read_json(&d.path().join("config.json.next"));
        assert_eq!(next["banner"], "hi");
        assert_eq!(next["schema_version"], "0.3.0");
        assert_eq!(
            std::fs::read_to_string(d.path().join("data.txt.next")).unwrap(),
            "v1+v3"
        );

        // Pretend the copies were committed, then go back down.
        std::fs::rename(
            d.path().join("config.json.next"),
            d.path().join(CONFIG_FILE),
        )
        .unwrap();
        std::fs::rename(d.path().join("data.txt.next"), d.path().join("data.txt")).unwrap();
        migrate_copies(d.path(), &set(), &v("0.3.0"), &v("0.1.0")).unwrap();
        let back = read_json(&d.path().join("config.json.next"));
        assert_eq!(back["greeting"], "hi");
        assert_eq!(back["schema_version"], "0.1.0");
        assert_eq!(
            std::fs::read_to_string(d.path().join("data.txt.next")).unwrap(),
            "v1"
        );
    }

    #[test]
    fn a_failing_step_leaves_nothing_behind() {
        let d = home();
        let mut m = set();
        m.push(Migration {
            version: v("0.2.5"),
            name: "broken",
            files: &["data.txt"],
            apply: fail,
            rollback: fail,
        });
        let e = migrate_copies(d.path(), &m, &v("0.1.0"), &v("0.3.0")).unwrap_err();
        assert!(
            e.to_string().contains("broken") && e.to_string().contains("disk says no"),
            "{e}"
        );
        assert!(!d.path().join("config.json.next").exists());
        assert!(!d.path().join("data.txt.next").exists());
        assert_eq!(read_json(&d.path().join(CONFIG_FILE))["greeting"], "hi");
    }

    #[test]
    fn schema_guard() {
        let p = Path::new("config.json");
        let running = v("0.2.0");
        assert!(check_config_schema(p, br#"{"schema_version":"0.2.0"}"#, &running).is_ok());
        assert!(check_config_schema(p, br#"{"schema_version":"0.1.9"}"#, &running).is_ok());
        assert!(check_config_schema(p, br#"{"a":1}"#, &running).is_ok());
        assert!(check_config_schema(p, br#"{"schema_version":"0.3.0"}"#, &running).is_err());
    }

    proptest::proptest! {
        #[test]
        fn plan_partitions(from in 0u64..6, to in 0u64..6) {
            let m = set();
            let (from, to) = (Version::new(0, from, 0), Version::new(0, to, 0));
            let (_, p) = plan(&m, &from, &to);
            for x in &m {
                let lo = from.clone().min(to.clone());
                let hi = from.clone().max(to.clone());
                let inside = x.version > lo && x.version <= hi;
                proptest::prop_assert_eq!(p.iter().any(|y| y.name == x.name), inside);
            }
        }

        #[test]
        fn schema_check_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            let _ = check_config_schema(Path::new("x"), &bytes, &Version::new(1, 0, 0));
        }
    }
}
