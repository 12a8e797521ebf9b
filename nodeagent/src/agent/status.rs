//! The NodeImage status the agent reports: a pure function of the spec, the
//! agent's own pull states and the stored status (finished entries of the
//! current versions are kept, so a restart does not lose them).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use prewarm_api::node_image::{ImageStatus, ImageTagStatus, NodeImageStatus};
use prewarm_api::node_status::MAX_MESSAGE_CHARS;
use prewarm_api::v1beta1::NodeImageSpec;

use super::plan::{TagKey, desired};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Waiting,
    Pulling,
    Succeeded,
    Failed,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Waiting => "Waiting",
            Self::Pulling => "Pulling",
            Self::Succeeded => "Succeeded",
            Self::Failed => "Failed",
        }
    }
}

/// The agent's knowledge of one pull.
#[derive(Clone, Debug, PartialEq)]
pub struct TagState {
    pub version: i64,
    pub phase: Phase,
    pub start_time: Option<Time>,
    pub completion_time: Option<Time>,
    pub image_id: Option<String>,
    pub message: Option<String>,
}

impl TagState {
    pub fn waiting(version: i64) -> Self {
        Self {
            version,
            phase: Phase::Waiting,
            start_time: None,
            completion_time: None,
            image_id: None,
            message: None,
        }
    }
}

pub fn status(
    spec: &NodeImageSpec,
    states: &BTreeMap<TagKey, TagState>,
    stored: Option<&NodeImageStatus>,
) -> NodeImageStatus {
    let mut images: BTreeMap<String, ImageStatus> = BTreeMap::new();
    let mut counts = [0i32; 4];
    let desired = desired(spec);
    for (key, tag) in &desired {
        let version = tag.version.unwrap_or(0);
        let own = states
            .get(key)
            .filter(|s| s.version == version)
            .map(|s| ImageTagStatus {
                tag: key.tag.clone(),
                phase: s.phase.as_str().to_owned(),
                progress: (s.phase == Phase::Succeeded).then_some(100),
                start_time: s.start_time.clone(),
                completion_time: s.completion_time.clone(),
                version: Some(version),
                image_id: s.image_id.clone(),
                message: s.message.as_deref().map(within_bound),
            });
        let adopted = || {
            stored
                .and_then(|s| s.image_statuses.as_ref())
                .and_then(|i| i.get(&key.image))
                .and_then(|i| {
                    i.tags
                        .iter()
                        .find(|t| t.tag == key.tag && t.version.unwrap_or(0) == version && t.completion_time.is_some())
                })
                .cloned()
        };
        let entry = own.or_else(adopted).unwrap_or_else(|| ImageTagStatus {
            tag: key.tag.clone(),
            phase: Phase::Waiting.as_str().to_owned(),
            version: Some(version),
            ..ImageTagStatus::default()
        });
        let slot = match entry.phase.as_str() {
            "Succeeded" => 0,
            "Failed" => 1,
            "Pulling" => 2,
            _ => 3,
        };
        counts[slot] += 1;
        images.entry(key.image.clone()).or_default().tags.push(entry);
    }
    NodeImageStatus {
        desired: i32::try_from(desired.len()).unwrap_or(i32::MAX),
        succeeded: Some(counts[0]),
        failed: Some(counts[1]),
        pulling: Some(counts[2]),
        waiting: Some(counts[3]),
        image_statuses: (!images.is_empty()).then_some(images),
        first_sync_status: stored.and_then(|s| s.first_sync_status.clone()),
    }
}

/// A message as long as the webhook lets a status carry (longer ones would
/// make the whole status write refused), cut with an ellipsis.
fn within_bound(message: &str) -> String {
    match message.char_indices().nth(MAX_MESSAGE_CHARS - 1) {
        Some((cut, _)) if message[cut..].chars().nth(1).is_some() => format!("{}…", &message[..cut]),
        _ => message.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_stay_within_what_the_webhook_accepts() {
        let exact = "é".repeat(MAX_MESSAGE_CHARS);
        assert_eq!(within_bound(&exact), exact);
        let long = within_bound(&"é".repeat(MAX_MESSAGE_CHARS + 1));
        assert_eq!(long.chars().count(), MAX_MESSAGE_CHARS);
        assert!(long.ends_with('…'));
    }
}
