//! Flow runs: the filterable list (paged with the API's cursor) and a run's
//! page with its state timeline, live logs, Cancel, Retry, Delete and Copy id.

use super::view::{self, Nav};
use super::{Back, Page, PageError};
use crate::error::ApiError;
use crate::model::{FlowRun, StateType};
use crate::orchestration;
use crate::server::{AppState, access};
use crate::store::RunFilter;
use axum::Router;
use axum::extract::{Form, Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use maud::{Markup, html};
use serde::Deserialize;

/// Runs on one page of the list.
const PAGE_SIZE: usize = 50;
/// Log lines on one page of a run's log.
const SHOWN_LOG_LINES: u64 = 1000;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/runs", get(list))
        .route("/runs/{id}", get(detail))
        .route(access::UI_CANCEL_RUN, post(cancel))
        .route(access::UI_RETRY_RUN, post(retry))
        .route(access::UI_DELETE_RUN, post(delete))
}

#[derive(Deserialize, Default)]
struct ListQuery {
    #[serde(default)]
    state: Option<String>,
    #[serde(default)]
    pool: Option<String>,
    #[serde(default)]
    deployment: Option<String>,
    #[serde(default)]
    cursor: Option<String>,
}

/// `/runs` with these filters and, for a later page, the cursor.
fn runs_link(filter: &RunFilter, cursor: Option<&str>) -> String {
    let state = if filter.late {
        Some("LATE")
    } else {
        filter.state.map(StateType::as_str)
    };
    let pairs = [
        ("state", state),
        ("pool", filter.pool.as_deref()),
        ("deployment", filter.deployment.as_deref()),
        ("cursor", cursor),
    ];
    let query: Vec<String> = pairs
        .iter()
        .filter_map(|(key, value)| Some(format!("{key}={}", view::query_escape((*value)?))))
        .collect();
    format!("/runs?{}", query.join("&"))
}

async fn list(State(s): State<AppState>, Query(query): Query<ListQuery>) -> Page {
    let blank = |v: &Option<String>| v.clone().filter(|v| !v.is_empty());
    // LATE is offered with the states: SCHEDULED runs past their time.
    let late = blank(&query.state).is_some_and(|s| s.eq_ignore_ascii_case("LATE"));
    let filter = RunFilter {
        pool: blank(&query.pool),
        deployment: blank(&query.deployment),
        state: blank(&query.state)
            .filter(|_| !late)
            .as_deref()
            .map(crate::server::runs::state_param)
            .transpose()?,
        late,
    };
    let state = filter.state;
    let page = s.control.runs(
        &filter,
        query.cursor.as_deref().filter(|c| !c.is_empty()),
        PAGE_SIZE,
    )?;
    let pools = s.control.pools()?;
    let deployments = s.control.deployments()?;
    let paged = query.cursor.as_deref().is_some_and(|c| !c.is_empty());
    let body = html! {
        h1 { "Flow Runs" }
        form.filters method="get" action="/runs" {
            label { "State "
                select name="state" {
                    option value="" { "any" }
                    @for st in StateType::ALL {
                        option value=(st.as_str()) selected[state == Some(st)] { (st.as_str()) }
                        @if st == StateType::Scheduled {
                            option value="LATE" selected[filter.late] { "LATE (scheduled, past its time)" }
                        }
                    }
                }
            }
            label { "Pool "
                select name="pool" {
                    option value="" { "any" }
                    @for p in &pools {
                        option value=(p.pool.name) selected[filter.pool.as_deref() == Some(p.pool.name.as_str())] { (p.pool.name) }
                    }
                }
            }
            label { "Deployment "
                select name="deployment" {
                    option value="" { "any" }
                    @for d in &deployments {
                        @let full = d.full_name();
                        option value=(full) selected[filter.deployment.as_deref() == Some(full.as_str())] { (full) }
                    }
                }
            }
            button type="submit" { "Filter" }
        }
        // A later page keeps still while runs come in; the first follows them.
        div #runs data-live=[(!paged).then_some("")] {
            (table(&page.runs))
        }
        nav.pager aria-label="Pages" {
            @if paged { a #first-page href=(runs_link(&filter, None)) { "← Newest" } }
            @if let Some(next) = &page.next_cursor {
                a #next-page href=(runs_link(&filter, Some(next))) { "Older →" }
            }
        }
    };
    Ok(view::page(
        "Flow Runs",
        Nav::Runs,
        Some("/api/events"),
        body,
    ))
}

