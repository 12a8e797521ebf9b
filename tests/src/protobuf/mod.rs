//! Request bodies in Kubernetes' protobuf encoding, which kubectl uses for the
//! built-in kinds of its `create` subcommands and for `kubectl auth`'s reviews.
//! The envelope is `k8s\0` and a `runtime.Unknown` holding the object. Objects
//! are decoded into their JSON form by one wire decoder driven by `schema`: the
//! field numbers and JSON names of every message reachable from the kinds this
//! server stores, generated from the k8s-pb crate (field numbers) and
//! k8s-openapi (JSON names) by `scripts/protobuf-schema.py`. k8s-pb alone has
//! the types but no JSON mapping or descriptors to decode by; a field the
//! schema does not know is refused with 415 rather than dropped.
//!
//! The wire does not tell a Go pointer from a value: zero numbers and `false`
//! are kept (a set pointer's zero means something, a value's zero is what
//! absent means anyway), empty strings are left out as Go's JSON does.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Map, Value, json};

mod schema;

/// What every protobuf-encoded Kubernetes body starts with.
pub const MAGIC: &[u8] = b"k8s\0";

/// Deeper nesting than any Kubernetes object needs is refused, so that a
/// hostile body cannot exhaust the stack.
const MAX_DEPTH: usize = 64;

/// How a field's value is encoded and what JSON it becomes.
#[derive(Debug)]
enum Kind {
    Str,
    Bytes,
    Bool,
    Int,
    Double,
    Message(&'static str),
    /// A message whose fields are the parent's in JSON (Go's `json:",inline"`).
    Inline(&'static str),
    /// `map<string, V>`: entries with the key as field 1 and the value as 2.
    Map(&'static Kind),
    Time,
    MicroTime,
    IntOrString,
    Quantity,
    RawJson,
    SchemaOrArray,
    SchemaOrBool,
    SchemaOrStringArray,
    StringList,
}

#[derive(Debug)]
struct Field {
    number: u64,
    json: &'static str,
    kind: Kind,
    repeated: bool,
}

#[derive(Debug)]
struct Message {
    name: &'static str,
    fields: &'static [Field],
}

const SCHEMA_PROPS: &str = "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.JSONSchemaProps";

/// Why a protobuf body cannot be used.
#[derive(Debug, PartialEq, Eq)]
pub enum ProtobufError {
    /// Not a well-formed envelope or message: a bad request.
    Malformed(String),
    /// Well-formed, but of a kind or with a field this server does not decode.
    Unsupported(String),
}

fn malformed(what: impl std::fmt::Display) -> ProtobufError {
    ProtobufError::Malformed(what.to_string())
}

/// One field as it is on the wire.
#[derive(Clone, Copy, Debug)]
enum Wire<'a> {
    Varint(u64),
    Fixed64(u64),
    Bytes(&'a [u8]),
    /// No Kubernetes field is a 32-bit fixed value: read past, never used.
    Fixed32,
}

/// The fields of one message, in order.
struct Fields<'a> {
    rest: &'a [u8],
}

fn varint(bytes: &mut &[u8]) -> Result<u64, ProtobufError> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = bytes.split_first().ok_or_else(|| malformed("a varint is cut short"))?;
        *bytes = rest;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(malformed("a varint is longer than 10 bytes"))
}

fn take<'a>(bytes: &mut &'a [u8], n: usize) -> Result<&'a [u8], ProtobufError> {
    if bytes.len() < n {
        return Err(malformed(format!("{n} bytes announced, {} left", bytes.len())));
    }
    let (head, rest) = bytes.split_at(n);
    *bytes = rest;
    Ok(head)
}

impl<'a> Iterator for Fields<'a> {
    type Item = Result<(u64, Wire<'a>), ProtobufError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let mut read = || -> Result<(u64, Wire<'a>), ProtobufError> {
            let key = varint(&mut self.rest)?;
            let wire = match key & 7 {
                0 => Wire::Varint(varint(&mut self.rest)?),
                1 => Wire::Fixed64(u64::from_le_bytes(
                    take(&mut self.rest, 8)?.try_into().map_err(malformed)?,
                )),
                2 => {
                    let len = usize::try_from(varint(&mut self.rest)?).map_err(malformed)?;
                    Wire::Bytes(take(&mut self.rest, len)?)
                }
                5 => {
                    take(&mut self.rest, 4)?;
                    Wire::Fixed32
                }
                other => return Err(malformed(format!("wire type {other} is not used by Kubernetes"))),
            };
            Ok((key >> 3, wire))
        };
        let item = read();
        if item.is_err() {
            self.rest = &[];
        }
        Some(item)
    }
}

