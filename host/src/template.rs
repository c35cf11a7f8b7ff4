//! Base job templates: `{"job_configuration": {...}, "variables": {JSON Schema}}`.
//!
//! A string that is exactly one `{{ name }}` becomes the variable's JSON value
//! (so numbers stay numbers and an unset variable becomes `null`); a
//! placeholder inside a longer string is interpolated as text.

use serde_json::{Map, Value};
use std::collections::BTreeSet;

/// Every `{{ name }}` used anywhere in `value`.
pub fn placeholders(value: &Value) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    visit_strings(value, &mut |s| {
        for (_, name) in scan(s) {
            found.insert(name.to_string());
        }
    });
    found
}

/// Placeholders of the job configuration that `variables.properties` does not declare.
pub fn undeclared(job_configuration: &Value, variables: &Value) -> Vec<String> {
    let declared = variables.get("properties").and_then(Value::as_object);
    placeholders(job_configuration)
        .into_iter()
        .filter(|name| !declared.is_some_and(|d| d.contains_key(name)))
        .collect()
}

/// The `default` of each declared variable that has one.
pub fn defaults(variables: &Value) -> Map<String, Value> {
    let Some(properties) = variables.get("properties").and_then(Value::as_object) else {
        return Map::new();
    };
    properties
        .iter()
        .filter_map(|(name, schema)| Some((name.clone(), schema.get("default")?.clone())))
        .collect()
}

/// Substitute `values` into the job configuration.
pub fn render(job_configuration: &Value, values: &Map<String, Value>) -> Value {
    match job_configuration {
        Value::String(s) => render_string(s, values),
        Value::Array(items) => Value::Array(items.iter().map(|v| render(v, values)).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), render(v, values)))
                .collect(),
        ),
        other => other.clone(),
    }
}

fn render_string(s: &str, values: &Map<String, Value>) -> Value {
    let found = scan(s);
    if let [(range, name)] = found.as_slice()
        && range.start == 0
        && range.end == s.len()
    {
        return values.get(*name).cloned().unwrap_or(Value::Null);
    }
    if found.is_empty() {
        return Value::String(s.to_string());
    }
    let mut out = String::with_capacity(s.len());
    let mut last = 0;
    for (range, name) in found {
        out.push_str(&s[last..range.start]);
        match values.get(name) {
            Some(Value::String(text)) => out.push_str(text),
            Some(Value::Null) | None => {}
            Some(other) => out.push_str(&other.to_string()),
        }
        last = range.end;
    }
    out.push_str(&s[last..]);
    Value::String(out)
}

/// `(byte range, name)` of each well-formed placeholder in `s`.
fn scan(s: &str) -> Vec<(std::ops::Range<usize>, &str)> {
    let mut found = Vec::new();
    let mut from = 0;
    while let Some(open) = s[from..].find("{{").map(|i| i + from) {
        let Some(close) = s[open + 2..].find("}}").map(|i| i + open + 2) else {
            break;
        };
        let name = s[open + 2..close].trim();
        let valid = !name.is_empty()
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !name.starts_with(|c: char| c.is_ascii_digit());
        if valid {
            found.push((open..close + 2, name));
        }
        from = close + 2;
    }
    found
}

fn visit_strings(value: &Value, f: &mut impl FnMut(&str)) {
    match value {
        Value::String(s) => f(s),
        Value::Array(items) => items.iter().for_each(|v| visit_strings(v, f)),
        Value::Object(map) => map.values().for_each(|v| visit_strings(v, f)),
        _ => {}
    }
}

/// Job variables by precedence, lowest first (pool defaults, deployment, run).
/// Whole keys replace, except `env`, which merges key by key; a `null` means
/// "not set here" and never hides a lower level's value.
pub fn merge_job_variables(layers: &[&Map<String, Value>]) -> Map<String, Value> {
    let mut merged = Map::new();
    for layer in layers {
        for (key, value) in *layer {
            if value.is_null() {
                continue;
            }
            match (key.as_str(), merged.get_mut(key), value) {
                ("env", Some(Value::Object(env)), Value::Object(more)) => {
                    env.extend(more.iter().map(|(k, v)| (k.clone(), v.clone())));
                }
                _ => {
                    merged.insert(key.clone(), value.clone());
                }
            }
        }
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn whole_placeholder_keeps_the_json_type() {
        let config = json!({"n": "{{ n }}", "missing": "{{ gone }}", "text": "x-{{n}}-y"});
        let values = json!({"n": 3}).as_object().cloned().unwrap_or_default();
        assert_eq!(
            render(&config, &values),
            json!({"n": 3, "missing": null, "text": "x-3-y"})
        );
    }

    #[test]
    fn undeclared_placeholders_are_named() {
        let config = json!({"a": "{{ a }}", "b": ["{{ b }}"]});
        let variables = json!({"properties": {"a": {}}});
        assert_eq!(undeclared(&config, &variables), vec!["b".to_string()]);
    }

    #[test]
    fn env_merges_key_by_key_and_other_keys_replace() {
        let pool = json!({"env": {"A": "pool", "B": "pool"}, "image": "base", "n": 1});
        let deployment = json!({"env": {"B": "dep"}, "image": "dep-image", "n": null});
        let run = json!({"env": {"C": "run"}});
        let as_map = |v: &Value| v.as_object().cloned().unwrap_or_default();
        let merged = merge_job_variables(&[&as_map(&pool), &as_map(&deployment), &as_map(&run)]);
        assert_eq!(
            Value::Object(merged),
            json!({"env": {"A": "pool", "B": "dep", "C": "run"}, "image": "dep-image", "n": 1})
        );
    }

    #[test]
    fn defaults_come_from_the_schema() {
        let variables = json!({"properties": {"a": {"default": 1}, "b": {}}});
        assert_eq!(
            defaults(&variables),
            json!({"a": 1}).as_object().cloned().unwrap_or_default()
        );
    }
}
