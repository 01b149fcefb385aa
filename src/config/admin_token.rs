//! The admin token (`POST /admin/assign`).

use std::path::Path;

use sha2::{Digest, Sha256};

use super::ConfigError;

/// The secret `POST /admin/assign` requires. Kept as its SHA-256 digest, compared in
/// constant time; never printed.
#[derive(Clone)]
pub struct AdminToken([u8; 32]);

impl AdminToken {
    /// Shortest accepted token: guessing must be hopeless.
    const MIN_LEN: usize = 16;

    pub(super) fn new(name: &'static str, token: &str) -> Result<AdminToken, ConfigError> {
        let token = token.trim();
        if token.len() < Self::MIN_LEN {
            return Err(ConfigError::BadSetting {
                name,
                value: "(hidden)".into(),
                reason: format!(
                    "the admin token must be at least {} characters",
                    Self::MIN_LEN
                ),
            });
        }
        Ok(AdminToken(Sha256::digest(token.as_bytes()).into()))
    }

    pub(super) fn read(path: &Path) -> Result<AdminToken, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        AdminToken::new("--admin-token-file", &text)
    }

    /// Whether `given` is the token; takes the same time wherever they differ.
    pub fn matches(&self, given: &[u8]) -> bool {
        let digest: [u8; 32] = Sha256::digest(given).into();
        digest
            .iter()
            .zip(&self.0)
            .fold(0u8, |differ, (a, b)| differ | (a ^ b))
            == 0
    }
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(hidden)")
    }
}
