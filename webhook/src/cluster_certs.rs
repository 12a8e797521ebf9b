//! `--cert-source secret`: every replica shares one CA kept in a Secret
//! (shipped empty with the install and filled by whichever replica comes
//! first, or created when absent; the API server's create and
//! resourceVersion checks make concurrent replicas agree), issues its own
//! serving certificate from it into `--cert-dir` (where the TLS reloader picks
//! it up), and keeps the trust bundle in prewarm's own webhook configurations,
//! named by flag and never any other.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{MutatingWebhookConfiguration, ValidatingWebhookConfiguration};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams, PostParams};
use prewarm_certs::rotation::{self, CaSet, Change, Policy, RotationError};
use prewarm_certs::{CA_CERT_FILE, TLS_CERT_FILE, TLS_KEY_FILE, write_atomically};
use serde_json::json;

/// Flags of `--cert-source secret`.
#[derive(Clone, Debug, clap::Args)]
pub struct SecretSourceConfig {
    /// Kubeconfig for --cert-source secret; by default in-cluster config or $KUBECONFIG.
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// Namespace of the webhook's Service and CA Secret (the Pod's own, from the downward API).
    #[arg(long, default_value = "prewarm-system", env = "POD_NAMESPACE")]
    pub namespace: String,
    /// The webhook's Service: serving certificates name `<service>.<namespace>.svc`.
    #[arg(long, default_value = "prewarm-webhook")]
    pub service_name: String,
    /// The Secret that holds the shared CA.
    #[arg(long, default_value = "prewarm-webhook-ca")]
    pub ca_secret_name: String,
    /// The MutatingWebhookConfiguration whose caBundles are kept current.
    #[arg(long, default_value = "prewarm-mutating")]
    pub mutating_webhook_configuration: String,
    /// The ValidatingWebhookConfiguration whose caBundles are kept current.
    #[arg(long, default_value = "prewarm-validating")]
    pub validating_webhook_configuration: String,
    /// How long a CA is valid.
    #[arg(long, default_value = "8760h", value_parser = prewarm_api::duration::parse)]
    pub ca_lifetime: Duration,
    /// A new CA is made this long before the current one expires.
    #[arg(long, default_value = "720h", value_parser = prewarm_api::duration::parse)]
    pub ca_renew_before: Duration,
    /// How long a new CA is trusted (in the caBundles) before it signs.
    #[arg(long, default_value = "10m", value_parser = prewarm_api::duration::parse)]
    pub ca_overlap: Duration,
    /// How often the Secret and the caBundles are checked.
    #[arg(long, default_value = "1m", value_parser = prewarm_api::duration::parse)]
    pub ca_check_interval: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum ClusterCertError {
    #[error("no usable Kubernetes configuration (in-cluster, --kubeconfig or $KUBECONFIG): {0}")]
    Config(#[source] kube::Error),
    #[error("--kubeconfig {path}: {message}")]
    Kubeconfig { path: String, message: String },
    #[error("{0}")]
    Policy(String),
    #[error("Secret {namespace}/{name}: {source}")]
    Secret {
        namespace: String,
        name: String,
        #[source]
        source: RotationError,
    },
    #[error("{action} {what}: {source}")]
    Api {
        action: &'static str,
        what: String,
        #[source]
        source: kube::Error,
    },
    #[error("Secret {0} changed under every attempt to update it; will retry")]
    Contended(String),
    #[error("issuing the serving certificate: {0}")]
    Issue(#[from] prewarm_certs::CertError),
    #[error("writing the serving certificate into {dir}: {source}")]
    Write {
        dir: String,
        #[source]
        source: std::io::Error,
    },
}

/// What one pass did, for logs and metrics.
#[derive(Debug, Default)]
pub struct Pass {
    pub secret_change: Option<Change>,
    pub issued: bool,
    pub bundles_patched: usize,
}

/// The CA Secret, the webhook configurations, and this replica's certificate directory.
pub struct SecretSource {
    config: SecretSourceConfig,
    policy: Policy,
    cert_dir: PathBuf,
    extra_dns_names: Vec<String>,
    secrets: Api<Secret>,
    mutating: Api<MutatingWebhookConfiguration>,
    validating: Api<ValidatingWebhookConfiguration>,
    /// The signing CA the certificate in `cert_dir` was issued by.
    issued_by: Option<String>,
}

impl std::fmt::Debug for SecretSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretSource")
            .field("config", &self.config)
            .field("cert_dir", &self.cert_dir)
            .finish_non_exhaustive()
    }
}

/// Attempts at a read-decide-write round before a pass gives up (another
/// replica won each time; the next pass starts over).
const ATTEMPTS: usize = 5;

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

fn is_conflict(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 409)
}

