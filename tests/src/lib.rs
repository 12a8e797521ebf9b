//! A test API server that behaves like kube-apiserver where prewarm's tests
//! rely on it: the REST conventions, watches, status subresources, finalizers,
//! garbage collection, Tables for kubectl, and the admission chain.
//!
//! Simplifications, each on purpose: server-side apply merges the applied
//! configuration into the object (no field ownership, no conflicts);
//! strategic merge patch knows the merge keys of the built-in types stored
//! here, not of every Kubernetes type; label selectors on watches filter
//! events by the object's current labels; the OpenAPI v3 documents carry the
//! schemas of custom resources and of the built-in kinds, v2 the same in
//! JSON only (see `openapi`); protobuf bodies are decoded for every built-in kind stored
//! here, from a generated schema (see `protobuf`); built-in kinds are
//! checked against their Kubernetes types (see `builtin`) but have no
//! workload controllers; identities are the admin (all-powerful) and
//! ServiceAccounts with issued tokens, authorised by RBAC without aggregation
//! (see `rbac`).
//!
//! How it grows: a behaviour is added only when a product test or a
//! user-facing command needs it, and each one names the Kubernetes behaviour
//! it follows (documentation or kube-apiserver source) where it is written,
//! never what prewarm's code happens to expect. `tests/conformance.rs` runs
//! against a real cluster too (`PREWARM_CONFORMANCE_KUBECONFIG`), which is how
//! a difference between this stand-in and kube-apiserver is found.

pub mod admission;
pub mod auth;
pub mod builtin;
pub mod discovery;
pub mod error;
pub mod events;
pub mod field_validation;
pub mod http;
pub mod infra;
pub mod installed;
pub mod kubelet;
pub mod openapi;
pub mod patch;
pub mod pod_cluster;
mod pod_logs;
pub mod pod_security;
pub mod protobuf;
pub mod query;
pub mod rbac;
pub mod registries;
pub mod resources;
pub mod schema;
pub mod schema_validation;
pub mod selectors;
pub mod service_accounts;
pub mod store;
pub mod strategic;
pub mod table;
mod warnings;
pub mod watch;
pub mod workloads;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use base64::Engine;
use serde_json::{Value, json};

use crate::admission::Admission;
use crate::error::ApiError;
use crate::http::AppState;
use crate::store::Store;

/// A running test API server.
#[derive(Debug)]
pub struct TestApi {
    pub addr: SocketAddr,
    pub store: Arc<Store>,
    state: Arc<AppState>,
    /// The CA that signs the server's certificate, when serving HTTPS.
    pub ca_pem: Option<String>,
    task: tokio::task::JoinHandle<()>,
    /// kube-controller-manager's part: namespaces' default ServiceAccount and
    /// root CA, and the workload controllers once started.
    controllers: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for TestApi {
    fn drop(&mut self) {
        self.task.abort();
        for controller in &self.controllers {
            controller.abort();
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct Options {
    pub port: u16,
    /// Serve HTTPS with a generated certificate instead of HTTP.
    pub tls: bool,
    /// Webhook `service` references: `namespace/name` → address.
    pub service_endpoints: HashMap<String, SocketAddr>,
    /// Watch events kept for resuming watches (older resourceVersions get 410); 0 means 10 000.
    pub history: usize,
    /// Also serve on this address, on the same port, and name it in the
    /// certificate: the pod network's gateway, where Pods reach the API as
    /// they would reach `kubernetes.default`.
    pub pod_network_address: Option<std::net::IpAddr>,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("binding 127.0.0.1:{port}: {source}")]
    Bind {
        port: u16,
        #[source]
        source: std::io::Error,
    },
    #[error("preparing the serving certificate: {0}")]
    Certificate(String),
}

/// The objects of the YAML (or JSON) files of `dir` but `kustomization.yaml`, or
/// of the file `dir`, in file name order.
pub fn read_manifests(dir: &Path) -> Result<Vec<serde_json::Value>, String> {
    let mut files: Vec<_> = if dir.is_file() {
        vec![dir.to_owned()]
    } else {
        std::fs::read_dir(dir)
            .map_err(|e| format!("{}: {e}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml" || e == "json"))
            // kustomize's own file describes a directory; it is no object.
            .filter(|p| p.file_stem().is_none_or(|stem| stem != "kustomization"))
            .collect()
    };
    files.sort();
    let mut objects = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))?;
        let documents: Vec<serde_json::Value> =
            serde_saphyr::from_multiple(&text).map_err(|e| format!("{}: {e}", file.display()))?;
        objects.extend(documents.into_iter().filter(serde_json::Value::is_object));
    }
    Ok(objects)
}

