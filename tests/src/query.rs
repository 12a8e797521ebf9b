//! Query strings as kube-apiserver reads them: `key=value` pairs split on
//! `&`, percent-decoded, `+` as a space.

use std::collections::HashMap;

/// The parameters of a query string; a key without `=` has an empty value.
pub fn parse(query: &str) -> HashMap<String, String> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('=').or(Some((pair, ""))))
        .filter(|(k, _)| !k.is_empty())
        .map(|(k, v)| (decode(k), decode(v)))
        .collect()
}

/// Percent-decoding for query values (`labelSelector=app%3Dweb`).
fn decode(text: &str) -> String {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut bytes = text.bytes();
    let mut out = Vec::with_capacity(text.len());
    while let Some(b) = bytes.next() {
        match b {
            b'%' => {
                let (high, low) = (bytes.next(), bytes.next());
                match (high.and_then(hex), low.and_then(hex)) {
                    (Some(h), Some(l)) => out.push(h * 16 + l),
                    _ => out.extend([Some(b'%'), high, low].into_iter().flatten()),
                }
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
