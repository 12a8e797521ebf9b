//! Label and field selectors as kube-apiserver parses them: `a=b,c!=d`,
//! `env in (prod,qa)`, `!gone`, `present`; field selectors `metadata.name=x`.

use serde_json::Value;

#[derive(Clone, Debug, PartialEq)]
enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

/// A parsed label selector; empty matches everything.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LabelSelector(Vec<Requirement>);

/// Splits at commas that are not inside parentheses.
fn split_top_level(text: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0i32, 0);
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts.into_iter().map(str::trim).filter(|p| !p.is_empty()).collect()
}

fn set(values: &str) -> Result<Vec<String>, String> {
    let inner = values
        .trim()
        .strip_prefix('(')
        .and_then(|v| v.strip_suffix(')'))
        .ok_or_else(|| format!("expected a parenthesised set of values, got {values:?}"))?;
    Ok(inner
        .split(',')
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
        .collect())
}

impl LabelSelector {
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut requirements = Vec::new();
        for part in split_top_level(text) {
            let requirement = if let Some(key) = part.strip_prefix('!') {
                Requirement::NotExists(key.trim().to_owned())
            } else if let Some((key, values)) = part.split_once(" notin ") {
                Requirement::NotIn(key.trim().to_owned(), set(values)?)
            } else if let Some((key, values)) = part.split_once(" in ") {
                Requirement::In(key.trim().to_owned(), set(values)?)
            } else if let Some((key, value)) = part.split_once("!=") {
                Requirement::NotEquals(key.trim().to_owned(), value.trim().to_owned())
            } else if let Some((key, value)) = part.split_once("==").or_else(|| part.split_once('=')) {
                Requirement::Equals(key.trim().to_owned(), value.trim().to_owned())
            } else if part.contains([' ', '(', ')']) {
                return Err(format!("unable to parse requirement {part:?}"));
            } else {
                Requirement::Exists(part.to_owned())
            };
            requirements.push(requirement);
        }
        Ok(Self(requirements))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn matches(&self, object: &Value) -> bool {
        let labels = object.pointer("/metadata/labels");
        let label = |key: &str| labels.and_then(|l| l.get(key)).and_then(Value::as_str);
        self.0.iter().all(|requirement| match requirement {
            Requirement::Equals(k, v) => label(k) == Some(v.as_str()),
            Requirement::NotEquals(k, v) => label(k) != Some(v.as_str()),
            Requirement::In(k, vs) => label(k).is_some_and(|l| vs.iter().any(|v| v == l)),
            Requirement::NotIn(k, vs) => label(k).is_none_or(|l| vs.iter().all(|v| v != l)),
            Requirement::Exists(k) => label(k).is_some(),
            Requirement::NotExists(k) => label(k).is_none(),
        })
    }
}

/// A field selector over the fields the server supports for the resource.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FieldSelector(Vec<(String, bool, String)>);

impl FieldSelector {
    /// `supported` lists the JSON pointers per field name beyond metadata.name/namespace.
    pub fn parse(text: &str, supported: &[(&str, &str)]) -> Result<Self, String> {
        let mut terms = Vec::new();
        for part in split_top_level(text) {
            let (field, equal, value) = match part.split_once("!=") {
                Some((f, v)) => (f, false, v),
                None => match part.split_once("==").or_else(|| part.split_once('=')) {
                    Some((f, v)) => (f, true, v),
                    None => return Err(format!("invalid field selector {part:?}: use field=value")),
                },
            };
            let field = field.trim();
            let pointer = match field {
                "metadata.name" => "/metadata/name",
                "metadata.namespace" => "/metadata/namespace",
                other => supported
                    .iter()
                    .find(|(name, _)| *name == other)
                    .map(|(_, pointer)| *pointer)
                    .ok_or_else(|| format!("field label not supported: {other}"))?,
            };
            terms.push((pointer.to_owned(), equal, value.trim().to_owned()));
        }
        Ok(Self(terms))
    }

    /// Whether an object of this namespace and name is selected, when that
    /// alone decides it (no field beyond metadata.name and metadata.namespace).
    pub fn matches_name(&self, namespace: &str, name: &str) -> Option<bool> {
        self.0.iter().try_fold(true, |all, (pointer, equal, value)| {
            let actual = match pointer.as_str() {
                "/metadata/name" => name,
                "/metadata/namespace" => namespace,
                _ => return None,
            };
            Some(all && (actual == value) == *equal)
        })
    }

    pub fn matches(&self, object: &Value) -> bool {
        self.0.iter().all(|(pointer, equal, value)| {
            let actual = object.pointer(pointer).and_then(Value::as_str).unwrap_or_default();
            (actual == value) == *equal
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn label_selectors() {
        let object = json!({"metadata": {"labels": {"env": "prod", "tier": "web"}}});
        for (selector, expected) in [
            ("", true),
            ("env=prod", true),
            ("env==prod,tier=web", true),
            ("env!=prod", false),
            ("env in (prod, qa)", true),
            ("env notin (prod)", false),
            ("tier", true),
            ("!tier", false),
            ("!missing", true),
            ("missing notin (x)", true),
        ] {
            assert_eq!(
                LabelSelector::parse(selector).unwrap().matches(&object),
                expected,
                "{selector}"
            );
        }
        assert!(LabelSelector::parse("env in prod").is_err());
    }

    #[test]
    fn field_selectors() {
        let pod = json!({"metadata": {"name": "p", "namespace": "ns"}, "spec": {"nodeName": "n1"}});
        let supported = [("spec.nodeName", "/spec/nodeName")];
        assert!(
            FieldSelector::parse("spec.nodeName=n1,metadata.namespace=ns", &supported)
                .unwrap()
                .matches(&pod)
        );
        assert!(
            !FieldSelector::parse("metadata.name!=p", &supported)
                .unwrap()
                .matches(&pod)
        );
        assert!(FieldSelector::parse("status.phase=Running", &supported).is_err());
        // Name and namespace alone decide without the object; any other field needs it.
        let by_name = |text: &str| FieldSelector::parse(text, &supported).unwrap().matches_name("ns", "p");
        assert_eq!(by_name(""), Some(true));
        assert_eq!(by_name("metadata.name=p,metadata.namespace=ns"), Some(true));
        assert_eq!(by_name("metadata.name=q"), Some(false));
        assert_eq!(by_name("metadata.name!=q"), Some(true));
        assert_eq!(by_name("metadata.name=p,spec.nodeName=n1"), None);
    }
}
