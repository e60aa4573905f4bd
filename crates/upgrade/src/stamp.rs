//! A build stamp: a fixed-size block inside every binary that links this crate, which can be
//! rewritten in a copy of the built file (`wireleap-release stamp`) to give that copy another
//! version (and, for test fixtures, a failure mode) without recompiling. One compiled binary
//! thus yields several releases with different hashes, which is how the end-to-end tests and
//! the devnet publish "the next version".
//!
//! The block is `MAGIC` followed by `key=value;key=value` ASCII padded with NUL bytes. An
//! unstamped binary has an empty payload and [`get`] returns `None`.

/// Total size of the block.
pub const STAMP_LEN: usize = 256;
const MAGIC: &[u8; 24] = b"@@wireleap-build-stamp@@";

const fn blank() -> [u8; STAMP_LEN] {
    let mut out = [0u8; STAMP_LEN];
    let mut i = 0;
    while i < MAGIC.len() {
        out[i] = MAGIC[i];
        i += 1;
    }
    out
}

/// The block itself. `#[used]` keeps it in the binary even where nothing reads it.
#[used]
static STAMP: [u8; STAMP_LEN] = blank();

/// Why a binary could not be stamped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StampError {
    /// No stamp block found.
    #[error("no build stamp block in the binary (it does not link wireleap-upgrade)")]
    NotFound,
    /// More than one block: ambiguous.
    #[error("{0} build stamp blocks in the binary; refusing to guess")]
    Ambiguous(usize),
    /// The payload does not fit or has bad characters.
    #[error("stamp {0:?} is invalid: keys and values must be [A-Za-z0-9._+-], at most {max} bytes in all", max = STAMP_LEN - MAGIC.len() - 1)]
    Invalid(String),
}

/// The payload of this process's stamp (`key=value;...`), empty if unstamped.
pub fn payload() -> String {
    // An opaque reference: the optimiser must load the bytes rather than fold the blank
    // constant, because a stamped copy differs on disk from what was compiled.
    let block: &[u8; STAMP_LEN] = std::hint::black_box(&STAMP);
    decode(&block[MAGIC.len()..])
}

fn decode(region: &[u8]) -> String {
    let end = region.iter().position(|&b| b == 0).unwrap_or(region.len());
    String::from_utf8_lossy(&region[..end]).into_owned()
}

/// The value of `key` in this process's stamp.
pub fn get(key: &str) -> Option<String> {
    lookup(&payload(), key)
}

/// The value of `key` in a payload.
pub fn lookup(payload: &str, key: &str) -> Option<String> {
    payload
        .split(';')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v.to_string())
}

/// The stamped version if any, else `default` (usually `env!("CARGO_PKG_VERSION")`).
pub fn version_or(default: &str) -> String {
    get("version").unwrap_or_else(|| default.to_string())
}

fn valid_part(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'+'))
}

/// Renders `pairs` as a payload, checking characters and size.
pub fn render(pairs: &[(&str, &str)]) -> Result<String, StampError> {
    let text = pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(";");
    let ok = pairs.iter().all(|(k, v)| valid_part(k) && valid_part(v))
        && text.len() < STAMP_LEN - MAGIC.len();
    if ok {
        Ok(text)
    } else {
        Err(StampError::Invalid(text))
    }
}

/// Finds the stamp block in binary `image` and returns a copy with `payload` written into it.
pub fn apply(image: &[u8], payload: &str) -> Result<Vec<u8>, StampError> {
    if payload.len() >= STAMP_LEN - MAGIC.len() || payload.bytes().any(|b| b == 0) {
        return Err(StampError::Invalid(payload.to_string()));
    }
    let at = locate(image)?;
    let mut out = image.to_vec();
    let region = &mut out[at + MAGIC.len()..at + STAMP_LEN];
    region.fill(0);
    region[..payload.len()].copy_from_slice(payload.as_bytes());
    Ok(out)
}

/// The payload stamped into binary `image`.
pub fn read(image: &[u8]) -> Result<String, StampError> {
    let at = locate(image)?;
    Ok(decode(&image[at + MAGIC.len()..at + STAMP_LEN]))
}

/// The offset of the one block in `image`: the magic followed by a region that is a
/// NUL-terminated printable payload padded with NULs (a stray copy of the magic string alone
/// does not qualify).
fn locate(image: &[u8]) -> Result<usize, StampError> {
    let mut found = Vec::new();
    let mut from = 0;
    while let Some(i) = find(&image[from..], MAGIC) {
        let at = from + i;
        if let Some(block) = image.get(at..at + STAMP_LEN) {
            let region = &block[MAGIC.len()..];
            let end = region.iter().position(|&b| b == 0);
            let well_formed = end.is_some_and(|e| {
                region[..e].iter().all(|b| b.is_ascii_graphic())
                    && region[e..].iter().all(|&b| b == 0)
            });
            if well_formed {
                found.push(at);
            }
        }
        from = at + 1;
    }
    match found.as_slice() {
        [] => Err(StampError::NotFound),
        [one] => Ok(*one),
        many => Err(StampError::Ambiguous(many.len())),
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn stamp_a_fake_image() {
        let mut image = b"junk before".to_vec();
        image.extend_from_slice(&blank());
        image.extend_from_slice(b"junk after @@wireleap-build-stamp@@ alone");
        assert_eq!(read(&image).unwrap(), "");
        let p = render(&[("version", "0.2.0"), ("mode", "crash-on-start")]).unwrap();
        let stamped = apply(&image, &p).unwrap();
        assert_eq!(stamped.len(), image.len());
        assert_eq!(read(&stamped).unwrap(), p);
        assert_eq!(lookup(&p, "mode").as_deref(), Some("crash-on-start"));
        assert_eq!(lookup(&p, "nope"), None);
        // Restamping replaces, shorter payloads leave no residue.
        let again = apply(&stamped, "version=1").unwrap();
        assert_eq!(read(&again).unwrap(), "version=1");
        let mut two = image.clone();
        two.extend_from_slice(&blank());
        assert!(matches!(apply(&two, "a=b"), Err(StampError::Ambiguous(2))));
        assert!(matches!(
            apply(b"nothing", "a=b"),
            Err(StampError::NotFound)
        ));
        assert!(render(&[("a", "b;c")]).is_err());
        assert!(render(&[("a", &"x".repeat(300))]).is_err());
    }

    #[test]
    fn this_binary_is_unstamped() {
        assert_eq!(payload(), "");
        assert_eq!(version_or("9.9.9"), "9.9.9");
    }

    proptest! {
        #[test]
        fn stamping_round_trips(v in "[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}", m in "[a-z-]{1,20}") {
            let mut image = vec![1u8; 100];
            image.extend_from_slice(&blank());
            image.extend_from_slice(&[2u8; 100]);
            let p = render(&[("version", &v), ("mode", &m)]).unwrap();
            let out = apply(&image, &p).unwrap();
            prop_assert_eq!(lookup(&read(&out).unwrap(), "version"), Some(v));
            prop_assert_eq!(&out[..100], &image[..100]);
            prop_assert_eq!(&out[out.len() - 100..], &image[image.len() - 100..]);
        }

        #[test]
        fn read_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = read(&bytes);
        }
    }
}
