//! NodeImage rules: at most 256 image names, each a repository name, with
//! non-empty unique tags that each carry createdAt and a pull policy with a TTL.

use std::collections::{BTreeMap, HashMap};

use crate::field::{FieldError, FieldPath, Report};
use crate::job::IMAGE_PULL_POLICIES;
use crate::node_image::{ImageTagSpec, MAX_IMAGES};
use crate::reference::{self, ReferenceError};
use crate::v1beta1::ImageSpec;

use super::template::timeout_and_retries;

pub(super) fn images(report: &mut Report, path: &FieldPath, images: &BTreeMap<String, ImageSpec>) {
    if images.len() > MAX_IMAGES {
        report.error(FieldError::too_many(path.clone(), images.len(), MAX_IMAGES));
    }
    let mut seen: HashMap<String, &str> = HashMap::new();
    for (name, image) in images {
        let image_path = path.key(name);
        match reference::parse_repository_name(name) {
            Ok(parsed) => {
                let full = parsed.full_name();
                if let Some(first) = seen.get(&full) {
                    report.error(FieldError::duplicate(
                        image_path.clone(),
                        name.as_str(),
                        format!("the same image as {} ({full})", path.key(first)),
                    ));
                } else {
                    seen.insert(full, name);
                }
            }
            Err(ReferenceError::Empty) => {
                report.error(FieldError::required(image_path.clone(), "image name must not be empty"))
            }
            Err(e) => report.error(FieldError::invalid(image_path.clone(), name.as_str(), e.to_string())),
        }
        tags(report, &image_path.child("tags"), &image.tags);
    }
}

fn tags(report: &mut Report, path: &FieldPath, tags: &[ImageTagSpec]) {
    let mut seen = HashMap::new();
    for (i, tag) in tags.iter().enumerate() {
        let tag_path = path.index(i);
        match reference::validate_tag_or_digest(&tag.tag) {
            Ok(()) => {
                if let Some(first) = seen.get(tag.tag.as_str()) {
                    report.error(FieldError::duplicate(
                        tag_path.child("tag"),
                        tag.tag.as_str(),
                        format!("already listed at {}", path.index(*first)),
                    ));
                } else {
                    seen.insert(tag.tag.as_str(), i);
                }
            }
            Err(ReferenceError::EmptyTag) => {
                report.error(FieldError::required(
                    tag_path.child("tag"),
                    "a tag such as \"1.25\", or a digest",
                ));
            }
            Err(e) => report.error(FieldError::invalid(
                tag_path.child("tag"),
                tag.tag.as_str(),
                e.to_string(),
            )),
        }
        if tag.created_at.is_none() {
            report.error(FieldError::required(
                tag_path.child("createdAt"),
                "set by the mutating webhook",
            ));
        }
        if let Some(version) = tag.version
            && version < 0
        {
            report.error(FieldError::invalid(
                tag_path.child("version"),
                version,
                "must be greater than or equal to 0",
            ));
        }
        if let Some(policy) = tag.image_pull_policy.as_deref()
            && !policy.is_empty()
            && !IMAGE_PULL_POLICIES.contains(&policy)
        {
            report.error(FieldError::not_supported(
                tag_path.child("imagePullPolicy"),
                policy,
                &IMAGE_PULL_POLICIES,
            ));
        }
        let policy_path = tag_path.child("pullPolicy");
        let Some(policy) = &tag.pull_policy else {
            report.error(FieldError::required(policy_path, "set by the mutating webhook"));
            continue;
        };
        timeout_and_retries(report, &policy_path, policy.timeout_seconds, policy.backoff_limit);
        match policy.ttl_seconds_after_finished {
            None => report.error(FieldError::required(
                policy_path.child("ttlSecondsAfterFinished"),
                "seconds after the pull finishes at which the tag is removed, such as 300",
            )),
            Some(ttl) if ttl < 0 => report.warn(
                &policy_path.child("ttlSecondsAfterFinished"),
                super::template::negative_ttl(ttl, "tag"),
            ),
            Some(_) => {}
        }
        if let Some(deadline) = policy.active_deadline_seconds
            && deadline <= 0
        {
            report.error(FieldError::invalid(
                policy_path.child("activeDeadlineSeconds"),
                deadline,
                "must be greater than 0",
            ));
        }
    }
}
