//! Scoped tokens: a token acts only within its role and pools. Every route
//! of the API document is sent by every role (the list of routes read from
//! `/api/openapi.json`, so none is forgotten); a worker token stays in its
//! pools and its own name; a deployer keeps off templates, pools and
//! tokens; a revoked token is refused at its next request, on every
//! replica; `host token` and `host worker start` with a worker token; the
//! UI shows each role only what it may do. All against a real `host serve`.

mod cli;
mod ui;

use crate::common;

use common::{ServerProcess, http};
use serde_json::{Value, json};
use std::sync::atomic::{AtomicUsize, Ordering};

const BOOT: &str = "bootstrap-s3cret";

/// What an operation of the document needs, as this test states it on its
/// own (not read back from the server's table).
#[derive(Clone, Copy, PartialEq, Debug)]
enum Needs {
    Read,
    Admin,
    Deploy,
    Work,
}

/// Every operation of the API document and what it needs. One the document
/// has and this list does not fails the test: no route goes unchecked.
const OPERATIONS: &[(&str, Needs)] = &[
    ("pools_list", Needs::Read),
    ("pools_create", Needs::Admin),
    ("pools_read", Needs::Read),
    ("pools_update", Needs::Admin),
    ("pools_delete", Needs::Admin),
    ("pools_upcoming", Needs::Read),
    ("queues_list", Needs::Read),
    ("queues_create", Needs::Admin),
    ("queues_read", Needs::Read),
    ("queues_update", Needs::Admin),
    ("queues_delete", Needs::Admin),
    ("workers_list", Needs::Read),
    ("workers_heartbeat", Needs::Work),
    ("workers_held_runs", Needs::Read),
    ("pools_claim", Needs::Work),
    ("pool_types_list", Needs::Read),
    ("pool_types_default_template", Needs::Read),
    ("deployments_list", Needs::Read),
    ("deployments_upsert", Needs::Deploy),
    ("deployments_read", Needs::Read),
    ("deployments_delete", Needs::Deploy),
    ("deployments_create_run", Needs::Deploy),
    ("deployments_pause", Needs::Deploy),
    ("deployments_resume", Needs::Deploy),
    ("deployments_update_schedule", Needs::Deploy),
    ("runs_list", Needs::Read),
    ("runs_read", Needs::Read),
    ("runs_set_state", Needs::Work),
    ("runs_cancel", Needs::Deploy),
    ("runs_retry", Needs::Deploy),
    ("runs_delete", Needs::Deploy),
    ("runs_download_logs", Needs::Read),
    ("runs_logs", Needs::Read),
    ("runs_append_logs", Needs::Work),
    ("events_stream", Needs::Read),
    ("tokens_list", Needs::Admin),
    ("tokens_create", Needs::Admin),
    ("tokens_revoke", Needs::Admin),
    ("whoami", Needs::Read),
];

/// A server with the bootstrap token, pools `p1` and `p2`, a deployment in
/// each (`f/d`, `f/d2`), and named tokens: `adm` (admin), `dep` (deployer
/// of p1), `w1` and `w2` (workers of p1), `view` (viewer), `gone` (revoked).
struct Fixture {
    server: ServerProcess,
    dir: tempfile::TempDir,
    secrets: std::collections::BTreeMap<&'static str, String>,
    fresh: AtomicUsize,
}

