//! The admission chain, as kube-apiserver runs it: the webhooks of the stored
//! Mutating- then ValidatingWebhookConfigurations whose rules and selectors
//! match, called over HTTPS with the configuration's caBundle, AdmissionReview
//! v1 in and out, patches applied, denials turned into the API server's Status.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use http_body_util::{BodyExt, Full};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::resources::ResourceType;
use crate::selectors::LabelSelector;
use crate::store::Store;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    Create,
    Update,
    Delete,
}

impl Operation {
    fn as_str(self) -> &'static str {
        match self {
            Self::Create => "CREATE",
            Self::Update => "UPDATE",
            Self::Delete => "DELETE",
        }
    }

    fn options_kind(self) -> &'static str {
        match self {
            Self::Create => "CreateOptions",
            Self::Update => "UpdateOptions",
            Self::Delete => "DeleteOptions",
        }
    }
}

/// Where webhook `service` references point: `namespace/name` → address.
#[derive(Debug, Default)]
pub struct Admission {
    service_endpoints: std::sync::RwLock<HashMap<String, SocketAddr>>,
    /// Round robin over a Service's ready endpoints.
    turn: std::sync::atomic::AtomicUsize,
}

/// The request being admitted.
struct Attributes<'a> {
    rt: &'a ResourceType,
    version: &'a str,
    operation: Operation,
    namespace: &'a str,
    sub_resource: Option<&'a str>,
    /// `userInfo` of the request.
    user: &'a Value,
    dry_run: bool,
}

fn text<'a>(value: &'a Value, pointer: &str) -> &'a str {
    value.pointer(pointer).and_then(Value::as_str).unwrap_or_default()
}

fn strings(value: Option<&Value>) -> Vec<&str> {
    value
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// A `metav1.LabelSelector` object against labels.
pub(crate) fn selector_matches(selector: Option<&Value>, labels: Option<&Value>) -> bool {
    let Some(selector) = selector else { return true };
    let object = json!({"metadata": {"labels": labels.cloned().unwrap_or(json!({}))}});
    let mut terms: Vec<String> = selector
        .get("matchLabels")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect()
        })
        .unwrap_or_default();
    for expression in selector
        .get("matchExpressions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let key = text(expression, "/key");
        let values = strings(expression.get("values")).join(",");
        terms.push(match text(expression, "/operator") {
            "In" => format!("{key} in ({values})"),
            "NotIn" => format!("{key} notin ({values})"),
            "Exists" => key.to_owned(),
            _ => format!("!{key}"),
        });
    }
    LabelSelector::parse(&terms.join(","))
        .map(|s| s.matches(&object))
        .unwrap_or(false)
}

/// A webhook's `matchConditions`, as kube-apiserver evaluates them: CEL
/// expressions over `object`, `oldObject` and `request` (null where absent);
/// the webhook is called only when every one is true. An expression that does
/// not compile or evaluate, or is not a boolean, is an error (which the
/// webhook's failurePolicy decides). `authorizer` is not offered.
fn match_conditions(
    webhook: &Value,
    a: &Attributes<'_>,
    object: Option<&Value>,
    old: Option<&Value>,
) -> Result<bool, String> {
    let conditions = webhook.get("matchConditions").and_then(Value::as_array);
    let Some(conditions) = conditions.filter(|c| !c.is_empty()) else {
        return Ok(true);
    };
    let request = json!({
        "kind": {"group": a.rt.group, "version": a.version, "kind": a.rt.kind},
        "resource": {"group": a.rt.group, "version": a.version, "resource": a.rt.plural},
        "subResource": a.sub_resource, "namespace": a.namespace,
        "name": object.or(old).map(|o| text(o, "/metadata/name")).unwrap_or_default(),
        "operation": a.operation.as_str(), "userInfo": a.user, "dryRun": a.dry_run,
    });
    let mut context = cel_interpreter::Context::default();
    for (variable, value) in [
        ("object", object.cloned()),
        ("oldObject", old.cloned()),
        ("request", Some(request)),
    ] {
        context
            .add_variable(variable, value.unwrap_or(Value::Null))
            .map_err(|e| format!("matchConditions: {e}"))?;
    }
    for condition in conditions {
        let name = text(condition, "/name");
        let program = cel_interpreter::Program::compile(text(condition, "/expression"))
            .map_err(|e| format!("matchCondition {name:?} does not compile: {e}"))?;
        match program.execute(&context) {
            Ok(cel_interpreter::Value::Bool(true)) => {}
            Ok(cel_interpreter::Value::Bool(false)) => return Ok(false),
            Ok(other) => return Err(format!("matchCondition {name:?} gave {other:?}, not a boolean")),
            Err(e) => return Err(format!("matchCondition {name:?} failed: {e}")),
        }
    }
    Ok(true)
}

