//! The cluster key (32 secret bytes every process of a run holds) and how a cluster's links are
//! secured with it: read from a file only its owner can read, or from the environment, or made
//! fresh for a local run; never printed, and wiped from memory when dropped.

use std::io::Read;
use std::path::Path;

use zeroize::Zeroizing;

use crate::error::{Error, Result};

/// The environment variable a hostfile cluster's key may come from (64 hex digits), where
/// `--cluster-key-file` is not given.
pub const KEY_ENV: &str = "FASTDP_CLUSTER_KEY";

/// Bytes in a key.
pub const KEY_BYTES: usize = 32;

/// How to make a key, for the messages that ask for one.
pub const MAKE_A_KEY: &str = "make one with `(umask 077; openssl rand -hex 32 > cluster.key)` \
                              and copy it to every machine";

/// A cluster key. Its `Debug` shows no byte of it.
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterKey(Zeroizing<[u8; KEY_BYTES]>);

impl std::fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterKey(redacted)")
    }
}

impl ClusterKey {
    /// A fresh key from the OS CSPRNG (a local run's: it lives as long as the run).
    pub fn generate() -> Result<ClusterKey> {
        let mut key = Zeroizing::new([0u8; KEY_BYTES]);
        getrandom::fill(key.as_mut_slice())
            .map_err(|e| Error::Config(format!("cannot draw a cluster key: {e}")))?;
        Ok(ClusterKey(key))
    }

    /// The key from its bytes.
    pub fn from_bytes(bytes: [u8; KEY_BYTES]) -> ClusterKey {
        ClusterKey(Zeroizing::new(bytes))
    }

    /// The key from 64 hex digits (surrounding white space ignored). The error never quotes
    /// the text.
    pub fn from_hex(text: &str) -> Result<ClusterKey, String> {
        let text = text.trim();
        if text.len() != 2 * KEY_BYTES {
            return Err(format!(
                "a cluster key is {} hex digits (32 random bytes), not {} characters",
                2 * KEY_BYTES,
                text.len()
            ));
        }
        let mut key = Zeroizing::new([0u8; KEY_BYTES]);
        for (i, pair) in text.as_bytes().chunks_exact(2).enumerate() {
            let digit = |c: u8| (c as char).to_digit(16);
            match (digit(pair[0]), digit(pair[1])) {
                (Some(hi), Some(lo)) => key[i] = (hi * 16 + lo) as u8,
                _ => return Err("a cluster key holds only hex digits (0-9, a-f)".into()),
            }
        }
        Ok(ClusterKey(key))
    }

    /// Reads a key file: a regular file that neither its group nor others may read or write
    /// (as ssh requires of a private key), holding 64 hex digits.
    pub fn read_file(path: &Path) -> Result<ClusterKey> {
        let bad = |m: String| Error::Config(format!("--cluster-key-file {}: {m}", path.display()));
        let mut file = std::fs::File::open(path).map_err(|e| bad(format!("cannot open: {e}")))?;
        let meta = file
            .metadata()
            .map_err(|e| bad(format!("cannot read its permissions: {e}")))?;
        if !meta.is_file() {
            return Err(bad("not a regular file".into()));
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(bad(format!(
                    "its permissions {mode:03o} let others read or change it; a cluster key \
                     must be readable by its owner only: chmod 600 {}",
                    path.display()
                )));
            }
        }
        let mut text = Zeroizing::new(String::new());
        // A key is 64 characters; anything much longer is not a key file.
        (&mut file)
            .take(4096)
            .read_to_string(&mut text)
            .map_err(|e| bad(format!("cannot read: {e}")))?;
        ClusterKey::from_hex(&text).map_err(|m| bad(format!("{m}; {MAKE_A_KEY}")))
    }

    /// The key as 64 hex digits, the form a key file holds (for writing one).
    pub fn to_hex(&self) -> Zeroizing<String> {
        let mut out = Zeroizing::new(String::with_capacity(2 * KEY_BYTES));
        for b in self.0.iter() {
            out.push_str(&format!("{b:02x}"));
        }
        out
    }

    /// The key's bytes (for the handshake's pre-shared key).
    pub(crate) fn bytes(&self) -> &[u8; KEY_BYTES] {
        &self.0
    }
}

/// What identifies one run among those that share a key: random for a local run (drawn by
/// process 0 with the key), all zero for a hostfile cluster (whose handshakes are bound to its
/// addresses instead).
pub type RunId = [u8; 16];

/// A fresh run id from the OS CSPRNG.
pub fn fresh_run_id() -> Result<RunId> {
    let mut id = [0u8; 16];
    getrandom::fill(&mut id).map_err(|e| Error::Config(format!("cannot draw a run id: {e}")))?;
    Ok(id)
}

/// How the links between a cluster's processes are secured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Security {
    /// Every link starts with a mutual challenge-response on the key, bound to the run and both
    /// ends' indices, and every byte after it is encrypted and authenticated.
    Keyed {
        /// The key.
        key: ClusterKey,
        /// The run.
        run: RunId,
    },
    /// Neither authenticated nor encrypted (`--insecure-plaintext`, or a hostfile of loopback
    /// addresses without a key): a link still starts with a greeting both ways, so a stray
    /// listener is not taken for a peer, but anyone who can reach a port can claim a place.
    Plaintext,
}

impl Security {
    /// Whether links are authenticated and encrypted.
    pub fn is_keyed(&self) -> bool {
        matches!(self, Security::Keyed { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_keys_parse_and_bad_ones_are_refused_without_being_quoted() {
        let hex = "00112233445566778899aabbccddeeff00112233445566778899AABBCCDDEEFF";
        let key = ClusterKey::from_hex(&format!("  {hex}\n")).unwrap();
        assert_eq!(key.bytes()[..4], [0x00, 0x11, 0x22, 0x33]);
        assert_eq!(key.bytes()[31], 0xff);
        assert_eq!(format!("{key:?}"), "ClusterKey(redacted)");
        assert_eq!(*key.to_hex(), hex.to_lowercase());
        let short = ClusterKey::from_hex("abcd").unwrap_err();
        assert!(short.contains("64 hex digits"), "{short}");
        let secretish = format!("{}zz", &hex[..62]);
        let err = ClusterKey::from_hex(&secretish).unwrap_err();
        assert!(!err.contains(&secretish[..10]), "{err}");
        assert_ne!(
            ClusterKey::generate().unwrap(),
            ClusterKey::generate().unwrap()
        );
    }

    #[test]
    fn a_key_file_others_can_read_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cluster.key");
        std::fs::write(&path, format!("{}\n", "ab".repeat(32))).unwrap();
        for mode in [0o644, 0o640, 0o604, 0o660] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            let err = ClusterKey::read_file(&path).unwrap_err().to_string();
            assert!(err.contains("chmod 600"), "{mode:o}: {err}");
        }
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(
            ClusterKey::read_file(&path).unwrap(),
            ClusterKey::from_bytes([0xab; 32])
        );
        std::fs::write(&path, "not a key").unwrap();
        let err = ClusterKey::read_file(&path).unwrap_err().to_string();
        assert!(err.contains("openssl rand -hex 32"), "{err}");
        let err = ClusterKey::read_file(dir.path()).unwrap_err().to_string();
        assert!(err.contains("not a regular file"), "{err}");
    }
}