impl Fixture {
    async fn new() -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let server = ServerProcess::start(dir.path(), &["--api-token", BOOT]);
        let mut fixture = Fixture {
            server,
            dir,
            secrets: Default::default(),
            fresh: AtomicUsize::new(0),
        };
        for pool in ["p1", "p2"] {
            fixture
                .admin(
                    "POST",
                    "/api/work-pools",
                    json!({"name": pool, "type": "process"}),
                )
                .await;
        }
        for (name, pool) in [("d", "p1"), ("d2", "p2")] {
            let body = json!({"flow": "f", "name": name, "pool": pool, "command": ["true"]});
            fixture.admin("PUT", "/api/deployments", body).await;
        }
        for (name, role, pools) in [
            ("adm", "admin", json!([])),
            ("dep", "deployer", json!(["p1"])),
            ("w1", "worker", json!(["p1"])),
            ("w2", "worker", json!(["p1"])),
            ("view", "viewer", json!([])),
            ("gone", "worker", json!(["p1"])),
        ] {
            let body = json!({"name": name, "role": role, "pools": pools});
            let made = fixture.admin("POST", "/api/tokens", body).await;
            let secret = made["secret"].as_str().expect("secret").to_string();
            assert!(secret.starts_with(&format!("host_{name}_")), "{secret}");
            fixture.secrets.insert(name, secret);
        }
        let (status, _) = fixture
            .call("DELETE", "/api/tokens/gone", None, Some(BOOT))
            .await;
        assert_eq!(status, 204);
        fixture
    }

    fn secret(&self, name: &str) -> &str {
        &self.secrets[name]
    }

    fn fresh(&self, prefix: &str) -> String {
        format!("{prefix}{}", self.fresh.fetch_add(1, Ordering::SeqCst))
    }

    /// A request as the bootstrap admin that must succeed.
    async fn admin(&self, method: &str, path: &str, body: Value) -> Value {
        let (status, answer) = self.call(method, path, Some(body), Some(BOOT)).await;
        assert!(
            (200..300).contains(&status),
            "{method} {path}: {status} {answer}"
        );
        answer
    }

    /// Status and JSON body; an event stream is answered by its headers.
    async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
        token: Option<&str>,
    ) -> (u16, Value) {
        let url = format!("{}{path}", self.server.url);
        if path.starts_with("/api/events") {
            let mut request = common::web_client().get(&url);
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            let answer = request.send().await.expect("events");
            return (answer.status().as_u16(), Value::Null);
        }
        let body = body.map(|b| b.to_string());
        http(method, &url, body.as_deref(), token).await
    }

    /// The path and body of `operation` aimed at `pool`, with fresh objects
    /// where the request may delete or change what it names.
    async fn request(
        &self,
        operation: &str,
        template: &str,
        pool: &str,
    ) -> (String, Option<Value>) {
        let deployment = if pool == "p1" { "f/d" } else { "f/d2" };
        let mut path = template.replace("{pool}", pool).replace("{worker}", "w1");
        path = path.replace("{type}", "process");
        if operation == "pools_delete" {
            let name = self.fresh("doomed-");
            self.admin(
                "POST",
                "/api/work-pools",
                json!({"name": name, "type": "process"}),
            )
            .await;
            path = format!("/api/work-pools/{name}");
        }
        if path.contains("{queue}") {
            let name = self.fresh("q");
            self.admin(
                "POST",
                &format!("/api/work-pools/{pool}/queues"),
                json!({"name": name}),
            )
            .await;
            path = path.replace("{queue}", &name);
        }
        if path.contains("{flow}/{name}") {
            let name = self.fresh("d-");
            let mut body = json!({"flow": "f", "name": name, "pool": pool});
            if operation == "deployments_update_schedule" {
                body["schedules"] = json!([{"interval_seconds": 3600}]);
                path = path.replace("{index}", "0");
            }
            self.admin("PUT", "/api/deployments", body).await;
            path = path.replace("{flow}/{name}", &format!("f/{name}"));
        }
        if path.contains("{id}") {
            let run = self
                .admin(
                    "POST",
                    &format!("/api/deployments/{deployment}/runs"),
                    json!({}),
                )
                .await;
            let id = run["id"].as_str().expect("id");
            if ["runs_set_state", "runs_append_logs"].contains(&operation) {
                // A worker reports only on runs it holds: w1 claims it (and
                // whatever else of the pool is due, used already).
                let path = format!("/api/work-pools/{pool}/claim");
                let claim = self
                    .admin("POST", &path, json!({"worker": "w1", "limit": 1000}))
                    .await;
                let held = claim["runs"].as_array().expect("runs").iter();
                assert!(held.clone().any(|r| r["flow_run"]["id"] == id), "{claim}");
            }
            path = path.replace("{id}", id);
        }
        if path.contains("{name}") {
            let name = self.fresh("t-");
            self.admin(
                "POST",
                "/api/tokens",
                json!({"name": name, "role": "viewer"}),
            )
            .await;
            path = path.replace("{name}", &name);
        }
        let body = match operation {
            "pools_create" => json!({"name": self.fresh("new-"), "type": "process"}),
            "pools_update" | "queues_update" => json!({"description": "changed"}),
            "queues_create" => json!({"name": self.fresh("nq")}),
            "workers_heartbeat" => json!({"name": "w1", "heartbeat_interval_seconds": 30}),
            "pools_claim" => json!({"worker": "w1", "limit": 1}),
            "deployments_upsert" => json!({"flow": "f", "name": self.fresh("up-"), "pool": pool}),
            "deployments_create_run" => json!({}),
            "deployments_update_schedule" => json!({"active": false}),
            "runs_set_state" => json!({"type": "RUNNING", "worker": "w1"}),
            "runs_append_logs" => json!([{"message": "hello"}]),
            "tokens_create" => json!({"name": self.fresh("made-"), "role": "viewer"}),
            _ => return (path, None),
        };
        (path, Some(body))
    }
}

