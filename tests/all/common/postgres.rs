//! A real PostgreSQL for the tests: Debian's binaries, a cluster in a temp
//! directory on a free loopback port, run by the unprivileged `postgres`
//! user when the tests run as root. Never a system service. A watchdog
//! stops the cluster and removes its directory once the test process is
//! gone, however it ended.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

pub struct Postgres {
    bin: PathBuf,
    data: PathBuf,
    pub port: u16,
    /// Run the binaries as this user (when the tests run as root).
    user: Option<&'static str>,
    databases: AtomicUsize,
    /// Stopped and removed on drop (the shared one lives as long as the process).
    owned: bool,
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if self.owned {
            let _ = self
                .command("pg_ctl")
                .args(["-m", "immediate", "-D"])
                .arg(&self.data)
                .arg("stop")
                .output();
            if let Some(root) = self.data.parent() {
                let _ = std::fs::remove_dir_all(root);
            }
        }
    }
}

/// Where Debian installs the server's binaries.
fn bin_dir() -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|entry| Some(entry.ok()?.path().join("bin")))
        .filter(|bin| bin.join("initdb").exists())
        .collect();
    found.sort();
    found.pop()
}

/// The cluster this test binary shares, started on first use; `None` (and
/// a SKIPPED line) where PostgreSQL is not installed outside CI. `.ci/run`
/// installs it, so in CI a missing server is a failure.
pub fn shared() -> Option<&'static Postgres> {
    static SHARED: OnceLock<Option<Postgres>> = OnceLock::new();
    SHARED
        .get_or_init(|| match bin_dir() {
            Some(bin) => Some(Postgres::start(bin, false)),
            None if std::env::var_os("CI").is_some() => {
                panic!("PostgreSQL is not installed (apt-get install postgresql-15)")
            }
            None => {
                eprintln!("SKIPPED: PostgreSQL is not installed (apt-get install postgresql-15)");
                None
            }
        })
        .as_ref()
}

/// A cluster of its own, for a test that stops and starts it; removed on
/// drop. `None` where PostgreSQL is not installed (as for [`shared`]).
pub fn private() -> Option<Postgres> {
    shared()?;
    bin_dir().map(|bin| Postgres::start(bin, true))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

impl Postgres {
    fn start(bin: PathBuf, owned: bool) -> Postgres {
        let root = std::env::temp_dir().join(format!(
            "host-test-pg-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&root).expect("temp dir");
        let user = is_root().then_some("postgres");
        if let Some(user) = user {
            run(Command::new("chown").args(["-R", user]).arg(&root));
        }
        let data = root.join("data");
        let postgres = Postgres {
            bin,
            data,
            port: free_port(),
            user,
            databases: AtomicUsize::new(0),
            owned,
        };
        run(postgres
            .command("initdb")
            .args([
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--no-sync",
                "-D",
            ])
            .arg(&postgres.data));
        postgres.pg_ctl("start");
        // The watchdog: stops the cluster and removes it after this process.
        let script = format!(
            "while [ -d /proc/{pid} ]; do sleep 0.5; done; {pg_ctl} -D {data} -m immediate stop >/dev/null 2>&1; rm -rf {root}",
            pid = std::process::id(),
            pg_ctl = postgres.bin.join("pg_ctl").display(),
            data = postgres.data.display(),
            root = root.display(),
        );
        let mut watchdog = match user {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--", "sh", "-c", &script]);
                c
            }
            None => {
                let mut c = Command::new("sh");
                c.args(["-c", &script]);
                c
            }
        };
        // Detached on purpose: it must outlive this process to clean up after it.
        #[allow(clippy::zombie_processes)]
        watchdog
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the watchdog");
        postgres
    }

    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        match self.user {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(path);
                c
            }
            None => Command::new(path),
        }
    }

    /// `start`, `stop` or `restart`, waiting until done.
    fn pg_ctl(&self, action: &str) {
        self.pg_ctl_mode("fast", action)
    }

    fn pg_ctl_mode(&self, mode: &str, action: &str) {
        let log = self.data.with_file_name("server.log");
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c max_connections=300 -c fsync=on",
            self.port,
            self.data.display()
        );
        run(self
            .command("pg_ctl")
            .args(["-w", "-t", "60", "-m", mode, "-D"])
            .arg(&self.data)
            .arg("-l")
            .arg(&log)
            .args(["-o", &options, action]));
    }

    /// An immediate stop: the server processes quit without a checkpoint
    /// or a WAL flush, as a power cut or `kill -9` would leave the cluster
    /// (only what reached the disk survives).
    pub fn crash(&self) {
        self.pg_ctl_mode("immediate", "stop");
    }

    pub fn start_again(&self) {
        self.pg_ctl("start");
    }

    /// Serves TLS with this certificate and key from now on. They are
    /// copied into the cluster: the server takes only a key file of its
    /// own user, mode 0600.
    pub fn enable_ssl(&self, cert: &std::path::Path, key: &std::path::Path) {
        use std::os::unix::fs::PermissionsExt;
        for (from, name) in [(cert, "server.crt"), (key, "server.key")] {
            let to = self.data.join(name);
            std::fs::copy(from, &to).expect("copy into the cluster");
            std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o600)).expect("chmod");
            if let Some(user) = self.user {
                run(Command::new("chown").arg(user).arg(&to));
            }
        }
        self.psql("postgres", "ALTER SYSTEM SET ssl = on");
        // A restart, not a reload: a reload is signalled, and a connection
        // right after it may still get the old certificate.
        self.pg_ctl("restart");
    }

    /// A new, empty database; its URL.
    pub fn new_database(&self) -> String {
        let name = format!(
            "test_{}_{}",
            std::process::id(),
            self.databases.fetch_add(1, Ordering::SeqCst)
        );
        run(self
            .command("psql")
            .args(["-q", "-h", "127.0.0.1", "-U", "postgres", "-d", "postgres"])
            .args(["-p", &self.port.to_string()])
            .args(["-c", &format!("CREATE DATABASE {name}")]));
        self.url(&name)
    }

    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// Runs SQL in `database` with psql; its output.
    pub fn psql(&self, database: &str, sql: &str) -> String {
        let output = self
            .command("psql")
            .args([
                "-q",
                "-t",
                "-A",
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
                "-d",
                database,
            ])
            .args(["-p", &self.port.to_string()])
            .args(["-c", sql])
            .output()
            .expect("psql");
        assert!(
            output.status.success(),
            "psql {sql}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).trim().to_string()
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn run(command: &mut Command) {
    let output = command.output().expect("run a PostgreSQL tool");
    assert!(
        output.status.success(),
        "{command:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
