//! Placeholder specialisation on the wire: `FunctionEnvironmentReloadRequest` (25) to a
//! worker that initialised against the placeholder app, and its response (26).

use std::collections::HashMap;
use std::path::Path;

use tracing::info;

use super::error::RpcError;
use super::handshake::{Initialised, check, reply};
use super::messages::RuntimeInfo;
use crate::proto::FunctionEnvironmentReloadRequest;
use crate::proto::streaming_message::Content;

impl Initialised {
    /// Sends the app's whole environment and directory; the worker re-prioritises its
    /// import path, picks the app's runtime library, replaces `os.environ` and indexes the
    /// app. Afterwards `Session::load` runs metadata → load as on a normal start.
    /// Empty values are left out, as the platform host does.
    pub async fn reload_environment(
        &mut self,
        environment: &HashMap<String, String>,
        app_dir: &Path,
    ) -> Result<(), RpcError> {
        let worker = self.worker.clone();
        let environment_variables = environment
            .iter()
            .filter(|(k, v)| !k.is_empty() && !v.is_empty())
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let reloaded = self
            .steps()
            .request(
                reply!(FunctionEnvironmentReloadResponse),
                Content::FunctionEnvironmentReloadRequest(FunctionEnvironmentReloadRequest {
                    environment_variables,
                    function_app_directory: app_dir.display().to_string(),
                }),
            )
            .await?;
        check(
            &worker,
            "to load the assigned app",
            reloaded.result.as_ref(),
        )?;
        // Merge (the default): a capability the reload does not mention stays as init
        // reported it; replace: only the reload's capabilities apply.
        self.update_capabilities(
            &reloaded.capabilities,
            reloaded.capabilities_update_strategy(),
        )?;
        if reloaded.worker_metadata.is_some() {
            self.runtime = RuntimeInfo::reported(reloaded.worker_metadata.as_ref());
        }
        info!(
            worker = %worker,
            runtime = %self.runtime.package,
            runtime_version = %self.runtime.version,
            source = %self.runtime.source,
            "environment reloaded"
        );
        self.warn_about_runtime();
        Ok(())
    }
}
