//! The home page (the dashboard, then the Work Pools) and a pool's page
//! with its tabs.

use super::view::{self, Nav};
use super::{Back, Page, PageError};
use crate::control::{PoolPatch, PoolSpec, PoolView, WorkerView};
use crate::error::ApiError;
use crate::model::Timestamp;
use crate::server::{AppState, access};
use crate::store::RunFilter;
use axum::Router;
use axum::extract::{Form, Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use maud::{Markup, html};
use serde::Deserialize;
use std::collections::BTreeMap;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(home))
        .route(access::UI_CREATE_POOL, post(create))
        .route(access::UI_PAUSE_POOL, post(pause))
        .route(access::UI_RESUME_POOL, post(resume))
        .route(access::UI_DELETE_POOL, post(delete))
        .route("/pools/{name}", get(pool_page))
}

/// What the create form held, to show again next to its error.
#[derive(Deserialize, Default)]
struct CreateForm {
    #[serde(default)]
    name: String,
    #[serde(default, rename = "type")]
    pool_type: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    concurrency_limit: String,
}

async fn home(State(s): State<AppState>) -> Page {
    Ok(home_page(&s, &CreateForm::default(), None)?)
}

fn home_page(
    s: &AppState,
    form: &CreateForm,
    error: Option<&ApiError>,
) -> Result<Markup, ApiError> {
    let pools = s.control.pools()?;
    let mut last_polled = BTreeMap::new();
    for view in &pools {
        let workers = s.control.workers(&view.pool.name)?;
        last_polled.insert(view.pool.name.clone(), latest_heartbeat(&workers));
    }
    let body = html! {
        h1 { "Dashboard" }
        div #dashboard-live data-live { (super::dashboard::section(s, &pools)?) }
        h2 #work-pools { "Work Pools" }
        div #pools data-live {
            @if pools.is_empty() {
                p.empty { "No work pools yet. Create one below, or run "
                    code { "host work-pool create NAME --type process" } "." }
            } @else {
                table {
                    thead { tr {
                        th { "Name" } th { "Type" } th { "Status" } th { "Concurrency" }
                        th { "Workers online" } th { "Last polled" } th { span.sr-only { "Actions" } }
                    } }
                    tbody {
                        @for view in &pools {
                            (pool_row(view, last_polled.get(&view.pool.name).copied().flatten()))
                        }
                    }
                }
            }
        }
        @if view::may(access::UI_CREATE_POOL, None) {
            (create_form(s, form, error))
        }
    };
    Ok(view::page(
        "Work Pools",
        Nav::Pools,
        Some("/api/events"),
        body,
    ))
}

fn latest_heartbeat(workers: &[WorkerView]) -> Option<Timestamp> {
    workers.iter().map(|w| w.worker.last_heartbeat).max()
}

fn pool_row(view: &PoolView, last_polled: Option<Timestamp>) -> Markup {
    let pool = &view.pool;
    let path = format!("/ui/pools/{}", view::segment(&pool.name));
    html! {
        tr data-pool=(pool.name) {
            td { a href={ "/pools/" (view::segment(&pool.name)) } { (pool.name) } }
            td { (pool.pool_type) }
            td { (view::pool_status(view.status)) }
            td { (view::limit(pool.concurrency_limit)) }
            td { (view.workers_online) }
            td { (view::ago_or_never(last_polled)) }
            td.actions {
                @if pool.paused && view::may(access::UI_RESUME_POOL, Some(&pool.name)) {
                    (view::action(&format!("{path}/resume"), "Resume", "/", None))
                } @else if !pool.paused && view::may(access::UI_PAUSE_POOL, Some(&pool.name)) {
                    (view::action(&format!("{path}/pause"), "Pause", "/", None))
                }
                @if view::may(access::UI_DELETE_POOL, Some(&pool.name)) {
                    (view::action(&format!("{path}/delete"), "Delete", "/",
                        Some(&format!("Delete work pool {}? Its queues and workers go with it.", pool.name))))
                }
            }
        }
    }
}

