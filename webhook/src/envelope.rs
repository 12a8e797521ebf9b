//! The AdmissionReview envelope read in one pass over the body: the members
//! the webhook uses are kept, borrowed from the body where they can be (the
//! objects' specs as JSON text, for the rules to decode into their types),
//! everything else is skipped without building a tree. Reading is lenient as a
//! tree would be: a member of the wrong JSON type counts as absent, and a
//! repeated key keeps its last value.

use std::borrow::Cow;
use std::fmt;

use prewarm_api::node_status::NODE_NAME_EXTRA;
use prewarm_api::spec::Spec;
use prewarm_api::text::Key;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

/// `apiVersion`, `kind` and `request` of an AdmissionReview.
#[derive(Debug, Default)]
pub struct Envelope<'a> {
    pub api_version: Option<Cow<'a, str>>,
    pub kind: Option<Cow<'a, str>>,
    /// `None` when absent or not an object.
    pub request: Option<RequestFields<'a>>,
}

/// The members of `request` the webhook reads.
#[derive(Debug, Default)]
pub struct RequestFields<'a> {
    pub uid: Option<Cow<'a, str>>,
    pub name: Option<Cow<'a, str>>,
    pub namespace: Option<Cow<'a, str>>,
    pub operation: Option<Cow<'a, str>>,
    pub sub_resource: Option<Cow<'a, str>>,
    pub dry_run: Option<bool>,
    /// `request.kind`, `None` when absent or not an object.
    pub kind: Option<GroupVersionKind<'a>>,
    pub object: Object<'a>,
    pub old_object: Object<'a>,
    /// `request.userInfo`, `None` when absent or not an object.
    pub user_info: Option<UserInfo<'a>>,
}

/// The members of `request.userInfo` the webhook reads.
#[derive(Debug, Default)]
pub struct UserInfo<'a> {
    pub username: Option<Cow<'a, str>>,
    /// `extra["authentication.kubernetes.io/node-name"]`; strings only.
    pub node_names: Option<Vec<String>>,
}

#[derive(Debug, Default)]
struct Extra {
    node_names: Option<Vec<String>>,
}

#[derive(Debug, Default)]
pub struct GroupVersionKind<'a> {
    pub group: Option<Cow<'a, str>>,
    pub version: Option<Cow<'a, str>>,
    pub kind: Option<Cow<'a, str>>,
}

/// `request.object` or `request.oldObject`.
#[derive(Debug, Default)]
pub enum Object<'a> {
    /// Absent, or `null`.
    #[default]
    Absent,
    /// Some JSON value other than an object.
    NotAnObject,
    Fields(ObjectFields<'a>),
}

impl<'a> Object<'a> {
    pub fn fields(&self) -> Option<&ObjectFields<'a>> {
        match self {
            Self::Fields(fields) => Some(fields),
            Self::Absent | Self::NotAnObject => None,
        }
    }
}

/// The members of an admitted object the webhook reads.
#[derive(Debug, Default)]
pub struct ObjectFields<'a> {
    pub kind: Option<Cow<'a, str>>,
    pub name: Option<Cow<'a, str>>,
    /// The text of `spec`, `null` included.
    pub spec: Option<&'a RawValue>,
    /// The text of `status`, read only on `/status` writes.
    pub status: Option<&'a RawValue>,
}

impl<'a> ObjectFields<'a> {
    pub fn spec(&self) -> Spec<'a> {
        Spec::Text(self.spec)
    }

    pub fn status(&self) -> Spec<'a> {
        Spec::Text(self.status)
    }
}

#[derive(Debug, Default)]
struct Metadata<'a> {
    name: Option<Cow<'a, str>>,
}

