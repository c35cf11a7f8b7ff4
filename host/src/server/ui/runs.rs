//! Flow runs: the filterable list (paged with the API's cursor) and a run's
//! page with its state timeline, live logs, Cancel, Retry, Delete and Copy id.

use super::view::{self, Nav};
use super::{Back, Page, PageError};
use crate::error::ApiError;
use crate::model::{FlowRun, StateType, Timestamp};
use crate::orchestration;
use crate::server::{AppState, access};
use crate::store::{RunFilter, RunSort};
use axum::Router;
use axum::extract::{Form, Path, Query, RawQuery, State};
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

/// The list's filters as the page's URL holds them (a GET form, so a
/// filtered list can be bookmarked and live refreshes keep the filter).
#[derive(Deserialize, Default)]
struct ListQuery {
    /// States, comma-separated (the form's checkboxes repeat the key).
    #[serde(default)]
    state: Option<String>,
    #[serde(default)]
    pool: Option<String>,
    #[serde(default)]
    deployment: Option<String>,
    #[serde(default)]
    name: Option<String>,
    /// A day (`2026-01-31`, in the zone of `tz`) or an RFC 3339 time.
    #[serde(default)]
    since: Option<String>,
    #[serde(default)]
    until: Option<String>,
    #[serde(default)]
    sort: Option<String>,
    /// The browser's offset from UTC in minutes (east positive), which
    /// `app.js` adds to the form: days are the reader's days.
    #[serde(default)]
    tz: Option<String>,
    #[serde(default)]
    cursor: Option<String>,
}

impl ListQuery {
    fn get(value: &Option<String>) -> Option<&str> {
        value.as_deref().map(str::trim).filter(|v| !v.is_empty())
    }

    fn filter(&self) -> Result<(RunFilter, RunSort), ApiError> {
        use crate::server::runs::{sort_param, states_param};
        let (states, late) = states_param(Self::get(&self.state))?;
        let offset = match Self::get(&self.tz) {
            None => chrono::FixedOffset::east_opt(0),
            Some(text) => text.parse::<i32>().ok().and_then(|minutes| {
                minutes
                    .checked_mul(60)
                    .and_then(chrono::FixedOffset::east_opt)
            }),
        }
        .ok_or_else(|| ApiError::bad_request("tz", "tz: not an offset in minutes"))?;
        let day_or_time = |field: &str, end_of_day: bool| {
            let value = if field == "since" {
                &self.since
            } else {
                &self.until
            };
            Self::get(value)
                .map(|text| day_or_time(field, text, offset, end_of_day))
                .transpose()
        };
        let filter = RunFilter {
            pool: Self::get(&self.pool).map(String::from),
            deployment: Self::get(&self.deployment).map(String::from),
            states,
            late,
            name: Self::get(&self.name).map(String::from),
            since: day_or_time("since", false)?,
            until: day_or_time("until", true)?,
        };
        let sort = Self::get(&self.sort).map(sort_param).transpose()?;
        Ok((filter, sort.unwrap_or_default()))
    }

    /// This list's URL, at `cursor` (none: the first page).
    fn link(&self, cursor: Option<&str>) -> String {
        let pairs = [
            ("name", Self::get(&self.name)),
            ("state", Self::get(&self.state)),
            ("since", Self::get(&self.since)),
            ("until", Self::get(&self.until)),
            ("tz", Self::get(&self.tz)),
            ("pool", Self::get(&self.pool)),
            ("deployment", Self::get(&self.deployment)),
            ("sort", Self::get(&self.sort)),
            ("cursor", cursor),
        ];
        let query: Vec<String> = pairs
            .iter()
            .filter_map(|(key, value)| Some(format!("{key}={}", view::query_escape((*value)?))))
            .collect();
        format!("/runs?{}", query.join("&"))
    }
}

/// A date input's day (its first or last instant in `offset`'s zone), or an
/// RFC 3339 time as the API takes.
fn day_or_time(
    field: &str,
    text: &str,
    offset: chrono::FixedOffset,
    end_of_day: bool,
) -> Result<Timestamp, ApiError> {
    let Ok(day) = chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d") else {
        return crate::server::runs::time_param(field, text);
    };
    let start = day
        .and_hms_opt(0, 0, 0)
        .and_then(|t| t.and_local_timezone(offset).single());
    let start =
        start.ok_or_else(|| ApiError::bad_request(field, format!("{field}: no such day")))?;
    let instant = if end_of_day {
        // The last day chrono can hold has no next one: checked, not a panic.
        start
            .checked_add_signed(chrono::TimeDelta::days(1))
            .and_then(|next| next.checked_sub_signed(chrono::TimeDelta::microseconds(1)))
            .ok_or_else(|| ApiError::bad_request(field, format!("{field}: no such day")))?
    } else {
        start
    };
    Ok(instant.with_timezone(&chrono::Utc))
}

