//! The EndpointSlice controller's slices for one Service
//! (pkg/controller/endpointslice, and
//! <https://kubernetes.io/docs/concepts/services-networking/endpoint-slices/>):
//! the Pods its selector matches that have an IP and are not finished, with
//! `conditions` `ready` (Ready and not terminating), `serving` (Ready) and
//! `terminating` (being deleted); Pods whose Service ports resolve to the same
//! numbers share slices of at most 100 endpoints; each slice labelled
//! `kubernetes.io/service-name` and `endpointslice.kubernetes.io/managed-by`,
//! named `<service>-` plus five characters, owned by the Service.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::endpoints::target_port;
use super::{pod_ready, text};
use crate::admission::selector_matches;

pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
pub const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
pub const MANAGED_BY: &str = "endpointslice-controller.k8s.io";
/// The controller's `--max-endpoints-per-slice` default.
const MAX_ENDPOINTS_PER_SLICE: usize = 100;

/// The slices `service` should have (without names), or `None` for a
/// Service without a selector (whose slices are someone else's).
pub fn endpoint_slices(service: &Value, pods: &[Value], nodes: &[Value]) -> Option<Vec<Value>> {
    let selector = service["spec"]["selector"].as_object()?;
    let selector = json!({"matchLabels": selector});
    let namespace = text(service, "/metadata/namespace");
    let ports: Vec<&Value> = service["spec"]["ports"].as_array().into_iter().flatten().collect();
    // Endpoints grouped by the port numbers their Pod resolves the Service's ports to.
    let mut groups: BTreeMap<Vec<u64>, Vec<Value>> = BTreeMap::new();
    for pod in pods.iter().filter(|p| {
        text(p, "/metadata/namespace") == namespace
            && !text(p, "/status/podIP").is_empty()
            && !matches!(text(p, "/status/phase"), "Succeeded" | "Failed")
            && selector_matches(Some(&selector), p.pointer("/metadata/labels"))
    }) {
        let Some(numbers) = ports
            .iter()
            .map(|port| target_port(port, pod))
            .collect::<Option<Vec<u64>>>()
        else {
            continue;
        };
        let terminating = pod.pointer("/metadata/deletionTimestamp").is_some();
        let ready = pod_ready(pod);
        let node = text(pod, "/spec/nodeName");
        let mut endpoint = json!({
            "addresses": [text(pod, "/status/podIP")],
            "conditions": {"ready": ready && !terminating, "serving": ready, "terminating": terminating},
            "nodeName": node,
            "targetRef": {"kind": "Pod", "namespace": namespace, "name": text(pod, "/metadata/name"),
                          "uid": text(pod, "/metadata/uid")}
        });
        let zone = nodes
            .iter()
            .find(|n| text(n, "/metadata/name") == node)
            .map(|n| text(n, "/metadata/labels/topology.kubernetes.io~1zone"))
            .unwrap_or_default();
        if !zone.is_empty() {
            endpoint["zone"] = json!(zone);
        }
        groups.entry(numbers).or_default().push(endpoint);
    }
    let mut labels = service["metadata"]["labels"].as_object().cloned().unwrap_or_default();
    labels.insert(SERVICE_NAME_LABEL.to_owned(), json!(text(service, "/metadata/name")));
    labels.insert(MANAGED_BY_LABEL.to_owned(), json!(MANAGED_BY));
    let owner = json!([{"apiVersion": "v1", "kind": "Service", "name": text(service, "/metadata/name"),
                        "uid": text(service, "/metadata/uid"), "controller": true, "blockOwnerDeletion": true}]);
    let mut slices = Vec::new();
    for (numbers, endpoints) in groups {
        let slice_ports: Vec<Value> = ports
            .iter()
            .zip(&numbers)
            .map(|(port, number)| {
                json!({"name": port["name"].as_str().unwrap_or_default(), "port": number,
                       "protocol": port["protocol"].as_str().unwrap_or("TCP")})
            })
            .collect();
        for chunk in endpoints.chunks(MAX_ENDPOINTS_PER_SLICE) {
            slices.push(json!({
                "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                "metadata": {"generateName": format!("{}-", text(service, "/metadata/name")),
                             "namespace": namespace, "labels": labels, "ownerReferences": owner},
                "addressType": "IPv4",
                "endpoints": chunk,
                "ports": slice_ports,
            }));
        }
    }
    Some(slices)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, ip: &str, ready: bool, port: u64) -> Value {
        json!({"metadata": {"name": name, "namespace": "ns", "uid": format!("uid-{name}"), "labels": {"app": "web"}},
               "spec": {"nodeName": "n1", "containers": [{"ports": [{"name": "webhook", "containerPort": port}]}]},
               "status": {"podIP": ip, "phase": "Running",
                          "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}})
    }

    fn service() -> Value {
        json!({"metadata": {"name": "web", "namespace": "ns", "uid": "svc-uid", "labels": {"team": "a"}},
               "spec": {"selector": {"app": "web"}, "ports": [{"name": "https", "port": 443, "targetPort": "webhook"}]}})
    }

    #[test]
    fn ready_serving_and_terminating_endpoints_in_slices_owned_by_the_service() {
        let mut leaving = pod("c", "10.0.0.4", true, 9443);
        leaving["metadata"]["deletionTimestamp"] = json!("2026-12-02T00:00:00Z");
        let mut done = pod("d", "10.0.0.5", false, 9443);
        done["status"]["phase"] = json!("Succeeded");
        let pods = vec![
            pod("a", "10.0.0.2", true, 9443),
            pod("b", "10.0.0.3", false, 9443),
            leaving,
            done,
            pod("no-ip", "", false, 9443),
        ];
        let nodes = vec![json!({"metadata": {"name": "n1", "labels": {"topology.kubernetes.io/zone": "a"}}})];
        let slices = endpoint_slices(&service(), &pods, &nodes).unwrap();
        assert_eq!(slices.len(), 1);
        let slice = &slices[0];
        assert_eq!(slice["addressType"], "IPv4");
        assert_eq!(
            slice["ports"],
            json!([{"name": "https", "port": 9443, "protocol": "TCP"}])
        );
        assert_eq!(slice["metadata"]["generateName"], "web-");
        assert_eq!(slice["metadata"]["labels"][SERVICE_NAME_LABEL], "web");
        assert_eq!(slice["metadata"]["labels"][MANAGED_BY_LABEL], MANAGED_BY);
        assert_eq!(
            slice["metadata"]["labels"]["team"], "a",
            "the Service's labels are copied"
        );
        assert_eq!(slice["metadata"]["ownerReferences"][0]["uid"], "svc-uid");
        let conditions: Vec<(String, Value)> = slice["endpoints"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["targetRef"]["name"].as_str().unwrap().to_owned(),
                    e["conditions"].clone(),
                )
            })
            .collect();
        assert_eq!(
            conditions,
            [
                (
                    "a".to_owned(),
                    json!({"ready": true, "serving": true, "terminating": false})
                ),
                (
                    "b".to_owned(),
                    json!({"ready": false, "serving": false, "terminating": false})
                ),
                (
                    "c".to_owned(),
                    json!({"ready": false, "serving": true, "terminating": true})
                ),
            ],
            "finished Pods and Pods without an IP are left out"
        );
        assert_eq!(slice["endpoints"][0]["zone"], "a");
    }

    #[test]
    fn pods_resolving_ports_differently_get_slices_of_their_own_of_at_most_a_hundred() {
        let mut pods: Vec<Value> = (0..150)
            .map(|i| pod(&format!("p{i}"), &format!("10.0.1.{i}"), true, 9443))
            .collect();
        pods.push(pod("other", "10.0.2.1", true, 8443));
        let slices = endpoint_slices(&service(), &pods, &[]).unwrap();
        let sizes: Vec<(u64, usize)> = slices
            .iter()
            .map(|s| {
                (
                    s["ports"][0]["port"].as_u64().unwrap(),
                    s["endpoints"].as_array().unwrap().len(),
                )
            })
            .collect();
        assert_eq!(sizes, [(8443, 1), (9443, 100), (9443, 50)]);
        let without_selector = json!({"metadata": {"name": "x", "namespace": "ns"}, "spec": {}});
        assert!(endpoint_slices(&without_selector, &pods, &[]).is_none());
    }
}
