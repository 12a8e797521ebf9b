//! What the controller keeps of each object it caches: only the fields it
//! reads, so a real cluster's big Pods, Nodes and Secrets (images, container
//! statuses, managed fields, last-applied copies) cost little memory.

use k8s_openapi::api::core::v1::{Node, NodeStatus, Pod, PodSpec, PodStatus, Secret};
use kube::Resource;
use kube::core::PartialObjectMeta;

use crate::plan::secrets::COPY_ANNOTATIONS;

pub fn keep_all<K>(_: &mut K) {}

/// Server-side-apply bookkeeping and annotations (such as kubectl's
/// last-applied copy of the whole object) are never read here.
pub fn trim_metadata<K: Resource>(object: &mut K) {
    let metadata = object.meta_mut();
    metadata.managed_fields = None;
    metadata.annotations = None;
}

/// A Secret is cached for its identity, version and deletion, and a copy
/// for the annotations this controller writes. Nothing else: kubectl's
/// last-applied annotation holds the whole Secret, data included.
pub fn trim_secret(secret: &mut PartialObjectMeta<Secret>) {
    let metadata = &mut secret.metadata;
    metadata.managed_fields = None;
    metadata.labels = None;
    metadata.owner_references = None;
    metadata.finalizers = None;
    if let Some(annotations) = metadata.annotations.as_mut() {
        annotations.retain(|key, _| COPY_ANNOTATIONS.contains(&key.as_str()));
    }
}

/// A Node is cached for its labels and Ready condition only: in a real cluster
/// its status (images, addresses, capacity) is most of its size.
pub fn trim_node(node: &mut Node) {
    trim_metadata(node);
    node.spec = None;
    let ready = node
        .status
        .take()
        .and_then(|s| s.conditions)
        .map(|conditions| conditions.into_iter().filter(|c| c.type_ == "Ready").collect());
    node.status = Some(NodeStatus {
        conditions: ready,
        ..NodeStatus::default()
    });
}

/// A Pod is cached for its labels, node and phase only.
pub fn trim_pod(pod: &mut Pod) {
    trim_metadata(pod);
    let node_name = pod.spec.take().and_then(|s| s.node_name);
    pod.spec = Some(PodSpec {
        node_name,
        ..PodSpec::default()
    });
    let phase = pod.status.take().and_then(|s| s.phase);
    pod.status = Some(PodStatus {
        phase,
        ..PodStatus::default()
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::world::ready_since;
    use serde_json::json;

    #[test]
    fn cached_nodes_and_pods_keep_only_what_is_read() -> Result<(), serde_json::Error> {
        let mut node: Node = serde_json::from_value(json!({
            "metadata": {"name": "n1", "labels": {"zone": "a"}, "annotations": {"big": "x"}},
            "spec": {"podCIDR": "10.0.0.0/24"},
            "status": {"conditions": [
                {"type": "MemoryPressure", "status": "False"},
                {"type": "Ready", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"}],
                "images": [{"names": ["nginx:1"], "sizeBytes": 1}]}
        }))?;
        let ready_before = ready_since(&node);
        trim_node(&mut node);
        assert_eq!(ready_since(&node), ready_before);
        assert!(ready_before.is_some());
        assert_eq!(node.metadata.labels, Some([("zone".to_owned(), "a".to_owned())].into()));
        let kept = serde_json::to_value(&node)?;
        assert_eq!(kept["status"]["conditions"].as_array().map(Vec::len), Some(1));
        assert!(
            kept["status"]["images"].is_null() && kept["spec"].is_null() && kept["metadata"]["annotations"].is_null()
        );

        let mut pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "ns", "labels": {"app": "x"}, "deletionTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "nginx"}]},
            "status": {"phase": "Running", "containerStatuses": []}
        }))?;
        trim_pod(&mut pod);
        let kept = serde_json::to_value(&pod)?;
        assert_eq!(kept["spec"]["nodeName"], "n1");
        assert_eq!(kept["status"], json!({"phase": "Running"}));
        assert_eq!(kept["metadata"]["labels"]["app"], "x");
        assert!(pod.metadata.deletion_timestamp.is_some());
        Ok(())
    }

    #[test]
    fn cached_secrets_keep_no_data_and_only_the_copy_annotations() -> Result<(), serde_json::Error> {
        let applied = r#"{"apiVersion":"v1","data":{".dockerconfigjson":"c2VjcmV0"},"kind":"Secret"}"#;
        let mut secret: PartialObjectMeta<Secret> = serde_json::from_value(json!({
            "apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
            "metadata": {"name": "copy", "namespace": "kruise-daemon-config", "uid": "u1", "resourceVersion": "7",
                "deletionTimestamp": "2026-01-01T00:00:00Z",
                "labels": {"app.kubernetes.io/managed-by": "prewarm-controller"},
                "annotations": {
                    "kubectl.kubernetes.io/last-applied-configuration": applied,
                    "imagepulljobs.kruise.io/source-key": "team/regcred",
                    "imagepulljobs.kruise.io/references": "team/job",
                    "imagepulljobs.kruise.io/mode": "batch",
                    "prewarm.dev/source-uid": "s1",
                    "prewarm.dev/source-resource-version": "3"},
                "managedFields": [{"manager": "kubectl", "operation": "Apply"}],
                "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "o", "uid": "o1"}],
                "finalizers": ["example.com/keep"]}
        }))?;
        trim_secret(&mut secret);
        let kept = serde_json::to_value(&secret.metadata)?;
        assert!(!kept.to_string().contains("c2VjcmV0"), "{kept}");
        assert_eq!(
            kept,
            json!({"name": "copy", "namespace": "kruise-daemon-config", "uid": "u1", "resourceVersion": "7",
                "deletionTimestamp": "2026-01-01T00:00:00Z",
                "annotations": {
                    "imagepulljobs.kruise.io/source-key": "team/regcred",
                    "imagepulljobs.kruise.io/references": "team/job",
                    "imagepulljobs.kruise.io/mode": "batch",
                    "prewarm.dev/source-uid": "s1",
                    "prewarm.dev/source-resource-version": "3"}})
        );
        Ok(())
    }
}
