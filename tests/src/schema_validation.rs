//! Validation of custom resources against their CRD's structural schema, as
//! kube-apiserver's apiextensions strategy does on every create, update and
//! `/status` write, after mutating admission and before validating admission
//! (<https://kubernetes.io/docs/tasks/extend-kubernetes/custom-resources/custom-resource-definitions/#validation>).
//! Messages are kube-openapi's, turned into `field.Error`s the way
//! apiextensions' `ConvertSchemaValidationErrors` turns them
//! (`spec.image: Required value`,
//! `spec.x: Invalid value: "string": spec.x in body must be of type integer: "string"`).
//!
//! `apiVersion`, `kind` and `metadata` are ObjectMeta's, validated elsewhere;
//! `format` applies to strings only, as in kube-openapi (so `int32` bounds are
//! not checked, as kube-apiserver does not check them).

use serde_json::Value;

/// One failed rule: the field path (`spec.image`), the `StatusCause` reason and
/// the message without the path (`Required value`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub reason: &'static str,
    pub message: String,
}

/// Every rule `object` breaks in `schema` (a version's `openAPIV3Schema`).
pub fn validate(schema: &Value, object: &Value) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let Some(map) = object.as_object() else {
        errors.push(type_error("", "object", object));
        return errors;
    };
    check_required(schema, map, "", &mut errors);
    let properties = schema.get("properties").and_then(Value::as_object);
    for (key, value) in map {
        if matches!(key.as_str(), "apiVersion" | "kind" | "metadata") {
            continue;
        }
        if let Some(property) = properties.and_then(|p| p.get(key)) {
            check(property, value, key, &mut errors);
        }
    }
    errors
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// `field.TypeInvalid(path, actualType, "<path> in body must be of type <t>: \"<actualType>\"")`.
fn type_error(path: &str, expected: &str, value: &Value) -> FieldError {
    let actual = type_name(value);
    FieldError {
        field: path.to_owned(),
        reason: "FieldValueTypeInvalid",
        message: format!("Invalid value: \"{actual}\": {path} in body must be of type {expected}: \"{actual}\""),
    }
}

fn invalid(path: &str, value: &Value, detail: String) -> FieldError {
    FieldError {
        field: path.to_owned(),
        reason: "FieldValueInvalid",
        message: format!("Invalid value: {}: {detail}", shown(value)),
    }
}

/// A value as `field.Error` prints it: strings quoted, numbers bare.
fn shown(value: &Value) -> String {
    match value {
        Value::String(s) => format!("{s:?}"),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Null => "\"null\"".to_owned(),
        other => format!("{:?}", type_name(other)),
    }
}

fn check_required(schema: &Value, map: &serde_json::Map<String, Value>, path: &str, errors: &mut Vec<FieldError>) {
    for required in schema
        .get("required")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        if !map.contains_key(required) {
            errors.push(FieldError {
                field: join(path, required),
                reason: "FieldValueRequired",
                message: "Required value".to_owned(),
            });
        }
    }
}

fn matches_type(expected: &str, value: &Value) -> bool {
    match (expected, value) {
        ("integer", Value::Number(n)) => n.is_i64() || n.is_u64() || n.as_f64().is_some_and(|f| f.fract() == 0.0),
        ("number", Value::Number(_)) => true,
        (expected, value) => expected == type_name(value),
    }
}

