//! The REST surface: discovery, and get/list/watch/create/update/patch/delete
//! on every known resource, with kube-apiserver's paths, query parameters,
//! content types and Status errors.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::admission::{Admission, Operation};
use crate::error::ApiError;
use crate::resources::ResourceType;
use crate::selectors::{FieldSelector, LabelSelector};
use crate::store::{Store, Subresource};
use crate::table;

#[derive(Debug)]
pub struct AppState {
    pub store: Arc<Store>,
    pub admission: Admission,
    pub tokens: crate::rbac::Tokens,
    pub audit: crate::rbac::Audit,
    /// The CA of the server's certificate (empty over HTTP), for `kube-root-ca.crt`.
    pub ca_pem: String,
    /// Each test kubelet's node root, where `pods/log` reads containers' output.
    pub node_roots: std::sync::RwLock<HashMap<String, std::path::PathBuf>>,
}

impl AppState {
    /// RBAC's decision on `request`, recorded in the audit log.
    pub fn authorize(&self, identity: &crate::rbac::Identity, request: &crate::rbac::Attributes) -> bool {
        let allowed = crate::rbac::allowed(&self.store, identity, request);
        self.audit.record(identity, request, allowed);
        allowed
    }

    /// Runs the admission chain for a write to `target`.
    async fn admit(
        &self,
        target: &Target,
        operation: Operation,
        namespace: &str,
        object: Option<Value>,
        old: Option<&Value>,
        dry_run: bool,
    ) -> Result<Option<Value>, ApiError> {
        let sub_resource = target.subresource.as_deref();
        let mut object = object;
        if let Some(pod) = object.as_mut()
            && sub_resource.is_none()
        {
            crate::service_accounts::admit(
                &self.store,
                &target.rt.plural,
                &target.rt.group,
                operation,
                namespace,
                pod,
                &self.ca_pem,
            )?;
        }
        let mut warnings = Vec::new();
        let admitted = self
            .admission
            .admit(
                &self.store,
                &target.rt,
                &target.version,
                operation,
                namespace,
                sub_resource,
                &target.user,
                object,
                old,
                dry_run,
                &mut warnings,
            )
            .await;
        target.fields.add_warnings(warnings);
        let admitted = admitted?;
        if let Some(object) = &admitted {
            crate::pod_security::admit(&self.store, target, operation, namespace, object)?;
        }
        Ok(admitted)
    }
}

pub fn router(state: Arc<AppState>) -> Router {
    Router::new().fallback(handle).with_state(state)
}

pub(crate) fn json_response(code: StatusCode, value: &Value) -> Response {
    (code, [(header::CONTENT_TYPE, "application/json")], value.to_string()).into_response()
}

