//! A pool's Details tab made editable (an admin's, like the API's PATCH):
//! description, concurrency limit and the base job template as JSON. A
//! refused form comes back on the tab with the server's error beside its
//! field, and nothing saved.

use super::pools::{details_tab, parse_limit, pool_frame};
use super::view;
use super::{Page, PageError};
use crate::control::{PoolPatch, PoolView};
use crate::error::ApiError;
use crate::server::{AppState, access};
use axum::Router;
use axum::extract::{Form, Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::post;
use maud::{Markup, html};
use serde::Deserialize;

pub fn routes() -> Router<AppState> {
    Router::new().route(access::UI_UPDATE_POOL, post(update))
}

/// What the edit form held: shown again next to its error.
#[derive(Deserialize, Default, Clone)]
pub struct PoolForm {
    #[serde(default)]
    description: String,
    #[serde(default)]
    concurrency_limit: String,
    #[serde(default)]
    base_job_template: String,
}

/// A refused edit: what it held and why.
pub struct Refused<'a> {
    pub form: &'a PoolForm,
    pub error: &'a ApiError,
}

const FIELDS: [&str; 3] = ["description", "concurrency_limit", "base_job_template"];

/// The edit form, filled with the pool's values or with the refused ones.
pub fn edit_form(view: &PoolView, refused: Option<&Refused<'_>>) -> Markup {
    let pool = &view.pool;
    let form = refused.map_or_else(
        || PoolForm {
            description: pool.description.clone(),
            concurrency_limit: pool
                .concurrency_limit
                .map(|l| l.to_string())
                .unwrap_or_default(),
            base_job_template: serde_json::to_string_pretty(&pool.base_job_template)
                .unwrap_or_default(),
        },
        |r| r.form.clone(),
    );
    // `base_job_template.variables.properties...` is the template's too.
    let field_of = |e: &ApiError| {
        let field = e.field.as_deref()?;
        FIELDS
            .into_iter()
            .find(|f| field == *f || field.starts_with(&format!("{f}.")))
    };
    let error_on = |name: &str| {
        refused
            .map(|r| r.error)
            .filter(|e| field_of(e) == Some(name))
            .map(|e| e.message.as_str())
    };
    let general = refused.map(|r| r.error).filter(|e| field_of(e).is_none());
    let described = |name: &str| error_on(name).map(|_| format!("pool-{name}-error"));
    let invalid = |name: &str| error_on(name).map(|_| "true");
    html! {
        details.card #edit-pool open[refused.is_some()] {
            summary { "Edit pool" }
            @if let Some(e) = general { p.error role="alert" { (e.message) } }
            form method="post" action={ "/ui/pools/" (view::segment(&pool.name)) "/update" } {
                (view::csrf_field())
                (view::field_error_wrap("pool-description", "Description", error_on("description"), html! {
                    input #pool-description name="description" value=(form.description)
                        aria-invalid=[invalid("description")] aria-describedby=[described("description")];
                }))
                (view::field_error_wrap("pool-concurrency_limit", "Concurrency limit (empty: unlimited)",
                    error_on("concurrency_limit"), html! {
                    input #pool-concurrency_limit name="concurrency_limit" inputmode="numeric"
                        value=(form.concurrency_limit)
                        aria-invalid=[invalid("concurrency_limit")] aria-describedby=[described("concurrency_limit")];
                }))
                (view::field_error_wrap("pool-base_job_template", "Base job template (JSON)",
                    error_on("base_job_template"), html! {
                    textarea.template #pool-base_job_template name="base_job_template" spellcheck="false"
                        aria-invalid=[invalid("base_job_template")]
                        aria-describedby=[described("base_job_template")] { (form.base_job_template) }
                    p.hint { "Its " code { "variables" } " (a JSON Schema) are what deployments and runs may set; "
                        code { "job_configuration" } " turns them into the plugin's configuration." }
                }))
                button type="submit" { "Save pool" }
            }
        }
    }
}

async fn update(
    State(s): State<AppState>,
    Path(name): Path<String>,
    Form(form): Form<PoolForm>,
) -> Result<Response, PageError> {
    let attempt = async {
        let concurrency_limit = parse_limit(&form.concurrency_limit)?;
        let base_job_template = serde_json::from_str(&form.base_job_template).map_err(|e| {
            ApiError::bad_request(
                "base_job_template",
                format!("base_job_template: not valid JSON: {e}"),
            )
        })?;
        let patch = PoolPatch {
            description: Some(form.description.trim().to_string()),
            base_job_template: Some(base_job_template),
            concurrency_limit: Some(concurrency_limit),
            paused: None,
        };
        s.control.update_pool(&name, patch).await
    };
    match attempt.await {
        Ok(view) => Ok(Redirect::to(&format!(
            "/pools/{}?tab=details",
            view::segment(&view.pool.name)
        ))
        .into_response()),
        Err(error) => {
            let error = crate::server::error::disclosed(error);
            let status = crate::server::error::status(error.kind);
            let page: Page = (|| {
                let view = s.control.pool(&name)?;
                let refused = Refused {
                    form: &form,
                    error: &error,
                };
                Ok(pool_frame(
                    &view,
                    "details",
                    details_tab(&view, Some(&refused)),
                ))
            })();
            Ok((status, page?).into_response())
        }
    }
}