fn check(schema: &Value, value: &Value, path: &str, errors: &mut Vec<FieldError>) {
    if value.is_null() {
        // Non-nullable nulls were pruned or defaulted while decoding; those
        // left are array items or values under preserve-unknown-fields.
        if schema.get("nullable") != Some(&Value::Bool(true)) && schema.get("type").is_some() {
            let expected = schema.get("type").and_then(Value::as_str).unwrap_or_default();
            errors.push(type_error(path, expected, value));
        }
        return;
    }
    if schema.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true)) {
        if !matches!(value, Value::String(_)) && !matches_type("integer", value) {
            errors.push(type_error(path, "integer,string", value));
        }
        return;
    }
    if let Some(expected) = schema.get("type").and_then(Value::as_str)
        && !matches_type(expected, value)
    {
        errors.push(type_error(path, expected, value));
        return;
    }
    check_enum(schema, value, path, errors);
    match value {
        Value::String(text) => check_string(schema, text, value, path, errors),
        Value::Number(_) => check_number(schema, value, path, errors),
        Value::Array(items) => {
            check_count(
                schema,
                items.len(),
                ("maxItems", "minItems"),
                "items",
                value,
                path,
                errors,
            );
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    check(item_schema, item, &format!("{path}[{i}]"), errors);
                }
            }
        }
        Value::Object(map) => {
            check_count(
                schema,
                map.len(),
                ("maxProperties", "minProperties"),
                "properties",
                value,
                path,
                errors,
            );
            check_required(schema, map, path, errors);
            let properties = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties").filter(|a| a.is_object());
            for (key, item) in map {
                let child = join(path, key);
                match (properties.and_then(|p| p.get(key)), additional) {
                    (Some(property), _) | (None, Some(property)) => check(property, item, &child, errors),
                    (None, None) => {}
                }
            }
        }
        Value::Bool(_) | Value::Null => {}
    }
}

fn check_enum(schema: &Value, value: &Value, path: &str, errors: &mut Vec<FieldError>) {
    let Some(allowed) = schema.get("enum").and_then(Value::as_array) else {
        return;
    };
    if allowed.contains(value) {
        return;
    }
    let listed: Vec<String> = allowed.iter().map(shown).collect();
    errors.push(FieldError {
        field: path.to_owned(),
        reason: "FieldValueNotSupported",
        message: format!(
            "Unsupported value: {}: supported values: {}",
            shown(value),
            listed.join(", ")
        ),
    });
}

fn check_string(schema: &Value, text: &str, value: &Value, path: &str, errors: &mut Vec<FieldError>) {
    // kube-openapi counts characters (utf8.RuneCountInString).
    let length = text.chars().count() as u64;
    if let Some(max) = schema.get("maxLength").and_then(Value::as_u64)
        && length > max
    {
        let unit = if max == 1 { "byte" } else { "bytes" };
        errors.push(FieldError {
            field: path.to_owned(),
            reason: "FieldValueTooLong",
            message: format!("Too long: may not be more than {max} {unit}"),
        });
    }
    if let Some(min) = schema.get("minLength").and_then(Value::as_u64)
        && length < min
    {
        errors.push(invalid(
            path,
            value,
            format!("{path} in body should be at least {min} chars long"),
        ));
    }
    let format = schema.get("format").and_then(Value::as_str).unwrap_or_default();
    let valid = match format {
        "date-time" => is_date_time(text),
        "date" => is_date(text),
        "byte" => is_base64(text),
        // Formats kube-openapi does not know, and int32/int64 on strings, are not checked.
        _ => true,
    };
    if !valid {
        errors.push(invalid(
            path,
            value,
            format!("{path} in body must be of type {format}: {text:?}"),
        ));
    }
}

fn check_number(schema: &Value, value: &Value, path: &str, errors: &mut Vec<FieldError>) {
    let Some(number) = value.as_f64() else { return };
    if let Some(min) = schema.get("minimum").and_then(Value::as_f64) {
        let exclusive = schema.get("exclusiveMinimum") == Some(&Value::Bool(true));
        if number < min || (exclusive && number == min) {
            let relation = if exclusive {
                "greater than"
            } else {
                "greater than or equal to"
            };
            errors.push(invalid(
                path,
                value,
                format!("{path} in body should be {relation} {}", bare(min)),
            ));
        }
    }
    if let Some(max) = schema.get("maximum").and_then(Value::as_f64) {
        let exclusive = schema.get("exclusiveMaximum") == Some(&Value::Bool(true));
        if number > max || (exclusive && number == max) {
            let relation = if exclusive {
                "less than"
            } else {
                "less than or equal to"
            };
            errors.push(invalid(
                path,
                value,
                format!("{path} in body should be {relation} {}", bare(max)),
            ));
        }
    }
}