/// Each (path, method, operation id) of the document but `/api/health`.
async fn operations(fixture: &Fixture) -> Vec<(String, String, String, Value)> {
    let (status, document) = fixture
        .call(
            "GET",
            "/api/openapi.json",
            None,
            Some(fixture.secret("view")),
        )
        .await;
    assert_eq!(status, 200, "a viewer reads the document");
    let mut found = Vec::new();
    for (path, item) in document["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().expect("path item") {
            if path != "/api/health" {
                let id = operation["operationId"].as_str().expect("id").to_string();
                let method = method.to_ascii_uppercase();
                found.push((path.clone(), method, id, operation["x-host-roles"].clone()));
            }
        }
    }
    assert!(
        found.len() >= OPERATIONS.len(),
        "{} operations",
        found.len()
    );
    found
}

#[tokio::test]
async fn every_route_answers_every_role_as_its_role_allows() {
    let fixture = Fixture::new().await;
    let callers = [
        ("bootstrap", BOOT, "admin"),
        ("adm", fixture.secret("adm"), "admin"),
        ("dep", fixture.secret("dep"), "deployer"),
        ("w1", fixture.secret("w1"), "worker"),
        ("view", fixture.secret("view"), "viewer"),
    ];
    let wrong = format!("host_w1_{}", "0".repeat(64));
    let refused: [(&str, Option<&str>); 4] = [
        ("no token", None),
        ("a wrong secret", Some(wrong.as_str())),
        ("a made-up token", Some("nope")),
        ("a revoked token", Some(fixture.secret("gone"))),
    ];
    for (template, method, operation, stated) in operations(&fixture).await {
        let needs = OPERATIONS
            .iter()
            .find(|(id, _)| *id == operation)
            .map(|(_, needs)| *needs)
            .unwrap_or_else(|| panic!("{method} {template} ({operation}) is in no test's list"));
        let allowed = |role: &str, pool: &str| match needs {
            Needs::Read => true,
            Needs::Admin => role == "admin",
            Needs::Deploy => role == "admin" || (role == "deployer" && pool == "p1"),
            Needs::Work => role == "admin" || (role == "worker" && pool == "p1"),
        };
        let roles: Vec<&str> = ["admin", "deployer", "worker", "viewer"]
            .into_iter()
            .filter(|role| allowed(role, "p1"))
            .collect();
        assert_eq!(
            stated,
            json!(roles),
            "{operation}: the document's x-host-roles"
        );
        // Deployer and worker routes also aimed at p2, which they do not cover.
        let pools: &[&str] = match needs {
            Needs::Deploy | Needs::Work => &["p1", "p2"],
            _ => &["p1"],
        };
        for pool in pools {
            for (name, secret, role) in &callers {
                let (path, body) = fixture.request(&operation, &template, pool).await;
                let (status, answer) = fixture.call(&method, &path, body, Some(secret)).await;
                let said = format!("{name} ({role}): {method} {path} → {status} {answer}");
                if allowed(role, pool) {
                    assert!(![401, 403].contains(&status) && status < 500, "{said}");
                    continue;
                }
                assert_eq!(status, 403, "{said}");
                let missing = if allowed(role, "p1") { "pool" } else { "role" };
                assert_eq!(answer["field"], missing, "{said}");
                let message = answer["error"].as_str().unwrap_or("");
                assert!(message.contains(&format!("`{name}`")), "{said}");
            }
        }
        for (what, token) in &refused {
            let (path, body) = fixture.request(&operation, &template, "p1").await;
            let (status, answer) = fixture.call(&method, &path, body, *token).await;
            assert_eq!(status, 401, "{what}: {method} {path} → {answer}");
        }
    }
}

