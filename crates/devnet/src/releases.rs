//! The devnet's release repository: a signing key, a repository served over HTTP by
//! `wireleap-release serve`, the relay binary released on the `default` channel, and
//! `publish`, which releases the next relay version (a stamped copy of the same build) and
//! points the directory's `default` channel at it, so the relays upgrade themselves.
//!
//! Layout under the devnet directory: `releases/keys/release.seed` (the key),
//! `releases/repo/` (what is served), `releases/notes/` (changelogs), `releases/bin/` (the
//! stamped copies), `releases/serve.log`.

use anyhow::{anyhow, bail, Context as _, Result};
use semver::Version;
use std::io::BufRead as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;
use wireleap_e2e as harness;

/// The component the devnet releases.
pub const RELAY: &str = "wireleap-relay";
/// The channel relays follow.
pub const CHANNEL: &str = "default";
const TOOL_TIMEOUT: Duration = Duration::from_secs(120);

/// Paths of the release files under a devnet directory.
#[derive(Debug, Clone)]
pub struct Paths {
    /// `releases/`.
    pub root: PathBuf,
}

impl Paths {
    /// The layout under devnet directory `dir`.
    pub fn new(dir: &Path) -> Self {
        Paths {
            root: dir.join("releases"),
        }
    }

    /// The signing key.
    pub fn key(&self) -> PathBuf {
        self.root.join("keys").join("release.seed")
    }

    /// The served repository.
    pub fn repo(&self) -> PathBuf {
        self.root.join("repo")
    }
}

/// The running release server.
#[derive(Debug)]
pub struct Releases {
    /// Base URL of the repository.
    pub url: String,
    /// The release public key (base64url) relays trust.
    pub pubkey: String,
    /// File locations.
    pub paths: Paths,
    _server: harness::ProcessGuard,
}

fn tool() -> Result<PathBuf> {
    harness::binary("wireleap-release")
}

fn run_tool(args: &[&std::ffi::OsStr]) -> Result<harness::Output> {
    let out = harness::run(Command::new(tool()?).args(args), TOOL_TIMEOUT)?;
    if out.code() != Some(0) {
        bail!("wireleap-release {:?} failed:\n{}", args.first(), out.all());
    }
    Ok(out)
}

impl Releases {
    /// Makes the key and the repository under `dir`, starts the server, and releases the
    /// relay binary `relay` as `version` on the `default` channel.
    pub fn start(dir: &Path, relay: &Path, version: &Version) -> Result<Releases> {
        let r = Self::serve(dir)?;
        r.paths.release(
            relay,
            version,
            "The relay the devnet started with.",
            "initial",
        )?;
        Ok(r)
    }

    /// Makes the key and an empty repository under `dir` and starts the server.
    pub fn serve(dir: &Path) -> Result<Releases> {
        let paths = Paths::new(dir);
        std::fs::create_dir_all(paths.repo())?;
        let keys = paths.root.join("keys");
        let out = run_tool(&["keygen".as_ref(), "--out".as_ref(), keys.as_os_str()])?;
        let pubkey = out.stdout.trim().to_string();
        if pubkey.is_empty() {
            bail!("wireleap-release keygen printed no public key");
        }
        let log = std::fs::File::create(paths.root.join("serve.log"))?;
        let mut child = Command::new(tool()?)
            .args(["serve", "--address", "127.0.0.1:0", "--repo"])
            .arg(paths.repo())
            // Out of the terminal's process group: a Ctrl-C reaches the devnet, which then
            // stops this server itself, after the daemons that download from it.
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .context("starting wireleap-release serve")?;
        let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
        let server = harness::ProcessGuard::child(child);
        let mut line = String::new();
        std::io::BufReader::new(stdout)
            .read_line(&mut line)
            .context("reading the release server's address")?;
        let url = line
            .trim()
            .rsplit(" on ")
            .next()
            .filter(|u| u.starts_with("http://"))
            .ok_or_else(|| anyhow!("the release server printed {line:?}, not its address"))?
            .to_string();
        Ok(Releases {
            url,
            pubkey,
            paths,
            _server: server,
        })
    }
}

impl Paths {
    /// Releases `binary` as `version` of the relay on the `default` channel.
    pub fn release(&self, binary: &Path, version: &Version, notes: &str, tag: &str) -> Result<()> {
        self.release_component(RELAY, binary, version, notes, tag)
    }

