//! Deployments: the list, a deployment's page with Pause/Resume and Delete,
//! its schedules (`schedules`), its upcoming runs, and its Run form
//! (generated from the pool's variables schema, now or at a later time).

use super::form::{self, Submitted};
use super::schedules;
use super::view::{self, Nav};
use super::{Back, Page, PageError};
use crate::control::RunRequest;
use crate::control::schema::host_variables;
use crate::error::ApiError;
use crate::model::{Deployment, Schedule, StateType, Timestamp};
use crate::server::{AppState, access};
use crate::store::RunFilter;
use axum::Router;
use axum::extract::{Form, Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use maud::{Markup, html};
use serde_json::Value;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/deployments", get(list))
        .route("/deployments/{flow}/{name}", get(detail))
        .route(access::UI_RUN_DEPLOYMENT, post(run))
        .route(access::UI_PAUSE_DEPLOYMENT, post(pause))
        .route(access::UI_RESUME_DEPLOYMENT, post(resume))
        .route(access::UI_DELETE_DEPLOYMENT, post(delete))
        .route(access::UI_UPDATE_SCHEDULE, post(update_schedule))
}

async fn list(State(s): State<AppState>) -> Page {
    let body = html! {
        h1 { "Deployments" }
        div #deployments data-live { (deployments_table(&s, None)?) }
    };
    Ok(view::page(
        "Deployments",
        Nav::Deployments,
        Some("/api/events"),
        body,
    ))
}

/// All deployments, or one pool's.
pub fn deployments_table(s: &AppState, pool: Option<&str>) -> Result<Markup, ApiError> {
    let deployments: Vec<Deployment> = s
        .control
        .deployments()?
        .into_iter()
        .filter(|d| pool.is_none_or(|p| d.pool == p))
        .collect();
    Ok(html! {
        @if deployments.is_empty() {
            p.empty { "No deployments yet. Create one with " code { "host deploy" } "." }
        } @else {
            table {
                thead { tr { th { "Deployment" } th { "Pool" } th { "Queue" } th { "Schedule" } th { "Status" } } }
                tbody {
                    @for d in &deployments {
                        tr data-deployment=(d.full_name()) {
                            td { a href=(deployment_path(d)) { (d.full_name()) } }
                            td { a href={ "/pools/" (view::segment(&d.pool)) } { (d.pool) } }
                            td { (d.queue) }
                            td { (schedules(&d.schedules)) }
                            td.deployment-status { (deployment_status(d)) }
                        }
                    }
                }
            }
        }
    })
}

fn deployment_status(d: &Deployment) -> Markup {
    if d.paused {
        html! { span.status.paused { span.dot aria-hidden="true" {} "PAUSED" } }
    } else {
        html! { span.status.ok { span.dot aria-hidden="true" {} "ACTIVE" } }
    }
}

pub fn deployment_path(d: &Deployment) -> String {
    format!(
        "/deployments/{}/{}",
        view::segment(&d.flow),
        view::segment(&d.name)
    )
}

fn schedules(schedules: &[Schedule]) -> Markup {
    html! {
        @if schedules.is_empty() { span.muted { "none" } }
        @for (i, s) in schedules.iter().enumerate() {
            @if i > 0 { br; }
            span title=[s.cron.as_deref()] { (crate::control::schedule_words::describe(s)) }
            @if !s.active { " (inactive)" }
        }
    }
}

/// An argv as one would type it: arguments with spaces or quotes quoted.
fn shell_words(argv: &[String]) -> String {
    let word = |arg: &String| {
        if !arg.is_empty()
            && arg
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./=:,@%+".contains(c))
        {
            arg.clone()
        } else {
            format!("'{}'", arg.replace('\'', r"'\''"))
        }
    };
    argv.iter().map(word).collect::<Vec<_>>().join(" ")
}

/// The Run form's variables: the pool's, and the ones the worker acts on.
fn run_variables(s: &AppState, d: &Deployment) -> Result<Value, ApiError> {
    let pool = s.control.pool(&d.pool)?;
    let mut schema = pool.pool.base_job_template["variables"].clone();
    if !schema.is_object() {
        schema = serde_json::json!({});
    }
    let properties = schema.as_object_mut().map(|o| {
        o.entry("properties")
            .or_insert_with(|| serde_json::json!({}))
    });
    if let (Some(Value::Object(properties)), Value::Object(host)) = (properties, host_variables()) {
        for (name, variable) in host {
            properties.entry(name).or_insert(variable);
        }
    }
    Ok(schema)
}

