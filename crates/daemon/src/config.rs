//! Loading and validating a daemon's `config.json`.
//!
//! Every config type is a serde struct with `#[serde(default, deny_unknown_fields)]`, so an
//! absent key keeps its default (defined once, in the type's `Default`) and a misspelt key is
//! an error naming the key and the file. Validation collects every problem, not the first.
//! Which file is read (`config.json` or `config.json.next`) is decided by [`crate::Home`].

use serde::de::DeserializeOwned;
use serde::Serialize;
use std::fmt;
use std::path::{Path, PathBuf};

/// A daemon's configuration as stored in `config.json`.
pub trait Config:
    Serialize + DeserializeOwned + Default + Clone + fmt::Debug + Send + Sync + 'static
{
    /// Every problem with this configuration; empty when it can be used.
    fn validate(&self) -> Vec<ConfigProblem>;

    /// What `init` writes as a starting point. Defaults to `Default`; override when a
    /// useful template differs from the per-key defaults (for example an example address).
    fn initial() -> Self {
        Self::default()
    }
}

/// One thing wrong with a configuration: the key (dotted path) and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// Dotted key path, e.g. `contracts.https://c.example.address`.
    pub key: String,
    /// What is wrong, including the offending value.
    pub message: String,
}

impl ConfigProblem {
    /// A problem with `key`.
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigProblem {
            key: key.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

/// Why a configuration file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("could not read {}: {source}{}", path.display(), hint(source))]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid JSON for this config type (syntax error, wrong type, unknown
    /// key); serde's message names the key and the line and column.
    #[error("{}: {source}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
    /// The file parsed but its values are not usable.
    #[error("{} is invalid: {}", path.display(), join_problems(problems))]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Every problem found.
        problems: Vec<ConfigProblem>,
    },
    /// The config could not be rendered (only for writing).
    #[error("could not render the configuration as JSON: {0}")]
    Render(#[source] serde_json::Error),
}

fn hint(e: &std::io::Error) -> &'static str {
    if e.kind() == std::io::ErrorKind::NotFound {
        " (run the init command first, or pass --home)"
    } else {
        ""
    }
}

fn join_problems(problems: &[ConfigProblem]) -> String {
    problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Parses config text; `path` is only used for messages.
pub fn parse<C: Config>(path: &Path, bytes: &[u8]) -> Result<C, ConfigError> {
    serde_json::from_slice(bytes).map_err(|source| ConfigError::Parse {
        path: path.to_path_buf(),
        source,
    })
}

/// Reads, parses and validates the config file at `path`.
pub fn load_file<C: Config>(path: &Path) -> Result<C, ConfigError> {
    let bytes = std::fs::read(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let config: C = parse(path, &bytes)?;
    let problems = config.validate();
    if problems.is_empty() {
        Ok(config)
    } else {
        Err(ConfigError::Invalid {
            path: path.to_path_buf(),
            problems,
        })
    }
}

/// Renders a config the way `init` writes it: indented JSON with a final newline.
pub fn render<C: Config>(config: &C) -> Result<Vec<u8>, ConfigError> {
    let mut bytes = serde_json::to_vec_pretty(config).map_err(ConfigError::Render)?;
    bytes.push(b'\n');
    Ok(bytes)
}

/// Checks a `host:port` listen address (host may be a name, an IPv4 address or a bracketed
/// IPv6 address; port 0 means "any free port"). Returns the problem, if any, under `key`.
pub fn check_listen_address(key: &str, value: &str) -> Option<ConfigProblem> {
    let bad = |why: &str| Some(ConfigProblem::new(key, format!("{why}, got {value:?}")));
    let Some((host, port)) = value.rsplit_once(':') else {
        return bad("must be host:port");
    };
    if host.is_empty() {
        return bad("host is missing (use 0.0.0.0 for all interfaces)");
    }
    if port.parse::<u16>().is_err() {
        return bad("port must be a number from 0 to 65535");
    }
    if host.contains(':') && !(host.starts_with('[') && host.ends_with(']')) {
        return bad("an IPv6 host must be in brackets, e.g. [::1]:13499");
    }
    None
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
    #[serde(default, deny_unknown_fields)]
    struct Sample {
        address: String,
        bufsize: u32,
    }

    impl Default for Sample {
        fn default() -> Self {
            Sample {
                address: "127.0.0.1:1".into(),
                bufsize: 4096,
            }
        }
    }

    impl Config for Sample {
        fn validate(&self) -> Vec<ConfigProblem> {
            let mut problems: Vec<_> = check_listen_address("address", &self.address)
                .into_iter()
                .collect();
            if self.bufsize == 0 {
                problems.push(ConfigProblem::new("bufsize", "must be positive, got 0"));
            }
            problems
        }
    }

    fn write(dir: &Path, text: &str) -> PathBuf {
        let path = dir.join("config.json");
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn absent_keys_keep_their_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let c: Sample = load_file(&write(dir.path(), r#"{"bufsize": 7}"#)).unwrap();
        assert_eq!(c.address, "127.0.0.1:1");
        assert_eq!(c.bufsize, 7);
    }

    #[test]
    fn unknown_key_error_names_key_file_and_position() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "{\n  \"adress\": \"x:1\"\n}");
        let msg = load_file::<Sample>(&path).unwrap_err().to_string();
        assert!(msg.contains("`adress`"), "{msg}");
        assert!(msg.contains(&path.display().to_string()), "{msg}");
        assert!(msg.contains("line 2"), "{msg}");
    }

    #[test]
    fn syntax_error_has_line_and_column() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "{\n\"bufsize\": 1,,\n}");
        let msg = load_file::<Sample>(&path).unwrap_err().to_string();
        assert!(msg.contains("line 2 column"), "{msg}");
    }

    #[test]
    fn validation_reports_every_problem() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), r#"{"address": "nope", "bufsize": 0}"#);
        match load_file::<Sample>(&path).unwrap_err() {
            ConfigError::Invalid { problems, .. } => {
                let keys: Vec<_> = problems.iter().map(|p| p.key.as_str()).collect();
                assert_eq!(keys, ["address", "bufsize"]);
            }
            other => panic!("unexpected {other}"),
        }
    }

    #[test]
    fn missing_file_hints_at_init() {
        let dir = tempfile::tempdir().unwrap();
        let msg = load_file::<Sample>(&dir.path().join("config.json"))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("init"), "{msg}");
    }

    #[test]
    fn listen_addresses() {
        for ok in [
            "0.0.0.0:13499",
            "localhost:0",
            "[::1]:80",
            "relay.example:443",
        ] {
            assert_eq!(check_listen_address("a", ok), None, "{ok}");
        }
        for bad in ["", "13499", ":80", "host:", "host:65536", "::1:80", "h:-1"] {
            assert!(check_listen_address("a", bad).is_some(), "{bad}");
        }
    }

    proptest::proptest! {
        #[test]
        fn listen_address_check_never_panics(s in ".*") {
            let _ = check_listen_address("a", &s);
        }

        #[test]
        fn render_then_parse_round_trips(address in "[a-z0-9.]{1,20}:[0-9]{1,5}", bufsize: u32) {
            let c = Sample { address, bufsize };
            let back: Sample = parse(Path::new("x"), &render(&c).unwrap()).unwrap();
            proptest::prop_assert_eq!(back, c);
        }
    }
}
