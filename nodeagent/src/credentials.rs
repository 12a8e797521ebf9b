//! Registry credentials from `kubernetes.io/dockerconfigjson` and
//! `kubernetes.io/dockercfg` Secrets, matched to an image the way kubelet's
//! keyring does: keys are `host[:port][/path]`, hosts may hold `*` globs per
//! dot-separated part, ports must be equal, the key's path must prefix the
//! image's, more specific keys first; Docker Hub images also match the
//! `index.docker.io` entry. Credentials never appear in Debug output.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use std::collections::BTreeMap;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// A username and password (or an identity token) for one registry.
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    pub username: String,
    pub password: String,
    pub identity_token: String,
    /// Where it came from, for messages (`pull secret default/regcred`,
    /// `credential provider ecr`): never any of its content.
    pub source: String,
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credential")
            .field("username", &self.username)
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

/// The Secret a copy in the agent namespace was made from (the controller's
/// source annotation), so messages name the user's Secret rather than the copy.
const SOURCE_KEY: &str = "imagepulljobs.kruise.io/source-key";

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    #[error(
        "Secret {secret}: type {type_:?} holds no registry credentials; use kubernetes.io/dockerconfigjson or kubernetes.io/dockercfg"
    )]
    UnsupportedType { secret: String, type_: String },
    #[error("Secret {secret}: data key {key} is missing")]
    MissingKey { secret: String, key: &'static str },
    #[error("Secret {secret}: {key} is not valid: {reason}")]
    Malformed {
        secret: String,
        key: &'static str,
        reason: String,
    },
}

/// Entries of one or more Secrets, most specific key first.
#[derive(Debug, Default, Clone)]
pub struct Keyring {
    entries: Vec<(String, Credential)>,
}

/// `.dockerconfigjson`: a Docker `config.json`. Its other fields (`credsStore`,
/// `HttpHeaders`, …) are ignored, as kubelet ignores them: Kubernetes' own docs
/// show putting a whole `~/.docker/config.json` into such a Secret.
#[derive(Deserialize)]
struct DockerConfigJson {
    #[serde(default)]
    auths: BTreeMap<String, DockerConfigEntry>,
}

/// One registry's entry in `.dockerconfigjson` or `.dockercfg`.
#[derive(Deserialize)]
struct DockerConfigEntry {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    auth: String,
    #[serde(default)]
    identitytoken: String,
}

fn decode_data<T: DeserializeOwned>(secret: &Value, key: &'static str, name: &str) -> Result<T, CredentialError> {
    let encoded = secret
        .pointer(&format!("/data/{}", key.replace('/', "~1")))
        .and_then(Value::as_str)
        .ok_or_else(|| CredentialError::MissingKey {
            secret: name.to_owned(),
            key,
        })?;
    let malformed = |reason: String| CredentialError::Malformed {
        secret: name.to_owned(),
        key,
        reason,
    };
    let bytes = BASE64
        .decode(encoded)
        .map_err(|e| malformed(format!("not base64: {e}")))?;
    serde_json::from_slice(&bytes).map_err(|e| malformed(format!("not a Docker config: {e}")))
}

fn credential(entry: DockerConfigEntry, source: &str) -> Credential {
    let (mut username, mut password) = (entry.username, entry.password);
    if let Some(decoded) = Some(entry.auth)
        .filter(|a| !a.is_empty())
        .and_then(|a| BASE64.decode(a).ok())
        .and_then(|b| String::from_utf8(b).ok())
        && let Some((user, pass)) = decoded.split_once(':')
    {
        username = user.to_owned();
        password = pass.to_owned();
    }
    Credential {
        username,
        password,
        identity_token: entry.identitytoken,
        source: source.to_owned(),
    }
}

/// `https://registry.example.com/v2/` → `registry.example.com`.
fn normalise_key(key: &str) -> String {
    let rest = key.split_once("://").map_or(key, |(_, rest)| rest);
    let (host, path) = rest.split_once('/').map_or((rest, ""), |(h, p)| (h, p));
    let path = path
        .strip_prefix("v1/")
        .or_else(|| path.strip_prefix("v2/"))
        .unwrap_or(path);
    let path = path.trim_end_matches('/');
    if path.is_empty() || path == "v1" || path == "v2" {
        host.to_owned()
    } else {
        format!("{host}/{path}")
    }
}

impl Keyring {
    /// Adds the credentials of one Secret object (as JSON).
    pub fn add_secret(&mut self, secret: &Value) -> Result<(), CredentialError> {
        let name = secret
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("<unnamed>");
        let type_ = secret.get("type").and_then(Value::as_str).unwrap_or_default();
        let auths: BTreeMap<String, DockerConfigEntry> = match type_ {
            "kubernetes.io/dockerconfigjson" => {
                decode_data::<DockerConfigJson>(secret, ".dockerconfigjson", name)?.auths
            }
            "kubernetes.io/dockercfg" => decode_data(secret, ".dockercfg", name)?,
            other => {
                return Err(CredentialError::UnsupportedType {
                    secret: name.to_owned(),
                    type_: other.to_owned(),
                });
            }
        };
        let source = match secret
            .pointer("/metadata/annotations")
            .and_then(|a| a.get(SOURCE_KEY))
            .and_then(Value::as_str)
        {
            Some(original) => format!("pull secret {original}"),
            None => {
                let namespace = secret
                    .pointer("/metadata/namespace")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                format!("pull secret {namespace}/{name}")
            }
        };
        for (key, entry) in auths {
            self.entries.push((normalise_key(&key), credential(entry, &source)));
        }
        // Reverse order: longer, more specific keys first, as kubelet sorts them.
        self.entries.sort_by(|a, b| b.0.cmp(&a.0));
        self.entries.dedup_by(|a, b| a.0 == b.0 && a.1 == b.1);
        Ok(())
    }

