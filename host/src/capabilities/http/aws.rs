//! AWS Signature Version 4 for an endpoint granted `auth = "aws-sigv4"`:
//! the credentials from the standard chain, read at each request so rotated
//! keys are picked up, and the signature by the `aws-sigv4` crate.
//!
//! The chain is ours, not `aws-config`'s (which brings the SDK's whole
//! runtime): the environment (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
//! `AWS_SESSION_TOKEN`), then the profile (`AWS_PROFILE`, else `default`) of
//! the shared credentials file (`AWS_SHARED_CREDENTIALS_FILE`, else
//! `~/.aws/credentials`) and of the config file (`AWS_CONFIG_FILE`, else
//! `~/.aws/config`). An entry naming `aws_profile` uses only the files.
//! Not covered: SSO, `credential_process`, assumed roles, instance and
//! container metadata.

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    PayloadChecksumKind, SignableBody, SignableRequest, SigningSettings, sign,
};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// Static keys, as found.
#[derive(Clone, PartialEq, Eq)]
pub struct AwsKeys {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
}

impl std::fmt::Debug for AwsKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret, not even in a debug print.
        f.debug_struct("AwsKeys")
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

/// Where the chain looks, so tests can give it something else than the
/// process's environment and home.
pub struct Sources<'a> {
    pub env: &'a dyn Fn(&str) -> Option<String>,
    pub home: Option<PathBuf>,
}

fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

impl Sources<'_> {
    /// This process's environment and home.
    pub fn process() -> Sources<'static> {
        Sources {
            env: &process_env,
            home: std::env::var_os("HOME").map(PathBuf::from),
        }
    }
}

/// The credentials for an entry: `profile` and `credentials_file` are the
/// entry's own `aws_profile` and `aws_credentials_file`.
pub fn credentials(
    sources: &Sources<'_>,
    profile: Option<&str>,
    credentials_file: Option<&Path>,
) -> Result<AwsKeys, String> {
    let env = sources.env;
    if profile.is_none()
        && let (Some(id), Some(secret)) = (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY"))
    {
        return Ok(AwsKeys {
            access_key_id: id,
            secret_access_key: secret,
            session_token: env("AWS_SESSION_TOKEN"),
        });
    }
    let profile = profile
        .map(String::from)
        .or_else(|| env("AWS_PROFILE"))
        .unwrap_or_else(|| "default".into());
    let in_home = |name: &str| sources.home.as_ref().map(|h| h.join(".aws").join(name));
    let credentials_path = credentials_file
        .map(Path::to_path_buf)
        .or_else(|| env("AWS_SHARED_CREDENTIALS_FILE").map(PathBuf::from))
        .or_else(|| in_home("credentials"));
    let config_path = env("AWS_CONFIG_FILE")
        .map(PathBuf::from)
        .or_else(|| in_home("config"));
    // The credentials file names a section after the profile; the config
    // file says `[profile NAME]`, except for `[default]`.
    let config_section = if profile == "default" {
        profile.clone()
    } else {
        format!("profile {profile}")
    };
    for (path, section) in [(credentials_path, &profile), (config_path, &config_section)] {
        let Some(path) = path else { continue };
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let sections = parse_ini(&text);
        let Some(keys) = sections.get(section.as_str()) else {
            continue;
        };
        if let (Some(id), Some(secret)) = (
            keys.get("aws_access_key_id"),
            keys.get("aws_secret_access_key"),
        ) {
            return Ok(AwsKeys {
                access_key_id: id.clone(),
                secret_access_key: secret.clone(),
                session_token: keys.get("aws_session_token").cloned(),
            });
        }
    }
    Err(format!(
        "no AWS credentials: neither AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY nor profile `{profile}` in the shared credentials or config file"
    ))
}

/// `[section]` and `key = value` lines; `#` and `;` start comments.
fn parse_ini(text: &str) -> HashMap<&str, HashMap<String, String>> {
    let mut sections: HashMap<&str, HashMap<String, String>> = HashMap::new();
    let mut current = None;
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            let name = name.trim();
            sections.entry(name).or_default();
            current = Some(name);
        } else if let (Some(section), Some((key, value))) = (current, line.split_once('=')) {
            sections
                .entry(section)
                .or_default()
                .insert(key.trim().to_ascii_lowercase(), value.trim().to_string());
        }
    }
    sections
}

/// One signing: whose keys, for which service and region, when.
pub struct Signer<'a> {
    pub keys: &'a AwsKeys,
    pub service: &'a str,
    pub region: &'a str,
    pub time: SystemTime,
    /// Also send and sign `x-amz-content-sha256` (S3 needs it, the other
    /// services accept it).
    pub content_sha256_header: bool,
}

