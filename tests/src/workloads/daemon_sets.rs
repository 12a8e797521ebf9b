//! The DaemonSet controller's decisions (pkg/controller/daemon): one Pod per
//! node the Pod fits (its nodeSelector, required node affinity and taints,
//! with the tolerations the controller adds to every daemon Pod); each Pod
//! pinned to its node by a required `matchFields` affinity on
//! `metadata.name`, which the scheduler honours; Pods of an older template
//! replaced at most `maxUnavailable` at a time (RollingUpdate, default 1).

use serde_json::{Value, json};

use super::placement;
use super::{Action, pod_from_template, pod_ready as ready, text};

/// `AddOrUpdateDaemonPodTolerations` (pkg/controller/daemon/util): daemon
/// Pods stay on nodes that are not ready, unreachable, under pressure or
/// cordoned.
fn daemon_tolerations(spec: &Value) -> Vec<Value> {
    let mut tolerations = placement::tolerations(spec);
    let mut add = |key: &str, effect: &str| {
        tolerations.push(json!({"key": key, "operator": "Exists", "effect": effect}));
    };
    add("node.kubernetes.io/not-ready", "NoExecute");
    add("node.kubernetes.io/unreachable", "NoExecute");
    add("node.kubernetes.io/disk-pressure", "NoSchedule");
    add("node.kubernetes.io/memory-pressure", "NoSchedule");
    add("node.kubernetes.io/pid-pressure", "NoSchedule");
    add("node.kubernetes.io/unschedulable", "NoSchedule");
    if spec["hostNetwork"] == true {
        add("node.kubernetes.io/network-unavailable", "NoSchedule");
    }
    tolerations
}

/// The node a daemon Pod is for: where it is bound, or where its affinity pins it.
fn node_of(pod: &Value) -> &str {
    match text(pod, "/spec/nodeName") {
        "" => pod
            .pointer("/spec/affinity/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution/nodeSelectorTerms/0/matchFields/0/values/0")
            .and_then(Value::as_str)
            .unwrap_or_default(),
        node => node,
    }
}

fn generation(object: &Value) -> i64 {
    object
        .pointer("/metadata/generation")
        .and_then(Value::as_i64)
        .unwrap_or(1)
}