/// The object validating webhooks see on an UPDATE: kube-apiserver calls
/// them after the strategy's `PrepareForUpdate`, which for a resource with a
/// status subresource keeps only the status of a `/status` write (the rest is
/// the stored object's) and the stored status of a main-resource write.
/// Mutating webhooks see the object as sent.
fn prepared_for_update(
    rt: &ResourceType,
    operation: Operation,
    sub_resource: Option<&str>,
    object: Option<Value>,
    old: Option<&Value>,
) -> Option<Value> {
    let (Operation::Update, true, Some(old)) = (operation, rt.status_subresource, old) else {
        return object;
    };
    let mut object = object?;
    let (status, mut prepared) = match sub_resource {
        Some("status") => (object.get("status").cloned(), old.clone()),
        _ => (old.get("status").cloned(), std::mem::take(&mut object)),
    };
    if let Some(map) = prepared.as_object_mut() {
        match status {
            Some(status) => map.insert("status".to_owned(), status),
            None => map.remove("status"),
        };
    }
    Some(prepared)
}

/// A custom resource against its served version's schema; 422 in
/// kube-apiserver's words when it breaks a rule.
fn validate_against_schema(rt: &ResourceType, version: &str, object: &Value) -> Result<(), ApiError> {
    let Some(schema) = rt
        .version(version)
        .and_then(|v| v.schema.as_ref())
        .filter(|_| rt.from_crd)
    else {
        return Ok(());
    };
    let errors = crate::schema_validation::validate(schema, object);
    if errors.is_empty() {
        return Ok(());
    }
    let name = match text(object, "/metadata/name") {
        "" => text(object, "/metadata/generateName"),
        name => name,
    };
    let causes: Vec<(String, &str, String)> = errors.into_iter().map(|e| (e.field, e.reason, e.message)).collect();
    Err(ApiError::invalid(&rt.kind, &rt.group, name, &causes))
}