impl SecretSource {
    pub async fn connect(
        config: SecretSourceConfig,
        cert_dir: PathBuf,
        extra_dns_names: Vec<String>,
    ) -> Result<Self, ClusterCertError> {
        let policy = Policy {
            common_name: format!("{}-ca", config.service_name),
            lifetime: config.ca_lifetime,
            renew_before: config.ca_renew_before,
            overlap: config.ca_overlap,
        };
        policy.check().map_err(ClusterCertError::Policy)?;
        // A replica with a stale view may write an older bundle until its next
        // pass: the overlap must outlast that, or a promoted CA could be untrusted.
        if config.ca_overlap <= config.ca_check_interval {
            return Err(ClusterCertError::Policy(format!(
                "--ca-overlap ({:?}) must be longer than --ca-check-interval ({:?})",
                config.ca_overlap, config.ca_check_interval
            )));
        }
        let client = client(config.kubeconfig.as_deref()).await?;
        Ok(Self {
            secrets: Api::namespaced(client.clone(), &config.namespace),
            mutating: Api::all(client.clone()),
            validating: Api::all(client),
            config,
            policy,
            cert_dir,
            extra_dns_names,
            issued_by: None,
        })
    }

    pub fn check_interval(&self) -> Duration {
        self.config.ca_check_interval
    }

    /// The names a serving certificate carries: the Service's in-cluster names
    /// and any `--dns-name`.
    pub fn dns_names(&self) -> Vec<String> {
        let (service, namespace) = (&self.config.service_name, &self.config.namespace);
        let mut names = vec![
            format!("{service}.{namespace}.svc"),
            format!("{service}.{namespace}.svc.cluster.local"),
        ];
        names.extend(self.extra_dns_names.iter().cloned());
        names
    }

    /// Brings the Secret, the caBundles and this replica's certificate up to date.
    pub async fn sync(&mut self) -> Result<Pass, ClusterCertError> {
        let (set, secret_change) = self.settle_secret().await?;
        let bundle = set.bundle();
        let mut pass = Pass {
            secret_change,
            ..Pass::default()
        };
        if self.issued_by.as_deref() != Some(set.signing.cert_pem.as_str()) {
            self.issue(&set, &bundle)?;
            self.issued_by = Some(set.signing.cert_pem.clone());
            pass.issued = true;
        }
        pass.bundles_patched = self.inject(&bundle).await?;
        Ok(pass)
    }

    /// Reads the Secret, applies the rotation plan, and writes it back with
    /// a resourceVersion precondition (create-if-absent when there is none);
    /// on a conflict it starts over with what the winner wrote.
    async fn settle_secret(&self) -> Result<(CaSet, Option<Change>), ClusterCertError> {
        let (namespace, name) = (&self.config.namespace, &self.config.ca_secret_name);
        let what = || format!("Secret {namespace}/{name}");
        let api = |action: &'static str| {
            move |source| ClusterCertError::Api {
                action,
                what: what(),
                source,
            }
        };
        for _ in 0..ATTEMPTS {
            let stored = self.secrets.get_opt(name).await.map_err(api("reading"))?;
            let current = match &stored {
                // Shipped empty, so the webhook needs no `create secrets`: filled like an absent one.
                Some(secret) if secret.data.as_ref().is_none_or(BTreeMap::is_empty) => None,
                Some(secret) => Some(read_set(secret).map_err(|source| ClusterCertError::Secret {
                    namespace: namespace.clone(),
                    name: name.clone(),
                    source,
                })?),
                None => None,
            };
            let (next, why) = match (rotation::plan(current.as_ref(), now(), &self.policy)?, current) {
                (Some(planned), _) => planned,
                (None, Some(set)) => return Ok((set, None)),
                // The plan always creates a set where there is none.
                (None, None) => continue,
            };
            // The stored metadata is kept (labels someone added included), with ours added.
            let mut metadata = stored.map(|s| s.metadata).unwrap_or_default();
            metadata.name = Some(name.clone());
            metadata.namespace = Some(namespace.clone());
            metadata
                .labels
                .get_or_insert_with(BTreeMap::new)
                .insert("app.kubernetes.io/name".to_owned(), "prewarm".to_owned());
            let secret = Secret {
                metadata,
                type_: Some("Opaque".to_owned()),
                data: Some(next.to_data().into_iter().map(|(k, v)| (k, ByteString(v))).collect()),
                ..Secret::default()
            };
            let written = if secret.metadata.resource_version.is_some() {
                self.secrets.replace(name, &PostParams::default(), &secret).await
            } else {
                self.secrets.create(&PostParams::default(), &secret).await
            };
            match written {
                Ok(_) => {
                    tracing::info!(secret = %what(), change = why.as_str(), "CA Secret updated");
                    return Ok((next, Some(why)));
                }
                // Another replica wrote first: decide again from what it wrote.
                Err(e) if is_conflict(&e) => continue,
                Err(e) => return Err(api("writing")(e)),
            }
        }
        Err(ClusterCertError::Contended(what()))
    }

    /// Issues this replica's serving certificate from the signing CA and writes
    /// it, with the bundle as `ca.crt`, into the certificate directory.
    fn issue(&self, set: &CaSet, bundle: &str) -> Result<(), ClusterCertError> {
        let authority = set.signing_authority()?;
        let ca_expiry = prewarm_certs::pem::Certificate::parse(&set.signing.cert_pem)
            .map_err(|message| prewarm_certs::CertError::Unreadable {
                what: "the signing CA",
                message,
            })?
            .not_after;
        // A serving certificate lives as long as the CA that signs it; CA rotation renews both.
        let lifetime = Duration::from_secs(u64::try_from(ca_expiry.saturating_sub(now())).unwrap_or(0).max(60));
        let serving = authority.issue_serving(&self.dns_names(), &[], lifetime)?;
        let files: [(&str, &[u8], u32); 3] = [
            (CA_CERT_FILE, bundle.as_bytes(), 0o644),
            (TLS_CERT_FILE, serving.cert_pem.as_bytes(), 0o644),
            (TLS_KEY_FILE, serving.key_pem.as_bytes(), 0o600),
        ];
        write_atomically(&self.cert_dir, &files).map_err(|source| ClusterCertError::Write {
            dir: self.cert_dir.display().to_string(),
            source,
        })
    }

    /// Puts `bundle` into every webhook of prewarm's two configurations whose
    /// caBundle differs; returns how many configurations were patched. A
    /// missing configuration is not an error (not installed yet, or removed).
    async fn inject(&self, bundle: &str) -> Result<usize, ClusterCertError> {
        let mutating = inject_into(
            &self.mutating,
            &self.config.mutating_webhook_configuration,
            bundle,
            |c| {
                c.webhooks
                    .into_iter()
                    .flatten()
                    .map(|w| (w.name, w.client_config.ca_bundle))
                    .collect()
            },
        );
        let validating = inject_into(
            &self.validating,
            &self.config.validating_webhook_configuration,
            bundle,
            |c| {
                c.webhooks
                    .into_iter()
                    .flatten()
                    .map(|w| (w.name, w.client_config.ca_bundle))
                    .collect()
            },
        );
        Ok(usize::from(mutating.await?) + usize::from(validating.await?))
    }
}

