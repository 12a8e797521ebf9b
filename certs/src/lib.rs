//! Serving certificates for prewarm's webhook: a self-signed CA and the
//! certificates it issues (ECDSA P-256), and a writer that updates a
//! certificate directory the way kubelet updates a mounted Secret.

pub mod atomic_dir;
pub mod authority;

pub use atomic_dir::write_atomically;
pub use authority::{Authority, CertError, ServingCertificate};

/// File names in a certificate directory, as in a `kubernetes.io/tls` Secret.
pub const CA_CERT_FILE: &str = "ca.crt";
pub const TLS_CERT_FILE: &str = "tls.crt";
pub const TLS_KEY_FILE: &str = "tls.key";