impl<'a> Envelope<'a> {
    /// Reads the body: UTF-8 is checked once here, so strings are not checked again.
    pub fn parse(body: &'a [u8]) -> Result<Self, String> {
        let text = std::str::from_utf8(body).map_err(|e| format!("the body is not UTF-8 text: {e}"))?;
        let mut envelope = None;
        let mut reader = serde_json::Deserializer::from_str(text);
        Fill(&mut envelope)
            .deserialize(&mut reader)
            .and_then(|_| reader.end())
            .map_err(|e| format!("the body is not JSON: {e}"))?;
        Ok(envelope.unwrap_or_default())
    }
}

/// What a member held: a value of the expected shape, `null`, or something else.
enum Found {
    Value,
    Null,
    Other,
}

/// Reads a JSON value into the slot when it has the shape of `T`, and empties
/// the slot otherwise: the value is built where it is kept, never moved.
struct Fill<'s, T>(&'s mut Option<T>);

/// Types that read themselves from a JSON object's members.
trait FromMembers<'de>: Default {
    fn member<A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<(), A::Error>;
}

fn lenient<'de, T: Shape<'de>, A: MapAccess<'de>>(map: &mut A, slot: &mut Option<T>) -> Result<Found, A::Error> {
    map.next_value_seed(Fill(slot))
}

fn skip<'de, A: MapAccess<'de>>(map: &mut A) -> Result<(), A::Error> {
    map.next_value::<IgnoredAny>().map(|_| ())
}

impl<'de> FromMembers<'de> for Envelope<'de> {
    fn member<A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<(), A::Error> {
        match key {
            "apiVersion" => lenient(map, &mut self.api_version)?,
            "kind" => lenient(map, &mut self.kind)?,
            "request" => lenient(map, &mut self.request)?,
            _ => return skip(map),
        };
        Ok(())
    }
}

impl<'de> FromMembers<'de> for RequestFields<'de> {
    fn member<A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<(), A::Error> {
        match key {
            "uid" => lenient(map, &mut self.uid)?,
            "name" => lenient(map, &mut self.name)?,
            "namespace" => lenient(map, &mut self.namespace)?,
            "operation" => lenient(map, &mut self.operation)?,
            "subResource" => lenient(map, &mut self.sub_resource)?,
            "dryRun" => lenient(map, &mut self.dry_run)?,
            "kind" => lenient(map, &mut self.kind)?,
            "object" => return object(map, &mut self.object),
            "oldObject" => return object(map, &mut self.old_object),
            "userInfo" => lenient(map, &mut self.user_info)?,
            _ => return skip(map),
        };
        Ok(())
    }
}

impl<'de> FromMembers<'de> for UserInfo<'de> {
    fn member<A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<(), A::Error> {
        match key {
            "username" => lenient(map, &mut self.username)?,
            "extra" => {
                let mut extra = None;
                lenient::<Extra, A>(map, &mut extra)?;
                self.node_names = extra.and_then(|e| e.node_names);
                return Ok(());
            }
            _ => return skip(map),
        };
        Ok(())
    }
}

impl<'de> FromMembers<'de> for Extra {
    fn member<A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<(), A::Error> {
        if key == NODE_NAME_EXTRA {
            // A list of strings, as `map[string][]string` holds; any other shape is absent.
            self.node_names = map.next_value::<Option<Lenient<Vec<String>>>>()?.and_then(|l| l.0);
            Ok(())
        } else {
            skip(map)
        }
    }
}

/// A value of type `T`, or `None` for any other JSON value.
struct Lenient<T>(Option<T>);

impl<'de, T: serde::Deserialize<'de>> serde::Deserialize<'de> for Lenient<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = serde_json::Value::deserialize(deserializer)?;
        Ok(Self(T::deserialize(value).ok()))
    }
}

fn object<'de, A: MapAccess<'de>>(map: &mut A, object: &mut Object<'de>) -> Result<(), A::Error> {
    let mut fields = None;
    *object = match (lenient(map, &mut fields)?, fields) {
        (Found::Value, Some(fields)) => Object::Fields(fields),
        (Found::Null, _) => Object::Absent,
        _ => Object::NotAnObject,
    };
    Ok(())
}