impl Admission {
    pub fn new(service_endpoints: HashMap<String, SocketAddr>) -> Self {
        Self {
            service_endpoints: std::sync::RwLock::new(service_endpoints),
            turn: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    /// Points `namespace/name` at `address`, as an Endpoints change would.
    pub fn set_service_endpoint(&self, service: &str, address: SocketAddr) {
        if let Ok(mut endpoints) = self.service_endpoints.write() {
            endpoints.insert(service.to_owned(), address);
        }
    }

    fn endpoint(&self, service: &str) -> Option<SocketAddr> {
        self.service_endpoints.read().ok().and_then(|e| e.get(service).copied())
    }

    /// A Ready endpoint of Service `namespace/name` for its port `port`, as
    /// kube-apiserver's service resolver picks one (round robin here): the
    /// Endpoints address and the target port of the Service port.
    fn ready_endpoint(&self, store: &Store, namespace: &str, name: &str, port: u64) -> Result<SocketAddr, String> {
        let get = |plural: &str| {
            store
                .resource_type("", "v1", plural)
                .and_then(|rt| store.get(&rt, namespace, name).ok())
        };
        let service = get("services").ok_or_else(|| format!("service \"{name}\" not found"))?;
        let port_name = service["spec"]["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| p["port"].as_u64() == Some(port))
            .map(|p| p["name"].as_str().unwrap_or_default().to_owned())
            .ok_or_else(|| format!("service \"{name}\" has no port {port}"))?;
        let endpoints = get("endpoints").unwrap_or_default();
        let mut candidates = Vec::new();
        for subset in endpoints["subsets"].as_array().into_iter().flatten() {
            let Some(target) = subset["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|p| p["name"].as_str().unwrap_or_default() == port_name)
                .and_then(|p| p["port"].as_u64())
                .and_then(|p| u16::try_from(p).ok())
            else {
                continue;
            };
            for address in subset["addresses"].as_array().into_iter().flatten() {
                if let Ok(ip) = text(address, "/ip").parse::<std::net::IpAddr>() {
                    candidates.push(SocketAddr::new(ip, target));
                }
            }
        }
        if candidates.is_empty() {
            return Err(format!("no endpoints available for service \"{name}\""));
        }
        let turn = self.turn.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(candidates[turn % candidates.len()])
    }

    /// Runs the chain; returns the (possibly mutated) object.
    #[allow(clippy::too_many_arguments)]
    pub async fn admit(
        &self,
        store: &Store,
        rt: &ResourceType,
        version: &str,
        operation: Operation,
        namespace: &str,
        sub_resource: Option<&str>,
        user: &Value,
        object: Option<Value>,
        old: Option<&Value>,
        dry_run: bool,
        warnings: &mut Vec<String>,
    ) -> Result<Option<Value>, ApiError> {
        // As in kube-apiserver, webhook configurations are not subject to webhooks.
        if rt.group == "admissionregistration.k8s.io" {
            return Ok(object);
        }
        let attributes = Attributes {
            rt,
            version,
            operation,
            namespace,
            sub_resource,
            user,
            dry_run,
        };
        let mut object = object;
        for kind in ["mutatingwebhookconfigurations", "validatingwebhookconfigurations"] {
            let mutating = kind.starts_with("mutating");
            if !mutating {
                object = prepared_for_update(rt, operation, sub_resource, object, old);
                // The strategy's validation runs between the two phases.
                if let Some(object) = &object {
                    validate_against_schema(rt, version, object)?;
                }
            }
            let Some(config_type) = store.resource_type("admissionregistration.k8s.io", "v1", kind) else {
                continue;
            };
            let (configurations, _) = store.list(&config_type, None);
            for configuration in configurations {
                for webhook in configuration
                    .get("webhooks")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    let Some(matched_version) = self.matches(store, webhook, &attributes, object.as_ref().or(old))
                    else {
                        continue;
                    };
                    let name = text(webhook, "/name");
                    // A matchCondition that fails is decided by failurePolicy, as a failed call.
                    let answer = match match_conditions(webhook, &attributes, object.as_ref(), old) {
                        Ok(false) => continue,
                        Ok(true) => {
                            self.call(store, webhook, &attributes, &matched_version, object.as_ref(), old)
                                .await
                        }
                        Err(e) => Err(e),
                    };
                    let response = match answer {
                        Ok(response) => response,
                        Err(e) if webhook.get("failurePolicy").and_then(Value::as_str) == Some("Ignore") => {
                            tracing::warn!(webhook = name, error = %e, "webhook failed; ignored by failurePolicy");
                            continue;
                        }
                        Err(e) => {
                            return Err(ApiError::internal(format!(
                                "Internal error occurred: failed calling webhook \"{name}\": {e}"
                            )));
                        }
                    };
                    // A webhook's warnings reach the client whatever it decided.
                    warnings.extend(
                        response
                            .get("warnings")
                            .and_then(Value::as_array)
                            .into_iter()
                            .flatten()
                            .filter_map(Value::as_str)
                            .map(str::to_owned),
                    );
                    if response.get("allowed") != Some(&Value::Bool(true)) {
                        return Err(denial(name, &response));
                    }
                    if mutating
                        && let (Some(patch), Some(current)) =
                            (response.get("patch").and_then(Value::as_str), object.as_mut())
                    {
                        let bytes = BASE64.decode(patch).map_err(|e| {
                            ApiError::internal(format!("webhook \"{name}\" returned a patch that is not base64: {e}"))
                        })?;
                        let patch: json_patch::Patch = serde_json::from_slice(&bytes).map_err(|e| {
                            ApiError::internal(format!("webhook \"{name}\" returned an invalid JSON patch: {e}"))
                        })?;
                        json_patch::patch(current, &patch).map_err(|e| {
                            ApiError::internal(format!("webhook \"{name}\" returned a patch that does not apply: {e}"))
                        })?;
                    }
                }
            }
        }
        Ok(object)
    }

    /// The version to send the object in, when `webhook` applies to the request.
    fn matches(&self, store: &Store, webhook: &Value, a: &Attributes<'_>, object: Option<&Value>) -> Option<String> {
        let resource = match a.sub_resource {
            Some(sub) => format!("{}/{sub}", a.rt.plural),
            None => a.rt.plural.clone(),
        };
        let mut version = None;
        for rule in webhook.get("rules").and_then(Value::as_array).into_iter().flatten() {
            let operations = strings(rule.get("operations"));
            let groups = strings(rule.get("apiGroups"));
            let versions = strings(rule.get("apiVersions"));
            let resources = strings(rule.get("resources"));
            let scope = rule.get("scope").and_then(Value::as_str).unwrap_or("*");
            let operation_ok = operations.iter().any(|o| *o == "*" || *o == a.operation.as_str());
            let group_ok = groups.iter().any(|g| *g == "*" || *g == a.rt.group);
            let resource_ok = resources.iter().any(|r| {
                *r == "*/*"
                    || *r == resource
                    || (*r == "*" && a.sub_resource.is_none())
                    || (a.sub_resource.is_some() && r.strip_prefix("*/") == a.sub_resource)
            });
            let scope_ok = match scope {
                "Namespaced" => a.rt.namespaced,
                "Cluster" => !a.rt.namespaced,
                _ => true,
            };
            if !(operation_ok && group_ok && resource_ok && scope_ok) {
                continue;
            }
            // matchPolicy Equivalent: another served version of the same resource also matches.
            let exact = versions.iter().any(|v| *v == "*" || *v == a.version);
            let equivalent = versions.iter().find(|v| a.rt.serves(v)).map(|v| (*v).to_owned());
            version = if exact {
                Some(a.version.to_owned())
            } else {
                equivalent.filter(|_| webhook.get("matchPolicy").and_then(Value::as_str) != Some("Exact"))
            };
            if version.is_some() {
                break;
            }
        }
        let version = version?;
        let labels = object.and_then(|o| o.pointer("/metadata/labels"));
        if !selector_matches(webhook.get("objectSelector"), labels) {
            return None;
        }
        if a.rt.namespaced {
            let namespace_labels = store
                .resource_type("", "v1", "namespaces")
                .and_then(|ns| store.get(&ns, "", a.namespace).ok())
                .and_then(|ns| ns.pointer("/metadata/labels").cloned());
            if !selector_matches(webhook.get("namespaceSelector"), namespace_labels.as_ref()) {
                return None;
            }
        }
        Some(version)
    }

    async fn call(
        &self,
        store: &Store,
        webhook: &Value,
        a: &Attributes<'_>,
        version: &str,
        object: Option<&Value>,
        old: Option<&Value>,
    ) -> Result<Value, String> {
        let name = text(webhook, "/name");
        let side_effects = webhook.get("sideEffects").and_then(Value::as_str).unwrap_or("Unknown");
        if a.dry_run && !matches!(side_effects, "None" | "NoneOnDryRun") {
            return Err(format!("admission webhook \"{name}\" does not support dry run"));
        }
        let timeout = webhook.get("timeoutSeconds").and_then(Value::as_u64).unwrap_or(10);
        let config = webhook.get("clientConfig").ok_or("clientConfig is missing")?;
        let (address, host, path) = match (config.get("service"), config.get("url").and_then(Value::as_str)) {
            (Some(service), _) => {
                let (ns, svc) = (text(service, "/namespace"), text(service, "/name"));
                let port = service.get("port").and_then(Value::as_u64).unwrap_or(443);
                let address = match self.endpoint(&format!("{ns}/{svc}")) {
                    Some(address) => address,
                    None => self.ready_endpoint(store, ns, svc, port)?,
                };
                (address, format!("{svc}.{ns}.svc"), text(service, "/path").to_owned())
            }
            (None, Some(url)) => {
                let rest = url.strip_prefix("https://").ok_or("webhook URLs must be https")?;
                let (authority, path) = rest
                    .split_once('/')
                    .map_or((rest, "/".to_owned()), |(a, p)| (a, format!("/{p}")));
                let host = authority
                    .rsplit_once(':')
                    .map_or(authority, |(h, _)| h)
                    .trim_matches(['[', ']'])
                    .to_owned();
                let address = tokio::net::lookup_host(if authority.contains(':') {
                    authority.to_owned()
                } else {
                    format!("{authority}:443")
                })
                .await
                .map_err(|e| e.to_string())?
                .next()
                .ok_or("the webhook host does not resolve")?;
                (address, host, path)
            }
            _ => return Err("clientConfig needs service or url".to_owned()),
        };
        let kind = json!({"group": a.rt.group, "version": version, "kind": a.rt.kind});
        let resource = json!({"group": a.rt.group, "version": version, "resource": a.rt.plural});
        let in_version = |o: Option<&Value>| {
            o.map(|o| {
                let mut o = o.clone();
                o["apiVersion"] = json!(a.rt.api_version(version));
                o
            })
        };
        let review = json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {
                "uid": uuid::Uuid::new_v4().to_string(),
                "kind": kind, "resource": resource, "subResource": a.sub_resource,
                "requestKind": {"group": a.rt.group, "version": a.version, "kind": a.rt.kind},
                "requestResource": {"group": a.rt.group, "version": a.version, "resource": a.rt.plural},
                "requestSubResource": a.sub_resource,
                "name": object.or(old).map(|o| text(o, "/metadata/name")).unwrap_or_default(),
                "namespace": a.namespace,
                "operation": a.operation.as_str(),
                "userInfo": a.user,
                "object": in_version(object), "oldObject": in_version(old), "dryRun": a.dry_run,
                "options": {"kind": a.operation.options_kind(), "apiVersion": "meta.k8s.io/v1"},
            }
        });
        let url = format!("{path}?timeout={timeout}s");
        let body = tokio::time::timeout(
            Duration::from_secs(timeout),
            post(address, &host, &url, ca_bundle(config)?, review.to_string()),
        )
        .await
        .map_err(|_| format!("failed to call webhook: Post \"https://{host}{url}\": context deadline exceeded"))??;
        let answer: Value =
            serde_json::from_slice(&body).map_err(|e| format!("the webhook answer is not JSON: {e}"))?;
        if answer.get("apiVersion").and_then(Value::as_str) != Some("admission.k8s.io/v1")
            || answer.get("kind").and_then(Value::as_str) != Some("AdmissionReview")
        {
            return Err("expected webhook response of admission.k8s.io/v1, Kind=AdmissionReview".to_owned());
        }
        let response = answer.get("response").cloned().ok_or("webhook response was absent")?;
        if response.get("uid") != review.pointer("/request/uid") {
            return Err("expected response.uid to match the request".to_owned());
        }
        Ok(response)
    }
}

fn ca_bundle(config: &Value) -> Result<Vec<CertificateDer<'static>>, String> {
    let encoded = config
        .get("caBundle")
        .and_then(Value::as_str)
        .ok_or("clientConfig.caBundle is missing")?;
    let pem = BASE64
        .decode(encoded)
        .map_err(|e| format!("caBundle is not base64: {e}"))?;
    CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("caBundle: {e}"))
}

