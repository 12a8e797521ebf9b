//! Events as users look for them with `kubectl describe`: on the NodeImage,
//! and for failures also on the ImagePullJobs that asked for the tag.

use k8s_openapi::api::core::v1::{Event, ObjectReference};
use kube::api::PostParams;
use kube::{Api, Client};
use prewarm_api::v1beta1::NodeImage;
use serde_json::json;

use super::now;

#[derive(Clone)]
pub struct Events {
    client: Client,
    node_image: ObjectReference,
}

/// kruise-daemon's event reasons, spelt as it spells them, and one of ours.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(
    clippy::enum_variant_names,
    reason = "the names are the event reasons users filter on"
)]
pub enum Reason {
    PullImageSucceed,
    PullImageFailed,
    PullSecretRefused,
}

impl Reason {
    fn as_str(self) -> &'static str {
        match self {
            Self::PullImageSucceed => "PullImageSucceed",
            Self::PullImageFailed => "PullImageFailed",
            Self::PullSecretRefused => "PullSecretRefused",
        }
    }

    fn is_warning(self) -> bool {
        self != Self::PullImageSucceed
    }
}

impl Events {
    pub fn new(client: &Client, node_image: &NodeImage) -> Self {
        let reference = ObjectReference {
            api_version: Some("apps.kruise.io/v1beta1".to_owned()),
            kind: Some("NodeImage".to_owned()),
            name: node_image.metadata.name.clone(),
            uid: node_image.metadata.uid.clone(),
            ..ObjectReference::default()
        };
        Self {
            client: client.clone(),
            node_image: reference,
        }
    }

    /// Records `reason` on the NodeImage and on each of `owners`.
    pub async fn publish(&self, reason: Reason, message: &str, owners: &[ObjectReference]) {
        for involved in std::iter::once(&self.node_image).chain(owners) {
            self.publish_on(involved, reason, message).await;
        }
    }

    async fn publish_on(&self, involved: &ObjectReference, reason: Reason, message: &str) {
        let node = self.node_image.name.clone().unwrap_or_default();
        let name = involved.name.clone().unwrap_or_default();
        let namespace = involved.namespace.as_deref().unwrap_or("default");
        let event: Event = match serde_json::from_value(json!({
            "metadata": {"generateName": format!("{name}."), "namespace": namespace},
            "involvedObject": involved,
            "reason": reason.as_str(),
            "message": message,
            "type": if reason.is_warning() { "Warning" } else { "Normal" },
            "source": {"component": "prewarm-nodeagent", "host": node},
            "firstTimestamp": now(), "lastTimestamp": now(), "count": 1,
        })) {
            Ok(event) => event,
            Err(_) => return,
        };
        let api: Api<Event> = Api::namespaced(self.client.clone(), namespace);
        if let Err(e) = api.create(&PostParams::default(), &event).await {
            tracing::debug!(error = %e, "recording an event");
        }
    }
}
