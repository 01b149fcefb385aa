//! The app's own settings outside host.json: local.settings.json's values (resolved
//! against the environment, which wins) and where CORS comes from, kept so a `--watch`
//! reload reads them again as a start does.

use std::path::PathBuf;

use super::ConfigError;
use super::local_settings::LocalSettings;
use crate::cors::CorsPolicy;

/// What a `--watch` reload needs to read the app's settings again as a start does.
#[derive(Debug, Clone, Default)]
pub struct SettingsSources {
    /// The local.settings.json to read (it may not exist); `None` = not read.
    pub local_settings: Option<PathBuf>,
    /// CORS given by flags or the config file, which win over the file's `Host.CORS`.
    pub cors: CorsSources,
}

/// The CORS settings outside local.settings.json.
#[derive(Debug, Clone, Default)]
pub struct CorsSources {
    pub flag: Option<String>,
    pub flag_credentials: bool,
    pub file: Option<String>,
    pub file_credentials: Option<bool>,
    /// The platform host's app settings: `CORS_ALLOWED_ORIGINS` (a JSON array of origins)
    /// and `CORS_SUPPORT_CREDENTIALS`, as the Linux host reads them.
    pub platform: Option<String>,
    pub platform_credentials: Option<String>,
}

/// The app settings local.settings.json contributes, resolved against the environment.
#[derive(Debug, Clone, Default)]
pub struct AppSettings {
    /// The file they came from.
    pub file: Option<PathBuf>,
    /// Variables the workers get on top of Sluice's environment (`Values` and
    /// `ConnectionStrings` not already set in the environment).
    pub applied: Vec<(String, String)>,
    /// Names the file sets that the environment already sets (the environment wins).
    pub overridden: Vec<String>,
}

impl AppSettings {
    /// What the file adds to the environment `env` already has: a variable set there wins.
    pub(super) fn resolve(
        local: Option<&LocalSettings>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Self {
        let Some(local) = local else {
            return AppSettings::default();
        };
        let mut settings = AppSettings {
            file: Some(local.path.clone()),
            ..AppSettings::default()
        };
        for (name, value) in local.values.iter().chain(&local.connection_strings) {
            if env(name).is_some() {
                settings.overridden.push(name.clone());
            } else {
                settings.applied.push((name.clone(), value.clone()));
            }
        }
        settings
    }

    /// A variable the file applies.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.applied
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

impl SettingsSources {
    /// The local.settings.json in force, if any; a missing file is no settings unless
    /// `must_exist`.
    pub(super) fn read_local(
        &self,
        must_exist: bool,
    ) -> Result<Option<LocalSettings>, ConfigError> {
        let Some(path) = &self.local_settings else {
            return Ok(None);
        };
        match LocalSettings::load(path)? {
            None if must_exist => Err(ConfigError::Read {
                path: path.clone(),
                source: std::io::ErrorKind::NotFound.into(),
            }),
            local => Ok(local),
        }
    }
}

impl CorsSources {
    /// CORS origins from the first source that names them: `--cors`, the config file,
    /// the platform's `CORS_ALLOWED_ORIGINS`, local.settings.json's `Host.CORS`;
    /// credentials when that source or `--cors-credentials` asks for them.
    pub(super) fn resolve(
        &self,
        local: Option<&LocalSettings>,
    ) -> Result<Option<CorsPolicy>, ConfigError> {
        let local_from = local.map(|l| format!("Host.CORS in {}", l.path.display()));
        let platform_credentials = match &self.platform_credentials {
            None => None,
            Some(v) => Some(parse_bool(PLATFORM_CORS_CREDENTIALS, v.clone())?),
        };
        let origins = [
            (self.flag.clone(), Some("--cors".to_owned()), None),
            (
                self.file.clone(),
                Some("cors (config file)".to_owned()),
                self.file_credentials,
            ),
            (
                self.platform.clone().map(platform_origins).transpose()?,
                Some(PLATFORM_CORS_ORIGINS.to_owned()),
                platform_credentials,
            ),
            (
                local.and_then(|l| l.cors.clone()),
                local_from,
                local.and_then(|l| l.cors_credentials),
            ),
        ]
        .into_iter()
        .find_map(|(list, from, credentials)| Some((list?, from?, credentials)));
        let Some((list, from, credentials)) = origins else {
            if self.flag_credentials {
                return Err(ConfigError::BadSetting {
                    name: "--cors-credentials",
                    value: "true".into(),
                    reason: "needs the allowed origins (--cors ORIGINS)".into(),
                });
            }
            return Ok(None);
        };
        let credentials = self.flag_credentials || credentials == Some(true);
        CorsPolicy::parse(&list, credentials)
            .map(Some)
            .map_err(|source| ConfigError::Cors { from, source })
    }
}

/// The platform host's CORS app settings (Linux; a JSON array, and a boolean).
pub(super) const PLATFORM_CORS_ORIGINS: &str = "CORS_ALLOWED_ORIGINS";
pub(super) const PLATFORM_CORS_CREDENTIALS: &str = "CORS_SUPPORT_CREDENTIALS";

/// `CORS_ALLOWED_ORIGINS` (`["https://a.example", …]`) as a comma-separated list.
fn platform_origins(value: String) -> Result<String, ConfigError> {
    serde_json::from_str::<Vec<String>>(&value)
        .map(|origins| origins.join(","))
        .map_err(|e| ConfigError::BadSetting {
            name: PLATFORM_CORS_ORIGINS,
            value,
            reason: format!(
                "must be a JSON array of origins, e.g. [\"https://app.example.com\"] ({e})"
            ),
        })
}

/// `true` or `false`, in any case (as .NET reads a boolean setting).
fn parse_bool(name: &'static str, value: String) -> Result<bool, ConfigError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(ConfigError::BadSetting {
            name,
            value,
            reason: "must be true or false".into(),
        }),
    }
}
