//! With no certificate in `--cert-dir`, generate a self-signed CA and a serving
//! certificate there, so the webhook runs with no cluster and no arguments.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::time::Duration;

use prewarm_certs::{TLS_CERT_FILE, TLS_KEY_FILE, WriteError, write_self_signed};

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
}

/// Whether certificates were found or generated.
#[derive(Debug, PartialEq, Eq)]
pub enum Certificates {
    Found,
    Generated,
}

pub fn ensure(dir: &Path, extra_dns_names: &[String]) -> Result<Certificates, BootstrapError> {
    let has_cert = dir.join(TLS_CERT_FILE).exists();
    let has_key = dir.join(TLS_KEY_FILE).exists();
    let display = dir.display().to_string();
    match (has_cert, has_key) {
        (true, true) => return Ok(Certificates::Found),
        (true, false) => return Err(half(display, TLS_CERT_FILE, TLS_KEY_FILE)),
        (false, true) => return Err(half(display, TLS_KEY_FILE, TLS_CERT_FILE)),
        (false, false) => {}
    }
    let mut dns_names: Vec<String> = DEFAULT_DNS_NAMES.iter().map(|n| (*n).to_owned()).collect();
    dns_names.extend(extra_dns_names.iter().cloned());
    let ips = [IpAddr::V4(Ipv4Addr::LOCALHOST), IpAddr::V6(Ipv6Addr::LOCALHOST)];
    write_self_signed(dir, "prewarm-webhook-ca", &dns_names, &ips, LIFETIME)?;
    Ok(Certificates::Generated)
}

fn half(dir: String, present: &'static str, missing: &'static str) -> BootstrapError {
    BootstrapError::HalfPair { dir, present, missing }
}
