//! The in-memory storage: objects by (group, resource, namespace, name), one
//! global increasing resourceVersion, a bounded history of watch events (older
//! resourceVersions are answered with 410 Gone), finalizers, generation,
//! status isolation and owner-reference garbage collection.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use axum::body::Bytes;
use serde_json::{Map, Value, json};
use tokio::sync::broadcast;

use crate::error::ApiError;
use crate::resources::ResourceType;

mod compare;
mod faults;
mod lifecycle;

use compare::{same_but_resource_version, same_spec};
use lifecycle::activate_namespace;

/// How many watch events are kept for resuming watches.
const HISTORY: usize = 10_000;

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key {
    pub group: String,
    pub plural: String,
    pub namespace: String,
    pub name: String,
}

#[derive(Clone, Debug)]
pub struct WatchEvent {
    pub resource_version: u64,
    pub type_: &'static str,
    pub key: Key,
    /// The object's `apiVersion` as stored.
    pub api_version: String,
    /// The object as stored, serialised once: shared by every watcher and
    /// kept compact in the history (a parsed NodeImage is ten times its JSON).
    pub json: Bytes,
}

impl WatchEvent {
    /// The object, parsed again for the watchers that need more than its JSON.
    pub fn object(&self) -> Value {
        serde_json::from_slice(&self.json).unwrap_or_default()
    }
}

#[derive(Debug)]
struct Inner {
    history_limit: usize,
    resource_version: u64,
    types: Vec<ResourceType>,
    objects: BTreeMap<Key, Value>,
    history: VecDeque<Arc<WatchEvent>>,
    /// Writes to fail on purpose: (count left, HTTP code).
    faults: Option<(usize, u16)>,
    /// Every n-th write fails with a 500: (n, writes seen).
    fault_every: Option<(u64, u64)>,
    /// Requests counted per "VERB group/resource".
    counts: BTreeMap<String, u64>,
}

#[derive(Debug)]
pub struct Store {
    inner: Mutex<Inner>,
    events: broadcast::Sender<Arc<WatchEvent>>,
    /// Bumped to close every open watch (a fault for tests).
    watch_epoch: tokio::sync::watch::Sender<u64>,
    /// Added before every request is handled (a fault for tests).
    latency: Mutex<std::time::Duration>,
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn now() -> String {
    k8s_openapi::jiff::Timestamp::from_second(unix_now())
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_default()
}

fn meta<'a>(object: &'a Value, field: &str) -> Option<&'a Value> {
    object.get("metadata").and_then(|m| m.get(field))
}

fn meta_str(object: &Value, field: &str) -> String {
    meta(object, field)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

/// The object's metadata map, created when absent. Bodies are checked to be
/// objects with object metadata before they reach the store, so this is only
/// `None` for values the store never keeps.
fn metadata_mut(object: &mut Value) -> Option<&mut Map<String, Value>> {
    object
        .as_object_mut()?
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()))
        .as_object_mut()
}

fn set_meta(object: &mut Value, field: &str, value: Value) {
    if let Some(metadata) = metadata_mut(object) {
        metadata.insert(field.to_owned(), value);
    }
}

/// Five characters for `generateName`, as the API server appends.
fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let bytes = *uuid::Uuid::new_v4().as_bytes();
    bytes
        .iter()
        .take(5)
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect()
}

impl Default for Store {
    fn default() -> Self {
        Self::with_history(HISTORY)
    }
}

impl Store {
    /// A store that keeps `history` watch events for resuming watches.
    pub fn with_history(history: usize) -> Self {
        let (events, _) = broadcast::channel(HISTORY);
        Self {
            inner: Mutex::new(Inner {
                history_limit: history.max(1),
                resource_version: 1,
                types: ResourceType::builtins(),
                objects: BTreeMap::new(),
                history: VecDeque::new(),
                faults: None,
                fault_every: None,
                counts: BTreeMap::new(),
            }),
            events,
            watch_epoch: tokio::sync::watch::Sender::new(0),
            latency: Mutex::new(std::time::Duration::ZERO),
        }
    }
}

/// How a write is applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Subresource {
    Main,
    Status,
}

impl Store {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        match self.inner.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    pub fn types(&self) -> Vec<ResourceType> {
        self.lock().types.clone()
    }

