//! With no certificate in `--cert-dir`, generate a self-signed CA and a serving
//! certificate there (or in this process's own subdirectory of it, when root
//! owns it, see [`prewarm_certs::private_dir`]), so the webhook runs with no
//! cluster and no arguments.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use prewarm_certs::{TLS_CERT_FILE, TLS_KEY_FILE, WriteError, private_dir, write_self_signed};

const LIFETIME: Duration = Duration::from_secs(365 * 24 * 3600);

/// The names of a generated certificate: this machine, and the Service the
/// shipped webhook configurations name, so a local API server (such as
/// `prewarm-testapi`) can call it under that name.
pub const DEFAULT_DNS_NAMES: [&str; 3] = [
    "localhost",
    "prewarm-webhook.prewarm-system.svc",
    "prewarm-webhook.prewarm-system.svc.cluster.local",
];

#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error("{dir} has {present} but not {missing}: give both files, or neither to have them generated")]
    HalfPair {
        dir: String,
        present: &'static str,
        missing: &'static str,
    },
    #[error(transparent)]
    Write(#[from] WriteError),
    #[error("preparing {dir} for a generated certificate: {source}")]
    Directory {
        dir: String,
        #[source]
        source: std::io::Error,
    },
}

/// Whether certificates were found or generated.
#[derive(Debug, PartialEq, Eq)]
pub enum Certificates {
    Found,
    Generated,
}

/// Finds the serving pair in `dir`, or in this process's own directory for it,
/// or generates one there; returns the directory that holds the pair.
pub fn ensure(dir: &Path, extra_dns_names: &[String]) -> Result<(Certificates, PathBuf), BootstrapError> {
    if has_pair(dir)? {
        return Ok((Certificates::Found, dir.to_path_buf()));
    }
    let own = private_dir(dir).map_err(|source| BootstrapError::Directory {
        dir: dir.display().to_string(),
        source,
    })?;
    if own != dir && has_pair(&own)? {
        return Ok((Certificates::Found, own));
    }
    let mut dns_names: Vec<String> = DEFAULT_DNS_NAMES.iter().map(|n| (*n).to_owned()).collect();
    dns_names.extend(extra_dns_names.iter().cloned());
    let ips = [IpAddr::V4(Ipv4Addr::LOCALHOST), IpAddr::V6(Ipv6Addr::LOCALHOST)];
    write_self_signed(&own, "prewarm-webhook-ca", &dns_names, &ips, LIFETIME)?;
    Ok((Certificates::Generated, own))
}

/// Whether `dir` holds both files of a serving pair (one without the other is an error).
fn has_pair(dir: &Path) -> Result<bool, BootstrapError> {
    let display = || dir.display().to_string();
    match (dir.join(TLS_CERT_FILE).exists(), dir.join(TLS_KEY_FILE).exists()) {
        (true, true) => Ok(true),
        (true, false) => Err(half(display(), TLS_CERT_FILE, TLS_KEY_FILE)),
        (false, true) => Err(half(display(), TLS_KEY_FILE, TLS_CERT_FILE)),
        (false, false) => Ok(false),
    }
}

fn half(dir: String, present: &'static str, missing: &'static str) -> BootstrapError {
    BootstrapError::HalfPair { dir, present, missing }
}
