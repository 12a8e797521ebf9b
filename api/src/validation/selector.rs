//! Label selectors, checked as Kubernetes checks `metav1.LabelSelector`.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

use crate::field::{FieldError, FieldPath, Report};
use crate::names;

const OPERATORS: [&str; 4] = ["In", "NotIn", "Exists", "DoesNotExist"];

pub(super) fn labels(report: &mut Report, path: &FieldPath, labels: Option<&BTreeMap<String, String>>) {
    for (key, value) in labels.into_iter().flatten() {
        if let Err(e) = names::label_key(key) {
            report.error(FieldError::invalid(path.clone(), key.as_str(), e));
        }
        if let Err(e) = names::label_value(value) {
            report.error(FieldError::invalid(path.key(key), value.as_str(), e));
        }
    }
}

pub(super) fn expressions(report: &mut Report, path: &FieldPath, expressions: Option<&Vec<LabelSelectorRequirement>>) {
    for (i, requirement) in expressions.into_iter().flatten().enumerate() {
        let path = path.index(i);
        let values = requirement.values.as_deref().unwrap_or_default();
        match requirement.operator.as_str() {
            "In" | "NotIn" if values.is_empty() => report.error(FieldError::required(
                path.child("values"),
                "must be specified when `operator` is 'In' or 'NotIn'",
            )),
            "Exists" | "DoesNotExist" if !values.is_empty() => report.error(FieldError::forbidden(
                path.child("values"),
                "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
            )),
            operator if !OPERATORS.contains(&operator) => {
                report.error(FieldError::not_supported(path.child("operator"), operator, &OPERATORS))
            }
            _ => {}
        }
        if let Err(e) = names::label_key(&requirement.key) {
            report.error(FieldError::invalid(path.child("key"), requirement.key.as_str(), e));
        }
        for (j, value) in values.iter().enumerate() {
            if let Err(e) = names::label_value(value) {
                report.error(FieldError::invalid(path.child("values").index(j), value.as_str(), e));
            }
        }
    }
}
