//! The optional config file (`--config FILE`, TOML). Every key mirrors a command-line
//! flag; `config/sluice.toml` documents them all with their defaults. The file sits
//! between the built-in defaults and the environment in precedence.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::ConfigError;

/// The file's contents; every key optional, unknown keys refused (a typo must not be
/// silently ignored).
#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub port: Option<u16>,
    pub bind: Option<IpAddr>,
    pub workers: Option<usize>,
    pub python: Option<PathBuf>,
    pub secrets_file: Option<PathBuf>,
    pub drain_grace_secs: Option<u64>,
    pub no_install: Option<bool>,
    pub worker_config: Option<PathBuf>,
    pub admin_port: Option<u16>,
    pub admin_bind: Option<IpAddr>,
    pub admin_token_file: Option<PathBuf>,
    pub body_limit_bytes: Option<u64>,
    pub body_budget_bytes: Option<u64>,
    pub io: Option<super::IoMode>,
    pub threads: Option<usize>,
    /// CORS origins, comma-separated (`*` for any).
    pub cors: Option<String>,
    pub cors_credentials: Option<bool>,
    pub watch: Option<bool>,
    pub log_format: Option<super::LogFormat>,
    pub access_log: Option<bool>,
    pub otlp_endpoint: Option<String>,
}

impl FileConfig {
    pub fn load(path: &Path) -> Result<FileConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text).map_err(|source| ConfigError::File {
            path: path.to_path_buf(),
            source: Box::new(source),
        })
    }

    pub fn parse(text: &str) -> Result<FileConfig, toml::de::Error> {
        toml::from_str(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_file_parses_and_states_the_built_in_defaults() {
        let documented = FileConfig::parse(include_str!("../../config/sluice.toml"))
            .expect("config/sluice.toml is valid");
        assert_eq!(documented.port, Some(super::super::DEFAULT_PORT));
        assert_eq!(documented.bind, Some(super::super::DEFAULT_BIND));
        assert_eq!(documented.workers, Some(1));
        assert_eq!(
            documented.drain_grace_secs,
            Some(super::super::DEFAULT_DRAIN_GRACE_SECS)
        );
        assert_eq!(documented.no_install, Some(false));
        assert_eq!(
            documented.admin_port,
            Some(super::super::DEFAULT_ADMIN_PORT)
        );
        assert_eq!(
            documented.admin_bind,
            Some(super::super::DEFAULT_ADMIN_BIND)
        );
        assert_eq!(
            documented.body_limit_bytes,
            Some(super::super::DEFAULT_BODY_LIMIT)
        );
        assert_eq!(
            documented.body_budget_bytes,
            Some(super::super::DEFAULT_BODY_BUDGET)
        );
        assert_eq!(documented.io, Some(super::super::IoMode::default()));
        assert_eq!(documented.watch, Some(false));
        assert_eq!(documented.log_format, Some(super::super::LogFormat::Text));
        assert_eq!(documented.access_log, Some(false));
    }

    #[test]
    fn unknown_keys_are_refused() {
        assert!(FileConfig::parse("prot = 1").is_err());
        assert_eq!(
            FileConfig::parse("").expect("empty is fine"),
            FileConfig::default()
        );
    }
}
