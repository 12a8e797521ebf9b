//! Service accounts as a cluster provides them to Pods:
//! - kube-controller-manager's ServiceAccount controller and root-CA publisher
//!   give every namespace a `default` ServiceAccount and the `kube-root-ca.crt`
//!   ConfigMap (key `ca.crt`);
//! - kube-apiserver's ServiceAccount admission plugin
//!   (plugin/pkg/admission/serviceaccount/admission.go) runs as a Pod is
//!   created, before the webhooks: it defaults `serviceAccountName` to
//!   `default`, refuses a Pod whose ServiceAccount does not exist, and unless
//!   `automountServiceAccountToken` (the Pod's, else the ServiceAccount's) is
//!   false, adds the projected `kube-api-access-<5 characters>` volume (a bound
//!   token of 3607 s, `ca.crt`, `namespace`) mounted read-only at
//!   `/var/run/secrets/kubernetes.io/serviceaccount` in every container
//!   (<https://kubernetes.io/docs/reference/access-authn-authz/service-accounts-admin/#bound-service-account-token-volume>).

use serde_json::{Value, json};

use crate::admission::Operation;
use crate::error::ApiError;
use crate::store::Store;

pub const MOUNT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// `k8s.io/apimachinery/pkg/util/rand`'s alphabet, with which the volume is named.
const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

fn text<'a>(value: &'a Value, pointer: &str) -> &'a str {
    value.pointer(pointer).and_then(Value::as_str).unwrap_or_default()
}

/// The `default` ServiceAccount and `kube-root-ca.crt` of `namespace`, created
/// where missing.
pub fn ensure_namespace_defaults(store: &Store, namespace: &str, ca_pem: &str) {
    if let Some(accounts) = store.resource_type("", "v1", "serviceaccounts")
        && store.get(&accounts, namespace, "default").is_err()
    {
        let account = json!({"apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": "default", "namespace": namespace}});
        let _ = store.create(&accounts, namespace, account, false);
    }
    if let Some(maps) = store.resource_type("", "v1", "configmaps")
        && store.get(&maps, namespace, "kube-root-ca.crt").is_err()
    {
        let map = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "kube-root-ca.crt", "namespace": namespace,
                         "annotations": {"kubernetes.io/description": "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes clusters."}},
            "data": {"ca.crt": ca_pem}});
        let _ = store.create(&maps, namespace, map, false);
    }
}

