//! The image reference grammar, normalisation and diagnoses, as a table.

#![allow(clippy::unwrap_used, clippy::panic)]

use prewarm_api::reference::{ImageReference, ReferenceError, parse_repository_name, validate_tag_or_digest};

const SHA256: &str = "sha256:c5dd085dcc7c78a296c80b87916831fd19a3f447d94b99580ccd19a052720211";

/// input, familiar name (NodeImage key), full name, tag-or-digest (NodeImage tag).
fn valid_cases() -> Vec<(String, &'static str, &'static str, String)> {
    let sha512 = format!("sha512:{}", "ab".repeat(64));
    let long_tag = "t".repeat(128);
    let cases: Vec<(String, &str, &str, String)> = vec![
        ("nginx".into(), "nginx", "docker.io/library/nginx", "latest".into()),
        ("nginx:1.9.1".into(), "nginx", "docker.io/library/nginx", "1.9.1".into()),
        (
            "nginx:latest".into(),
            "nginx",
            "docker.io/library/nginx",
            "latest".into(),
        ),
        (
            "docker.io/library/nginx:latest".into(),
            "nginx",
            "docker.io/library/nginx",
            "latest".into(),
        ),
        (
            "index.docker.io/library/nginx".into(),
            "nginx",
            "docker.io/library/nginx",
            "latest".into(),
        ),
        (
            "library/nginx".into(),
            "nginx",
            "docker.io/library/nginx",
            "latest".into(),
        ),
        (
            "docker.io/nginx".into(),
            "nginx",
            "docker.io/library/nginx",
            "latest".into(),
        ),
        ("ubuntu".into(), "ubuntu", "docker.io/library/ubuntu", "latest".into()),
        (
            format!("ubuntu:20.04@{SHA256}"),
            "ubuntu",
            "docker.io/library/ubuntu",
            SHA256.into(),
        ),
        (
            format!("nginx@{SHA256}"),
            "nginx",
            "docker.io/library/nginx",
            SHA256.into(),
        ),
        (
            format!("nginx:1.9.1@{sha512}"),
            "nginx",
            "docker.io/library/nginx",
            sha512.clone(),
        ),
        (
            "busybox:1.29.2".into(),
            "busybox",
            "docker.io/library/busybox",
            "1.29.2".into(),
        ),
        ("team/app".into(), "team/app", "docker.io/team/app", "latest".into()),
        (
            "docker.io/team/app:v2".into(),
            "team/app",
            "docker.io/team/app",
            "v2".into(),
        ),
        (
            "myregistry:5000/team/app".into(),
            "myregistry:5000/team/app",
            "myregistry:5000/team/app",
            "latest".into(),
        ),
        (
            "myregistry:5000/my/image:v1".into(),
            "myregistry:5000/my/image",
            "myregistry:5000/my/image",
            "v1".into(),
        ),
        (
            "localhost/app".into(),
            "localhost/app",
            "localhost/app",
            "latest".into(),
        ),
        (
            "localhost:5000/app:1".into(),
            "localhost:5000/app",
            "localhost:5000/app",
            "1".into(),
        ),
        (
            "127.0.0.1:5000/app:v2".into(),
            "127.0.0.1:5000/app",
            "127.0.0.1:5000/app",
            "v2".into(),
        ),
        (
            "[::1]:5000/app".into(),
            "[::1]:5000/app",
            "[::1]:5000/app",
            "latest".into(),
        ),
        (
            "[fe80::1]/app".into(),
            "[fe80::1]/app",
            "[fe80::1]/app",
            "latest".into(),
        ),
        (
            "gcr.io/google-containers/pause:3.9".into(),
            "gcr.io/google-containers/pause",
            "gcr.io/google-containers/pause",
            "3.9".into(),
        ),
        (
            "registry.k8s.io/pause:3.9".into(),
            "registry.k8s.io/pause",
            "registry.k8s.io/pause",
            "3.9".into(),
        ),
        (
            "quay.io/prometheus/node-exporter:v1.8.0".into(),
            "quay.io/prometheus/node-exporter",
            "quay.io/prometheus/node-exporter",
            "v1.8.0".into(),
        ),
        (
            "Example.COM/app".into(),
            "Example.COM/app",
            "Example.COM/app",
            "latest".into(),
        ),
        (
            "example.com/a/b/c/d/e:tag".into(),
            "example.com/a/b/c/d/e",
            "example.com/a/b/c/d/e",
            "tag".into(),
        ),
        (
            "example.com/a__b".into(),
            "example.com/a__b",
            "example.com/a__b",
            "latest".into(),
        ),
        (
            "example.com/a---b".into(),
            "example.com/a---b",
            "example.com/a---b",
            "latest".into(),
        ),
        (
            "a.b_c-d".into(),
            "a.b_c-d",
            "docker.io/library/a.b_c-d",
            "latest".into(),
        ),
        (
            "nginx:v1.0_rc-1".into(),
            "nginx",
            "docker.io/library/nginx",
            "v1.0_rc-1".into(),
        ),
        (
            "nginx:_private".into(),
            "nginx",
            "docker.io/library/nginx",
            "_private".into(),
        ),
        (
            format!("nginx:{long_tag}"),
            "nginx",
            "docker.io/library/nginx",
            long_tag.clone(),
        ),
        (
            "123456789012.dkr.ecr.us-east-1.amazonaws.com/app:1".into(),
            "123456789012.dkr.ecr.us-east-1.amazonaws.com/app",
            "123456789012.dkr.ecr.us-east-1.amazonaws.com/app",
            "1".into(),
        ),
        (
            "localhost:5000".into(),
            "localhost",
            "docker.io/library/localhost",
            "5000".into(),
        ),
    ];
    cases
}

