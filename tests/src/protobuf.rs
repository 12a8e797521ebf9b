//! Request bodies in Kubernetes' protobuf encoding, which kubectl uses for the
//! built-in kinds of its `create` subcommands (`kubectl create namespace`,
//! `create secret docker-registry`, `create configmap`, `create
//! serviceaccount`) and for the reviews of `kubectl auth can-i`. The envelope is `k8s\0` and a `runtime.Unknown` holding
//! the object; the messages are declared here with the field numbers of
//! Kubernetes' `generated.proto` (as in the k8s-pb crate), for those kinds
//! only: a protobuf body of any other kind is refused with 415.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use prost::Message;
use serde_json::{Map, Value, json};

/// What every protobuf-encoded Kubernetes body starts with.
pub const MAGIC: &[u8] = b"k8s\0";

#[derive(Clone, PartialEq, Message)]
struct Unknown {
    #[prost(message, optional, tag = "1")]
    type_meta: Option<TypeMeta>,
    #[prost(bytes = "vec", optional, tag = "2")]
    raw: Option<Vec<u8>>,
}

#[derive(Clone, PartialEq, Message)]
struct TypeMeta {
    #[prost(string, optional, tag = "1")]
    api_version: Option<String>,
    #[prost(string, optional, tag = "2")]
    kind: Option<String>,
}

#[derive(Clone, PartialEq, Message)]
struct ObjectMeta {
    #[prost(string, optional, tag = "1")]
    name: Option<String>,
    #[prost(string, optional, tag = "2")]
    generate_name: Option<String>,
    #[prost(string, optional, tag = "3")]
    namespace: Option<String>,
    #[prost(btree_map = "string, string", tag = "11")]
    labels: BTreeMap<String, String>,
    #[prost(btree_map = "string, string", tag = "12")]
    annotations: BTreeMap<String, String>,
    #[prost(string, repeated, tag = "14")]
    finalizers: Vec<String>,
}

#[derive(Clone, PartialEq, Message)]
struct Secret {
    #[prost(message, optional, tag = "1")]
    metadata: Option<ObjectMeta>,
    #[prost(btree_map = "string, bytes", tag = "2")]
    data: BTreeMap<String, Vec<u8>>,
    #[prost(string, optional, tag = "3")]
    type_: Option<String>,
    #[prost(btree_map = "string, string", tag = "4")]
    string_data: BTreeMap<String, String>,
    #[prost(bool, optional, tag = "5")]
    immutable: Option<bool>,
}

#[derive(Clone, PartialEq, Message)]
struct ConfigMap {
    #[prost(message, optional, tag = "1")]
    metadata: Option<ObjectMeta>,
    #[prost(btree_map = "string, string", tag = "2")]
    data: BTreeMap<String, String>,
    #[prost(btree_map = "string, bytes", tag = "3")]
    binary_data: BTreeMap<String, Vec<u8>>,
    #[prost(bool, optional, tag = "4")]
    immutable: Option<bool>,
}

#[derive(Clone, PartialEq, Message)]
struct WithMetadata {
    #[prost(message, optional, tag = "1")]
    metadata: Option<ObjectMeta>,
}

#[derive(Clone, PartialEq, Message)]
struct LocalObjectReference {
    #[prost(string, optional, tag = "1")]
    name: Option<String>,
}

#[derive(Clone, PartialEq, Message)]
struct ServiceAccount {
    #[prost(message, optional, tag = "1")]
    metadata: Option<ObjectMeta>,
    #[prost(message, repeated, tag = "3")]
    image_pull_secrets: Vec<LocalObjectReference>,
    #[prost(bool, optional, tag = "4")]
    automount_service_account_token: Option<bool>,
}

#[derive(Clone, PartialEq, Message)]
struct ResourceAttributes {
    #[prost(string, optional, tag = "1")]
    namespace: Option<String>,
    #[prost(string, optional, tag = "2")]
    verb: Option<String>,
    #[prost(string, optional, tag = "3")]
    group: Option<String>,
    #[prost(string, optional, tag = "4")]
    version: Option<String>,
    #[prost(string, optional, tag = "5")]
    resource: Option<String>,
    #[prost(string, optional, tag = "6")]
    subresource: Option<String>,
    #[prost(string, optional, tag = "7")]
    name: Option<String>,
}