async fn handle(State(state): State<Arc<AppState>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let bytes = match axum::body::to_bytes(body, 64 * 1024 * 1024).await {
        Ok(bytes) => bytes,
        Err(e) => return ApiError::bad_request(format!("reading the body: {e}")).into_response(),
    };
    let query = crate::query::parse(parts.uri.query().unwrap_or_default());
    let path = parts.uri.path().trim_end_matches('/').to_owned();
    let latency = state.store.latency();
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let authorization = parts.headers.get(header::AUTHORIZATION).and_then(|a| a.to_str().ok());
    let identity = match state.tokens.identify(&state.store, authorization) {
        Ok(identity) => identity,
        Err(error) => return error.into_response(),
    };
    match route(&state, &identity, &parts.method, &path, &query, &parts.headers, bytes).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

/// What a resource path names.
pub(crate) struct Target {
    pub(crate) rt: ResourceType,
    pub(crate) version: String,
    pub(crate) namespace: Option<String>,
    pub(crate) name: Option<String>,
    pub(crate) subresource: Option<String>,
    /// `?fieldValidation=`, and the warnings it gives.
    pub(crate) fields: crate::field_validation::FieldValidation,
    /// Who asks, as admission webhooks see it (`userInfo`).
    pub(crate) user: Value,
}

async fn route(
    state: &AppState,
    identity: &crate::rbac::Identity,
    method: &Method,
    path: &str,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|a| a.to_str().ok())
        .unwrap_or_default();
    if let Some(answer) = crate::discovery::non_resource(state, method, &segments, query, accept) {
        return answer;
    }
    let (group, version, rest) = match segments.as_slice() {
        ["api", "v1", rest @ ..] => ("", "v1", rest),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => return Err(ApiError::no_such_path()),
    };
    let (namespace, rest) = match rest {
        ["namespaces", ns, plural, rest @ ..] if !(group.is_empty() && matches!(*plural, "status" | "finalize")) => {
            (Some((*ns).to_owned()), {
                let mut v = vec![*plural];
                v.extend_from_slice(rest);
                v
            })
        }
        other => (None, other.to_vec()),
    };
    let (plural, name, subresource) = match rest.as_slice() {
        [plural] => (*plural, None, None),
        [plural, name] => (*plural, Some((*name).to_owned()), None),
        [plural, name, sub] => (*plural, Some((*name).to_owned()), Some((*sub).to_owned())),
        _ => return Err(ApiError::no_such_path()),
    };
    let rt = state
        .store
        .resource_type(group, version, plural)
        .ok_or_else(ApiError::no_such_path)?;
    if namespace.is_some() && !rt.namespaced {
        return Err(ApiError::not_found(plural, group, name.as_deref().unwrap_or_default()));
    }
    if rt.plural == "serviceaccounts"
        && subresource.as_deref() == Some("token")
        && let (Some(namespace), Some(name)) = (&namespace, &name)
    {
        return crate::auth::request_token(state, identity, namespace, name, method, &body);
    }
    if rt.plural == "pods"
        && subresource.as_deref() == Some("log")
        && let (Some(namespace), Some(name)) = (&namespace, &name)
    {
        return crate::pod_logs::get(state, identity, method, namespace, name, query);
    }
    if let Some(sub) = &subresource
        && !(sub == "status" && rt.status_subresource)
    {
        return Err(ApiError::not_found(
            &format!("{plural}/{sub}"),
            group,
            name.as_deref().unwrap_or_default(),
        ));
    }
    let target = Target {
        rt,
        version: version.to_owned(),
        namespace,
        name,
        subresource,
        fields: crate::field_validation::FieldValidation::parse(query.get("fieldValidation"))?,
        user: identity.user_info(),
    };
    let verb = match (
        method.as_str(),
        target.name.is_some(),
        query.get("watch").is_some_and(|w| w == "true" || w == "1"),
    ) {
        ("GET", _, true) => "watch",
        ("GET", true, _) => "get",
        ("GET", false, _) => "list",
        ("POST", _, _) => "create",
        ("PUT", _, _) => "update",
        ("PATCH", _, _) => "patch",
        ("DELETE", true, _) => "delete",
        ("DELETE", false, _) => "deletecollection",
        _ => {
            return Err(ApiError::method_not_allowed(format!(
                "the server does not allow this method on the requested resource: {method}"
            )));
        }
    };
    // As kube-apiserver does, a list or watch narrowed to one name by
    // `fieldSelector=metadata.name=X` is authorised as a request for X.
    let selected_name = || {
        let selector = query.get("fieldSelector")?;
        selector.split(',').find_map(|term| {
            let value = term
                .strip_prefix("metadata.name==")
                .or_else(|| term.strip_prefix("metadata.name="))?;
            (!value.is_empty()).then(|| value.to_owned())
        })
    };
    let attributes = crate::rbac::Attributes {
        verb: verb.to_owned(),
        group: target.rt.group.clone(),
        resource: target.rt.plural.clone(),
        subresource: target.subresource.clone(),
        namespace: target.namespace.clone(),
        name: target
            .name
            .clone()
            .or_else(|| matches!(verb, "list" | "watch").then(selected_name).flatten()),
        path: None,
    };
    if matches!(
        target.rt.group.as_str(),
        "authorization.k8s.io" | "authentication.k8s.io"
    ) {
        return crate::auth::self_review(state, identity, &target, verb, &body);
    }
    if !state.authorize(identity, &attributes) {
        return Err(crate::rbac::denial(identity, &attributes));
    }
    state.store.count(verb, &target.rt.group, &target.rt.plural);
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|a| a.to_str().ok())
        .unwrap_or_default();
    let shape = if accept.contains("as=Table") {
        Shape::Table
    } else if accept.contains("as=PartialObjectMetadata") {
        // Counted apart too, so tests can tell metadata-only readers.
        state
            .store
            .count(&format!("{verb} as metadata"), &target.rt.group, &target.rt.plural);
        Shape::Metadata
    } else {
        Shape::Object
    };
    let dry_run = query.get("dryRun").is_some_and(|d| d == "All");
    let mut response = match verb {
        "watch" => crate::watch::watch(state, &target, query, shape),
        "get" => get(state, &target, shape),
        "list" => list(state, &target, query, shape),
        "create" => create(state, &target, &body, dry_run).await,
        "update" => update(state, &target, &body, dry_run).await,
        "patch" => crate::patch::patch(state, &target, headers, &body, dry_run).await,
        "delete" => delete(state, &target, &body, query, dry_run).await,
        _ => delete_collection(state, &target, query, dry_run).await,
    }?;
    for text in crate::warnings::headers(&target.fields.warnings()) {
        // Raw UTF-8, as kube-apiserver writes it (from_str takes visible ASCII only).
        if let Ok(value) = header::HeaderValue::from_bytes(text.as_bytes()) {
            response.headers_mut().append(header::WARNING, value);
        }
    }
    Ok(response)
}

