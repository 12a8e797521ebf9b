//! Serving certificates for prewarm's webhook: a self-signed CA and the
//! certificates it issues (ECDSA P-256), the rotation of a CA shared by
//! replicas, and a writer that updates a
//! certificate directory the way kubelet updates a mounted Secret.

pub mod atomic_dir;
pub mod authority;
pub mod pem;
pub mod rotation;

pub use atomic_dir::{private_dir, write_atomically};
pub use authority::{Authority, CertError, ServingCertificate};

/// File names in a certificate directory, as in a `kubernetes.io/tls` Secret.
pub const CA_CERT_FILE: &str = "ca.crt";
pub const TLS_CERT_FILE: &str = "tls.crt";
pub const TLS_KEY_FILE: &str = "tls.key";

use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error(transparent)]
    Generate(#[from] CertError),
    #[error("writing certificates into {dir}: {source}")]
    Write {
        dir: String,
        #[source]
        source: std::io::Error,
    },
}

/// Generates a CA and a serving certificate for `dns_names` and `ips`, and writes
/// `ca.crt`, `tls.crt` and `tls.key` into `dir` in one atomic swap. Returns the
/// CA certificate (PEM).
pub fn write_self_signed(
    dir: &Path,
    ca_name: &str,
    dns_names: &[String],
    ips: &[IpAddr],
    lifetime: Duration,
) -> Result<String, WriteError> {
    let authority = Authority::generate(ca_name, lifetime)?;
    let serving = authority.issue_serving(dns_names, ips, lifetime)?;
    let files: [(&str, &[u8], u32); 3] = [
        (CA_CERT_FILE, authority.cert_pem().as_bytes(), 0o644),
        (TLS_CERT_FILE, serving.cert_pem.as_bytes(), 0o644),
        (TLS_KEY_FILE, serving.key_pem.as_bytes(), 0o600),
    ];
    write_atomically(dir, &files).map_err(|source| WriteError::Write {
        dir: dir.display().to_string(),
        source,
    })?;
    Ok(authority.cert_pem().to_owned())
}