async fn detail(State(s): State<AppState>, Path((flow, name)): Path<(String, String)>) -> Page {
    let deployment = s.control.deployment(&format!("{flow}/{name}"))?;
    Ok(detail_page(&s, &deployment, &Submitted::new(), None, None)?)
}

fn detail_page(
    s: &AppState,
    d: &Deployment,
    submitted: &Submitted,
    error: Option<&ApiError>,
    schedule_refused: Option<&schedules::Refused<'_>>,
) -> Result<Markup, ApiError> {
    let variables = run_variables(s, d)?;
    let parameters = form::parameters_schema(&d.parameters);
    // The field an input shows the error beside, for the summary's link.
    let error_input = error.and_then(|e| {
        let field = e.field.as_deref()?;
        if field == "scheduled_at" {
            return Some(field.to_string());
        }
        let shown = form::shown_by_an_input(
            e,
            &[("parameters", &parameters), ("job_variables", &variables)],
        );
        shown.then(|| {
            form::input_of(
                field,
                &[("parameters", &parameters), ("job_variables", &variables)],
            )
        })?
    });
    let recent = super::runs::runs_table(
        s,
        &RunFilter {
            deployment: Some(d.full_name()),
            ..RunFilter::default()
        },
        10,
    )?;
    let upcoming = super::runs::runs_table(
        s,
        &RunFilter {
            deployment: Some(d.full_name()),
            states: vec![StateType::Scheduled],
            ..RunFilter::default()
        },
        10,
    )?;
    let run_action = format!(
        "/ui/deployments/{}/{}/run",
        view::segment(&d.flow),
        view::segment(&d.name)
    );
    let action = |verb: &str| {
        format!(
            "/ui/deployments/{}/{}/{verb}",
            view::segment(&d.flow),
            view::segment(&d.name)
        )
    };
    let here = deployment_path(d);
    let body = html! {
        p.crumbs { a href="/deployments" { "Deployments" } " / " }
        div.title-row #deployment-head {
            h1 { (d.full_name()) }
            span #deployment-status { (deployment_status(d)) }
            div.actions {
                @if d.paused && view::may(access::UI_RESUME_DEPLOYMENT, Some(&d.pool)) {
                    (view::action(&action("resume"), "Resume", &here, None))
                } @else if !d.paused && view::may(access::UI_PAUSE_DEPLOYMENT, Some(&d.pool)) {
                    (view::action(&action("pause"), "Pause", &here, None))
                }
                @if view::may(access::UI_DELETE_DEPLOYMENT, Some(&d.pool)) {
                    (view::action(&action("delete"), "Delete", "/deployments",
                        Some(&format!("Delete deployment {} and its scheduled runs? Runs that started stay.", d.full_name()))))
                }
            }
        }
        @if d.paused {
            p.muted #paused-note { "Paused: its schedules make no runs and workers claim none of its runs until it is resumed." }
        }
        dl.details {
            dt { "Pool" } dd { a href={ "/pools/" (view::segment(&d.pool)) } { (d.pool) } }
            dt { "Queue" } dd { (d.queue) }
            dt { "Command" } dd { @if d.command.is_empty() { span.muted { "none" } } @else { code { (shell_words(&d.command)) } } }
            dt { "Image" } dd { @if let Some(image) = &d.image { code { (image) } } @else { span.muted { "none" } } }
            dt { "Parameters" } dd { (view::json(&Value::Object(d.parameters.clone()))) }
            dt { "Job variables" } dd { (view::json(&Value::Object(d.job_variables.clone()))) }
            dt { "Concurrency limit" } dd { (view::limit(d.concurrency_limit)) }
        }
        div #schedules-live data-live { (schedules::section(d, schedule_refused)) }
        @if view::may(access::UI_RUN_DEPLOYMENT, Some(&d.pool)) {
        section.card #run {
            h2 { "Run" }
            p.muted { "Empty fields keep the deployment's and the pool's values." }
            form method="post" action=(run_action) {
                @if let Some(e) = error {
                    // At the top of the form and focused (app.js): a refusal
                    // is read at once, not left below the fold.
                    div.error-summary #run-errors role="alert" tabindex="-1" data-focus {
                        h3 { "The run was not created" }
                        ul {
                            @if let Some(input) = &error_input {
                                li { a href={ "#" (input) } data-field=(input) { (e.message) } }
                            } @else {
                                li data-field=[e.field.as_deref()] { (e.message) }
                            }
                        }
                    }
                }
                (view::csrf_field())
                (start_fields(submitted, error))
                @if !d.parameters.is_empty() {
                    fieldset {
                        legend { "Parameters" }
                        (form::inputs("parameters", &parameters, submitted, error))
                    }
                }
                fieldset {
                    legend { "Job variables (pool " (d.pool) ")" }
                    (form::inputs("job_variables", &variables, submitted, error))
                }
                button type="submit" { "Run" }
            }
        }
        }
        h2 #upcoming-runs { "Upcoming" }
        p.muted { "Its runs waiting for their time (SCHEDULED, Late included)." }
        div #upcoming data-live { (upcoming) }
        h2 { "Recent runs" }
        div #recent data-live { (recent) }
    };
    Ok(view::page(
        &d.full_name(),
        Nav::Deployments,
        Some("/api/events"),
        body,
    ))
}

