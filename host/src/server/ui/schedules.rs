//! A deployment's schedules on its page: each said in words with its next
//! run times, turned on or off (Prefect's toggle), and edited (its cron or
//! interval), the server's refusal shown beside the field.

use super::form::Submitted;
use super::view;
use crate::control::ScheduleUpdate;
use crate::control::schedule_words;
use crate::control::scheduler::next_occurrence;
use crate::error::ApiError;
use crate::model::{Deployment, Schedule};
use maud::{Markup, html};

/// How many coming run times each schedule lists.
const NEXT_TIMES: usize = 5;

/// A schedule form the server refused: which schedule, and why.
pub struct Refused<'a> {
    pub index: usize,
    pub submitted: &'a Submitted,
    pub error: &'a ApiError,
}

pub fn update_path(d: &Deployment, index: usize) -> String {
    format!(
        "/ui/deployments/{}/{}/schedules/{index}",
        view::segment(&d.flow),
        view::segment(&d.name)
    )
}

/// The next `NEXT_TIMES` times of an active schedule, in its time zone.
fn next_times(schedule: &Schedule) -> Vec<String> {
    let tz: chrono_tz::Tz = schedule.timezone.parse().unwrap_or(chrono_tz::UTC);
    let mut times = Vec::new();
    let mut after = chrono::Utc::now();
    while times.len() < NEXT_TIMES {
        let Some(next) = next_occurrence(schedule, after) else {
            break;
        };
        times.push(
            next.with_timezone(&tz)
                .format("%a %Y-%m-%d %H:%M %Z")
                .to_string(),
        );
        after = next;
    }
    times
}

/// The Schedules section of a deployment page.
pub fn section(d: &Deployment, refused: Option<&Refused<'_>>) -> Markup {
    let editable = view::may(crate::server::access::UI_UPDATE_SCHEDULE, Some(&d.pool));
    html! {
        section.card #schedules {
            h2 { "Schedules" }
            @if d.schedules.is_empty() {
                p.empty { "No schedules: runs are made by hand (Run below, or " code { "host deployment run" } ")." }
            }
            @for (i, s) in d.schedules.iter().enumerate() {
                @let refused = refused.filter(|r| r.index == i);
                div.schedule #{ "schedule-" (i) } data-schedule=(i) {
                    div.title-row {
                        p.schedule-words { strong { (schedule_words::describe(s)) } }
                        @if s.active {
                            span.status.ok.schedule-active { span.dot aria-hidden="true" {} "ACTIVE" }
                        } @else {
                            span.status.paused.schedule-active { span.dot aria-hidden="true" {} "INACTIVE" }
                        }
                        @if editable {
                            form.inline method="post" action=(update_path(d, i)) {
                                input type="hidden" name="active" value=(if s.active { "false" } else { "true" });
                                (view::csrf_field())
                                button type="submit" role="switch" aria-checked=(s.active)
                                    aria-label={ "Schedule " (i) " active" } {
                                    (if s.active { "Turn off" } else { "Turn on" })
                                }
                            }
                        }
                    }
                    @if d.paused {
                        p.muted { "The deployment is paused: no schedule makes runs until it is resumed." }
                    } @else if s.active {
                        p.muted { "Next runs:" }
                        ul.next-runs {
                            @for time in next_times(s) { li { (time) } }
                        }
                    } @else {
                        p.muted { "Inactive: it makes no runs." }
                    }
                    @if editable { (edit_form(d, i, s, refused)) }
                }
            }
        }
    }
}

/// The edit form: a cron or an interval, and the time zone.
fn edit_form(d: &Deployment, i: usize, s: &Schedule, refused: Option<&Refused<'_>>) -> Markup {
    let field = if s.cron.is_some() {
        "cron"
    } else {
        "interval_seconds"
    };
    let current = match (&s.cron, s.interval_seconds) {
        (Some(cron), _) => cron.clone(),
        (None, Some(seconds)) => seconds.to_string(),
        _ => String::new(),
    };
    let submitted = |name: &str, fallback: &str| {
        refused
            .and_then(|r| r.submitted.get(name).cloned())
            .unwrap_or_else(|| fallback.to_string())
    };
    let error_of = |name: &str| {
        refused
            .map(|r| r.error)
            .filter(|e| e.field.as_deref() == Some(name))
            .map(|e| e.message.as_str())
    };
    let id = |name: &str| format!("schedule-{i}-{name}");
    let (label, value) = if field == "cron" {
        ("Cron", submitted("cron", &current))
    } else {
        (
            "Interval (seconds)",
            submitted("interval_seconds", &current),
        )
    };
    let timezone = submitted("timezone", &s.timezone);
    // An error no field shows (a race, a vanished deployment) goes above.
    let general = refused.map(|r| r.error).filter(|e| {
        !matches!(
            e.field.as_deref(),
            Some("cron" | "interval_seconds" | "timezone")
        )
    });
    html! {
        details.edit-schedule #{ "edit-schedule-" (i) } open[refused.is_some()] {
            summary { "Edit schedule" }
            @if let Some(e) = general { p.error role="alert" { (e.message) } }
            form method="post" action=(update_path(d, i)) {
                (view::csrf_field())
                (edit_field(&id(field), field, label, &value, error_of(field)))
                (edit_field(&id("timezone"), "timezone", "Time zone", &timezone, error_of("timezone")))
                button type="submit" { "Save schedule" }
            }
        }
    }
}

fn edit_field(id: &str, name: &str, label: &str, value: &str, error: Option<&str>) -> Markup {
    let described = error.map(|_| format!("{id}-error"));
    view::field_error_wrap(
        id,
        label,
        error,
        html! {
            input id=(id) name=(name) value=(value) required
                aria-invalid=[error.map(|_| "true")] aria-describedby=[described];
        },
    )
}

/// The submitted schedule form as the API's update: empty fields change nothing.
pub fn read(submitted: &Submitted) -> Result<ScheduleUpdate, ApiError> {
    let text = |name: &str| {
        submitted
            .get(name)
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty())
    };
    let active = match text("active").as_deref() {
        None => None,
        Some("true") => Some(true),
        Some("false") => Some(false),
        Some(other) => {
            return Err(ApiError::bad_request(
                "active",
                format!("active: {other:?} is neither true nor false"),
            ));
        }
    };
    let interval_seconds = match text("interval_seconds") {
        None => None,
        Some(seconds) => Some(seconds.parse::<u64>().map_err(|_| {
            ApiError::bad_request(
                "interval_seconds",
                format!("interval_seconds: {seconds:?} is not a whole number of seconds"),
            )
        })?),
    };
    Ok(ScheduleUpdate {
        active,
        cron: text("cron"),
        interval_seconds,
        timezone: text("timezone"),
    })
}