fn fields(bytes: &[u8]) -> Fields<'_> {
    Fields { rest: bytes }
}

fn message(name: &str) -> Option<&'static Message> {
    let at = schema::MESSAGES.binary_search_by(|m| m.name.cmp(name)).ok()?;
    schema::MESSAGES.get(at)
}

fn bytes_of<'a>(wire: Wire<'a>, what: &str) -> Result<&'a [u8], ProtobufError> {
    match wire {
        Wire::Bytes(bytes) => Ok(bytes),
        other => Err(malformed(format!(
            "{what}: expected a length-delimited value, found {other:?}"
        ))),
    }
}

fn string_of(wire: Wire<'_>, what: &str) -> Result<String, ProtobufError> {
    let bytes = bytes_of(wire, what)?;
    String::from_utf8(bytes.to_vec()).map_err(|_| malformed(format!("{what}: not UTF-8")))
}

fn int_of(wire: Wire<'_>, what: &str) -> Result<i64, ProtobufError> {
    match wire {
        // Negative int32 and int64 are sent as ten-byte two's complement.
        Wire::Varint(v) => Ok(v as i64),
        other => Err(malformed(format!("{what}: expected a varint, found {other:?}"))),
    }
}

/// The JSON object of message `name` encoded in `bytes`.
fn object(name: &str, bytes: &[u8], depth: usize) -> Result<Map<String, Value>, ProtobufError> {
    if depth > MAX_DEPTH {
        return Err(malformed(format!("{name}: nested more than {MAX_DEPTH} deep")));
    }
    let message = message(name).ok_or_else(|| ProtobufError::Unsupported(format!("no protobuf schema for {name}")))?;
    let mut out = Map::new();
    // Repeated fields and map entries gather here and go into `out` at the end.
    let mut lists: Vec<(&str, Vec<Value>)> = Vec::new();
    let mut maps: Vec<(&str, Map<String, Value>)> = Vec::new();
    for item in fields(bytes) {
        let (number, wire) = item?;
        let field = message.fields.iter().find(|f| f.number == number).ok_or_else(|| {
            ProtobufError::Unsupported(format!(
                "field {number} of {name} is not known to this server (newer than its schema); send JSON"
            ))
        })?;
        let what = format!("{name}.{}", field.json);
        match (&field.kind, field.repeated, wire) {
            (Kind::Inline(inner), _, wire) => out.extend(object(inner, bytes_of(wire, &what)?, depth + 1)?),
            (Kind::Map(value_kind), _, wire) => {
                let (key, value) = map_entry(value_kind, bytes_of(wire, &what)?, &what, depth)?;
                entry(&mut maps, field.json).insert(key, value);
            }
            // Packed repeated numbers (proto3 style), accepted as protobuf allows.
            (Kind::Int, true, Wire::Bytes(mut packed)) => {
                let list = entry(&mut lists, field.json);
                while !packed.is_empty() {
                    list.push(json!(varint(&mut packed)? as i64));
                }
            }
            (kind, true, wire) => entry(&mut lists, field.json).push(value(kind, wire, &what, depth)?),
            // Go sends every string field that is not a pointer, empty ones
            // too, and its JSON leaves them out (omitempty); so does this.
            (Kind::Str, false, Wire::Bytes([])) => {}
            (kind, false, wire) => {
                out.insert(field.json.to_owned(), value(kind, wire, &what, depth)?);
            }
        }
    }
    out.extend(lists.into_iter().map(|(k, v)| (k.to_owned(), Value::Array(v))));
    out.extend(maps.into_iter().map(|(k, v)| (k.to_owned(), Value::Object(v))));
    Ok(out)
}

/// The collection gathered for `key`, started when absent.
fn entry<'e, T: Default>(entries: &'e mut Vec<(&str, T)>, key: &'static str) -> &'e mut T {
    let at = match entries.iter().position(|(k, _)| *k == key) {
        Some(at) => at,
        None => {
            entries.push((key, T::default()));
            entries.len() - 1
        }
    };
    &mut entries[at].1
}

fn map_entry(value_kind: &Kind, bytes: &[u8], what: &str, depth: usize) -> Result<(String, Value), ProtobufError> {
    let (mut key, mut value) = (String::new(), None);
    for item in fields(bytes) {
        match item? {
            (1, wire) => key = string_of(wire, what)?,
            (2, wire) => value = Some(self::value(value_kind, wire, what, depth)?),
            (other, _) => return Err(malformed(format!("{what}: map entry with field {other}"))),
        }
    }
    // An absent value is the type's zero value.
    let value = match value {
        Some(value) => value,
        None => self::value(value_kind, Wire::Bytes(&[]), what, depth)?,
    };
    Ok((key, value))
}

