//! What a job selects that it cannot reach, and how a job says so.

/// What a job selects that has no NodeImage to write to, so that a job that
/// reaches fewer nodes, or none, says why instead of completing quietly.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Unmatched {
    /// Nodes named in `selector.names` that do not exist.
    pub missing_nodes: Vec<String>,
    /// Ready nodes the job selects whose NodeImage is not made yet (within
    /// `--nodeimage-creation-delay`): the job waits for them.
    pub awaited_nodes: Vec<String>,
    /// With a podSelector: no running pod of the job's namespace matches it.
    pub no_pods_in: Option<String>,
}

impl Unmatched {
    /// Why a job targets no node, in a sentence.
    pub(super) fn why_nothing(&self, selection_is_labels: bool) -> String {
        if let Some(namespace) = &self.no_pods_in {
            return format!("no running pod matches podSelector in namespace {namespace}");
        }
        if !self.missing_nodes.is_empty() {
            return missing_nodes(&self.missing_nodes);
        }
        if selection_is_labels {
            "no node matches selector".to_owned()
        } else {
            "no node has a NodeImage".to_owned()
        }
    }
}

pub(super) fn missing_nodes(nodes: &[String]) -> String {
    let quoted: Vec<String> = nodes.iter().map(|n| format!("{n:?}")).collect();
    match quoted.as_slice() {
        [one] => format!("node {one} does not exist"),
        many => format!("nodes {} do not exist", many.join(", ")),
    }
}