/// A bound as Go's `%v` prints a float64 that holds an integer.
fn bare(number: f64) -> String {
    if number.fract() == 0.0 && number.abs() < 1e15 {
        format!("{}", number as i64)
    } else {
        number.to_string()
    }
}

/// `maxItems`/`minItems` or `maxProperties`/`minProperties` on `count`.
fn check_count(
    schema: &Value,
    count: usize,
    (max_key, min_key): (&str, &str),
    noun: &str,
    value: &Value,
    path: &str,
    errors: &mut Vec<FieldError>,
) {
    let count = count as u64;
    if let Some(max) = schema.get(max_key).and_then(Value::as_u64)
        && count > max
    {
        errors.push(FieldError {
            field: path.to_owned(),
            reason: "FieldValueTooMany",
            message: format!("Too many: {count}: must have at most {max} {noun}"),
        });
    }
    if let Some(min) = schema.get(min_key).and_then(Value::as_u64)
        && count < min
    {
        errors.push(invalid(
            path,
            value,
            format!("{path} in body should have at least {min} {noun}"),
        ));
    }
}

fn digits(text: &str, count: usize) -> bool {
    text.len() == count && text.bytes().all(|b| b.is_ascii_digit())
}

/// `YYYY-MM-DD` with a real month and day.
fn is_date(text: &str) -> bool {
    let parts: Vec<&str> = text.split('-').collect();
    let [year, month, day] = parts.as_slice() else {
        return false;
    };
    if !(digits(year, 4) && digits(month, 2) && digits(day, 2)) {
        return false;
    }
    let (Ok(year), Ok(month), Ok(day)) = (year.parse::<u32>(), month.parse::<u32>(), day.parse::<u32>()) else {
        return false;
    };
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let days = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return false,
    };
    (1..=days).contains(&day)
}

/// RFC 3339 (`2026-12-02T10:00:00Z`, fractions and `+01:00` offsets too), the
/// layouts strfmt's `ParseDateTime` accepts.
fn is_date_time(text: &str) -> bool {
    let Some((date, time)) = text.split_once(['T', 't']) else {
        return false;
    };
    if !is_date(date) {
        return false;
    }
    let (clock, zone) = if let Some(clock) = time.strip_suffix(['Z', 'z']) {
        (clock, None)
    } else {
        match time.rfind(['+', '-']) {
            Some(at) => (&time[..at], Some(&time[at + 1..])),
            None => return false,
        }
    };
    let zone_ok = zone.is_none_or(|z| {
        let (hours, minutes) = z
            .split_once(':')
            .unwrap_or((z.get(..2).unwrap_or(z), z.get(2..).unwrap_or("")));
        digits(hours, 2) && digits(minutes, 2) && hours < "24" && minutes < "60"
    });
    let (whole, fraction) = clock.split_once('.').unwrap_or((clock, "1"));
    let fields: Vec<&str> = whole.split(':').collect();
    let clock_ok = matches!(fields.as_slice(), [h, m, s]
        if digits(h, 2) && digits(m, 2) && digits(s, 2) && *h < "24" && *m < "60" && *s < "61");
    zone_ok && clock_ok && !fraction.is_empty() && fraction.bytes().all(|b| b.is_ascii_digit())
}

