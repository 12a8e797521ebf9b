//! PATCH in its four kinds (JSON Patch, merge patch, strategic merge patch for
//! built-in kinds, server-side apply), through admission like any write.

use axum::http::{HeaderMap, header};
use axum::response::Response;

use crate::error::ApiError;
use crate::http::{AppState, Target, in_version, namespace, parse_body, store_new, write};

/// Patches as kube-apiserver does: a patch that does not name a
/// resourceVersion is applied again to the newest object when another write
/// came in between (its update loop), so only preconditioned patches conflict.
pub(crate) async fn patch(
    state: &AppState,
    target: &Target,
    headers: &HeaderMap,
    body: &[u8],
    dry_run: bool,
) -> Result<Response, ApiError> {
    const ATTEMPTS: usize = 5;
    let mut attempt = 0;
    loop {
        attempt += 1;
        match patch_once(state, target, headers, body, dry_run).await {
            Err(PatchError::Raced(_)) if attempt < ATTEMPTS => continue,
            Err(PatchError::Raced(e) | PatchError::Api(e)) => return Err(e),
            Ok(response) => return Ok(response),
        }
    }
}

enum PatchError {
    /// A conflict the patch did not ask for: someone wrote in between.
    Raced(ApiError),
    Api(ApiError),
}

impl From<ApiError> for PatchError {
    fn from(e: ApiError) -> Self {
        Self::Api(e)
    }
}

async fn patch_once(
    state: &AppState,
    target: &Target,
    headers: &HeaderMap,
    body: &[u8],
    dry_run: bool,
) -> Result<Response, PatchError> {
    let name = target
        .name
        .clone()
        .ok_or_else(|| ApiError::method_not_allowed("PATCH needs a name"))?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|c| c.to_str().ok())
        .unwrap_or_default();
    let media = content_type.split(';').next().unwrap_or_default().trim();
    let current = match state.store.get(&target.rt, namespace(target), &name) {
        Ok(current) => Some(in_version(current, target)),
        Err(e) if e.code == 404 && media == "application/apply-patch+yaml" => None,
        Err(e) => return Err(e.into()),
    };
    let read_version = current
        .as_ref()
        .and_then(|c| c.pointer("/metadata/resourceVersion"))
        .cloned();
    let patched = match (media, current) {
        ("application/json-patch+json", Some(mut current)) => {
            let patch: json_patch::Patch =
                serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("invalid JSON patch: {e}")))?;
            let patch = null_tests_of_absent_members_pass(&current, patch);
            json_patch::patch(&mut current, &patch).map_err(|e| {
                ApiError::invalid(
                    &target.rt.kind,
                    &target.rt.group,
                    &name,
                    &[(
                        "".to_owned(),
                        "FieldValueInvalid",
                        format!("the JSON patch could not be applied: {e}"),
                    )],
                )
            })?;
            current
        }
        ("application/merge-patch+json", Some(mut current)) => {
            let patch = parse_body(body)?;
            json_patch::merge(&mut current, &patch);
            current
        }
        ("application/strategic-merge-patch+json", Some(_)) if target.rt.from_crd => {
            return Err(ApiError::unsupported_media_type(
                "strategic merge patch format is not supported for custom resources: use application/merge-patch+json or application/json-patch+json (kubectl patch --type=merge)",
            )
            .into());
        }
        ("application/strategic-merge-patch+json", Some(mut current)) => {
            let patch = parse_body(body)?;
            crate::strategic::apply(&mut current, &patch)
                .map_err(|e| ApiError::bad_request(format!("invalid strategic merge patch: {e}")))?;
            current
        }
        ("application/apply-patch+yaml", current) => {
            let applied = parse_body(body)?;
            match current {
                Some(mut current) => {
                    json_patch::merge(&mut current, &applied);
                    current
                }
                None => return Ok(store_new(state, target, applied, dry_run).await?),
            }
        }
        (other, _) => {
            return Err(ApiError::unsupported_media_type(format!(
                "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json, application/apply-patch+yaml (got {other:?})"
            ))
            .into());
        }
    };
    let mut patched = patched;
    if let Some(field) = crate::strategic::directive_key(&patched, "") {
        return Err(ApiError::bad_request(format!(
            "{field}: field names starting with '$' are patch directives and cannot be stored"
        ))
        .into());
    }
    target.fields.prune(target, &mut patched)?;
    let unchanged_version =
        read_version.is_some() && patched.pointer("/metadata/resourceVersion") == read_version.as_ref();
    match write(state, target, patched, dry_run).await {
        Err(e) if e.code == 409 && unchanged_version => Err(PatchError::Raced(e)),
        other => Ok(other?),
    }
}

/// kube-apiserver applies JSON patches with evanphx/json-patch, whose `test`
/// of a member that is absent (in an object that exists) against `null`
/// succeeds (`if val == nil { if op.value().raw == nil { return nil } … }` in v4,
/// `ov.isNull()` in v5), where RFC 6902, and the `json_patch` crate, fail it.
/// Clients rely on it to add a member only if it is absent; here such tests are
/// dropped before the patch is applied, operation by operation, as they hold.
fn null_tests_of_absent_members_pass(document: &serde_json::Value, patch: json_patch::Patch) -> json_patch::Patch {
    let mut current = document.clone();
    let mut kept = Vec::with_capacity(patch.0.len());
    for operation in patch.0 {
        if let json_patch::PatchOperation::Test(test) = &operation
            && test.value.is_null()
        {
            let path = test.path.to_string();
            let (parent, _) = path.rsplit_once('/').unwrap_or(("", ""));
            let parent_exists = parent.is_empty() || current.pointer(parent).is_some_and(serde_json::Value::is_object);
            if parent_exists && current.pointer(&path).is_none() {
                continue;
            }
        }
        // Later tests see the document as the operations before them left it.
        let _ = json_patch::patch(&mut current, std::slice::from_ref(&operation));
        kept.push(operation);
    }
    json_patch::Patch(kept)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn apply(document: serde_json::Value, operations: serde_json::Value) -> Result<serde_json::Value, String> {
        let patch: json_patch::Patch = serde_json::from_value(operations).map_err(|e| e.to_string())?;
        let mut document = document;
        let patch = null_tests_of_absent_members_pass(&document, patch);
        json_patch::patch(&mut document, &patch).map_err(|e| e.to_string())?;
        Ok(document)
    }

    #[test]
    fn a_null_test_adds_only_what_is_absent_as_kube_apiserver_does() {
        let add_b = json!([{"op": "test", "path": "/images/b", "value": null},
                           {"op": "add", "path": "/images/b", "value": 2}]);
        assert_eq!(
            apply(json!({"images": {"a": 1}}), add_b.clone()),
            Ok(json!({"images": {"a": 1, "b": 2}}))
        );
        assert!(
            apply(json!({"images": {"a": 1, "b": 3}}), add_b.clone()).is_err(),
            "b is there: the test fails"
        );
        assert!(
            apply(json!({}), add_b).is_err(),
            "no images object: the path is missing"
        );
        let twice = json!([{"op": "add", "path": "/images/b", "value": 2},
                           {"op": "test", "path": "/images/b", "value": null}]);
        assert!(
            apply(json!({"images": {}}), twice).is_err(),
            "a test sees what the operations before it did"
        );
    }
}
