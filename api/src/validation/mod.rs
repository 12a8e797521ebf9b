//! Validation of the four kinds: every problem at once, each with its field path,
//! in a stable order (the order of the fields in the spec), plus warnings for
//! input that is legal but probably not what the author meant.

mod cron_job;
mod images;
mod node_image;
mod selector;
mod template;

use serde_json::Value;

use crate::admission::Kind;
use crate::caps::Caps;
use crate::field::{FieldError, FieldPath, Report};
use crate::spec::Spec;
use crate::v1beta1::{ImageListPullJobSpec, ImagePullJobSpec, NodeImageSpec};

pub use cron_job::{advanced_cron_job, name as cron_job_name};
pub use images::MAX_LIST_IMAGES;

/// Validates an ImagePullJob's spec (either version); `old` is the stored spec on UPDATE.
pub fn image_pull_job(spec: Spec<'_>, old: Option<Spec<'_>>, caps: &Caps) -> Report {
    let mut report = Report::default();
    let path = FieldPath::new("spec");
    let Some(typed) = spec.decode_or_report::<ImagePullJobSpec>(Kind::ImagePullJob, &mut report) else {
        return report;
    };
    let template = typed.template();
    images::image(
        &mut report,
        path.child("image"),
        &typed.image,
        template.image_pull_policy,
    );
    if let Some(old) = old {
        pull_secrets_unchanged(
            &mut report,
            &path.child("pullSecrets"),
            typed.pull_secrets.as_deref(),
            old,
        );
    }
    template::template(&mut report, &path, &template, caps);
    report
}

/// Validates an ImageListPullJob's spec (either version).
pub fn image_list_pull_job(spec: Spec<'_>, caps: &Caps) -> Report {
    let mut report = Report::default();
    let path = FieldPath::new("spec");
    if let Some(typed) = spec.decode_or_report::<ImageListPullJobSpec>(Kind::ImageListPullJob, &mut report) {
        image_list_pull_job_at(&mut report, &path, &typed, caps);
    }
    report
}

/// The rules of an ImageListPullJob spec found at `path` (a cron job's template has one).
fn image_list_pull_job_at(report: &mut Report, path: &FieldPath, typed: &ImageListPullJobSpec, caps: &Caps) {
    let template = typed.template();
    images::image_list(report, &path.child("images"), &typed.images, template.image_pull_policy);
    template::template(report, path, &template, caps);
}

/// Validates a NodeImage's spec (either version). Every spec field is optional,
/// so a NodeImage without `spec` is an empty one, as in OpenKruise.
pub fn node_image(spec: Spec<'_>) -> Report {
    let mut report = Report::default();
    if spec.is_absent_or_null() {
        return report;
    }
    if let Some(typed) = spec.decode_or_report::<NodeImageSpec>(Kind::NodeImage, &mut report)
        && let Some(images) = &typed.images
    {
        node_image::images(&mut report, &FieldPath::new("spec").child("images"), images);
    }
    report
}

/// `spec.pullSecrets` of an ImagePullJob cannot change: the controller has
/// already copied those Secrets for the nodes. Unset and `[]` are the same.
/// The stored spec is read as a tree: it need not fit today's type.
fn pull_secrets_unchanged(report: &mut Report, path: &FieldPath, secrets: Option<&[String]>, old: Spec<'_>) {
    let new = Value::from(secrets.unwrap_or_default());
    let old = match old.tree().ok().flatten().as_deref().and_then(|s| s.get("pullSecrets")) {
        None | Some(Value::Null) => Value::Array(Vec::new()),
        Some(value) => value.clone(),
    };
    if new != old {
        report.error(FieldError::invalid(path.clone(), new, "field is immutable"));
    }
}
