//! Container image references: the docker/OCI grammar with docker.io normalisation.
//!
//! Grammar (distribution/reference, which kubelet, containerd and OpenKruise use):
//!
//! ```text
//! reference  := name [ ":" tag ] [ "@" digest ]
//! name       := [ domain "/" ] path-component [ "/" path-component ]*
//! domain     := host [ ":" port ]
//! path-comp  := [a-z0-9]+ ( ( "." | "_" | "__" | "-"+ ) [a-z0-9]+ )*
//! tag        := [A-Za-z0-9_] [A-Za-z0-9_.-]{0,127}
//! digest     := algorithm ":" hex
//! ```
//!
//! The first component is a domain only when it contains `.` or `:` or is
//! `localhost`; otherwise the image lives on `docker.io`, and single-component
//! names get the `library/` prefix. Unlike the Go parser, every error says which
//! part is wrong.

use std::fmt;

pub const DEFAULT_DOMAIN: &str = "docker.io";
const LEGACY_DEFAULT_DOMAIN: &str = "index.docker.io";
const OFFICIAL_REPOSITORY_PREFIX: &str = "library/";
const DEFAULT_TAG: &str = "latest";
const MAX_NAME_LENGTH: usize = 255;
const MAX_TAG_LENGTH: usize = 128;

/// A parsed, normalised image reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ImageReference {
    domain: String,
    path: String,
    tag: Option<String>,
    digest: Option<String>,
}

/// Why a string is not an image reference.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceError {
    #[error("must not be empty")]
    Empty,
    #[error(
        "a bare 64-character hexadecimal string is an image ID, not a reference; give a repository name such as \"nginx@sha256:<hex>\""
    )]
    BareImageId,
    #[error("repository name must be lowercase (found {0:?})")]
    Uppercase(String),
    #[error("repository name must not be longer than {MAX_NAME_LENGTH} characters (found {0})")]
    NameTooLong(usize),
    #[error("invalid registry host {0:?}: expected a host name, IPv4 or [IPv6] address, with an optional numeric port")]
    InvalidDomain(String),
    #[error("repository path must not be empty")]
    EmptyPath,
    #[error(
        "invalid repository path component {0:?}: use lowercase letters and digits, separated by '.', '_', '__' or '-'"
    )]
    InvalidPathComponent(String),
    #[error("must be a repository name without tag or digest (found {0:?}); put the tag in tags[].tag")]
    TagOrDigestInName(String),
    #[error("tag must not be empty after ':'")]
    EmptyTag,
    #[error(
        "invalid tag {0:?}: up to 128 characters of letters, digits, '_', '.' and '-', not starting with '.' or '-'"
    )]
    InvalidTag(String),
    #[error("digest must not be empty after '@'")]
    EmptyDigest,
    #[error(
        "invalid digest {0:?}: expected <algorithm>:<hex>, such as \"sha256:\" followed by 64 lowercase hexadecimal characters"
    )]
    InvalidDigestFormat(String),
    #[error("unsupported digest algorithm {0:?}: use sha256, sha384 or sha512")]
    UnsupportedDigestAlgorithm(String),
    #[error("invalid {algorithm} digest length: expected {expected} hexadecimal characters, found {found}")]
    InvalidDigestLength {
        algorithm: String,
        expected: usize,
        found: usize,
    },
    #[error("invalid digest {0:?}: the hexadecimal part must be lowercase 0-9a-f")]
    InvalidDigestHex(String),
}

