//! The function app on disk, for what the host indexes itself: v1 apps (one folder per
//! function with a `function.json`). When the worker answers the metadata request with
//! `use_default_metadata_indexing`, the platform host reads these folders and sends a
//! FunctionLoadRequest per function; Sluice does the same from here. Reads files only.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::proto::binding_info::{DataType, Direction};
use crate::proto::{BindingInfo, RpcFunctionMetadata};

/// The v1 defaults when function.json leaves them out.
const DEFAULT_SCRIPT_FILE: &str = "__init__.py";
const DEFAULT_ENTRY_POINT: &str = "main";

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a valid function.json: {source}")]
    FunctionJson {
        path: PathBuf,
        source: serde_json::Error,
    },
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct FunctionJson {
    script_file: Option<String>,
    entry_point: Option<String>,
    #[serde(default)]
    disabled: bool,
    #[serde(default)]
    bindings: Vec<serde_json::Value>,
}

/// Every `APP_DIR/<name>/function.json`, as the metadata the host would send, in name
/// order (the host's order: directory enumeration, sorted). Disabled functions are left
/// out, so they answer 404 as on the platform without an admin key.
pub fn index_function_json(app_dir: &Path) -> Result<Vec<RpcFunctionMetadata>, AppError> {
    let read_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| AppError::Read { path, source }
    };
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(app_dir)
        .map_err(read_err(app_dir))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.join("function.json").is_file())
        .collect();
    dirs.sort();
    let mut functions = Vec::new();
    for dir in dirs {
        let path = dir.join("function.json");
        let text = std::fs::read_to_string(&path).map_err(read_err(&path))?;
        let spec: FunctionJson =
            serde_json::from_str(&text).map_err(|source| AppError::FunctionJson {
                path: path.clone(),
                source,
            })?;
        if spec.disabled {
            continue;
        }
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let script = dir.join(spec.script_file.as_deref().unwrap_or(DEFAULT_SCRIPT_FILE));
        functions.push(RpcFunctionMetadata {
            name,
            function_id: uuid::Uuid::new_v4().to_string(),
            directory: dir.display().to_string(),
            script_file: script.display().to_string(),
            entry_point: spec
                .entry_point
                .unwrap_or_else(|| DEFAULT_ENTRY_POINT.to_owned()),
            language: "python".to_owned(),
            bindings: bindings(&spec.bindings),
            raw_bindings: spec.bindings.iter().map(|b| b.to_string()).collect(),
            ..Default::default()
        });
    }
    Ok(functions)
}

fn bindings(raw: &[serde_json::Value]) -> HashMap<String, BindingInfo> {
    let text = |b: &serde_json::Value, key: &str| {
        b.get(key)
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_owned()
    };
    raw.iter()
        .map(|b| {
            let direction = match text(b, "direction").to_ascii_lowercase().as_str() {
                "out" => Direction::Out,
                "inout" => Direction::Inout,
                _ => Direction::In,
            };
            let data_type = match text(b, "dataType").to_ascii_lowercase().as_str() {
                "string" => DataType::String,
                "binary" => DataType::Binary,
                "stream" => DataType::Stream,
                _ => DataType::Undefined,
            };
            let info = BindingInfo {
                r#type: text(b, "type"),
                direction: direction as i32,
                data_type: data_type as i32,
                properties: HashMap::new(),
            };
            (text(b, "name"), info)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_app(files: &[(&str, &str)]) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("sluice-app-{}", uuid::Uuid::new_v4()));
        for (path, text) in files {
            let path = dir.join(path);
            std::fs::create_dir_all(path.parent().expect("has a parent")).expect("mkdir");
            std::fs::write(path, text).expect("write");
        }
        dir
    }

    #[test]
    fn indexes_function_folders_with_defaults() {
        let dir = temp_app(&[
            (
                "HttpTrigger/function.json",
                r#"{"bindings":[{"authLevel":"anonymous","type":"httpTrigger","direction":"in","name":"req","methods":["get"]},{"type":"http","direction":"out","name":"$return"}]}"#,
            ),
            ("HttpTrigger/__init__.py", "def main(req): return 'x'"),
            (
                "Other/function.json",
                r#"{"scriptFile":"run.py","entryPoint":"handler","bindings":[{"type":"httpTrigger","direction":"in","name":"r"},{"type":"http","direction":"out","name":"res"}]}"#,
            ),
            ("Off/function.json", r#"{"disabled":true,"bindings":[]}"#),
            ("not_a_function/readme.txt", "no"),
        ]);
        let functions = index_function_json(&dir).expect("valid app");
        let names: Vec<&str> = functions.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["HttpTrigger", "Other"]);
        let first = &functions[0];
        assert!(first.script_file.ends_with("HttpTrigger/__init__.py"));
        assert_eq!(first.entry_point, "main");
        assert_eq!(first.bindings["$return"].direction, Direction::Out as i32);
        assert_eq!(first.bindings["req"].r#type, "httpTrigger");
        assert_eq!(first.raw_bindings.len(), 2);
        assert!(functions[1].script_file.ends_with("Other/run.py"));
        assert_eq!(functions[1].entry_point, "handler");
        std::fs::remove_dir_all(dir).expect("cleanup");
    }

    #[test]
    fn broken_function_json_names_the_file() {
        let dir = temp_app(&[("Bad/function.json", "{nope")]);
        let err = index_function_json(&dir).expect_err("invalid json");
        assert!(err.to_string().contains("Bad/function.json"), "{err}");
        std::fs::remove_dir_all(dir).expect("cleanup");
    }
}