/// `/runs` filtered as `filter` (the pool and deployment pages link there).
fn runs_link(filter: &RunFilter) -> String {
    let mut states: Vec<&str> = filter.states.iter().map(|s| s.as_str()).collect();
    if filter.late {
        states.push("LATE");
    }
    let query = ListQuery {
        state: Some(states.join(",")),
        pool: filter.pool.clone(),
        deployment: filter.deployment.clone(),
        sort: Some(RunSort::Created.as_str().into()),
        ..ListQuery::default()
    };
    query.link(None)
}

async fn list(State(s): State<AppState>, RawQuery(raw): RawQuery) -> Page {
    let query: ListQuery = crate::server::parse_query(raw.as_deref().unwrap_or(""))?;
    let (filter, sort) = query.filter()?;
    let cursor = ListQuery::get(&query.cursor);
    let page = s.control.find_runs(&filter, sort, cursor, PAGE_SIZE)?;
    let pools = s.control.pools()?;
    let deployments = s.control.deployments()?;
    let total = page.total.unwrap_or(0);
    let checked = |state: StateType| filter.states.contains(&state);
    let body = html! {
        h1 { "Flow Runs" }
        form.filters #run-filters method="get" action="/runs" {
            label { "Name "
                input type="search" name="name" value=[ListQuery::get(&query.name)] placeholder="contains…";
            }
            fieldset.states {
                legend { "State" }
                @for st in StateType::ALL {
                    label.check { input type="checkbox" name="state" value=(st.as_str()) checked[checked(st)]; (st.as_str()) }
                    @if st == StateType::Scheduled {
                        label.check title="SCHEDULED, past its time" {
                            input type="checkbox" name="state" value="LATE" checked[filter.late]; "LATE"
                        }
                    }
                }
            }
            label { "Expected start from "
                input type="date" name="since" value=[ListQuery::get(&query.since)];
            }
            label { "to "
                input type="date" name="until" value=[ListQuery::get(&query.until)];
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
            label { "Sort "
                select name="sort" {
                    option value="expected" selected[sort == RunSort::Expected] { "Expected start, newest first" }
                    option value="created" selected[sort == RunSort::Created] { "Created, newest first" }
                }
            }
            input type="hidden" name="tz" value=[ListQuery::get(&query.tz)];
            button type="submit" { "Filter" }
            a.clear href="/runs" { "Clear" }
        }
        // A later page keeps still while runs come in; the first follows them.
        div #runs data-live=[cursor.is_none().then_some("")] {
            p.count #run-count { (total) @if total == 1 { " run" } @else { " runs" } }
            (table(&page.runs))
        }
        nav.pager aria-label="Pages" {
            @if cursor.is_some() { a #first-page href=(query.link(None)) { "← Newest" } }
            @if let Some(next) = &page.next_cursor {
                a #next-page href=(query.link(Some(next))) { "Older →" }
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
        @if page.next_cursor.is_some() { p { a href=(runs_link(filter)) { "All runs →" } } }
    })
}

/// When the run's latest attempt started running and, once it is over,
/// when it ended; `None` for a run that never ran.
fn ran(run: &FlowRun) -> Option<(Timestamp, Option<Timestamp>)> {
    let states: Vec<&crate::model::State> = run.history.iter().chain([&run.state]).collect();
    let start = states
        .iter()
        .rposition(|s| s.state_type == StateType::Running)?;
    // A retried run is SCHEDULED again: its last attempt is not running now.
    if states[start + 1..]
        .iter()
        .any(|s| s.state_type == StateType::Scheduled)
    {
        return None;
    }
    let end = run
        .state
        .state_type
        .is_terminal()
        .then_some(run.state.timestamp);
    Some((states[start].timestamp, end))
}

/// How long the run ran, or "running for …" (kept counting by `app.js`).
fn run_duration(run: &FlowRun) -> Markup {
    match ran(run) {
        None => html! { span.muted { "—" } },
        Some((start, Some(end))) => html! {
            span.duration title={ "from " (view::exact(start)) " to " (view::exact(end)) } { (view::duration(end - start)) }
        },
        Some((start, None)) => html! {
            span.duration data-running=(view::utc(start)) title={ "since " (view::exact(start)) } {
                "running for " (view::duration(chrono::Utc::now() - start))
            }
        },
    }
}

fn table(runs: &[FlowRun]) -> Markup {
    html! {
        @if runs.is_empty() {
            p.empty { "No flow runs." }
        } @else {
            table.runs {
                thead { tr { th { "Run" } th { "State" } th { "Deployment" } th { "Pool" } th { "Expected start" } th { "Duration" } th { "Updated" } } }
                tbody {
                    @for run in runs {
                        tr data-run=(run.id) {
                            td { a href={ "/runs/" (view::segment(&run.id)) } { (run.name) } }
                            td { (view::run_state(&run.state)) }
                            td { a href={ "/deployments/" (deployment_path(&run.deployment)) } { (run.deployment) } }
                            td { (run.pool) }
                            td { (view::local_time(run.scheduled_at)) " " span.muted { "(" (view::ago(run.scheduled_at)) ")" } }
                            td { (run_duration(run)) }
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
    /// Only lines of this stream (`stdout`, `stderr`, `worker`...).
    #[serde(default)]
    stream: Option<String>,
    /// Only lines holding this text, ignoring case.
    #[serde(default)]
    q: Option<String>,
}

/// Which of a log page's lines are shown (the filter of the run page's
/// log, kept in its URL and applied by `app.js` to live lines too).
struct LogFilter<'a> {
    stream: Option<&'a str>,
    text: Option<String>,
}

impl LogFilter<'_> {
    fn shows(&self, line: &crate::model::LogLine) -> bool {
        self.stream.is_none_or(|s| s == line.stream)
            && self
                .text
                .as_ref()
                .is_none_or(|t| line.message.to_lowercase().contains(t))
    }

    /// The query parameters that carry the filter to another log page.
    fn query(&self, raw_text: Option<&str>) -> String {
        let mut query = String::new();
        if let Some(stream) = self.stream {
            query.push_str(&format!("&stream={}", view::query_escape(stream)));
        }
        if let Some(text) = raw_text {
            query.push_str(&format!("&q={}", view::query_escape(text)));
        }
        query
    }
}

/// The streams a log is usually made of; the filter offers these and any
/// other a page's lines carry.
const STREAMS: [&str; 3] = ["stdout", "stderr", "worker"];

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
    let raw_text = query.q.as_deref().filter(|q| !q.trim().is_empty());
    let log_filter = LogFilter {
        stream: query.stream.as_deref().filter(|s| !s.is_empty()),
        text: raw_text.map(str::to_lowercase),
    };
    let mut streams: Vec<&str> = STREAMS.to_vec();
    for line in &window.lines {
        if !streams.contains(&line.stream.as_str()) {
            streams.push(&line.stream);
        }
    }
    let shown: Vec<&crate::model::LogLine> = window
        .lines
        .iter()
        .filter(|l| log_filter.shows(l))
        .collect();
    let filtered = log_filter.stream.is_some() || raw_text.is_some();
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
                    dt { "Expected start" } dd { (view::local_time(run.scheduled_at)) " " span.muted { "(" (view::ago(run.scheduled_at)) ")" } }
                    @if let Some((start, end)) = ran(&run) {
                        dt { "Started" } dd { (view::local_time(start)) }
                        @if let Some(end) = end { dt { "Ended" } dd { (view::local_time(end)) } }
                    }
                    dt { "Duration" } dd #duration { (run_duration(&run)) }
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
                            " " (view::local_time(state.timestamp))
                            @if let Some(message) = &state.message { p.message { (view::message(message)) } }
                        }
                    }
                }
            }
        }
        h2 { "Logs" }
        form.filters.log-filters #log-filters method="get" action=(here) {
            @if let Some(from) = from { input type="hidden" name="log_from" value=(from); }
            label { "Stream "
                select name="stream" {
                    option value="" { "any" }
                    @for stream in &streams {
                        option value=(stream) selected[log_filter.stream == Some(*stream)] { (stream) }
                    }
                }
            }
            label { "Search this page "
                input type="search" name="q" value=[raw_text] placeholder="text in the line";
            }
            button type="submit" { "Filter" }
            @if filtered {
                a.clear href={ (here) @if let Some(from) = from { "?log_from=" (from) } "#logs" } { "Clear" }
                span.muted #log-shown { (shown.len()) " of " (window.lines.len()) " lines on this page match" }
            }
        }
        (log_pager(&here, &window, &log_filter.query(raw_text)))
        // Live lines are added only to the newest page, filtered alike.
        pre.logs #logs data-run=(run.id) data-follow=[newest.then_some("")]
            data-stream=[log_filter.stream] data-q=[log_filter.text.as_deref()] aria-live="polite" {
            @for line in &shown { (log_line(line)) }
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

/// One log line as `app.js` writes live ones too: its time (to the
/// millisecond, in the reader's zone once `app.js` rewrote it; the whole
/// UTC time on hover), then the message; its stream colours it.
fn log_line(line: &crate::model::LogLine) -> Markup {
    html! {
        span.line.(line.stream) data-seq=(line.seq) {
            time.ts datetime=(view::utc(line.timestamp)) title=(view::exact(line.timestamp)) data-local="clock" {
                (line.timestamp.format("%H:%M:%S%.3f"))
            }
            " " span.msg { (line.message) } "\n"
        }
    }
}

/// Where this page of the log is among all its lines, the links to the
/// first, earlier, later and newest pages, and the whole log's download.
fn log_pager(here: &str, window: &crate::control::LogWindow, filter: &str) -> Markup {
    let (Some(first), Some(shown_last), Some(last)) = (
        window.lines.first().map(|l| l.seq),
        window.lines.last().map(|l| l.seq),
        window.last,
    ) else {
        return html! { p.muted #log-pager { "No log lines yet." } };
    };
    let at = |from: u64| format!("{here}?log_from={from}{filter}#logs");
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
                a #log-newest href={ (here) @if !filter.is_empty() { "?" (filter.trim_start_matches('&')) } "#logs" } { "Newest ⇥" }
            }
            a #log-download href=(download) download { "Download all" }
        }
    }
}