#[derive(Clone, PartialEq, Message)]
struct NonResourceAttributes {
    #[prost(string, optional, tag = "1")]
    path: Option<String>,
    #[prost(string, optional, tag = "2")]
    verb: Option<String>,
}

#[derive(Clone, PartialEq, Message)]
struct AccessReviewSpec {
    #[prost(message, optional, tag = "1")]
    resource_attributes: Option<ResourceAttributes>,
    #[prost(message, optional, tag = "2")]
    non_resource_attributes: Option<NonResourceAttributes>,
}

#[derive(Clone, PartialEq, Message)]
struct AccessReview {
    #[prost(message, optional, tag = "2")]
    spec: Option<AccessReviewSpec>,
}

#[derive(Clone, PartialEq, Message)]
struct RulesReviewSpec {
    #[prost(string, optional, tag = "1")]
    namespace: Option<String>,
}

#[derive(Clone, PartialEq, Message)]
struct RulesReview {
    #[prost(message, optional, tag = "2")]
    spec: Option<RulesReviewSpec>,
}

/// Why a protobuf body cannot be used.
#[derive(Debug, PartialEq, Eq)]
pub enum ProtobufError {
    /// Not a well-formed envelope or message: a bad request.
    Malformed(String),
    /// Well-formed, of a kind this server does not decode.
    Unsupported(String),
}

/// The JSON form of a protobuf request body (which starts with [`MAGIC`]).
pub fn decode(body: &[u8]) -> Result<Value, ProtobufError> {
    let malformed = |what: &str, e: prost::DecodeError| ProtobufError::Malformed(format!("{what}: {e}"));
    let envelope = Unknown::decode(body.get(MAGIC.len()..).unwrap_or_default())
        .map_err(|e| malformed("the protobuf envelope", e))?;
    let type_meta = envelope.type_meta.unwrap_or_default();
    let api_version = type_meta.api_version.unwrap_or_default();
    let kind = type_meta.kind.unwrap_or_default();
    let raw = envelope.raw.unwrap_or_default();
    let mut object = Map::new();
    object.insert("apiVersion".to_owned(), json!(api_version));
    object.insert("kind".to_owned(), json!(kind));
    let metadata = match (api_version.as_str(), kind.as_str()) {
        ("v1", "Secret") => {
            let secret = Secret::decode(raw.as_slice()).map_err(|e| malformed("Secret", e))?;
            insert_map(
                &mut object,
                "data",
                secret.data.into_iter().map(|(k, v)| (k, json!(BASE64.encode(v)))),
            );
            insert_map(
                &mut object,
                "stringData",
                secret.string_data.into_iter().map(|(k, v)| (k, json!(v))),
            );
            insert(&mut object, "type", secret.type_.map(Value::from));
            insert(&mut object, "immutable", secret.immutable.map(Value::from));
            secret.metadata
        }
        ("v1", "ConfigMap") => {
            let config_map = ConfigMap::decode(raw.as_slice()).map_err(|e| malformed("ConfigMap", e))?;
            insert_map(
                &mut object,
                "data",
                config_map.data.into_iter().map(|(k, v)| (k, json!(v))),
            );
            let binary = config_map
                .binary_data
                .into_iter()
                .map(|(k, v)| (k, json!(BASE64.encode(v))));
            insert_map(&mut object, "binaryData", binary);
            insert(&mut object, "immutable", config_map.immutable.map(Value::from));
            config_map.metadata
        }
        ("v1", "ServiceAccount") => {
            let account = ServiceAccount::decode(raw.as_slice()).map_err(|e| malformed("ServiceAccount", e))?;
            if !account.image_pull_secrets.is_empty() {
                let names: Vec<Value> = account
                    .image_pull_secrets
                    .into_iter()
                    .map(|r| json!({"name": r.name}))
                    .collect();
                object.insert("imagePullSecrets".to_owned(), Value::Array(names));
            }
            insert(
                &mut object,
                "automountServiceAccountToken",
                account.automount_service_account_token.map(Value::from),
            );
            account.metadata
        }
        ("v1", "Namespace") => {
            WithMetadata::decode(raw.as_slice())
                .map_err(|e| malformed("Namespace", e))?
                .metadata
        }
        ("authorization.k8s.io/v1", "SelfSubjectAccessReview") => {
            let review = AccessReview::decode(raw.as_slice()).map_err(|e| malformed("SelfSubjectAccessReview", e))?;
            let spec = review.spec.unwrap_or_default();
            let resource = spec.resource_attributes.map(|a| {
                json!({"namespace": a.namespace, "verb": a.verb, "group": a.group, "version": a.version,
                       "resource": a.resource, "subresource": a.subresource, "name": a.name})
            });
            let non_resource = spec
                .non_resource_attributes
                .map(|a| json!({"path": a.path, "verb": a.verb}));
            let mut fields = Map::new();
            insert(&mut fields, "resourceAttributes", resource);
            insert(&mut fields, "nonResourceAttributes", non_resource);
            object.insert("spec".to_owned(), Value::Object(fields));
            None
        }
        ("authorization.k8s.io/v1", "SelfSubjectRulesReview") => {
            let review = RulesReview::decode(raw.as_slice()).map_err(|e| malformed("SelfSubjectRulesReview", e))?;
            object.insert(
                "spec".to_owned(),
                json!({"namespace": review.spec.unwrap_or_default().namespace}),
            );
            None
        }
        ("authentication.k8s.io/v1", "SelfSubjectReview") => None,
        _ => {
            return Err(ProtobufError::Unsupported(format!(
                "protobuf request bodies are decoded for v1 Secret, ConfigMap, ServiceAccount and Namespace and the self reviews only, not {api_version} {kind}; send JSON (for example kubectl apply -f)"
            )));
        }
    };
    object.insert("metadata".to_owned(), metadata_json(metadata.unwrap_or_default()));
    Ok(Value::Object(object))
}

