//! One CA shared by every webhook replica, kept in a Secret, and its rotation
//! as a pure decision from (what the Secret holds, now, policy) to what it
//! should hold next.
//!
//! Rotation never breaks a caller: a new CA is first *staged* (added to the
//! trust bundle, not yet signing); only after the overlap window, once API
//! servers have the bundle with both CAs, is it *promoted* to sign serving
//! certificates. The old CA stays trusted until it expires.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::authority::{Authority, CertError};
use crate::pem::{Certificate, split_certificates};

/// Keys of the CA Secret.
pub const CA_CERT_KEY: &str = "ca.crt";
pub const CA_KEY_KEY: &str = "ca.key";
pub const NEXT_CERT_KEY: &str = "next-ca.crt";
pub const NEXT_KEY_KEY: &str = "next-ca.key";
pub const NEXT_PROMOTE_AT_KEY: &str = "next-ca-promote-at";
pub const BUNDLE_KEY: &str = "ca-bundle.crt";

/// A CA as kept: certificate and private key, PEM.
#[derive(Clone, PartialEq, Eq)]
pub struct KeptCa {
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for KeptCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeptCa")
            .field("cert_pem", &self.cert_pem)
            .finish_non_exhaustive()
    }
}

/// A CA waiting for the overlap window to pass before it signs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Staged {
    pub ca: KeptCa,
    /// Seconds since the Unix epoch.
    pub promote_at: i64,
}

/// What the CA Secret holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaSet {
    pub signing: KeptCa,
    pub next: Option<Staged>,
    /// Every CA callers should trust, PEM, oldest first.
    pub trusted: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum RotationError {
    #[error("the CA Secret has no {key:?} (it holds {present}); delete the Secret to have a new CA made")]
    Missing { key: &'static str, present: String },
    #[error("the CA Secret's {key:?} is unreadable: {message}; delete the Secret to have a new CA made")]
    Unreadable { key: &'static str, message: String },
    #[error(transparent)]
    Cert(#[from] CertError),
}

/// When CAs are made, renewed and promoted.
#[derive(Clone, Debug)]
pub struct Policy {
    pub common_name: String,
    pub lifetime: Duration,
    /// A new CA is staged this long before the signing one expires.
    pub renew_before: Duration,
    /// How long a staged CA is trusted before it signs.
    pub overlap: Duration,
}

impl Policy {
    /// Checks that the windows nest: a staged CA is promoted before the
    /// signing one expires, and a new CA does not need renewing at once.
    pub fn check(&self) -> Result<(), String> {
        if self.renew_before >= self.lifetime {
            return Err(format!(
                "--ca-renew-before ({:?}) must be shorter than --ca-lifetime ({:?})",
                self.renew_before, self.lifetime
            ));
        }
        if self.overlap >= self.renew_before {
            return Err(format!(
                "--ca-overlap ({:?}) must be shorter than --ca-renew-before ({:?}), so the new CA signs before the old one expires",
                self.overlap, self.renew_before
            ));
        }
        Ok(())
    }
}

/// Why the Secret changed, for logs and metrics (a closed set).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    Created,
    Staged,
    Promoted,
    /// The signing CA had expired: replaced at once (callers fail until they have the new bundle).
    Replaced,
    /// Expired CAs left the bundle, or missing ones were put back.
    BundleRepaired,
}

impl Change {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Staged => "staged",
            Self::Promoted => "promoted",
            Self::Replaced => "replaced",
            Self::BundleRepaired => "bundle_repaired",
        }
    }
}