fn value(kind: &Kind, wire: Wire<'_>, what: &str, depth: usize) -> Result<Value, ProtobufError> {
    Ok(match kind {
        Kind::Str => Value::String(string_of(wire, what)?),
        Kind::Bytes => Value::String(BASE64.encode(bytes_of(wire, what)?)),
        Kind::Bool => Value::Bool(int_of(wire, what)? != 0),
        Kind::Int => json!(int_of(wire, what)?),
        Kind::Double => match wire {
            Wire::Fixed64(bits) => json!(f64::from_bits(bits)),
            other => return Err(malformed(format!("{what}: expected a double, found {other:?}"))),
        },
        Kind::Message(name) | Kind::Inline(name) => Value::Object(object(name, bytes_of(wire, what)?, depth + 1)?),
        Kind::Map(_) => return Err(malformed(format!("{what}: a map inside a map"))),
        Kind::Time => time(bytes_of(wire, what)?, what, false)?,
        Kind::MicroTime => time(bytes_of(wire, what)?, what, true)?,
        Kind::IntOrString => {
            let (mut is_string, mut int, mut string) = (false, 0, String::new());
            for item in fields(bytes_of(wire, what)?) {
                match item? {
                    (1, wire) => is_string = int_of(wire, what)? == 1,
                    (2, wire) => int = int_of(wire, what)?,
                    (3, wire) => string = string_of(wire, what)?,
                    _ => {}
                }
            }
            if is_string { json!(string) } else { json!(int as i32) }
        }
        Kind::Quantity => match first_field(bytes_of(wire, what)?)? {
            Some(wire) => Value::String(string_of(wire, what)?),
            None => Value::String(String::new()),
        },
        Kind::RawJson => {
            let raw = match first_field(bytes_of(wire, what)?)? {
                Some(wire) => bytes_of(wire, what)?,
                None => &[],
            };
            if raw.is_empty() {
                Value::Null
            } else {
                serde_json::from_slice(raw).map_err(|e| malformed(format!("{what}: embedded JSON: {e}")))?
            }
        }
        Kind::StringList => {
            let mut items = Vec::new();
            for item in fields(bytes_of(wire, what)?) {
                if let (1, wire) = item? {
                    items.push(Value::String(string_of(wire, what)?));
                }
            }
            Value::Array(items)
        }
        Kind::SchemaOrArray | Kind::SchemaOrBool | Kind::SchemaOrStringArray => {
            schema_or(kind, bytes_of(wire, what)?, what, depth)?
        }
    })
}

/// Field 1 of a wrapper message (`Quantity`, `RawExtension`), the last one
/// sent as protobuf wants, or `None` when it is absent.
fn first_field(bytes: &[u8]) -> Result<Option<Wire<'_>>, ProtobufError> {
    let mut found = None;
    for item in fields(bytes) {
        if let (1, wire) = item? {
            found = Some(wire);
        }
    }
    Ok(found)
}

/// A JSON schema, or in its place an array of schemas, a boolean or an array
/// of strings (`JSONSchemaPropsOr…`): the schema when one is given.
fn schema_or(kind: &Kind, bytes: &[u8], what: &str, depth: usize) -> Result<Value, ProtobufError> {
    let (mut schema, mut alternative) = (None, Vec::new());
    let mut allows = false;
    for item in fields(bytes) {
        match (kind, item?) {
            (Kind::SchemaOrArray, (1, wire))
            | (Kind::SchemaOrBool, (2, wire))
            | (Kind::SchemaOrStringArray, (1, wire)) => {
                schema = Some(Value::Object(object(SCHEMA_PROPS, bytes_of(wire, what)?, depth + 1)?));
            }
            (Kind::SchemaOrArray, (2, wire)) => {
                alternative.push(Value::Object(object(SCHEMA_PROPS, bytes_of(wire, what)?, depth + 1)?));
            }
            (Kind::SchemaOrBool, (1, wire)) => allows = int_of(wire, what)? != 0,
            (Kind::SchemaOrStringArray, (2, wire)) => alternative.push(Value::String(string_of(wire, what)?)),
            (_, (other, _)) => return Err(malformed(format!("{what}: field {other}"))),
        }
    }
    Ok(match (schema, kind) {
        (Some(schema), _) => schema,
        (None, Kind::SchemaOrBool) => Value::Bool(allows),
        (None, _) => Value::Array(alternative),
    })
}