fn pod_for(daemon_set: &Value, node: &str) -> Value {
    let template = &daemon_set["spec"]["template"];
    let mut spec = template["spec"].clone();
    spec["tolerations"] = json!(daemon_tolerations(&template["spec"]));
    spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"] = json!({"nodeSelectorTerms": [
        {"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node]}]}]});
    pod_from_template(
        daemon_set,
        "DaemonSet",
        format!("{}-", text(daemon_set, "/metadata/name")),
        ("pod-template-generation", generation(daemon_set).to_string()),
        spec,
    )
}

/// An int-or-percent of `total` (`default` when unset), a percentage
/// rounded up or down (`intstr.GetScaledValueFromIntOrPercent`).
pub(super) fn scaled(value: &Value, total: usize, default: &str, round_up: bool) -> usize {
    let value = match value {
        Value::Null => &Value::String(default.to_owned()),
        other => other,
    };
    match value {
        Value::Number(n) => n.as_u64().map_or(0, |n| usize::try_from(n).unwrap_or(0)),
        Value::String(s) => s
            .strip_suffix('%')
            .and_then(|p| p.parse::<usize>().ok())
            .map_or(0, |percent| {
                if round_up {
                    (total * percent).div_ceil(100)
                } else {
                    total * percent / 100
                }
            }),
        _ => 0,
    }
}

/// What to do for `daemon_set` given the cluster's nodes and its Pods.
pub fn reconcile(daemon_set: &Value, nodes: &[Value], pods: &[&Value]) -> Vec<Action> {
    let mut spec = daemon_set["spec"]["template"]["spec"].clone();
    spec["tolerations"] = json!(daemon_tolerations(&spec));
    let eligible: Vec<&str> = nodes
        .iter()
        .filter(|node| placement::fits(&spec, node))
        .map(|node| text(node, "/metadata/name"))
        .collect();
    let current = generation(daemon_set).to_string();
    let mut actions = Vec::new();
    let mut kept: Vec<&Value> = Vec::new();
    for node in &eligible {
        let mut on_node: Vec<&Value> = pods.iter().copied().filter(|p| node_of(p) == *node).collect();
        // Newest template first: extras beyond one are removed.
        on_node.sort_by_key(|p| text(p, "/metadata/labels/pod-template-generation") != current);
        match on_node.split_first() {
            None => actions.push(Action::Create(pod_for(daemon_set, node))),
            Some((first, extras)) => {
                kept.push(first);
                actions.extend(extras.iter().map(|p| Action::delete(p)));
            }
        }
    }
    actions.extend(
        pods.iter()
            .filter(|p| !eligible.contains(&node_of(p)))
            .map(|p| Action::delete(p)),
    );
    // Rounded up, and never 0 (there is no surge here).
    let max_unavailable = scaled(
        &daemon_set["spec"]["updateStrategy"]["rollingUpdate"]["maxUnavailable"],
        eligible.len(),
        "1",
        true,
    )
    .max(1);
    let on_delete = daemon_set["spec"]["updateStrategy"]["type"] == "OnDelete";
    let unavailable = eligible.len() - kept.iter().filter(|p| ready(p)).count();
    let mut budget = max_unavailable.saturating_sub(unavailable);
    for pod in &kept {
        let outdated = text(pod, "/metadata/labels/pod-template-generation") != current;
        if outdated && !on_delete && ready(pod) && budget > 0 {
            budget -= 1;
            actions.push(Action::delete(pod));
        }
    }
    let count = |f: &dyn Fn(&Value) -> bool| kept.iter().filter(|p| f(p)).count();
    let updated = count(&|p| text(p, "/metadata/labels/pod-template-generation") == current);
    let number_ready = count(&ready);
    actions.push(Action::Status(json!({
        "desiredNumberScheduled": eligible.len(),
        "currentNumberScheduled": kept.len(),
        "numberMisscheduled": pods.iter().filter(|p| !eligible.contains(&node_of(p))).count(),
        "numberReady": number_ready,
        "numberAvailable": number_ready,
        "numberUnavailable": eligible.len() - number_ready,
        "updatedNumberScheduled": updated,
        "observedGeneration": generation(daemon_set),
    })));
    actions
}

#[cfg(test)]
mod tests {
    use super::*;

    fn daemon_set(generation: i64) -> Value {
        json!({"metadata": {"name": "agent", "namespace": "ns", "uid": "u", "generation": generation},
               "spec": {"template": {"metadata": {"labels": {"app": "agent"}}, "spec": {"containers": [{"name": "a"}],
                   "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                       {"matchExpressions": [{"key": "node-role.kubernetes.io/control-plane", "operator": "DoesNotExist"}]}]}}}}}}})
    }

    fn nodes() -> Vec<Value> {
        vec![
            json!({"metadata": {"name": "n1", "labels": {}}, "spec": {"unschedulable": true, "taints": [{"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}]}}),
            json!({"metadata": {"name": "n2", "labels": {}}}),
            json!({"metadata": {"name": "cp", "labels": {"node-role.kubernetes.io/control-plane": ""}}}),
        ]
    }

    fn pod(name: &str, node: &str, generation: &str, ready: bool) -> Value {
        json!({"metadata": {"name": name, "namespace": "ns", "labels": {"pod-template-generation": generation}},
               "spec": {"nodeName": node},
               "status": {"conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}})
    }

    #[test]
    fn one_pod_per_fitting_node_pinned_by_affinity() {
        let actions = reconcile(&daemon_set(1), &nodes(), &[]);
        let created: Vec<&Value> = actions
            .iter()
            .filter_map(|a| match a {
                Action::Create(pod) => Some(pod),
                _ => None,
            })
            .collect();
        assert_eq!(created.len(), 2, "the cordoned node too, not the control plane");
        assert_eq!(node_of(created[0]), "n1");
        assert_eq!(created[0]["metadata"]["ownerReferences"][0]["kind"], "DaemonSet");
        assert_eq!(created[0]["metadata"]["labels"]["pod-template-generation"], "1");
    }

    #[test]
    fn a_new_template_replaces_one_ready_pod_at_a_time() {
        let (a, b) = (pod("a", "n1", "1", true), pod("b", "n2", "1", true));
        let actions = reconcile(&daemon_set(2), &nodes(), &[&a, &b]);
        let deleted: Vec<&Action> = actions.iter().filter(|a| matches!(a, Action::Delete { .. })).collect();
        assert_eq!(deleted.len(), 1, "maxUnavailable 1: {actions:?}");
        let (a_new, b_old) = (pod("a2", "n1", "2", false), pod("b", "n2", "1", true));
        let actions = reconcile(&daemon_set(2), &nodes(), &[&a_new, &b_old]);
        assert!(
            !actions.iter().any(|a| matches!(a, Action::Delete { .. })),
            "the budget is spent while the new pod is not ready"
        );
    }
}