fn invalid_cases() -> Vec<(String, ReferenceError)> {
    let hex64 = "c5dd085dcc7c78a296c80b87916831fd19a3f447d94b99580ccd19a052720211";
    vec![
        ("".into(), ReferenceError::Empty),
        (hex64.into(), ReferenceError::BareImageId),
        ("Nginx".into(), ReferenceError::Uppercase("Nginx".into())),
        (
            "docker.io/Library/nginx".into(),
            ReferenceError::Uppercase("Library/nginx".into()),
        ),
        ("team/App:v1".into(), ReferenceError::Uppercase("team/App".into())),
        ("nginx:".into(), ReferenceError::EmptyTag),
        ("nginx@".into(), ReferenceError::EmptyDigest),
        (
            "nginx@sha256:abc".into(),
            ReferenceError::InvalidDigestLength {
                algorithm: "sha256".into(),
                expected: 64,
                found: 3,
            },
        ),
        (
            format!("nginx@md5:{}", &hex64[..32]),
            ReferenceError::UnsupportedDigestAlgorithm("md5".into()),
        ),
        (
            format!("nginx@sha256:{}", hex64.to_uppercase()),
            ReferenceError::InvalidDigestHex(format!("sha256:{}", hex64.to_uppercase())),
        ),
        (
            "nginx@sha256".into(),
            ReferenceError::InvalidDigestFormat("sha256".into()),
        ),
        (
            "nginx@sha256:".into(),
            ReferenceError::InvalidDigestFormat("sha256:".into()),
        ),
        (
            "nginx@sha256:zz".into(),
            ReferenceError::InvalidDigestFormat("sha256:zz".into()),
        ),
        ("nginx:.bad".into(), ReferenceError::InvalidTag(".bad".into())),
        ("nginx:-bad".into(), ReferenceError::InvalidTag("-bad".into())),
        (
            format!("nginx:{}", "t".repeat(129)),
            ReferenceError::InvalidTag("t".repeat(129)),
        ),
        ("nginx::1".into(), ReferenceError::InvalidTag(":1".into())),
        ("-nginx".into(), ReferenceError::InvalidPathComponent("-nginx".into())),
        ("nginx-".into(), ReferenceError::InvalidPathComponent("nginx-".into())),
        ("team//app".into(), ReferenceError::InvalidPathComponent("".into())),
        ("a..b".into(), ReferenceError::InvalidPathComponent("a..b".into())),
        ("a___b".into(), ReferenceError::InvalidPathComponent("a___b".into())),
        ("example.com/".into(), ReferenceError::EmptyPath),
        (":tag".into(), ReferenceError::EmptyPath),
        (
            "example.com:port/app".into(),
            ReferenceError::InvalidDomain("example.com:port".into()),
        ),
        (
            "exa mple.com/app".into(),
            ReferenceError::InvalidDomain("exa mple.com".into()),
        ),
        (
            "my_registry.example.com/app".into(),
            ReferenceError::InvalidDomain("my_registry.example.com".into()),
        ),
        (
            "-bad.example.com/app".into(),
            ReferenceError::InvalidDomain("-bad.example.com".into()),
        ),
        ("[::1/app".into(), ReferenceError::InvalidDomain("[::1".into())),
        (
            "localhost:/app".into(),
            ReferenceError::InvalidDomain("localhost:".into()),
        ),
        (
            format!("example.com/{}", "a/".repeat(125) + "abcd"),
            ReferenceError::NameTooLong(266),
        ),
        (
            "nginx latest".into(),
            ReferenceError::InvalidPathComponent("nginx latest".into()),
        ),
    ]
}

