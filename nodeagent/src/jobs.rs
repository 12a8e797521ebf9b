//! Turns ImagePullJob and ImageListPullJob manifests into pulls, with the
//! webhook's defaults and rules, for pulling on this machine without a cluster.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use prewarm_api::admission::{self, Decision, Kind, Operation, Request};
use prewarm_api::gates::FeatureGates;
use prewarm_api::reference::ImageReference;
use prewarm_api::spec::Spec;
use prewarm_api::v1beta1::{ImageListPullJobSpec, ImagePullJobSpec, TemplateRef};
use serde_json::Value;

use crate::credentials::Keyring;
use crate::puller::{PolicyFields, PullSpec};

/// Why a document gives no pulls.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("{api_version} {kind} {name}: only ImagePullJob and ImageListPullJob manifests can be pulled")]
    NotAJob {
        api_version: String,
        kind: String,
        name: String,
    },
    #[error("{kind} {name} is invalid: {}", .errors.join("; "))]
    Invalid {
        kind: Kind,
        name: String,
        errors: Vec<String>,
    },
    #[error("{kind} {name}: {source}")]
    Decode {
        kind: Kind,
        name: String,
        source: serde_json::Error,
    },
    #[error("image {image:?}: {reason}")]
    Reference { image: String, reason: String },
}

/// The pulls of one document, or why there are none.
pub fn pulls(object: &Value, keyring: &Keyring) -> Result<Vec<PullSpec>, JobError> {
    let api_version = object.get("apiVersion").and_then(Value::as_str).unwrap_or_default();
    let kind_name = object.get("kind").and_then(Value::as_str).unwrap_or_default();
    let name = object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("<unnamed>");
    let Some(kind) = Kind::from_type_meta(api_version, kind_name).filter(|k| *k != Kind::NodeImage) else {
        return Err(JobError::NotAJob {
            api_version: api_version.to_owned(),
            kind: kind_name.to_owned(),
            name: name.to_owned(),
        });
    };
    let defaulted = kind.with_defaults(object, &Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH));
    let gates = FeatureGates::parse("ImagePullJobGate=true").unwrap_or_default();
    let request = Request::of(kind, Operation::Create, Some(Spec::of(&defaulted)), None);
    if let Decision::Invalid { errors, .. } = admission::validate(&request, &admission::Policy::gates(gates)) {
        return Err(JobError::Invalid {
            kind,
            name: name.to_owned(),
            errors: errors.iter().map(ToString::to_string).collect(),
        });
    }
    let spec = defaulted.get("spec").cloned().unwrap_or_default();
    let decode_error = |source| JobError::Decode {
        kind,
        name: name.to_owned(),
        source,
    };
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

fn pull_spec(image: &str, template: &TemplateRef<'_>, keyring: &Keyring) -> Result<PullSpec, JobError> {
    let reference = ImageReference::parse(image).map_err(|e| JobError::Reference {
        image: image.to_owned(),
        reason: e.to_string(),
    })?;
    let fields = PolicyFields {
        image_pull_policy: template.image_pull_policy,
        timeout_seconds: template.pull_policy.and_then(|p| p.timeout_seconds),
        backoff_limit: template.pull_policy.and_then(|p| p.backoff_limit),
        active_deadline_seconds: template.completion_policy.and_then(|c| c.active_deadline_seconds),
        sandbox: template.sandbox_config,
    };
    let credentials = keyring.lookup(&reference.full_name());
    Ok(PullSpec::new(reference, &fields, credentials))
}
