//! kube-controller-manager's workload controllers and kube-scheduler, for a
//! test cluster whose Pods the test kubelet runs: DaemonSets and Deployments
//! make Pods (through the API server's admission, as the controllers' writes
//! go), the scheduler binds the Pods that have no node, and the Endpoints
//! controller publishes each Service's Pods. Each decision is a pure function
//! in its module; this loop reads the store, decides and writes.

pub mod daemon_sets;
pub mod deployments;
pub mod endpoint_slices;
pub mod endpoints;
pub mod placement;
pub mod scheduler;

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use crate::http::{AppState, Target};
use crate::resources::ResourceType;
use crate::store::Subresource;

const PERIOD: Duration = Duration::from_millis(200);

pub(crate) fn text<'a>(value: &'a Value, pointer: &str) -> &'a str {
    value.pointer(pointer).and_then(Value::as_str).unwrap_or_default()
}

/// What a controller wants done.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    Create(Value),
    Delete {
        namespace: String,
        name: String,
    },
    /// The owner's new `status`.
    Status(Value),
}

impl Action {
    fn delete(pod: &Value) -> Self {
        Self::Delete {
            namespace: text(pod, "/metadata/namespace").to_owned(),
            name: text(pod, "/metadata/name").to_owned(),
        }
    }
}

/// The controller reference a workload puts on the Pods it makes.
pub fn owner_reference(owner: &Value, kind: &str) -> Value {
    json!({"apiVersion": "apps/v1", "kind": kind, "name": text(owner, "/metadata/name"),
           "uid": text(owner, "/metadata/uid"), "controller": true, "blockOwnerDeletion": true})
}

/// A Pod's Ready condition is True.
pub fn pod_ready(pod: &Value) -> bool {
    pod["status"]["conditions"]
        .as_array()
        .is_some_and(|c| c.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
}

/// A Pod of `owner`'s template (`spec.template`), named from
/// `generate_name`, with the template's labels and `label`, and `spec`.
pub(crate) fn pod_from_template(
    owner: &Value,
    kind: &str,
    generate_name: String,
    label: (&str, String),
    spec: Value,
) -> Value {
    let template = &owner["spec"]["template"];
    let mut labels = template["metadata"]["labels"].clone();
    if !labels.is_object() {
        labels = json!({});
    }
    labels[label.0] = json!(label.1);
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "generateName": generate_name,
            "namespace": text(owner, "/metadata/namespace"),
            "labels": labels,
            "annotations": template["metadata"]["annotations"].clone(),
            "ownerReferences": [owner_reference(owner, kind)],
        },
        "spec": spec,
    })
}

fn owned_by<'a>(pods: &'a [Value], owner: &Value) -> Vec<&'a Value> {
    let uid = text(owner, "/metadata/uid");
    pods.iter()
        .filter(|p| {
            p["metadata"]["ownerReferences"]
                .as_array()
                .is_some_and(|refs| refs.iter().any(|r| r["uid"] == uid && r["controller"] == true))
        })
        .collect()
}

fn now() -> String {
    let seconds = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    k8s_openapi::jiff::Timestamp::from_second(i64::try_from(seconds).unwrap_or(0))
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_default()
}

struct Types {
    pods: ResourceType,
    nodes: ResourceType,
    services: ResourceType,
    endpoints: ResourceType,
    endpoint_slices: ResourceType,
    daemon_sets: ResourceType,
    deployments: ResourceType,
}

impl Types {
    fn of(state: &AppState) -> Option<Self> {
        let store = &state.store;
        Some(Self {
            pods: store.resource_type("", "v1", "pods")?,
            nodes: store.resource_type("", "v1", "nodes")?,
            services: store.resource_type("", "v1", "services")?,
            endpoints: store.resource_type("", "v1", "endpoints")?,
            endpoint_slices: store.resource_type("discovery.k8s.io", "v1", "endpointslices")?,
            daemon_sets: store.resource_type("apps", "v1", "daemonsets")?,
            deployments: store.resource_type("apps", "v1", "deployments")?,
        })
    }
}

/// Runs the controllers and the scheduler until the task is dropped.
pub async fn run(state: Arc<AppState>) {
    let Some(types) = Types::of(&state) else {
        return;
    };
    loop {
        pass(&state, &types).await;
        tokio::time::sleep(PERIOD).await;
    }
}

async fn pass(state: &AppState, types: &Types) {
    let store = &state.store;
    let (nodes, _) = store.list(&types.nodes, None);
    let (pods, _) = store.list(&types.pods, None);
    let (daemon_sets, _) = store.list(&types.daemon_sets, None);
    for daemon_set in &daemon_sets {
        let actions = daemon_sets::reconcile(daemon_set, &nodes, &owned_by(&pods, daemon_set));
        apply(
            state,
            types,
            &types.daemon_sets,
            daemon_set,
            "daemon-set-controller",
            actions,
        )
        .await;
    }
    let (deployments, _) = store.list(&types.deployments, None);
    for deployment in &deployments {
        let actions = deployments::reconcile(deployment, &owned_by(&pods, deployment));
        apply(
            state,
            types,
            &types.deployments,
            deployment,
            "deployment-controller",
            actions,
        )
        .await;
    }
    let (pods, _) = store.list(&types.pods, None);
    for pod in pods
        .iter()
        .filter(|p| text(p, "/spec/nodeName").is_empty() && p.pointer("/metadata/deletionTimestamp").is_none())
    {
        schedule(state, types, pod, &nodes, &pods);
    }
    let (services, _) = store.list(&types.services, None);
    for service in &services {
        if let Some(wanted) = endpoints::endpoints(service, &pods) {
            let (namespace, name) = (text(service, "/metadata/namespace"), text(service, "/metadata/name"));
            match store.get(&types.endpoints, namespace, name) {
                Ok(current) if current["subsets"] == wanted["subsets"] => {}
                Ok(_) => {
                    let _ = store.update(&types.endpoints, namespace, name, wanted, Subresource::Main, false);
                }
                Err(_) => {
                    let _ = store.create(&types.endpoints, namespace, wanted, false);
                }
            }
        }
    }
    let (slices, _) = store.list(&types.endpoint_slices, None);
    for service in &services {
        if let Some(wanted) = endpoint_slices::endpoint_slices(service, &pods, &nodes) {
            sync_slices(state, types, service, &wanted, &slices);
        }
    }
}

