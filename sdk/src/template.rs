//! The default base job template: `{"job_configuration": {...}, "variables": {...}}`.
//!
//! Each variable is a JSON Schema property; by default it also becomes a
//! `"name": "{{ name }}"` entry of the job configuration, which is what a pool
//! template almost always wants.

use serde_json::{Map, Value, json};

#[derive(Debug, Default, Clone)]
pub struct Template {
    configuration: Map<String, Value>,
    properties: Map<String, Value>,
    required: Vec<String>,
}

impl Template {
    pub fn new() -> Self {
        Self::default()
    }

    /// Declare a variable with its JSON Schema and map it into the configuration.
    pub fn variable(mut self, name: &str, schema: Value) -> Self {
        self.properties.insert(name.to_string(), schema);
        self.configuration
            .insert(name.to_string(), Value::String(format!("{{{{ {name} }}}}")));
        self
    }

    /// Like [`Template::variable`], and the variable must be given.
    pub fn required(mut self, name: &str, schema: Value) -> Self {
        self.required.push(name.to_string());
        self.variable(name, schema)
    }

    pub fn build(self) -> Value {
        let mut variables = json!({ "type": "object", "properties": self.properties });
        if !self.required.is_empty() {
            variables["required"] = json!(self.required);
        }
        json!({ "job_configuration": self.configuration, "variables": variables })
    }
}

/// `{"type": "string", "description": ...}` with an optional default.
pub fn string(description: &str, default: Option<&str>) -> Value {
    with_default(
        json!({"type": "string", "description": description}),
        default.map(Value::from),
    )
}

/// A string that must match `pattern` (a JSON Schema regular expression,
/// unanchored unless it says `^...$`). The server checks it when a
/// deployment or a run sets the variable, so a bad value is refused there,
/// naming the field, instead of failing the run on the worker.
pub fn string_matching(description: &str, pattern: &str, default: Option<&str>) -> Value {
    with_default(
        json!({"type": "string", "description": description, "pattern": pattern}),
        default.map(Value::from),
    )
}

/// A list of strings, each matching `item_pattern` when given; empty by
/// default. Checked by the server like [`string_matching`].
pub fn string_list(description: &str, item_pattern: Option<&str>) -> Value {
    let mut items = json!({"type": "string"});
    if let Some(pattern) = item_pattern {
        items["pattern"] = json!(pattern);
    }
    json!({"type": "array", "description": description, "items": items, "default": []})
}

/// An integer with a lower bound and an optional default.
pub fn integer(description: &str, minimum: i64, default: Option<i64>) -> Value {
    with_default(
        json!({"type": "integer", "description": description, "minimum": minimum}),
        default.map(Value::from),
    )
}

/// An integer in `[minimum, maximum]` with an optional default.
pub fn integer_between(
    description: &str,
    minimum: i64,
    maximum: i64,
    default: Option<i64>,
) -> Value {
    with_default(
        json!({"type": "integer", "description": description, "minimum": minimum, "maximum": maximum}),
        default.map(Value::from),
    )
}

/// A number in `[minimum, maximum]`.
pub fn number(description: &str, minimum: f64, maximum: f64, default: Option<f64>) -> Value {
    with_default(
        json!({"type": "number", "description": description, "minimum": minimum, "maximum": maximum}),
        default.map(Value::from),
    )
}

pub fn boolean(description: &str, default: bool) -> Value {
    json!({"type": "boolean", "description": description, "default": default})
}

/// A string-to-string map, like `env` or `labels`.
pub fn string_map(description: &str) -> Value {
    json!({"type": "object", "description": description, "additionalProperties": {"type": "string"}})
}

fn with_default(mut schema: Value, default: Option<Value>) -> Value {
    if let Some(default) = default {
        schema["default"] = default;
    }
    schema
}

/// Splits a `command` job variable given as one line into argv, with
/// shell-like quoting ('..', "..", \); an unclosed quote or an empty line
/// is a fatal error naming `command`.
pub fn split_command(command: &str) -> crate::Result<Vec<String>> {
    let mut argv = Vec::new();
    let mut current = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut chars = command.chars();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some('"'), '\\') | (None, '\\') => {
                if let Some(next) = chars.next() {
                    current.push(next);
                    in_word = true;
                }
            }
            (Some(_), c) => current.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                in_word = true;
            }
            (None, c) if c.is_whitespace() => {
                if in_word {
                    argv.push(std::mem::take(&mut current));
                    in_word = false;
                }
            }
            (None, c) => {
                current.push(c);
                in_word = true;
            }
        }
    }
    if quote.is_some() {
        return Err(crate::Error::fatal(format!(
            "command: unclosed quote in {command:?}"
        )));
    }
    if in_word {
        argv.push(current);
    }
    if argv.is_empty() {
        return Err(crate::Error::fatal("command: must not be empty"));
    }
    Ok(argv)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_and_patterns_are_json_schema() {
        let template = Template::new()
            .variable("binds", string_list("Paths", Some("^/")))
            .required("name", string_matching("A name", "^[a-z]+$", Some("x")))
            .build();
        assert_eq!(
            template["variables"]["properties"]["binds"],
            json!({"type": "array", "description": "Paths", "items": {"type": "string", "pattern": "^/"}, "default": []})
        );
        assert_eq!(
            template["variables"]["properties"]["name"],
            json!({"type": "string", "description": "A name", "pattern": "^[a-z]+$", "default": "x"})
        );
        assert_eq!(template["job_configuration"]["binds"], json!("{{ binds }}"));
        assert_eq!(string_list("Any", None)["items"], json!({"type": "string"}));
    }

    #[test]
    fn a_command_line_splits_as_a_shell_would_quote_it() {
        let argv = split_command(r#"sh -c 'echo "a b"; exit 3' x\ y"#).expect("argv");
        assert_eq!(argv, ["sh", "-c", r#"echo "a b"; exit 3"#, "x y"]);
        assert!(split_command("echo 'open").is_err());
        assert!(split_command("  ").is_err());
    }
}
