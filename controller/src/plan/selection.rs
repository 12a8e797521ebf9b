//! Which nodes a job targets: every node, named nodes, nodes by label, or the
//! nodes running matching pods of the job's own namespace.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;
use prewarm_api::job::{NodeSelector, PodSelector};
use prewarm_api::v1beta1::ImagePullJobSpec;

/// How a job chooses its nodes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Selection<'a> {
    /// No selector: every node with a NodeImage.
    All,
    /// `selector.names`: these nodes (an empty list is no node).
    Names(&'a [String]),
    /// `selector.matchLabels` / `matchExpressions` on the nodes' labels (empty: every node).
    Labels(LabelSelector<'a>),
    /// `podSelector`: the nodes of the matching, scheduled, unfinished pods of the job's namespace.
    Pods(LabelSelector<'a>),
}

/// A label selector borrowed from either selector type.
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub struct LabelSelector<'a> {
    pub match_labels: Option<&'a BTreeMap<String, String>>,
    pub match_expressions: Option<&'a [LabelSelectorRequirement]>,
}

impl<'a> LabelSelector<'a> {
    fn of_nodes(selector: &'a NodeSelector) -> Self {
        Self {
            match_labels: selector.match_labels.as_ref(),
            match_expressions: selector.match_expressions.as_deref(),
        }
    }

    fn of_pods(selector: &'a PodSelector) -> Self {
        Self {
            match_labels: selector.match_labels.as_ref(),
            match_expressions: selector.match_expressions.as_deref(),
        }
    }

    /// Kubernetes semantics: every matchLabels pair and every expression must
    /// hold; an empty selector matches everything; an unknown operator matches nothing.
    pub fn matches(&self, labels: Option<&BTreeMap<String, String>>) -> bool {
        let value = |key: &str| labels.and_then(|l| l.get(key));
        let pairs_hold = self
            .match_labels
            .into_iter()
            .flatten()
            .all(|(k, v)| value(k) == Some(v));
        pairs_hold
            && self.match_expressions.unwrap_or_default().iter().all(|e| {
                let values = e.values.as_deref().unwrap_or_default();
                match (e.operator.as_str(), value(&e.key)) {
                    ("In", Some(v)) => values.contains(v),
                    ("In", None) => false,
                    ("NotIn", Some(v)) => !values.contains(v),
                    ("NotIn", None) => true,
                    ("Exists", found) => found.is_some(),
                    ("DoesNotExist", found) => found.is_none(),
                    _ => false,
                }
            })
    }
}

pub fn selection(spec: &ImagePullJobSpec) -> Selection<'_> {
    if let Some(pods) = &spec.pod_selector {
        return Selection::Pods(LabelSelector::of_pods(pods));
    }
    match &spec.selector {
        None => Selection::All,
        Some(NodeSelector { names: Some(names), .. }) => Selection::Names(names),
        Some(selector) => Selection::Labels(LabelSelector::of_nodes(selector)),
    }
}

/// The node of a pod that a podSelector job counts: scheduled, not finished,
/// not being deleted.
pub fn active_pod_node(pod: &Pod) -> Option<&str> {
    if pod.metadata.deletion_timestamp.is_some() {
        return None;
    }
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    if matches!(phase, Some("Succeeded" | "Failed")) {
        return None;
    }
    pod.spec.as_ref()?.node_name.as_deref().filter(|n| !n.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn requirement(key: &str, operator: &str, values: &[&str]) -> LabelSelectorRequirement {
        LabelSelectorRequirement {
            key: key.into(),
            operator: operator.into(),
            values: (!values.is_empty()).then(|| values.iter().map(|v| (*v).to_owned()).collect()),
        }
    }

    #[test]
    fn label_selector_operators() {
        let labels: BTreeMap<String, String> = [("arch".to_owned(), "arm64".to_owned())].into();
        let check = |reqs: Vec<LabelSelectorRequirement>, labels: Option<&BTreeMap<String, String>>| {
            LabelSelector {
                match_labels: None,
                match_expressions: Some(&reqs),
            }
            .matches(labels)
        };
        assert!(check(
            vec![requirement("arch", "In", &["arm64", "amd64"])],
            Some(&labels)
        ));
        assert!(!check(vec![requirement("arch", "In", &["amd64"])], Some(&labels)));
        assert!(!check(vec![requirement("arch", "In", &["amd64"])], None));
        assert!(check(vec![requirement("arch", "NotIn", &["amd64"])], Some(&labels)));
        assert!(check(vec![requirement("arch", "NotIn", &["amd64"])], None));
        assert!(check(vec![requirement("arch", "Exists", &[])], Some(&labels)));
        assert!(!check(vec![requirement("arch", "DoesNotExist", &[])], Some(&labels)));
        assert!(check(vec![requirement("zone", "DoesNotExist", &[])], Some(&labels)));
        assert!(!check(vec![requirement("arch", "Near", &["arm64"])], Some(&labels)));
        assert!(
            LabelSelector::default().matches(None),
            "an empty selector matches everything"
        );
        let wanted: BTreeMap<String, String> = [("arch".to_owned(), "amd64".to_owned())].into();
        let pairs = LabelSelector {
            match_labels: Some(&wanted),
            match_expressions: None,
        };
        assert!(!pairs.matches(Some(&labels)));
    }
}
