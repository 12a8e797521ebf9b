//! AdvancedCronJob: OpenKruise's rules for the schedule, its zone, limits and
//! template, with the template's spec held to the ImageListPullJob rules.

use std::collections::BTreeMap;

use jiff::Timestamp;
use serde_json::Value;

use crate::admission::Kind;
use crate::caps::Caps;
use crate::cron::{self, Schedule};
use crate::cron_job::CONCURRENCY_POLICIES;
use crate::field::{FieldError, FieldPath, Report};
use crate::job::{COMPLETION_ALWAYS, COMPLETION_NEVER};
use crate::names;
use crate::spec::Spec;
use crate::v1beta1::{AdvancedCronJobSpec, ImageListPullJobTemplateSpec};

/// The fields an update may change; the template is fixed at creation, as in OpenKruise.
const MUTABLE_FIELDS: &str = "schedule, timeZone, concurrencyPolicy, startingDeadlineSeconds, paused, \
                              successfulJobsHistoryLimit and failedJobsHistoryLimit";

/// Where "never fires" is checked from: every date that exists comes round
/// within the five years searched (2024 is a leap year).
const NEVER_FIRES_FROM: Timestamp = Timestamp::constant(1_704_067_200, 0);

/// Validates an AdvancedCronJob's spec (either version); `old` is the stored spec on UPDATE.
pub fn advanced_cron_job(spec: Spec<'_>, old: Option<Spec<'_>>, caps: &Caps) -> Report {
    let mut report = Report::default();
    let path = FieldPath::new("spec");
    let Some(typed) = spec.decode_or_report::<AdvancedCronJobSpec>(Kind::AdvancedCronJob, &mut report) else {
        return report;
    };
    schedule(&mut report, &path, &typed);
    non_negative(
        &mut report,
        &path.child("startingDeadlineSeconds"),
        typed.starting_deadline_seconds,
    );
    if let Some(policy) = typed.concurrency_policy.as_deref()
        && !CONCURRENCY_POLICIES.contains(&policy)
    {
        report.error(FieldError::not_supported(
            path.child("concurrencyPolicy"),
            policy,
            &CONCURRENCY_POLICIES,
        ));
    }
    for (field, limit) in [
        ("successfulJobsHistoryLimit", typed.successful_jobs_history_limit),
        ("failedJobsHistoryLimit", typed.failed_jobs_history_limit),
    ] {
        non_negative(&mut report, &path.child(field), limit.map(i64::from));
    }
    template(&mut report, &path.child("template"), &typed, caps);
    if let Some(old) = old {
        template_unchanged(&mut report, &path.child("template"), spec, old);
    }
    report
}

/// OpenKruise's rule for AdvancedCronJob names, on top of the API server's
/// DNS subdomain: at most 63 characters, no dots. A run is named
/// `<name>-<Unix seconds>`, which must itself be a valid name.
pub fn name(name: &str) -> Result<(), String> {
    const MAX: usize = 63;
    let mut problems = Vec::new();
    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        problems.push(
            "AdvancedCronJob name must consist of alphanumeric characters or '-' (e.g. 'example-com', regex used for validation is '^[a-zA-Z0-9\\-]+$')"
                .to_owned(),
        );
    }
    if name.len() > MAX {
        problems.push(format!("must be no more than {MAX} characters"));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join(", "))
    }
}

fn schedule(report: &mut Report, spec: &FieldPath, typed: &AdvancedCronJobSpec) {
    let path = spec.child("schedule");
    let zone_path = spec.child("timeZone");
    let time_zone = typed.time_zone.as_deref();
    match time_zone {
        Some("") => report.error(FieldError::invalid(
            zone_path.clone(),
            "",
            "must be unset or an IANA time zone such as Europe/Berlin",
        )),
        Some(name) => {
            if let Err(detail) = cron::load_zone(name) {
                report.error(FieldError::invalid(zone_path.clone(), name, detail));
            }
        }
        None => {}
    }
    let parsed = match Schedule::parse(&typed.schedule) {
        Ok(parsed) => parsed,
        Err(e) => {
            report.error(FieldError::invalid(
                path,
                typed.schedule.as_str(),
                format!("{e}; write five fields (minute hour day-of-month month day-of-week) such as \"0 2 * * *\", or a macro such as @daily"),
            ));
            return;
        }
    };
    if let Some(prefix) = parsed.prefix_zone.as_deref() {
        if time_zone.is_some() {
            report.error(FieldError::invalid(
                path,
                typed.schedule.as_str(),
                "cannot use both timeZone field and TZ or CRON_TZ in schedule: keep spec.timeZone and drop the prefix",
            ));
            return;
        }
        if let Err(detail) = cron::load_zone(prefix) {
            report.error(FieldError::invalid(path, typed.schedule.as_str(), detail));
            return;
        }
        report.warn(
            &path,
            format_args!("the TZ= prefix is kept for OpenKruise manifests; Kubernetes' CronJob refuses it, so prefer spec.timeZone: {prefix}"),
        );
    }
    if parsed.next_after(NEVER_FIRES_FROM, &jiff::tz::TimeZone::UTC).is_none() {
        report.warn(
            &path,
            format_args!(
                "{:?} names a date that never comes, so no job is ever created",
                typed.schedule
            ),
        );
    }
}

