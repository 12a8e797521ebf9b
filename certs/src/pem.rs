//! What prewarm reads back from the PEM certificates it keeps.

/// The facts of one certificate that rotation decisions need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Certificate {
    /// Expiry, in seconds since the Unix epoch.
    pub not_after: i64,
    /// The subject public key (the bit string, as `KeyPair::public_key_raw` gives it).
    pub public_key: Vec<u8>,
}

impl Certificate {
    /// The first certificate of `pem`.
    pub fn parse(pem: &str) -> Result<Self, String> {
        let block = pem::parse(pem).map_err(|e| format!("not PEM: {e}"))?;
        Self::from_block(&block)
    }

    fn from_block(block: &pem::Pem) -> Result<Self, String> {
        if block.tag() != "CERTIFICATE" {
            return Err(format!("expected a CERTIFICATE block, found {:?}", block.tag()));
        }
        let (_, cert) = x509_parser::parse_x509_certificate(block.contents())
            .map_err(|e| format!("not an X.509 certificate: {e}"))?;
        Ok(Self {
            not_after: cert.validity().not_after.timestamp(),
            public_key: cert.public_key().subject_public_key.data.to_vec(),
        })
    }
}

/// Splits concatenated PEM certificates into their blocks (re-encoded the same
/// way each time, so equal certificates compare equal as text), each with its
/// facts. Anything unreadable is an error naming its place.
pub fn split_certificates(bundle: &str) -> Result<Vec<(String, Certificate)>, String> {
    let blocks = pem::parse_many(bundle).map_err(|e| format!("not PEM: {e}"))?;
    // parse_many skips what it cannot frame, such as a block without its END line.
    let begun = bundle.matches("-----BEGIN ").count();
    if begun != blocks.len() {
        return Err(format!(
            "{begun} PEM blocks begin but only {} are complete",
            blocks.len()
        ));
    }
    blocks
        .iter()
        .enumerate()
        .map(|(index, block)| {
            let cert = Certificate::from_block(block).map_err(|e| format!("certificate {index}: {e}"))?;
            Ok((normalise(block), cert))
        })
        .collect()
}

/// One certificate's PEM text in the form [`split_certificates`] returns.
fn normalise(block: &pem::Pem) -> String {
    pem::encode_config(block, pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF))
}
