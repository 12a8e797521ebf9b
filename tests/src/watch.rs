//! Watches as kube-apiserver serves them: from a resourceVersion (events
//! kept in history, 410 Gone when too old) or from now with the current
//! objects first, bookmarks, timeouts, and in every read shape.

use std::collections::HashMap;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::http::{AppState, Shape, Target, metadata_only, selectors};
use crate::store::{Key, WatchEvent};
use crate::table;

fn watch_line(type_: &str, object: Value) -> Bytes {
    let mut line = json!({"type": type_, "object": object}).to_string();
    line.push('\n');
    Bytes::from(line)
}

/// `{"type":…,"object":…}` around an object already serialised, type first
/// as kube-apiserver writes it.
fn raw_watch_line(type_: &str, object: &[u8]) -> Bytes {
    let mut line = Vec::with_capacity(object.len() + type_.len() + 24);
    line.extend_from_slice(b"{\"type\":\"");
    line.extend_from_slice(type_.as_bytes());
    line.extend_from_slice(b"\",\"object\":");
    line.extend_from_slice(object);
    line.extend_from_slice(b"}\n");
    Bytes::from(line)
}

fn bookmark(target: &Target, resource_version: u64, initial_end: bool) -> Value {
    let mut metadata = json!({"resourceVersion": resource_version.to_string()});
    if initial_end {
        metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    json!({"kind": target.rt.kind, "apiVersion": target.rt.api_version(&target.version), "metadata": metadata})
}

pub(crate) fn watch(
    state: &AppState,
    target: &Target,
    query: &HashMap<String, String>,
    shape: Shape,
) -> Result<Response, ApiError> {
    let (labels, fields) = selectors(target, query)?;
    let bookmarks = query.get("allowWatchBookmarks").is_some_and(|b| b == "true");
    let send_initial = query.get("sendInitialEvents").is_some_and(|s| s == "true");
    let requested = query.get("resourceVersion").cloned().unwrap_or_default();
    let timeout = query
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .unwrap_or(1800);
    // Subscribe first: nothing that happens from here on can be missed.
    let mut live = state.store.subscribe();
    let mut initial: Vec<Bytes> = Vec::new();
    let rt = target.rt.clone();
    let ns = target.namespace.clone();
    let name = target.name.clone();
    let in_scope = move |key: &Key| {
        key.group == crate::store::storage_group(&rt)
            && key.plural == rt.plural
            && ns.as_ref().is_none_or(|ns| key.namespace == *ns)
            && name.as_ref().is_none_or(|n| key.name == *n)
    };
    let labels_all = labels.is_empty();
    let by_name = {
        let fields = fields.clone();
        move |key: &Key| fields.matches_name(&key.namespace, &key.name)
    };
    let selects = move |object: &Value| labels.matches(object) && fields.matches(object);
    let encode = {
        let target_rt = target.rt.clone();
        let version = target.version.clone();
        move |object: Value| -> Value {
            let object = crate::http::served_form(&target_rt, &version, object);
            match shape {
                Shape::Table => {
                    let rv = object
                        .pointer("/metadata/resourceVersion")
                        .and_then(Value::as_str)
                        .and_then(|r| r.parse().ok())
                        .unwrap_or(0);
                    table::table(&target_rt, &version, &[object], rv)
                }
                Shape::Metadata => metadata_only(&object),
                Shape::Object => object,
            }
        }
    };
    // The line for a stored event, or `None` when its object is not selected.
    // Most watchers want the object as stored and select by key only: their
    // line is the stored JSON as it is, parsed by nobody.
    let as_stored = shape == Shape::Object && !crate::events::is_events_api(&target.rt.group, &target.rt.plural);
    let served_api_version = target.rt.api_version(&target.version);
    let event_line = {
        let (in_scope, selects, encode) = (in_scope.clone(), selects.clone(), encode.clone());
        move |event: &WatchEvent| -> Option<Bytes> {
            if !in_scope(&event.key) {
                return None;
            }
            if as_stored && labels_all && event.api_version == served_api_version {
                match by_name(&event.key) {
                    Some(true) => return Some(raw_watch_line(event.type_, &event.json)),
                    Some(false) => return None,
                    None => {}
                }
            }
            let object = event.object();
            selects(&object).then(|| watch_line(event.type_, encode(object)))
        }
    };
    let mut last = if send_initial || requested.is_empty() || requested == "0" {
        let (items, rv) = state.store.list(&target.rt, target.namespace.as_deref());
        for item in items {
            let key = Key {
                group: crate::store::storage_group(&target.rt).to_owned(),
                plural: target.rt.plural.clone(),
                namespace: item
                    .pointer("/metadata/namespace")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned(),
                name: item
                    .pointer("/metadata/name")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned(),
            };
            if in_scope(&key) && selects(&item) {
                initial.push(watch_line("ADDED", encode(item)));
            }
        }
        if send_initial && bookmarks {
            initial.push(watch_line("BOOKMARK", bookmark(target, rv, true)));
        }
        rv
    } else {
        let since: u64 = requested
            .parse()
            .map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {requested:?}")))?;
        match state.store.events_since(since) {
            Some(events) => {
                initial.extend(events.iter().filter_map(|e| event_line(e)));
                events.last().map_or(since, |e| e.resource_version).max(since)
            }
            None => {
                let gone = ApiError::gone(format!(
                    "too old resource version: {since} ({})",
                    state.store.resource_version()
                ));
                initial.push(watch_line("ERROR", gone.status()));
                let body = Body::from_stream(futures_util::stream::iter(
                    initial.into_iter().map(Ok::<_, std::convert::Infallible>),
                ));
                return Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response());
            }
        }
    };
    let store = state.store.clone();
    let bookmark_target = Target {
        rt: target.rt.clone(),
        version: target.version.clone(),
        namespace: None,
        name: None,
        subresource: None,
        fields: Default::default(),
        user: Value::Null,
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout);
    let mut epoch = state.store.watch_epoch();
    epoch.mark_unchanged();
    let stream = async_stream(move |tx| async move {
        for line in initial {
            if tx.send(line).await.is_err() {
                return;
            }
        }
        let mut ticker = tokio::time::interval(Duration::from_secs(5));
        ticker.tick().await;
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(deadline) => return,
                _ = epoch.changed() => return,
                _ = ticker.tick(), if bookmarks => {
                    let rv = store.resource_version().max(last);
                    if tx.send(watch_line("BOOKMARK", bookmark(&bookmark_target, rv, false))).await.is_err() {
                        return;
                    }
                }
                received = live.recv() => match received {
                    Ok(event) => {
                        if event.resource_version <= last {
                            continue;
                        }
                        let Some(line) = event_line(&event) else { continue };
                        last = event.resource_version;
                        if tx.send(line).await.is_err() {
                            return;
                        }
                    }
                    // A watcher that falls behind is closed; the client lists again.
                    Err(_) => return,
                },
            }
        }
    });
    Ok(([(header::CONTENT_TYPE, "application/json")], Body::from_stream(stream)).into_response())
}

/// A stream fed by a task through a channel.
fn async_stream<F, Fut>(produce: F) -> impl futures_util::Stream<Item = Result<Bytes, std::convert::Infallible>>
where
    F: FnOnce(tokio::sync::mpsc::Sender<Bytes>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(produce(tx));
    tokio_stream::wrappers::ReceiverStream::new(rx).map(Ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_object_goes_out_as_it_was_serialised() {
        let object = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1", "labels": {"a": "b"}}});
        let raw = raw_watch_line("MODIFIED", &serde_json::to_vec(&object).unwrap_or_default());
        assert!(raw.starts_with(br#"{"type":"MODIFIED","object":{"#) && raw.ends_with(b"}\n"));
        let parsed: Value = serde_json::from_slice(&raw).unwrap_or_default();
        let parsed_line: Value = serde_json::from_slice(&watch_line("MODIFIED", object)).unwrap_or_default();
        assert_eq!(parsed, parsed_line);
    }
}