impl CaSet {
    /// Reads the Secret's data.
    pub fn from_data(data: &BTreeMap<String, Vec<u8>>) -> Result<Self, RotationError> {
        let text = |key: &'static str| -> Result<Option<String>, RotationError> {
            data.get(key)
                .map(|bytes| {
                    String::from_utf8(bytes.clone()).map_err(|_| RotationError::Unreadable {
                        key,
                        message: "not UTF-8 text".to_owned(),
                    })
                })
                .transpose()
        };
        let required = |key: &'static str| -> Result<String, RotationError> {
            text(key)?.ok_or_else(|| RotationError::Missing {
                key,
                present: data.keys().cloned().collect::<Vec<_>>().join(", "),
            })
        };
        let signing = KeptCa {
            cert_pem: required(CA_CERT_KEY)?,
            key_pem: required(CA_KEY_KEY)?,
        };
        let next = match text(NEXT_CERT_KEY)? {
            None => None,
            Some(cert_pem) => {
                let promote_at = required(NEXT_PROMOTE_AT_KEY)?;
                let promote_at = promote_at.trim().parse().map_err(|_| RotationError::Unreadable {
                    key: NEXT_PROMOTE_AT_KEY,
                    message: format!("{promote_at:?} is not seconds since the Unix epoch"),
                })?;
                Some(Staged {
                    ca: KeptCa {
                        cert_pem,
                        key_pem: required(NEXT_KEY_KEY)?,
                    },
                    promote_at,
                })
            }
        };
        let trusted = split_certificates(&text(BUNDLE_KEY)?.unwrap_or_default())
            .map_err(|message| RotationError::Unreadable {
                key: BUNDLE_KEY,
                message,
            })?
            .into_iter()
            .map(|(pem, _)| pem)
            .collect();
        let set = Self { signing, next, trusted };
        set.signing_authority()?;
        if let Some(next) = &set.next {
            Authority::from_pem(&next.ca.cert_pem, &next.ca.key_pem)?;
        }
        Ok(set)
    }

    /// The Secret's data for this set.
    pub fn to_data(&self) -> BTreeMap<String, Vec<u8>> {
        let mut data = BTreeMap::from([
            (CA_CERT_KEY.to_owned(), self.signing.cert_pem.clone().into_bytes()),
            (CA_KEY_KEY.to_owned(), self.signing.key_pem.clone().into_bytes()),
            (BUNDLE_KEY.to_owned(), self.bundle().into_bytes()),
        ]);
        if let Some(next) = &self.next {
            data.insert(NEXT_CERT_KEY.to_owned(), next.ca.cert_pem.clone().into_bytes());
            data.insert(NEXT_KEY_KEY.to_owned(), next.ca.key_pem.clone().into_bytes());
            data.insert(NEXT_PROMOTE_AT_KEY.to_owned(), next.promote_at.to_string().into_bytes());
        }
        data
    }

    /// The trust bundle: every trusted CA, PEM, for webhook `caBundle`s.
    pub fn bundle(&self) -> String {
        self.trusted.concat()
    }

    pub fn signing_authority(&self) -> Result<Authority, CertError> {
        Authority::from_pem(&self.signing.cert_pem, &self.signing.key_pem)
    }
}

fn generate(policy: &Policy, now: i64) -> Result<KeptCa, CertError> {
    let now = time::OffsetDateTime::from_unix_timestamp(now).map_err(|e| CertError::Unreadable {
        what: "the time",
        message: e.to_string(),
    })?;
    let authority = Authority::generate_at(&policy.common_name, now, policy.lifetime)?;
    Ok(KeptCa {
        cert_pem: authority.cert_pem().to_owned(),
        key_pem: authority.key_pem(),
    })
}

fn not_after(pem: &str) -> i64 {
    // A set read by `from_data` has readable certificates; anything else counts as expired.
    Certificate::parse(pem).map_or(i64::MIN, |c| c.not_after)
}

/// What the Secret should hold next, and why; `None` when it is right as it is.
pub fn plan(current: Option<&CaSet>, now: i64, policy: &Policy) -> Result<Option<(CaSet, Change)>, CertError> {
    let Some(current) = current else {
        let ca = generate(policy, now)?;
        let trusted = split_pem(&ca.cert_pem);
        return Ok(Some((
            CaSet {
                signing: ca,
                next: None,
                trusted,
            },
            Change::Created,
        )));
    };
    let mut set = current.clone();
    let mut change = None;
    let renew_before = i64::try_from(policy.renew_before.as_secs()).unwrap_or(i64::MAX);
    let overlap = i64::try_from(policy.overlap.as_secs()).unwrap_or(i64::MAX);
    if not_after(&set.signing.cert_pem) <= now {
        set.signing = match set.next.take() {
            Some(staged) if not_after(&staged.ca.cert_pem) > now => staged.ca,
            _ => generate(policy, now)?,
        };
        change = Some(Change::Replaced);
    } else if let Some(staged) = set.next.take_if(|staged| staged.promote_at <= now) {
        set.signing = staged.ca;
        change = Some(Change::Promoted);
    } else if set.next.is_none() && not_after(&set.signing.cert_pem).saturating_sub(now) < renew_before {
        set.next = Some(Staged {
            ca: generate(policy, now)?,
            promote_at: now.saturating_add(overlap),
        });
        change = Some(Change::Staged);
    }
    let required: Vec<String> = std::iter::once(&set.signing)
        .chain(set.next.as_ref().map(|staged| &staged.ca))
        .flat_map(|ca| split_pem(&ca.cert_pem))
        .collect();
    let mut trusted: Vec<String> = Vec::with_capacity(set.trusted.len() + required.len());
    for pem in set.trusted.iter().chain(&required) {
        if not_after(pem) > now && !trusted.contains(pem) {
            trusted.push(pem.clone());
        }
    }
    set.trusted = trusted;
    if set == *current {
        return Ok(None);
    }
    Ok(Some((set, change.unwrap_or(Change::BundleRepaired))))
}

/// The normalised certificate blocks of `pem` (one, for a CA certificate).
fn split_pem(pem: &str) -> Vec<String> {
    split_certificates(pem)
        .map(|blocks| blocks.into_iter().map(|(text, _)| text).collect())
        .unwrap_or_default()
}