/// Objects are stored once and served in every version: conversion is None.
pub(crate) fn in_version(object: Value, target: &Target) -> Value {
    served_form(&target.rt, &target.version, object)
}

/// A stored object as `rt` serves it in `version`: its apiVersion and kind,
/// and for events.k8s.io Events, that API's field names.
pub(crate) fn served_form(rt: &ResourceType, version: &str, object: Value) -> Value {
    let mut object = if crate::events::is_events_api(&rt.group, &rt.plural) {
        crate::events::to_events_api(object)
    } else {
        object
    };
    if let Some(map) = object.as_object_mut() {
        map.insert("apiVersion".to_owned(), json!(rt.api_version(version)));
        map.insert("kind".to_owned(), json!(rt.kind));
    }
    object
}

/// What a read returns, chosen by the Accept header as kube-apiserver does:
/// the object, a Table for kubectl, or only its metadata
/// (`as=PartialObjectMetadata[List];g=meta.k8s.io;v=v1`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Shape {
    Object,
    Table,
    Metadata,
}

pub(crate) fn metadata_only(object: &Value) -> Value {
    json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata", "metadata": object["metadata"]})
}

pub(crate) fn namespace(target: &Target) -> &str {
    target.namespace.as_deref().unwrap_or_default()
}

fn get(state: &AppState, target: &Target, shape: Shape) -> Result<Response, ApiError> {
    let name = target.name.as_deref().unwrap_or_default();
    let object = in_version(state.store.get(&target.rt, namespace(target), name)?, target);
    if shape == Shape::Metadata {
        return Ok(json_response(StatusCode::OK, &metadata_only(&object)));
    }
    if shape == Shape::Table {
        let rv = state.store.resource_version();
        return Ok(json_response(
            StatusCode::OK,
            &table::table(&target.rt, &target.version, &[object], rv),
        ));
    }
    Ok(json_response(StatusCode::OK, &object))
}

pub(crate) fn selectors(
    target: &Target,
    query: &HashMap<String, String>,
) -> Result<(LabelSelector, FieldSelector), ApiError> {
    let labels = LabelSelector::parse(query.get("labelSelector").map(String::as_str).unwrap_or_default())
        .map_err(ApiError::bad_request)?;
    let fields = FieldSelector::parse(
        query.get("fieldSelector").map(String::as_str).unwrap_or_default(),
        &target.rt.field_selectors,
    )
    .map_err(ApiError::bad_request)?;
    Ok((labels, fields))
}

