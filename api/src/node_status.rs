//! Who may write a NodeImage's status. RBAC can only grant the node agents'
//! ServiceAccount `update nodeimages/status` on every NodeImage, so a stolen
//! agent token could rewrite what every node reports. The API server
//! authenticates an agent's projected token with the node its Pod runs on
//! (`userInfo.extra`, Kubernetes 1.30+), so admission holds each agent to its
//! own node's NodeImage, and to entries for the tags its spec asks for.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;

use crate::admission::Decision;
use crate::field::{FieldError, FieldPath, Report};
use crate::spec::{Decoded, Spec};

/// The `userInfo.extra` key kube-apiserver fills with the node of the Pod
/// (or the Node) a ServiceAccount token is bound to.
pub const NODE_NAME_EXTRA: &str = "authentication.kubernetes.io/node-name";

/// The longest `message` of a tag status the agent writes (its CRI errors are
/// cut at 512 characters, with room for what it says around them).
pub const MAX_MESSAGE_CHARS: usize = 1024;

/// The authenticated writer of a request, as `request.userInfo` says.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Writer<'a> {
    pub username: &'a str,
    /// The values of [`NODE_NAME_EXTRA`].
    pub node_names: &'a [String],
}

/// A status write to NodeImage `name`: allowed unless it comes from
/// `node_agent` (the agents' ServiceAccount username) and is not that agent's
/// node, or reports on tags the spec does not ask for.
pub fn decide(name: &str, writer: Writer<'_>, node_agent: &str, spec: Spec<'_>, status: Spec<'_>) -> Decision {
    let allowed = Decision::Allowed { warnings: Vec::new() };
    if writer.username != node_agent {
        return allowed;
    }
    let forbidden = |message: String| Decision::Forbidden { gate: None, message };
    match writer.node_names {
        [node] if node == name => {}
        [node] => {
            return forbidden(format!(
                "{node_agent} on node {node:?} may not write the status of NodeImage {name:?}: \
                 a node agent writes only the NodeImage of its own node"
            ));
        }
        _ => {
            return forbidden(format!(
                "{node_agent} may write a NodeImage status only with a token bound to its node \
                 (userInfo.extra {NODE_NAME_EXTRA:?} has {:?}); kubelet's projected tokens carry it \
                 from Kubernetes 1.30 (ServiceAccountTokenPodNodeInfo)",
                writer.node_names
            ));
        }
    }
    let report = unasked_entries(spec, status);
    if report.is_valid() {
        allowed
    } else {
        let (errors, warnings) = report.into_parts();
        Decision::Invalid { errors, warnings }
    }
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct SpecTags {
    images: Option<BTreeMap<String, ImageTags>>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct StatusTags {
    image_statuses: Option<BTreeMap<String, ImageTags>>,
}

#[derive(Deserialize)]
struct ImageTags {
    tags: Vec<Tag>,
}

#[derive(Deserialize)]
struct Tag {
    tag: String,
    message: Option<String>,
}

/// Field errors for status entries of images and tags the spec does not
/// list, repeated tags and overlong messages: what keeps a status no larger
/// than its spec asks for.
fn unasked_entries(spec: Spec<'_>, status: Spec<'_>) -> Report {
    let mut report = Report::default();
    let root = FieldPath::new("status").child("imageStatuses");
    let Some(status) = read::<StatusTags>(status) else {
        report.error(FieldError::type_invalid(
            FieldPath::new("status"),
            "must be a NodeImage status: imageStatuses maps image names to {tags: [{tag, phase, …}]}",
        ));
        return report;
    };
    // The stored spec was admitted already; one that cannot be read asks for nothing.
    let spec = read::<SpecTags>(spec).unwrap_or_default();
    let asked: BTreeMap<&str, BTreeSet<&str>> = spec
        .images
        .iter()
        .flatten()
        .map(|(image, tags)| (image.as_str(), tags.tags.iter().map(|t| t.tag.as_str()).collect()))
        .collect();
    for (image, reported) in status.image_statuses.iter().flatten() {
        let at = root.key(image);
        let Some(wanted) = asked.get(image.as_str()) else {
            report.error(FieldError::invalid(
                at,
                image.as_str(),
                "not an image of the NodeImage's spec.images: a status reports only on what the spec asks for",
            ));
            continue;
        };
        let mut seen = BTreeSet::new();
        for (index, tag) in reported.tags.iter().enumerate() {
            let at = at.child("tags").index(index);
            if !wanted.contains(tag.tag.as_str()) {
                report.error(FieldError::invalid(
                    at.child("tag"),
                    tag.tag.as_str(),
                    format!("not a tag of spec.images[{image:?}].tags"),
                ));
            } else if !seen.insert(tag.tag.as_str()) {
                report.error(FieldError::duplicate(
                    at.child("tag"),
                    tag.tag.as_str(),
                    "one entry per tag",
                ));
            }
            if let Some(message) = &tag.message
                && message.chars().nth(MAX_MESSAGE_CHARS).is_some()
            {
                let length = message.chars().count();
                report.error(FieldError::forbidden(
                    at.child("message"),
                    format!("at most {MAX_MESSAGE_CHARS} characters, not {length}"),
                ));
            }
        }
    }
    report
}

fn read<T: serde::de::DeserializeOwned + Default>(member: Spec<'_>) -> Option<T> {
    match member.decode::<Option<T>>() {
        Decoded::Typed(typed) => Some(typed.unwrap_or_default()),
        Decoded::Tree(None) => Some(T::default()),
        Decoded::Tree(Some(_)) | Decoded::Unreadable(_) => None,
    }
}
