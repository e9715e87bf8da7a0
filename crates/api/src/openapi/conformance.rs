//! Whether a JSON value is what a schema of the document says: every field documented,
//! every required field sent, and each value of its documented type (`integer`,
//! `number`, `string`, `boolean`, `array`, `object`, `null`, an enum's values),
//! following `$ref`, `allOf` and `oneOf`. For the tests: this crate's hold sample
//! answers of every response type to their schemas, `tests/openapi.rs` a running
//! server's answers.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

/// Follows `$ref`s into `components/schemas`.
pub fn resolve<'a>(doc: &'a Value, mut schema: &'a Value) -> &'a Value {
    // A chain longer than the document's schemas is a cycle.
    for _ in 0..=doc["components"]["schemas"].as_object().map_or(0, |s| s.len()) {
        let Some(r) = schema.get("$ref").and_then(Value::as_str) else { return schema };
        schema =
            r.strip_prefix("#/components/schemas/").map_or(&Value::Null, |name| &doc["components"]["schemas"][name]);
    }
    &Value::Null
}

/// The JSON Schema type names a value has (an integer is also a number).
fn types_of(value: &Value) -> &'static [&'static str] {
    match value {
        Value::Null => &["null"],
        Value::Bool(_) => &["boolean"],
        Value::Number(n) if n.is_f64() => &["number"],
        Value::Number(_) => &["integer", "number"],
        Value::String(_) => &["string"],
        Value::Array(_) => &["array"],
        Value::Object(_) => &["object"],
    }
}

/// The properties (by name) and the required fields of an object schema, with those of
/// its `allOf`.
pub fn object_fields<'a>(doc: &'a Value, schema: &'a Value) -> (BTreeMap<String, &'a Value>, BTreeSet<String>) {
    let schema = resolve(doc, schema);
    let mut fields = (BTreeMap::new(), BTreeSet::new());
    for part in schema["allOf"].as_array().into_iter().flatten() {
        let (properties, required) = object_fields(doc, part);
        fields.0.extend(properties);
        fields.1.extend(required);
    }
    for (name, property) in schema["properties"].as_object().into_iter().flatten() {
        fields.0.insert(name.clone(), property);
    }
    fields.1.extend(schema["required"].as_array().into_iter().flatten().filter_map(Value::as_str).map(str::to_string));
    fields
}

/// Where `value` departs from `schema`, one line each, `at` naming the value.
pub fn departures(doc: &Value, schema: &Value, value: &Value, at: &str) -> Vec<String> {
    let mut out = Vec::new();
    check(doc, schema, value, at, &mut out);
    out
}

fn check(doc: &Value, schema: &Value, value: &Value, at: &str, out: &mut Vec<String>) {
    let schema = resolve(doc, schema);
    if schema.is_null() {
        out.push(format!("{at}: the schema is a dangling or cyclic $ref"));
        return;
    }
    if let Some(options) = schema["oneOf"].as_array() {
        if !options.iter().any(|option| departures(doc, option, value, at).is_empty()) {
            out.push(format!("{at}: {value} fits none of {}", Value::Array(options.clone())));
        }
        return;
    }
    let declared: Vec<&str> = match &schema["type"] {
        Value::String(t) => vec![t.as_str()],
        Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    if !declared.is_empty() && !types_of(value).iter().any(|t| declared.contains(t)) {
        out.push(format!("{at}: {value} is not {declared:?}"));
        return;
    }
    if let Some(allowed) = schema["enum"].as_array()
        && !value.is_null()
        && !allowed.contains(value)
    {
        out.push(format!("{at}: {value} is not one of {}", Value::Array(allowed.clone())));
    }
    match value {
        Value::Array(items) if schema.get("items").is_some() => {
            for (i, item) in items.iter().enumerate() {
                check(doc, &schema["items"], item, &format!("{at}[{i}]"), out);
            }
        }
        Value::Object(fields) if schema.get("properties").is_some() || schema.get("allOf").is_some() => {
            let (properties, required) = object_fields(doc, schema);
            for (name, field) in fields {
                match properties.get(name) {
                    Some(property) => check(doc, property, field, &format!("{at}.{name}"), out),
                    None => out.push(format!("{at}.{name}: sent but not documented")),
                }
            }
            for name in required.iter().filter(|name| !fields.contains_key(*name)) {
                out.push(format!("{at}.{name}: documented as required but not sent"));
            }
        }
        _ => {}
    }
}
