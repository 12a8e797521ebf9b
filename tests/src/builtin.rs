//! Schema checks for the built-in kinds stored here, as kube-apiserver decodes
//! them: the object is read into its Kubernetes type (k8s-openapi's), so a
//! field of the wrong type is refused as on a cluster, and a field the type
//! does not have is an unknown field for `fieldValidation` (and dropped).

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use k8s_openapi::api::admissionregistration::v1 as admission;
use k8s_openapi::api::apps::v1 as apps;
use k8s_openapi::api::coordination::v1 as coordination;
use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::discovery::v1 as discovery;
use k8s_openapi::api::networking::v1 as networking;
use k8s_openapi::api::policy::v1 as policy;
use k8s_openapi::api::rbac::v1 as rbac;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1 as apiextensions;

/// Reads `object` as `T`; the paths of the fields `T` has no place for.
fn check<T: DeserializeOwned + Serialize>(object: &Value) -> Result<Vec<String>, String> {
    let typed: T = serde_path_to_error::deserialize(object).map_err(|e| {
        let path = e.path().to_string();
        format!("the object cannot be read: {path}: {}", e.into_inner())
    })?;
    let read_back = serde_json::to_value(&typed).map_err(|e| e.to_string())?;
    let mut unknown = Vec::new();
    dropped(object, &read_back, "", &mut unknown);
    Ok(unknown)
}

/// Fields of `original` that are not in `read_back` (explicit nulls aside).
fn dropped(original: &Value, read_back: &Value, path: &str, unknown: &mut Vec<String>) {
    match (original, read_back) {
        (Value::Object(original), Value::Object(read_back)) => {
            for (key, value) in original {
                let child = format!("{path}.{key}");
                match read_back.get(key) {
                    None if !value.is_null() => unknown.push(child),
                    None => {}
                    Some(kept) => dropped(value, kept, &child, unknown),
                }
            }
        }
        (Value::Array(original), Value::Array(read_back)) => {
            for (i, (value, kept)) in original.iter().zip(read_back).enumerate() {
                dropped(value, kept, &format!("{path}[{i}]"), unknown);
            }
        }
        _ => {}
    }
}

/// Checks a built-in object of `group`/`kind`; `None` for kinds not checked.
pub fn unknown_fields(group: &str, kind: &str, object: &Value) -> Option<Result<Vec<String>, String>> {
    let result = match (group, kind) {
        ("", "Namespace") => check::<core::Namespace>(object),
        ("", "Node") => check::<core::Node>(object),
        ("", "Pod") => check::<core::Pod>(object),
        ("", "Service") => check::<core::Service>(object),
        ("", "ServiceAccount") => check::<core::ServiceAccount>(object),
        ("", "Endpoints") => check::<core::Endpoints>(object),
        ("discovery.k8s.io", "EndpointSlice") => check::<discovery::EndpointSlice>(object),
        ("", "Secret") => check::<core::Secret>(object),
        ("", "ConfigMap") => check::<core::ConfigMap>(object),
        ("", "Event") => check::<core::Event>(object),
        ("apps", "Deployment") => check::<apps::Deployment>(object),
        ("apps", "DaemonSet") => check::<apps::DaemonSet>(object),
        ("rbac.authorization.k8s.io", "Role") => check::<rbac::Role>(object),
        ("rbac.authorization.k8s.io", "ClusterRole") => check::<rbac::ClusterRole>(object),
        ("rbac.authorization.k8s.io", "RoleBinding") => check::<rbac::RoleBinding>(object),
        ("rbac.authorization.k8s.io", "ClusterRoleBinding") => check::<rbac::ClusterRoleBinding>(object),
        ("policy", "PodDisruptionBudget") => check::<policy::PodDisruptionBudget>(object),
        ("", "ResourceQuota") => check::<core::ResourceQuota>(object),
        ("networking.k8s.io", "NetworkPolicy") => check::<networking::NetworkPolicy>(object),
        ("coordination.k8s.io", "Lease") => check::<coordination::Lease>(object),
        ("admissionregistration.k8s.io", "MutatingWebhookConfiguration") => {
            check::<admission::MutatingWebhookConfiguration>(object)
        }
        ("admissionregistration.k8s.io", "ValidatingWebhookConfiguration") => {
            check::<admission::ValidatingWebhookConfiguration>(object)
        }
        ("apiextensions.k8s.io", "CustomResourceDefinition") => {
            check::<apiextensions::CustomResourceDefinition>(object)
        }
        _ => return None,
    };
    Some(result)
}

