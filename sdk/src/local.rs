//! The plumbing of a plugin that runs each flow run as a local process (needs
//! the `process` capability): spawn with a fresh working directory, forward the
//! output until exit, stop with a grace period then kill, destroy.
//!
//! A plugin keeps a [`LocalProcess`] in its handle (or *as* its handle) and
//! hands every driver call but `start` to it:
//!
//! ```ignore
//! fn start(job: Job<Config>) -> Result<LocalProcess> {
//!     LocalProcess::spawn(vec!["nice".into(), "sh".into(), "-c".into(), cmd], job.env, None)
//! }
//! fn wait(handle: LocalProcess) -> Result<Exit> { handle.forward_output_until_exit() }
//! fn inspect(handle: LocalProcess) -> Result<Status> { Ok(handle.status()) }
//! fn stop(handle: LocalProcess, grace: u32) -> Result<()> { handle.stop(grace) }
//! fn destroy(handle: LocalProcess) -> Result<()> { handle.destroy() }
//! ```

use crate::capabilities::process::{self, SpawnRequest};
use crate::{Error, Exit, Result, Status, log};
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};

/// How long `stop` waits for a SIGKILLed run to be gone.
pub const KILL_WAIT: Duration = Duration::from_secs(10);

/// Linux signal numbers, for [`LocalProcess::signal`].
pub mod signal {
    pub const SIGHUP: i32 = 1;
    pub const SIGINT: i32 = 2;
    pub const SIGKILL: i32 = 9;
    pub const SIGUSR1: i32 = 10;
    pub const SIGUSR2: i32 = 12;
    pub const SIGTERM: i32 = 15;
}

/// A process the host spawned for one flow run; serializable, so it can be
/// (part of) a plugin's handle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalProcess {
    /// The capability's id of the process: never reused, unlike `pid`.
    pub id: u64,
    /// For people reading logs and handles.
    pub pid: u32,
    pub cwd: String,
    /// Only a directory the host made for the run is removed by `destroy`.
    pub remove_cwd: bool,
}

impl LocalProcess {
    /// Starts `argv` (argv[0] looked up in PATH) with exactly `env`, in `cwd`
    /// or, when `None`, a fresh directory that [`LocalProcess::destroy`] removes.
    pub fn spawn(
        argv: Vec<String>,
        env: Vec<(String, String)>,
        cwd: Option<String>,
    ) -> Result<LocalProcess> {
        if argv.is_empty() {
            return Err(Error::fatal("command: nothing to run"));
        }
        let remove_cwd = cwd.is_none();
        let spawned = process::spawn(&SpawnRequest { argv, env, cwd }).map_err(Error::fatal)?;
        log::info(&format!("started as pid {}", spawned.pid));
        Ok(LocalProcess {
            id: spawned.id,
            pid: spawned.pid,
            cwd: spawned.cwd,
            remove_cwd,
        })
    }

    /// Forwards every output line to the flow run's logs, then returns the
    /// exit. After a worker restart it resumes where the last reader stopped.
    pub fn forward_output_until_exit(&self) -> Result<Exit> {
        loop {
            let batch = process::read_output(self.id, 1_000).map_err(Error::fatal)?;
            for (stream, line) in &batch.lines {
                log::output(*stream, line);
            }
            if batch.eof {
                break;
            }
        }
        Ok(process::wait(self.id).map_err(Error::fatal)?.into())
    }

    /// Running, exited, or not found (with the reason); never blocks.
    pub fn status(&self) -> Status {
        match process::try_wait(self.id) {
            Ok(None) => Status::Running,
            Ok(Some(exit)) => Status::Exited(exit.into()),
            Err(why) => Status::NotFound(why),
        }
    }

    /// Signals the whole process group. A finished process is not an error.
    pub fn signal(&self, signal: i32) -> Result<()> {
        process::signal(self.id, signal).map_err(Error::fatal)
    }

    /// SIGTERM, then SIGKILL if the run is still there after
    /// `grace_seconds`; returns once nothing of the run runs. The host's
    /// supervisor ends the run's whole tree before it records the exit, so
    /// "not running" means the whole tree is gone, and whoever checks right
    /// after `stop` (the worker, `host plugin test`) finds nothing.
    pub fn stop(&self, grace_seconds: u32) -> Result<()> {
        self.signal(signal::SIGTERM)?;
        if self.ended_within(Duration::from_secs(grace_seconds.into())) {
            return Ok(());
        }
        log::warn(&format!(
            "pid {} ignored SIGTERM for {grace_seconds}s; sending SIGKILL",
            self.pid
        ));
        self.signal(signal::SIGKILL)?;
        // A killed tree still takes its moment to be reaped (a big one, or
        // one in uninterruptible sleep, longer); bounded, so a stuck run is
        // an error rather than a `stop` that never returns.
        if self.ended_within(KILL_WAIT) {
            return Ok(());
        }
        Err(Error::retryable(format!(
            "pid {} still runs {}s after SIGKILL",
            self.pid,
            KILL_WAIT.as_secs()
        )))
    }

    /// Whether the run stopped running (exited, or is unknown to the host)
    /// within `limit`; checked at least once.
    fn ended_within(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            if self.status() != Status::Running {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Removes the working directory if the host made it for this run.
    /// Calling it twice is fine.
    pub fn destroy(&self) -> Result<()> {
        if self.remove_cwd {
            process::remove_dir(&self.cwd).map_err(Error::fatal)?;
        }
        Ok(())
    }
}

/// Merges `overrides` over `env`: a key set in both takes the override,
/// except the run's identity the host put in `env` (`HOST_FLOW_RUN_ID`,
/// `HOST_API_URL`, every `HOST_*` it set): a job's configuration cannot
/// make a workload believe it is another run or report elsewhere.
pub fn merge_env(
    mut env: Vec<(String, String)>,
    overrides: impl IntoIterator<Item = (String, String)>,
) -> Vec<(String, String)> {
    let identity: Vec<String> = env
        .iter()
        .filter(|(k, _)| k.starts_with(IDENTITY_PREFIX))
        .map(|(k, _)| k.clone())
        .collect();
    for (key, value) in overrides {
        if identity.contains(&key) {
            continue;
        }
        env.retain(|(k, _)| *k != key);
        env.push((key, value));
    }
    env
}

/// The prefix of the variables that say which run a workload is.
pub const IDENTITY_PREFIX: &str = "HOST_";

/// The four calls a plugin whose `Handle` is a [`LocalProcess`] hands to it
/// as they are: `wait` forwards the output, `inspect`, `stop` with the grace
/// then SIGKILL, `destroy`. Write it inside the `impl Plugin` block.
#[macro_export]
macro_rules! local_process_calls {
    () => {
        fn wait(process: $crate::local::LocalProcess) -> $crate::Result<$crate::Exit> {
            process.forward_output_until_exit()
        }
        fn inspect(process: $crate::local::LocalProcess) -> $crate::Result<$crate::Status> {
            Ok(process.status())
        }
        fn stop(process: $crate::local::LocalProcess, grace_seconds: u32) -> $crate::Result<()> {
            process.stop(grace_seconds)
        }
        fn destroy(process: $crate::local::LocalProcess) -> $crate::Result<()> {
            process.destroy()
        }
    };
}
