//! The AdmissionReview envelope read in one pass over the body: the members
//! the webhook uses are kept (the object and old object as `Value`s, for the
//! rules), everything else is skipped without building a tree. Reading is
//! lenient as a `Value` would be: a member of the wrong JSON type counts as
//! absent, and a repeated key keeps its last value.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::Value;

/// `apiVersion`, `kind` and `request` of an AdmissionReview.
#[derive(Debug, Default)]
pub struct Envelope {
    pub api_version: Option<String>,
    pub kind: Option<String>,
    /// `None` when absent or not an object.
    pub request: Option<RequestFields>,
}

/// The members of `request` the webhook reads.
#[derive(Debug, Default)]
pub struct RequestFields {
    pub uid: Option<String>,
    pub name: Option<String>,
    pub namespace: Option<String>,
    pub operation: Option<String>,
    pub sub_resource: Option<String>,
    pub dry_run: Option<bool>,
    /// `request.kind`, `None` when absent or not an object.
    pub kind: Option<GroupVersionKind>,
    /// `None` when absent or null.
    pub object: Option<Value>,
    pub old_object: Option<Value>,
}

#[derive(Debug, Default)]
pub struct GroupVersionKind {
    pub group: Option<String>,
    pub version: Option<String>,
    pub kind: Option<String>,
}

impl Envelope {
    pub fn parse(body: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice::<Lenient<Envelope>>(body).map(|l| l.0.unwrap_or_default())
    }
}

/// A value of the expected shape, or `None` for any other JSON value.
struct Lenient<T>(Option<T>);

/// Types that read themselves from a JSON object's members.
trait FromMembers: Default {
    fn member<'de, A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<(), A::Error>;
}

fn take<'de, T: Deserialize<'de>, A: MapAccess<'de>>(map: &mut A) -> Result<T, A::Error> {
    map.next_value::<T>()
}

impl FromMembers for Envelope {
    fn member<'de, A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<(), A::Error> {
        match key {
            "apiVersion" => self.api_version = take::<Lenient<String>, A>(map)?.0,
            "kind" => self.kind = take::<Lenient<String>, A>(map)?.0,
            "request" => self.request = take::<Lenient<RequestFields>, A>(map)?.0,
            _ => {
                take::<IgnoredAny, A>(map)?;
            }
        }
        Ok(())
    }
}

impl FromMembers for RequestFields {
    fn member<'de, A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<(), A::Error> {
        match key {
            "uid" => self.uid = take::<Lenient<String>, A>(map)?.0,
            "name" => self.name = take::<Lenient<String>, A>(map)?.0,
            "namespace" => self.namespace = take::<Lenient<String>, A>(map)?.0,
            "operation" => self.operation = take::<Lenient<String>, A>(map)?.0,
            "subResource" => self.sub_resource = take::<Lenient<String>, A>(map)?.0,
            "dryRun" => self.dry_run = take::<Lenient<bool>, A>(map)?.0,
            "kind" => self.kind = take::<Lenient<GroupVersionKind>, A>(map)?.0,
            "object" => self.object = take::<Option<Value>, A>(map)?.filter(|v| !v.is_null()),
            "oldObject" => self.old_object = take::<Option<Value>, A>(map)?.filter(|v| !v.is_null()),
            _ => {
                take::<IgnoredAny, A>(map)?;
            }
        }
        Ok(())
    }
}

impl FromMembers for GroupVersionKind {
    fn member<'de, A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<(), A::Error> {
        match key {
            "group" => self.group = take::<Lenient<String>, A>(map)?.0,
            "version" => self.version = take::<Lenient<String>, A>(map)?.0,
            "kind" => self.kind = take::<Lenient<String>, A>(map)?.0,
            _ => {
                take::<IgnoredAny, A>(map)?;
            }
        }
        Ok(())
    }
}

/// Accepts any JSON value; keeps it only when it has the expected shape.
struct LenientVisitor<T>(std::marker::PhantomData<T>);

macro_rules! reject {
    ($($method:ident: $type:ty),*) => {
        $(fn $method<E: de::Error>(self, _: $type) -> Result<Self::Value, E> {
            Ok(Lenient(None))
        })*
    };
}

/// What `Lenient<T>` keeps of each JSON value.
trait Shape: Sized {
    fn from_str(_: &str) -> Option<Self> {
        None
    }
    fn from_bool(_: bool) -> Option<Self> {
        None
    }
    fn from_map<'de, A: MapAccess<'de>>(map: A) -> Result<Option<Self>, A::Error> {
        skip_map(map).map(|()| None)
    }
}

fn skip_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<(), A::Error> {
    while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
    Ok(())
}

impl Shape for String {
    fn from_str(text: &str) -> Option<Self> {
        Some(text.to_owned())
    }
}

impl Shape for bool {
    fn from_bool(value: bool) -> Option<Self> {
        Some(value)
    }
}

impl<T: FromMembers> Shape for T {
    fn from_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<Option<Self>, A::Error> {
        let mut fields = T::default();
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            fields.member(&key, &mut map)?;
        }
        Ok(Some(fields))
    }
}

impl<'de, T: Shape> Visitor<'de> for LenientVisitor<T> {
    type Value = Lenient<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<Self::Value, E> {
        Ok(Lenient(T::from_str(value)))
    }

    fn visit_bool<E: de::Error>(self, value: bool) -> Result<Self::Value, E> {
        Ok(Lenient(T::from_bool(value)))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        T::from_map(map).map(Lenient)
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Lenient(None))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Lenient(None))
    }

    reject!(visit_i64: i64, visit_u64: u64, visit_f64: f64);
}

impl<'de, T: Shape> Deserialize<'de> for Lenient<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(LenientVisitor(std::marker::PhantomData))
    }
}
