//! A pool's variables schema as form fields, and the submitted text back
//! as typed JSON. The browser only shapes the input (numbers, choices);
//! the server's own validation decides, and its error is shown next to the
//! field it names.

use super::view;
use crate::error::ApiError;
use maud::{Markup, html};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// How one variable is entered.
#[derive(Debug, Clone, PartialEq)]
enum Kind {
    Text,
    Integer,
    Number,
    Boolean,
    Choice(Vec<Value>),
    /// Objects, arrays and anything the schema leaves open: JSON text.
    Json,
}

/// One variable of a schema, in the schema's order.
pub struct Variable<'a> {
    pub name: &'a str,
    schema: &'a Value,
    required: bool,
}

impl Variable<'_> {
    fn kind(&self) -> Kind {
        if let Some(choices) = self.schema.get("enum").and_then(Value::as_array) {
            return Kind::Choice(choices.clone());
        }
        let declared = match self.schema.get("type") {
            Some(Value::String(t)) => Some(t.as_str()),
            // `["string", "null"]`: the one that is not null.
            Some(Value::Array(types)) => types
                .iter()
                .filter_map(Value::as_str)
                .find(|t| *t != "null"),
            _ => None,
        };
        match declared {
            Some("string") => Kind::Text,
            Some("integer") => Kind::Integer,
            Some("number") => Kind::Number,
            Some("boolean") => Kind::Boolean,
            _ => Kind::Json,
        }
    }

    fn type_label(&self) -> String {
        match self.kind() {
            Kind::Text => "string".into(),
            Kind::Integer => "integer".into(),
            Kind::Number => "number".into(),
            Kind::Boolean => "boolean".into(),
            Kind::Choice(_) => "one of".into(),
            Kind::Json => self
                .schema
                .get("type")
                .and_then(Value::as_str)
                .unwrap_or("JSON")
                .into(),
        }
    }

    fn default(&self) -> Option<&Value> {
        self.schema.get("default").filter(|d| !d.is_null())
    }

    fn description(&self) -> &str {
        self.schema
            .get("description")
            .and_then(Value::as_str)
            .unwrap_or("")
    }
}