impl ImageReference {
    /// Parses a reference the way `ParseNormalizedNamed` does, with precise errors.
    pub fn parse(input: &str) -> Result<Self, ReferenceError> {
        if input.is_empty() {
            return Err(ReferenceError::Empty);
        }
        if is_bare_image_id(input) {
            return Err(ReferenceError::BareImageId);
        }
        let (rest, digest) = match input.split_once('@') {
            Some((_, "")) => return Err(ReferenceError::EmptyDigest),
            Some((rest, digest)) => (rest, Some(parse_digest(digest)?)),
            None => (input, None),
        };
        // A ':' after the last '/' separates the tag; earlier ones belong to a port.
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].find(':') {
            Some(i) => {
                let tag = &rest[last_slash + i + 1..];
                (&rest[..last_slash + i], Some(parse_tag(tag)?))
            }
            None => (rest, None),
        };
        let (domain, path) = split_domain(name);
        validate_domain(domain)?;
        validate_path(path)?;
        let domain = match domain {
            LEGACY_DEFAULT_DOMAIN => DEFAULT_DOMAIN,
            other => other,
        };
        let path = match domain {
            DEFAULT_DOMAIN if !path.contains('/') => format!("{OFFICIAL_REPOSITORY_PREFIX}{path}"),
            _ => path.to_owned(),
        };
        let full_length = domain.len() + 1 + path.len();
        if full_length > MAX_NAME_LENGTH {
            return Err(ReferenceError::NameTooLong(full_length));
        }
        let domain = domain.to_owned();
        Ok(Self {
            domain,
            path,
            tag,
            digest,
        })
    }

    /// The registry host, with its port if any (`docker.io`, `myregistry:5000`).
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// The repository path inside the registry (`library/nginx`).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The tag as written, if any.
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// The digest as written, if any.
    pub fn digest(&self) -> Option<&str> {
        self.digest.as_deref()
    }

    /// `docker.io/library/nginx`: the name a runtime resolves.
    pub fn full_name(&self) -> String {
        format!("{}/{}", self.domain, self.path)
    }

    /// `nginx`, `team/app`, `myregistry:5000/team/app`: the short name users write,
    /// and the key of NodeImage `spec.images`.
    pub fn familiar_name(&self) -> String {
        if self.domain != DEFAULT_DOMAIN {
            return self.full_name();
        }
        match self.path.strip_prefix(OFFICIAL_REPOSITORY_PREFIX) {
            Some(short) if !short.contains('/') => short.to_owned(),
            _ => self.path.clone(),
        }
    }

    /// The NodeImage tag: the digest when there is one (it wins over a tag),
    /// otherwise the tag, `latest` when none is written.
    pub fn tag_or_digest(&self) -> &str {
        self.digest.as_deref().or(self.tag.as_deref()).unwrap_or(DEFAULT_TAG)
    }

    /// Whether the image is addressed by content rather than by a movable tag.
    pub fn is_digest_pinned(&self) -> bool {
        self.digest.is_some()
    }

    /// Whether the reference resolves to the `latest` tag (written or implied).
    pub fn is_latest(&self) -> bool {
        self.digest.is_none() && self.tag.as_deref().unwrap_or(DEFAULT_TAG) == DEFAULT_TAG
    }

    /// `docker.io/library/nginx:latest`, `…@sha256:…`: one spelling per image,
    /// so that `nginx` and `docker.io/library/nginx:latest` compare equal. It is
    /// also what to hand the runtime: pinned images are pulled by digest.
    pub fn canonical(&self) -> String {
        match &self.digest {
            Some(digest) => format!("{}@{digest}", self.full_name()),
            None => format!("{}:{}", self.full_name(), self.tag_or_digest()),
        }
    }
}

