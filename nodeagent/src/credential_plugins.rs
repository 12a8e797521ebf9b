//! kubelet credential-provider exec plugins (`CredentialProviderConfig`, the
//! same file kubelet reads): a provider whose `matchImages` apply to the image
//! is run with a `CredentialProviderRequest` on stdin, under a timeout, and its
//! `CredentialProviderResponse` is cached as it asks (per image, registry or
//! globally) or for `defaultCacheDuration`.

use std::collections::{BTreeMap, HashMap};

use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::AsyncWriteExt;

use crate::credentials::{Credential, matches};

const CONFIG_API_VERSIONS: [&str; 3] = [
    "kubelet.config.k8s.io/v1",
    "kubelet.config.k8s.io/v1beta1",
    "kubelet.config.k8s.io/v1alpha1",
];

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

/// kubelet's `CredentialProviderConfig` file.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ConfigFile {
    #[serde(default)]
    api_version: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    providers: Vec<ProviderConfig>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ProviderConfig {
    #[serde(default)]
    name: String,
    #[serde(default)]
    match_images: Vec<String>,
    #[serde(default)]
    default_cache_duration: String,
    #[serde(default)]
    api_version: String,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    env: Vec<EnvVar>,
    #[serde(default)]
    token_attributes: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EnvVar {
    name: String,
    #[serde(default)]
    value: String,
}

/// A plugin's `CredentialProviderResponse` (unknown fields are ignored, as
/// kubelet does, so newer plugins keep working).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ProviderResponse {
    #[serde(default)]
    api_version: String,
    #[serde(default)]
    cache_key_type: String,
    #[serde(default)]
    cache_duration: Option<String>,
    #[serde(default)]
    auth: BTreeMap<String, AuthConfig>,
}

#[derive(Deserialize)]
struct AuthConfig {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
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

/// A provider's answer: image patterns (`*.dkr.ecr.*.amazonaws.com`) and their credentials.
type AuthMap = Arc<Vec<(String, Credential)>>;

/// Cached answers: (provider, cache key) → (expiry, the whole auth map).
type Cache = HashMap<(String, String), (Instant, AuthMap)>;

/// The providers of one config file, with their cache.
#[derive(Debug)]
pub struct Plugins {
    providers: Vec<Provider>,
    timeout: Duration,
    cache: Mutex<Cache>,
}

impl Plugins {
    /// Reads a `CredentialProviderConfig` file; binaries are looked up in `bin_dir`.
    pub fn load(config: &Path, bin_dir: &Path, timeout: Duration) -> Result<Self, PluginError> {
        let text = std::fs::read_to_string(config).map_err(|e| PluginError::Config {
            path: config.display().to_string(),
            message: e.to_string(),
        })?;
        Self::parse(&config.display().to_string(), &text, bin_dir, timeout)
    }

