//! kubelet credential-provider exec plugins (`CredentialProviderConfig`, the
//! same file kubelet reads): a provider whose `matchImages` apply to the image
//! is run with a `CredentialProviderRequest` on stdin, under a timeout, and its
//! `CredentialProviderResponse` is cached as it asks (per image, registry or
//! globally) or for `defaultCacheDuration`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

use crate::credentials::{Credential, matches};

const API_VERSIONS: [&str; 3] = [
    "credentialprovider.kubelet.k8s.io/v1",
    "credentialprovider.kubelet.k8s.io/v1beta1",
    "credentialprovider.kubelet.k8s.io/v1alpha1",
];

#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("{path}: {message}")]
    Config { path: String, message: String },
    #[error("credential provider {name}: {message}")]
    Exec { name: String, message: String },
}

#[derive(Clone, Debug)]
struct Provider {
    name: String,
    binary: PathBuf,
    match_images: Vec<String>,
    default_cache: Duration,
    api_version: String,
    args: Vec<String>,
    env: Vec<(String, String)>,
}

/// Cached answers: (provider, cache key) → (expiry, credentials).
type Cache = HashMap<(String, String), (Instant, Vec<Credential>)>;

/// The providers of one config file, with their cache.
#[derive(Debug)]
pub struct Plugins {
    providers: Vec<Provider>,
    timeout: Duration,
    cache: Mutex<Cache>,
}

