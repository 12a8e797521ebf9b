//! Whether a Pod may run on a Node, as the scheduler's filters and the
//! DaemonSet controller's `NodeShouldRunDaemonPod` decide it: `nodeSelector`,
//! required node affinity (`matchExpressions` on labels, `matchFields` on
//! `metadata.name`), and taints with effect NoSchedule or NoExecute each
//! tolerated (<https://kubernetes.io/docs/concepts/scheduling-eviction/taint-and-toleration/>,
//! <https://kubernetes.io/docs/concepts/scheduling-eviction/assign-pod-node/>).

use serde_json::Value;

fn text<'a>(value: &'a Value, pointer: &str) -> &'a str {
    value.pointer(pointer).and_then(Value::as_str).unwrap_or_default()
}

fn label<'a>(node: &'a Value, key: &str) -> Option<&'a str> {
    node["metadata"]["labels"][key].as_str()
}

fn strings(value: &Value) -> Vec<&str> {
    value
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect()
}

/// One `NodeSelectorRequirement` against a value (a label's, or a field's).
fn requirement(expression: &Value, value: Option<&str>) -> bool {
    let values = strings(&expression["values"]);
    let number = |v: &str| v.parse::<i64>().ok();
    match text(expression, "/operator") {
        "In" => value.is_some_and(|v| values.contains(&v)),
        "NotIn" => value.is_none_or(|v| !values.contains(&v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" => {
            matches!((value.and_then(number), values.first().and_then(|v| number(v))), (Some(v), Some(bound)) if v > bound)
        }
        "Lt" => {
            matches!((value.and_then(number), values.first().and_then(|v| number(v))), (Some(v), Some(bound)) if v < bound)
        }
        _ => false,
    }
}

/// A `NodeSelectorTerm`: all its expressions and fields hold (an empty term matches nothing).
fn term_matches(term: &Value, node: &Value) -> bool {
    let expressions = term["matchExpressions"].as_array().map_or(&[][..], Vec::as_slice);
    let fields = term["matchFields"].as_array().map_or(&[][..], Vec::as_slice);
    if expressions.is_empty() && fields.is_empty() {
        return false;
    }
    expressions.iter().all(|e| requirement(e, label(node, text(e, "/key"))))
        && fields.iter().all(|f| {
            let value = (text(f, "/key") == "metadata.name").then(|| text(node, "/metadata/name"));
            requirement(f, value)
        })
}

pub fn node_selector_matches(pod_spec: &Value, node: &Value) -> bool {
    pod_spec["nodeSelector"]
        .as_object()
        .into_iter()
        .flatten()
        .all(|(key, value)| label(node, key) == value.as_str())
}

pub fn required_affinity_matches(pod_spec: &Value, node: &Value) -> bool {
    let Some(terms) = pod_spec
        .pointer("/affinity/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution/nodeSelectorTerms")
        .and_then(Value::as_array)
    else {
        return true;
    };
    terms.iter().any(|term| term_matches(term, node))
}

fn tolerates(toleration: &Value, taint: &Value) -> bool {
    let effect = text(toleration, "/effect");
    if !effect.is_empty() && effect != text(taint, "/effect") {
        return false;
    }
    let key = text(toleration, "/key");
    match text(toleration, "/operator") {
        "Exists" => key.is_empty() || key == text(taint, "/key"),
        _ => key == text(taint, "/key") && text(toleration, "/value") == text(taint, "/value"),
    }
}

/// The taints of `node` that keep a Pod with `tolerations` off it.
pub fn untolerated<'a>(tolerations: &[Value], node: &'a Value) -> Vec<&'a Value> {
    node["spec"]["taints"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|taint| matches!(text(taint, "/effect"), "NoSchedule" | "NoExecute"))
        .filter(|taint| !tolerations.iter().any(|t| tolerates(t, taint)))
        .collect()
}

pub fn tolerations(pod_spec: &Value) -> Vec<Value> {
    pod_spec["tolerations"].as_array().cloned().unwrap_or_default()
}

/// Every filter: where a Pod of `pod_spec` may run.
pub fn fits(pod_spec: &Value, node: &Value) -> bool {
    node_selector_matches(pod_spec, node)
        && required_affinity_matches(pod_spec, node)
        && untolerated(&tolerations(pod_spec), node).is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(name: &str, labels: Value, taints: Value) -> Value {
        json!({"metadata": {"name": name, "labels": labels}, "spec": {"taints": taints}})
    }

    #[test]
    fn selectors_affinity_and_fields() {
        let worker = node("w1", json!({"node-type": "xxx", "zone": "a"}), json!([]));
        let control = node("cp", json!({"node-role.kubernetes.io/control-plane": ""}), json!([]));
        assert!(node_selector_matches(
            &json!({"nodeSelector": {"node-type": "xxx"}}),
            &worker
        ));
        assert!(!node_selector_matches(
            &json!({"nodeSelector": {"node-type": "xxx"}}),
            &control
        ));
        let not_control_plane = json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": [{"key": "node-role.kubernetes.io/control-plane", "operator": "DoesNotExist"}]}]}}}});
        assert!(required_affinity_matches(&not_control_plane, &worker));
        assert!(!required_affinity_matches(&not_control_plane, &control));
        let pinned = json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["w1"]}]}]}}}});
        assert!(required_affinity_matches(&pinned, &worker));
        assert!(!required_affinity_matches(&pinned, &control));
    }

    #[test]
    fn taints_need_a_toleration_unless_prefer_no_schedule() {
        let tainted = node(
            "cp",
            json!({}),
            json!([{"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"},
                   {"key": "soft", "effect": "PreferNoSchedule"}]),
        );
        assert!(!fits(&json!({}), &tainted));
        assert!(fits(&json!({"tolerations": [{"operator": "Exists"}]}), &tainted));
        assert!(fits(
            &json!({"tolerations": [{"key": "node-role.kubernetes.io/control-plane", "operator": "Exists", "effect": "NoSchedule"}]}),
            &tainted
        ));
        assert!(!fits(
            &json!({"tolerations": [{"key": "other", "operator": "Exists"}]}),
            &tainted
        ));
    }
}
