//! Turns a [`Plugin`] into the WIT `driver` exports: parsing, handle versioning
//! and error mapping live here so every plugin gets them the same way.

use crate::bindings::host::infra::types as wit;
use crate::{CONTRACT_VERSION, Error, Exit, Job, Plugin, Status};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Bumped when the SDK's handle envelope changes shape.
const HANDLE_VERSION: u32 = 1;

#[derive(serde::Serialize, serde::Deserialize)]
struct Envelope<H> {
    v: u32,
    plugin: String,
    #[serde(flatten)]
    handle: H,
}

impl From<Error> for wit::PluginError {
    fn from(error: Error) -> Self {
        match error {
            Error::Fatal(message) => wit::PluginError {
                kind: wit::ErrorKind::Fatal,
                message,
            },
            Error::Retryable(message) => wit::PluginError {
                kind: wit::ErrorKind::Retryable,
                message,
            },
        }
    }
}

impl From<Exit> for wit::ExitStatus {
    fn from(exit: Exit) -> Self {
        wit::ExitStatus {
            code: exit.code,
            signal: exit.signal,
            oom_killed: exit.oom_killed,
            message: exit.message,
        }
    }
}

impl From<wit::ExitStatus> for Exit {
    fn from(exit: wit::ExitStatus) -> Self {
        Exit {
            code: exit.code,
            signal: exit.signal,
            oom_killed: exit.oom_killed,
            message: exit.message,
        }
    }
}

impl From<Status> for wit::RunStatus {
    fn from(status: Status) -> Self {
        match status {
            Status::Pending => wit::RunStatus::Pending,
            Status::Running => wit::RunStatus::Running,
            Status::Exited(exit) => wit::RunStatus::Exited(exit.into()),
            Status::NotFound(why) => wit::RunStatus::NotFound(why),
        }
    }
}

/// Parse a configuration, naming the offending field in the error.
pub fn parse_config<C: DeserializeOwned>(configuration: &str) -> Result<C, Error> {
    let value: serde_json::Value = serde_json::from_str(configuration)
        .map_err(|e| Error::fatal(format!("invalid job configuration: {e}")))?;
    // serde would read a struct from an array too; a configuration is an object.
    if !value.is_object() {
        return Err(Error::fatal(
            "invalid job configuration: expected a JSON object",
        ));
    }
    serde_json::from_value(value)
        .map_err(|e| Error::fatal(format!("invalid job configuration: {e}")))
}

fn encode_handle<P: Plugin>(handle: &P::Handle) -> Result<String, Error> {
    let envelope = Envelope {
        v: HANDLE_VERSION,
        plugin: P::info().name,
        handle,
    };
    serde_json::to_string(&envelope).map_err(|e| Error::fatal(format!("cannot encode handle: {e}")))
}

fn decode_handle<P: Plugin>(handle: &str) -> Result<P::Handle, Error> {
    let envelope: Envelope<P::Handle> = serde_json::from_str(handle)
        .map_err(|e| Error::fatal(format!("handle not understood by this plugin: {e}")))?;
    if envelope.v != HANDLE_VERSION {
        return Err(Error::fatal(format!(
            "handle version {} is not supported (expected {HANDLE_VERSION})",
            envelope.v
        )));
    }
    Ok(envelope.handle)
}

fn to_json_string<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "{}".to_string())
}

pub fn describe<P: Plugin>() -> wit::PluginInfo {
    let info = P::info();
    wit::PluginInfo {
        name: info.name,
        version: info.version,
        contract_version: CONTRACT_VERSION.to_string(),
        description: info.description,
        default_base_job_template: to_json_string(&info.default_base_job_template),
        capabilities: info.capabilities,
        example_variables: to_json_string(&info.example_variables),
        long_running_variables: P::long_running_example()
            .map(|v| to_json_string(&v))
            .unwrap_or_default(),
    }
}

pub fn validate<P: Plugin>(configuration: &str) -> Result<(), wit::PluginError> {
    let config: P::Config = parse_config(configuration)?;
    P::validate(&config)?;
    Ok(())
}

pub fn start<P: Plugin>(job: wit::Job) -> Result<String, wit::PluginError> {
    let config: P::Config = parse_config(&job.configuration)?;
    P::validate(&config)?;
    let handle = P::start(Job {
        flow_run_id: job.flow_run_id,
        flow_run_name: job.flow_run_name,
        config,
        env: job.env,
        command: job.command,
        labels: job.labels,
    })?;
    Ok(encode_handle::<P>(&handle)?)
}

pub fn wait<P: Plugin>(handle: &str) -> Result<wit::ExitStatus, wit::PluginError> {
    Ok(P::wait(decode_handle::<P>(handle)?)?.into())
}

pub fn inspect<P: Plugin>(handle: &str) -> Result<wit::RunStatus, wit::PluginError> {
    Ok(P::inspect(decode_handle::<P>(handle)?)?.into())
}

pub fn stop<P: Plugin>(handle: &str, grace_seconds: u32) -> Result<(), wit::PluginError> {
    Ok(P::stop(decode_handle::<P>(handle)?, grace_seconds)?)
}

pub fn destroy<P: Plugin>(handle: &str) -> Result<(), wit::PluginError> {
    Ok(P::destroy(decode_handle::<P>(handle)?)?)
}

pub fn recover<P: Plugin>(handle: &str) -> Result<wit::RunStatus, wit::PluginError> {
    Ok(P::recover(decode_handle::<P>(handle)?)?.into())
}
