//! Warnings a request collects (unknown fields, admission webhooks) as the
//! `Warning` headers kube-apiserver answers with.

/// The `Warning` headers kube-apiserver sends for `warnings` (its
/// `endpoints/filters/warning.go`): `299 - "text"` each, duplicates once; past
/// 4096 characters in all, each warning is cut to 256 characters and those that
/// no longer fit are dropped.
pub(crate) fn headers(warnings: &[String]) -> Vec<String> {
    const TOTAL: usize = 4 * 1024;
    const ITEM: usize = 256;
    let mut unique: Vec<&str> = Vec::new();
    for warning in warnings.iter().filter(|w| !w.is_empty()) {
        if !unique.contains(&warning.as_str()) {
            unique.push(warning);
        }
    }
    let runes = |text: &str| text.chars().count();
    let truncating = unique.iter().map(|w| runes(w)).sum::<usize>() > TOTAL;
    let mut written = 0;
    let mut headers = Vec::new();
    for warning in unique {
        let text: String = if truncating {
            warning.chars().take(ITEM).collect()
        } else {
            warning.to_owned()
        };
        written += runes(&text);
        if written > TOTAL {
            break;
        }
        headers.push(format!("299 - {}", quoted(&text)));
    }
    headers
}

/// Go's warning text quoting (`net.NewWarningHeader`): in double quotes, with
/// `"` and `\` escaped by a backslash.
fn quoted(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warnings_are_quoted_deduplicated_and_cut_as_kube_apiserver_does() {
        let few = vec!["a \"b\" c\\d".to_owned(), "a \"b\" c\\d".to_owned(), "é".to_owned()];
        assert_eq!(headers(&few), ["299 - \"a \\\"b\\\" c\\\\d\"", "299 - \"é\""]);
        // 20 warnings of 300 characters: 6000 in all, past 4096, so each is cut
        // to 256 and those past the total are dropped (16 × 256 = 4096).
        let many: Vec<String> = (0..20).map(|i| format!("{i:03}{}", "x".repeat(297))).collect();
        let headers = headers(&many);
        assert_eq!(headers.len(), 16);
        assert!(
            headers.iter().all(|h| h.len() == "299 - \"\"".len() + 256),
            "{headers:?}"
        );
    }
}