    /// The type served at `group`/`version` under `plural`.
    pub fn resource_type(&self, group: &str, version: &str, plural: &str) -> Option<ResourceType> {
        self.lock()
            .types
            .iter()
            .find(|t| t.group == group && t.plural == plural && t.serves(version))
            .cloned()
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<WatchEvent>> {
        self.events.subscribe()
    }

    pub fn resource_version(&self) -> u64 {
        self.lock().resource_version
    }

    pub fn count(&self, verb: &str, group: &str, plural: &str) {
        *self
            .lock()
            .counts
            .entry(format!("{verb} {group}/{plural}"))
            .or_default() += 1;
    }

    pub fn counts(&self) -> BTreeMap<String, u64> {
        self.lock().counts.clone()
    }

    pub fn reset_counts(&self) {
        self.lock().counts.clear();
    }

    /// Closes every open watch connection, as a restarting API server would.
    pub fn drop_watches(&self) {
        self.watch_epoch.send_modify(|epoch| *epoch += 1);
    }

    pub fn watch_epoch(&self) -> tokio::sync::watch::Receiver<u64> {
        self.watch_epoch.subscribe()
    }

    /// Events after `since`, or `None` when that resourceVersion is no longer kept.
    pub fn events_since(&self, since: u64) -> Option<Vec<Arc<WatchEvent>>> {
        let inner = self.lock();
        let oldest = inner
            .history
            .front()
            .map_or(inner.resource_version, |e| e.resource_version);
        if since + 1 < oldest && since < inner.resource_version {
            return None;
        }
        Some(
            inner
                .history
                .iter()
                .filter(|e| e.resource_version > since)
                .cloned()
                .collect(),
        )
    }

    pub fn get(&self, rt: &ResourceType, namespace: &str, name: &str) -> Result<Value, ApiError> {
        let key = Self::key(rt, namespace, name);
        self.lock()
            .objects
            .get(&key)
            .cloned()
            .ok_or_else(|| ApiError::not_found(&rt.plural, &rt.group, name))
    }

    /// Objects of `rt` in `namespace` (all namespaces when `None`), with the list's resourceVersion.
    pub fn list(&self, rt: &ResourceType, namespace: Option<&str>) -> (Vec<Value>, u64) {
        let inner = self.lock();
        // Keys sort by group, resource, namespace, name: the objects of one
        // type (in one namespace) are one range, found without a scan of the
        // store, as kube-apiserver reads one prefix of its storage.
        let from = Self::key(rt, namespace.unwrap_or_default(), "");
        let items = inner
            .objects
            .range(&from..)
            .take_while(|(k, _)| {
                k.group == from.group && k.plural == from.plural && namespace.is_none_or(|ns| k.namespace == ns)
            })
            .map(|(_, v)| v.clone())
            .collect();
        (items, inner.resource_version)
    }

    fn record(&self, inner: &mut Inner, type_: &'static str, key: Key, object: &Value) {
        let event = Arc::new(WatchEvent {
            resource_version: inner.resource_version,
            type_,
            key,
            api_version: object["apiVersion"].as_str().unwrap_or_default().to_owned(),
            json: serde_json::to_vec(object).map(Bytes::from).unwrap_or_default(),
        });
        inner.history.push_back(event.clone());
        while inner.history.len() > inner.history_limit {
            inner.history.pop_front();
        }
        let _ = self.events.send(event);
    }

    fn key(rt: &ResourceType, namespace: &str, name: &str) -> Key {
        Key {
            group: storage_group(rt).to_owned(),
            plural: rt.plural.clone(),
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        }
    }

    /// Creates `object`; `namespace` is empty for cluster-scoped types.
    pub fn create(
        &self,
        rt: &ResourceType,
        namespace: &str,
        mut object: Value,
        dry_run: bool,
    ) -> Result<Value, ApiError> {
        let mut inner = self.lock();
        if !dry_run {
            Self::take_fault(&mut inner)?;
        }
        let mut name = meta_str(&object, "name");
        if name.is_empty() {
            let prefix = meta_str(&object, "generateName");
            if prefix.is_empty() {
                return Err(ApiError::invalid(
                    &rt.kind,
                    &rt.group,
                    "",
                    &[(
                        "metadata.name".to_owned(),
                        "FieldValueRequired",
                        "Required value: name or generateName is required".to_owned(),
                    )],
                ));
            }
            name = format!("{prefix}{}", random_suffix());
        }
        if rt.namespaced {
            let ns_key = Key {
                group: String::new(),
                plural: "namespaces".to_owned(),
                namespace: String::new(),
                name: namespace.to_owned(),
            };
            if !inner.objects.contains_key(&ns_key) {
                return Err(ApiError::not_found("namespaces", "", namespace));
            }
            if inner.objects[&ns_key].pointer("/metadata/deletionTimestamp").is_some() {
                return Err(ApiError::forbidden(format!(
                    "{} \"{name}\" is forbidden: unable to create new content in namespace {namespace} because it is being terminated",
                    rt.plural
                )));
            }
        }
        let key = Self::key(rt, namespace, &name);
        if inner.objects.contains_key(&key) {
            return Err(ApiError::already_exists(&rt.plural, &rt.group, &name));
        }
        if rt.from_crd
            && rt.status_subresource
            && let Some(map) = object.as_object_mut()
        {
            map.remove("status");
        }
        let resource_version = inner.resource_version + 1;
        if let Some(metadata) = metadata_mut(&mut object) {
            metadata.insert("name".to_owned(), json!(name));
            if rt.namespaced {
                metadata.insert("namespace".to_owned(), json!(namespace));
            } else {
                metadata.remove("namespace");
            }
            metadata.insert("uid".to_owned(), json!(uuid::Uuid::new_v4().to_string()));
            metadata.insert("creationTimestamp".to_owned(), json!(now()));
            metadata.insert("resourceVersion".to_owned(), json!(resource_version.to_string()));
            metadata.insert("generation".to_owned(), json!(1));
            metadata.remove("deletionTimestamp");
        }
        if rt.kind == "CustomResourceDefinition" {
            establish(&mut object);
        }
        if rt.kind == "Namespace" && rt.group.is_empty() {
            activate_namespace(&mut object, &name);
        }
        if dry_run {
            return Ok(object);
        }
        inner.resource_version = resource_version;
        if rt.kind == "CustomResourceDefinition" {
            register_crd(&mut inner, &object)?;
        }
        inner.objects.insert(key.clone(), object.clone());
        self.record(&mut inner, "ADDED", key, &object);
        Ok(object)
    }

    /// Replaces the object (main resource or status), with optimistic concurrency.
    pub fn update(
        &self,
        rt: &ResourceType,
        namespace: &str,
        name: &str,
        mut object: Value,
        subresource: Subresource,
        dry_run: bool,
    ) -> Result<Value, ApiError> {
        let mut inner = self.lock();
        if !dry_run {
            Self::take_fault(&mut inner)?;
        }
        let key = Self::key(rt, namespace, name);
        let Some(old) = inner.objects.get(&key).cloned() else {
            return Err(ApiError::not_found(&rt.plural, &rt.group, name));
        };
        let sent_version = meta_str(&object, "resourceVersion");
        if !sent_version.is_empty() && sent_version != meta_str(&old, "resourceVersion") {
            return Err(ApiError::conflict(&rt.plural, &rt.group, name));
        }
        let body_name = meta_str(&object, "name");
        if !body_name.is_empty() && body_name != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
        match subresource {
            Subresource::Status => {
                let status = object.get("status").cloned();
                object = old.clone();
                if let Some(map) = object.as_object_mut() {
                    match status {
                        Some(status) => map.insert("status".to_owned(), status),
                        None => map.remove("status"),
                    };
                }
            }
            Subresource::Main if rt.status_subresource => {
                if let Some(map) = object.as_object_mut() {
                    match old.get("status") {
                        Some(status) => map.insert("status".to_owned(), status.clone()),
                        None => map.remove("status"),
                    };
                }
            }
            Subresource::Main => {}
        }
        let generation = meta(&old, "generation").and_then(Value::as_i64).unwrap_or(1);
        let generation = if !same_spec(&old, &object) {
            generation + 1
        } else {
            generation
        };
        let resource_version = inner.resource_version + 1;
        if let Some(metadata) = metadata_mut(&mut object) {
            for field in [
                "uid",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "namespace",
                "name",
            ] {
                match meta(&old, field) {
                    Some(value) => metadata.insert(field.to_owned(), value.clone()),
                    None => metadata.remove(field),
                };
            }
            metadata.insert("generation".to_owned(), json!(generation));
            metadata.insert("resourceVersion".to_owned(), json!(resource_version.to_string()));
        }
        if rt.kind == "CustomResourceDefinition" {
            establish(&mut object);
        }
        // A write that changes nothing is not a write: kube-apiserver keeps the
        // resourceVersion and sends no watch event.
        let old_version = meta(&old, "resourceVersion").cloned();
        if same_but_resource_version(&object, &old) {
            return Ok(old);
        }
        if dry_run {
            // Nothing was stored, so the object keeps its stored resourceVersion.
            if let (Some(metadata), Some(version)) = (metadata_mut(&mut object), old_version) {
                metadata.insert("resourceVersion".to_owned(), version);
            }
            return Ok(object);
        }
        inner.resource_version = resource_version;
        let finalized = meta(&object, "deletionTimestamp").is_some()
            && meta(&object, "finalizers")
                .and_then(Value::as_array)
                .is_none_or(Vec::is_empty);
        if finalized {
            inner.objects.remove(&key);
            self.record(&mut inner, "DELETED", key.clone(), &object);
            self.release_dependents(&mut inner, &object, false);
            self.reap_namespace(&mut inner, &key.namespace);
            return Ok(object);
        }
        if rt.kind == "CustomResourceDefinition" {
            register_crd(&mut inner, &object)?;
        }
        inner.objects.insert(key.clone(), object.clone());
        self.record(&mut inner, "MODIFIED", key, &object);
        Ok(object)
    }

    /// Deletes the object, or marks it for deletion while finalizers remain.
    /// Returns the object as last seen and whether it is gone.
    pub fn delete(
        &self,
        rt: &ResourceType,
        namespace: &str,
        name: &str,
        dry_run: bool,
        orphan: bool,
    ) -> Result<(Value, bool), ApiError> {
        let mut inner = self.lock();
        if !dry_run {
            Self::take_fault(&mut inner)?;
        }
        let key = Self::key(rt, namespace, name);
        let Some(mut object) = inner.objects.get(&key).cloned() else {
            return Err(ApiError::not_found(&rt.plural, &rt.group, name));
        };
        let finalizers = meta(&object, "finalizers")
            .and_then(Value::as_array)
            .is_some_and(|f| !f.is_empty());
        if dry_run {
            return Ok((object, !finalizers));
        }
        inner.resource_version += 1;
        let resource_version = inner.resource_version.to_string();
        if rt.kind == "Namespace" && rt.group.is_empty() && self.terminate_namespace(&mut inner, &key, &mut object) {
            return Ok((object, false));
        }
        if finalizers {
            if meta(&object, "deletionTimestamp").is_none() {
                set_meta(&mut object, "deletionTimestamp", json!(now()));
                set_meta(&mut object, "deletionGracePeriodSeconds", json!(0));
                set_meta(&mut object, "resourceVersion", json!(resource_version));
                inner.objects.insert(key.clone(), object.clone());
                self.record(&mut inner, "MODIFIED", key, &object);
            }
            return Ok((object, false));
        }
        inner.objects.remove(&key);
        set_meta(&mut object, "resourceVersion", json!(resource_version));
        self.record(&mut inner, "DELETED", key.clone(), &object);
        if rt.kind == "CustomResourceDefinition" {
            unregister_crd(&mut inner, &object);
        }
        self.release_dependents(&mut inner, &object, orphan);
        self.reap_namespace(&mut inner, &key.namespace);
        Ok((object, true))
    }
}

/// A stored CRD is immediately Established, as a healthy API server reports.
fn establish(crd: &mut Value) {
    let names = crd.pointer("/spec/names").cloned().unwrap_or(json!({}));
    let now = now();
    crd["status"] = json!({
        "acceptedNames": names,
        "conditions": [
            {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts", "message": "no conflicts found", "lastTransitionTime": now},
            {"type": "Established", "status": "True", "reason": "InitialNamesAccepted", "message": "the initial names have been accepted", "lastTransitionTime": now},
        ],
        "storedVersions": crd.pointer("/spec/versions").and_then(Value::as_array).map(|vs| {
            vs.iter().filter(|v| v.get("storage").and_then(Value::as_bool) == Some(true)).filter_map(|v| v.get("name").cloned()).collect::<Vec<_>>()
        }).unwrap_or_default(),
    });
}

fn register_crd(inner: &mut Inner, crd: &Value) -> Result<(), ApiError> {
    let rt = ResourceType::from_crd(crd).map_err(|e| {
        ApiError::invalid(
            "CustomResourceDefinition",
            "apiextensions.k8s.io",
            &meta_str(crd, "name"),
            &[("spec".to_owned(), "FieldValueInvalid", e)],
        )
    })?;
    inner.types.retain(|t| !(t.group == rt.group && t.plural == rt.plural));
    inner.types.push(rt);
    Ok(())
}

fn unregister_crd(inner: &mut Inner, crd: &Value) {
    if let Ok(rt) = ResourceType::from_crd(crd) {
        inner.types.retain(|t| !(t.group == rt.group && t.plural == rt.plural));
        inner
            .objects
            .retain(|k, _| !(k.group == rt.group && k.plural == rt.plural));
    }
}

/// The group a type's objects are stored under: events.k8s.io Events are core
/// Events seen another way (see `events`).
pub fn storage_group(rt: &ResourceType) -> &str {
    if crate::events::is_events_api(&rt.group, &rt.plural) {
        ""
    } else {
        &rt.group
    }
}

#[cfg(test)]
mod tests;
