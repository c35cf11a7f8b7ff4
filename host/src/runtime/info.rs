//! What `describe` may claim: checked once, when a plugin loads.

use super::PluginInfo;
use super::load::{self, Grants, LoadError};
use crate::capabilities::Capability;

pub(super) fn placeholder_info(source_name: &str) -> PluginInfo {
    PluginInfo {
        name: source_name.to_string(),
        version: String::new(),
        contract_version: String::new(),
        description: String::new(),
        default_base_job_template: String::new(),
        capabilities: Vec::new(),
        example_variables: String::new(),
        long_running_variables: String::new(),
    }
}

/// What `describe` claims must agree with the contract and the grants.
pub(super) fn validate_info(
    source_name: &str,
    info: &PluginInfo,
    grants: &Grants,
) -> Result<(), LoadError> {
    let invalid = |message: String| LoadError::Invalid {
        source_name: source_name.into(),
        message,
    };
    if !load::compatible(&info.contract_version) {
        return Err(LoadError::IncompatibleContract {
            source_name: source_name.into(),
            found: format!("{}@{}", super::CONTRACT_PACKAGE, info.contract_version),
        });
    }
    let sizes = [
        ("name", info.name.len(), 64),
        ("version", info.version.len(), 64),
        ("contract_version", info.contract_version.len(), 64),
        ("description", info.description.len(), 4 << 10),
        (
            "default_base_job_template",
            info.default_base_job_template.len(),
            256 << 10,
        ),
        ("example_variables", info.example_variables.len(), 64 << 10),
        (
            "long_running_variables",
            info.long_running_variables.len(),
            64 << 10,
        ),
        ("capabilities", info.capabilities.len(), 16),
    ];
    for (field, size, limit) in sizes {
        if size > limit {
            return Err(invalid(format!(
                "describe: {field} is {size} long; the limit is {limit}"
            )));
        }
    }
    let valid_name = !info.name.is_empty()
        && info
            .name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !valid_name {
        return Err(invalid(format!(
            "describe: name {:?} must be lowercase letters, digits and '-'",
            info.name
        )));
    }
    for name in &info.capabilities {
        let capability = Capability::parse(name)
            .ok_or_else(|| invalid(format!("describe: unknown capability {name:?}")))?;
        if !grants.contains(capability) {
            return Err(LoadError::Ungranted {
                source_name: source_name.into(),
                capability,
            });
        }
    }
    let template: serde_json::Value = serde_json::from_str(&info.default_base_job_template)
        .map_err(|e| {
            invalid(format!(
                "describe: default base job template is not JSON: {e}"
            ))
        })?;
    if !template
        .get("job_configuration")
        .is_some_and(|v| v.is_object())
        || !template.get("variables").is_some_and(|v| v.is_object())
    {
        return Err(invalid(
            "describe: default base job template needs `job_configuration` and `variables` objects"
                .into(),
        ));
    }
    Ok(())
}
