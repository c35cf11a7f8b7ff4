//! The control-plane CLI against a real `host serve` process.

use crate::common;

use common::{ServerProcess, host_cli};

fn ok(url: &str, args: &[&str]) -> String {
    common::host_ok(url, args)
}

fn fails(url: &str, args: &[&str]) -> String {
    let (code, _, err) = host_cli(url, args);
    assert_ne!(code, 0, "host {args:?} should fail");
    assert!(err.starts_with("error: "), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    err
}

#[test]
fn the_seed_story_up_to_a_scheduled_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = ServerProcess::start(dir.path(), &[]);
    let url = server.url.as_str();

    let out = ok(
        url,
        &["work-pool", "create", "--type", "process", "my-pool"],
    );
    assert!(out.contains("Created work pool `my-pool`"), "{out}");
    let table = ok(url, &["work-pool", "ls"]);
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("my-pool") && l.contains("process") && l.contains("NOT_READY")),
        "{table}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&ok(url, &["work-pool", "ls", "--output", "json"])).expect("json");
    assert_eq!(json[0]["name"], "my-pool");
    assert!(ok(url, &["work-pool", "inspect", "my-pool"]).contains("{{ command }}"));
    let template: serde_json::Value = serde_json::from_str(&ok(
        url,
        &[
            "work-pool",
            "get-default-base-job-template",
            "--type",
            "mock-serverless",
        ],
    ))
    .expect("json");
    assert!(template["variables"]["properties"]["cold_start_ms"].is_object());

    assert!(
        fails(url, &["work-pool", "create", "--type", "teleporter", "p2"])
            .contains("unknown pool type `teleporter`")
    );
    assert!(
        fails(
            url,
            &["work-pool", "create", "--type", "process", "my-pool"]
        )
        .contains("already exists")
    );
    assert!(fails(url, &["work-pool", "inspect", "nope"]).contains("does not exist"));

    ok(
        url,
        &[
            "work-queue",
            "create",
            "urgent",
            "--pool",
            "my-pool",
            "--priority",
            "1",
        ],
    );
    let queues = ok(url, &["work-queue", "ls", "--pool", "my-pool"]);
    let names: Vec<&str> = queues
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(names, ["urgent", "default"]);

    let out = ok(
        url,
        &[
            "deployment",
            "create",
            "hello/demo",
            "--pool",
            "my-pool",
            "--param",
            "who=world",
            "--job-variable",
            "env.GREETING=hi",
            "--",
            "echo",
            "hi",
        ],
    );
    assert!(out.contains("Created deployment `hello/demo`"), "{out}");
    let out = ok(
        url,
        &[
            "deployment",
            "create",
            "hello/demo",
            "--pool",
            "my-pool",
            "--",
            "echo",
            "hi",
        ],
    );
    assert!(
        out.contains("Updated deployment"),
        "idempotent by name: {out}"
    );
    assert!(
        fails(
            url,
            &[
                "deployment",
                "create",
                "hello/bad",
                "--pool",
                "my-pool",
                "--job-variable",
                "colour=red"
            ]
        )
        .contains("job_variables.colour")
    );
    assert!(
        fails(
            url,
            &["deployment", "create", "no-slash", "--pool", "my-pool"]
        )
        .contains("FLOW/NAME")
    );

    let out = ok(url, &["deployment", "run", "hello/demo"]);
    assert!(out.contains("Scheduled"), "{out}");
    let runs = ok(url, &["flow-run", "ls"]);
    assert!(
        runs.lines()
            .any(|l| l.contains("hello/demo") && l.contains("SCHEDULED")),
        "{runs}"
    );
    // Found by its name in capitals and one of several states, with the total.
    let name = runs
        .lines()
        .nth(1)
        .and_then(|l| l.split_whitespace().nth(1))
        .expect("run name")
        .to_uppercase();
    let found = ok(
        url,
        &[
            "flow-run",
            "ls",
            "--name",
            &name,
            "--state",
            "FAILED,SCHEDULED",
            "--sort",
            "created",
        ],
    );
    assert!(
        found.contains("hello/demo") && found.contains("1 run(s) match"),
        "{found}"
    );
    let none = ok(url, &["flow-run", "ls", "--name", "no-such-run"]);
    assert!(none.contains("0 run(s) match"), "{none}");
    assert!(fails(url, &["flow-run", "ls", "--sort", "sideways"]).contains("sort"));
    let preview = ok(url, &["work-pool", "preview", "my-pool"]);
    assert_eq!(preview.lines().count(), 2, "{preview}");
    let id = runs
        .lines()
        .nth(1)
        .and_then(|l| l.split_whitespace().next())
        .expect("run id")
        .to_string();
    assert!(ok(url, &["flow-run", "inspect", &id]).contains("SCHEDULED (Scheduled)"));
    assert!(ok(url, &["flow-run", "cancel", &id]).contains("CANCELLED"));
    assert!(fails(url, &["flow-run", "cancel", &id]).contains("final"));
    assert!(ok(url, &["worker", "ls", "--pool", "my-pool"]).starts_with("NAME"));
}