    /// Every credential whose key matches `repository` (`registry.example.com/team/app`,
    /// or `docker.io/library/nginx` for Docker Hub images), most specific first.
    pub fn lookup(&self, repository: &str) -> Vec<Credential> {
        let mut found: Vec<Credential> = self
            .entries
            .iter()
            .filter(|(key, _)| matches(key, repository))
            .map(|(_, c)| c.clone())
            .collect();
        if found.is_empty() && is_docker_hub(repository) {
            found = self
                .entries
                .iter()
                .filter(|(key, _)| key == "index.docker.io")
                .map(|(_, c)| c.clone())
                .collect();
        }
        found
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// `repository` is resolved (`docker.io/library/nginx`, `localhost/app`): only
/// its domain says whether it lives on Docker Hub.
fn is_docker_hub(repository: &str) -> bool {
    let domain = repository.split_once('/').map_or(repository, |(domain, _)| domain);
    matches!(domain, "docker.io" | "index.docker.io")
}

fn split_host(text: &str) -> (&str, &str, &str) {
    let (authority, path) = text.split_once('/').map_or((text, ""), |(a, p)| (a, p));
    let (host, port) = authority
        .rsplit_once(':')
        .filter(|(_, p)| p.bytes().all(|b| b.is_ascii_digit()))
        .unwrap_or((authority, ""));
    (host, port, path)
}

/// `filepath.Match` for one host part: `*` matches any run of characters.
fn glob(pattern: &str, text: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == text,
        Some((prefix, rest)) => {
            let Some(remaining) = text.strip_prefix(prefix) else {
                return false;
            };
            (0..=remaining.len()).any(|i| remaining.is_char_boundary(i) && glob(rest, &remaining[i..]))
        }
    }
}

/// Whether a keyring key or `matchImages` pattern applies to `repository`.
pub fn matches(key: &str, repository: &str) -> bool {
    let (key_host, key_port, key_path) = split_host(key);
    let (host, port, path) = split_host(repository);
    let key_parts: Vec<&str> = key_host.split('.').collect();
    let parts: Vec<&str> = host.split('.').collect();
    key_port == port
        && key_parts.len() == parts.len()
        && key_parts.iter().zip(&parts).all(|(k, p)| glob(k, p))
        && path.starts_with(key_path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn secret(auths: Value) -> Value {
        let config = BASE64.encode(json!({"auths": auths}).to_string());
        json!({"metadata": {"name": "s"}, "type": "kubernetes.io/dockerconfigjson", "data": {".dockerconfigjson": config}})
    }

    fn users(keyring: &Keyring, repository: &str) -> Vec<String> {
        keyring.lookup(repository).into_iter().map(|c| c.username).collect()
    }

    #[test]
    fn kubelet_matching_rules() {
        let mut keyring = Keyring::default();
        keyring
            .add_secret(&secret(json!({
                "registry.private.com": {"username": "host", "password": "p"},
                "https://registry.private.com/app/": {"auth": BASE64.encode("app:pw-7Qz")},
                "*.example.com:5000": {"username": "glob", "password": "p"},
                "https://index.docker.io/v1/": {"username": "hub", "password": "p"},
            })))
            .unwrap();
        assert_eq!(users(&keyring, "registry.private.com/app/echoserver"), ["app", "host"]);
        assert_eq!(users(&keyring, "registry.private.com/nginx"), ["host"]);
        assert_eq!(users(&keyring, "a.example.com:5000/x"), ["glob"]);
        assert!(users(&keyring, "a.example.com/x").is_empty(), "ports must match");
        assert!(
            users(&keyring, "a.b.example.com:5000/x").is_empty(),
            "globs do not cross dots"
        );
        assert_eq!(users(&keyring, "docker.io/library/nginx"), ["hub"]);
        for elsewhere in ["localhost/app", "registry/team/app", "localhost:5000/app"] {
            assert!(
                users(&keyring, elsewhere).is_empty(),
                "Docker Hub credentials offered to {elsewhere}"
            );
        }
        assert!(users(&keyring, "quay.io/team/app").is_empty());
        assert_eq!(keyring.lookup("registry.private.com/app/x")[0].password, "pw-7Qz");
        let shown = format!("{:?}", keyring.lookup("registry.private.com/app/x"));
        assert!(!shown.contains("pw-7Qz"), "{shown}");
        assert!(
            shown.contains("source: \"pull secret /s\""),
            "where it came from is shown: {shown}"
        );
    }

    #[test]
    fn secret_errors_say_what_is_wrong() {
        let mut keyring = Keyring::default();
        let opaque = json!({"metadata": {"name": "gcr"}, "type": "Opaque", "data": {}});
        assert!(
            keyring
                .add_secret(&opaque)
                .unwrap_err()
                .to_string()
                .contains("kubernetes.io/dockerconfigjson")
        );
        let broken =
            json!({"metadata": {"name": "b"}, "type": "kubernetes.io/dockercfg", "data": {".dockercfg": "!!"}});
        assert!(matches!(
            keyring.add_secret(&broken),
            Err(CredentialError::Malformed { .. })
        ));
        let legacy = json!({"metadata": {"name": "l"}, "type": "kubernetes.io/dockercfg",
            "data": {".dockercfg": BASE64.encode(json!({"127.0.0.1:5001": {"username": "ci", "password": "secret"}}).to_string())}});
        keyring.add_secret(&legacy).unwrap();
        assert_eq!(users(&keyring, "127.0.0.1:5001/test/tiny"), ["ci"]);
    }
}
