//! Host keys and the auth check. (Being written; contract below.)
//!
//! CONTRACT:
//! ```ignore
//! pub struct KeyStore { .. }        // Default = no keys (secrets disabled: every non-anonymous call fails)
//! #[derive(Debug, thiserror::Error)] pub enum KeyError { Read{path, source}, Parse{path, source} }
//! impl KeyStore {
//!     pub fn load(path: &std::path::Path) -> Result<KeyStore, KeyError>;   // platform host secrets JSON
//!     pub fn from_json(text: &str) -> Result<KeyStore, serde_json::Error>;
//!     /// key from `x-functions-key` header (wins) or `code` query parameter (raw query string given)
//!     pub fn authorize(&self, required: crate::router::AuthLevel, headers: &http::HeaderMap, raw_query: Option<&str>) -> bool;
//! }
//! ```
