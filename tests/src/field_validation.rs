//! `?fieldValidation=` (Ignore, Warn, Strict): what a write does with fields
//! its schema does not know. They are dropped either way; Strict refuses the
//! write with kube-apiserver's `strict decoding error`, Warn (the default) sends
//! `Warning` headers.

use serde_json::{Value, json};

use crate::error::ApiError;
use crate::http::Target;

/// `fieldValidation`: what to do with fields the schema does not know, which
/// are dropped either way (kube-apiserver's default is Warn).
#[derive(Debug, Default)]
pub(crate) struct FieldValidation {
    strict: bool,
    ignore: bool,
    warnings: std::sync::Mutex<Vec<String>>,
}

impl FieldValidation {
    pub(crate) fn parse(value: Option<&String>) -> Result<Self, ApiError> {
        let (strict, ignore) = match value.map(String::as_str) {
            None | Some("" | "Warn") => (false, false),
            Some("Strict") => (true, false),
            Some("Ignore") => (false, true),
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "fieldValidation must be one of \"Ignore\", \"Warn\" or \"Strict\", not {other:?}"
                )));
            }
        };
        Ok(Self {
            strict,
            ignore,
            warnings: std::sync::Mutex::new(Vec::new()),
        })
    }

    /// Prunes and defaults `object` by its schema (a custom resource's, or a
    /// built-in kind's type), then judges the unknown fields.
    pub(crate) fn prune(&self, target: &Target, object: &mut Value) -> Result<(), ApiError> {
        let unknown = if target.rt.from_crd {
            crate::schema::prune_and_default(&target.rt, &target.version, object)
        } else {
            // The type is that of the URL; a body may leave it out.
            if let Some(map) = object.as_object_mut() {
                map.entry("apiVersion")
                    .or_insert_with(|| json!(target.rt.api_version(&target.version)));
                map.entry("kind").or_insert_with(|| json!(target.rt.kind));
            }
            let checked = crate::builtin::unknown_fields(&target.rt.group, &target.rt.kind, object);
            let unknown = checked.transpose().map_err(|e| {
                ApiError::bad_request(format!(
                    "{} in version \"{}\" {e}",
                    target.rt.kind,
                    target.rt.api_version(&target.version)
                ))
            })?;
            let unknown = unknown.unwrap_or_default();
            crate::builtin::drop_fields(object, &unknown);
            unknown
        };
        if unknown.is_empty() || self.ignore {
            return Ok(());
        }
        let listed: Vec<String> = unknown
            .iter()
            .map(|f| format!("unknown field \"{}\"", f.trim_start_matches('.')))
            .collect();
        if self.strict {
            return Err(ApiError::bad_request(format!(
                "strict decoding error: {}",
                listed.join(", ")
            )));
        }
        if let Ok(mut warnings) = self.warnings.lock() {
            warnings.extend(listed);
        }
        Ok(())
    }

    /// Warnings from elsewhere in the request (admission webhooks).
    pub(crate) fn add_warnings(&self, more: Vec<String>) {
        if let Ok(mut warnings) = self.warnings.lock() {
            warnings.extend(more);
        }
    }

    pub(crate) fn warnings(&self) -> Vec<String> {
        self.warnings.lock().map(|w| w.clone()).unwrap_or_default()
    }
}
