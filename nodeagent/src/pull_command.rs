//! `prewarm-nodeagent pull`: pulls the images of job manifests on this machine,
//! with the same policies as in a cluster, without any cluster.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use serde_json::Value;

use crate::credential_plugins::Plugins;
use crate::credentials::{CredentialError, Keyring};
use crate::jobs::JobError;

/// How long a credential provider plugin may take, as in kubelet.
const PLUGIN_TIMEOUT: Duration = Duration::from_secs(60);
use crate::cri;
use crate::puller::{self, Backoff, Outcome, Progress};
use crate::slots::FairSlots;

#[derive(Debug, Args)]
pub struct PullArgs {
    /// ImagePullJob or ImageListPullJob manifests (YAML or JSON, several documents per file).
    #[arg(short = 'f', long = "filename", required = true)]
    pub files: Vec<PathBuf>,
    /// The CRI socket; by default the usual containerd, CRI-O and cri-dockerd paths are tried.
    #[arg(long)]
    pub cri_socket: Option<PathBuf>,
    /// Secret manifests (kubernetes.io/dockerconfigjson or dockercfg) with registry credentials.
    #[arg(long = "secret")]
    pub secrets: Vec<PathBuf>,
    /// A kubelet CredentialProviderConfig: exec plugins that supply registry credentials.
    #[arg(long, requires = "credential_provider_bin_dir")]
    pub credential_provider_config: Option<PathBuf>,
    /// Where the credential provider plugins' executables are.
    #[arg(long)]
    pub credential_provider_bin_dir: Option<PathBuf>,
    /// Most images pulled at the same time.
    #[arg(long, default_value_t = 2)]
    pub max_concurrent_pulls: usize,
    /// First delay between attempts; it doubles up to --max-retry-backoff.
    #[arg(long, default_value = "1s", value_parser = prewarm_api::duration::parse)]
    pub retry_backoff: Duration,
    #[arg(long, default_value = "30s", value_parser = prewarm_api::duration::parse)]
    pub max_retry_backoff: Duration,
}

/// Why the command's input is unusable; each names the file.
#[derive(Debug, thiserror::Error)]
enum InputError {
    #[error("{path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{path}: {message}")]
    Yaml { path: String, message: String },
    #[error("{path}: {source}")]
    Secret { path: String, source: CredentialError },
    #[error("{path}: {source}")]
    Job { path: String, source: JobError },
}

fn documents(path: &PathBuf) -> Result<Vec<Value>, InputError> {
    let shown = || path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| InputError::Read { path: shown(), source })?;
    let documents: Vec<Value> = serde_saphyr::from_multiple(&text).map_err(|e| InputError::Yaml {
        path: shown(),
        message: e.to_string(),
    })?;
    Ok(documents.into_iter().filter(|d| d.is_object()).collect())
}

/// Exit 0 when every image is present or pulled, 1 when one failed, 2 for unusable input.
pub async fn run(args: PullArgs) -> ExitCode {
    let mut keyring = Keyring::default();
    let mut specs = Vec::new();
    let loaded = (|| {
        for path in &args.secrets {
            for secret in documents(path)? {
                keyring.add_secret(&secret).map_err(|source| InputError::Secret {
                    path: path.display().to_string(),
                    source,
                })?;
            }
        }
        for path in &args.files {
            for document in documents(path)? {
                specs.extend(
                    crate::jobs::pulls(&document, &keyring).map_err(|source| InputError::Job {
                        path: path.display().to_string(),
                        source,
                    })?,
                );
            }
        }
        Ok::<_, InputError>(())
    })();
    if let Err(message) = loaded {
        eprintln!("prewarm-nodeagent pull: {message}");
        return ExitCode::from(2);
    }
    if let (Some(config), Some(bin_dir)) = (&args.credential_provider_config, &args.credential_provider_bin_dir) {
        let plugins = match Plugins::load(config, bin_dir, PLUGIN_TIMEOUT) {
            Ok(plugins) => plugins,
            Err(e) => {
                eprintln!("prewarm-nodeagent pull: {e}");
                return ExitCode::from(2);
            }
        };
        // Secrets first, then the plugins, as kubelet orders them.
        for spec in &mut specs {
            spec.credentials
                .extend(plugins.provide(&spec.reference.full_name()).await);
        }
    }
    let (cri, version) = match cri::discover(args.cri_socket.as_deref()).await {
        Ok(found) => found,
        Err(message) => {
            eprintln!("prewarm-nodeagent pull: {message}");
            return ExitCode::from(2);
        }
    };
    println!(
        "runtime {} {} at {}",
        version.runtime_name,
        version.runtime_version,
        cri.socket().display()
    );
    let backoff = Backoff {
        initial: args.retry_backoff,
        max: args.max_retry_backoff,
    };
    let slots = Arc::new(FairSlots::new(args.max_concurrent_pulls));
    let mut tasks = Vec::new();
    for spec in specs {
        let (cri, slots) = (cri.clone(), slots.clone());
        tasks.push(tokio::spawn(async move {
            let image = spec.reference.to_string();
            println!("{image}: waiting");
            let outcome = puller::pull(&cri, &spec, backoff, &slots, "", |progress| match progress {
                Progress::Attempt { number, of } => println!("{image}: pulling (attempt {number} of {of})"),
                Progress::Retrying { after, error } => println!("{image}: {error}; retrying in {after:?}"),
                Progress::ImageFs { .. } => {}
            })
            .await;
            match &outcome {
                Outcome::Present { image_id } => println!("{image}: present ({image_id}), not pulled (IfNotPresent)"),
                Outcome::Pulled { image_ref, attempts } => println!("{image}: pulled {image_ref} (attempt {attempts})"),
                Outcome::Failed { error, attempts } => println!("{image}: failed after {attempts} attempts: {error}"),
                Outcome::Refused { reason } => println!("{image}: {reason}"),
            }
            !matches!(outcome, Outcome::Failed { .. } | Outcome::Refused { .. })
        }));
    }
    let mut all_ok = true;
    for task in tasks {
        all_ok &= task.await.unwrap_or(false);
    }
    if all_ok { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}
