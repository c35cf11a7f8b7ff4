//! Job variables against a pool's variables schema, with the `jsonschema`
//! crate (all of JSON Schema: `$ref`/`definitions`, `pattern`, `format`,
//! `anyOf`, ...). Errors name the field, e.g. `job_variables.cold_start_ms`.

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
/// (it means "unset"). A misfit is a 409, as in Prefect: the request is well
/// formed, and whether it fits depends on the pool's template at the time.
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
            return Err(ApiError::conflict_on(
                &path,
                format!(
                    "{path}: not a variable of work pool `{pool}` (known: {})",
                    known.join(", ")
                ),
            ));
        };
        if !value.is_null() {
            check(&path, value, schema, variables)?;
        }
    }
    Ok(())
}

/// Checks one variable's value against its schema with a full JSON Schema
/// validator. The template's `definitions` and `$defs` come along, so the
/// `$ref`s of pasted Prefect templates resolve. The first error names the
/// field down to the failing element (`job_variables.env.A`, `…items[2]`).
fn check(path: &str, value: &Value, schema: &Value, root: &Value) -> Result<(), ApiError> {
    let validator = compile(schema, root).map_err(|message| {
        ApiError::conflict_on(
            path,
            format!("{path}: the pool's schema for it is invalid: {message}"),
        )
    })?;
    let Some(error) = validator.iter_errors(value).next() else {
        return Ok(());
    };
    let mut field = path.to_string();
    for segment in error.instance_path() {
        match segment {
            jsonschema::paths::LocationSegment::Property(name) => {
                field.push('.');
                field.push_str(&name);
            }
            jsonschema::paths::LocationSegment::Index(index) => {
                field.push_str(&format!("[{index}]"))
            }
        }
    }
    // An undeclared key is the key's fault, not its object's.
    if let jsonschema::error::ValidationErrorKind::AdditionalProperties { unexpected } =
        error.kind()
        && let Some(key) = unexpected.first()
    {
        let field = format!("{field}.{key}");
        return Err(ApiError::conflict_on(
            &field,
            format!("{field}: not allowed here"),
        ));
    }
    Err(ApiError::conflict_on(&field, format!("{field}: {error}")))
}

/// A validator for `schema`, with the root's definitions beside it.
fn compile(schema: &Value, root: &Value) -> Result<jsonschema::Validator, String> {
    let mut document = schema.clone();
    if let Some(object) = document.as_object_mut() {
        for key in ["definitions", "$defs"] {
            if let Some(definitions) = root.get(key)
                && !object.contains_key(key)
            {
                object.insert(key.to_string(), definitions.clone());
            }
        }
    }
    jsonschema::validator_for(&document).map_err(|e| e.to_string())
}

/// Refuses a variables schema the validator cannot compile, naming the
/// variable, so a pool never stores a template whose runs cannot be checked.
pub fn check_variables_schema(field: &str, variables: &Value) -> Result<(), ApiError> {
    let properties = variables.get("properties").and_then(Value::as_object);
    for (name, schema) in properties.into_iter().flatten() {
        if let Err(message) = compile(schema, variables) {
            let field = format!("{field}.properties.{name}");
            return Err(ApiError::bad_request(
                &field,
                format!("{field}: not a valid JSON Schema: {message}"),
            ));
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
    fn prefect_style_schemas_with_refs_patterns_and_any_of_are_enforced() {
        let variables = json!({
            "properties": {
                "image": {"type": "string", "pattern": "^[a-z0-9./:-]+$"},
                "pull": {"$ref": "#/definitions/PullPolicy"},
                "cpu": {"anyOf": [{"type": "integer"}, {"type": "string", "pattern": "^[0-9]+m$"}]},
                "volumes": {"type": "array", "items": {"type": "string", "minLength": 1}},
            },
            "definitions": {"PullPolicy": {"enum": ["Always", "Never", "IfNotPresent"]}},
        });
        let check = |values: Value| {
            validate_job_variables(
                "job_variables",
                values.as_object().expect("object"),
                &variables,
                "p",
            )
        };
        assert!(
            check(json!({"image": "repo/app:1", "pull": "Never", "cpu": "500m", "volumes": ["a"]}))
                .is_ok()
        );
        for (values, field) in [
            (json!({"image": "Bad Image"}), "job_variables.image"),
            (json!({"pull": "Sometimes"}), "job_variables.pull"),
            (json!({"cpu": "lots"}), "job_variables.cpu"),
            (json!({"volumes": ["a", ""]}), "job_variables.volumes[1]"),
        ] {
            let error = check(values.clone()).expect_err("refused");
            assert_eq!(
                error.field.as_deref(),
                Some(field),
                "{values}: {}",
                error.message
            );
            assert!(
                error.message.starts_with(&format!("{field}: ")),
                "{}",
                error.message
            );
        }
    }

    #[test]
    fn schemas_that_do_not_compile_are_refused_by_name() {
        let variables = json!({"properties": {"bad": {"type": "strang"}}});
        let error =
            check_variables_schema("base_job_template.variables", &variables).expect_err("refused");
        assert_eq!(
            error.field.as_deref(),
            Some("base_job_template.variables.properties.bad")
        );
    }

    #[test]
    fn an_undeclared_variable_fails_even_when_null() {
        assert!(validate(json!({"undeclared": null})).is_err());
    }
}