/// POSTs `body` to a webhook at `address` over TLS as kube-apiserver calls
/// one (`host` is the name its certificate must carry); tests use it to call
/// one replica directly.
pub async fn post(
    address: SocketAddr,
    host: &str,
    path: &str,
    cas: Vec<CertificateDer<'static>>,
    body: String,
) -> Result<Bytes, String> {
    let mut roots = rustls::RootCertStore::empty();
    for ca in cas {
        roots.add(ca).map_err(|e| e.to_string())?;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = ServerName::try_from(host.to_owned()).map_err(|e| e.to_string())?;
    let tcp = tokio::net::TcpStream::connect(address)
        .await
        .map_err(|e| format!("failed to call webhook: {e}"))?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| format!("failed to call webhook: tls: {e}"))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    let request = hyper::Request::post(path)
        .header("host", host)
        .header("content-type", "application/json")
        .header("accept", "application/json")
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| e.to_string())?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("failed to call webhook: {e}"))?;
    let status = response.status();
    let bytes = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    if !status.is_success() {
        return Err(format!(
            "the server responded with HTTP {status}: {}",
            String::from_utf8_lossy(&bytes)
        ));
    }
    Ok(bytes)
}

/// `admission webhook "NAME" denied the request: MESSAGE`, keeping the webhook's
/// code (400 at least), reason and causes, as kube-apiserver's `ToStatusErr` does.
fn denial(name: &str, response: &Value) -> ApiError {
    let status = response.get("status").cloned().unwrap_or(json!({}));
    let denied = format!("admission webhook \"{name}\" denied the request");
    let message = match (
        status.get("message").and_then(Value::as_str),
        status.get("reason").and_then(Value::as_str),
    ) {
        (Some(message), _) if !message.is_empty() => format!("{denied}: {message}"),
        (_, Some(reason)) if !reason.is_empty() => format!("{denied}: {reason}"),
        _ => format!("{denied} without explanation"),
    };
    let mut error = ApiError::forbidden(message);
    error.code = status
        .get("code")
        .and_then(Value::as_u64)
        .map_or(400, |c| c.max(400) as u16);
    error.reason = status
        .get("reason")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    error.details = status.get("details").cloned();
    error
}