fn list(
    state: &AppState,
    target: &Target,
    query: &HashMap<String, String>,
    shape: Shape,
) -> Result<Response, ApiError> {
    let (labels, fields) = selectors(target, query)?;
    let (items, rv) = state.store.list(&target.rt, target.namespace.as_deref());
    let mut items: Vec<Value> = items
        .into_iter()
        .filter(|o| labels.matches(o) && fields.matches(o))
        .map(|o| in_version(o, target))
        .collect();
    // `continue` is the index to resume from, with the list's resourceVersion.
    let start = match query.get("continue").filter(|c| !c.is_empty()) {
        Some(token) => token
            .split_once(':')
            .and_then(|(_, i)| i.parse::<usize>().ok())
            .ok_or_else(|| ApiError::bad_request("invalid continue token"))?,
        None => 0,
    };
    let limit = query
        .get("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .filter(|l| *l > 0);
    let total = items.len();
    items = items.into_iter().skip(start).collect();
    let mut metadata = json!({"resourceVersion": rv.to_string()});
    if let Some(limit) = limit
        && items.len() > limit
    {
        items.truncate(limit);
        metadata["continue"] = json!(format!("{rv}:{}", start + limit));
        metadata["remainingItemCount"] = json!(total - start - limit);
    }
    match shape {
        Shape::Table => {
            let mut table = table::table(&target.rt, &target.version, &items, rv);
            table["metadata"] = metadata;
            return Ok(json_response(StatusCode::OK, &table));
        }
        Shape::Metadata => {
            let items: Vec<Value> = items.iter().map(metadata_only).collect();
            let list = json!({"kind": "PartialObjectMetadataList", "apiVersion": "meta.k8s.io/v1",
                              "metadata": metadata, "items": items});
            return Ok(json_response(StatusCode::OK, &list));
        }
        Shape::Object => {}
    }
    let list = json!({
        "kind": format!("{}List", target.rt.kind), "apiVersion": target.rt.api_version(&target.version),
        "metadata": metadata, "items": items,
    });
    Ok(json_response(StatusCode::OK, &list))
}

pub(crate) fn parse_body(body: &[u8]) -> Result<Value, ApiError> {
    if body.starts_with(crate::protobuf::MAGIC) {
        return crate::protobuf::decode(body).map_err(|e| match e {
            crate::protobuf::ProtobufError::Malformed(why) => {
                ApiError::bad_request(format!("the protobuf body cannot be decoded: {why}"))
            }
            crate::protobuf::ProtobufError::Unsupported(why) => ApiError::unsupported_media_type(why),
        });
    }
    let value: Value = serde_json::from_slice(body)
        .or_else(|_| serde_saphyr::from_slice(body))
        .map_err(|e| ApiError::bad_request(format!("the body is not JSON or YAML: {e}")))?;
    if !value.is_object() || value.get("metadata").is_some_and(|m| !m.is_object()) {
        return Err(ApiError::bad_request(
            "the body must be an object, with metadata an object",
        ));
    }
    Ok(value)
}

fn created(object: Value, target: &Target, code: StatusCode) -> Response {
    json_response(code, &in_version(object, target))
}

async fn create(state: &AppState, target: &Target, body: &[u8], dry_run: bool) -> Result<Response, ApiError> {
    if target.name.is_some() {
        return Err(ApiError::method_not_allowed("POST is for collections"));
    }
    let object = parse_body(body)?;
    let body_namespace = object
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    if target.rt.namespaced && !body_namespace.is_empty() && body_namespace != namespace(target) {
        return Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        ));
    }
    store_new(state, target, object, dry_run).await
}

/// Creates an object as kube-apiserver does: schema pruning and defaulting,
/// the admission chain, then storage.
/// What is stored for an object written through `target`: events.k8s.io
/// Events are stored as core Events.
fn stored_form(target: &Target, object: Value) -> Value {
    if crate::events::is_events_api(&target.rt.group, &target.rt.plural) {
        crate::events::to_core(object)
    } else {
        object
    }
}

pub(crate) async fn store_new(
    state: &AppState,
    target: &Target,
    object: Value,
    dry_run: bool,
) -> Result<Response, ApiError> {
    let stored = create_object(state, target, object, dry_run).await?;
    Ok(created(stored, target, StatusCode::CREATED))
}

/// [`store_new`]'s write: the stored object.
pub(crate) async fn create_object(
    state: &AppState,
    target: &Target,
    mut object: Value,
    dry_run: bool,
) -> Result<Value, ApiError> {
    let ns = namespace(target).to_owned();
    target.fields.prune(target, &mut object)?;
    let object = state
        .admit(target, Operation::Create, &ns, Some(object), None, dry_run)
        .await?;
    state.store.create(
        &target.rt,
        &ns,
        stored_form(target, object.unwrap_or_default()),
        dry_run,
    )
}