impl<'de> FromMembers<'de> for GroupVersionKind<'de> {
    fn member<A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<(), A::Error> {
        match key {
            "group" => lenient(map, &mut self.group)?,
            "version" => lenient(map, &mut self.version)?,
            "kind" => lenient(map, &mut self.kind)?,
            _ => return skip(map),
        };
        Ok(())
    }
}

impl<'de> FromMembers<'de> for ObjectFields<'de> {
    fn member<A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<(), A::Error> {
        match key {
            "kind" => {
                lenient(map, &mut self.kind)?;
            }
            "metadata" => {
                let mut metadata = None;
                lenient::<Metadata<'de>, A>(map, &mut metadata)?;
                self.name = metadata.and_then(|m| m.name);
            }
            "spec" => self.spec = Some(map.next_value::<&'de RawValue>()?),
            "status" => self.status = Some(map.next_value::<&'de RawValue>()?),
            _ => skip(map)?,
        }
        Ok(())
    }
}

impl<'de> FromMembers<'de> for Metadata<'de> {
    fn member<A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<(), A::Error> {
        match key {
            "name" => lenient(map, &mut self.name)?,
            _ => return skip(map),
        };
        Ok(())
    }
}

/// What `Fill` keeps of each JSON value.
trait Shape<'de>: Sized {
    fn from_str(_: &str) -> Option<Self> {
        None
    }
    fn from_borrowed_str(text: &'de str) -> Option<Self> {
        Self::from_str(text)
    }
    fn from_bool(_: bool) -> Option<Self> {
        None
    }
    fn fill_from_map<A: MapAccess<'de>>(slot: &mut Option<Self>, mut map: A) -> Result<Found, A::Error> {
        *slot = None;
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Found::Other)
    }
}

impl<'de> Shape<'de> for Cow<'de, str> {
    fn from_str(text: &str) -> Option<Self> {
        Some(Cow::Owned(text.to_owned()))
    }

    fn from_borrowed_str(text: &'de str) -> Option<Self> {
        Some(Cow::Borrowed(text))
    }
}

impl Shape<'_> for bool {
    fn from_bool(value: bool) -> Option<Self> {
        Some(value)
    }
}

impl<'de, T: FromMembers<'de>> Shape<'de> for T {
    /// A repeated member starts over, so the last one wins.
    fn fill_from_map<A: MapAccess<'de>>(slot: &mut Option<Self>, mut map: A) -> Result<Found, A::Error> {
        let fields = slot.insert(T::default());
        while let Some(Key(key)) = map.next_key()? {
            fields.member(&key, &mut map)?;
        }
        Ok(Found::Value)
    }
}

impl<T> Fill<'_, T> {
    fn keep(self, value: Option<T>) -> Found {
        *self.0 = value;
        if self.0.is_some() { Found::Value } else { Found::Other }
    }

    fn other(self) -> Found {
        *self.0 = None;
        Found::Other
    }
}

impl<'de, T: Shape<'de>> Visitor<'de> for Fill<'_, T> {
    type Value = Found;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_borrowed_str<E: de::Error>(self, value: &'de str) -> Result<Found, E> {
        Ok(self.keep(T::from_borrowed_str(value)))
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<Found, E> {
        Ok(self.keep(T::from_str(value)))
    }

    fn visit_bool<E: de::Error>(self, value: bool) -> Result<Found, E> {
        Ok(self.keep(T::from_bool(value)))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Found, A::Error> {
        T::fill_from_map(self.0, map)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Found, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(self.other())
    }

    fn visit_unit<E: de::Error>(self) -> Result<Found, E> {
        *self.0 = None;
        Ok(Found::Null)
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Found, E> {
        Ok(self.other())
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Found, E> {
        Ok(self.other())
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Found, E> {
        Ok(self.other())
    }
}

impl<'de, T: Shape<'de>> DeserializeSeed<'de> for Fill<'_, T> {
    type Value = Found;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Found, D::Error> {
        deserializer.deserialize_any(self)
    }
}
