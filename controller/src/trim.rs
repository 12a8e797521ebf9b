//! What the controller keeps of each object it caches: only the fields it
//! reads, so a real cluster's big Pods and Nodes (images, container statuses,
//! managed fields) cost little memory.

use k8s_openapi::api::core::v1::{Node, NodeStatus, Pod, PodSpec, PodStatus};
use kube::Resource;

pub fn keep_all<K>(_: &mut K) {}

/// Server-side-apply bookkeeping and annotations (such as kubectl's
/// last-applied copy of the whole object) are never read here.
pub fn trim_metadata<K: Resource>(object: &mut K) {
    let metadata = object.meta_mut();
    metadata.managed_fields = None;
    metadata.annotations = None;
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
}
