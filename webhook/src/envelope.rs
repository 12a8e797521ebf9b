//! The AdmissionReview envelope read in one pass over the body: the members
//! the webhook uses are kept, borrowed from the body where they can be (the
//! objects' specs as JSON text, for the rules to decode into their types),
//! everything else is skipped without building a tree. Reading is lenient as a
//! tree would be: a member of the wrong JSON type counts as absent, and a
//! repeated key keeps its last value.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use prewarm_api::spec::Spec;
use prewarm_api::text::Key;
use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
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
}

impl<'a> ObjectFields<'a> {
    pub fn spec(&self) -> Spec<'a> {
        Spec::Text(self.spec)
    }
}

#[derive(Debug, Default)]
struct Metadata<'a> {
    name: Option<Cow<'a, str>>,
}

impl<'a> Envelope<'a> {
    pub fn parse(body: &'a [u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice::<Lenient<Envelope<'a>>>(body).map(|l| l.0.value().unwrap_or_default())
    }
}

/// What a member held: a value of the expected shape, `null`, or something else.
enum Found<T> {
    Value(T),
    Null,
    Other,
}

impl<T> Found<T> {
    fn value(self) -> Option<T> {
        match self {
            Self::Value(value) => Some(value),
            Self::Null | Self::Other => None,
        }
    }
}

/// Accepts any JSON value and keeps it only when it has the shape of `T`.
struct Lenient<T>(Found<T>);

/// Types that read themselves from a JSON object's members.
trait FromMembers<'de>: Default {
    fn member<A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<(), A::Error>;
}

fn lenient<'de, T: Shape<'de>, A: MapAccess<'de>>(map: &mut A) -> Result<Option<T>, A::Error> {
    Ok(map.next_value::<Lenient<T>>()?.0.value())
}

fn skip<'de, A: MapAccess<'de>>(map: &mut A) -> Result<(), A::Error> {
    map.next_value::<IgnoredAny>().map(|_| ())
}

impl<'de> FromMembers<'de> for Envelope<'de> {
    fn member<A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<(), A::Error> {
        match key {
            "apiVersion" => self.api_version = lenient(map)?,
            "kind" => self.kind = lenient(map)?,
            "request" => self.request = lenient(map)?,
            _ => skip(map)?,
        }
        Ok(())
    }
}

impl<'de> FromMembers<'de> for RequestFields<'de> {
    fn member<A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<(), A::Error> {
        match key {
            "uid" => self.uid = lenient(map)?,
            "name" => self.name = lenient(map)?,
            "namespace" => self.namespace = lenient(map)?,
            "operation" => self.operation = lenient(map)?,
            "subResource" => self.sub_resource = lenient(map)?,
            "dryRun" => self.dry_run = lenient(map)?,
            "kind" => self.kind = lenient(map)?,
            "object" => self.object = object(map)?,
            "oldObject" => self.old_object = object(map)?,
            _ => skip(map)?,
        }
        Ok(())
    }
}

fn object<'de, A: MapAccess<'de>>(map: &mut A) -> Result<Object<'de>, A::Error> {
    Ok(match map.next_value::<Lenient<ObjectFields<'de>>>()?.0 {
        Found::Value(fields) => Object::Fields(fields),
        Found::Null => Object::Absent,
        Found::Other => Object::NotAnObject,
    })
}

impl<'de> FromMembers<'de> for GroupVersionKind<'de> {
    fn member<A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<(), A::Error> {
        match key {
            "group" => self.group = lenient(map)?,
            "version" => self.version = lenient(map)?,
            "kind" => self.kind = lenient(map)?,
            _ => skip(map)?,
        }
        Ok(())
    }
}

impl<'de> FromMembers<'de> for ObjectFields<'de> {
    fn member<A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<(), A::Error> {
        match key {
            "kind" => self.kind = lenient(map)?,
            "metadata" => self.name = lenient::<Metadata<'de>, A>(map)?.and_then(|m| m.name),
            "spec" => self.spec = Some(map.next_value::<&'de RawValue>()?),
            _ => skip(map)?,
        }
        Ok(())
    }
}

impl<'de> FromMembers<'de> for Metadata<'de> {
    fn member<A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<(), A::Error> {
        match key {
            "name" => self.name = lenient(map)?,
            _ => skip(map)?,
        }
        Ok(())
    }
}

/// What `Lenient<T>` keeps of each JSON value.
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
    fn from_map<A: MapAccess<'de>>(mut map: A) -> Result<Option<Self>, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(None)
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
    fn from_map<A: MapAccess<'de>>(mut map: A) -> Result<Option<Self>, A::Error> {
        let mut fields = T::default();
        while let Some(Key(key)) = map.next_key()? {
            fields.member(&key, &mut map)?;
        }
        Ok(Some(fields))
    }
}

struct LenientVisitor<T>(PhantomData<T>);

fn shaped<T>(value: Option<T>) -> Lenient<T> {
    Lenient(value.map_or(Found::Other, Found::Value))
}

impl<'de, T: Shape<'de>> Visitor<'de> for LenientVisitor<T> {
    type Value = Lenient<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_borrowed_str<E: de::Error>(self, value: &'de str) -> Result<Self::Value, E> {
        Ok(shaped(T::from_borrowed_str(value)))
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<Self::Value, E> {
        Ok(shaped(T::from_str(value)))
    }

    fn visit_bool<E: de::Error>(self, value: bool) -> Result<Self::Value, E> {
        Ok(shaped(T::from_bool(value)))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        T::from_map(map).map(shaped)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Lenient(Found::Other))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Lenient(Found::Null))
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Ok(Lenient(Found::Other))
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Ok(Lenient(Found::Other))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Lenient(Found::Other))
    }
}

impl<'de, T: Shape<'de>> Deserialize<'de> for Lenient<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(LenientVisitor(PhantomData))
    }
}