    /// A `CredentialProviderConfig` read from `source` (a file, or a
    /// ConfigMap's key), named in errors.
    pub fn parse(source: &str, text: &str, bin_dir: &Path, timeout: Duration) -> Result<Self, PluginError> {
        let error = |message: String| PluginError::Config {
            path: source.to_owned(),
            message,
        };
        // Strict, as kubelet decodes this file: a misspelt field is an error, not a silent default.
        let document: ConfigFile = serde_saphyr::from_str(text).map_err(|e| error(e.to_string()))?;
        if document.kind != "CredentialProviderConfig" || !CONFIG_API_VERSIONS.contains(&document.api_version.as_str())
        {
            return Err(error(format!(
                "{} {} must be a CredentialProviderConfig of {}",
                document.api_version,
                document.kind,
                CONFIG_API_VERSIONS.join(", ")
            )));
        }
        let mut providers = Vec::new();
        for (i, provider) in document.providers.into_iter().enumerate() {
            let name = provider.name;
            if name.is_empty() || name.contains(['/', ' ']) || name.contains("..") {
                return Err(error(format!(
                    "providers[{i}].name {name:?} must be a plain file name in the plugin directory"
                )));
            }
            if provider.match_images.is_empty() {
                return Err(error(format!("providers[{i}].matchImages is required")));
            }
            if !API_VERSIONS.contains(&provider.api_version.as_str()) {
                return Err(error(format!(
                    "providers[{i}].apiVersion {:?} is not one of {}",
                    provider.api_version,
                    API_VERSIONS.join(", ")
                )));
            }
            if provider.token_attributes.is_some() {
                return Err(error(format!(
                    "providers[{i}].tokenAttributes: service-account tokens for credential providers are not supported"
                )));
            }
            let default_cache = prewarm_api::duration::parse(&provider.default_cache_duration)
                .map_err(|e| error(format!("providers[{i}].defaultCacheDuration: {e}")))?;
            let binary = bin_dir.join(&name);
            if !binary.is_file() {
                return Err(error(format!("providers[{i}]: no executable {}", binary.display())));
            }
            providers.push(Provider {
                name,
                binary,
                match_images: provider.match_images,
                default_cache,
                api_version: provider.api_version,
                args: provider.args,
                env: provider.env.into_iter().map(|e| (e.name, e.value)).collect(),
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

    /// The provider's whole answer cached for `repository` (under its own key,
    /// its registry's, or the global one, as the answer's cacheKeyType said).
    fn cached(&self, provider: &str, repository: &str) -> Option<AuthMap> {
        let registry = repository.split('/').next().unwrap_or(repository);
        let cache = self.cache.lock().ok()?;
        [repository, registry, "global"].iter().find_map(|key| {
            cache
                .get(&(provider.to_owned(), (*key).to_owned()))
                .filter(|(expires, _)| *expires > Instant::now())
                .map(|(_, c)| c.clone())
        })
    }

    /// Credentials for `repository` from one provider. As kubelet does, the
    /// provider's whole auth map is cached and matched against each image, so
    /// an answer cached for one image (under a registry or global key) offers
    /// another image only the entries that match it.
    async fn provide_one(&self, provider: &Provider, repository: &str) -> Result<Vec<Credential>, PluginError> {
        let auth = match self.cached(&provider.name, repository) {
            Some(auth) => auth,
            None => self.exec(provider, repository).await?,
        };
        Ok(auth
            .iter()
            .filter(|(pattern, _)| matches(pattern, repository))
            .map(|(_, credential)| credential.clone())
            .collect())
    }

    /// Runs the provider for `repository`; caches and returns its auth map.
    async fn exec(&self, provider: &Provider, repository: &str) -> Result<AuthMap, PluginError> {
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
        let response: ProviderResponse = serde_json::from_slice(&output.stdout)
            .map_err(|e| exec_error(format!("the response is not valid: {e}")))?;
        if response.api_version != provider.api_version {
            return Err(exec_error(format!(
                "the response's apiVersion {:?} must be {}",
                response.api_version, provider.api_version
            )));
        }
        let auth: AuthMap = Arc::new(
            response
                .auth
                .into_iter()
                .map(|(pattern, auth)| {
                    let credential = Credential {
                        username: auth.username,
                        password: auth.password,
                        identity_token: String::new(),
                        source: format!("credential provider {}", provider.name),
                    };
                    (pattern, credential)
                })
                .collect(),
        );
        // Go's `time.ParseDuration` grammar; one the plugin got wrong falls back to the default.
        let duration = match response.cache_duration.as_deref() {
            Some(text) => prewarm_api::duration::parse(text).unwrap_or_else(|e| {
                tracing::warn!(provider = %provider.name, error = %e, "ignoring the response's cacheDuration");
                provider.default_cache
            }),
            None => provider.default_cache,
        };
        if !duration.is_zero() {
            let registry = repository.split('/').next().unwrap_or(repository);
            let key = match response.cache_key_type.as_str() {
                "Registry" => registry.to_owned(),
                "Global" => "global".to_owned(),
                _ => repository.to_owned(),
            };
            if let Ok(mut cache) = self.cache.lock() {
                cache.insert((provider.name.clone(), key), (Instant::now() + duration, auth.clone()));
            }
        }
        Ok(auth)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(config: &str) -> Result<Plugins, PluginError> {
        let dir = tempfile::tempdir().map_err(|e| PluginError::Exec {
            name: String::new(),
            message: e.to_string(),
        })?;
        std::fs::write(dir.path().join("ecr"), "").ok();
        std::fs::write(dir.path().join("config.yaml"), config).ok();
        Plugins::load(&dir.path().join("config.yaml"), dir.path(), Duration::from_secs(1))
    }

    const PROVIDER: &str = "apiVersion: kubelet.config.k8s.io/v1\nkind: CredentialProviderConfig\nproviders:\n- name: ecr\n  matchImages: [\"*.ecr.aws\"]\n  apiVersion: credentialprovider.kubelet.k8s.io/v1\n";

    #[test]
    fn go_durations_and_strict_fields() {
        let plugins = load(&format!("{PROVIDER}  defaultCacheDuration: 1h0m0.5s\n")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(plugins.providers[0].default_cache, Duration::from_millis(3_600_500));
        let Err(error) = load(&format!("{PROVIDER}  defaultCacheDuraton: 12h\n")) else {
            panic!("a misspelt field was accepted");
        };
        assert!(error.to_string().contains("defaultCacheDuraton"), "{error}");
        let Err(error) = load(&PROVIDER.replace("kubelet.config.k8s.io/v1", "v1")) else {
            panic!("a wrong apiVersion was accepted");
        };
        assert!(error.to_string().contains("kubelet.config.k8s.io/v1"), "{error}");
    }
}
