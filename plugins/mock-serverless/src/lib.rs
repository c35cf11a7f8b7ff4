//! `mock-serverless`: a simulated serverless platform for tests and demos that
//! must not need real infrastructure.
//!
//! Nothing is kept between calls: `start` decides the execution's whole future
//! (when it runs, how it ends) and writes it into the handle, so `wait`,
//! `inspect` and `recover` are pure functions of the handle and the clock. That
//! makes it survive worker restarts exactly like a real remote platform would.

use host_plugin_sdk::log::{self, OutputStream};
use host_plugin_sdk::template::{self, Template};
use host_plugin_sdk::{Error, Exit, Info, Job, Plugin, Result, Status, export_plugin};
use serde::{Deserialize, Serialize};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub struct MockServerless;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    submit_latency_ms: Option<u64>,
    #[serde(default)]
    cold_start_ms: Option<u64>,
    #[serde(default)]
    duration_ms: Option<u64>,
    #[serde(default)]
    exit_code: Option<i32>,
    #[serde(default)]
    throttle_rate: Option<f64>,
    #[serde(default)]
    failure_rate: Option<f64>,
    #[serde(default)]
    seed: Option<u64>,
    #[serde(default)]
    crash_after_ms: Option<u64>,
    #[serde(default)]
    log_lines: Option<u32>,
    /// Accepted so a template shared with other pool types can carry it.
    #[serde(default, rename = "env")]
    _env: Option<serde_json::Value>,
}

const DEFAULT_SUBMIT_LATENCY_MS: u64 = 20;
const DEFAULT_COLD_START_MS: u64 = 100;
const DEFAULT_DURATION_MS: u64 = 500;
const DEFAULT_LOG_LINES: u32 = 3;

#[derive(Debug, Serialize, Deserialize)]
pub struct Handle {
    execution_id: String,
    /// Unix ms when the platform accepted the execution.
    submitted_at_ms: u64,
    running_at_ms: u64,
    ends_at_ms: u64,
    /// When set and before `ends_at_ms`, the execution crashes then.
    crash_at_ms: Option<u64>,
    exit_code: i32,
    log_lines: u32,
}

impl Plugin for MockServerless {
    type Config = Config;
    type Handle = Handle;

    fn info() -> Info {
        Info {
            name: "mock-serverless".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "A simulated serverless platform: latency, cold starts, throttling and failures set by job variables".into(),
            default_base_job_template: Template::new()
                .variable("submit_latency_ms", template::integer("Time the platform takes to accept a submission", 0, Some(DEFAULT_SUBMIT_LATENCY_MS as i64)))
                .variable("cold_start_ms", template::integer("Provisioning time before the execution runs", 0, Some(DEFAULT_COLD_START_MS as i64)))
                .variable("duration_ms", template::integer("How long the execution runs", 0, Some(DEFAULT_DURATION_MS as i64)))
                .variable("exit_code", template::integer("Exit code of the execution", 0, Some(0)))
                .variable("throttle_rate", template::number("Share of submissions refused as throttled (a retryable error)", 0.0, 1.0, Some(0.0)))
                .variable("failure_rate", template::number("Share of executions that fail with exit code 1, decided by seed and flow run id", 0.0, 1.0, Some(0.0)))
                .variable("seed", template::integer("Seed for failure_rate and throttle_rate", 0, Some(0)))
                .variable("crash_after_ms", template::integer("Crash the execution this long after it starts running", 0, None))
                .variable("log_lines", template::integer("Output lines the execution writes", 0, Some(DEFAULT_LOG_LINES as i64)))
                .variable("env", template::string_map("Environment variables (recorded, not used)"))
                .build(),
            capabilities: vec![],
            example_variables: serde_json::json!({"cold_start_ms": 10, "duration_ms": 50, "log_lines": 2}),
        }
    }

    fn long_running_example() -> Option<serde_json::Value> {
        Some(serde_json::json!({"cold_start_ms": 0, "duration_ms": 300_000}))
    }

    fn validate(config: &Config) -> Result<()> {
        for (field, rate) in [
            ("throttle_rate", config.throttle_rate),
            ("failure_rate", config.failure_rate),
        ] {
            if rate.is_some_and(|r| !(0.0..=1.0).contains(&r)) {
                return Err(Error::fatal(format!("{field}: must be between 0 and 1")));
            }
        }
        Ok(())
    }