fn non_negative(report: &mut Report, path: &FieldPath, value: Option<i64>) {
    if let Some(value) = value.filter(|v| *v < 0) {
        report.error(FieldError::invalid(
            path.clone(),
            value,
            "must be greater than or equal to 0",
        ));
    }
}

fn template(report: &mut Report, path: &FieldPath, typed: &AdvancedCronJobSpec, caps: &Caps) {
    const ONLY_PREWARMING: &str = "prewarm runs image pre-warming only: it creates ImageListPullJobs from \
                                   spec.template.imageListPullJobTemplate; run this template with OpenKruise \
                                   or a Kubernetes CronJob";
    let template = &typed.template;
    if template.job_template.is_some() {
        report.error(FieldError::forbidden(path.child("jobTemplate"), ONLY_PREWARMING));
    }
    if template.broadcast_job_template.is_some() {
        report.error(FieldError::forbidden(
            path.child("broadcastJobTemplate"),
            ONLY_PREWARMING,
        ));
    }
    let list_path = path.child("imageListPullJobTemplate");
    let Some(list) = &template.image_list_pull_job_template else {
        if template.job_template.is_none() && template.broadcast_job_template.is_none() {
            report.error(FieldError::required(
                list_path,
                "set the ImageListPullJob each run creates: its images, and the nodes to pull on",
            ));
        }
        return;
    };
    list_template(report, &list_path, list, caps);
}

fn list_template(report: &mut Report, path: &FieldPath, list: &ImageListPullJobTemplateSpec, caps: &Caps) {
    if let Some(metadata) = &list.metadata {
        let metadata_path = path.child("metadata");
        labels(report, &metadata_path.child("labels"), metadata.labels.as_ref(), true);
        labels(
            report,
            &metadata_path.child("annotations"),
            metadata.annotations.as_ref(),
            false,
        );
    }
    let spec_path = path.child("spec");
    let Some(spec) = &list.spec else {
        report.error(FieldError::required(
            spec_path,
            "the images to pull and the nodes to pull them on",
        ));
        return;
    };
    super::image_list_pull_job_at(report, &spec_path, spec, caps);
    let completion = spec.completion_policy.as_ref().and_then(|p| p.type_.as_deref());
    if completion == Some(COMPLETION_NEVER) {
        report.error(FieldError::not_supported(
            spec_path.child("completionPolicy").child("type"),
            COMPLETION_NEVER,
            &[COMPLETION_ALWAYS],
        ));
    }
}

/// The created job would be refused for a bad label or annotation key, or a bad label value.
fn labels(report: &mut Report, path: &FieldPath, map: Option<&BTreeMap<String, String>>, values_too: bool) {
    for (key, value) in map.into_iter().flatten() {
        if let Err(detail) = names::label_key(key) {
            report.error(FieldError::invalid(path.key(key), key.as_str(), detail));
        } else if values_too && let Err(detail) = names::label_value(value) {
            report.error(FieldError::invalid(path.key(key), value.as_str(), detail));
        }
    }
}

/// `spec.template` cannot change (OpenKruise); the stored spec is read as a tree.
fn template_unchanged(report: &mut Report, path: &FieldPath, new: Spec<'_>, old: Spec<'_>) {
    let member = |spec: Spec<'_>| -> Option<Value> { spec.tree().ok().flatten()?.get("template").cloned() };
    if member(new) != member(old) {
        report.error(FieldError::forbidden(
            path.clone(),
            format!(
                "field is immutable: an update may change only {MUTABLE_FIELDS}; to create other jobs, \
                 delete this AdvancedCronJob and create a new one"
            ),
        ));
    }
}
