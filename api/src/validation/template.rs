//! Rules for the fields ImagePullJob and ImageListPullJob share.

use std::collections::HashMap;

use crate::caps::Caps;
use crate::defaults::DEFAULT_TIMEOUT_SECONDS;
use crate::field::{FieldError, FieldPath, Report};
use crate::job::{
    COMPLETION_ALWAYS, COMPLETION_NEVER, COMPLETION_TYPES, CompletionPolicy, IMAGE_PULL_POLICIES, Parallelism,
    PullPolicy, TemplateRef,
};
use crate::names;

use super::selector;

pub(super) fn template(report: &mut Report, spec: &FieldPath, template: &TemplateRef<'_>, caps: &Caps) {
    pull_secrets(report, &spec.child("pullSecrets"), template.pull_secrets);
    node_selector(report, spec, template);
    if let Some(parallelism) = template.parallelism {
        let path = spec.child("parallelism");
        match Parallelism::parse(parallelism) {
            Ok(Parallelism::Nodes(0)) => {
                report.warn(&path, "0 pauses the job: no node starts pulling until it is raised")
            }
            Ok(_) => {}
            Err(detail) => report.error(FieldError::invalid(path, serde_json::json!(parallelism), detail)),
        }
    }
    if let Some(policy) = template.pull_policy {
        timeout_and_retries(
            report,
            &spec.child("pullPolicy"),
            policy.timeout_seconds,
            policy.backoff_limit,
        );
        within_caps(report, &spec.child("pullPolicy"), policy, caps);
    }
    completion_policy(report, spec, template.completion_policy, template.pull_policy);
    if let Some(policy) = template.image_pull_policy
        && !IMAGE_PULL_POLICIES.contains(&policy)
    {
        report.error(FieldError::not_supported(
            spec.child("imagePullPolicy"),
            policy,
            &IMAGE_PULL_POLICIES,
        ));
    }
}

fn pull_secrets(report: &mut Report, path: &FieldPath, secrets: Option<&Vec<String>>) {
    let mut seen = HashMap::new();
    for (i, name) in secrets.into_iter().flatten().enumerate() {
        // OpenKruise accepts such names, so manifests written for it keep applying;
        // the Secret can never be found, which the warning says.
        if let Err(e) = names::dns_subdomain(name) {
            report.warn(
                &path.index(i),
                format_args!(
                    "{name:?} is not a valid Secret name ({e}), so no such Secret can exist and it is ignored"
                ),
            );
        } else if let Some(first) = seen.get(name.as_str()) {
            report.warn(
                &path.index(i),
                format_args!("Secret {name:?} is already listed at index {first}"),
            );
        } else {
            seen.insert(name.as_str(), i);
        }
    }
}

fn node_selector(report: &mut Report, spec: &FieldPath, template: &TemplateRef<'_>) {
    if let Some(node_selector) = template.selector {
        let path = spec.child("selector");
        let has_labels = node_selector.match_labels.is_some() || node_selector.match_expressions.is_some();
        if node_selector.names.is_some() && has_labels {
            report.error(FieldError::forbidden(
                path.clone(),
                "names and a label selector (matchLabels, matchExpressions) are mutually exclusive: set one of them",
            ));
        }
        selector::labels(report, &path.child("matchLabels"), node_selector.match_labels.as_ref());
        selector::expressions(
            report,
            &path.child("matchExpressions"),
            node_selector.match_expressions.as_ref(),
        );
        if let Some(node_names) = &node_selector.names {
            node_names_rule(report, &path.child("names"), node_names);
        }
        if template.pod_selector.is_some() {
            report.error(FieldError::forbidden(
                spec.child("podSelector"),
                "may not be set together with spec.selector: choose the nodes either by selector or by podSelector",
            ));
        }
    }
    if let Some(pod_selector) = template.pod_selector {
        let path = spec.child("podSelector");
        selector::labels(report, &path.child("matchLabels"), pod_selector.match_labels.as_ref());
        selector::expressions(
            report,
            &path.child("matchExpressions"),
            pod_selector.match_expressions.as_ref(),
        );
    }
}

fn node_names_rule(report: &mut Report, path: &FieldPath, node_names: &[String]) {
    if node_names.is_empty() {
        report.warn(
            path,
            "the list is empty, so the job targets no node; remove selector to target every node",
        );
    }
    let mut seen = HashMap::new();
    for (i, name) in node_names.iter().enumerate() {
        if let Some(first) = seen.get(name.as_str()) {
            report.error(FieldError::duplicate(
                path.index(i),
                name.as_str(),
                format!("already listed at {}", path.index(*first)),
            ));
            continue;
        }
        seen.insert(name.as_str(), i);
        if let Err(e) = names::dns_subdomain(name) {
            report.warn(&path.index(i), format_args!("{name:?} can never match a node: {e}"));
        }
    }
}