/// Removes the fields at `paths` (as `unknown_fields` names them) from `object`.
pub fn drop_fields(object: &mut Value, paths: &[String]) {
    for path in paths {
        let Some((parent, field)) = path.rsplit_once('.') else {
            continue;
        };
        let pointer = parent.replace(['.', '['], "/").replace(']', "");
        if let Some(Value::Object(map)) = object.pointer_mut(&pointer) {
            map.remove(field);
        }
    }
}

/// The OpenAPI v3 schema of a built-in kind stored here, with the schemas it refers to
/// (`#/components/schemas/…`), from its k8s-openapi type: `(root, components)`.
pub fn schema(group: &str, kind: &str) -> Option<(Value, serde_json::Map<String, Value>)> {
    fn of<T: schemars::JsonSchema>() -> (Value, serde_json::Map<String, Value>) {
        let generator = schemars::generate::SchemaSettings::openapi3().into_generator();
        let mut root = generator.into_root_schema_for::<T>().to_value();
        let components = root
            .as_object_mut()
            .and_then(|r| r.remove("components"))
            .and_then(|c| c.get("schemas").and_then(Value::as_object).cloned())
            .unwrap_or_default();
        if let Some(map) = root.as_object_mut() {
            map.remove("$schema");
            map.remove("definitions");
        }
        (root, components)
    }
    Some(match (group, kind) {
        ("", "Namespace") => of::<core::Namespace>(),
        ("", "Node") => of::<core::Node>(),
        ("", "Pod") => of::<core::Pod>(),
        ("", "Service") => of::<core::Service>(),
        ("", "ServiceAccount") => of::<core::ServiceAccount>(),
        ("", "Secret") => of::<core::Secret>(),
        ("", "ConfigMap") => of::<core::ConfigMap>(),
        ("", "Endpoints") => of::<core::Endpoints>(),
        ("discovery.k8s.io", "EndpointSlice") => of::<discovery::EndpointSlice>(),
        ("", "Event") => of::<core::Event>(),
        ("apps", "Deployment") => of::<apps::Deployment>(),
        ("apps", "DaemonSet") => of::<apps::DaemonSet>(),
        ("rbac.authorization.k8s.io", "Role") => of::<rbac::Role>(),
        ("rbac.authorization.k8s.io", "ClusterRole") => of::<rbac::ClusterRole>(),
        ("rbac.authorization.k8s.io", "RoleBinding") => of::<rbac::RoleBinding>(),
        ("rbac.authorization.k8s.io", "ClusterRoleBinding") => of::<rbac::ClusterRoleBinding>(),
        ("policy", "PodDisruptionBudget") => of::<policy::PodDisruptionBudget>(),
        ("", "ResourceQuota") => of::<core::ResourceQuota>(),
        ("networking.k8s.io", "NetworkPolicy") => of::<networking::NetworkPolicy>(),
        ("coordination.k8s.io", "Lease") => of::<coordination::Lease>(),
        ("admissionregistration.k8s.io", "MutatingWebhookConfiguration") => {
            of::<admission::MutatingWebhookConfiguration>()
        }
        ("admissionregistration.k8s.io", "ValidatingWebhookConfiguration") => {
            of::<admission::ValidatingWebhookConfiguration>()
        }
        ("apiextensions.k8s.io", "CustomResourceDefinition") => of::<apiextensions::CustomResourceDefinition>(),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn wrong_types_are_refused_and_unknown_fields_found() {
        let deployment = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"a": "b"}}, "replicass": 3,
                     "template": {"spec": {"containers": [{"name": "c", "image": "i", "imagee": "x"}]}}}});
        let unknown = unknown_fields("apps", "Deployment", &deployment)
            .and_then(Result::ok)
            .unwrap_or_default();
        assert_eq!(unknown, [".spec.replicass", ".spec.template.spec.containers[0].imagee"]);
        let mut cleaned = deployment.clone();
        drop_fields(&mut cleaned, &unknown);
        assert!(cleaned["spec"].get("replicass").is_none());
        assert!(
            cleaned["spec"]["template"]["spec"]["containers"][0]
                .get("imagee")
                .is_none()
        );
        let wrong = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
            "spec": {"replicas": "two", "selector": {}, "template": {}}});
        let error = unknown_fields("apps", "Deployment", &wrong)
            .and_then(Result::err)
            .unwrap_or_default();
        assert!(error.contains("spec.replicas"), "{error}");
    }
}
