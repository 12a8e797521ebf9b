//! The shared CA's life: created once, staged before expiry, promoted after the
//! overlap, the old one trusted until it expires, and a damaged Secret refused.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prewarm_certs::pem::Certificate;
use prewarm_certs::rotation::{self, BUNDLE_KEY, CA_KEY_KEY, CaSet, Change, Policy, RotationError};

type Result<T = ()> = std::result::Result<T, Box<dyn std::error::Error>>;

fn policy() -> Policy {
    Policy {
        common_name: "prewarm-webhook-ca".to_owned(),
        lifetime: Duration::from_secs(3600),
        renew_before: Duration::from_secs(600),
        overlap: Duration::from_secs(60),
    }
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

fn expiry(pem: &str) -> Result<i64> {
    Ok(Certificate::parse(pem)?.not_after)
}

fn step(set: &CaSet, at: i64) -> Result<Option<(CaSet, Change)>> {
    Ok(rotation::plan(Some(set), at, &policy())?)
}

fn created() -> Result<CaSet> {
    match rotation::plan(None, now(), &policy())? {
        Some((set, Change::Created)) => Ok(set),
        other => Err(format!("expected a created CA set, got {other:?}").into()),
    }
}

#[test]
fn a_new_set_is_stable_and_survives_the_secret_round_trip() -> Result {
    let set = created()?;
    assert_eq!(set.trusted.len(), 1);
    assert!(set.next.is_none());
    let read = CaSet::from_data(&set.to_data())?;
    assert_eq!(read, set);
    assert!(step(&read, now())?.is_none(), "nothing to do for a fresh CA");
    // The bundle holds the signing CA, which verifies what it issues.
    let authority = read.signing_authority()?;
    let serving = authority.issue_serving(&["svc.ns.svc".to_owned()], &[], Duration::from_secs(60))?;
    assert!(serving.cert_pem.contains("BEGIN CERTIFICATE"));
    assert_eq!(read.bundle(), read.trusted[0]);
    Ok(())
}

#[test]
fn rotation_stages_then_promotes_and_keeps_the_old_ca_trusted_until_it_expires() -> Result {
    let first = created()?;
    let old_expiry = expiry(&first.signing.cert_pem)?;

    // Inside the renewal window: a new CA is staged, trusted, not yet signing.
    let renewal = old_expiry - 599;
    let Some((staged, Change::Staged)) = step(&first, renewal)? else {
        return Err("expected a staged CA".into());
    };
    assert_eq!(staged.signing, first.signing, "the old CA still signs");
    let next = staged.next.clone().ok_or("no staged CA")?;
    assert_eq!(next.promote_at, renewal + 60);
    assert_eq!(staged.trusted.len(), 2, "both CAs are trusted during the overlap");
    // A second replica deciding at the same moment agrees there is nothing more to do.
    assert!(step(&staged, renewal)?.is_none());
    assert!(step(&staged, next.promote_at - 1)?.is_none());

    // After the overlap the staged CA signs; the old one is still trusted.
    let Some((promoted, Change::Promoted)) = step(&staged, next.promote_at)? else {
        return Err("expected a promotion".into());
    };
    assert_eq!(promoted.signing, next.ca);
    assert!(promoted.next.is_none());
    assert_eq!(promoted.trusted, staged.trusted);
    assert!(step(&promoted, next.promote_at + 1)?.is_none());

    // Once the old CA expires it leaves the bundle.
    let Some((pruned, Change::BundleRepaired)) = step(&promoted, old_expiry + 1)? else {
        return Err("expected the expired CA to leave the bundle".into());
    };
    assert_eq!(pruned.trusted.len(), 1);
    assert!(pruned.bundle().contains(next.ca.cert_pem.trim()));
    Ok(())
}

#[test]
fn an_expired_signing_ca_is_replaced_at_once_and_a_missing_bundle_entry_restored() -> Result {
    let set = created()?;
    let Some((replaced, Change::Replaced)) = step(&set, expiry(&set.signing.cert_pem)? + 1)? else {
        return Err("expected a replacement".into());
    };
    assert_ne!(replaced.signing, set.signing);
    assert_eq!(replaced.trusted.len(), 1, "the expired CA is not trusted");

    let mut damaged = set.clone();
    damaged.trusted.clear();
    let Some((repaired, Change::BundleRepaired)) = step(&damaged, now())? else {
        return Err("expected the bundle to be repaired".into());
    };
    assert_eq!(repaired.trusted, set.trusted);
    Ok(())
}

#[test]
fn a_damaged_secret_is_refused_with_the_key_named() -> Result {
    let set = created()?;
    let mut data = set.to_data();
    data.remove(CA_KEY_KEY);
    let error = CaSet::from_data(&data)
        .err()
        .ok_or("a Secret without a key was accepted")?;
    assert!(matches!(error, RotationError::Missing { key: "ca.key", .. }), "{error}");
    assert!(error.to_string().contains("ca-bundle.crt, ca.crt"), "{error}");

    let mut data = set.to_data();
    data.insert(
        BUNDLE_KEY.to_owned(),
        b"-----BEGIN CERTIFICATE-----\nnot base64\n".to_vec(),
    );
    let error = CaSet::from_data(&data).err().ok_or("a broken bundle was accepted")?;
    assert!(error.to_string().contains("\"ca-bundle.crt\" is unreadable"), "{error}");

    // A key that belongs to another CA.
    let other = created()?;
    let mut data = set.to_data();
    data.insert(CA_KEY_KEY.to_owned(), other.signing.key_pem.clone().into_bytes());
    let error = CaSet::from_data(&data).err().ok_or("a foreign key was accepted")?;
    assert!(error.to_string().contains("does not belong"), "{error}");

    assert!(CaSet::from_data(&BTreeMap::new()).is_err());
    Ok(())
}

#[test]
fn windows_must_nest() {
    let mut policy = policy();
    assert!(policy.check().is_ok());
    policy.overlap = policy.renew_before;
    assert!(policy.check().is_err_and(|e| e.contains("--ca-overlap")));
    policy.renew_before = policy.lifetime;
    assert!(policy.check().is_err_and(|e| e.contains("--ca-renew-before")));
}