/// The newest runs that match, without paging (pool and deployment pages).
pub fn runs_table(s: &AppState, filter: &RunFilter, limit: usize) -> Result<Markup, ApiError> {
    let page = s.control.runs(filter, None, limit)?;
    Ok(html! {
        (table(&page.runs))
        @if page.next_cursor.is_some() { p { a href=(runs_link(filter, None)) { "All runs →" } } }
    })
}

fn table(runs: &[FlowRun]) -> Markup {
    html! {
        @if runs.is_empty() {
            p.empty { "No flow runs." }
        } @else {
            table.runs {
                thead { tr { th { "Run" } th { "State" } th { "Deployment" } th { "Pool" } th { "Scheduled" } th { "Updated" } } }
                tbody {
                    @for run in runs {
                        tr data-run=(run.id) {
                            td { a href={ "/runs/" (view::segment(&run.id)) } { (run.name) } }
                            td { (view::run_state(&run.state)) }
                            td { a href={ "/deployments/" (deployment_path(&run.deployment)) } { (run.deployment) } }
                            td { (run.pool) }
                            td { (view::ago(run.scheduled_at)) }
                            td { (view::ago(run.updated)) }
                        }
                    }
                }
            }
        }
    }
}

#[derive(Deserialize, Default)]
struct DetailQuery {
    /// The log page starting at this line (0 is the first); none: the newest.
    #[serde(default)]
    log_from: Option<String>,
}

async fn detail(
    State(s): State<AppState>,
    Path(id): Path<String>,
    Query(query): Query<DetailQuery>,
) -> Page {
    let run = s.control.run(&id)?;
    let from = match query.log_from.as_deref().filter(|f| !f.is_empty()) {
        None => None,
        Some(text) => Some(text.parse::<u64>().map_err(|_| {
            ApiError::bad_request(
                "log_from",
                format!("log_from: {text:?} is not a line number"),
            )
        })?),
    };
    let window = s.control.log_window(&id, from, SHOWN_LOG_LINES)?;
    let here = format!("/runs/{}", view::segment(&id));
    let timeline = run.history.iter().chain(std::iter::once(&run.state));
    let retryable = orchestration::retry(&run, chrono::Utc::now()).is_ok();
    let newest = window.lines.last().map(|l| l.seq) == window.last;
    let body = html! {
        p.crumbs { a href="/runs" { "Flow Runs" } " / " }
        div.title-row #run-head data-live {
            h1 { (run.name) }
            (view::run_state(&run.state))
            div.actions {
                (view::copy_button(&run.id, "Copy id"))
                @if !run.state.state_type.is_terminal() && view::may(access::UI_CANCEL_RUN, Some(&run.pool)) {
                    (view::action(&format!("/ui/runs/{}/cancel", view::segment(&id)), "Cancel", &here,
                        Some(&format!("Cancel flow run {}?", run.name))))
                }
                @if retryable && view::may(access::UI_RETRY_RUN, Some(&run.pool)) {
                    (view::action(&format!("/ui/runs/{}/retry", view::segment(&id)), "Retry", &here, None))
                }
                @if orchestration::deletable(&run).is_ok() && view::may(access::UI_DELETE_RUN, Some(&run.pool)) {
                    (view::action(&format!("/ui/runs/{}/delete", view::segment(&id)), "Delete", "/runs",
                        Some(&format!("Delete flow run {} and its logs?", run.name))))
                }
            }
        }
        div.columns {
            section #run-details data-live {
                h2 { "Details" }
                dl.details {
                    dt { "Id" } dd { code { (run.id) } }
                    dt { "Deployment" } dd { a href={ "/deployments/" (deployment_path(&run.deployment)) } { (run.deployment) } }
                    dt { "Attempts" } dd #attempts { (orchestration::attempts(&run)) }
                    dt { "Pool / queue" } dd { a href={ "/pools/" (view::segment(&run.pool)) } { (run.pool) } " / " (run.queue) }
                    dt { "Worker" } dd { @if let Some(w) = &run.worker { (w) } @else { span.muted { "none" } } }
                    dt { "Scheduled" } dd { (view::ago(run.scheduled_at)) }
                    dt { "Exit code" } dd { @if let Some(code) = run.exit_code { (code) } @else { span.muted { "—" } } }
                    dt { "Infrastructure" } dd { @if let Some(h) = &run.infrastructure_handle { code { (h) } } @else { span.muted { "—" } } }
                    dt { "Parameters" } dd { (view::json(&serde_json::Value::Object(run.parameters.clone()))) }
                    dt { "Job variables" } dd { (view::json(&serde_json::Value::Object(run.job_variables.clone()))) }
                }
            }
            section #timeline data-live {
                h2 { "Timeline" }
                ol.timeline {
                    @for state in timeline {
                        li data-state=(state.state_type.as_str()) {
                            (view::state(state.state_type))
                            @if state.name != state.state_type.default_name() { " " (state.name) }
                            " " time datetime=(state.timestamp.to_rfc3339()) { (view::exact(state.timestamp)) }
                            @if let Some(message) = &state.message { p.message { (message) } }
                        }
                    }
                }
            }
        }
        h2 { "Logs" }
        (log_pager(&here, &window))
        // Live lines are added only to the newest page.
        pre.logs #logs data-run=(run.id) data-follow=[newest.then_some("")] aria-live="polite" {
            @for line in &window.lines { (log_line(line)) }
        }
    };
    let events = format!("/api/events?flow_run={}", view::query_escape(&id));
    Ok(view::page(&run.name, Nav::Runs, Some(&events), body))
}