impl TestApi {
    pub async fn start(options: Options) -> Result<Self, StartError> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", options.port))
            .await
            .map_err(|source| StartError::Bind {
                port: options.port,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| StartError::Bind {
            port: options.port,
            source,
        })?;
        let store = Arc::new(if options.history == 0 {
            Store::default()
        } else {
            Store::with_history(options.history)
        });
        bootstrap_namespaces(&store);
        let tls = if options.tls {
            Some(tls_acceptor(options.pod_network_address)?)
        } else {
            None
        };
        let pod_listener = match options.pod_network_address {
            Some(ip) => Some(
                tokio::net::TcpListener::bind((ip, addr.port()))
                    .await
                    .map_err(|source| StartError::Bind {
                        port: addr.port(),
                        source,
                    })?,
            ),
            None => None,
        };
        let ca_pem = tls.as_ref().map(|(_, ca)| ca.clone());
        let state = Arc::new(AppState {
            store: store.clone(),
            admission: Admission::new(options.service_endpoints),
            tokens: rbac::Tokens::default(),
            audit: rbac::Audit::default(),
            ca_pem: ca_pem.clone().unwrap_or_default(),
            node_roots: std::sync::RwLock::default(),
        });
        let mut background = vec![tokio::spawn(service_accounts::run_controllers(
            store.clone(),
            state.ca_pem.clone(),
        ))];
        let router = http::router(state.clone());
        let task = match tls {
            Some((acceptor, _)) => {
                if let Some(pod_listener) = pod_listener {
                    let (acceptor, router) = (acceptor.clone(), router.clone());
                    background.push(tokio::spawn(serve_tls(pod_listener, acceptor, router)));
                }
                tokio::spawn(serve_tls(listener, acceptor, router))
            }
            None => tokio::spawn(async move {
                if let Err(e) = axum::serve(listener, router).await {
                    tracing::error!(error = %e, "test API server stopped");
                }
            }),
        };
        Ok(Self {
            addr,
            store,
            state,
            ca_pem,
            task,
            controllers: background,
        })
    }

    /// Starts the workload controllers, the scheduler and the Endpoints
    /// controller (see [`workloads`]), for a cluster whose Pods kubelets run;
    /// they stop with the server.
    /// Serves `pods/log` of Pods on `node` from the kubelet files under `root`.
    pub fn register_node_root(&self, node: &str, root: &Path) {
        if let Ok(mut roots) = self.state.node_roots.write() {
            roots.insert(node.to_owned(), root.to_owned());
        }
    }

    pub fn start_workloads(&mut self) {
        self.controllers.push(tokio::spawn(workloads::run(self.state.clone())));
    }

    /// Every request a ServiceAccount made so far, with RBAC's decision.
    pub fn audit(&self) -> Vec<rbac::Decision> {
        self.state.audit.decisions()
    }

    /// Points a webhook `service` reference (`namespace/name`) at `address`.
    pub fn set_service_endpoint(&self, service: &str, address: SocketAddr) {
        self.state.admission.set_service_endpoint(service, address);
    }