fn is_base64(text: &str) -> bool {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(text).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn messages(schema: Value, object: Value) -> Vec<String> {
        validate(&schema, &object)
            .into_iter()
            .map(|e| format!("{}: {}", e.field, e.message))
            .collect()
    }

    fn job_schema() -> Value {
        json!({"type": "object", "properties": {
            "spec": {"type": "object", "required": ["image"], "properties": {
                "image": {"type": "string", "maxLength": 5},
                "parallelism": {"x-kubernetes-int-or-string": true},
                "policy": {"type": "string", "enum": ["Always", "IfNotPresent"]},
                "secrets": {"type": "array", "maxItems": 1, "items": {"type": "string"}},
                "timeout": {"type": "integer", "format": "int32", "minimum": 1},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "at": {"type": "string", "format": "date-time"},
                "note": {"type": "string", "nullable": true}
            }}
        }})
    }

    #[test]
    fn messages_are_kube_apiservers() {
        assert_eq!(
            messages(job_schema(), json!({"spec": {}})),
            ["spec.image: Required value"]
        );
        assert_eq!(
            messages(job_schema(), json!({"spec": {"image": "a", "timeout": "abc"}})),
            [r#"spec.timeout: Invalid value: "string": spec.timeout in body must be of type integer: "string""#]
        );
        assert_eq!(
            messages(job_schema(), json!({"spec": {"image": "a", "policy": "Never"}})),
            [r#"spec.policy: Unsupported value: "Never": supported values: "Always", "IfNotPresent""#]
        );
        assert_eq!(
            messages(job_schema(), json!({"spec": {"image": "abcdef"}})),
            ["spec.image: Too long: may not be more than 5 bytes"]
        );
        assert_eq!(
            messages(job_schema(), json!({"spec": {"image": "a", "secrets": ["x", "y"]}})),
            ["spec.secrets: Too many: 2: must have at most 1 items"]
        );
        assert_eq!(
            messages(job_schema(), json!({"spec": {"image": "a", "timeout": 0}})),
            ["spec.timeout: Invalid value: 0: spec.timeout in body should be greater than or equal to 1"]
        );
        assert_eq!(
            messages(job_schema(), json!({"spec": {"image": "a", "at": "yesterday"}})),
            [r#"spec.at: Invalid value: "yesterday": spec.at in body must be of type date-time: "yesterday""#]
        );
    }

    #[test]
    fn int_or_string_nullable_maps_and_arrays() {
        for parallelism in [json!(3), json!("25%"), json!(2.0)] {
            assert!(
                messages(
                    job_schema(),
                    json!({"spec": {"image": "a", "parallelism": parallelism}})
                )
                .is_empty()
            );
        }
        assert_eq!(
            messages(job_schema(), json!({"spec": {"image": "a", "parallelism": true}})),
            [
                r#"spec.parallelism: Invalid value: "boolean": spec.parallelism in body must be of type integer,string: "boolean""#
            ]
        );
        assert!(messages(job_schema(), json!({"spec": {"image": "a", "note": null}})).is_empty());
        assert_eq!(
            messages(
                job_schema(),
                json!({"spec": {"image": "a", "labels": {"k": 1}, "secrets": [null]}})
            ),
            [
                r#"spec.labels.k: Invalid value: "integer": spec.labels.k in body must be of type string: "integer""#,
                r#"spec.secrets[0]: Invalid value: "null": spec.secrets[0] in body must be of type string: "null""#,
            ]
        );
        assert_eq!(
            messages(job_schema(), json!({"spec": "x"})),
            [r#"spec: Invalid value: "string": spec in body must be of type object: "string""#]
        );
    }

    #[test]
    fn date_times_as_rfc_3339() {
        for good in [
            "2026-12-02T10:00:00Z",
            "2026-12-02T10:00:00.123456789Z",
            "2024-02-29T23:59:59+01:00",
            "2026-12-02t10:00:00-0530",
        ] {
            assert!(is_date_time(good), "{good}");
        }
        for bad in [
            "2026-12-02",
            "2026-13-02T10:00:00Z",
            "2025-02-29T10:00:00Z",
            "2026-12-02T25:00:00Z",
            "2026-12-02T10:00:00",
            "2026-12-02T10:00:00.Z",
            "2026-12-02T10:00Z",
        ] {
            assert!(!is_date_time(bad), "{bad}");
        }
    }

    #[test]
    fn metadata_and_unknown_fields_are_not_this_validators() {
        let schema = json!({"type": "object", "required": ["spec"], "properties": {"spec": {"type": "object"}}});
        assert_eq!(
            messages(schema.clone(), json!({"metadata": {"name": 1}})),
            ["spec: Required value"]
        );
        assert!(messages(schema, json!({"spec": {}, "other": 1})).is_empty());
    }
}