async fn cancel(
    State(s): State<AppState>,
    Path(id): Path<String>,
    Form(back): Form<Back>,
) -> Result<Response, PageError> {
    s.control.cancel(&id).await?;
    Ok(back
        .redirect(&format!("/runs/{}", view::segment(&id)))
        .into_response())
}

/// `flow/name` as the two path segments of its page.
fn deployment_path(full_name: &str) -> String {
    match full_name.split_once('/') {
        Some((flow, name)) => format!("{}/{}", view::segment(flow), view::segment(name)),
        None => view::segment(full_name),
    }
}

async fn retry(
    State(s): State<AppState>,
    Path(id): Path<String>,
    Form(back): Form<Back>,
) -> Result<Response, PageError> {
    s.control.retry(&id).await?;
    Ok(back
        .redirect(&format!("/runs/{}", view::segment(&id)))
        .into_response())
}

async fn delete(
    State(s): State<AppState>,
    Path(id): Path<String>,
    Form(back): Form<Back>,
) -> Result<Response, PageError> {
    s.control.delete_run(&id).await?;
    Ok(back.redirect("/runs").into_response())
}

/// One log line as `app.js` writes live ones too: its time (UTC, to the
/// millisecond; the whole time on hover), then the message; its stream
/// colours it.
fn log_line(line: &crate::model::LogLine) -> Markup {
    html! {
        span.line.(line.stream) data-seq=(line.seq) {
            time.ts datetime=(line.timestamp.to_rfc3339()) title=(view::exact(line.timestamp)) {
                (line.timestamp.format("%H:%M:%S%.3f"))
            }
            " " span.msg { (line.message) } "\n"
        }
    }
}

/// Where this page of the log is among all its lines, the links to the
/// first, earlier, later and newest pages, and the whole log's download.
fn log_pager(here: &str, window: &crate::control::LogWindow) -> Markup {
    let (Some(first), Some(shown_last), Some(last)) = (
        window.lines.first().map(|l| l.seq),
        window.lines.last().map(|l| l.seq),
        window.last,
    ) else {
        return html! { p.muted #log-pager { "No log lines yet." } };
    };
    let at = |from: u64| format!("{here}?log_from={from}#logs");
    let download = format!(
        "/api/flow-runs/{}/logs/download",
        here.trim_start_matches("/runs/")
    );
    html! {
        nav.pager #log-pager aria-label="Log pages" {
            span.muted { "Lines " (first + 1) "–" (shown_last + 1) " of " (last + 1) }
            @if first > 0 {
                a #log-first href=(at(0)) { "⇤ First" }
                a #log-earlier href=(at(first.saturating_sub(SHOWN_LOG_LINES))) { "← Earlier" }
            }
            @if shown_last < last {
                a #log-later href=(at(shown_last + 1)) { "Later →" }
                a #log-newest href={ (here) "#logs" } { "Newest ⇥" }
            }
            a #log-download href=(download) download { "Download all" }
        }
    }
}