#[tokio::test]
async fn a_worker_token_acts_only_in_its_pools_and_as_itself() {
    let fixture = Fixture::new().await;
    let w1 = Some(fixture.secret("w1"));
    let run_in = |deployment: &'static str| {
        let fixture = &fixture;
        async move {
            let path = format!("/api/deployments/{deployment}/runs");
            let run = fixture.admin("POST", &path, json!({})).await;
            run["id"].as_str().expect("id").to_string()
        }
    };
    let p2_run = run_in("f/d2").await;
    for (method, path, body) in [
        (
            "POST",
            "/api/work-pools/p2/claim".to_string(),
            json!({"worker": "w1", "limit": 1}),
        ),
        (
            "POST",
            "/api/work-pools/p2/workers/heartbeat".into(),
            json!({"name": "w1"}),
        ),
        (
            "POST",
            format!("/api/flow-runs/{p2_run}/state"),
            json!({"type": "RUNNING"}),
        ),
        (
            "POST",
            format!("/api/flow-runs/{p2_run}/logs"),
            json!([{"message": "x"}]),
        ),
    ] {
        let (status, answer) = fixture.call(method, &path, Some(body), w1).await;
        assert_eq!(
            (status, &answer["field"]),
            (403, &json!("pool")),
            "{path}: {answer}"
        );
        assert!(
            answer["error"].as_str().unwrap_or("").contains("`p2`"),
            "{answer}"
        );
    }
    let state = fixture
        .admin("GET", &format!("/api/flow-runs/{p2_run}"), Value::Null)
        .await;
    assert_eq!(state["state"]["type"], "SCHEDULED", "p2's run untouched");

    // In its own pool, under another name: refused, naming the field.
    let p1_run = run_in("f/d").await;
    for (path, body, field) in [
        (
            "/api/work-pools/p1/claim".to_string(),
            json!({"worker": "w2", "limit": 1}),
            "worker",
        ),
        (
            "/api/work-pools/p1/workers/heartbeat".into(),
            json!({"name": "w2"}),
            "name",
        ),
        (
            format!("/api/flow-runs/{p1_run}/state"),
            json!({"type": "RUNNING", "worker": "w2"}),
            "worker",
        ),
        (
            format!("/api/flow-runs/{p1_run}/state"),
            json!({"type": "CANCELLED", "force": true}),
            "force",
        ),
    ] {
        let (status, answer) = fixture.call("POST", &path, Some(body), w1).await;
        assert_eq!(
            (status, &answer["field"]),
            (403, &json!(field)),
            "{path}: {answer}"
        );
    }
    // A run nobody holds is no worker's to move: cancelling is a deployer's.
    let (status, answer) = fixture
        .call(
            "POST",
            &format!("/api/flow-runs/{p1_run}/state"),
            Some(json!({"type": "CANCELLED"})),
            w1,
        )
        .await;
    assert_eq!(
        (status, &answer["field"]),
        (403, &json!("worker")),
        "{answer}"
    );
    let (status, answer) = fixture
        .call(
            "POST",
            &format!("/api/flow-runs/{p1_run}/logs"),
            Some(json!([{"message": "forged"}])),
            w1,
        )
        .await;
    assert_eq!(
        (status, &answer["field"]),
        (403, &json!("worker")),
        "{answer}"
    );
    let run = fixture
        .admin("GET", &format!("/api/flow-runs/{p1_run}"), Value::Null)
        .await;
    assert_eq!(run["state"]["type"], "SCHEDULED", "{run}");
    let logs = fixture
        .admin("GET", &format!("/api/flow-runs/{p1_run}/logs"), Value::Null)
        .await;
    assert_eq!(logs["lines"], json!([]), "nothing written: {logs}");

    // Left out, the worker is the token's.
    let (status, beat) = fixture
        .call(
            "POST",
            "/api/work-pools/p1/workers/heartbeat",
            Some(json!({})),
            w1,
        )
        .await;
    assert_eq!((status, &beat["name"]), (200, &json!("w1")), "{beat}");
    let (status, claim) = fixture
        .call(
            "POST",
            "/api/work-pools/p1/claim",
            Some(json!({"limit": 10})),
            w1,
        )
        .await;
    assert_eq!(status, 200, "{claim}");
    let claimed = &claim["runs"].as_array().expect("runs")[0]["flow_run"];
    assert_eq!(claimed["worker"], "w1");
    let id = claimed["id"].as_str().expect("id");
    let path = format!("/api/flow-runs/{id}/state");
    let (status, moved) = fixture
        .call("POST", &path, Some(json!({"type": "RUNNING"})), w1)
        .await;
    assert_eq!(
        (status, &moved["flow_run"]["state"]["type"]),
        (200, &json!("RUNNING")),
        "{moved}"
    );
    let path = format!("/api/flow-runs/{id}/logs");
    let (status, _) = fixture
        .call("POST", &path, Some(json!([{"message": "hi"}])), w1)
        .await;
    assert_eq!(status, 200);
    // Another worker of the same pool neither writes in its log nor moves it.
    let w2 = Some(fixture.secret("w2"));
    let (status, answer) = fixture
        .call(
            "POST",
            &path,
            Some(json!([{"message": "forged", "stream": "worker"}])),
            w2,
        )
        .await;
    assert_eq!(
        (status, &answer["field"]),
        (403, &json!("worker")),
        "{answer}"
    );
    let (status, answer) = fixture
        .call(
            "POST",
            &format!("/api/flow-runs/{id}/state"),
            Some(json!({"type": "COMPLETED"})),
            w2,
        )
        .await;
    assert_eq!(
        (status, &answer["field"]),
        (409, &json!("worker")),
        "{answer}"
    );
    let logs = fixture
        .admin("GET", &format!("/api/flow-runs/{id}/logs"), Value::Null)
        .await;
    let messages: Vec<&Value> = logs["lines"]
        .as_array()
        .expect("lines")
        .iter()
        .map(|line| &line["message"])
        .collect();
    assert_eq!(messages, [&json!("hi")], "only its holder's line");

    // Revoked: refused at the next request, with nothing in between.
    let (status, _) = fixture
        .call("DELETE", "/api/tokens/w1", None, Some(BOOT))
        .await;
    assert_eq!(status, 204);
    let (status, answer) = fixture
        .call(
            "POST",
            "/api/work-pools/p1/workers/heartbeat",
            Some(json!({})),
            w1,
        )
        .await;
    assert_eq!(status, 401, "{answer}");
}

