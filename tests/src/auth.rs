//! The authentication and authorization endpoints: TokenRequest
//! (`serviceaccounts/token`) and the self reviews behind `kubectl auth can-i`
//! and `kubectl auth whoami`. Never stored; the decisions are `rbac`'s.

use axum::http::{Method, StatusCode};
use axum::response::Response;
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::http::{AppState, Target, json_response, parse_body};

/// TokenRequest: a token that authenticates as the ServiceAccount.
pub(crate) fn request_token(
    state: &AppState,
    identity: &crate::rbac::Identity,
    namespace: &str,
    name: &str,
    method: &Method,
) -> Result<Response, ApiError> {
    if method != Method::POST {
        return Err(ApiError::method_not_allowed(
            "serviceaccounts/token takes POST (a TokenRequest)",
        ));
    }
    let attributes = crate::rbac::Attributes {
        verb: "create".to_owned(),
        resource: "serviceaccounts".to_owned(),
        subresource: Some("token".to_owned()),
        namespace: Some(namespace.to_owned()),
        name: Some(name.to_owned()),
        ..crate::rbac::Attributes::default()
    };
    if !state.authorize(identity, &attributes) {
        return Err(crate::rbac::denial(identity, &attributes));
    }
    let accounts = state
        .store
        .resource_type("", "v1", "serviceaccounts")
        .ok_or_else(|| ApiError::not_found("serviceaccounts", "", name))?;
    state.store.get(&accounts, namespace, name)?;
    let token = state.tokens.issue(namespace, name);
    Ok(json_response(
        StatusCode::CREATED,
        &json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                "metadata": {"name": name, "namespace": namespace},
                "spec": {"audiences": ["https://kubernetes.default.svc"]},
                "status": {"token": token, "expirationTimestamp": "2099-01-01T00:00:00Z"}}),
    ))
}

/// SelfSubjectAccessReview, SelfSubjectRulesReview and SelfSubjectReview:
/// answered for the caller, never stored.
pub(crate) fn self_review(
    state: &AppState,
    identity: &crate::rbac::Identity,
    target: &Target,
    verb: &str,
    body: &[u8],
) -> Result<Response, ApiError> {
    if verb != "create" {
        return Err(ApiError::method_not_allowed(format!(
            "{} can only be created",
            target.rt.plural
        )));
    }
    let review = parse_body(body)?;
    let status = match target.rt.kind.as_str() {
        "SelfSubjectAccessReview" => crate::rbac::access_review(&state.store, identity, &review),
        "SelfSubjectRulesReview" => {
            let namespace = review.pointer("/spec/namespace").and_then(Value::as_str);
            let rules = crate::rbac::rules(&state.store, identity, namespace);
            let (resource, non_resource): (Vec<Value>, Vec<Value>) =
                rules.into_iter().partition(|r| r.get("nonResourceURLs").is_none());
            json!({"resourceRules": resource, "nonResourceRules": non_resource, "incomplete": false})
        }
        _ => json!({"userInfo": {"username": identity.username(), "groups": identity.groups()}}),
    };
    let mut answer = review;
    answer["status"] = status;
    answer["apiVersion"] = json!(target.rt.api_version(&target.version));
    answer["kind"] = json!(target.rt.kind);
    Ok(json_response(StatusCode::CREATED, &answer))
}
