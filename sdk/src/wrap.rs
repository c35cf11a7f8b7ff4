//! Running each flow run through a wrapper: a sandbox (`bwrap`, `firejail`,
//! `unshare`, `systemd-run`, ...) that starts the workload inside itself.
//!
//! A wrapper and its workload must not share an environment: the job's
//! `env` is the workload's, and given to the wrapper it would reach the
//! wrapper itself (`LD_PRELOAD` loaded by bwrap outside the sandbox, `PATH`
//! choosing which bwrap runs). So [`Wrapper`] starts the wrapper with an
//! environment of its own, without the job's variables and without loader
//! variables, and its program is looked up in the host's `PATH`; the
//! workload's environment is set *inside*, by the wrapper's own flags
//! (bwrap's `--clearenv` and `--setenv K V`) or by `env -i K=V ...` after it.
//!
//! The wrapper starts in the run's fresh working directory, so `.` in its
//! arguments is that directory (bwrap resolves `--bind . /work` against it):
//! no placeholder needed, and the directory is the one `destroy` removes.
//!
//! ```ignore
//! let sandbox = Wrapper::new("bwrap")
//!     .args(["--die-with-parent", "--unshare-all", "--ro-bind", "/usr", "/usr"])
//!     .args(["--bind", ".", "/work", "--chdir", "/work"])
//!     .env_flags("--clearenv", "--setenv");
//! sandbox.spawn(command, job.env)
//! ```

use crate::local::LocalProcess;
use crate::{Error, Result};

/// The `PATH` a workload gets inside the wrapper when its environment has
/// none: the host's own `PATH` names directories of the host, not of the
/// sandbox.
pub const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// A wrapper program, its options, and how it sets the workload's environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wrapper {
    argv: Vec<String>,
    env: Vec<(String, String)>,
    env_flags: Option<(String, String)>,
}

impl Wrapper {
    /// `program`, looked up in the host's `PATH` (never the job's).
    pub fn new(program: &str) -> Wrapper {
        Wrapper {
            argv: vec![program.to_string()],
            env: Vec::new(),
            env_flags: None,
        }
    }

    /// Options of the wrapper, before the workload's command.
    pub fn args<S: Into<String>>(mut self, args: impl IntoIterator<Item = S>) -> Wrapper {
        for arg in args {
            self.argv.push(arg.into());
        }
        self
    }

    /// The workload's environment is set by the wrapper: `clear` once, then
    /// `set KEY VALUE` per variable (bwrap: `--clearenv`, `--setenv`).
    /// Without this, the command runs as `env -i KEY=VALUE ... COMMAND`.
    pub fn env_flags(mut self, clear: &str, set: &str) -> Wrapper {
        self.env_flags = Some((clear.to_string(), set.to_string()));
        self
    }