fn create_form(s: &AppState, form: &CreateForm, error: Option<&ApiError>) -> Markup {
    let error_on = |field: &str| {
        error
            .filter(|e| e.field.as_deref() == Some(field))
            .map(|e| e.message.as_str())
    };
    let general = error.filter(|e| {
        !matches!(
            e.field.as_deref(),
            Some("name" | "type" | "description" | "concurrency_limit")
        )
    });
    let plugins = &s.control.catalog().plugins;
    html! {
        section.card {
            h2 { "Create a work pool" }
            @if let Some(e) = general { p.error role="alert" { (e.message) } }
            form method="post" action="/ui/pools" {
                (view::field_error_wrap("name", "Name", error_on("name"), html! {
                    (view::csrf_field())
                    input #name name="name" value=(form.name) required
                        aria-describedby=[error_on("name").map(|_| "name-error")];
                }))
                (view::field_error_wrap("type", "Type", error_on("type"), html! {
                    select #type name="type" {
                        @for (name, plugin) in plugins {
                            option value=(name) selected[form.pool_type == *name] {
                                (name) " — " (plugin.description)
                            }
                        }
                    }
                }))
                (view::field_error_wrap("description", "Description", error_on("description"), html! {
                    input #description name="description" value=(form.description);
                }))
                (view::field_error_wrap("concurrency_limit", "Concurrency limit (empty: unlimited)",
                    error_on("concurrency_limit"), html! {
                    input #concurrency_limit name="concurrency_limit" inputmode="numeric"
                        value=(form.concurrency_limit);
                }))
                button type="submit" { "Create" }
            }
        }
    }
}

async fn create(
    State(s): State<AppState>,
    Form(form): Form<CreateForm>,
) -> Result<Response, PageError> {
    let created = match parse_limit(&form.concurrency_limit) {
        Ok(concurrency_limit) => {
            s.control
                .create_pool(PoolSpec {
                    name: form.name.trim().to_string(),
                    pool_type: form.pool_type.clone(),
                    description: form.description.clone(),
                    base_job_template: None,
                    concurrency_limit,
                    paused: false,
                })
                .await
        }
        Err(e) => Err(e),
    };
    match created {
        Ok(view) => {
            Ok(Redirect::to(&format!("/pools/{}", view::segment(&view.pool.name))).into_response())
        }
        Err(error) => {
            let error = crate::server::error::disclosed(error);
            let status = crate::server::error::status(error.kind);
            Ok((status, home_page(&s, &form, Some(&error))?).into_response())
        }
    }
}

pub(super) fn parse_limit(text: &str) -> Result<Option<u32>, ApiError> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    text.parse().map(Some).map_err(|_| {
        ApiError::bad_request(
            "concurrency_limit",
            format!("concurrency_limit: {text:?} is not a whole number from 0 to 4294967295"),
        )
    })
}

async fn set_paused(
    s: &AppState,
    name: &str,
    paused: bool,
    back: Back,
) -> Result<Response, PageError> {
    let patch = PoolPatch {
        paused: Some(paused),
        ..PoolPatch::default()
    };
    s.control.update_pool(name, patch).await?;
    Ok(back.redirect("/").into_response())
}

async fn pause(
    State(s): State<AppState>,
    Path(name): Path<String>,
    Form(back): Form<Back>,
) -> Result<Response, PageError> {
    set_paused(&s, &name, true, back).await
}

async fn resume(
    State(s): State<AppState>,
    Path(name): Path<String>,
    Form(back): Form<Back>,
) -> Result<Response, PageError> {
    set_paused(&s, &name, false, back).await
}

/// A pool its deployments still use is not deleted: the answer says so and
/// lists them, each with its own Delete, then offers the pool's again.
async fn delete(
    State(s): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, PageError> {
    let error = match s.control.delete_pool(&name).await {
        Ok(()) => return Ok(Redirect::to("/").into_response()),
        Err(error) if error.kind == crate::error::ErrorKind::Conflict => error,
        Err(error) => return Err(error.into()),
    };
    let here = format!("/ui/pools/{}/delete", view::segment(&name));
    let deployments: Vec<_> = s
        .control
        .deployments()?
        .into_iter()
        .filter(|d| d.pool == name)
        .collect();
    let body = html! {
        p.crumbs { a href="/" { "Work Pools" } " / " a href={ "/pools/" (view::segment(&name)) } { (name) } " / " }
        h1 { "Delete work pool " (name) }
        p.error role="alert" { (error.message) }
        p { "Delete these deployments first (each with its scheduled runs; runs that started stay), then the pool:" }
        table #pool-deployments {
            thead { tr { th { "Deployment" } th { "Queue" } th {} } }
            tbody {
                @for d in &deployments {
                    @let path = super::deployments::deployment_path(d);
                    tr data-deployment=(d.full_name()) {
                        td { a href=(path) { (d.full_name()) } }
                        td { (d.queue) }
                        td.actions {
                            @if view::may(access::UI_DELETE_DEPLOYMENT, Some(&d.pool)) {
                            (view::action(&format!("/ui{path}/delete"), "Delete", &format!("/pools/{}?tab=deployments", view::segment(&name)),
                                Some(&format!("Delete deployment {} and its scheduled runs?", d.full_name()))))
                            }
                        }
                    }
                }
            }
        }
        p { (view::action(&here, "Delete the pool", "/",
            Some(&format!("Delete work pool {name}? Its queues and workers go with it.")))) }
    };
    let status = crate::server::error::status(error.kind);
    Ok((
        status,
        view::page(&format!("Delete {name}"), Nav::Pools, None, body),
    )
        .into_response())
}

