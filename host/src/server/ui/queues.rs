//! A pool's Work Queues tab: each queue's priority and concurrency limit
//! edited in place, Pause/Resume, pending and late counts, and the form
//! that creates a queue. A refused change comes back on the same tab with
//! the server's error next to the queue (or the form) it was for.

use super::pools::{parse_limit, pool_frame};
use super::view;
use super::{Back, PageError};
use crate::control::{QueuePatch, QueueSpec};
use crate::error::ApiError;
use crate::model::StateType;
use crate::server::{AppState, access};
use crate::store::RunFilter;
use axum::Router;
use axum::extract::{Form, Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::post;
use maud::{Markup, html};
use serde::Deserialize;
use std::collections::BTreeMap;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route(access::UI_CREATE_QUEUE, post(create))
        .route(access::UI_UPDATE_QUEUE, post(update))
        .route(access::UI_PAUSE_QUEUE, post(pause))
        .route(access::UI_RESUME_QUEUE, post(resume))
}

/// What a queue form held: shown again next to its error.
#[derive(Deserialize, Default, Clone)]
pub struct QueueForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    priority: String,
    #[serde(default)]
    concurrency_limit: String,
}

/// A refused form: which queue's (`None`: the create form), what it held, why.
pub struct Refused<'a> {
    queue: Option<&'a str>,
    form: &'a QueueForm,
    error: &'a ApiError,
}

fn tab_path(pool: &str) -> String {
    format!("/pools/{}?tab=queues", view::segment(pool))
}

pub fn queues_tab(
    s: &AppState,
    pool: &str,
    refused: Option<Refused<'_>>,
) -> Result<Markup, ApiError> {
    let queues = s.control.queues(pool)?;
    let pending = pending_by_queue(s, pool)?;
    let refused_for = |queue: Option<&str>| refused.as_ref().filter(|r| r.queue == queue);
    let back = tab_path(pool);
    // Queues are an admin's to change: others see them read-only.
    let edit = view::may(access::UI_UPDATE_QUEUE, Some(pool));
    let pause_resume = view::may(access::UI_PAUSE_QUEUE, Some(pool));
    let create = refused_for(None);
    let create_form = create.map_or_else(QueueForm::default, |r| r.form.clone());
    Ok(html! {
        table #queues {
            thead { tr {
                th { "Name" } th { "Priority" } th { "Status" } th { "Concurrency limit" }
                th { "Pending runs" } th { "Late runs" } th { "Last polled" } th { "Actions" }
            } }
            tbody {
                @for q in &queues {
                    @let name = &q.queue.name;
                    @let action = format!("/ui/pools/{}/queues/{}", view::segment(pool), view::segment(name));
                    @let form_id = format!("edit-queue-{name}");
                    @let mine = refused_for(Some(name.as_str()));
                    @let priority = mine.map_or_else(|| q.queue.priority.to_string(), |r| r.form.priority.clone());
                    @let limit = mine.map_or_else(|| q.queue.concurrency_limit.map(|l| l.to_string()).unwrap_or_default(), |r| r.form.concurrency_limit.clone());
                    tr data-queue=(name) {
                        td { (name) }
                        td { input.small name="priority" form=(form_id) inputmode="numeric" value=(priority)
                            aria-label={ "Priority of " (name) }; }
                        td { (view::queue_status(q.status)) }
                        td { input.small name="concurrency_limit" form=(form_id) inputmode="numeric" value=(limit)
                            placeholder="unlimited" aria-label={ "Concurrency limit of " (name) }; }
                        td { (pending.count(name)) }
                        td.late { (pending.late(name)) }
                        td { (view::ago_or_never(q.queue.last_polled)) }
                        td.actions {
                            @if edit {
                            form.inline #(form_id) method="post" action={ (action) "/update" } {
                                (view::csrf_field())
                                button type="submit" { "Save" }
                            }
                            " "
                            }
                            @if q.queue.paused && pause_resume {
                                (view::action(&format!("{action}/resume"), "Resume", &back, None))
                            } @else if !q.queue.paused && pause_resume {
                                (view::action(&format!("{action}/pause"), "Pause", &back, None))
                            }
                            @if let Some(r) = mine {
                                p.field-error role="alert" data-field=[r.error.field.as_deref()] { (r.error.message) }
                            }
                        }
                    }
                }
            }
        }
        @if view::may(access::UI_CREATE_QUEUE, Some(pool)) {
        section.card #create-queue {
            h2 { "Create a work queue" }
            @if let Some(r) = create { p.error role="alert" data-field=[r.error.field.as_deref()] { (r.error.message) } }
            form method="post" action={ "/ui/pools/" (view::segment(pool)) "/queues" } {
                (view::csrf_field())
                (view::field_error_wrap("queue-name", "Name", None, html! {
                    input #queue-name name="name" required value=(create_form.name);
                }))
                (view::field_error_wrap("queue-priority", "Priority (1 is the highest; empty: after the others)", None, html! {
                    input #queue-priority name="priority" inputmode="numeric" value=(create_form.priority);
                }))
                (view::field_error_wrap("queue-limit", "Concurrency limit (empty: unlimited)", None, html! {
                    input #queue-limit name="concurrency_limit" inputmode="numeric" value=(create_form.concurrency_limit);
                }))
                button type="submit" { "Create queue" }
            }
        }
        }
    })
}