impl fmt::Display for ImageReference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.full_name())?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for ImageReference {
    type Err = ReferenceError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// Checks a NodeImage `spec.images` key: a repository name without tag or digest.
pub fn parse_repository_name(name: &str) -> Result<ImageReference, ReferenceError> {
    let reference = ImageReference::parse(name)?;
    if reference.tag().is_some() || reference.digest().is_some() {
        return Err(ReferenceError::TagOrDigestInName(name.to_owned()));
    }
    Ok(reference)
}

/// Checks a NodeImage tag entry: a tag, or a digest when the image is pinned.
pub fn validate_tag_or_digest(value: &str) -> Result<(), ReferenceError> {
    if value.is_empty() {
        return Err(ReferenceError::EmptyTag);
    }
    if value.contains(':') {
        parse_digest(value).map(drop)
    } else {
        parse_tag(value).map(drop)
    }
}

fn is_bare_image_id(input: &str) -> bool {
    input.len() == 64 && input.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn split_domain(name: &str) -> (&str, &str) {
    match name.split_once('/') {
        Some((first, rest)) if first.contains(['.', ':']) || first == "localhost" => (first, rest),
        _ => (DEFAULT_DOMAIN, name),
    }
}

fn validate_domain(domain: &str) -> Result<(), ReferenceError> {
    let invalid = || ReferenceError::InvalidDomain(domain.to_owned());
    let (host, port) = if let Some(bracketed) = domain.strip_prefix('[') {
        let (ipv6, after) = bracketed.split_once(']').ok_or_else(invalid)?;
        if ipv6.is_empty() || !ipv6.bytes().all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.') {
            return Err(invalid());
        }
        match after {
            "" => (None, None),
            port => (None, Some(port.strip_prefix(':').ok_or_else(invalid)?)),
        }
    } else {
        match domain.split_once(':') {
            Some((host, port)) => (Some(host), Some(port)),
            None => (Some(domain), None),
        }
    };
    if let Some(port) = port
        && (port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(invalid());
    }
    if let Some(host) = host {
        let component_ok = |c: &str| {
            !c.is_empty()
                && c.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !c.starts_with('-')
                && !c.ends_with('-')
        };
        if !host.split('.').all(component_ok) {
            return Err(invalid());
        }
    }
    Ok(())
}

fn validate_path(path: &str) -> Result<(), ReferenceError> {
    if path.is_empty() {
        return Err(ReferenceError::EmptyPath);
    }
    if path.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(ReferenceError::Uppercase(path.to_owned()));
    }
    for component in path.split('/') {
        if !is_path_component(component) {
            return Err(ReferenceError::InvalidPathComponent(component.to_owned()));
        }
    }
    Ok(())
}

/// `[a-z0-9]+` runs joined by exactly `.`, `_`, `__` or any number of `-`.
fn is_path_component(component: &str) -> bool {
    let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    let separator_ok = |sep: &str| matches!(sep, "." | "_" | "__") || sep.bytes().all(|b| b == b'-');
    let mut rest = component;
    loop {
        let run_end = rest.find(|c: char| !alnum(c)).unwrap_or(rest.len());
        if run_end == 0 {
            return false;
        }
        rest = &rest[run_end..];
        if rest.is_empty() {
            return true;
        }
        let separator_end = rest.find(alnum).unwrap_or(rest.len());
        if !separator_ok(&rest[..separator_end]) {
            return false;
        }
        rest = &rest[separator_end..];
    }
}

fn parse_tag(tag: &str) -> Result<String, ReferenceError> {
    if tag.is_empty() {
        return Err(ReferenceError::EmptyTag);
    }
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let valid = tag.len() <= MAX_TAG_LENGTH
        && tag.bytes().next().is_some_and(word)
        && tag.bytes().all(|b| word(b) || b == b'.' || b == b'-');
    if valid {
        Ok(tag.to_owned())
    } else {
        Err(ReferenceError::InvalidTag(tag.to_owned()))
    }
}

fn parse_digest(digest: &str) -> Result<String, ReferenceError> {
    let Some((algorithm, hex)) = digest.split_once(':') else {
        return Err(ReferenceError::InvalidDigestFormat(digest.to_owned()));
    };
    let algorithm_ok = !algorithm.is_empty()
        && algorithm.starts_with(|c: char| c.is_ascii_alphabetic())
        && algorithm
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'.' | b'-' | b'_'));
    if !algorithm_ok || hex.is_empty() {
        return Err(ReferenceError::InvalidDigestFormat(digest.to_owned()));
    }
    let expected = match algorithm {
        "sha256" => 64,
        "sha384" => 96,
        "sha512" => 128,
        other => return Err(ReferenceError::UnsupportedDigestAlgorithm(other.to_owned())),
    };
    if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ReferenceError::InvalidDigestFormat(digest.to_owned()));
    }
    if hex.len() != expected {
        return Err(ReferenceError::InvalidDigestLength {
            algorithm: algorithm.to_owned(),
            expected,
            found: hex.len(),
        });
    }
    if hex.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(ReferenceError::InvalidDigestHex(digest.to_owned()));
    }
    Ok(digest.to_owned())
}
