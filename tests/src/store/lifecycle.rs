//! How objects end as kube-apiserver ends them: a deleted Namespace is
//! Terminating until its content is gone, and deleting an owner deletes or
//! orphans its dependents (garbage collection); and how a Namespace begins.

use serde_json::{Value, json};

use super::{Inner, Key, Store, meta, meta_str, metadata_mut, now, set_meta};

impl Store {
    /// Deleting a Namespace that still has content makes it Terminating: its
    /// objects are deleted (those with finalizers marked, and gone once their
    /// finalizers are), and the Namespace goes when the last one has. Returns
    /// whether the Namespace stays for now.
    pub(super) fn terminate_namespace(&self, inner: &mut Inner, key: &Key, namespace: &mut Value) -> bool {
        let contents: Vec<Key> = inner
            .objects
            .keys()
            .filter(|k| k.namespace == key.name)
            .cloned()
            .collect();
        if contents.is_empty() {
            return false;
        }
        if meta(namespace, "deletionTimestamp").is_none() {
            set_meta(namespace, "deletionTimestamp", json!(now()));
            namespace["status"] = json!({"phase": "Terminating"});
            set_meta(namespace, "resourceVersion", json!(inner.resource_version.to_string()));
            inner.objects.insert(key.clone(), namespace.clone());
            self.record(inner, "MODIFIED", key.clone(), namespace);
        }
        for content in contents {
            let Some(mut object) = inner.objects.get(&content).cloned() else {
                continue;
            };
            let finalizers = meta(&object, "finalizers")
                .and_then(Value::as_array)
                .is_some_and(|f| !f.is_empty());
            inner.resource_version += 1;
            set_meta(
                &mut object,
                "resourceVersion",
                json!(inner.resource_version.to_string()),
            );
            if finalizers {
                if meta(&object, "deletionTimestamp").is_none() {
                    set_meta(&mut object, "deletionTimestamp", json!(now()));
                    set_meta(&mut object, "deletionGracePeriodSeconds", json!(0));
                    inner.objects.insert(content.clone(), object.clone());
                    self.record(inner, "MODIFIED", content, &object);
                }
            } else {
                inner.objects.remove(&content);
                self.record(inner, "DELETED", content, &object);
                self.release_dependents(inner, &object, false);
            }
        }
        self.reap_namespace(inner, &key.name);
        true
    }

    /// Removes a Terminating Namespace once nothing is left in it.
    pub(super) fn reap_namespace(&self, inner: &mut Inner, namespace: &str) {
        if namespace.is_empty() || inner.objects.keys().any(|k| k.namespace == namespace) {
            return;
        }
        let key = Key {
            group: String::new(),
            plural: "namespaces".to_owned(),
            namespace: String::new(),
            name: namespace.to_owned(),
        };
        let terminating = inner
            .objects
            .get(&key)
            .is_some_and(|ns| meta(ns, "deletionTimestamp").is_some());
        if terminating && let Some(mut gone) = inner.objects.remove(&key) {
            inner.resource_version += 1;
            set_meta(&mut gone, "resourceVersion", json!(inner.resource_version.to_string()));
            self.record(inner, "DELETED", key, &gone);
        }
    }

    /// Dependents of a deleted owner lose the reference to it. Unless the
    /// deletion orphans them, those left without any owner are deleted in turn
    /// (background propagation), or marked for deletion while finalizers remain.
    pub(super) fn release_dependents(&self, inner: &mut Inner, owner: &Value, orphan: bool) {
        let mut queue = vec![meta_str(owner, "uid")];
        while let Some(uid) = queue.pop() {
            let dependents: Vec<Key> = inner
                .objects
                .iter()
                .filter(|(_, o)| owner_uids(o).contains(&uid))
                .map(|(k, _)| k.clone())
                .collect();
            for key in dependents {
                let Some(mut object) = inner.objects.get(&key).cloned() else {
                    continue;
                };
                retain_owners(&mut object, |u| u != uid);
                inner.resource_version += 1;
                set_meta(
                    &mut object,
                    "resourceVersion",
                    json!(inner.resource_version.to_string()),
                );
                let finalizers = meta(&object, "finalizers")
                    .and_then(Value::as_array)
                    .is_some_and(|f| !f.is_empty());
                if orphan || !owner_uids(&object).is_empty() {
                    inner.objects.insert(key.clone(), object.clone());
                    self.record(inner, "MODIFIED", key, &object);
                } else if finalizers {
                    set_meta(&mut object, "deletionTimestamp", json!(now()));
                    inner.objects.insert(key.clone(), object.clone());
                    self.record(inner, "MODIFIED", key, &object);
                } else {
                    inner.objects.remove(&key);
                    queue.push(meta_str(&object, "uid"));
                    self.record(inner, "DELETED", key, &object);
                }
            }
        }
    }
}

fn owner_uids(object: &Value) -> Vec<String> {
    meta(object, "ownerReferences")
        .and_then(Value::as_array)
        .map(|refs| {
            refs.iter()
                .filter_map(|r| r.get("uid").and_then(Value::as_str).map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn retain_owners(object: &mut Value, keep: impl Fn(&str) -> bool) {
    let Some(metadata) = metadata_mut(object) else { return };
    if let Some(Value::Array(refs)) = metadata.get_mut("ownerReferences") {
        refs.retain(|r| r.get("uid").and_then(Value::as_str).is_some_and(&keep));
        if refs.is_empty() {
            metadata.remove("ownerReferences");
        }
    }
}

/// What kube-apiserver gives every new Namespace: the immutable
/// `kubernetes.io/metadata.name` label and phase Active.
pub(super) fn activate_namespace(object: &mut Value, name: &str) {
    if let Some(metadata) = metadata_mut(object) {
        let labels = metadata.entry("labels").or_insert_with(|| json!({}));
        if let Some(labels) = labels.as_object_mut() {
            labels.insert("kubernetes.io/metadata.name".to_owned(), json!(name));
        }
    }
    if let Some(map) = object.as_object_mut() {
        map.insert("status".to_owned(), json!({"phase": "Active"}));
    }
}
