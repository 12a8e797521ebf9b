//! The Endpoints controller's object for one Service (pkg/controller/endpoint):
//! the Pods its selector matches that have an IP, Ready ones under
//! `addresses` and the others under `notReadyAddresses`, each Service port's
//! `targetPort` resolved against the Pod's container ports when it is a name.

use serde_json::{Value, json};

use super::{pod_ready as ready, text};
use crate::admission::selector_matches;

/// A Service port's target on `pod`: its number, or the container port of that name.
pub(super) fn target_port(port: &Value, pod: &Value) -> Option<u64> {
    match &port["targetPort"] {
        Value::Null => port["port"].as_u64(),
        Value::Number(n) => n.as_u64(),
        Value::String(name) => pod["spec"]["containers"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|c| c["ports"].as_array().into_iter().flatten())
            .find(|p| p["name"] == name.as_str())
            .and_then(|p| p["containerPort"].as_u64()),
        _ => None,
    }
}

/// The Endpoints of `service`, or `None` for a Service without a selector
/// (whose Endpoints are someone else's).
pub fn endpoints(service: &Value, pods: &[Value]) -> Option<Value> {
    let selector = service["spec"]["selector"].as_object()?;
    let selector = json!({"matchLabels": selector});
    let namespace = text(service, "/metadata/namespace");
    let mut subsets = Vec::new();
    for port in service["spec"]["ports"].as_array().into_iter().flatten() {
        let (mut ready_addresses, mut not_ready) = (Vec::new(), Vec::new());
        let mut number = None;
        for pod in pods.iter().filter(|p| {
            text(p, "/metadata/namespace") == namespace
                && p.pointer("/metadata/deletionTimestamp").is_none()
                && !text(p, "/status/podIP").is_empty()
                && selector_matches(Some(&selector), p.pointer("/metadata/labels"))
        }) {
            let Some(target) = target_port(port, pod) else { continue };
            number = Some(target);
            let address = json!({"ip": text(pod, "/status/podIP"), "nodeName": text(pod, "/spec/nodeName"),
                "targetRef": {"kind": "Pod", "namespace": namespace, "name": text(pod, "/metadata/name"), "uid": text(pod, "/metadata/uid")}});
            if ready(pod) {
                ready_addresses.push(address);
            } else {
                not_ready.push(address);
            }
        }
        let Some(number) = number else { continue };
        let mut subset = json!({"ports": [{"name": port["name"].as_str().unwrap_or_default(), "port": number,
            "protocol": port["protocol"].as_str().unwrap_or("TCP")}]});
        if !ready_addresses.is_empty() {
            subset["addresses"] = json!(ready_addresses);
        }
        if !not_ready.is_empty() {
            subset["notReadyAddresses"] = json!(not_ready);
        }
        subsets.push(subset);
    }
    Some(json!({"apiVersion": "v1", "kind": "Endpoints",
        "metadata": {"name": text(service, "/metadata/name"), "namespace": namespace,
                     "labels": service["metadata"]["labels"].clone()},
        "subsets": subsets}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_and_not_ready_addresses_with_named_target_ports() {
        let service = json!({"metadata": {"name": "web", "namespace": "ns"},
            "spec": {"selector": {"app": "web"}, "ports": [{"name": "https", "port": 443, "targetPort": "webhook"}]}});
        let pod = |name: &str, ip: &str, ready: bool| {
            json!({"metadata": {"name": name, "namespace": "ns", "labels": {"app": "web"}},
            "spec": {"nodeName": "n1", "containers": [{"ports": [{"name": "webhook", "containerPort": 9443}]}]},
            "status": {"podIP": ip, "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}})
        };
        let pods = vec![
            pod("a", "10.0.0.2", true),
            pod("b", "10.0.0.3", false),
            pod("c", "", false),
        ];
        let endpoints = endpoints(&service, &pods).unwrap();
        let subset = &endpoints["subsets"][0];
        assert_eq!(subset["ports"][0]["port"], 9443);
        assert_eq!(subset["addresses"][0]["ip"], "10.0.0.2");
        assert_eq!(subset["notReadyAddresses"][0]["ip"], "10.0.0.3");
        assert_eq!(
            subset["notReadyAddresses"].as_array().unwrap().len(),
            1,
            "no IP, no address"
        );
    }
}