impl Signer<'_> {
    /// The headers SigV4 adds, `authorization` among them, for a request
    /// with `headers` (which must hold `host`) and this whole `body`.
    pub fn headers(
        &self,
        method: &str,
        uri: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<Vec<(&'static str, String)>, String> {
        let keys = self.keys;
        let identity: Identity = Credentials::new(
            &keys.access_key_id,
            &keys.secret_access_key,
            keys.session_token.clone(),
            None,
            "host-grants",
        )
        .into();
        let mut settings = SigningSettings::default();
        if self.content_sha256_header {
            settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
        }
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(self.region)
            .name(self.service)
            .time(self.time)
            .settings(settings)
            .build()
            .map_err(|e| format!("SigV4 parameters: {e}"))?
            .into();
        let signable = SignableRequest::new(
            method,
            uri,
            headers.iter().copied(),
            SignableBody::Bytes(body),
        )
        .map_err(|e| format!("SigV4: {e}"))?;
        let (instructions, _signature) = sign(signable, &params)
            .map_err(|e| format!("SigV4: {e}"))?
            .into_parts();
        let (added, _params) = instructions.into_parts();
        Ok(added
            .into_iter()
            .map(|header| (header.name(), header.value().to_string()))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn environment_first_then_the_profile_of_the_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let aws = dir.path().join(".aws");
        std::fs::create_dir_all(&aws).expect("dir");
        std::fs::write(
            aws.join("credentials"),
            "[default]\naws_access_key_id = DEFAULTID\naws_secret_access_key = s1\n\n[work]\naws_access_key_id=WORKID\naws_secret_access_key=s2\naws_session_token=t2\n",
        )
        .expect("write");
        std::fs::write(
            aws.join("config"),
            "[profile other]\naws_access_key_id = OTHERID\naws_secret_access_key = s3\n",
        )
        .expect("write");
        let with = |vars: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                vars.iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| v.to_string())
            }
        };
        let home = Some(dir.path().to_path_buf());
        let env = with(&[
            ("AWS_ACCESS_KEY_ID", "ENVID"),
            ("AWS_SECRET_ACCESS_KEY", "s0"),
        ]);
        let sources = Sources {
            env: &env,
            home: home.clone(),
        };
        assert_eq!(
            credentials(&sources, None, None)
                .expect("env")
                .access_key_id,
            "ENVID"
        );
        // An entry's own profile skips the environment.
        let keys = credentials(&sources, Some("work"), None).expect("work");
        assert_eq!(
            (keys.access_key_id.as_str(), keys.session_token.as_deref()),
            ("WORKID", Some("t2"))
        );
        let env = with(&[("AWS_PROFILE", "other")]);
        let sources = Sources {
            env: &env,
            home: home.clone(),
        };
        assert_eq!(
            credentials(&sources, None, None)
                .expect("config")
                .access_key_id,
            "OTHERID"
        );
        let env = with(&[]);
        let sources = Sources { env: &env, home };
        assert_eq!(
            credentials(&sources, None, None)
                .expect("default")
                .access_key_id,
            "DEFAULTID"
        );
        let error = credentials(&sources, Some("missing"), None).expect_err("none");
        assert!(error.contains("`missing`"), "{error}");
        assert!(!format!("{keys:?}").contains("s2"));
    }

    /// AWS's published example, the `get-vanilla` case of the SigV4 test
    /// suite: GET / on example.amazonaws.com, service `service`,
    /// 2015-08-30T12:36:00Z, the documentation's example keys.
    #[test]
    fn the_signature_matches_aws_published_example() {
        let keys = AwsKeys {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
            session_token: None,
        };
        let mut signer = Signer {
            keys: &keys,
            service: "service",
            region: "us-east-1",
            time: SystemTime::UNIX_EPOCH + Duration::from_secs(1_440_938_160),
            content_sha256_header: false,
        };
        let sign = |signer: &Signer<'_>| {
            let added = signer
                .headers(
                    "GET",
                    "https://example.amazonaws.com/",
                    &[("host", "example.amazonaws.com")],
                    b"",
                )
                .expect("signed");
            let value = |name: &str| {
                added
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default()
            };
            (value("authorization"), value("x-amz-date"))
        };
        let (authorization, date) = sign(&signer);
        assert_eq!(
            authorization,
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
        );
        assert_eq!(date, "20150830T123600Z");
        signer.content_sha256_header = true;
        let (authorization, _) = sign(&signer);
        assert!(
            authorization.contains("SignedHeaders=host;x-amz-content-sha256;x-amz-date,"),
            "{authorization}"
        );
    }
}