#[tokio::test]
async fn a_deployer_keeps_off_templates_pools_and_tokens() {
    let fixture = Fixture::new().await;
    let dep = Some(fixture.secret("dep"));
    let template = json!({"base_job_template": {"job_configuration": {"command": "{{ command }}"}, "variables": {"properties": {}}}});
    for (method, path, body) in [
        ("PATCH", "/api/work-pools/p1", Some(template)),
        ("PATCH", "/api/work-pools/p1", Some(json!({"paused": true}))),
        (
            "POST",
            "/api/work-pools",
            Some(json!({"name": "mine", "type": "process"})),
        ),
        ("DELETE", "/api/work-pools/p1", None),
        (
            "POST",
            "/api/work-pools/p1/queues",
            Some(json!({"name": "fast"})),
        ),
        (
            "POST",
            "/api/tokens",
            Some(json!({"name": "more", "role": "admin"})),
        ),
        ("DELETE", "/api/tokens/w1", None),
        ("GET", "/api/tokens", None),
    ] {
        let (status, answer) = fixture.call(method, path, body, dep).await;
        assert_eq!(
            (status, &answer["field"]),
            (403, &json!("role")),
            "{method} {path}: {answer}"
        );
    }
    // Its deployments stay in its pools: not made in p2, not moved there,
    // nor taken from there.
    for (name, pool) in [("new", "p2"), ("d", "p2"), ("d2", "p1")] {
        let body = json!({"flow": "f", "name": name, "pool": pool});
        let (status, answer) = fixture
            .call("PUT", "/api/deployments", Some(body), dep)
            .await;
        assert_eq!(
            (status, &answer["field"]),
            (403, &json!("pool")),
            "f/{name} → {pool}: {answer}"
        );
    }
    // A queue is an admin's to make, also by naming it in a deployment.
    let body =
        json!({"flow": "f", "name": "q", "pool": "p1", "queue": "mine", "command": ["true"]});
    let (status, answer) = fixture
        .call("PUT", "/api/deployments", Some(body), dep)
        .await;
    assert_eq!(
        (status, &answer["field"]),
        (404, &json!("queue")),
        "{answer}"
    );
    let queues = fixture
        .admin("GET", "/api/work-pools/p1/queues", Value::Null)
        .await;
    let names: Vec<&Value> = queues
        .as_array()
        .expect("queues")
        .iter()
        .map(|q| &q["name"])
        .collect();
    assert_eq!(names, [&json!("default")], "no queue made: {queues}");
    let (status, _) = fixture.call("GET", "/api/deployments/f/q", None, dep).await;
    assert_eq!(status, 404, "no deployment made");
    let body = json!({"flow": "f", "name": "d", "pool": "p1", "parameters": {"x": 1}});
    let (status, answer) = fixture
        .call("PUT", "/api/deployments", Some(body), dep)
        .await;
    assert_eq!(status, 200, "its own: {answer}");
    let (status, run) = fixture
        .call("POST", "/api/deployments/f/d/runs", Some(json!({})), dep)
        .await;
    assert_eq!(status, 201, "{run}");
    let path = format!("/api/flow-runs/{}/cancel", run["id"].as_str().expect("id"));
    let (status, cancelled) = fixture.call("POST", &path, None, dep).await;
    assert_eq!(
        (status, &cancelled["state"]["type"]),
        (200, &json!("CANCELLED"))
    );
    let (status, _) = fixture
        .call("GET", "/api/tokens", None, Some(fixture.secret("adm")))
        .await;
    assert_eq!(status, 200, "a named admin lists tokens");
}