#[test]
fn valid_references_normalise() {
    let cases = valid_cases();
    for (input, familiar, full, tag_or_digest) in &cases {
        let reference = ImageReference::parse(input).unwrap_or_else(|e| panic!("{input:?}: {e}"));
        assert_eq!(reference.familiar_name(), *familiar, "familiar name of {input:?}");
        assert_eq!(reference.full_name(), *full, "full name of {input:?}");
        assert_eq!(reference.tag_or_digest(), tag_or_digest, "tag or digest of {input:?}");
        // The familiar name is itself a valid NodeImage key naming the same repository.
        assert_eq!(parse_repository_name(familiar).unwrap().full_name(), *full);
    }
    assert!(cases.len() + invalid_cases().len() >= 40);
}

#[test]
fn invalid_references_say_what_is_wrong() {
    for (input, expected) in invalid_cases() {
        assert_eq!(ImageReference::parse(&input), Err(expected), "parsing {input:?}");
    }
}

#[test]
fn error_messages_name_the_part_and_what_is_accepted() {
    let message = |input: &str| ImageReference::parse(input).unwrap_err().to_string();
    assert_eq!(
        message("Nginx:1.0"),
        "repository name must be lowercase (found \"Nginx\")"
    );
    assert!(message("nginx@sha256:abc").contains("expected 64 hexadecimal characters, found 3"));
    assert!(message("nginx:-x").contains("not starting with '.' or '-'"));
    assert!(message(&"a".repeat(64)).contains("image ID"));
}

#[test]
fn spellings_of_one_image_share_a_canonical_form() {
    let spellings = [
        "nginx",
        "nginx:latest",
        "library/nginx",
        "docker.io/library/nginx:latest",
        "index.docker.io/library/nginx",
    ];
    for spelling in spellings {
        assert_eq!(
            ImageReference::parse(spelling).unwrap().canonical(),
            "docker.io/library/nginx:latest",
            "{spelling}"
        );
    }
    let pinned = ImageReference::parse(&format!("nginx:1.9@{SHA256}")).unwrap();
    assert_eq!(pinned.canonical(), format!("docker.io/library/nginx@{SHA256}"));
    assert!(pinned.is_digest_pinned() && !pinned.is_latest());
    assert_eq!(pinned.to_string(), format!("docker.io/library/nginx:1.9@{SHA256}"));
    assert_ne!(
        ImageReference::parse("nginx:1.9").unwrap().canonical(),
        ImageReference::parse("nginx:1.9.1").unwrap().canonical()
    );
}

#[test]
fn node_image_keys_and_tags() {
    assert!(parse_repository_name("myregistry:5000/team/app").is_ok());
    assert_eq!(
        parse_repository_name("nginx:1.9"),
        Err(ReferenceError::TagOrDigestInName("nginx:1.9".into()))
    );
    assert!(matches!(
        parse_repository_name(&format!("nginx@{SHA256}")),
        Err(ReferenceError::TagOrDigestInName(_))
    ));
    assert_eq!(validate_tag_or_digest("1.9.1"), Ok(()));
    assert_eq!(validate_tag_or_digest(SHA256), Ok(()));
    assert_eq!(validate_tag_or_digest(""), Err(ReferenceError::EmptyTag));
    assert!(validate_tag_or_digest("sha256:abc").is_err());
    assert!(validate_tag_or_digest("bad tag").is_err());
}