/// Timeout and retries of a pull policy, shared with NodeImage tags.
pub(super) fn timeout_and_retries(report: &mut Report, path: &FieldPath, timeout: Option<i32>, backoff: Option<i32>) {
    if let Some(timeout) = timeout
        && timeout <= 0
    {
        report.error(FieldError::invalid(
            path.child("timeoutSeconds"),
            timeout,
            "must be greater than 0",
        ));
    }
    if let Some(timeout) = timeout
        && timeout > LONG_TIMEOUT_SECONDS
    {
        report.warn(
            &path.child("timeoutSeconds"),
            format_args!("{timeout} s per attempt: against a registry that does not answer, each attempt holds one of a node's few pull slots that long; {LONG_TIMEOUT_SECONDS} or less is usual"),
        );
    }
    if let Some(backoff) = backoff {
        if backoff < 0 {
            report.warn(
                &path.child("backoffLimit"),
                format_args!("{backoff} is negative and is treated as the default, 3"),
            );
        } else if backoff > MANY_RETRIES {
            report.warn(
                &path.child("backoffLimit"),
                format_args!("{backoff} retries keep a failing pull going for hours on every node; {MANY_RETRIES} or less is usual"),
            );
        }
    }
}

/// The admin's caps (`--max-timeout-seconds`, `--max-backoff-limit`).
fn within_caps(report: &mut Report, path: &FieldPath, policy: &PullPolicy, caps: &Caps) {
    let checks = [
        (
            "timeoutSeconds",
            policy.timeout_seconds,
            caps.max_timeout_seconds,
            "--max-timeout-seconds",
        ),
        (
            "backoffLimit",
            policy.backoff_limit,
            caps.max_backoff_limit,
            "--max-backoff-limit",
        ),
    ];
    for (field, value, cap, flag) in checks {
        if let (Some(value), Some(cap)) = (value, cap)
            && value > cap
        {
            report.error(FieldError::invalid(
                path.child(field),
                value,
                format!("must be at most {cap}, the most this cluster allows (prewarm-webhook {flag})"),
            ));
        }
    }
}

/// Above these a pull policy is legal (OpenKruise accepts any value) but
/// likely a mistake that keeps nodes busy: the webhook warns.
const LONG_TIMEOUT_SECONDS: i32 = 3600;
const MANY_RETRIES: i32 = 20;

fn completion_policy(
    report: &mut Report,
    spec: &FieldPath,
    policy: Option<&CompletionPolicy>,
    pull: Option<&PullPolicy>,
) {
    let path = spec.child("completionPolicy");
    let Some(policy) = policy else {
        report.error(FieldError::required(path, ""));
        return;
    };
    let deadline = policy.active_deadline_seconds;
    let ttl = policy.ttl_seconds_after_finished;
    match policy.type_.as_deref().unwrap_or_default() {
        COMPLETION_ALWAYS => {
            if let Some(ttl) = ttl
                && ttl < 0
            {
                report.warn(&path.child("ttlSecondsAfterFinished"), negative_ttl(ttl, "job"));
            }
            let timeout = pull.and_then(|p| p.timeout_seconds).unwrap_or(DEFAULT_TIMEOUT_SECONDS);
            if let Some(deadline) = deadline {
                if deadline <= 0 {
                    report.error(FieldError::invalid(
                        path.child("activeDeadlineSeconds"),
                        deadline,
                        "must be greater than 0",
                    ));
                } else if i64::from(timeout) > deadline {
                    report.error(FieldError::invalid(
                        path.child("activeDeadlineSeconds"),
                        deadline,
                        format!("must be greater than or equal to spec.pullPolicy.timeoutSeconds ({timeout})"),
                    ));
                }
            }
        }
        COMPLETION_NEVER => {
            for (name, set) in [
                ("activeDeadlineSeconds", deadline.is_some()),
                ("ttlSecondsAfterFinished", ttl.is_some()),
            ] {
                if set {
                    report.error(FieldError::forbidden(
                        path.child(name),
                        "only allowed when completionPolicy.type is Always: a Never job does not finish",
                    ));
                }
            }
        }
        "" => report.error(FieldError::required(path.child("type"), "one of \"Always\", \"Never\"")),
        other => report.error(FieldError::not_supported(path.child("type"), other, &COMPLETION_TYPES)),
    }
}

/// A negative TTL is accepted, as OpenKruise accepts it, and said to act as 0.
pub(super) fn negative_ttl(ttl: i32, what: &str) -> String {
    format!("{ttl} is negative and acts as 0: the {what} is removed as soon as it finishes")
}