/// `access` checks a deployment's pool before the handler runs; a
/// deployment made in another pool between that check and the write must
/// not be taken over. The write checks again in its own transaction: here
/// the deployment is in p2 and the write comes with a scope of p1, as a
/// request that raced its creation would.
#[tokio::test]
async fn a_deployment_made_elsewhere_after_the_check_is_not_taken_over() {
    let server = common::TestServer::start().await;
    for pool in ["p1", "p2"] {
        let (status, _) = server
            .post("/api/work-pools", json!({"name": pool, "type": "process"}))
            .await;
        assert_eq!(status, 201);
    }
    let spec = |pool: &str, word: &str| -> host::control::DeploymentSpec {
        serde_json::from_value(
            json!({"flow": "r", "name": "race", "pool": pool, "command": ["echo", word]}),
        )
        .expect("spec")
    };
    let p2 = host::control::Scope {
        pools: Some(vec!["p2".into()]),
        worker: None,
    };
    server
        .control
        .upsert_deployment(spec("p2", "victim"), &p2)
        .await
        .expect("made in p2");
    let p1 = host::control::Scope {
        pools: Some(vec!["p1".into()]),
        worker: None,
    };
    let refused = server
        .control
        .upsert_deployment(spec("p1", "attacker"), &p1)
        .await
        .expect_err("another pool's deployment");
    assert_eq!(
        refused.field.as_deref(),
        Some("pool"),
        "{}",
        refused.message
    );
    let kept = server.control.deployment("r/race").expect("kept");
    assert_eq!(
        (kept.pool.as_str(), kept.command),
        ("p2", vec!["echo".to_string(), "victim".into()])
    );
}

/// The bootstrap token and the tokens' key are shared through the
/// database: a token made on one replica works on the other, and once
/// revoked on one, the other refuses it at its next request.
#[tokio::test]
async fn revocation_reaches_every_replica_at_once() {
    let Some(cluster) = common::postgres::shared() else {
        println!("SKIPPED: PostgreSQL is not installed");
        return;
    };
    let database = cluster.new_database();
    let dir = tempfile::tempdir().expect("tempdir");
    let args = ["--api-token", BOOT, "--advertise-url", ""];
    let a = ServerProcess::start_on_postgres(&database, &dir.path().join("a"), &args);
    let b = ServerProcess::start_on_postgres(&database, &dir.path().join("b"), &args);
    let body = json!({"name": "v", "role": "viewer"}).to_string();
    let (status, made) = http(
        "POST",
        &format!("{}/api/tokens", a.url),
        Some(&body),
        Some(BOOT),
    )
    .await;
    assert_eq!(status, 201, "{made}");
    let secret = made["secret"].as_str().expect("secret");
    let (status, me) = http("GET", &format!("{}/api/whoami", b.url), None, Some(secret)).await;
    assert_eq!((status, &me["role"]), (200, &json!("viewer")), "{me}");
    let (status, _) = http(
        "DELETE",
        &format!("{}/api/tokens/v", a.url),
        None,
        Some(BOOT),
    )
    .await;
    assert_eq!(status, 204);
    let (status, _) = http("GET", &format!("{}/api/whoami", b.url), None, Some(secret)).await;
    assert_eq!(status, 401, "the other replica refuses it at once");
}