#[test]
fn acknowledged_writes_survive_kill_9() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = ServerProcess::start(dir.path(), &[]);
    ok(
        &server.url,
        &[
            "work-pool",
            "create",
            "--type",
            "mock-serverless",
            "durable",
        ],
    );
    ok(
        &server.url,
        &[
            "deployment",
            "create",
            "f/d",
            "--pool",
            "durable",
            "--interval",
            "3600",
        ],
    );
    for _ in 0..5 {
        ok(&server.url, &["deployment", "run", "f/d"]);
    }
    server.kill(); // SIGKILL: no graceful shutdown
    let server = ServerProcess::start(dir.path(), &[]);
    assert!(ok(&server.url, &["work-pool", "ls"]).contains("durable"));
    assert!(ok(&server.url, &["deployment", "ls"]).contains("f/d"));
    let page: serde_json::Value = serde_json::from_str(&ok(
        &server.url,
        &[
            "flow-run",
            "ls",
            "--deployment",
            "f/d",
            "--limit",
            "100",
            "--output",
            "json",
        ],
    ))
    .expect("json");
    let manual = page["runs"]
        .as_array()
        .expect("runs")
        .iter()
        .filter(|r| r["auto_scheduled"] == false)
        .count();
    assert_eq!(manual, 5);
}

#[test]
fn an_unreachable_server_is_a_clear_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    drop(listener);
    let err = fails(&url, &["work-pool", "ls"]);
    assert!(err.contains("cannot reach the server"), "{err}");
}

#[test]
fn host_deploy_creates_and_updates_from_a_project_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = ServerProcess::start(dir.path(), &[]);
    let url = server.url.as_str();
    ok(url, &["work-pool", "create", "--type", "process", "local"]);
    let file = dir.path().join("host.yaml");
    std::fs::write(
        &file,
        "deployments:\n  - flow: etl\n    name: hourly\n    pool: local\n    command: echo hourly\n    schedules: [{interval_seconds: 3600}]\n  - flow: etl\n    name: adhoc\n    pool: local\n    command: [sh, -c, 'echo adhoc']\n    parameters: {day: monday}\n",
    )
    .expect("write");
    let file = file.to_str().expect("utf-8");
    let err = fails(url, &["deploy", "--file", file]);
    assert!(
        err.contains("several deployments (etl/hourly, etl/adhoc); pass --name or --all"),
        "{err}"
    );
    let out = ok(url, &["deploy", "--file", file, "--name", "adhoc"]);
    assert!(
        out.contains("Created deployment `etl/adhoc`") && !out.contains("hourly"),
        "{out}"
    );
    let out = ok(url, &["deploy", "--file", file, "--all", "--no-prompt"]);
    assert!(
        out.contains("Updated deployment `etl/adhoc`")
            && out.contains("Created deployment `etl/hourly`"),
        "{out}"
    );
    let deployment: serde_json::Value = serde_json::from_str(&ok(
        url,
        &["deployment", "inspect", "etl/hourly", "--output", "json"],
    ))
    .expect("json");
    assert_eq!(deployment["command"], serde_json::json!(["echo", "hourly"]));
    assert_eq!(deployment["schedules"][0]["interval_seconds"], 3600);
    std::fs::write(
        dir.path().join("bad.yaml"),
        "deployments:\n  - flow: etl\n    nme: typo\n",
    )
    .expect("write");
    let err = fails(
        url,
        &[
            "deploy",
            "--file",
            dir.path().join("bad.yaml").to_str().expect("utf-8"),
        ],
    );
    assert!(err.contains("unknown field `nme`"), "{err}");
    assert!(
        err.contains("line 3, column 5"),
        "the place is named: {err}"
    );
}