/// Makes the slices the controller manages for `service` hold `wanted`:
/// the existing ones (in name order) updated, the missing created, the rest deleted.
fn sync_slices(state: &AppState, types: &Types, service: &Value, wanted: &[Value], slices: &[Value]) {
    let (namespace, name) = (text(service, "/metadata/namespace"), text(service, "/metadata/name"));
    let label = |slice: &Value, key: &str| slice["metadata"]["labels"][key].as_str().map(str::to_owned);
    let mut current: Vec<&Value> = slices
        .iter()
        .filter(|s| text(s, "/metadata/namespace") == namespace)
        .filter(|s| label(s, endpoint_slices::SERVICE_NAME_LABEL).as_deref() == Some(name))
        .filter(|s| label(s, endpoint_slices::MANAGED_BY_LABEL).as_deref() == Some(endpoint_slices::MANAGED_BY))
        .collect();
    current.sort_by_key(|s| text(s, "/metadata/name"));
    let store = &state.store;
    for (index, want) in wanted.iter().enumerate() {
        match current.get(index) {
            Some(have)
                if have["endpoints"] == want["endpoints"]
                    && have["ports"] == want["ports"]
                    && have["metadata"]["labels"] == want["metadata"]["labels"] => {}
            Some(have) => {
                let slice_name = text(have, "/metadata/name");
                let mut updated = want.clone();
                updated["metadata"]["name"] = json!(slice_name);
                let _ = store.update(
                    &types.endpoint_slices,
                    namespace,
                    slice_name,
                    updated,
                    Subresource::Main,
                    false,
                );
            }
            None => {
                let _ = store.create(&types.endpoint_slices, namespace, want.clone(), false);
            }
        }
    }
    for extra in current.iter().skip(wanted.len()) {
        let _ = store.delete(
            &types.endpoint_slices,
            namespace,
            text(extra, "/metadata/name"),
            false,
            false,
        );
    }
}

fn schedule(state: &AppState, types: &Types, pod: &Value, nodes: &[Value], pods: &[Value]) {
    let (namespace, name) = (text(pod, "/metadata/namespace"), text(pod, "/metadata/name"));
    let mut bound = pod.clone();
    let condition = match scheduler::choose(pod, nodes, pods) {
        Ok(node) => {
            bound["spec"]["nodeName"] = json!(node);
            if let Some(metadata) = bound["metadata"].as_object_mut() {
                metadata.remove("resourceVersion");
            }
            if state
                .store
                .update(&types.pods, namespace, name, bound.clone(), Subresource::Main, false)
                .is_err()
            {
                return;
            }
            scheduler::scheduled_condition(true, "", &now())
        }
        Err(message) => {
            let unchanged = pod["status"]["conditions"].as_array().is_some_and(|c| {
                c.iter()
                    .any(|c| c["type"] == "PodScheduled" && c["message"] == message.as_str())
            });
            if unchanged {
                return;
            }
            scheduler::scheduled_condition(false, &message, &now())
        }
    };
    let Ok(mut current) = state.store.get(&types.pods, namespace, name) else {
        return;
    };
    let conditions = current["status"]["conditions"].as_array().cloned().unwrap_or_default();
    let mut conditions: Vec<Value> = conditions.into_iter().filter(|c| c["type"] != "PodScheduled").collect();
    conditions.push(condition);
    current["status"]["conditions"] = json!(conditions);
    if current["status"]["phase"].is_null() {
        current["status"]["phase"] = json!("Pending");
    }
    let _ = state
        .store
        .update(&types.pods, namespace, name, current, Subresource::Status, false);
}

async fn apply(
    state: &AppState,
    types: &Types,
    owner_type: &ResourceType,
    owner: &Value,
    controller: &str,
    actions: Vec<Action>,
) {
    let user = json!({"username": format!("system:serviceaccount:kube-system:{controller}"),
                      "groups": ["system:serviceaccounts", "system:serviceaccounts:kube-system", "system:authenticated"]});
    for action in actions {
        match action {
            Action::Create(pod) => {
                let namespace = text(&pod, "/metadata/namespace").to_owned();
                let target = Target::create_by(types.pods.clone(), &namespace, user.clone());
                if let Err(e) = crate::http::create_object(state, &target, pod, false).await {
                    tracing::warn!(controller, error = e.message, "creating a pod");
                }
            }
            Action::Delete { namespace, name } => {
                let _ = state.store.delete(&types.pods, &namespace, &name, false, false);
            }
            Action::Status(status) => {
                if owner.get("status") == Some(&status) {
                    continue;
                }
                let mut updated = owner.clone();
                updated["status"] = status;
                if let Some(metadata) = updated["metadata"].as_object_mut() {
                    metadata.remove("resourceVersion");
                }
                let (namespace, name) = (text(owner, "/metadata/namespace"), text(owner, "/metadata/name"));
                let _ = state
                    .store
                    .update(owner_type, namespace, name, updated, Subresource::Status, false);
            }
        }
    }
}
