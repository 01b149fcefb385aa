//! Pure routing: (method, path) → function, route params and required auth level.
//! (Being written; contract below.)
//!
//! CONTRACT (other modules rely on exactly this):
//! ```ignore
//! #[derive(Debug, Clone, Copy, PartialEq, Eq)]
//! pub enum AuthLevel { Anonymous, Function, Admin }          // parse from "anonymous"/"function"/"admin" (case-insensitive)
//! pub struct RouteSpec { pub function: String, pub route: Option<String>, pub methods: Vec<http::Method>, pub auth: AuthLevel }
//! pub struct Router { .. }
//! pub struct RouteMatch<'a> { pub function: &'a str, pub index: usize, pub params: Vec<(String, String)>, pub auth: AuthLevel }
//! #[derive(Debug, thiserror::Error)] pub enum RouteError { .. }   // invalid template, conflict, reserved prefix
//! impl Router {
//!     pub fn new(route_prefix: &str, specs: Vec<RouteSpec>) -> Result<Router, RouteError>;
//!     pub fn find(&self, method: &http::Method, path: &str) -> Option<RouteMatch<'_>>;
//! }
//! ```