pub(crate) async fn client(kubeconfig: Option<&std::path::Path>) -> Result<kube::Client, ClusterCertError> {
    let Some(path) = kubeconfig else {
        return kube::Client::try_default().await.map_err(ClusterCertError::Config);
    };
    let unusable = |e: &dyn std::fmt::Display| ClusterCertError::Kubeconfig {
        path: path.display().to_string(),
        message: e.to_string(),
    };
    let kubeconfig = kube::config::Kubeconfig::read_from(path).map_err(|e| unusable(&e))?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &kube::config::KubeConfigOptions::default())
        .await
        .map_err(|e| unusable(&e))?;
    kube::Client::try_from(config).map_err(|e| unusable(&e))
}

/// Puts `bundle` into the webhooks of configuration `name` whose caBundle
/// differs; returns whether it patched. A missing configuration is skipped.
async fn inject_into<K>(
    api: &Api<K>,
    name: &str,
    bundle: &str,
    webhooks: impl FnOnce(K) -> Vec<(String, Option<ByteString>)>,
) -> Result<bool, ClusterCertError>
where
    K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let kind = K::kind(&());
    let Some(configuration) = api
        .get_opt(name)
        .await
        .map_err(|source| api_error("reading", &kind, name, source))?
    else {
        return Ok(false);
    };
    let Some(patch) = bundle_patch(webhooks(configuration), bundle) else {
        return Ok(false);
    };
    api.patch(name, &PatchParams::default(), &Patch::Strategic(patch))
        .await
        .map_err(|source| api_error("patching", &kind, name, source))?;
    Ok(true)
}

fn api_error(action: &'static str, kind: &str, name: &str, source: kube::Error) -> ClusterCertError {
    ClusterCertError::Api {
        action,
        what: format!("{kind} {name}"),
        source,
    }
}

fn read_set(secret: &Secret) -> Result<CaSet, RotationError> {
    let data = secret
        .data
        .iter()
        .flatten()
        .map(|(key, value)| (key.clone(), value.0.clone()))
        .collect();
    CaSet::from_data(&data)
}

/// A strategic merge patch (webhooks merge by name) setting `bundle` in the
/// webhooks whose caBundle differs, or `None` when all carry it already.
fn bundle_patch(webhooks: Vec<(String, Option<ByteString>)>, bundle: &str) -> Option<serde_json::Value> {
    let encoded = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, bundle);
    let stale: Vec<_> = webhooks
        .into_iter()
        .filter(|(_, current)| current.as_ref().map(|b| b.0.as_slice()) != Some(bundle.as_bytes()))
        .map(|(name, _)| json!({"name": name, "clientConfig": {"caBundle": encoded}}))
        .collect();
    (!stale.is_empty()).then(|| json!({"webhooks": stale}))
}

/// Runs a pass every `interval` until the task is dropped; failures are logged
/// and retried at the next pass, and the current certificate keeps serving.
pub async fn keep_current(mut source: SecretSource, on_pass: impl Fn(Result<&Pass, &ClusterCertError>) + Send) {
    let mut tick = tokio::time::interval(source.check_interval());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let result = source.sync().await;
        on_pass(result.as_ref());
    }
}