async fn run(
    State(s): State<AppState>,
    Path((flow, name)): Path<(String, String)>,
    Form(pairs): Form<Vec<(String, String)>>,
) -> Result<Response, PageError> {
    let deployment = s.control.deployment(&format!("{flow}/{name}"))?;
    let submitted: Submitted = pairs.into_iter().collect();
    let attempt = async {
        let request = RunRequest {
            parameters: form::read(
                "parameters",
                &form::parameters_schema(&deployment.parameters),
                &submitted,
            )?,
            job_variables: form::read(
                "job_variables",
                &run_variables(&s, &deployment)?,
                &submitted,
            )?,
            scheduled_at: start_time(&submitted)?,
            name: None,
        };
        s.control.create_run(&deployment.full_name(), request).await
    };
    match attempt.await {
        Ok(run) => Ok(Redirect::to(&format!("/runs/{}", view::segment(&run.id))).into_response()),
        Err(error) => {
            let error = crate::server::error::disclosed(error);
            let status = crate::server::error::status(error.kind);
            Ok((
                status,
                detail_page(&s, &deployment, &submitted, Some(&error), None)?,
            )
                .into_response())
        }
    }
}

/// The Run form's start: now, or a date and time in the browser's zone.
fn start_fields(submitted: &Submitted, error: Option<&ApiError>) -> Markup {
    let later = submitted.get("start").map(String::as_str) == Some("later");
    let value = submitted
        .get("scheduled_at")
        .map(String::as_str)
        .unwrap_or("");
    let message = error
        .filter(|e| e.field.as_deref() == Some("scheduled_at"))
        .map(|e| e.message.as_str());
    html! {
        fieldset.start {
            legend { "Start" }
            label.choice { input type="radio" name="start" value="now" checked[!later]; " Now" }
            label.choice { input type="radio" name="start" value="later" checked[later]; " Later, at:" }
            (view::field_error_wrap("scheduled_at", "Start time (your time zone)", message, html! {
                input #scheduled_at name="scheduled_at" type="datetime-local" value=(value)
                    data-local-time="utc_offset_minutes"
                    aria-invalid=[message.map(|_| "true")]
                    aria-describedby=[message.map(|_| "scheduled_at-error")];
                // Filled in by app.js as the form is sent; without it, UTC.
                input type="hidden" name="utc_offset_minutes" value="";
            }))
        }
    }
}