impl Target {
    /// A create in `namespace` of `rt` by `user` (`userInfo`), as an
    /// in-process controller of the cluster makes one.
    pub(crate) fn create_by(rt: ResourceType, namespace: &str, user: Value) -> Self {
        Self {
            version: rt.versions.first().map(|v| v.name.clone()).unwrap_or_default(),
            rt,
            namespace: Some(namespace.to_owned()),
            name: None,
            subresource: None,
            fields: crate::field_validation::FieldValidation::default(),
            user,
        }
    }
}

async fn update(state: &AppState, target: &Target, body: &[u8], dry_run: bool) -> Result<Response, ApiError> {
    let mut object = parse_body(body)?;
    target.fields.prune(target, &mut object)?;
    write(state, target, object, dry_run).await
}

/// Stores a new state of an existing object through admission.
pub(crate) async fn write(
    state: &AppState,
    target: &Target,
    object: Value,
    dry_run: bool,
) -> Result<Response, ApiError> {
    let name = target.name.clone().unwrap_or_default();
    let ns = namespace(target).to_owned();
    let old = state.store.get(&target.rt, &ns, &name)?;
    let object = state
        .admit(target, Operation::Update, &ns, Some(object), Some(&old), dry_run)
        .await?
        .unwrap_or_default();
    let subresource = if target.subresource.as_deref() == Some("status") {
        Subresource::Status
    } else {
        Subresource::Main
    };
    let stored = state.store.update(
        &target.rt,
        &ns,
        &name,
        stored_form(target, object),
        subresource,
        dry_run,
    )?;
    Ok(created(stored, target, StatusCode::OK))
}

async fn delete(
    state: &AppState,
    target: &Target,
    body: &[u8],
    query: &HashMap<String, String>,
    dry_run: bool,
) -> Result<Response, ApiError> {
    let name = target.name.clone().unwrap_or_default();
    let options: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let dry_run = dry_run
        || options["dryRun"]
            .as_array()
            .is_some_and(|d| d.iter().any(|v| v == "All"));
    let propagation = query
        .get("propagationPolicy")
        .cloned()
        .or_else(|| options["propagationPolicy"].as_str().map(str::to_owned));
    let ns = namespace(target).to_owned();
    let current = state.store.get(&target.rt, &ns, &name)?;
    if let Some(uid) = options.pointer("/preconditions/uid").and_then(Value::as_str)
        && current.pointer("/metadata/uid").and_then(Value::as_str) != Some(uid)
    {
        return Err(ApiError::conflict(&target.rt.plural, &target.rt.group, &name));
    }
    state
        .admit(target, Operation::Delete, &ns, None, Some(&current), dry_run)
        .await?;
    let (object, gone) = state.store.delete(
        &target.rt,
        &ns,
        &name,
        dry_run,
        propagation.as_deref() == Some("Orphan"),
    )?;
    // kube-apiserver answers with the object: 200 once gone, 202 while finalizers remain.
    let code = if gone { StatusCode::OK } else { StatusCode::ACCEPTED };
    Ok(json_response(code, &in_version(object, target)))
}

async fn delete_collection(
    state: &AppState,
    target: &Target,
    query: &HashMap<String, String>,
    dry_run: bool,
) -> Result<Response, ApiError> {
    let (labels, fields) = selectors(target, query)?;
    let (items, rv) = state.store.list(&target.rt, target.namespace.as_deref());
    let mut deleted = Vec::new();
    for item in items.into_iter().filter(|o| labels.matches(o) && fields.matches(o)) {
        let name = item
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let ns = item
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        state
            .admit(target, Operation::Delete, &ns, None, Some(&item), dry_run)
            .await?;
        if let Ok((object, _)) = state.store.delete(&target.rt, &ns, &name, dry_run, false) {
            deleted.push(in_version(object, target));
        }
    }
    let list = json!({"kind": format!("{}List", target.rt.kind), "apiVersion": target.rt.api_version(&target.version), "metadata": {"resourceVersion": rv.to_string()}, "items": deleted});
    Ok(json_response(StatusCode::OK, &list))
}
