//! Image references in job specs: each must parse, and a list must not name the
//! same image twice under different spellings.

use std::collections::HashMap;

use crate::field::{FieldError, FieldPath, Report};
use crate::job::PULL_IF_NOT_PRESENT;
use crate::reference::ImageReference;

/// Most images in one ImageListPullJob.
pub const MAX_LIST_IMAGES: usize = 255;

/// Checks one reference; warns when a moving `latest` tag meets IfNotPresent.
pub(super) fn image(report: &mut Report, path: FieldPath, image: &str, pull_policy: Option<&str>) {
    if let Some(reference) = parse(report, &path, image) {
        warn_latest(report, &path, image, &reference, pull_policy);
    }
}

fn parse(report: &mut Report, path: &FieldPath, image: &str) -> Option<ImageReference> {
    if image.is_empty() {
        report.error(FieldError::required(
            path.clone(),
            "the image to pull, such as \"nginx:1.25\"",
        ));
        return None;
    }
    ImageReference::parse(image)
        .map_err(|e| report.error(FieldError::invalid(path.clone(), image, e.to_string())))
        .ok()
}

fn warn_latest(report: &mut Report, path: &FieldPath, image: &str, reference: &ImageReference, policy: Option<&str>) {
    if reference.is_latest() && policy.unwrap_or(PULL_IF_NOT_PRESENT) == PULL_IF_NOT_PRESENT {
        report.warn(
            path,
            format_args!(
                "{image:?} resolves to the moving tag \"latest\" and imagePullPolicy is IfNotPresent: nodes that already have some \"latest\" keep it; pin a tag or digest, or use imagePullPolicy Always"
            ),
        );
    }
}

/// Checks an ImageListPullJob's `images`: 1 to 255 distinct, valid references.
pub(super) fn image_list(report: &mut Report, path: &FieldPath, images: &[String], pull_policy: Option<&str>) {
    if images.is_empty() {
        report.error(FieldError::required(path.clone(), "at least one image to pull"));
        return;
    }
    if images.len() > MAX_LIST_IMAGES {
        report.error(FieldError::too_many(path.clone(), images.len(), MAX_LIST_IMAGES));
    }
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (i, entry) in images.iter().enumerate() {
        let entry_path = path.index(i);
        let Some(reference) = parse(report, &entry_path, entry) else {
            continue;
        };
        let canonical = reference.canonical();
        if let Some(first) = seen.get(&canonical) {
            report.error(FieldError::duplicate(
                entry_path,
                entry.as_str(),
                format!("the same image as {} ({canonical})", path.index(*first)),
            ));
        } else {
            warn_latest(report, &entry_path, entry, &reference, pull_policy);
            seen.insert(canonical, i);
        }
    }
}
