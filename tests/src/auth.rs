//! The authentication and authorization endpoints: TokenRequest
//! (`serviceaccounts/token`) and the self reviews behind `kubectl auth can-i`
//! and `kubectl auth whoami`. Never stored; the decisions are `rbac`'s.

use axum::http::{Method, StatusCode};
use axum::response::Response;
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::http::{AppState, Target, json_response, parse_body};
use crate::rbac::{BoundObject, Extra};
use crate::store::Store;

/// TokenRequest: a token that authenticates as the ServiceAccount, bound to
/// a Pod, Node or Secret when `spec.boundObjectRef` names one. As
/// kube-apiserver's `serviceaccount/storage/token.go` (with
/// ServiceAccountTokenPodNodeInfo and ServiceAccountTokenNodeBinding, on by
/// default since 1.30 and 1.31): the object must exist, a Pod must run as this
/// ServiceAccount, a given uid must match, and the token's user carries the
/// bound objects' names and uids in `userInfo.extra`.
pub(crate) fn request_token(
    state: &AppState,
    identity: &crate::rbac::Identity,
    namespace: &str,
    name: &str,
    method: &Method,
    body: &[u8],
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
    let request = if body.is_empty() { json!({}) } else { parse_body(body)? };
    let accounts = state
        .store
        .resource_type("", "v1", "serviceaccounts")
        .ok_or_else(|| ApiError::not_found("serviceaccounts", "", name))?;
    state.store.get(&accounts, namespace, name)?;
    let (extra, bound) = match request.pointer("/spec/boundObjectRef").filter(|r| !r.is_null()) {
        Some(reference) => bind(&state.store, namespace, name, reference)?,
        None => (Extra::new(), None),
    };
    let token = state.tokens.issue_bound(namespace, name, extra, bound);
    Ok(json_response(
        StatusCode::CREATED,
        &json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                "metadata": {"name": name, "namespace": namespace},
                "spec": {"audiences": ["https://kubernetes.default.svc"],
                         "boundObjectRef": request.pointer("/spec/boundObjectRef")},
                "status": {"token": token, "expirationTimestamp": "2099-01-01T00:00:00Z"}}),
    ))
}

/// The `userInfo.extra` and the bound object of a token for ServiceAccount
/// `namespace/account` bound to `reference`.
pub(crate) fn bind(
    store: &Store,
    namespace: &str,
    account: &str,
    reference: &Value,
) -> Result<(Extra, Option<BoundObject>), ApiError> {
    let text = |key: &str| reference.get(key).and_then(Value::as_str).unwrap_or_default();
    let (kind, name, wanted_uid) = (text("kind"), text("name"), text("uid"));
    let group = text("apiVersion").rsplit_once('/').map_or("", |(group, _)| group);
    let (plural, object_namespace) = match (group, kind) {
        ("", "Pod") => ("pods", namespace),
        ("", "Node") => ("nodes", ""),
        ("", "Secret") => ("secrets", namespace),
        _ => {
            let version = text("apiVersion");
            return Err(ApiError::bad_request(format!(
                "cannot bind token to object of type {group}/{}, Kind={kind}",
                version.rsplit('/').next().unwrap_or_default()
            )));
        }
    };
    let get = |plural: &str, namespace: &str, name: &str| {
        let rt = store
            .resource_type("", "v1", plural)
            .ok_or_else(|| ApiError::not_found(plural, "", name))?;
        store.get(&rt, namespace, name)
    };
    let uid_of = |object: &Value| {
        object
            .pointer("/metadata/uid")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let object = get(plural, object_namespace, name)?;
    let uid = uid_of(&object);
    if !wanted_uid.is_empty() && wanted_uid != uid {
        return Err(ApiError::conflict_because(
            kind,
            group,
            name,
            &format!(
                "the UID in the bound object reference ({wanted_uid}) does not match the UID in record. The object might have been deleted and then recreated"
            ),
        ));
    }
    let mut extra = Extra::new();
    let mut note = |key: &str, value: String| {
        extra.insert(format!("authentication.kubernetes.io/{key}"), vec![value]);
    };
    note("credential-id", format!("JTI={}", uuid::Uuid::new_v4()));
    match kind {
        "Pod" => {
            if object.pointer("/spec/serviceAccountName").and_then(Value::as_str) != Some(account) {
                return Err(ApiError::bad_request(format!(
                    "cannot bind token for serviceaccount {account:?} to pod running with different serviceaccount name."
                )));
            }
            note("pod-name", name.to_owned());
            note("pod-uid", uid.clone());
            if let Some(node) = object
                .pointer("/spec/nodeName")
                .and_then(Value::as_str)
                .filter(|n| !n.is_empty())
            {
                note("node-name", node.to_owned());
                if let Ok(node_object) = get("nodes", "", node) {
                    note("node-uid", uid_of(&node_object));
                }
            }
        }
        "Node" => {
            note("node-name", name.to_owned());
            note("node-uid", uid.clone());
        }
        _ => {}
    }
    let bound = BoundObject {
        plural,
        namespace: object_namespace.to_owned(),
        name: name.to_owned(),
        uid,
    };
    Ok((extra, Some(bound)))
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
        _ => json!({"userInfo": identity.user_info()}),
    };
    let mut answer = review;
    answer["status"] = status;
    answer["apiVersion"] = json!(target.rt.api_version(&target.version));
    answer["kind"] = json!(target.rt.kind);
    Ok(json_response(StatusCode::CREATED, &answer))
}
