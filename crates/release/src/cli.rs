//! The command line of `wireleap-release`: make release keys, publish releases into a
//! repository with signed metadata, stamp binaries with a version, serve a repository over
//! HTTP, show what is in it.

use crate::repo::{self, BuildSpec};
use anyhow::{bail, Context as _, Result};
use clap::{Parser, Subcommand};
use semver::Version;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// The parsed command line.
#[derive(Debug, Parser)]
#[command(
    name = "wireleap-release",
    version,
    about = "Release keys, signed release repositories, build stamps"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// How long signed metadata stays valid.
#[derive(Debug, Clone, clap::Args)]
struct Expiry {
    /// Metadata validity from now (e.g. 30d, 12h); installations refuse it afterwards
    #[arg(long, default_value = "30d", value_name = "DURATION")]
    expires: String,
    /// Absolute expiry in unix seconds (overrides --expires; for tests)
    #[arg(long, value_name = "UNIX", hide = true)]
    expires_at: Option<i64>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create a release signing key: DIR/release.seed (0600) and DIR/release.pub
    Keygen {
        /// Directory for the key files
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Replace an existing key
        #[arg(long)]
        force: bool,
    },
    /// Add a release to a repository, point a channel at it and re-sign the metadata
    Build {
        /// Release key file (release.seed); repeat for k-of-n signing
        #[arg(long = "key", value_name = "FILE", required = true)]
        keys: Vec<PathBuf>,
        /// Repository directory
        #[arg(long, value_name = "DIR")]
        repo: PathBuf,
        /// Component (binary name), e.g. wireleap-relay
        #[arg(long)]
        component: String,
        /// Version being released (strict semver)
        #[arg(long)]
        version: String,
        /// The binary to publish
        #[arg(long, value_name = "PATH")]
        binary: PathBuf,
        /// Release notes (Markdown)
        #[arg(long, value_name = "FILE")]
        changelog: PathBuf,
        /// Channel to point at this version
        #[arg(long, default_value = "default")]
        channel: String,
        /// Only add the release; leave every channel as it is
        #[arg(long, conflicts_with = "channel")]
        no_channel: bool,
        /// Share of installations on the channel that may take it, in percent
        #[arg(long, default_value = "100", value_name = "PERCENT")]
        rollout: f64,
        /// Platform of the binary [default: this machine's, e.g. linux-x86_64]
        #[arg(long)]
        platform: Option<String>,
        /// Oldest version this release may be installed over
        #[arg(long, value_name = "VERSION")]
        min_from: Option<String>,
        /// Allow pointing the channel at an older version than it offers now
        #[arg(long)]
        allow_downgrade: bool,
        #[command(flatten)]
        expiry: Expiry,
    },
    /// Point a channel at an already released version (e.g. widen a rollout) and re-sign
    Channel {
        /// Release key file; repeat for k-of-n signing
        #[arg(long = "key", value_name = "FILE", required = true)]
        keys: Vec<PathBuf>,
        /// Repository directory
        #[arg(long, value_name = "DIR")]
        repo: PathBuf,
        /// Component
        #[arg(long)]
        component: String,
        /// Channel name
        #[arg(long, default_value = "default")]
        channel: String,
        /// Version to offer
        #[arg(long)]
        version: String,
        /// Rollout share in percent
        #[arg(long, default_value = "100", value_name = "PERCENT")]
        rollout: f64,
        /// Allow going to an older version
        #[arg(long)]
        allow_downgrade: bool,
        #[command(flatten)]
        expiry: Expiry,
    },
    /// Re-sign unchanged metadata with a new serial and expiry
    Refresh {
        /// Release key file; repeat for k-of-n signing
        #[arg(long = "key", value_name = "FILE", required = true)]
        keys: Vec<PathBuf>,
        /// Repository directory
        #[arg(long, value_name = "DIR")]
        repo: PathBuf,
        /// Component
        #[arg(long)]
        component: String,
        #[command(flatten)]
        expiry: Expiry,
    },
    /// Serve a repository over HTTP (for the devnet and tests)
    Serve {
        /// Repository directory
        #[arg(long, value_name = "DIR")]
        repo: PathBuf,
        /// Listen address (port 0 picks a free port; the address is printed)
        #[arg(long, default_value = "127.0.0.1:0", value_name = "HOST:PORT")]
        address: String,
    },
    /// Show a component's metadata (checking signatures against --trust keys if given)
    Show {
        /// Repository directory
        #[arg(long, value_name = "DIR")]
        repo: PathBuf,
        /// Component
        #[arg(long)]
        component: String,
        /// Trusted public key (release.pub file or base64url); repeat
        #[arg(long = "trust", value_name = "KEY", allow_hyphen_values = true)]
        trust: Vec<String>,
        /// How many trusted keys must have signed
        #[arg(long, default_value = "1")]
        threshold: usize,
        /// Print the signed manifest as JSON
        #[arg(long)]
        json: bool,
    },
    /// Write a copy of a binary with a build stamp (version and other key=value pairs)
    Stamp {
        /// The binary to copy
        #[arg(long, value_name = "PATH")]
        binary: PathBuf,
        /// Where to write the stamped copy (mode 0755)
        #[arg(long, value_name = "PATH")]
        out: PathBuf,
        /// KEY=VALUE to stamp, e.g. version=0.2.0; repeat
        #[arg(long = "set", value_name = "KEY=VALUE", required = true)]
        set: Vec<String>,
    },
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

impl Expiry {
    fn resolve(&self) -> Result<i64> {
        if let Some(at) = self.expires_at {
            return Ok(at);
        }
        let d = wireleap_proto::duration::Duration::parse(&self.expires)
            .with_context(|| format!("--expires {:?}", self.expires))?;
        if d.0 <= 0 {
            bail!("--expires must be positive, got {}", self.expires);
        }
        Ok(now().saturating_add(i64::try_from(d.to_std().as_secs()).unwrap_or(i64::MAX)))
    }
}

fn load_keys(paths: &[PathBuf]) -> Result<Vec<wireleap_proto::keys::Keypair>> {
    paths
        .iter()
        .map(|p| crate::load_key(p).map_err(anyhow::Error::from))
        .collect()
}

fn version(text: &str) -> Result<Version> {
    wireleap_proto::version::parse_strict(text).with_context(|| format!("version {text:?}"))
}

fn print_published(m: &wireleap_upgrade::manifest::Manifest, repo: &Path) {
    println!(
        "{}: metadata serial {} signed, expires {} ({})",
        m.component,
        m.version,
        m.expires,
        repo.join(&m.component).join("metadata.json").display()
    );
    for (name, ch) in &m.channels {
        println!(
            "  channel {name}: {} at {:.2}%",
            ch.version,
            f64::from(ch.rollout_bp) / 100.0
        );
    }
}

async fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Keygen { out, force } => {
            let kp = crate::keygen(&out, force)?;
            println!("{}", kp.public().to_b64());
            eprintln!(
                "wrote {} (keep it offline) and {}",
                out.join(crate::SEED_FILE).display(),
                out.join(crate::PUB_FILE).display()
            );
        }
        Command::Build {
            keys,
            repo,
            component,
            version: v,
            binary,
            changelog,
            channel,
            no_channel,
            rollout,
            platform,
            min_from,
            allow_downgrade,
            expiry,
        } => {
            let keys = load_keys(&keys)?;
            let refs: Vec<&_> = keys.iter().collect();
            let platform = platform.unwrap_or_else(wireleap_upgrade::manifest::this_platform);
            let spec = BuildSpec {
                component: &component,
                version: version(&v)?,
                binary: &binary,
                changelog: &changelog,
                platform: &platform,
                channel: (!no_channel).then_some(channel.as_str()),
                rollout_bp: repo::percent_to_bp(rollout)?,
                min_from: min_from.as_deref().map(version).transpose()?,
                allow_downgrade,
                expires: expiry.resolve()?,
            };
            let m = repo::build(&repo, &spec, &refs)?;
            print_published(&m, &repo);
        }
        Command::Channel {
            keys,
            repo,
            component,
            channel,
            version: v,
            rollout,
            allow_downgrade,
            expiry,
        } => {
            let keys = load_keys(&keys)?;
            let refs: Vec<&_> = keys.iter().collect();
            let m = repo::channel(
                &repo,
                &component,
                &channel,
                &version(&v)?,
                repo::percent_to_bp(rollout)?,
                allow_downgrade,
                &refs,
                expiry.resolve()?,
            )?;
            print_published(&m, &repo);
        }
        Command::Refresh {
            keys,
            repo,
            component,
            expiry,
        } => {
            let keys = load_keys(&keys)?;
            let refs: Vec<&_> = keys.iter().collect();
            let m = repo::refresh(&repo, &component, &refs, expiry.resolve()?)?;
            print_published(&m, &repo);
        }
        Command::Serve { repo, address } => {
            if !repo.is_dir() {
                bail!("repository {} is not a directory", repo.display());
            }
            let listener = tokio::net::TcpListener::bind(&address)
                .await
                .with_context(|| format!("listening on {address}"))?;
            let local = listener.local_addr()?;
            // Tests and scripts read this line to learn the port.
            println!("serving {} on http://{local}", repo.display());
            let stop = tokio_util::sync::CancellationToken::new();
            let s = stop.clone();
            tokio::spawn(async move {
                let mut term =
                    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    {
                        Ok(t) => t,
                        Err(_) => return,
                    };
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
                s.cancel();
            });
            crate::serve::serve(repo, listener, stop).await?;
        }
        Command::Show {
            repo,
            component,
            trust,
            threshold,
            json,
        } => {
            let path =
                repo::component_dir(&repo, &component).join(wireleap_upgrade::fetch::METADATA_FILE);
            let bytes =
                std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
            let (m, sigs) = wireleap_upgrade::manifest::peek_unverified(&bytes)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&m)?);
            } else {
                print!("{}", repo::describe(&m, now()));
                for s in &sigs {
                    println!("signed by {}", s.keyid.to_b64());
                }
            }
            if !trust.is_empty() {
                let keys = trust
                    .iter()
                    .map(|t| crate::load_pub(t))
                    .collect::<Result<Vec<_>, _>>()?;
                let t = wireleap_upgrade::manifest::TrustedKeys::new(keys, threshold)?;
                match wireleap_upgrade::manifest::UnverifiedMetadata::from_bytes(&bytes)?.verify(
                    &t,
                    &component,
                    now(),
                ) {
                    Ok(_) => println!(
                        "signatures: OK ({threshold} of {} trusted keys required)",
                        trust.len()
                    ),
                    Err(e) => bail!("metadata does not verify: {e}"),
                }
            }
        }
        Command::Stamp { binary, out, set } => {
            let pairs = set
                .iter()
                .map(|kv| {
                    kv.split_once('=')
                        .with_context(|| format!("--set {kv:?} is not KEY=VALUE"))
                })
                .collect::<Result<Vec<_>>>()?;
            let payload = wireleap_upgrade::stamp::render(&pairs)?;
            let image =
                std::fs::read(&binary).with_context(|| format!("reading {}", binary.display()))?;
            let stamped = wireleap_upgrade::stamp::apply(&image, &payload)?;
            wireleap_daemon::write_atomic(&out, &stamped, 0o755)?;
            println!("{}: stamped {payload}", out.display());
        }
    }
    Ok(())
}

/// Parses the command line and runs the command; the whole `main` of the binary.
pub fn main() -> ExitCode {
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .try_init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("could not start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_trusted_key_may_start_with_a_hyphen() {
        // base64url keys start with '-' one time in 64.
        let key = "-Jq2cQm0hY1w3o0D1m1a3vUuJ8e4V9hR6q0b5n7Xc8k";
        let cli = Cli::try_parse_from([
            "wireleap-release",
            "show",
            "--repo",
            "r",
            "--component",
            "wireleap-relay",
            "--trust",
            key,
        ])
        .unwrap();
        assert!(format!("{cli:?}").contains(key));
    }
}
