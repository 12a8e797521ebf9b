//! The scheduler's decision for one Pod: the nodes that pass the filters
//! ([`super::placement`], and a Ready node), scored by how few Pods they
//! already run (spreading; kube-scheduler weighs more, round robin is
//! enough here). An unschedulable Pod gets kube-scheduler's
//! `PodScheduled=False` condition with reason `Unschedulable`.

use serde_json::{Value, json};

use super::placement;
use super::text;

fn node_ready(node: &Value) -> bool {
    node["status"]["conditions"]
        .as_array()
        .is_some_and(|c| c.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
}

/// The node to bind `pod` to, or the message of why none fits
/// (`0/3 nodes are available: 1 node(s) didn't match Pod's node affinity/selector, …`).
pub fn choose<'a>(pod: &Value, nodes: &'a [Value], pods: &[Value]) -> Result<&'a str, String> {
    let spec = &pod["spec"];
    let mut reasons: std::collections::BTreeMap<&str, usize> = std::collections::BTreeMap::new();
    let mut fitting = Vec::new();
    for node in nodes {
        let reason =
            if !placement::node_selector_matches(spec, node) || !placement::required_affinity_matches(spec, node) {
                Some("node(s) didn't match Pod's node affinity/selector")
            } else if !placement::untolerated(&placement::tolerations(spec), node).is_empty() {
                Some("node(s) had untolerated taint")
            } else if !node_ready(node) {
                Some("node(s) were not ready")
            } else {
                None
            };
        match reason {
            Some(reason) => *reasons.entry(reason).or_default() += 1,
            None => fitting.push(text(node, "/metadata/name")),
        }
    }
    let load = |name: &str| pods.iter().filter(|p| text(p, "/spec/nodeName") == name).count();
    fitting.into_iter().min_by_key(|name| (load(name), *name)).ok_or_else(|| {
        let listed: Vec<String> = reasons.iter().map(|(r, n)| format!("{n} {r}")).collect();
        format!(
            "0/{} nodes are available: {}. preemption: 0/{} nodes are available: {} Preemption is not helpful for scheduling.",
            nodes.len(),
            listed.join(", "),
            nodes.len(),
            nodes.len()
        )
    })
}

pub fn scheduled_condition(ok: bool, message: &str, now: &str) -> Value {
    if ok {
        json!({"type": "PodScheduled", "status": "True", "lastProbeTime": null, "lastTransitionTime": now})
    } else {
        json!({"type": "PodScheduled", "status": "False", "lastProbeTime": null, "lastTransitionTime": now,
               "reason": "Unschedulable", "message": message})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, labels: Value) -> Value {
        json!({"metadata": {"name": name, "labels": labels},
               "status": {"conditions": [{"type": "Ready", "status": "True"}]}})
    }

    #[test]
    fn spreads_and_explains() {
        let nodes = vec![
            node("a", json!({"zone": "1"})),
            node("b", json!({"zone": "1"})),
            node("c", json!({"zone": "2"})),
        ];
        let placed = vec![json!({"spec": {"nodeName": "a"}})];
        let pod = json!({"spec": {"nodeSelector": {"zone": "1"}}});
        assert_eq!(choose(&pod, &nodes, &placed), Ok("b"));
        let nowhere = json!({"spec": {"nodeSelector": {"zone": "9"}}});
        assert_eq!(
            choose(&nowhere, &nodes, &placed).unwrap_err(),
            "0/3 nodes are available: 3 node(s) didn't match Pod's node affinity/selector. preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling."
        );
    }
}