/// The run's time from the form: none for now; else the local date and time
/// made UTC with the browser's offset (minutes behind UTC, as
/// `Date.getTimezoneOffset` gives it).
fn start_time(submitted: &Submitted) -> Result<Option<Timestamp>, ApiError> {
    if submitted.get("start").map(String::as_str) != Some("later") {
        return Ok(None);
    }
    let text = submitted
        .get("scheduled_at")
        .map(|t| t.trim())
        .unwrap_or("");
    if text.is_empty() {
        return Err(ApiError::bad_request(
            "scheduled_at",
            "scheduled_at: give the date and time to start at, or choose Now",
        ));
    }
    let local = ["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S"]
        .iter()
        .find_map(|f| chrono::NaiveDateTime::parse_from_str(text, f).ok())
        .ok_or_else(|| {
            ApiError::bad_request(
                "scheduled_at",
                format!("scheduled_at: {text:?} is not a date and time (YYYY-MM-DDTHH:MM)"),
            )
        })?;
    let offset = submitted
        .get("utc_offset_minutes")
        .map(|t| t.trim())
        .filter(|t| !t.is_empty())
        .map_or(Ok(0), str::parse::<i64>)
        .ok()
        .filter(|m| m.abs() <= 24 * 60)
        .ok_or_else(|| {
            ApiError::bad_request(
                "utc_offset_minutes",
                "utc_offset_minutes: not a time zone offset in minutes",
            )
        })?;
    // At the ends of what chrono holds an offset overflows: refused, not a panic.
    let at = local
        .and_utc()
        .checked_add_signed(chrono::Duration::minutes(offset))
        .ok_or_else(|| {
            ApiError::bad_request(
                "scheduled_at",
                format!("scheduled_at: {text:?} is out of range"),
            )
        })?;
    Ok(Some(at))
}

async fn update_schedule(
    State(s): State<AppState>,
    Path((flow, name, index)): Path<(String, String, String)>,
    Form(pairs): Form<Vec<(String, String)>>,
) -> Result<Response, PageError> {
    let index = crate::server::deployments::schedule_index(&index)?;
    let full_name = format!("{flow}/{name}");
    let submitted: Submitted = pairs.into_iter().collect();
    let attempt = async {
        let update = schedules::read(&submitted)?;
        s.control.update_schedule(&full_name, index, update).await
    };
    match attempt.await {
        Ok(deployment) => {
            let here = format!("{}#schedule-{index}", deployment_path(&deployment));
            Ok(Redirect::to(&here).into_response())
        }
        Err(error) => {
            let deployment = s.control.deployment(&full_name)?;
            let error = crate::server::error::disclosed(error);
            let status = crate::server::error::status(error.kind);
            let refused = schedules::Refused {
                index,
                submitted: &submitted,
                error: &error,
            };
            let page = detail_page(&s, &deployment, &Submitted::new(), None, Some(&refused))?;
            Ok((status, page).into_response())
        }
    }
}

async fn set_paused(
    s: &AppState,
    full_name: &str,
    paused: bool,
    back: Back,
) -> Result<Response, PageError> {
    let deployment = s.control.set_deployment_paused(full_name, paused).await?;
    Ok(back.redirect(&deployment_path(&deployment)).into_response())
}

async fn pause(
    State(s): State<AppState>,
    Path((flow, name)): Path<(String, String)>,
    Form(back): Form<Back>,
) -> Result<Response, PageError> {
    set_paused(&s, &format!("{flow}/{name}"), true, back).await
}

async fn resume(
    State(s): State<AppState>,
    Path((flow, name)): Path<(String, String)>,
    Form(back): Form<Back>,
) -> Result<Response, PageError> {
    set_paused(&s, &format!("{flow}/{name}"), false, back).await
}

async fn delete(
    State(s): State<AppState>,
    Path((flow, name)): Path<(String, String)>,
    Form(back): Form<Back>,
) -> Result<Response, PageError> {
    s.control
        .delete_deployment(&format!("{flow}/{name}"))
        .await?;
    Ok(back.redirect("/deployments").into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn later(at: &str, offset: &str) -> Result<Option<Timestamp>, ApiError> {
        let submitted: Submitted = [
            ("start", "later"),
            ("scheduled_at", at),
            ("utc_offset_minutes", offset),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        start_time(&submitted)
    }

    #[test]
    fn a_later_start_is_made_utc_and_the_ends_of_time_are_refused() {
        let at = later("2026-12-07T09:30", "-60")
            .expect("a time")
            .expect("later");
        assert_eq!(at.to_rfc3339(), "2026-12-07T08:30:00+00:00");
        // Past what chrono holds once the offset is applied: refused, no panic.
        for (at, offset) in [
            ("+262142-12-31T23:59", "1440"),
            ("-262143-01-01T00:00", "-1"),
        ] {
            let refused = later(at, offset).expect_err(at);
            assert!(refused.to_string().contains("scheduled_at"), "{refused}");
        }
    }
}
