//! What the agent should do for a NodeImage: a pure function of the spec, the
//! stored status and the running pulls. A (tag, version) pair whose stored
//! status is finished is never pulled again (resume after restart); a running
//! pull whose tag left the spec, or whose version changed, is stopped.

use std::collections::BTreeMap;

use prewarm_api::node_image::{ImageTagSpec, NodeImageStatus};
use prewarm_api::v1beta1::NodeImageSpec;

/// One tag of one image, as the NodeImage names them (`nginx`, `1.25`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TagKey {
    pub image: String,
    pub tag: String,
}

impl TagKey {
    /// The reference to pull: `name:tag`, or `name@sha256:…` for a digest.
    pub fn reference(&self) -> String {
        if self.tag.contains(':') {
            format!("{}@{}", self.image, self.tag)
        } else {
            format!("{}:{}", self.image, self.tag)
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Pulls to start, with the version they answer.
    pub start: Vec<(TagKey, i64)>,
    /// Running pulls to stop quietly.
    pub stop: Vec<TagKey>,
}

/// Every (tag, spec) the NodeImage asks for.
pub fn desired(spec: &NodeImageSpec) -> BTreeMap<TagKey, &ImageTagSpec> {
    let mut desired = BTreeMap::new();
    for (image, image_spec) in spec.images.iter().flatten() {
        for tag in &image_spec.tags {
            desired.insert(
                TagKey {
                    image: image.clone(),
                    tag: tag.tag.clone(),
                },
                tag,
            );
        }
    }
    desired
}

/// Whether the stored status already answers this (tag, version).
pub fn finished(status: Option<&NodeImageStatus>, key: &TagKey, version: i64) -> bool {
    status
        .and_then(|s| s.image_statuses.as_ref())
        .and_then(|images| images.get(&key.image))
        .is_some_and(|image| {
            image.tags.iter().any(|t| {
                t.tag == key.tag
                    && t.version.unwrap_or(0) == version
                    && t.completion_time.is_some()
                    && matches!(t.phase.as_str(), "Succeeded" | "Failed")
            })
        })
}

/// A tag the agent is pulling, or has pulled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Handled {
    pub version: i64,
    pub finished: bool,
}

/// What to start and stop. A pull still running for a (tag, version) whose
/// stored status is finished (the controller gave up on it) is stopped, so the
/// stored verdict is adopted rather than overwritten.
pub fn plan(spec: &NodeImageSpec, status: Option<&NodeImageStatus>, handled: &BTreeMap<TagKey, Handled>) -> Plan {
    let desired = desired(spec);
    let mut plan = Plan::default();
    for (key, handled) in handled {
        let wanted = desired.get(key).map(|t| t.version.unwrap_or(0));
        let adopted = !handled.finished && finished(status, key, handled.version);
        if wanted != Some(handled.version) || adopted {
            plan.stop.push(key.clone());
        }
    }
    for (key, tag) in desired {
        let version = tag.version.unwrap_or(0);
        if handled.get(&key).is_some_and(|h| h.version == version) || finished(status, &key, version) {
            continue;
        }
        plan.start.push((key, version));
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(value: serde_json::Value) -> NodeImageSpec {
        serde_json::from_value(value).unwrap()
    }

    fn key(image: &str, tag: &str) -> TagKey {
        TagKey {
            image: image.into(),
            tag: tag.into(),
        }
    }

    #[test]
    fn starts_what_is_missing_and_resumes_what_is_finished() {
        let spec = spec(
            json!({"images": {"nginx": {"tags": [{"tag": "1.25", "version": 2}, {"tag": "1.26", "version": 1}]}, "redis": {"tags": [{"tag": "7"}]}}}),
        );
        let status: NodeImageStatus = serde_json::from_value(json!({"desired": 3, "imageStatuses": {
            "nginx": {"tags": [
                {"tag": "1.25", "phase": "Succeeded", "version": 2, "completionTime": "2026-01-01T00:00:00Z"},
                {"tag": "1.26", "phase": "Succeeded", "version": 0, "completionTime": "2026-01-01T00:00:00Z"},
            ]},
            "redis": {"tags": [{"tag": "7", "phase": "Pulling", "version": 0}]},
        }}))
        .unwrap();
        let plan = plan(&spec, Some(&status), &BTreeMap::new());
        assert_eq!(plan.start, [(key("nginx", "1.26"), 1), (key("redis", "7"), 0)]);
        assert!(plan.stop.is_empty());
    }

    #[test]
    fn stops_removed_tags_and_restarts_bumped_versions() {
        let spec = spec(json!({"images": {"nginx": {"tags": [{"tag": "1.25", "version": 3}]}}}));
        let running = BTreeMap::from([(key("nginx", "1.25"), pulling(2)), (key("nginx", "1.24"), pulling(0))]);
        let plan = plan(&spec, None, &running);
        assert_eq!(plan.stop, [key("nginx", "1.24"), key("nginx", "1.25")]);
        assert_eq!(plan.start, [(key("nginx", "1.25"), 3)]);
        let running = BTreeMap::from([(key("nginx", "1.25"), pulling(3))]);
        assert_eq!(super::plan(&spec, None, &running), Plan::default());
    }

    fn pulling(version: i64) -> Handled {
        Handled {
            version,
            finished: false,
        }
    }

    #[test]
    fn a_verdict_stored_by_the_controller_is_adopted() {
        let spec = spec(json!({"images": {"nginx": {"tags": [{"tag": "1.25", "version": 1}]}}}));
        let status: NodeImageStatus = serde_json::from_value(json!({"desired": 1, "imageStatuses": {"nginx": {"tags": [
            {"tag": "1.25", "phase": "Failed", "version": 1, "completionTime": "2026-01-01T00:00:00Z", "message": "node did not answer"},
        ]}}}))
        .unwrap();
        let running = BTreeMap::from([(key("nginx", "1.25"), pulling(1))]);
        assert_eq!(plan(&spec, Some(&status), &running).stop, [key("nginx", "1.25")]);
        let done = BTreeMap::from([(
            key("nginx", "1.25"),
            Handled {
                version: 1,
                finished: true,
            },
        )]);
        assert_eq!(plan(&spec, Some(&status), &done), Plan::default());
    }

    #[test]
    fn digests_are_pulled_by_digest() {
        assert_eq!(key("nginx", "1.25").reference(), "nginx:1.25");
        assert_eq!(key("team/app", "sha256:abc").reference(), "team/app@sha256:abc");
    }
}