    pub fn url(&self) -> String {
        let scheme = if self.ca_pem.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.addr.port())
    }

    /// A kubeconfig for kubectl and kube-rs clients.
    pub fn kubeconfig(&self) -> String {
        let mut cluster = json!({"server": self.url()});
        if let Some(ca) = &self.ca_pem {
            cluster["certificate-authority-data"] = json!(base64::engine::general_purpose::STANDARD.encode(ca));
        }
        let config = json!({
            "apiVersion": "v1", "kind": "Config",
            "clusters": [{"name": "testapi", "cluster": cluster}],
            "users": [{"name": "admin", "user": {"token": rbac::ADMIN_TOKEN}}],
            "contexts": [{"name": "testapi", "context": {"cluster": "testapi", "user": "admin", "namespace": "default"}}],
            "current-context": "testapi",
        });
        // JSON is YAML: kubectl and kube-rs read it as a kubeconfig.
        format!("{config:#}\n")
    }

    /// A kubeconfig that authenticates as ServiceAccount `namespace/name`
    /// (a token issued for it now), authorised by RBAC.
    pub fn kubeconfig_for(&self, namespace: &str, name: &str) -> String {
        self.kubeconfig_with_token(namespace, name, &self.state.tokens.issue(namespace, name))
    }

    /// [`TestApi::kubeconfig_for`] with a token bound to `reference` (a
    /// TokenRequest's `boundObjectRef`, e.g. the agent's Node), as kubelet's
    /// projected tokens are bound to their Pod and node.
    pub fn kubeconfig_bound(&self, namespace: &str, name: &str, reference: &Value) -> Result<String, ApiError> {
        let (extra, bound) = auth::bind(&self.state.store, namespace, name, reference)?;
        let token = self.state.tokens.issue_bound(namespace, name, extra, bound);
        Ok(self.kubeconfig_with_token(namespace, name, &token))
    }

    pub fn kubeconfig_with_token(&self, namespace: &str, name: &str, token: &str) -> String {
        self.kubeconfig()
            .replace(
                &format!("\"token\": \"{}\"", rbac::ADMIN_TOKEN),
                &format!("\"token\": \"{token}\""),
            )
            .replace("\"name\": \"admin\"", &format!("\"name\": \"{namespace}-{name}\""))
            .replace("\"user\": \"admin\"", &format!("\"user\": \"{namespace}-{name}\""))
    }

    pub fn write_kubeconfig(&self, path: &Path) -> std::io::Result<()> {
        std::fs::write(path, self.kubeconfig())
    }

    /// Stores every object of the YAML files in `dir` (webhook configurations,
    /// CRDs, namespaces, …) without admission, as a cluster's bootstrap would.
    /// Sets the CA bundle of every stored webhook (of the Mutating- and
    /// ValidatingWebhookConfigurations) that has none, as an installer's CA
    /// injection would; returns how many were filled.
    pub fn fill_webhook_ca(&self, ca_pem: &str) -> usize {
        let bundle = base64::engine::general_purpose::STANDARD.encode(ca_pem);
        let mut filled = 0;
        for plural in ["mutatingwebhookconfigurations", "validatingwebhookconfigurations"] {
            let Some(rt) = self.store.resource_type("admissionregistration.k8s.io", "v1", plural) else {
                continue;
            };
            let (configurations, _) = self.store.list(&rt, None);
            for mut configuration in configurations {
                let mut changed = 0;
                for webhook in configuration
                    .get_mut("webhooks")
                    .and_then(serde_json::Value::as_array_mut)
                    .into_iter()
                    .flatten()
                {
                    let empty = webhook
                        .pointer("/clientConfig/caBundle")
                        .and_then(serde_json::Value::as_str)
                        .is_none_or(str::is_empty);
                    if let (true, Some(client)) = (
                        empty,
                        webhook
                            .get_mut("clientConfig")
                            .and_then(serde_json::Value::as_object_mut),
                    ) {
                        client.insert("caBundle".to_owned(), json!(bundle));
                        changed += 1;
                    }
                }
                let name = configuration
                    .pointer("/metadata/name")
                    .and_then(serde_json::Value::as_str)
                    .unwrap_or_default()
                    .to_owned();
                if changed > 0
                    && self
                        .store
                        .update(&rt, "", &name, configuration, crate::store::Subresource::Main, false)
                        .is_ok()
                {
                    filled += changed;
                }
            }
        }
        filled
    }

    pub fn load_manifests(&self, dir: &Path) -> Result<usize, String> {
        let objects = read_manifests(dir)?;
        for object in &objects {
            let (rt, namespace) = self.placement(object).map_err(|e| format!("{}: {e}", dir.display()))?;
            self.store
                .create(&rt, &namespace, object.clone(), false)
                .map_err(|e| format!("{}: {}", dir.display(), e.message))?;
        }
        Ok(objects.len())
    }

    /// Stores `object` (created, or replacing the stored one) without
    /// admission, as an admin's write that the test is not about; watchers see it.
    pub fn put(&self, object: &Value) -> Result<(), String> {
        let (rt, namespace) = self.placement(object)?;
        let name = object
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let result = match self.store.get(&rt, &namespace, name) {
            Ok(stored) => {
                let mut object = object.clone();
                object["metadata"]["resourceVersion"] = stored["metadata"]["resourceVersion"].clone();
                self.store
                    .update(&rt, &namespace, name, object, store::Subresource::Main, false)
            }
            Err(_) => self.store.create(&rt, &namespace, object.clone(), false),
        };
        result.map(|_| ()).map_err(|e| e.message)
    }

    /// The served type of `object` and the namespace it belongs in.
    fn placement(&self, object: &Value) -> Result<(resources::ResourceType, String), String> {
        let text = |pointer: &str| object.pointer(pointer).and_then(Value::as_str).unwrap_or_default();
        let (api_version, kind) = (text("/apiVersion"), text("/kind"));
        let rt = self
            .store
            .types()
            .into_iter()
            .find(|t| t.kind == kind && t.versions.iter().any(|v| t.api_version(&v.name) == api_version))
            .ok_or_else(|| format!("{api_version} {kind} is not served"))?;
        let namespace = match object.pointer("/metadata/namespace").and_then(Value::as_str) {
            _ if !rt.namespaced => String::new(),
            Some(namespace) => namespace.to_owned(),
            None => "default".to_owned(),
        };
        Ok((rt, namespace))
    }
}