impl Plugins {
    /// Reads a `CredentialProviderConfig`; binaries are looked up in `bin_dir`.
    pub fn load(config: &Path, bin_dir: &Path, timeout: Duration) -> Result<Self, PluginError> {
        let error = |message: String| PluginError::Config {
            path: config.display().to_string(),
            message,
        };
        let text = std::fs::read_to_string(config).map_err(|e| error(e.to_string()))?;
        let document: Value = serde_saphyr::from_str(&text).map_err(|e| error(e.to_string()))?;
        if document.get("kind").and_then(Value::as_str) != Some("CredentialProviderConfig") {
            return Err(error("kind must be CredentialProviderConfig".to_owned()));
        }
        let mut providers = Vec::new();
        for (i, provider) in document
            .get("providers")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            let text = |key: &str| provider.get(key).and_then(Value::as_str).unwrap_or_default().to_owned();
            let name = text("name");
            if name.is_empty() || name.contains(['/', ' ']) || name.contains("..") {
                return Err(error(format!(
                    "providers[{i}].name {name:?} must be a plain file name in the plugin directory"
                )));
            }
            let match_images: Vec<String> = provider
                .get("matchImages")
                .and_then(Value::as_array)
                .map(|m| m.iter().filter_map(|p| p.as_str().map(str::to_owned)).collect())
                .unwrap_or_default();
            if match_images.is_empty() {
                return Err(error(format!("providers[{i}].matchImages is required")));
            }
            let api_version = text("apiVersion");
            if !API_VERSIONS.contains(&api_version.as_str()) {
                return Err(error(format!(
                    "providers[{i}].apiVersion {api_version:?} is not one of {}",
                    API_VERSIONS.join(", ")
                )));
            }
            let default_cache = prewarm_api::duration::parse(&text("defaultCacheDuration"))
                .map_err(|e| error(format!("providers[{i}].defaultCacheDuration: {e}")))?;
            let binary = bin_dir.join(&name);
            if !binary.is_file() {
                return Err(error(format!("providers[{i}]: no executable {}", binary.display())));
            }
            let args = provider
                .get("args")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect())
                .unwrap_or_default();
            let env = provider
                .get("env")
                .and_then(Value::as_array)
                .map(|e| {
                    e.iter()
                        .map(|v| {
                            (
                                v["name"].as_str().unwrap_or_default().to_owned(),
                                v["value"].as_str().unwrap_or_default().to_owned(),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            providers.push(Provider {
                name,
                binary,
                match_images,
                default_cache,
                api_version,
                args,
                env,
            });
        }
        Ok(Self {
            providers,
            timeout,
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// Credentials for `repository` (`registry.example.com/team/app`) from every matching provider.
    pub async fn provide(&self, repository: &str) -> Vec<Credential> {
        let mut credentials = Vec::new();
        for provider in self
            .providers
            .iter()
            .filter(|p| p.match_images.iter().any(|m| matches(m, repository)))
        {
            match self.provide_one(provider, repository).await {
                Ok(found) => credentials.extend(found),
                Err(e) => tracing::warn!(error = %e, "credential provider failed; continuing without its credentials"),
            }
        }
        credentials
    }

    fn cached(&self, provider: &str, repository: &str) -> Option<Vec<Credential>> {
        let registry = repository.split('/').next().unwrap_or(repository);
        let cache = self.cache.lock().ok()?;
        [repository, registry, "global"].iter().find_map(|key| {
            cache
                .get(&(provider.to_owned(), (*key).to_owned()))
                .filter(|(expires, _)| *expires > Instant::now())
                .map(|(_, c)| c.clone())
        })
    }

    async fn provide_one(&self, provider: &Provider, repository: &str) -> Result<Vec<Credential>, PluginError> {
        if let Some(credentials) = self.cached(&provider.name, repository) {
            return Ok(credentials);
        }
        let exec_error = |message: String| PluginError::Exec {
            name: provider.name.clone(),
            message,
        };
        let request =
            json!({"apiVersion": provider.api_version, "kind": "CredentialProviderRequest", "image": repository});
        let mut child = tokio::process::Command::new(&provider.binary)
            .args(&provider.args)
            .envs(provider.env.iter().map(|(k, v)| (k, v)))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| exec_error(e.to_string()))?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(request.to_string().as_bytes())
                .await
                .map_err(|e| exec_error(e.to_string()))?;
        }
        let output = tokio::time::timeout(self.timeout, child.wait_with_output())
            .await
            .map_err(|_| exec_error(format!("no answer within {:?}", self.timeout)))?
            .map_err(|e| exec_error(e.to_string()))?;
        if !output.status.success() {
            // stderr may echo what it was given; keep only its first line.
            let first_line = String::from_utf8_lossy(&output.stderr)
                .lines()
                .next()
                .unwrap_or_default()
                .chars()
                .take(200)
                .collect::<String>();
            return Err(exec_error(format!("exited with {}: {first_line}", output.status)));
        }
        let response: Value =
            serde_json::from_slice(&output.stdout).map_err(|e| exec_error(format!("the response is not JSON: {e}")))?;
        if response.get("apiVersion").and_then(Value::as_str) != Some(provider.api_version.as_str()) {
            return Err(exec_error(format!(
                "the response's apiVersion must be {}",
                provider.api_version
            )));
        }
        let credentials: Vec<Credential> = response
            .get("auth")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
            .filter(|(pattern, _)| matches(pattern, repository))
            .map(|(_, auth)| Credential {
                username: auth["username"].as_str().unwrap_or_default().to_owned(),
                password: auth["password"].as_str().unwrap_or_default().to_owned(),
                identity_token: String::new(),
            })
            .collect();
        let duration = match response.get("cacheDuration").and_then(Value::as_str) {
            Some(text) => prewarm_api::duration::parse(text).unwrap_or(provider.default_cache),
            None => provider.default_cache,
        };
        if !duration.is_zero() {
            let registry = repository.split('/').next().unwrap_or(repository);
            let key = match response.get("cacheKeyType").and_then(Value::as_str) {
                Some("Registry") => registry.to_owned(),
                Some("Global") => "global".to_owned(),
                _ => repository.to_owned(),
            };
            if let Ok(mut cache) = self.cache.lock() {
                cache.insert(
                    (provider.name.clone(), key),
                    (Instant::now() + duration, credentials.clone()),
                );
            }
        }
        Ok(credentials)
    }
}