    /// Releases `binary` as `version` of `component` on the `default` channel.
    pub fn release_component(
        &self,
        component: &str,
        binary: &Path,
        version: &Version,
        notes: &str,
        tag: &str,
    ) -> Result<()> {
        let notes_dir = self.root.join("notes");
        std::fs::create_dir_all(&notes_dir)?;
        let changelog = notes_dir.join(format!("{component}-{version}.md"));
        std::fs::write(
            &changelog,
            format!("# {component} {version} ({tag})\n\n{notes}\n"),
        )?;
        let v = version.to_string();
        let key = self.key();
        let repo = self.repo();
        run_tool(&[
            "build".as_ref(),
            "--key".as_ref(),
            key.as_os_str(),
            "--repo".as_ref(),
            repo.as_os_str(),
            "--component".as_ref(),
            component.as_ref(),
            "--version".as_ref(),
            v.as_ref(),
            "--binary".as_ref(),
            binary.as_os_str(),
            "--changelog".as_ref(),
            changelog.as_os_str(),
            "--channel".as_ref(),
            CHANNEL.as_ref(),
        ])?;
        Ok(())
    }

    /// The newest relay version in the repository.
    pub fn newest(&self) -> Result<Version> {
        let dir = self.repo().join(RELAY);
        let entries =
            std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))?;
        entries
            .filter_map(|e| e.ok())
            .filter(|e| e.path().is_dir())
            .filter_map(|e| Version::parse(&e.file_name().to_string_lossy()).ok())
            .max()
            .ok_or_else(|| anyhow!("no relay release in {}", dir.display()))
    }
}

/// Writes a copy of `binary` to `out` with a build stamp (`key=value` items, e.g.
/// `version=0.2.0`).
pub fn stamp(binary: &Path, out: &Path, set: &[String]) -> Result<()> {
    let mut args: Vec<std::ffi::OsString> = vec![
        "stamp".into(),
        "--binary".into(),
        binary.into(),
        "--out".into(),
        out.into(),
    ];
    for s in set {
        args.push("--set".into());
        args.push(s.into());
    }
    let refs: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
    run_tool(&refs)?;
    Ok(())
}

/// What `publish` released.
#[derive(Debug, Clone)]
pub struct Published {
    /// The new version.
    pub version: Version,
    /// Whether it was stamped to fail.
    pub broken: bool,
}

/// Releases the next relay version into the devnet in `dir` (a copy of `relay` stamped with
/// it; with `broken`, stamped to crash on start so it fails its health check) and sets the
/// directory's `default` channel to it.
pub fn publish(dir: &Path, relay: &Path, broken: bool) -> Result<Published> {
    let fault = broken.then_some("crash-on-start");
    publish_with(dir, relay, fault)
}

/// [`publish`] with any release-drill fault of the relay (`crash-on-start`,
/// `fail-migration`, `schema-expand`, `schema-breaking`; see `wireleap_relay::upgrade`), or
/// none. `Published::broken` says whether the relays are expected to roll it back.
pub fn publish_with(dir: &Path, relay: &Path, fault: Option<&str>) -> Result<Published> {
    let paths = Paths::new(dir);
    if !paths.key().exists() {
        bail!(
            "{} holds no devnet release key: is a devnet running with --dir {}?",
            paths.root.display(),
            dir.display()
        );
    }
    let newest = paths.newest()?;
    let version = Version::new(newest.major, newest.minor, newest.patch + 1);
    let bins = paths.root.join("bin");
    std::fs::create_dir_all(&bins)?;
    let stamped = bins.join(format!("{RELAY}-{version}"));
    let mut set = vec![format!("version={version}")];
    if let Some(f) = fault {
        set.push(format!("fault={f}"));
    }
    stamp(relay, &stamped, &set)?;
    let broken = matches!(
        fault,
        Some("crash-on-start" | "fail-migration" | "schema-breaking")
    );
    let (notes, tag) = match fault {
        Some("crash-on-start") => (
            "A deliberately broken build: it exits at start, so relays roll it back, skip it and report it to the directory.",
            "broken",
        ),
        Some(f) if broken => (
            "A release drill that relays must roll back (stamped fault), skip and report.",
            f,
        ),
        Some(f) => ("A release drill that relays install (stamped fault).", f),
        None => ("The next devnet release of the relay.", "published"),
    };
    paths.release(&stamped, &version, notes, tag)?;
    let dir_home = dir.join("directory");
    let out = harness::run(
        Command::new(harness::binary("wireleap-dir")?)
            .arg("--home")
            .arg(&dir_home)
            .args(["channel", "set", CHANNEL])
            .arg(version.to_string()),
        TOOL_TIMEOUT,
    )?;
    if out.code() != Some(0) {
        bail!("setting the directory's channel failed:\n{}", out.all());
    }
    Ok(Published { version, broken })
}
