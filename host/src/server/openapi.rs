//! `/api/openapi.json`: the routes, their bodies and errors, for tools.

use axum::Json;
use serde_json::{Value, json};

/// (method, path, summary, request body schema name or "")
const ROUTES: &[(&str, &str, &str, &str)] = &[
    ("get", "/api/health", "Liveness; never needs the token", ""),
    ("get", "/api/work-pools", "List work pools with status", ""),
    (
        "post",
        "/api/work-pools",
        "Create a work pool (and its default queue)",
        "PoolSpec",
    ),
    ("get", "/api/work-pools/{pool}", "Read a work pool", ""),
    (
        "patch",
        "/api/work-pools/{pool}",
        "Update description, template, limit, paused",
        "PoolPatch",
    ),
    (
        "delete",
        "/api/work-pools/{pool}",
        "Delete a work pool no deployment uses",
        "",
    ),
    (
        "get",
        "/api/work-pools/{pool}/upcoming",
        "SCHEDULED runs, soonest first",
        "",
    ),
    (
        "get",
        "/api/work-pools/{pool}/queues",
        "List a pool's queues by priority",
        "",
    ),
    (
        "post",
        "/api/work-pools/{pool}/queues",
        "Create a queue",
        "QueueSpec",
    ),
    (
        "get",
        "/api/work-pools/{pool}/queues/{queue}",
        "Read a queue",
        "",
    ),
    (
        "patch",
        "/api/work-pools/{pool}/queues/{queue}",
        "Update a queue",
        "QueuePatch",
    ),
    (
        "delete",
        "/api/work-pools/{pool}/queues/{queue}",
        "Delete a queue",
        "",
    ),
    (
        "get",
        "/api/work-pools/{pool}/workers",
        "List workers with status",
        "",
    ),
    (
        "post",
        "/api/work-pools/{pool}/workers/heartbeat",
        "Worker heartbeat (upsert by name)",
        "WorkerHeartbeat",
    ),
    (
        "post",
        "/api/work-pools/{pool}/claim",
        "Claim due runs; long-polls with wait_ms",
        "ClaimRequest",
    ),
    (
        "get",
        "/api/pool-types",
        "Pool types (plugins) the server knows",
        "",
    ),
    (
        "get",
        "/api/pool-types/{type}/default-base-job-template",
        "A plugin's default base job template",
        "",
    ),
    ("get", "/api/deployments", "List deployments", ""),
    (
        "put",
        "/api/deployments",
        "Create or update a deployment by flow/name",
        "DeploymentSpec",
    ),
    (
        "get",
        "/api/deployments/{flow}/{name}",
        "Read a deployment",
        "",
    ),
    (
        "delete",
        "/api/deployments/{flow}/{name}",
        "Delete a deployment and its scheduled runs",
        "",
    ),
    (
        "post",
        "/api/deployments/{flow}/{name}/runs",
        "Create a flow run",
        "RunRequest",
    ),
    (
        "get",
        "/api/flow-runs",
        "List runs (pool, deployment, state, limit, cursor)",
        "",
    ),
    (
        "get",
        "/api/flow-runs/{id}",
        "Read a run; with wait_ms and changed_after, wait for a change",
        "",
    ),
    (
        "post",
        "/api/flow-runs/{id}/state",
        "Propose a state transition",
        "Transition",
    ),
    ("post", "/api/flow-runs/{id}/cancel", "Cancel a run", ""),
    (
        "get",
        "/api/flow-runs/{id}/logs",
        "Read logs (after, limit; wait_ms to follow)",
        "",
    ),
    (
        "post",
        "/api/flow-runs/{id}/logs",
        "Append a batch of log lines",
        "LogLines",
    ),
];

pub async fn document() -> Json<Value> {
    let mut paths = serde_json::Map::new();
    for (method, path, summary, body) in ROUTES {
        let parameters: Vec<Value> = path
            .split('/')
            .filter_map(|part| part.strip_prefix('{')?.strip_suffix('}'))
            .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        let mut operation = json!({
            "summary": summary,
            "parameters": parameters,
            "responses": {
                "200": {"description": "OK", "content": {"application/json": {"schema": {}}}},
                "4XX": {"description": "Bad request, unauthorized, not found or conflict",
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
            }
        });
        if !body.is_empty() {
            operation["requestBody"] = json!({
                "required": true,
                "content": {"application/json": {"schema": {"type": "object", "title": body}}}
            });
        }
        let entry = paths.entry(path.to_string()).or_insert_with(|| json!({}));
        entry[*method] = operation;
    }
    Json(json!({
        "openapi": "3.0.3",
        "info": {"title": "host API", "version": env!("CARGO_PKG_VERSION")},
        "components": {
            "schemas": {"Error": {"type": "object", "required": ["error"],
                "properties": {"error": {"type": "string"}, "field": {"type": "string"}}}},
            "securitySchemes": {"token": {"type": "http", "scheme": "bearer"}}
        },
        "security": [{"token": []}],
        "paths": paths,
    }))
}