/// A `Time` or `MicroTime` (seconds and nanoseconds since the epoch) as
/// RFC 3339; the zero time, sent as an empty message, is null as in Go.
fn time(bytes: &[u8], what: &str, micro: bool) -> Result<Value, ProtobufError> {
    let (mut seconds, mut nanos) = (0i64, 0i64);
    for item in fields(bytes) {
        match item? {
            (1, wire) => seconds = int_of(wire, what)?,
            (2, wire) => nanos = int_of(wire, what)?,
            _ => {}
        }
    }
    if seconds == 0 && nanos == 0 {
        return Ok(Value::Null);
    }
    let at = k8s_openapi::jiff::Timestamp::new(seconds, i32::try_from(nanos).unwrap_or(0))
        .map_err(|e| malformed(format!("{what}: {e}")))?;
    let format = if micro {
        "%Y-%m-%dT%H:%M:%S%.6fZ"
    } else {
        "%Y-%m-%dT%H:%M:%SZ"
    };
    Ok(Value::String(at.strftime(format).to_string()))
}

/// The proto message of a built-in kind: `io.k8s.api.<group>.<version>.<Kind>`,
/// or apiextensions' own package.
fn root_message(api_version: &str, kind: &str) -> String {
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let package = match group {
        "" => "io.k8s.api.core".to_owned(),
        "apiextensions.k8s.io" => "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions".to_owned(),
        group => format!("io.k8s.api.{}", group.split('.').next().unwrap_or(group)),
    };
    format!("{package}.{version}.{kind}")
}

