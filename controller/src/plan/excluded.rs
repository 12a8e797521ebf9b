//! `--excluded-nodes`: nodes no job targets, whatever its selector says (by
//! default control-plane nodes, whose disk etcd shares), as a label selector in
//! kubectl's syntax: `key`, `!key`, `key=value`, `key!=value`, joined by commas,
//! all of which must hold. An empty selector excludes nothing.

use std::collections::BTreeMap;
use std::fmt;

#[derive(Clone, Debug, PartialEq, Eq)]
enum Requirement {
    Exists(String),
    Absent(String),
    Equals(String, String),
    NotEquals(String, String),
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExcludedNodes {
    requirements: Vec<Requirement>,
    text: String,
}

impl ExcludedNodes {
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut requirements = Vec::new();
        for term in text.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let requirement = if let Some((key, value)) = term.split_once("!=") {
                Requirement::NotEquals(key.trim().to_owned(), value.trim().to_owned())
            } else if let Some((key, value)) = term.split_once('=') {
                Requirement::Equals(key.trim().trim_end_matches('=').to_owned(), value.trim().to_owned())
            } else if let Some(key) = term.strip_prefix('!') {
                Requirement::Absent(key.trim().to_owned())
            } else {
                Requirement::Exists(term.to_owned())
            };
            let key = match &requirement {
                Requirement::Exists(k)
                | Requirement::Absent(k)
                | Requirement::Equals(k, _)
                | Requirement::NotEquals(k, _) => k,
            };
            prewarm_api::names::label_key(key).map_err(|e| format!("label key {key:?} in {text:?}: {e}"))?;
            requirements.push(requirement);
        }
        Ok(Self {
            requirements,
            text: text.to_owned(),
        })
    }

    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// Whether a node with `labels` is excluded.
    pub fn excludes(&self, labels: Option<&BTreeMap<String, String>>) -> bool {
        let value = |key: &str| labels.and_then(|l| l.get(key));
        !self.requirements.is_empty()
            && self.requirements.iter().all(|r| match r {
                Requirement::Exists(key) => value(key).is_some(),
                Requirement::Absent(key) => value(key).is_none(),
                Requirement::Equals(key, expected) => value(key) == Some(expected),
                Requirement::NotEquals(key, expected) => value(key) != Some(expected),
            })
    }
}

impl fmt::Display for ExcludedNodes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn control_plane_nodes_are_excluded_by_default_and_empty_excludes_nothing() {
        let default = ExcludedNodes::parse("node-role.kubernetes.io/control-plane").unwrap_or_default();
        assert!(default.excludes(Some(&labels(&[("node-role.kubernetes.io/control-plane", "")]))));
        assert!(!default.excludes(Some(&labels(&[("zone", "a")]))));
        assert!(!default.excludes(None));
        let nothing = ExcludedNodes::parse("").unwrap_or_default();
        assert!(!nothing.excludes(Some(&labels(&[("node-role.kubernetes.io/control-plane", "")]))));
        let both = ExcludedNodes::parse("pool=system, !keep-warm").unwrap_or_default();
        assert!(both.excludes(Some(&labels(&[("pool", "system")]))));
        assert!(!both.excludes(Some(&labels(&[("pool", "system"), ("keep-warm", "1")]))));
        let not = ExcludedNodes::parse("pool!=gpu").unwrap_or_default();
        assert!(not.excludes(Some(&labels(&[("pool", "cpu")]))) && !not.excludes(Some(&labels(&[("pool", "gpu")]))));
        assert!(ExcludedNodes::parse("bad key").is_err());
    }
}