fn parse_priority(text: &str) -> Result<Option<u32>, ApiError> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    match text.parse() {
        Ok(0) | Err(_) => Err(ApiError::bad_request(
            "priority",
            format!("priority: {text:?} is not a whole number from 1 (the highest)"),
        )),
        Ok(n) => Ok(Some(n)),
    }
}

/// The pool's page on its Work Queues tab with the refused form's error.
fn refused_page(s: &AppState, pool: &str, refused: Refused<'_>) -> Result<Response, PageError> {
    let view = s.control.pool(pool)?;
    let status = crate::server::error::status(refused.error.kind);
    let content = queues_tab(s, pool, Some(refused))?;
    Ok((status, pool_frame(&view, "queues", content)).into_response())
}

async fn create(
    State(s): State<AppState>,
    Path(pool): Path<String>,
    Form(form): Form<QueueForm>,
) -> Result<Response, PageError> {
    let attempt = async {
        let spec = QueueSpec {
            name: form.name.trim().to_string(),
            description: String::new(),
            priority: parse_priority(&form.priority)?,
            concurrency_limit: parse_limit(&form.concurrency_limit)?,
            paused: false,
        };
        s.control.create_queue(&pool, spec).await
    };
    match attempt.await {
        Ok(_) => Ok(Redirect::to(&tab_path(&pool)).into_response()),
        Err(error) => {
            let error = crate::server::error::disclosed(error);
            refused_page(
                &s,
                &pool,
                Refused {
                    queue: None,
                    form: &form,
                    error: &error,
                },
            )
        }
    }
}

async fn update(
    State(s): State<AppState>,
    Path((pool, queue)): Path<(String, String)>,
    Form(form): Form<QueueForm>,
) -> Result<Response, PageError> {
    let attempt = async {
        let patch = QueuePatch {
            priority: parse_priority(&form.priority)?,
            // Empty is "unlimited", as the field says.
            concurrency_limit: Some(parse_limit(&form.concurrency_limit)?),
            ..QueuePatch::default()
        };
        s.control.update_queue(&pool, &queue, patch).await
    };
    match attempt.await {
        Ok(_) => Ok(Redirect::to(&tab_path(&pool)).into_response()),
        Err(error) => {
            let error = crate::server::error::disclosed(error);
            refused_page(
                &s,
                &pool,
                Refused {
                    queue: Some(&queue),
                    form: &form,
                    error: &error,
                },
            )
        }
    }
}

async fn set_paused(
    s: &AppState,
    pool: &str,
    queue: &str,
    paused: bool,
    back: Back,
) -> Result<Response, PageError> {
    let patch = QueuePatch {
        paused: Some(paused),
        ..QueuePatch::default()
    };
    s.control.update_queue(pool, queue, patch).await?;
    Ok(back.redirect(&tab_path(pool)).into_response())
}

async fn pause(
    State(s): State<AppState>,
    Path((pool, queue)): Path<(String, String)>,
    Form(back): Form<Back>,
) -> Result<Response, PageError> {
    set_paused(&s, &pool, &queue, true, back).await
}

async fn resume(
    State(s): State<AppState>,
    Path((pool, queue)): Path<(String, String)>,
    Form(back): Form<Back>,
) -> Result<Response, PageError> {
    set_paused(&s, &pool, &queue, false, back).await
}

/// SCHEDULED runs per queue, read from the state index (the few waiting
/// runs, not the pool's whole history).
struct Pending {
    counts: BTreeMap<String, usize>,
    /// Of those, the ones past their time (named Late by the server).
    late: BTreeMap<String, usize>,
    capped: bool,
}

const PENDING_SCAN: usize = 1000;

impl Pending {
    fn count(&self, queue: &str) -> String {
        self.show(self.counts.get(queue).copied().unwrap_or(0))
    }

    fn late(&self, queue: &str) -> String {
        self.show(self.late.get(queue).copied().unwrap_or(0))
    }

    fn show(&self, n: usize) -> String {
        if self.capped {
            format!("{n}+")
        } else {
            n.to_string()
        }
    }
}

fn pending_by_queue(s: &AppState, pool: &str) -> Result<Pending, ApiError> {
    let filter = RunFilter {
        states: vec![StateType::Scheduled],
        ..RunFilter::default()
    };
    let page = s.control.runs(&filter, None, PENDING_SCAN)?;
    let mut counts = BTreeMap::new();
    let mut late = BTreeMap::new();
    for run in page.runs.iter().filter(|r| r.pool == pool) {
        *counts.entry(run.queue.clone()).or_insert(0) += 1;
        if run.state.name == crate::orchestration::LATE {
            *late.entry(run.queue.clone()).or_insert(0) += 1;
        }
    }
    Ok(Pending {
        counts,
        late,
        capped: page.next_cursor.is_some(),
    })
}