    /// A variable for the wrapper itself (rarely needed: it gets none by
    /// default). Loader variables (`LD_*`) are refused: they would act on
    /// the wrapper, outside the sandbox.
    pub fn wrapper_env(mut self, key: &str, value: &str) -> Result<Wrapper> {
        if is_loader_variable(key) {
            return Err(Error::fatal(format!(
                "{key}: a loader variable would act on the wrapper, outside the sandbox"
            )));
        }
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.to_string(), value.to_string()));
        Ok(self)
    }

    /// The argv that runs `command` inside the wrapper with exactly `env`
    /// (plus [`DEFAULT_PATH`] when `env` has no `PATH`).
    pub fn argv(&self, command: &[String], env: &[(String, String)]) -> Result<Vec<String>> {
        if command.is_empty() {
            return Err(Error::fatal("command: nothing to run"));
        }
        if let Some((key, _)) = env.iter().find(|(k, _)| k.is_empty() || k.contains('=')) {
            return Err(Error::fatal(format!("env: {key:?} is not a variable name")));
        }
        let mut env = env.to_vec();
        if !env.iter().any(|(k, _)| k == "PATH") {
            env.push(("PATH".into(), DEFAULT_PATH.into()));
        }
        let mut argv = self.argv.clone();
        match &self.env_flags {
            Some((clear, set)) => {
                argv.push(clear.clone());
                for (key, value) in env {
                    argv.extend([set.clone(), key, value]);
                }
                argv.push("--".into());
            }
            None => {
                // `env` would take a command containing `=` for a variable.
                if command[0].contains('=') {
                    return Err(Error::fatal(format!(
                        "command: {:?} cannot be run through `env`",
                        command[0]
                    )));
                }
                argv.extend(["--", "env", "-i"].map(String::from));
                argv.extend(env.into_iter().map(|(k, v)| format!("{k}={v}")));
            }
        }
        argv.extend(command.iter().cloned());
        Ok(argv)
    }

    /// The wrapper's own environment: what [`Wrapper::wrapper_env`] set, and
    /// no `PATH`, so the host looks the wrapper up in its own.
    pub fn environment(&self) -> Vec<(String, String)> {
        self.env.clone()
    }

    /// Starts `command` inside the wrapper, in a fresh working directory
    /// (the wrapper's `.`), with `env` as the workload's environment.
    pub fn spawn(&self, command: Vec<String>, env: Vec<(String, String)>) -> Result<LocalProcess> {
        LocalProcess::spawn(self.argv(&command, &env)?, self.environment(), None)
    }
}

/// Variables the dynamic loader acts on (`LD_PRELOAD`, `LD_LIBRARY_PATH`,
/// `LD_AUDIT`, ...).
pub fn is_loader_variable(key: &str) -> bool {
    key.starts_with("LD_")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_job_env_goes_inside_through_the_wrappers_flags() {
        let bwrap = Wrapper::new("bwrap")
            .args(["--unshare-all"])
            .env_flags("--clearenv", "--setenv");
        let argv = bwrap
            .argv(
                &strings(&["sh", "-c", "echo $A"]),
                &env(&[("A", "b c"), ("LD_PRELOAD", "/x.so"), ("PATH", "/evil")]),
            )
            .expect("argv");
        assert_eq!(
            argv,
            strings(&[
                "bwrap",
                "--unshare-all",
                "--clearenv",
                "--setenv",
                "A",
                "b c",
                "--setenv",
                "LD_PRELOAD",
                "/x.so",
                "--setenv",
                "PATH",
                "/evil",
                "--",
                "sh",
                "-c",
                "echo $A"
            ])
        );
        assert_eq!(
            bwrap.environment(),
            Vec::new(),
            "the wrapper gets none of it"
        );
    }

    #[test]
    fn without_flags_env_sets_it_and_a_path_is_given_inside() {
        let argv = Wrapper::new("unshare")
            .args(["-n"])
            .argv(&strings(&["true"]), &env(&[("A", "1")]))
            .expect("argv");
        assert_eq!(
            argv,
            strings(&[
                "unshare",
                "-n",
                "--",
                "env",
                "-i",
                "A=1",
                &format!("PATH={DEFAULT_PATH}"),
                "true"
            ])
        );
        let refused = Wrapper::new("unshare").argv(&strings(&["A=1"]), &[]);
        assert!(refused.is_err());
    }

    #[test]
    fn loader_variables_never_reach_the_wrapper_and_bad_names_are_refused() {
        assert!(
            Wrapper::new("w")
                .wrapper_env("LD_PRELOAD", "/x.so")
                .is_err()
        );
        assert!(Wrapper::new("w").wrapper_env("LD_AUDIT", "/x.so").is_err());
        let w = Wrapper::new("w")
            .wrapper_env("XDG_RUNTIME_DIR", "/run/user/1")
            .expect("fine");
        assert_eq!(w.environment(), env(&[("XDG_RUNTIME_DIR", "/run/user/1")]));
        assert!(w.argv(&strings(&["true"]), &env(&[("A=B", "1")])).is_err());
        assert!(w.argv(&[], &[]).is_err());
    }
}