/// The JSON form of a protobuf request body (which starts with [`MAGIC`]).
pub fn decode(body: &[u8]) -> Result<Value, ProtobufError> {
    let envelope = body.get(MAGIC.len()..).unwrap_or_default();
    let (mut api_version, mut kind, mut raw) = (String::new(), String::new(), &[][..]);
    for item in fields(envelope) {
        match item.map_err(|e| match e {
            ProtobufError::Malformed(why) => malformed(format!("the protobuf envelope: {why}")),
            other => other,
        })? {
            (1, wire) => {
                for item in fields(bytes_of(wire, "typeMeta")?) {
                    match item? {
                        (1, wire) => api_version = string_of(wire, "typeMeta.apiVersion")?,
                        (2, wire) => kind = string_of(wire, "typeMeta.kind")?,
                        _ => {}
                    }
                }
            }
            (2, wire) => raw = bytes_of(wire, "raw")?,
            (3, wire) if !bytes_of(wire, "contentEncoding")?.is_empty() => {
                return Err(ProtobufError::Unsupported(
                    "protobuf bodies with a contentEncoding are not decoded; send JSON".into(),
                ));
            }
            _ => {}
        }
    }
    let name = root_message(&api_version, &kind);
    if message(&name).is_none() {
        return Err(ProtobufError::Unsupported(format!(
            "protobuf request bodies are decoded for the built-in kinds this server stores, and {api_version} {kind} is not one; send JSON (for example kubectl apply -f)"
        )));
    }
    let mut object = Map::new();
    object.insert("apiVersion".to_owned(), json!(api_version));
    object.insert("kind".to_owned(), json!(kind));
    object.extend(self::object(&name, raw, 0)?);
    Ok(Value::Object(object))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Field `number` as a length-delimited value.
    fn bytes_field(number: u64, value: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        put_varint(&mut out, number << 3 | 2);
        put_varint(&mut out, value.len() as u64);
        out.extend_from_slice(value);
        out
    }

    fn varint_field(number: u64, value: u64) -> Vec<u8> {
        let mut out = Vec::new();
        put_varint(&mut out, number << 3);
        put_varint(&mut out, value);
        out
    }

    fn put_varint(out: &mut Vec<u8>, mut value: u64) {
        while value >= 0x80 {
            out.push((value as u8) | 0x80);
            value >>= 7;
        }
        out.push(value as u8);
    }

    fn envelope(api_version: &str, kind: &str, raw: &[u8]) -> Vec<u8> {
        let type_meta = [bytes_field(1, api_version.as_bytes()), bytes_field(2, kind.as_bytes())].concat();
        [MAGIC.to_vec(), bytes_field(1, &type_meta), bytes_field(2, raw)].concat()
    }

    #[test]
    fn schema_is_sorted_and_every_message_it_names_is_in_it() {
        let names: Vec<&str> = schema::MESSAGES.iter().map(|m| m.name).collect();
        assert!(names.windows(2).all(|w| w[0] < w[1]), "sorted for binary search");
        for field in schema::MESSAGES.iter().flat_map(|m| m.fields) {
            let mut kind = &field.kind;
            if let Kind::Map(value) = kind {
                kind = value;
            }
            if let Kind::Message(name) | Kind::Inline(name) = kind {
                assert!(message(name).is_some(), "{name}");
            }
        }
    }

    #[test]
    fn a_deployment_decodes_to_its_json_form() {
        let meta = [
            bytes_field(1, b"web"),
            bytes_field(3, b"team"),
            bytes_field(11, &[bytes_field(1, b"app"), bytes_field(2, b"web")].concat()),
        ]
        .concat();
        // A container with a port and a CPU limit; an int-or-string max surge.
        let quantity = bytes_field(1, b"500m");
        let limits = bytes_field(1, &[bytes_field(1, b"cpu"), bytes_field(2, &quantity)].concat());
        let container = [
            bytes_field(1, b"nginx"),
            bytes_field(2, b"nginx:1.27"),
            bytes_field(6, &varint_field(3, 80)),
            bytes_field(8, &limits),
        ]
        .concat();
        let pod_spec = bytes_field(2, &container);
        let template = bytes_field(2, &pod_spec);
        let surge = [varint_field(1, 1), bytes_field(3, b"25%")].concat();
        let strategy = [
            bytes_field(1, b"RollingUpdate"),
            bytes_field(2, &bytes_field(2, &surge)),
        ]
        .concat();
        let created = [varint_field(1, 1_767_225_600)].concat();
        let meta = [meta, bytes_field(8, &created)].concat();
        let spec = [varint_field(1, 2), bytes_field(3, &template), bytes_field(4, &strategy)].concat();
        let raw = [bytes_field(1, &meta), bytes_field(2, &spec)].concat();
        let decoded = decode(&envelope("apps/v1", "Deployment", &raw));
        assert_eq!(
            decoded,
            Ok(json!({"apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "web", "namespace": "team", "labels": {"app": "web"}, "creationTimestamp": "2026-01-01T00:00:00Z"},
                "spec": {"replicas": 2,
                    "template": {"spec": {"containers": [{"name": "nginx", "image": "nginx:1.27",
                        "ports": [{"containerPort": 80}], "resources": {"limits": {"cpu": "500m"}}}]}},
                    "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%"}}}}))
        );
    }

    #[test]
    fn inline_messages_and_zero_times_read_as_in_go() {
        // A Volume's VolumeSource is inline: its emptyDir sits beside the name.
        let volume = [bytes_field(1, b"cache"), bytes_field(2, &bytes_field(2, &[]))].concat();
        let pod_spec = bytes_field(1, &volume);
        let raw = [bytes_field(1, &bytes_field(8, &[])), bytes_field(2, &pod_spec)].concat();
        assert_eq!(
            decode(&envelope("v1", "Pod", &raw)),
            Ok(
                json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"creationTimestamp": null},
                      "spec": {"volumes": [{"name": "cache", "emptyDir": {}}]}})
            )
        );
    }

    #[test]
    fn what_cannot_be_decoded_is_refused_clearly() {
        let unknown_kind = decode(&envelope("batch/v1", "Job", &[]));
        assert!(
            matches!(&unknown_kind, Err(ProtobufError::Unsupported(m)) if m.contains("batch/v1 Job is not one")),
            "{unknown_kind:?}"
        );
        let unknown_field = decode(&envelope("v1", "Namespace", &bytes_field(99, b"x")));
        assert!(
            matches!(&unknown_field, Err(ProtobufError::Unsupported(m)) if m.contains("field 99 of io.k8s.api.core.v1.Namespace")),
            "{unknown_field:?}"
        );
        assert!(matches!(decode(b"k8s\0\xff\xff"), Err(ProtobufError::Malformed(_))));
        let cut = decode(&envelope("v1", "Namespace", &[0x0a, 0x05, b'a']));
        assert!(
            matches!(&cut, Err(ProtobufError::Malformed(m)) if m.contains("5 bytes announced")),
            "{cut:?}"
        );
        // A schema nested (through `not`) deeper than any real one.
        let mut nested = Vec::new();
        for _ in 0..200 {
            nested = bytes_field(28, &nested);
        }
        let deep = object(SCHEMA_PROPS, &nested, 0);
        assert!(
            matches!(&deep, Err(ProtobufError::Malformed(m)) if m.contains("nested more than 64 deep")),
            "{deep:?}"
        );
    }
}