/// The variables of a JSON Schema object (`{"properties": ..., "required": [...]}`).
pub fn variables(schema: &Value) -> Vec<Variable<'_>> {
    let required: Vec<&str> = schema
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    schema
        .get("properties")
        .and_then(Value::as_object)
        .map(|properties| {
            properties
                .iter()
                .map(|(name, schema)| Variable {
                    name,
                    schema,
                    required: required.contains(&name.as_str()),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A schema for flow parameters, which have no schema of their own: each
/// typed like its default.
pub fn parameters_schema(defaults: &Map<String, Value>) -> Value {
    let properties: Map<String, Value> = defaults
        .iter()
        .map(|(name, default)| {
            let kind = match default {
                Value::String(_) => "string",
                Value::Bool(_) => "boolean",
                Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
                Value::Number(_) => "number",
                Value::Array(_) => "array",
                _ => "object",
            };
            (
                name.clone(),
                serde_json::json!({"type": kind, "default": default}),
            )
        })
        .collect();
    serde_json::json!({ "properties": properties })
}

/// The pool's variables as a readable table (Details tab, deployment page).
pub fn variables_table(schema: &Value) -> Markup {
    let variables = variables(schema);
    html! {
        @if variables.is_empty() {
            p.empty { "No variables." }
        } @else {
            table.variables {
                thead { tr { th { "Variable" } th { "Type" } th { "Default" } th { "Description" } } }
                tbody {
                    @for v in &variables {
                        tr {
                            td { code { (v.name) } @if v.required { " " span.badge { "required" } } }
                            td {
                                (v.type_label())
                                @if let Kind::Choice(choices) = v.kind() {
                                    " " @for (i, c) in choices.iter().enumerate() {
                                        @if i > 0 { ", " } code { (c) }
                                    }
                                }
                            }
                            td { @if let Some(d) = v.default() { code { (d) } } @else { span.muted { "—" } } }
                            td { (v.description()) }
                        }
                    }
                }
            }
        }
    }
}

/// Submitted text, by input name (`job_variables.cpu`).
pub type Submitted = BTreeMap<String, String>;

/// The inputs for one schema; `prefix` names the request field they fill
/// (`job_variables`), so input names are the API's own field names.
pub fn inputs(
    prefix: &str,
    schema: &Value,
    submitted: &Submitted,
    error: Option<&ApiError>,
) -> Markup {
    html! {
        @for v in variables(schema) {
            @let name = format!("{prefix}.{}", v.name);
            @let value = submitted.get(&name).map(String::as_str).unwrap_or("");
            @let message = error_for(error, &name, schema);
            @let label = if v.required { format!("{} (required)", v.name) } else { v.name.to_string() };
            (view::field_error_wrap(&name, &label, message, html! {
                (input(&name, &v, value, message.is_some()))
                @if !v.description().is_empty() { p.hint { (v.description()) } }
            }))
        }
    }
}

fn input(name: &str, v: &Variable<'_>, value: &str, invalid: bool) -> Markup {
    let placeholder = v.default().map(|d| match d {
        Value::String(s) => format!("default: {s}"),
        other => format!("default: {other}"),
    });
    let described = invalid.then(|| format!("{name}-error"));
    let required = v.required && v.default().is_none();
    match v.kind() {
        Kind::Text => html! {
            input id=(name) name=(name) value=(value) placeholder=[placeholder] required[required]
                aria-invalid=[invalid.then_some("true")] aria-describedby=[described];
        },
        Kind::Integer | Kind::Number => html! {
            input id=(name) name=(name) type="number" step=(if v.kind() == Kind::Integer { "1" } else { "any" })
                value=(value) placeholder=[placeholder] required[required]
                aria-invalid=[invalid.then_some("true")] aria-describedby=[described];
        },
        Kind::Boolean => choice(
            name,
            &[Value::Bool(true), Value::Bool(false)],
            value,
            placeholder,
            invalid,
        ),
        Kind::Choice(choices) => choice(name, &choices, value, placeholder, invalid),
        Kind::Json => html! {
            textarea id=(name) name=(name) rows="3" placeholder=[placeholder] required[required]
                aria-invalid=[invalid.then_some("true")] aria-describedby=[described] { (value) }
        },
    }
}

/// A select whose first option leaves the variable unset.
fn choice(
    name: &str,
    choices: &[Value],
    value: &str,
    placeholder: Option<String>,
    invalid: bool,
) -> Markup {
    html! {
        select id=(name) name=(name) aria-invalid=[invalid.then_some("true")] {
            option value="" { (placeholder.unwrap_or_else(|| "(not set)".into())) }
            @for c in choices {
                @let text = c.to_string();
                option value=(text) selected[text == value] { (text) }
            }
        }
    }
}

/// The error's message when it is about this input: the field itself or
/// something inside it (`job_variables.env.A` belongs to `job_variables.env`),
/// unless another input is a closer match.
fn error_for<'e>(error: Option<&'e ApiError>, name: &str, schema: &Value) -> Option<&'e str> {
    let error = error?;
    let field = error.field.as_deref()?;
    (owner(field, schema, name.split('.').next().unwrap_or("")) == Some(name.to_string()))
        .then_some(error.message.as_str())
}

/// Which input of `prefix`'s schema a field error belongs to.
fn owner(field: &str, schema: &Value, prefix: &str) -> Option<String> {
    let rest = field.strip_prefix(prefix)?.strip_prefix('.')?;
    variables(schema)
        .iter()
        .map(|v| v.name)
        .filter(|n| {
            rest == *n || rest.starts_with(&format!("{n}.")) || rest.starts_with(&format!("{n}["))
        })
        .max_by_key(|n| n.len())
        .map(|n| format!("{prefix}.{n}"))
}

/// Whether some input of these schemas shows the error (else the page shows
/// it above the form).
pub fn shown_by_an_input(error: &ApiError, schemas: &[(&str, &Value)]) -> bool {
    let Some(field) = error.field.as_deref() else {
        return false;
    };
    schemas
        .iter()
        .any(|(prefix, schema)| owner(field, schema, prefix).is_some())
}

/// The input (its id) of these schemas that shows an error on `field`.
pub fn input_of(field: &str, schemas: &[(&str, &Value)]) -> Option<String> {
    schemas
        .iter()
        .find_map(|(prefix, schema)| owner(field, schema, prefix))
}

/// Typed values of the filled-in inputs; an empty input leaves the variable
/// unset. Text that cannot be the input's type is passed on as text so the
/// server's validation names it; JSON that does not parse is refused here.
pub fn read(
    prefix: &str,
    schema: &Value,
    submitted: &Submitted,
) -> Result<Map<String, Value>, ApiError> {
    let mut values = Map::new();
    for v in variables(schema) {
        let name = format!("{prefix}.{}", v.name);
        let Some(text) = submitted
            .get(&name)
            .map(|t| t.trim())
            .filter(|t| !t.is_empty())
        else {
            continue;
        };
        let value = match v.kind() {
            Kind::Text => Value::String(text.to_string()),
            Kind::Integer => text
                .parse::<i64>()
                .map(Value::from)
                .unwrap_or_else(|_| Value::String(text.to_string())),
            Kind::Number => text
                .parse::<f64>()
                .ok()
                .and_then(|f| serde_json::Number::from_f64(f).map(Value::Number))
                .unwrap_or_else(|| Value::String(text.to_string())),
            Kind::Boolean | Kind::Choice(_) => {
                serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_string()))
            }
            Kind::Json => serde_json::from_str(text).map_err(|e| {
                ApiError::bad_request(&name, format!("{name}: not valid JSON: {e}"))
            })?,
        };
        values.insert(v.name.to_string(), value);
    }
    Ok(values)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Value {
        json!({
            "properties": {
                "env": {"type": "object"},
                "image": {"type": "string", "default": "busybox"},
                "cpu": {"type": "integer", "minimum": 1},
                "mode": {"enum": ["a", "b"]},
                "fast": {"type": "boolean"}
            },
            "required": ["image"]
        })
    }

    fn submitted(pairs: &[(&str, &str)]) -> Submitted {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn filled_inputs_become_typed_values_and_empty_ones_stay_unset() {
        let values = read(
            "job_variables",
            &schema(),
            &submitted(&[
                ("job_variables.env", r#"{"A": "1"}"#),
                ("job_variables.image", " "),
                ("job_variables.cpu", "4"),
                ("job_variables.mode", "\"b\""),
                ("job_variables.fast", "false"),
            ]),
        )
        .expect("valid");
        assert_eq!(
            Value::Object(values),
            json!({"env": {"A": "1"}, "cpu": 4, "mode": "b", "fast": false})
        );
    }

    #[test]
    fn text_that_is_not_a_number_goes_to_the_server_and_bad_json_is_named_here() {
        let values = read(
            "job_variables",
            &schema(),
            &submitted(&[("job_variables.cpu", "four")]),
        )
        .expect("passed on");
        assert_eq!(values["cpu"], json!("four"));
        let error = read(
            "job_variables",
            &schema(),
            &submitted(&[("job_variables.env", "{nope")]),
        )
        .expect_err("bad JSON");
        assert_eq!(error.field.as_deref(), Some("job_variables.env"));
    }

    #[test]
    fn an_error_inside_a_variable_belongs_to_its_input() {
        let error =
            ApiError::conflict_on("job_variables.env.A", "job_variables.env.A: not a string");
        let schema = schema();
        assert_eq!(
            error_for(Some(&error), "job_variables.env", &schema),
            Some(error.message.as_str())
        );
        assert_eq!(
            error_for(Some(&error), "job_variables.image", &schema),
            None
        );
        assert!(shown_by_an_input(&error, &[("job_variables", &schema)]));
        let elsewhere = ApiError::conflict_on("name", "name: taken");
        assert!(!shown_by_an_input(
            &elsewhere,
            &[("job_variables", &schema)]
        ));
    }
}