/// `default`, `kube-system` and `kube-public` exist in every cluster.
fn bootstrap_namespaces(store: &Store) {
    if let Some(namespaces) = store.resource_type("", "v1", "namespaces") {
        for name in ["default", "kube-system", "kube-public"] {
            let namespace = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}, "status": {"phase": "Active"}});
            let _ = store.create(&namespaces, "", namespace, false);
        }
    }
}

fn tls_acceptor(extra_address: Option<std::net::IpAddr>) -> Result<(tokio_rustls::TlsAcceptor, String), StartError> {
    let authority = prewarm_certs::Authority::generate("prewarm-testapi-ca", std::time::Duration::from_secs(86400))
        .map_err(|e| StartError::Certificate(e.to_string()))?;
    let serving = authority
        .issue_serving(
            &[
                "localhost".to_owned(),
                "kubernetes.default".to_owned(),
                "kubernetes.default.svc".to_owned(),
            ],
            &std::iter::once(std::net::IpAddr::from([127, 0, 0, 1]))
                .chain(extra_address)
                .collect::<Vec<_>>(),
            std::time::Duration::from_secs(86400),
        )
        .map_err(|e| StartError::Certificate(e.to_string()))?;
    use rustls::pki_types::pem::PemObject;
    let chain = rustls::pki_types::CertificateDer::pem_slice_iter(serving.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| StartError::Certificate(e.to_string()))?;
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(serving.key_pem.as_bytes())
        .map_err(|e| StartError::Certificate(e.to_string()))?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| StartError::Certificate(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| StartError::Certificate(e.to_string()))?;
    Ok((
        tokio_rustls::TlsAcceptor::from(Arc::new(config)),
        authority.cert_pem().to_owned(),
    ))
}

async fn serve_tls(listener: tokio::net::TcpListener, acceptor: tokio_rustls::TlsAcceptor, router: axum::Router) {
    let service = hyper_util::service::TowerToHyperService::new(router);
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let (acceptor, service) = (acceptor.clone(), service.clone());
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(tcp).await else { return };
            let builder = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
            let _ = builder
                .serve_connection_with_upgrades(hyper_util::rt::TokioIo::new(tls), service)
                .await;
        });
    }
}