#[derive(Deserialize)]
struct TabQuery {
    #[serde(default)]
    tab: Option<String>,
}

const TABS: [(&str, &str); 5] = [
    ("details", "Details"),
    ("queues", "Work Queues"),
    ("workers", "Workers"),
    ("runs", "Runs"),
    ("deployments", "Deployments"),
];

async fn pool_page(
    State(s): State<AppState>,
    Path(name): Path<String>,
    Query(query): Query<TabQuery>,
) -> Page {
    let view = s.control.pool(&name)?;
    let tab = query
        .tab
        .as_deref()
        .filter(|t| TABS.iter().any(|(id, _)| id == t))
        .unwrap_or("details");
    let content = match tab {
        "queues" => super::queues::queues_tab(&s, &name, None)?,
        "workers" => workers_tab(&s, &name)?,
        "runs" => super::runs::runs_table(
            &s,
            &RunFilter {
                pool: Some(name.clone()),
                ..RunFilter::default()
            },
            25,
        )?,
        "deployments" => super::deployments::deployments_table(&s, Some(name.as_str()))?,
        _ => details_tab(&view, None),
    };
    Ok(pool_frame(&view, tab, content))
}

/// A pool's page around one tab's content (also the answer of a tab's
/// form that the server refused, with the error in `content`).
pub(super) fn pool_frame(view: &PoolView, tab: &str, content: Markup) -> Markup {
    let name = &view.pool.name;
    let here = format!("/pools/{}", view::segment(name));
    let action_path = format!("/ui/pools/{}", view::segment(name));
    let back = format!("{here}?tab={tab}");
    let body = html! {
        p.crumbs { a href="/" { "Work Pools" } " / " }
        div.title-row {
            h1 { (name) }
            div #pool-status data-live { (view::pool_status(view.status)) }
            div.actions {
                @if view.pool.paused && view::may(access::UI_RESUME_POOL, Some(name.as_str())) {
                    (view::action(&format!("{action_path}/resume"), "Resume", &back, None))
                } @else if !view.pool.paused && view::may(access::UI_PAUSE_POOL, Some(name.as_str())) {
                    (view::action(&format!("{action_path}/pause"), "Pause", &back, None))
                }
            }
        }
        nav.tabs aria-label="Pool sections" {
            @for (id, label) in TABS {
                a href={ (here) "?tab=" (id) } aria-current=[(id == tab).then_some("page")] { (label) }
            }
        }
        section #tab data-live { (content) }
    };
    let events = format!("/api/events?pool={}", view::query_escape(name));
    view::page(name, Nav::Pools, Some(&events), body)
}

/// The Details tab; with the edit form for an admin (`pool_edit`).
pub(super) fn details_tab(
    view: &PoolView,
    refused: Option<&super::pool_edit::Refused<'_>>,
) -> Markup {
    let pool = &view.pool;
    let variables = &pool.base_job_template["variables"];
    html! {
        dl.details {
            dt { "Type" } dd { (pool.pool_type) }
            dt { "Status" } dd { (view::pool_status(view.status)) }
            dt { "Concurrency limit" } dd { (view::limit(pool.concurrency_limit)) }
            dt { "Workers online" } dd { (view.workers_online) }
            dt { "Description" } dd { (pool.description) }
            dt { "Created" } dd { (view::ago(pool.created)) }
        }
        h2 { "Job variables" }
        p.muted { "What each deployment and run may set; the base job template turns them into the plugin's configuration." }
        (super::form::variables_table(variables))
        @if view::may(access::UI_UPDATE_POOL, Some(&pool.name)) {
            (super::pool_edit::edit_form(view, refused))
        } @else {
            details {
                summary { "Base job template (JSON)" }
                (view::json(&pool.base_job_template))
            }
        }
    }
}

fn workers_tab(s: &AppState, pool: &str) -> Result<Markup, ApiError> {
    let workers = s.control.workers(pool)?;
    Ok(html! {
        @if workers.is_empty() {
            p.empty { "No worker has polled this pool yet. Start one with "
                code { "host worker start --pool " (pool) } "." }
        } @else {
            table #workers {
                thead { tr { th { "Name" } th { "Status" } th { "Last polled" } th { "Heartbeat every" } th { "First seen" } } }
                tbody {
                    @for w in &workers {
                        tr data-worker=(w.worker.name) {
                            td { (w.worker.name) }
                            td { (view::worker_status(w.status)) }
                            td { (view::ago(w.worker.last_heartbeat)) }
                            td { (w.worker.heartbeat_interval_seconds) " s" }
                            td { (view::ago(w.worker.created)) }
                        }
                    }
                }
            }
        }
    })
}
