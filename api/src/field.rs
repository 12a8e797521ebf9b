//! Field errors shaped like Kubernetes' own (`k8s.io/apimachinery/pkg/util/validation/field`),
//! so that kubectl users read them the way they read the API server's.

use std::fmt;

use serde_json::Value;

/// A field path such as `spec.selector.names[1]` or `spec.images[nginx].tags[0]`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FieldPath(String);

impl FieldPath {
    pub fn new(root: &str) -> Self {
        Self(root.to_owned())
    }

    // Paths are built for every field checked, so without the formatting machinery.
    fn extended(&self, parts: &[&str]) -> Self {
        let mut path = String::with_capacity(self.0.len() + parts.iter().map(|p| p.len()).sum::<usize>());
        path.push_str(&self.0);
        for part in parts {
            path.push_str(part);
        }
        Self(path)
    }

    pub fn child(&self, name: &str) -> Self {
        self.extended(&[".", name])
    }

    pub fn index(&self, index: usize) -> Self {
        self.extended(&["[", &index.to_string(), "]"])
    }

    pub fn key(&self, key: &str) -> Self {
        self.extended(&["[", key, "]"])
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The `metav1.CauseType` of a field error.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    Required,
    Invalid,
    Duplicate,
    Forbidden,
    NotSupported,
    TooMany,
    TypeInvalid,
}

impl Reason {
    /// The cause type Kubernetes puts in `status.details.causes[].reason`.
    pub fn cause_type(self) -> &'static str {
        match self {
            Self::Required => "FieldValueRequired",
            Self::Invalid => "FieldValueInvalid",
            Self::Duplicate => "FieldValueDuplicate",
            Self::Forbidden => "FieldValueForbidden",
            Self::NotSupported => "FieldValueNotSupported",
            Self::TooMany => "FieldValueTooMany",
            Self::TypeInvalid => "FieldValueTypeInvalid",
        }
    }

    fn summary(self) -> &'static str {
        match self {
            Self::Required => "Required value",
            Self::Invalid | Self::TypeInvalid => "Invalid value",
            Self::Duplicate => "Duplicate value",
            Self::Forbidden => "Forbidden",
            Self::NotSupported => "Unsupported value",
            Self::TooMany => "Too many",
        }
    }

    /// Whether the offending value is part of the message, as Kubernetes prints it.
    fn shows_value(self) -> bool {
        !matches!(self, Self::Required | Self::Forbidden)
    }
}

/// One problem with one field.
#[derive(Clone, Debug, PartialEq)]
pub struct FieldError {
    pub path: FieldPath,
    pub reason: Reason,
    pub value: Option<Value>,
    pub detail: String,
}

impl FieldError {
    fn new(path: FieldPath, reason: Reason, value: Option<Value>, detail: impl Into<String>) -> Self {
        Self {
            path,
            reason,
            value,
            detail: detail.into(),
        }
    }

    pub fn required(path: FieldPath, detail: impl Into<String>) -> Self {
        Self::new(path, Reason::Required, None, detail)
    }

    pub fn invalid(path: FieldPath, value: impl Into<Value>, detail: impl Into<String>) -> Self {
        Self::new(path, Reason::Invalid, Some(value.into()), detail)
    }

    pub fn duplicate(path: FieldPath, value: impl Into<Value>, detail: impl Into<String>) -> Self {
        Self::new(path, Reason::Duplicate, Some(value.into()), detail)
    }

    pub fn forbidden(path: FieldPath, detail: impl Into<String>) -> Self {
        Self::new(path, Reason::Forbidden, None, detail)
    }

    pub fn not_supported(path: FieldPath, value: impl Into<Value>, supported: &[&str]) -> Self {
        let quoted: Vec<String> = supported.iter().map(|s| format!("{s:?}")).collect();
        let detail = format!("supported values: {}", quoted.join(", "));
        Self::new(path, Reason::NotSupported, Some(value.into()), detail)
    }

    pub fn too_many(path: FieldPath, actual: usize, max: usize) -> Self {
        let detail = format!("must have at most {max} items");
        Self::new(path, Reason::TooMany, Some(actual.into()), detail)
    }

    pub fn type_invalid(path: FieldPath, detail: impl Into<String>) -> Self {
        Self::new(path, Reason::TypeInvalid, None, detail)
    }

    /// A value of the wrong type, shown as Kubernetes shows it.
    pub fn wrong_type(path: FieldPath, value: impl Into<Value>, detail: impl Into<String>) -> Self {
        Self::new(path, Reason::TypeInvalid, Some(value.into()), detail)
    }

    /// The message without the field path, as in `status.details.causes[].message`.
    pub fn body(&self) -> String {
        let mut body = self.reason.summary().to_owned();
        if let Some(value) = self.value.as_ref().filter(|_| self.reason.shows_value()) {
            body.push_str(": ");
            // JSON spelling: strings quoted, numbers bare, as Kubernetes prints them.
            body.push_str(&value.to_string());
        }
        if !self.detail.is_empty() {
            body.push_str(": ");
            body.push_str(&self.detail);
        }
        body
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.body())
    }
}

/// Most errors and warnings one report lists: a hostile object with a million
/// duplicate entries gets the first ones and a count, not a 200 MB answer.
pub const MAX_LISTED_ERRORS: usize = 100;
pub const MAX_LISTED_WARNINGS: usize = 20;

/// Every error and warning found in one object, errors in a stable order; past
/// the listing limits, only counted (see [`Report::into_parts`]).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Report {
    pub errors: Vec<FieldError>,
    pub warnings: Vec<String>,
    pub unlisted_errors: usize,
    pub unlisted_warnings: usize,
}

impl Report {
    pub fn is_valid(&self) -> bool {
        self.errors.is_empty()
    }

    pub(crate) fn error(&mut self, error: FieldError) {
        if self.errors.len() < MAX_LISTED_ERRORS {
            self.errors.push(error);
        } else {
            self.unlisted_errors += 1;
        }
    }

    pub(crate) fn warn(&mut self, path: &FieldPath, message: impl fmt::Display) {
        if self.warnings.len() < MAX_LISTED_WARNINGS {
            self.warnings.push(format!("{path}: {message}"));
        } else {
            self.unlisted_warnings += 1;
        }
    }

    /// The listed errors and warnings, each list ending with a count of the
    /// unlisted ones when there are any.
    pub fn into_parts(mut self) -> (Vec<FieldError>, Vec<String>) {
        if self.unlisted_errors > 0 {
            let detail = format!("and {} more errors, not listed", self.unlisted_errors);
            self.errors
                .push(FieldError::new(FieldPath::new("spec"), Reason::TooMany, None, detail));
        }
        if self.unlisted_warnings > 0 {
            self.warnings
                .push(format!("and {} more warnings, not listed", self.unlisted_warnings));
        }
        (self.errors, self.warnings)
    }
}
