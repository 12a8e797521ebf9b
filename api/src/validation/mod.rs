//! Validation of the three kinds: every problem at once, each with its field path,
//! in a stable order (the order of the fields in the spec), plus warnings for
//! input that is legal but probably not what the author meant.

mod images;
mod node_image;
mod selector;
mod template;

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::field::{FieldError, FieldPath, Report};
use crate::v1beta1::{ImageListPullJobSpec, ImagePullJobSpec, NodeImageSpec};

pub use images::MAX_LIST_IMAGES;

/// Validates an ImagePullJob (either version); `old` is the stored object on UPDATE.
pub fn image_pull_job(object: &Value, old: Option<&Value>) -> Report {
    let mut report = Report::default();
    let path = FieldPath::new("spec");
    let Some(spec) = decode_spec::<ImagePullJobSpec>(&mut report, object) else {
        return report;
    };
    let template = spec.template();
    images::image(
        &mut report,
        path.child("image"),
        &spec.image,
        template.image_pull_policy,
    );
    if let Some(old) = old {
        pull_secrets_unchanged(&mut report, &path.child("pullSecrets"), object, old);
    }
    template::template(&mut report, &path, &template);
    report
}

/// Validates an ImageListPullJob (either version).
pub fn image_list_pull_job(object: &Value) -> Report {
    let mut report = Report::default();
    let path = FieldPath::new("spec");
    let Some(spec) = decode_spec::<ImageListPullJobSpec>(&mut report, object) else {
        return report;
    };
    let template = spec.template();
    images::image_list(
        &mut report,
        &path.child("images"),
        &spec.images,
        template.image_pull_policy,
    );
    template::template(&mut report, &path, &template);
    report
}

/// Validates a NodeImage (either version). Every spec field is optional, so a
/// NodeImage without `spec` is an empty one, as in OpenKruise.
pub fn node_image(object: &Value) -> Report {
    let mut report = Report::default();
    if object.get("spec").is_none_or(Value::is_null) {
        return report;
    }
    if let Some(spec) = decode_spec::<NodeImageSpec>(&mut report, object)
        && let Some(images) = &spec.images
    {
        node_image::images(&mut report, &FieldPath::new("spec").child("images"), images);
    }
    report
}

/// `spec.pullSecrets` of an ImagePullJob cannot change: the controller has
/// already copied those Secrets for the nodes. Unset and `[]` are the same.
fn pull_secrets_unchanged(report: &mut Report, path: &FieldPath, object: &Value, old: &Value) {
    let secrets = |object: &Value| match object.pointer("/spec/pullSecrets") {
        None | Some(Value::Null) => Value::Array(Vec::new()),
        Some(value) => value.clone(),
    };
    let new = secrets(object);
    if new != secrets(old) {
        report.error(FieldError::invalid(path.clone(), new, "field is immutable"));
    }
}

/// Reads `spec` into its type; a shape error becomes one field error at its path.
fn decode_spec<T: DeserializeOwned>(report: &mut Report, object: &Value) -> Option<T> {
    let root = FieldPath::new("spec");
    let Some(spec) = object.get("spec") else {
        report.error(FieldError::required(root, ""));
        return None;
    };
    match serde_path_to_error::deserialize::<_, T>(spec) {
        Ok(spec) => Some(spec),
        Err(error) => {
            let mut path = root;
            for segment in error.path().iter() {
                path = match segment {
                    serde_path_to_error::Segment::Seq { index } => path.index(*index),
                    serde_path_to_error::Segment::Map { key } => path.child(key),
                    serde_path_to_error::Segment::Enum { variant } => path.child(variant),
                    serde_path_to_error::Segment::Unknown => path,
                };
            }
            let message = error.into_inner().to_string();
            report.error(match missing_field(&message) {
                Some(field) => FieldError::required(path.child(field), ""),
                None => FieldError::type_invalid(path, message),
            });
            None
        }
    }
}

/// serde reports an absent required field as "missing field `name`".
fn missing_field(message: &str) -> Option<&str> {
    message.strip_prefix("missing field `")?.split('`').next()
}
