//! The serving certificate: loaded from a directory, swapped without restart
//! when the files change (a directory watch, because kubelet replaces mounted
//! Secrets by renaming a `..data` symlink, plus polling as a fallback), and
//! offered to clients through a resolver so that new handshakes get the new
//! certificate at once while a broken new pair keeps the old one serving.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use prewarm_certs::{TLS_CERT_FILE, TLS_KEY_FILE};
use rustls::crypto::ring::sign::any_supported_type;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ServerConfig, version};
use tokio::sync::mpsc;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} holds no PEM certificate")]
    NoCertificate { path: PathBuf },
    #[error("{path}: {message}")]
    BadPem { path: PathBuf, message: String },
    #[error("{path}: unsupported private key: {source}")]
    Key {
        path: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error("{cert} does not belong to the key in {key}: {source}")]
    Mismatch {
        cert: PathBuf,
        key: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error("{path}: unreadable certificate: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("building the TLS configuration: {0}")]
    Config(#[source] rustls::Error),
}

/// A loaded pair and what we report about it.
#[derive(Debug)]
pub struct Loaded {
    pub key: Arc<CertifiedKey>,
    /// Expiry of the leaf certificate, in seconds since the Unix epoch.
    pub not_after: i64,
    /// The DNS names and IP addresses the leaf certificate is valid for.
    pub names: Vec<String>,
}

/// Reads `tls.crt` (leaf first, then any chain) and `tls.key` from `dir`.
pub fn load(dir: &Path) -> Result<Loaded, TlsError> {
    let cert_path = dir.join(TLS_CERT_FILE);
    let key_path = dir.join(TLS_KEY_FILE);
    let read = |path: &Path| {
        std::fs::read(path).map_err(|source| TlsError::Read {
            path: path.to_owned(),
            source,
        })
    };
    let cert_pem = read(&cert_path)?;
    let key_pem = read(&key_path)?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::BadPem {
            path: cert_path.clone(),
            message: e.to_string(),
        })?;
    let Some(leaf) = chain.first() else {
        return Err(TlsError::NoCertificate { path: cert_path });
    };
    let (not_after, names) = x509_parser::parse_x509_certificate(leaf)
        .map(|(_, cert)| (cert.validity().not_after.timestamp(), subject_alt_names(&cert)))
        .map_err(|e| TlsError::Parse {
            path: cert_path.clone(),
            message: e.to_string(),
        })?;
    let private_key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| TlsError::BadPem {
        path: key_path.clone(),
        message: e.to_string(),
    })?;
    let signing_key = any_supported_type(&private_key).map_err(|source| TlsError::Key {
        path: key_path.clone(),
        source,
    })?;
    let key = CertifiedKey::new(chain, signing_key);
    key.keys_match().map_err(|source| TlsError::Mismatch {
        cert: cert_path,
        key: key_path,
        source,
    })?;
    Ok(Loaded {
        key: Arc::new(key),
        not_after,
        names,
    })
}

fn subject_alt_names(cert: &x509_parser::certificate::X509Certificate<'_>) -> Vec<String> {
    use x509_parser::extensions::GeneralName;
    let Ok(Some(extension)) = cert.subject_alternative_name() else {
        return Vec::new();
    };
    extension
        .value
        .general_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::DNSName(dns) => Some((*dns).to_owned()),
            GeneralName::IPAddress(bytes) => match bytes.len() {
                4 => <[u8; 4]>::try_from(*bytes)
                    .ok()
                    .map(|b| std::net::IpAddr::from(b).to_string()),
                16 => <[u8; 16]>::try_from(*bytes)
                    .ok()
                    .map(|b| std::net::IpAddr::from(b).to_string()),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

/// The certificate currently served; swapped as a whole, never edited.
#[derive(Debug)]
pub struct CertStore {
    current: RwLock<Arc<CertifiedKey>>,
    not_after: std::sync::atomic::AtomicI64,
}

impl CertStore {
    pub fn new(loaded: Loaded) -> Self {
        Self {
            current: RwLock::new(loaded.key),
            not_after: std::sync::atomic::AtomicI64::new(loaded.not_after),
        }
    }

    fn current(&self) -> Arc<CertifiedKey> {
        match self.current.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Replaces the served pair; returns whether it differed from the current one.
    pub fn replace(&self, loaded: Loaded) -> bool {
        let mut guard = match self.current.write() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        if guard.cert == loaded.key.cert {
            return false;
        }
        *guard = loaded.key;
        self.not_after
            .store(loaded.not_after, std::sync::atomic::Ordering::Relaxed);
        true
    }

    pub fn not_after(&self) -> i64 {
        self.not_after.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// TLS 1.2 and 1.3 only, ALPN h2 and http/1.1, certificates from `store`.
pub fn server_config(store: Arc<CertStore>) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&version::TLS13, &version::TLS12])
        .map_err(TlsError::Config)?
        .with_no_client_auth()
        .with_cert_resolver(store);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// What a reload attempt did, for logs and metrics.
#[derive(Debug)]
pub enum Reload {
    Unchanged,
    Replaced { not_after: i64 },
    Failed(TlsError),
}

/// Reloads `dir` into `store` whenever the directory changes, and every
/// `poll_interval` in case no event arrives (some volume types send none).
/// Runs until its task is dropped.
pub async fn watch(dir: PathBuf, store: Arc<CertStore>, poll_interval: Duration, on_reload: impl Fn(Reload) + Send) {
    let (events_tx, mut events_rx) = mpsc::channel::<()>(1);
    let watcher = directory_watcher(&dir, events_tx);
    if let Err(e) = &watcher {
        tracing::warn!(dir = %dir.display(), error = %e, "cannot watch the certificate directory; polling only");
    }
    let mut poll = tokio::time::interval(poll_interval);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    poll.tick().await;
    loop {
        tokio::select! {
            _ = poll.tick() => {}
            Some(()) = events_rx.recv() => {
                // Let a burst of events (a kubelet swap is several) settle first.
                tokio::time::sleep(Duration::from_millis(50)).await;
                while events_rx.try_recv().is_ok() {}
            }
        }
        let result = match load(&dir) {
            Ok(loaded) => {
                let not_after = loaded.not_after;
                if store.replace(loaded) {
                    Reload::Replaced { not_after }
                } else {
                    Reload::Unchanged
                }
            }
            Err(e) => Reload::Failed(e),
        };
        on_reload(result);
    }
}

fn directory_watcher(dir: &Path, events: mpsc::Sender<()>) -> notify::Result<notify::RecommendedWatcher> {
    use notify::Watcher;
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if event.is_ok() {
            // A full channel already holds a pending reload.
            let _ = events.try_send(());
        }
    })?;
    watcher.watch(dir, notify::RecursiveMode::NonRecursive)?;
    Ok(watcher)
}
