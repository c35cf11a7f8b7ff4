//! The AWS endpoints a worker's environment names, the way the AWS SDKs
//! read them (`AWS_REGION`, `AWS_ENDPOINT_URL_<SERVICE>`, `AWS_ENDPOINT_URL`),
//! as an `http` grant: the built-in `ecs` plugin's, when `grants.toml` gives
//! it none. The operator still decides: the origins are those the worker's
//! own environment points at (or AWS's for the region), signed with SigV4
//! from the worker's credential chain, and nothing else.

use super::policy::{HttpGrantError, HttpPolicy};

/// Where ECS and CloudWatch Logs are, for one region.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsEndpoints {
    pub region: String,
    /// `scheme://host[:port]`, no path.
    pub ecs: String,
    pub logs: String,
}

impl AwsEndpoints {
    /// From an environment (`env(name)`); `None` without a region.
    pub fn from_env(env: &dyn Fn(&str) -> Option<String>) -> Option<AwsEndpoints> {
        let get = |name: &str| env(name).filter(|v| !v.trim().is_empty());
        let region = get("AWS_REGION").or_else(|| get("AWS_DEFAULT_REGION"))?;
        let pick = |specific: &str, service: &str| {
            get(specific)
                .or_else(|| get("AWS_ENDPOINT_URL"))
                .map(|url| origin_of(&url))
                .unwrap_or_else(|| format!("https://{service}.{region}.amazonaws.com"))
        };
        Some(AwsEndpoints {
            ecs: pick("AWS_ENDPOINT_URL_ECS", "ecs"),
            logs: pick("AWS_ENDPOINT_URL_CLOUDWATCH_LOGS", "logs"),
            region,
        })
    }

    /// The grant: each endpoint signed for its service. One origin for both
    /// (an emulator's single port) is one entry, signed as `ecs`: a grant
    /// lists an origin once, and emulators do not check the service name.
    pub fn policy(&self) -> Result<HttpPolicy, HttpGrantError> {
        let entry = |url: &str, service: &str| {
            format!(
                "[[allow]]\nurl = {url:?}\nauth = \"aws-sigv4\"\naws_service = {service:?}\naws_region = {:?}\n",
                self.region
            )
        };
        let mut text = entry(&self.ecs, "ecs");
        if self.logs != self.ecs {
            text.push_str(&entry(&self.logs, "logs"));
        }
        let value: toml::Value = toml::from_str(&text).map_err(|e| HttpGrantError {
            at: "the worker's AWS_* environment".into(),
            message: e.to_string(),
        })?;
        let mut warnings = Vec::new();
        HttpPolicy::from_toml(
            &value,
            &|key| format!("the worker's AWS_* environment{key}"),
            &mut warnings,
        )
    }

    /// What the plugin is told, so it calls the endpoints it was granted.
    pub fn plugin_env(&self) -> Vec<(String, String)> {
        vec![
            ("AWS_REGION".into(), self.region.clone()),
            ("AWS_ENDPOINT_URL_ECS".into(), self.ecs.clone()),
            ("AWS_ENDPOINT_URL_CLOUDWATCH_LOGS".into(), self.logs.clone()),
        ]
    }
}

/// `scheme://authority` of a URL (SDKs accept a trailing path; a grant names
/// origins only).
fn origin_of(url: &str) -> String {
    let url = url.trim();
    match url.find("://") {
        Some(at) => {
            let rest = &url[at + 3..];
            let end = rest.find(['/', '?']).unwrap_or(rest.len());
            format!("{}://{}", &url[..at], &rest[..end])
        }
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn endpoints(vars: &[(&str, &str)]) -> Option<AwsEndpoints> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        AwsEndpoints::from_env(&|name| map.get(name).cloned())
    }

    #[test]
    fn the_sdk_variables_pick_the_endpoints() {
        assert_eq!(endpoints(&[("AWS_ENDPOINT_URL", "http://x:1")]), None);
        let aws = endpoints(&[("AWS_REGION", "eu-west-1")]).expect("region");
        assert_eq!(aws.ecs, "https://ecs.eu-west-1.amazonaws.com");
        assert_eq!(aws.logs, "https://logs.eu-west-1.amazonaws.com");
        assert_eq!(aws.policy().expect("grant").endpoints.len(), 2);
        let local = endpoints(&[
            ("AWS_DEFAULT_REGION", "us-east-1"),
            ("AWS_ENDPOINT_URL", "http://127.0.0.1:4566/"),
        ])
        .expect("region");
        assert_eq!(local.ecs, "http://127.0.0.1:4566");
        assert_eq!(local.logs, local.ecs);
        assert_eq!(local.policy().expect("grant").endpoints.len(), 1);
        let split = endpoints(&[
            ("AWS_REGION", "us-east-1"),
            ("AWS_ENDPOINT_URL", "http://a:1"),
            ("AWS_ENDPOINT_URL_CLOUDWATCH_LOGS", "http://b:2/path"),
        ])
        .expect("region");
        assert_eq!(
            (split.ecs.as_str(), split.logs.as_str()),
            ("http://a:1", "http://b:2")
        );
    }

    #[test]
    fn a_bad_endpoint_is_an_error_naming_the_environment() {
        let bad =
            endpoints(&[("AWS_REGION", "r"), ("AWS_ENDPOINT_URL", "ftp://x")]).expect("region");
        let error = bad.policy().expect_err("ftp").to_string();
        assert!(error.contains("AWS_* environment"), "{error}");
    }
}