/// The example systemd units in docs/systemd: valid for systemd, and their
/// command lines valid for `host`.
#[test]
fn the_example_systemd_units_verify() {
    let docs = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/systemd");
    let dir = tempfile::tempdir().expect("tempdir");
    let host = env!("CARGO_BIN_EXE_host");
    let mut units = Vec::new();
    for (file, instance) in [
        ("host-serve.service", "host-serve.service"),
        ("host-worker@.service", "host-worker@my-pool.service"),
    ] {
        let text = std::fs::read_to_string(docs.join(file)).expect("unit");
        // The command line, with `\` continuations joined and the template's
        // specifiers filled in, must parse.
        let exec = text
            .replace("\\\n", " ")
            .lines()
            .find_map(|l| {
                l.strip_prefix("ExecStart=/usr/local/bin/host ")
                    .map(String::from)
            })
            .expect("ExecStart");
        let args: Vec<String> = exec
            .replace("%i", "my-pool")
            .replace("%H", "box")
            .replace("${HEALTH_ADDRESS}", "127.0.0.1:8080")
            .split_whitespace()
            .map(String::from)
            .collect();
        let (subcommand, flags) = args.split_at(if args[0] == "worker" { 2 } else { 1 });
        let out = std::process::Command::new(host)
            .args(subcommand)
            .arg("--help")
            .output()
            .expect("host --help");
        let help = String::from_utf8_lossy(&out.stdout);
        for flag in flags.iter().filter(|f| f.starts_with("--")) {
            assert!(
                help.contains(flag.as_str()),
                "{file}: `{flag}` is not a flag of host {subcommand:?}"
            );
        }
        let path = dir.path().join(instance);
        std::fs::write(&path, text.replace("/usr/local/bin/host", host)).expect("write");
        units.push(path);
    }
    let verified = std::process::Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .args(&units)
        .output();
    match verified {
        Err(e) => eprintln!("SKIPPED systemd-analyze verify: {e} (install systemd to run it)"),
        Ok(out) => assert!(
            out.status.success() && out.stderr.is_empty(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn flow_run_ls_pages_for_the_user_past_the_api_page_size() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = ServerProcess::start(dir.path(), &[]);
    let url = server.url.as_str();
    ok(url, &["work-pool", "create", "--type", "process", "many"]);
    ok(url, &["deployment", "create", "f/many", "--pool", "many"]);
    for _ in 0..1205 {
        common::create_run(url, "f/many", serde_json::json!({})).await;
    }
    let list = |limit: &str| -> serde_json::Value {
        let args = ["flow-run", "ls", "--deployment", "f/many", "--limit", limit];
        serde_json::from_str(&ok(url, &[&args[..], &["--output", "json"]].concat())).expect("json")
    };
    let ids = |page: &serde_json::Value| -> std::collections::BTreeSet<String> {
        let runs = page["runs"].as_array().expect("runs");
        runs.iter()
            .map(|r| r["id"].as_str().expect("id").to_string())
            .collect()
    };

    let first = list("1001");
    assert_eq!(ids(&first).len(), 1001, "1001 distinct runs");
    let cursor = first["next_cursor"].as_str().expect("more to come");
    let rest: serde_json::Value = serde_json::from_str(&ok(
        url,
        &[
            "flow-run",
            "ls",
            "--deployment",
            "f/many",
            "--limit",
            "500",
            "--cursor",
            cursor,
            "--output",
            "json",
        ],
    ))
    .expect("json");
    assert_eq!(ids(&rest).len(), 204);
    assert!(rest["next_cursor"].is_null(), "{}", rest["next_cursor"]);
    assert!(ids(&first).is_disjoint(&ids(&rest)));

    let all = list("5000");
    assert_eq!(ids(&all).len(), 1205);
    assert!(all["next_cursor"].is_null());
    assert!(fails(url, &["flow-run", "ls", "--limit", "0"]).contains("--limit"));
}