/// Keeps every namespace's defaults in place as namespaces come, as the
/// controllers do, until the task is dropped.
pub async fn run_controllers(store: std::sync::Arc<Store>, ca_pem: String) {
    let mut events = store.subscribe();
    loop {
        if let Some(namespaces) = store.resource_type("", "v1", "namespaces") {
            let (all, _) = store.list(&namespaces, None);
            for namespace in all {
                if namespace.pointer("/metadata/deletionTimestamp").is_none() {
                    ensure_namespace_defaults(&store, text(&namespace, "/metadata/name"), &ca_pem);
                }
            }
        }
        loop {
            match events.recv().await {
                Ok(event) if event.key.plural == "namespaces" && event.type_ == "ADDED" => break,
                Ok(_) => {}
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => break,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        }
    }
}

fn suffix() -> String {
    uuid::Uuid::new_v4()
        .as_bytes()
        .iter()
        .take(5)
        .map(|b| char::from(ALPHABET[usize::from(*b) % ALPHABET.len()]))
        .collect()
}

/// The plugin, on a Pod CREATE.
pub(crate) fn admit(
    store: &Store,
    plural: &str,
    group: &str,
    operation: Operation,
    namespace: &str,
    pod: &mut Value,
    ca_pem: &str,
) -> Result<(), ApiError> {
    if (group, plural, operation) != ("", "pods", Operation::Create) {
        return Ok(());
    }
    // Mirror pods (static pods of a kubelet) are left alone.
    if pod
        .pointer("/metadata/annotations/kubernetes.io~1config.mirror")
        .is_some()
    {
        return Ok(());
    }
    let account_name = match text(pod, "/spec/serviceAccountName") {
        "" => "default".to_owned(),
        name => name.to_owned(),
    };
    pod["spec"]["serviceAccountName"] = json!(account_name);
    let accounts = store
        .resource_type("", "v1", "serviceaccounts")
        .ok_or_else(|| ApiError::internal("serviceaccounts are not served"))?;
    if account_name == "default" {
        // The controllers may not have caught up with a namespace just made.
        ensure_namespace_defaults(store, namespace, ca_pem);
    }
    let account = store.get(&accounts, namespace, &account_name).map_err(|_| {
        ApiError::forbidden(format!(
            "pods \"{}\" is forbidden: error looking up service account {namespace}/{account_name}: serviceaccount \"{account_name}\" not found",
            text(pod, "/metadata/name")
        ))
    })?;
    let automount = pod
        .pointer("/spec/automountServiceAccountToken")
        .or_else(|| account.get("automountServiceAccountToken"))
        .and_then(Value::as_bool)
        .unwrap_or(true);
    if !automount {
        return Ok(());
    }
    let volume_name = format!("kube-api-access-{}", suffix());
    let containers_of = |pod: &Value, field: &str| pod["spec"][field].as_array().map_or(0, Vec::len);
    let mut mounted = false;
    for field in ["initContainers", "containers"] {
        for index in 0..containers_of(pod, field) {
            let container = &mut pod["spec"][field][index];
            let already = container["volumeMounts"]
                .as_array()
                .is_some_and(|m| m.iter().any(|m| m["mountPath"] == MOUNT_PATH));
            if already {
                continue;
            }
            let mount = json!({"name": volume_name, "readOnly": true, "mountPath": MOUNT_PATH});
            match container["volumeMounts"].as_array_mut() {
                Some(mounts) => mounts.push(mount),
                None => container["volumeMounts"] = json!([mount]),
            }
            mounted = true;
        }
    }
    if mounted {
        let volume = json!({"name": volume_name, "projected": {"defaultMode": 420, "sources": [
            {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
            {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
            {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}}
        ]}});
        match pod["spec"]["volumes"].as_array_mut() {
            Some(volumes) => volumes.push(volume),
            None => pod["spec"]["volumes"] = json!([volume]),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn store_with_team() -> Store {
        let store = Store::default();
        let namespaces = store.resource_type("", "v1", "namespaces").unwrap();
        store
            .create(
                &namespaces,
                "",
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team"}}),
                false,
            )
            .unwrap();
        store
    }

    fn pod(spec: Value) -> Value {
        json!({"metadata": {"name": "p", "namespace": "team"}, "spec": spec})
    }

    #[test]
    fn a_pod_gets_the_default_account_and_its_token_volume() {
        let store = store_with_team();
        let mut created = pod(
            json!({"containers": [{"name": "a"}, {"name": "b", "volumeMounts": [{"name": "x", "mountPath": "/x"}]}]}),
        );
        admit(&store, "pods", "", Operation::Create, "team", &mut created, "CA").unwrap();
        assert_eq!(created["spec"]["serviceAccountName"], "default");
        let volume = &created["spec"]["volumes"][0];
        let name = volume["name"].as_str().unwrap();
        assert!(name.starts_with("kube-api-access-") && name.len() == "kube-api-access-".len() + 5);
        assert_eq!(
            volume["projected"]["sources"][0]["serviceAccountToken"]["expirationSeconds"],
            3607
        );
        for container in created["spec"]["containers"].as_array().unwrap() {
            let mounts = container["volumeMounts"].as_array().unwrap();
            assert!(
                mounts
                    .iter()
                    .any(|m| m["mountPath"] == MOUNT_PATH && m["readOnly"] == true && m["name"] == name)
            );
        }
        let maps = store.resource_type("", "v1", "configmaps").unwrap();
        assert_eq!(
            store.get(&maps, "team", "kube-root-ca.crt").unwrap()["data"]["ca.crt"],
            "CA"
        );
    }

    #[test]
    fn automount_false_and_a_missing_account() {
        let store = store_with_team();
        let mut opted_out = pod(json!({"automountServiceAccountToken": false, "containers": [{"name": "a"}]}));
        admit(&store, "pods", "", Operation::Create, "team", &mut opted_out, "").unwrap();
        assert!(opted_out["spec"].get("volumes").is_none());
        let mut missing = pod(json!({"serviceAccountName": "ghost", "containers": [{"name": "a"}]}));
        let error = admit(&store, "pods", "", Operation::Create, "team", &mut missing, "").unwrap_err();
        assert_eq!(error.code, 403);
        assert!(
            error
                .message
                .ends_with("error looking up service account team/ghost: serviceaccount \"ghost\" not found")
        );
    }
}
