//! A certificate authority that issues serving certificates.

use std::net::IpAddr;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SanType,
};
use time::OffsetDateTime;

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("generating a key pair: {0}")]
    Key(#[source] rcgen::Error),
    #[error("invalid subject alternative name {name:?}: {source}")]
    Name {
        name: String,
        #[source]
        source: rcgen::Error,
    },
    #[error("signing a certificate: {0}")]
    Sign(#[source] rcgen::Error),
    #[error("{what}: {message}")]
    Unreadable { what: &'static str, message: String },
}

/// A CA: its certificate (PEM) and the key that signs with it.
pub struct Authority {
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

/// A serving certificate and its private key, both PEM.
#[derive(Clone)]
pub struct ServingCertificate {
    pub cert_pem: String,
    pub key_pem: String,
}

// Private keys never reach logs through `{:?}`.
impl std::fmt::Debug for ServingCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServingCertificate")
            .field("cert_pem", &self.cert_pem)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authority")
            .field("cert_pem", &self.cert_pem)
            .finish_non_exhaustive()
    }
}

/// Certificates start a little in the past so that clocks a bit behind accept them.
const CLOCK_SKEW: time::Duration = time::Duration::minutes(5);

fn validity(params: &mut CertificateParams, now: OffsetDateTime, lifetime: Duration) {
    params.not_before = now - CLOCK_SKEW;
    params.not_after = now + lifetime;
}

impl Authority {
    /// A new self-signed CA valid for `lifetime`.
    pub fn generate(common_name: &str, lifetime: Duration) -> Result<Self, CertError> {
        Self::generate_at(common_name, OffsetDateTime::now_utc(), lifetime)
    }

    /// A new self-signed CA valid for `lifetime` from `now`.
    pub fn generate_at(common_name: &str, now: OffsetDateTime, lifetime: Duration) -> Result<Self, CertError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(CertError::Key)?;
        let mut params = CertificateParams::default();
        let mut name = DistinguishedName::new();
        name.push(DnType::CommonName, common_name);
        params.distinguished_name = name;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        validity(&mut params, now, lifetime);
        let cert = params.self_signed(&key).map_err(CertError::Sign)?;
        Ok(Self {
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// A CA kept earlier: its certificate and private key, both PEM.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, CertError> {
        let unreadable = |what: &'static str| {
            move |e: rcgen::Error| CertError::Unreadable {
                what,
                message: e.to_string(),
            }
        };
        let key = KeyPair::from_pem(key_pem).map_err(unreadable("the CA private key"))?;
        let cert = crate::pem::Certificate::parse(cert_pem).map_err(|message| CertError::Unreadable {
            what: "the CA certificate",
            message,
        })?;
        if cert.public_key != key.public_key_raw() {
            return Err(CertError::Unreadable {
                what: "the CA private key",
                message: "it does not belong to the CA certificate".to_owned(),
            });
        }
        let issuer = Issuer::from_ca_cert_pem(cert_pem, key).map_err(unreadable("the CA certificate"))?;
        Ok(Self {
            cert_pem: cert_pem.to_owned(),
            issuer,
        })
    }

    /// The CA certificate, for clients' trust stores and webhook `caBundle`s.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA's private key (PEM), to keep it in a Secret.
    pub fn key_pem(&self) -> String {
        self.issuer.key().serialize_pem()
    }

    /// A serving certificate for `dns_names` and `ips`, valid for `lifetime`.
    pub fn issue_serving(
        &self,
        dns_names: &[String],
        ips: &[IpAddr],
        lifetime: Duration,
    ) -> Result<ServingCertificate, CertError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(CertError::Key)?;
        let mut params = CertificateParams::default();
        let mut name = DistinguishedName::new();
        name.push(
            DnType::CommonName,
            dns_names.first().map_or("prewarm-webhook", String::as_str),
        );
        params.distinguished_name = name;
        for dns_name in dns_names {
            let san = dns_name.clone().try_into().map_err(|source| CertError::Name {
                name: dns_name.clone(),
                source,
            })?;
            params.subject_alt_names.push(SanType::DnsName(san));
        }
        params
            .subject_alt_names
            .extend(ips.iter().map(|ip| SanType::IpAddress(*ip)));
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        validity(&mut params, OffsetDateTime::now_utc(), lifetime);
        let cert = params.signed_by(&key, &self.issuer).map_err(CertError::Sign)?;
        Ok(ServingCertificate {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_keys_stay_out_of_debug_output() -> Result<(), CertError> {
        let authority = Authority::generate("test-ca", Duration::from_secs(3600))?;
        let serving = authority.issue_serving(&["localhost".to_owned()], &[], Duration::from_secs(3600))?;
        let shown = format!("{authority:?} {serving:?}");
        assert!(shown.contains("BEGIN CERTIFICATE"), "{shown}");
        assert!(
            !shown.contains("PRIVATE KEY") && !shown.contains(&serving.key_pem[40..80]),
            "{shown}"
        );
        Ok(())
    }
}
