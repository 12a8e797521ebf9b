//! Turns ImagePullJob and ImageListPullJob manifests into pulls, with the
//! webhook's defaults and rules, for pulling on this machine without a cluster.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use prewarm_api::admission::{self, Decision, Kind, Operation, Request};
use prewarm_api::defaults::{DEFAULT_BACKOFF_LIMIT, DEFAULT_TIMEOUT_SECONDS};
use prewarm_api::gates::FeatureGates;
use prewarm_api::reference::ImageReference;
use prewarm_api::v1beta1::{ImageListPullJobSpec, ImagePullJobSpec, TemplateRef};
use serde_json::Value;

use crate::credentials::Keyring;
use crate::cri::Sandbox;
use crate::puller::{Policy, PullSpec};

/// The pulls of one document, or why there are none.
pub fn pulls(object: &Value, keyring: &Keyring) -> Result<Vec<PullSpec>, String> {
    let api_version = object.get("apiVersion").and_then(Value::as_str).unwrap_or_default();
    let kind_name = object.get("kind").and_then(Value::as_str).unwrap_or_default();
    let name = object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("<unnamed>");
    let Some(kind) = Kind::from_type_meta(api_version, kind_name).filter(|k| *k != Kind::NodeImage) else {
        return Err(format!(
            "{api_version} {kind_name} {name}: only ImagePullJob and ImageListPullJob manifests can be pulled"
        ));
    };
    let mut defaulted = object.clone();
    let now = Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH);
    json_patch_apply(&mut defaulted, kind, object, &now);
    let gates = FeatureGates::parse("ImagePullJobGate=true").unwrap_or_default();
    let request = Request {
        kind,
        operation: Operation::Create,
        sub_resource: None,
        object: Some(&defaulted),
        old_object: None,
    };
    if let Decision::Invalid { errors, .. } = admission::validate(&request, &gates) {
        let listed: Vec<String> = errors.iter().map(ToString::to_string).collect();
        return Err(format!("{kind} {name} is invalid: {}", listed.join("; ")));
    }
    let spec = defaulted.get("spec").cloned().unwrap_or_default();
    let decode_error = |e: serde_json::Error| format!("{kind} {name}: {e}");
    match kind {
        Kind::ImagePullJob => {
            let spec: ImagePullJobSpec = serde_json::from_value(spec).map_err(decode_error)?;
            Ok(vec![pull_spec(&spec.image, &spec.template(), keyring)?])
        }
        _ => {
            let spec: ImageListPullJobSpec = serde_json::from_value(spec).map_err(decode_error)?;
            // Each child ImagePullJob gets IfNotPresent from the webhook when unset.
            let mut template = spec.template();
            template.image_pull_policy = template.image_pull_policy.or(Some("IfNotPresent"));
            spec.images
                .iter()
                .map(|image| pull_spec(image, &template, keyring))
                .collect()
        }
    }
}

fn json_patch_apply(defaulted: &mut Value, kind: Kind, object: &Value, now: &Time) {
    // Defaults are `add` operations computed from this very object: they apply.
    let _ = json_patch::patch(defaulted, &json_patch::Patch(kind.defaults(object, now)));
}

fn pull_spec(image: &str, template: &TemplateRef<'_>, keyring: &Keyring) -> Result<PullSpec, String> {
    let reference = ImageReference::parse(image).map_err(|e| format!("image {image:?}: {e}"))?;
    let pull_policy = template.pull_policy;
    let timeout = pull_policy
        .and_then(|p| p.timeout_seconds)
        .unwrap_or(DEFAULT_TIMEOUT_SECONDS);
    let backoff_limit = pull_policy
        .and_then(|p| p.backoff_limit)
        .filter(|b| *b >= 0)
        .unwrap_or(DEFAULT_BACKOFF_LIMIT);
    let active_deadline = template
        .completion_policy
        .and_then(|c| c.active_deadline_seconds)
        .and_then(|s| u64::try_from(s).ok())
        .map(Duration::from_secs);
    let sandbox = template.sandbox_config.map(|s| Sandbox {
        labels: s.labels.clone().unwrap_or_default().into_iter().collect(),
        annotations: s.annotations.clone().unwrap_or_default().into_iter().collect(),
    });
    Ok(PullSpec {
        credentials: keyring.lookup(&reference.full_name()),
        reference,
        policy: Policy::from_field(template.image_pull_policy),
        timeout: Duration::from_secs(u64::try_from(timeout).unwrap_or(1).max(1)),
        backoff_limit: u32::try_from(backoff_limit).unwrap_or(3),
        active_deadline,
        sandbox,
    })
}