    fn start(job: Job<Config>) -> Result<Handle> {
        let config = job.config;
        let seed = config.seed.unwrap_or(0);
        let now = now_ms();
        // Throttling varies by the second so a retry a little later can succeed.
        let throttle_draw = unit_draw(&[seed, hash(&job.flow_run_id), now / 1000]);
        if throttle_draw < config.throttle_rate.unwrap_or(0.0) {
            return Err(Error::retryable(
                "ThrottlingException: rate of submissions exceeded, try again later",
            ));
        }
        sleep_ms(
            config
                .submit_latency_ms
                .unwrap_or(DEFAULT_SUBMIT_LATENCY_MS),
        );
        let submitted_at_ms = now_ms();
        let running_at_ms = submitted_at_ms + config.cold_start_ms.unwrap_or(DEFAULT_COLD_START_MS);
        let ends_at_ms = running_at_ms + config.duration_ms.unwrap_or(DEFAULT_DURATION_MS);
        let fails = unit_draw(&[seed, hash(&job.flow_run_id)]) < config.failure_rate.unwrap_or(0.0);
        let execution_id = format!(
            "exec-{:016x}",
            hash(&format!("{}:{submitted_at_ms}", job.flow_run_id))
        );
        log::info(&format!(
            "submitted flow run {} as {execution_id}",
            job.flow_run_id
        ));
        Ok(Handle {
            execution_id,
            submitted_at_ms,
            running_at_ms,
            ends_at_ms,
            crash_at_ms: config.crash_after_ms.map(|after| running_at_ms + after),
            exit_code: if fails {
                1
            } else {
                config.exit_code.unwrap_or(0)
            },
            log_lines: config.log_lines.unwrap_or(DEFAULT_LOG_LINES),
        })
    }

    fn wait(handle: Handle) -> Result<Exit> {
        let stops_at = handle.stops_at_ms();
        let called_at = now_ms();
        let span = stops_at.saturating_sub(handle.running_at_ms);
        for i in 0..handle.log_lines {
            let due = handle.running_at_ms + span * u64::from(i) / u64::from(handle.log_lines);
            // Lines before this call were streamed by an earlier `wait` (re-attach).
            if due < called_at && i > 0 {
                continue;
            }
            sleep_until(due);
            log::output(
                OutputStream::Stdout,
                &format!(
                    "[{}] log line {} of {}",
                    handle.execution_id,
                    i + 1,
                    handle.log_lines
                ),
            );
        }
        sleep_until(stops_at);
        match handle.crash() {
            Some(crash) => Err(Error::fatal(crash)),
            None => Ok(Exit::code(handle.exit_code)),
        }
    }

    fn inspect(handle: Handle) -> Result<Status> {
        let now = now_ms();
        Ok(if now < handle.running_at_ms {
            Status::Pending
        } else if now < handle.stops_at_ms() {
            Status::Running
        } else {
            match handle.crash() {
                Some(crash) => Status::Exited(Exit {
                    message: crash,
                    ..Exit::default()
                }),
                None => Status::Exited(Exit::code(handle.exit_code)),
            }
        })
    }

    /// The simulated platform accepts a stop at once and forgets the execution.
    fn stop(handle: Handle, _grace_seconds: u32) -> Result<()> {
        log::info(&format!("stop requested for {}", handle.execution_id));
        Ok(())
    }

    fn destroy(_handle: Handle) -> Result<()> {
        Ok(())
    }
}

impl Handle {
    fn stops_at_ms(&self) -> u64 {
        self.crash_at_ms
            .map_or(self.ends_at_ms, |crash| crash.min(self.ends_at_ms))
    }

    fn crash(&self) -> Option<String> {
        let crash_at = self.crash_at_ms.filter(|at| *at < self.ends_at_ms)?;
        Some(format!(
            "execution {} crashed {} ms after it started running",
            self.execution_id,
            crash_at - self.running_at_ms
        ))
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn sleep_ms(ms: u64) {
    if ms > 0 {
        std::thread::sleep(Duration::from_millis(ms));
    }
}

fn sleep_until(unix_ms: u64) {
    sleep_ms(unix_ms.saturating_sub(now_ms()));
}

/// FNV-1a: stable across builds, unlike `DefaultHasher`'s promise.
fn hash(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// A deterministic draw in [0, 1) from the given words.
fn unit_draw(words: &[u64]) -> f64 {
    let mixed = words.iter().fold(0x9e37_79b9_7f4a_7c15_u64, |h, w| {
        let mut x = h ^ w.wrapping_mul(0xbf58_476d_1ce4_e5b9);
        x ^= x >> 31;
        x.wrapping_mul(0x94d0_49bb_1331_11eb)
    });
    (mixed >> 11) as f64 / (1u64 << 53) as f64
}

export_plugin!(MockServerless);
