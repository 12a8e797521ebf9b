//! The Deployment controller's decisions, without the ReplicaSet in between
//! (the test cluster's one shortcut here: Pods are owned by the Deployment and
//! carry the `pod-template-hash` label a ReplicaSet would give them): keep
//! `replicas` Pods of the current template; on a template change, roll
//! (RollingUpdate: up to `maxSurge` extra new Pods, old ones removed as new
//! ones become Ready while at most `maxUnavailable` are missing; defaults 25 %
//! each) or recreate (Recreate: old ones first). Status as `kubectl rollout
//! status` reads it (pkg/controller/deployment).

use serde_json::{Value, json};

use super::daemon_sets::scaled;
use super::{Action, pod_from_template, pod_ready as ready, text};

/// The template's hash, as the `pod-template-hash` label (FNV-1a of its JSON,
/// written in the characters ReplicaSet names use).
pub fn template_hash(template: &Value) -> String {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in template.to_string().bytes() {
        hash ^= u32::from(byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    (0..10)
        .map(|i| char::from(ALPHABET[(hash.rotate_left(i * 3) as usize) % ALPHABET.len()]))
        .collect()
}

fn pod_for(deployment: &Value, hash: &str) -> Value {
    pod_from_template(
        deployment,
        "Deployment",
        format!("{}-{hash}-", text(deployment, "/metadata/name")),
        ("pod-template-hash", hash.to_owned()),
        deployment["spec"]["template"]["spec"].clone(),
    )
}

pub fn reconcile(deployment: &Value, pods: &[&Value]) -> Vec<Action> {
    let replicas = deployment
        .pointer("/spec/replicas")
        .and_then(Value::as_u64)
        .map_or(1, |r| usize::try_from(r).unwrap_or(1));
    let hash = template_hash(&deployment["spec"]["template"]);
    let (new, old): (Vec<&Value>, Vec<&Value>) = pods
        .iter()
        .copied()
        .filter(|p| p.pointer("/metadata/deletionTimestamp").is_none())
        .partition(|p| text(p, "/metadata/labels/pod-template-hash") == hash);
    let recreate = deployment["spec"]["strategy"]["type"] == "Recreate";
    let rolling = &deployment["spec"]["strategy"]["rollingUpdate"];
    // maxSurge rounds up, maxUnavailable down; both 0 would stall, so then 1 may be missing.
    let max_surge = if recreate {
        0
    } else {
        scaled(&rolling["maxSurge"], replicas, "25%", true)
    };
    let max_unavailable = match scaled(&rolling["maxUnavailable"], replicas, "25%", false) {
        0 if max_surge == 0 => 1,
        n => n,
    };
    let mut actions = Vec::new();
    let new_ready = new.iter().filter(|p| ready(p)).count();
    let old_ready = old.iter().filter(|p| ready(p)).count();
    if recreate && !old.is_empty() {
        actions.extend(old.iter().map(|p| Action::delete(p)));
    } else {
        // New Pods up to replicas, within the surge.
        let room = (replicas + max_surge).saturating_sub(new.len() + old.len());
        let wanted = replicas.saturating_sub(new.len()).min(room);
        actions.extend((0..wanted).map(|_| Action::Create(pod_for(deployment, &hash))));
        // Old Pods go while enough stay available.
        let available = new_ready + old_ready;
        let floor = replicas.saturating_sub(max_unavailable);
        let mut removable = available.saturating_sub(floor);
        let mut old_sorted = old.clone();
        old_sorted.sort_by_key(|p| ready(p));
        for pod in old_sorted {
            if !ready(pod) || removable > 0 {
                if ready(pod) {
                    removable -= 1;
                }
                actions.push(Action::delete(pod));
            }
        }
        // Scaling down: the surplus of new Pods, not-ready ones first.
        if new.len() > replicas {
            let mut surplus = new.clone();
            surplus.sort_by_key(|p| ready(p));
            actions.extend(surplus.iter().take(new.len() - replicas).map(|p| Action::delete(p)));
        }
    }
    let available = new_ready + old_ready;
    let condition = |kind: &str, ok: bool, reason: &str| json!({"type": kind, "status": if ok { "True" } else { "False" }, "reason": reason});
    let is_available = available >= replicas.saturating_sub(max_unavailable);
    actions.push(Action::Status(json!({
        "observedGeneration": deployment.pointer("/metadata/generation").cloned().unwrap_or(json!(1)),
        "replicas": new.len() + old.len(),
        "updatedReplicas": new.len(),
        "readyReplicas": available,
        "availableReplicas": available,
        "unavailableReplicas": replicas.saturating_sub(available),
        "conditions": [
            condition("Available", is_available, if is_available { "MinimumReplicasAvailable" } else { "MinimumReplicasUnavailable" }),
            condition("Progressing", true, if new_ready >= replicas && old.is_empty() { "NewReplicaSetAvailable" } else { "ReplicaSetUpdated" }),
        ],
    })));
    actions
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment(image: &str, replicas: u64) -> Value {
        json!({"metadata": {"name": "web", "namespace": "ns", "uid": "u", "generation": 1},
               "spec": {"replicas": replicas, "template": {"metadata": {"labels": {"app": "web"}},
                        "spec": {"containers": [{"name": "c", "image": image}]}}}})
    }

    fn pod(hash: &str, ready: bool) -> Value {
        json!({"metadata": {"name": format!("p-{hash}-{ready}"), "namespace": "ns", "labels": {"pod-template-hash": hash}},
               "status": {"conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}})
    }

    fn creates(actions: &[Action]) -> usize {
        actions.iter().filter(|a| matches!(a, Action::Create(_))).count()
    }

    fn deletes(actions: &[Action]) -> usize {
        actions.iter().filter(|a| matches!(a, Action::Delete { .. })).count()
    }

    #[test]
    fn replicas_pods_of_the_template() {
        let d = deployment("a", 2);
        assert_eq!(creates(&reconcile(&d, &[])), 2);
        let hash = template_hash(&d["spec"]["template"]);
        let (p1, p2) = (pod(&hash, true), pod(&hash, true));
        let steady = reconcile(&d, &[&p1, &p2]);
        assert_eq!((creates(&steady), deletes(&steady)), (0, 0));
    }

    #[test]
    fn a_template_change_rolls_without_dropping_below_the_floor() {
        let old = deployment("a", 2);
        let new = deployment("b", 2);
        let (old_hash, new_hash) = (
            template_hash(&old["spec"]["template"]),
            template_hash(&new["spec"]["template"]),
        );
        assert_ne!(old_hash, new_hash);
        let (o1, o2) = (pod(&old_hash, true), pod(&old_hash, true));
        let first = reconcile(&new, &[&o1, &o2]);
        assert_eq!(creates(&first), 1, "maxSurge 25% of 2 rounds up to 1");
        assert_eq!(deletes(&first), 0, "maxUnavailable 25% of 2 rounds down to 0");
        let n1 = pod(&new_hash, false);
        let waiting = reconcile(&new, &[&o1, &o2, &n1]);
        assert_eq!(
            (creates(&waiting), deletes(&waiting)),
            (0, 0),
            "old pods stay until a new one is ready"
        );
        let n1 = pod(&new_hash, true);
        let next = reconcile(&new, &[&o1, &o2, &n1]);
        assert_eq!(deletes(&next), 1, "one new pod ready: one old pod goes");
    }
}