fn insert(object: &mut Map<String, Value>, key: &str, value: Option<Value>) {
    if let Some(value) = value {
        object.insert(key.to_owned(), value);
    }
}

fn insert_map(object: &mut Map<String, Value>, key: &str, entries: impl Iterator<Item = (String, Value)>) {
    let map: Map<String, Value> = entries.collect();
    if !map.is_empty() {
        object.insert(key.to_owned(), Value::Object(map));
    }
}

fn metadata_json(meta: ObjectMeta) -> Value {
    let mut metadata = Map::new();
    insert(&mut metadata, "name", meta.name.map(Value::from));
    insert(&mut metadata, "generateName", meta.generate_name.map(Value::from));
    insert(&mut metadata, "namespace", meta.namespace.map(Value::from));
    insert_map(
        &mut metadata,
        "labels",
        meta.labels.into_iter().map(|(k, v)| (k, json!(v))),
    );
    insert_map(
        &mut metadata,
        "annotations",
        meta.annotations.into_iter().map(|(k, v)| (k, json!(v))),
    );
    if !meta.finalizers.is_empty() {
        metadata.insert("finalizers".to_owned(), json!(meta.finalizers));
    }
    Value::Object(metadata)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope(api_version: &str, kind: &str, raw: Vec<u8>) -> Vec<u8> {
        let unknown = Unknown {
            type_meta: Some(TypeMeta {
                api_version: Some(api_version.to_owned()),
                kind: Some(kind.to_owned()),
            }),
            raw: Some(raw),
        };
        [MAGIC, unknown.encode_to_vec().as_slice()].concat()
    }

    #[test]
    fn a_docker_registry_secret_decodes_to_its_json_form() {
        let secret = Secret {
            metadata: Some(ObjectMeta {
                name: Some("registry".into()),
                namespace: Some("team".into()),
                ..ObjectMeta::default()
            }),
            data: [(".dockerconfigjson".to_owned(), b"{\"auths\":{}}".to_vec())].into(),
            type_: Some("kubernetes.io/dockerconfigjson".into()),
            ..Secret::default()
        };
        let decoded = decode(&envelope("v1", "Secret", secret.encode_to_vec())).unwrap_or_default();
        assert_eq!(
            decoded,
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "registry", "namespace": "team"},
                   "data": {".dockerconfigjson": BASE64.encode("{\"auths\":{}}")}, "type": "kubernetes.io/dockerconfigjson"})
        );
        assert!(matches!(
            decode(&envelope("apps/v1", "Deployment", Vec::new())),
            Err(ProtobufError::Unsupported(_))
        ));
        assert!(matches!(decode(b"k8s\0\xff\xff"), Err(ProtobufError::Malformed(_))));
    }
}
