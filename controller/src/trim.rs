//! What the controller keeps of each object it caches: only the fields it
//! reads, so a real cluster's big Pods and Nodes (images, container statuses,
//! managed fields) cost little memory.

use k8s_openapi::api::core::v1::{Node, NodeStatus, Pod, PodSpec, PodStatus};
use kube::Resource;
use prewarm_api::v1beta1::NodeImage;

pub fn keep_all<K>(_: &mut K) {}

/// Server-side-apply bookkeeping and annotations (such as kubectl's
/// last-applied copy of the whole object) are never read here.
pub fn trim_metadata<K: Resource>(object: &mut K) {
    let metadata = object.meta_mut();
    metadata.managed_fields = None;
    metadata.annotations = None;
}

/// A NodeImage is cached whole (its entries are written back from the cache),
/// but without the spare capacity deserialisation leaves in its lists: a Vec
/// grown from empty holds room for four elements, so each one-tag image with
/// one owner and one status carried three unused tags, owners and statuses,
/// about half the memory of a cached NodeImage.
pub fn trim_node_image(node_image: &mut NodeImage) {
    trim_metadata(node_image);
    for image in node_image.spec.images.iter_mut().flat_map(|images| images.values_mut()) {
        for tag in &mut image.tags {
            if let Some(owners) = &mut tag.owner_references {
                owners.shrink_to_fit();
            }
        }
        image.tags.shrink_to_fit();
        if let Some(secrets) = &mut image.pull_secrets {
            secrets.shrink_to_fit();
        }
    }
    let statuses = node_image.status.as_mut().and_then(|s| s.image_statuses.as_mut());
    for status in statuses.into_iter().flat_map(|statuses| statuses.values_mut()) {
        status.tags.shrink_to_fit();
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
    fn cached_node_images_keep_everything_but_spare_capacity() -> Result<(), serde_json::Error> {
        let json = json!({"metadata": {"name": "n1", "annotations": {"big": "x"}},
            "spec": {"images": {"nginx": {"tags": [{"tag": "1.25", "version": 1,
                "ownerReferences": [{"uid": "u1", "name": "job"}]}]}}},
            "status": {"desired": 1, "imageStatuses": {"nginx": {"tags": [{"tag": "1.25", "phase": "Succeeded"}]}}}});
        let mut node_image: NodeImage = serde_json::from_value(json)?;
        let before = serde_json::to_value(&node_image)?;
        trim_node_image(&mut node_image);
        let mut expected = before;
        if let Some(metadata) = expected["metadata"].as_object_mut() {
            metadata.remove("annotations");
        }
        assert_eq!(serde_json::to_value(&node_image)?, expected);
        let image = &node_image.spec.images.as_ref().and_then(|i| i.get("nginx")).cloned().unwrap_or_default();
        assert_eq!(image.tags.capacity(), 1);
        assert_eq!(image.tags[0].owner_references.as_ref().map(Vec::capacity), Some(1));
        let statuses = node_image.status.and_then(|s| s.image_statuses).unwrap_or_default();
        assert_eq!(statuses.get("nginx").map(|s| s.tags.capacity()), Some(1));
        Ok(())
    }

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
