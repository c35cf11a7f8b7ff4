//! The subset of JSON Schema that base job templates use: `type`,
//! `properties`, `required`, `additionalProperties`, `enum`, `minimum`,
//! `maximum`, `items`. Errors name the field, e.g. `job_variables.cold_start_ms`.

use crate::error::ApiError;
use serde_json::{Map, Value};

/// Job variables the worker itself acts on, valid for every pool type. They
/// are not passed to the plugin unless its template uses them.
pub fn host_variables() -> Value {
    serde_json::json!({
        "timeout_seconds": {
            "type": "integer",
            "minimum": 1,
            "description": "Stop the run and mark it FAILED when it runs longer than this"
        }
    })
}

/// Checks job variables against a template's `variables` schema. Every key
/// must be a declared variable (or a host variable); `null` always passes
/// (it means "unset").
pub fn validate_job_variables(
    field: &str,
    values: &Map<String, Value>,
    variables: &Value,
    pool: &str,
) -> Result<(), ApiError> {
    let properties = variables.get("properties").and_then(Value::as_object);
    let host = host_variables();
    for (name, value) in values {
        let path = format!("{field}.{name}");
        let Some(schema) = properties
            .and_then(|p| p.get(name))
            .or_else(|| host.get(name))
        else {
            let known: Vec<&str> = properties
                .map(|p| p.keys().map(String::as_str).collect())
                .unwrap_or_default();
            return Err(ApiError::bad_request(
                &path,
                format!(
                    "{path}: not a variable of work pool `{pool}` (known: {})",
                    known.join(", ")
                ),
            ));
        };
        if !value.is_null() {
            check(&path, value, schema)?;
        }
    }
    Ok(())
}

fn type_matches(expected: &str, value: &Value) -> bool {
    match expected {
        "string" => value.is_string(),
        "integer" => value.is_i64() || value.is_u64(),
        "number" => value.is_number(),
        "boolean" => value.is_boolean(),
        "object" => value.is_object(),
        "array" => value.is_array(),
        "null" => value.is_null(),
        _ => true,
    }
}

fn check(path: &str, value: &Value, schema: &Value) -> Result<(), ApiError> {
    let fail = |message: String| Err(ApiError::bad_request(path, format!("{path}: {message}")));
    match schema.get("type") {
        Some(Value::String(t)) if !type_matches(t, value) => {
            return fail(format!("expected {t}, got {value}"));
        }
        Some(Value::Array(types))
            if !types
                .iter()
                .filter_map(Value::as_str)
                .any(|t| type_matches(t, value)) =>
        {
            return fail(format!(
                "expected one of {}, got {value}",
                Value::Array(types.clone())
            ));
        }
        _ => {}
    }
    if let Some(options) = schema.get("enum").and_then(Value::as_array)
        && !options.contains(value)
    {
        return fail(format!("must be one of {}", Value::Array(options.clone())));
    }
    if let Some(n) = value.as_f64() {
        if let Some(min) = schema.get("minimum").and_then(Value::as_f64)
            && n < min
        {
            return fail(format!("must be at least {min}"));
        }
        if let Some(max) = schema.get("maximum").and_then(Value::as_f64)
            && n > max
        {
            return fail(format!("must be at most {max}"));
        }
    }
    if let (Some(items), Some(list)) = (schema.get("items"), value.as_array()) {
        for (i, item) in list.iter().enumerate() {
            check(&format!("{path}[{i}]"), item, items)?;
        }
    }
    if let Some(object) = value.as_object() {
        let properties = schema.get("properties").and_then(Value::as_object);
        for key in schema
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            if !object.contains_key(key) {
                return fail(format!("`{key}` is required"));
            }
        }
        for (key, item) in object {
            let item_path = format!("{path}.{key}");
            match (
                properties.and_then(|p| p.get(key)),
                schema.get("additionalProperties"),
            ) {
                (Some(sub), _) => check(&item_path, item, sub)?,
                (None, Some(Value::Bool(false))) => {
                    return Err(ApiError::bad_request(
                        &item_path,
                        format!("{item_path}: not allowed here"),
                    ));
                }
                (None, Some(sub @ Value::Object(_))) => check(&item_path, item, sub)?,
                _ => {}
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn vars() -> Value {
        json!({"properties": {
            "n": {"type": "integer", "minimum": 0},
            "env": {"type": "object", "additionalProperties": {"type": "string"}},
            "policy": {"type": "string", "enum": ["Always", "Never"]},
        }})
    }

    fn validate(values: Value) -> Result<(), ApiError> {
        validate_job_variables(
            "job_variables",
            values.as_object().expect("object"),
            &vars(),
            "p",
        )
    }

    #[test]
    fn errors_name_the_field() {
        assert_eq!(
            validate(json!({"n": "x"}))
                .expect_err("refused")
                .field
                .as_deref(),
            Some("job_variables.n")
        );
        assert_eq!(
            validate(json!({"n": -1}))
                .expect_err("refused")
                .field
                .as_deref(),
            Some("job_variables.n")
        );
        assert_eq!(
            validate(json!({"env": {"A": 1}}))
                .expect_err("refused")
                .field
                .as_deref(),
            Some("job_variables.env.A")
        );
        assert_eq!(
            validate(json!({"nope": 1}))
                .expect_err("refused")
                .field
                .as_deref(),
            Some("job_variables.nope")
        );
        assert_eq!(
            validate(json!({"policy": "Maybe"}))
                .expect_err("refused")
                .field
                .as_deref(),
            Some("job_variables.policy")
        );
    }

    #[test]
    fn good_values_and_nulls_pass() {
        assert!(validate(json!({"n": 3, "env": {"A": "b"}, "policy": "Never"})).is_ok());
        assert!(
            validate(json!({"n": 3, "policy": null})).is_ok(),
            "null means unset"
        );
    }

    #[test]
    fn an_undeclared_variable_fails_even_when_null() {
        assert!(validate(json!({"undeclared": null})).is_err());
    }
}
