//! Names people can say: flow runs get "adjective-animal", and every name a
//! person gives is checked the same way.

use crate::error::ApiError;

const ADJECTIVES: &[&str] = &[
    "amber", "bold", "brisk", "calm", "clever", "crimson", "daring", "eager", "fancy", "gentle",
    "golden", "happy", "jolly", "keen", "lively", "lucky", "merry", "nimble", "quiet", "rapid",
    "shiny", "silver", "steady", "swift", "tidy", "vivid", "witty", "zesty",
];
const ANIMALS: &[&str] = &[
    "badger", "beaver", "bison", "crane", "dingo", "falcon", "ferret", "gecko", "heron", "ibis",
    "jaguar", "koala", "lemur", "lynx", "marmot", "narwhal", "ocelot", "otter", "panda", "quokka",
    "raven", "salmon", "tapir", "toucan", "walrus", "wombat", "yak", "zebra",
];

/// A readable name derived from the run's id (so it is stable for that run).
pub fn run_name(id: &str) -> String {
    let bytes: Vec<u8> = id.bytes().filter(u8::is_ascii_hexdigit).collect();
    let pick = |offset: usize, len: usize| {
        let chunk =
            std::str::from_utf8(bytes.get(offset..offset + 4).unwrap_or(b"0000")).unwrap_or("0000");
        usize::from_str_radix(chunk, 16).unwrap_or(0) % len
    };
    format!(
        "{}-{}",
        ADJECTIVES[pick(0, ADJECTIVES.len())],
        ANIMALS[pick(4, ANIMALS.len())]
    )
}

/// Names of pools, queues, workers, flows and deployments.
pub fn check_name(field: &str, name: &str) -> Result<(), ApiError> {
    if name.is_empty() || name.len() > 100 {
        return Err(ApiError::bad_request(
            field,
            format!("{field}: must be 1 to 100 characters"),
        ));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(ApiError::bad_request(
            field,
            format!("{field}: {name:?} may only use letters, digits, '-', '_' and '.'"),
        ));
    }
    // `.` and `..` are path segments, not names: a URL or a CLI argument
    // holding one addresses the parent or nothing. No leading dot at all
    // keeps the rule one regular expression (the API document's pattern).
    if name.starts_with('.') {
        return Err(ApiError::bad_request(
            field,
            format!("{field}: {name:?} may not start with '.'"),
        ));
    }
    Ok(())
}

/// Names that people create; `host-` is kept for the platform's own.
pub fn check_user_name(field: &str, name: &str) -> Result<(), ApiError> {
    check_name(field, name)?;
    if name.starts_with("host-") {
        return Err(ApiError::bad_request(
            field,
            format!("{field}: the prefix `host-` is reserved"),
        ));
    }
    Ok(())
}
