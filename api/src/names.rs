//! Kubernetes name syntaxes: DNS subdomains (node and secret names), label keys
//! and label values. Each check returns what is wrong, in Kubernetes' words.

const DNS_SUBDOMAIN_MAX: usize = 253;
const LABEL_NAME_MAX: usize = 63;

/// A DNS-1123 subdomain, as node and Secret names must be.
pub fn dns_subdomain(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err("must not be empty".to_owned());
    }
    if value.len() > DNS_SUBDOMAIN_MAX {
        return Err(format!("must be no more than {DNS_SUBDOMAIN_MAX} characters"));
    }
    let label_ok = |label: &str| {
        !label.is_empty()
            && label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    };
    if value.split('.').all(label_ok) {
        Ok(())
    } else {
        Err("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com')".to_owned())
    }
}

/// A label key: an optional DNS subdomain prefix and `/`, then a name of at most 63 characters.
pub fn label_key(value: &str) -> Result<(), String> {
    let (prefix, name) = match value.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, value),
    };
    if let Some(prefix) = prefix {
        dns_subdomain(prefix).map_err(|e| format!("prefix part {e}"))?;
    }
    if name.is_empty() {
        return Err("name part must be non-empty".to_owned());
    }
    label_name(name).map_err(|e| format!("name part {e}"))
}

/// A label value: empty, or at most 63 alphanumerics with `-`, `_`, `.` inside.
pub fn label_value(value: &str) -> Result<(), String> {
    if value.is_empty() { Ok(()) } else { label_name(value) }
}

fn label_name(value: &str) -> Result<(), String> {
    if value.len() > LABEL_NAME_MAX {
        return Err(format!("must be no more than {LABEL_NAME_MAX} characters"));
    }
    let inner_ok = value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    let edges_ok =
        value.starts_with(|c: char| c.is_ascii_alphanumeric()) && value.ends_with(|c: char| c.is_ascii_alphanumeric());
    if inner_ok && edges_ok {
        Ok(())
    } else {
        Err("must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue', 'my_value' or '12345')".to_owned())
    }
}
