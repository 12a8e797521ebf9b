//! The `spec` of an admitted object, as defaulting and validation read it: a
//! member of a parsed tree (the offline validator, tests), or the spec's JSON
//! text (the webhook), decoded straight into the kind's type. When the text
//! does not fit the type, it is read as a tree and the tree's rules answer, so
//! both forms always give the same verdict and the same messages.

use std::borrow::Cow;

use serde::de::DeserializeOwned;
use serde_json::Value;
use serde_json::value::RawValue;

use crate::admission::Kind;
use crate::field::{FieldError, FieldPath, Report};
use crate::schema::{self, Step};

#[derive(Clone, Copy, Debug)]
pub enum Spec<'a> {
    /// `object.spec` of a parsed object; `None` when the object has none.
    Tree(Option<&'a Value>),
    /// The text of `object.spec`, `null` included; `None` when the object has none.
    Text(Option<&'a RawValue>),
}

/// Outcome of decoding a spec into its type.
pub(crate) enum Decoded<T> {
    Typed(T),
    /// The spec has another shape: the tree, for the rules that read shapes.
    Tree(Option<Value>),
    /// Text nested beyond what a tree may hold (serde_json's limit of 128 levels).
    Unreadable(String),
}

impl<'a> Spec<'a> {
    /// The spec of a parsed object.
    pub fn of(object: &'a Value) -> Self {
        Self::Tree(object.get("spec"))
    }

    /// Absent, or JSON `null`.
    pub fn is_absent_or_null(self) -> bool {
        match self {
            Self::Tree(spec) => spec.is_none_or(Value::is_null),
            Self::Text(spec) => spec.is_none_or(|text| text.get() == "null"),
        }
    }

    /// The spec as a tree; `Err` for text nested too deeply to read as one.
    pub fn tree(self) -> Result<Option<Cow<'a, Value>>, String> {
        match self {
            Self::Tree(spec) => Ok(spec.map(Cow::Borrowed)),
            Self::Text(None) => Ok(None),
            Self::Text(Some(text)) => serde_json::from_str(text.get())
                .map(|tree| Some(Cow::Owned(tree)))
                .map_err(|e| format!("cannot be read: {e}")),
        }
    }

    /// Whether two specs hold the same JSON value (member order and spacing aside).
    pub fn same_as(self, other: Spec<'_>) -> bool {
        if let (Self::Text(Some(a)), Spec::Text(Some(b))) = (self, other)
            && a.get() == b.get()
        {
            return true;
        }
        match (self.tree(), other.tree()) {
            (Ok(a), Ok(b)) => a == b,
            _ => false,
        }
    }

    /// The spec in its type, or what the rules need to explain why it is not.
    pub(crate) fn decode<T: DeserializeOwned>(self) -> Decoded<T> {
        if let Self::Text(Some(text)) = self
            && let Ok(typed) = serde_json::from_str(text.get())
        {
            return Decoded::Typed(typed);
        }
        match self.tree() {
            Ok(Some(tree)) => match T::deserialize(tree.as_ref()) {
                Ok(typed) => Decoded::Typed(typed),
                Err(_) => Decoded::Tree(Some(tree.into_owned())),
            },
            Ok(None) => Decoded::Tree(None),
            Err(message) => Decoded::Unreadable(message),
        }
    }

    /// The spec in its type; otherwise one field error at the path where it
    /// stops fitting, saying what `kind`'s schema accepts there, and `None`.
    pub(crate) fn decode_or_report<T: DeserializeOwned>(self, kind: Kind, report: &mut Report) -> Option<T> {
        let tree = match self.decode() {
            Decoded::Typed(typed) => return Some(typed),
            Decoded::Tree(tree) => tree,
            Decoded::Unreadable(message) => {
                report.error(FieldError::type_invalid(FieldPath::new("spec"), message));
                return None;
            }
        };
        let root = FieldPath::new("spec");
        let Some(tree) = tree else {
            report.error(FieldError::required(root, ""));
            return None;
        };
        let error = match serde_path_to_error::deserialize::<_, T>(&tree) {
            Ok(typed) => return Some(typed),
            Err(error) => error,
        };
        let segments: Vec<serde_path_to_error::Segment> = error.path().iter().cloned().collect();
        let message = error.into_inner().to_string();
        let mut path = root;
        let mut steps = vec![Step::Member("spec")];
        let mut value = Some(&tree);
        for segment in &segments {
            match segment {
                serde_path_to_error::Segment::Seq { index } => {
                    path = path.index(*index);
                    steps.push(Step::Item);
                    value = value.and_then(|v| v.get(*index));
                }
                serde_path_to_error::Segment::Map { key } => {
                    // A map entry's key, or a field: the schema says which.
                    let is_entry = schema::root(kind)
                        .and_then(|root| schema::descend(root, &steps))
                        .is_some_and(|s| s.get("properties").is_none());
                    path = if is_entry { path.key(key) } else { path.child(key) };
                    steps.push(Step::Member(key));
                    value = value.and_then(|v| v.get(key.as_str()));
                }
                serde_path_to_error::Segment::Enum { variant } => path = path.child(variant),
                serde_path_to_error::Segment::Unknown => {}
            }
        }
        let field_schema = schema::root(kind).and_then(|root| schema::descend(root, &steps));
        report.error(match (missing_field(&message), field_schema, value) {
            (Some(field), ..) => FieldError::required(path.child(field), ""),
            (None, Some(field_schema), Some(value)) => {
                FieldError::wrong_type(path, schema::shown(value), schema::expectation(field_schema, value))
            }
            // Not found in the schema: say no more than that the value does not fit.
            (None, ..) => FieldError::type_invalid(path, "has the wrong type"),
        });
        None
    }
}

/// serde reports an absent required field as "missing field `name`".
fn missing_field(message: &str) -> Option<&str> {
    message.strip_prefix("missing field `")?.split('`').next()
}
