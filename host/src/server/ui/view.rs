//! The page frame and the pieces every page shows the same way: statuses
//! (a dot *and* a word, never colour alone), times, JSON, field errors.

use crate::model::{PoolStatus, QueueStatus, StateType, Timestamp, WorkerStatus};
use maud::{DOCTYPE, Markup, html};

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    Pools,
    Deployments,
    Runs,
    Plugins,
    None,
}

/// A whole page. `events` is the `/api/events` query the page listens to
/// (its `data-live` regions are re-fetched when something arrives).
pub fn page(title: &str, nav: Nav, events: Option<&str>, body: Markup) -> Markup {
    let link = |target: Nav, href: &str, text: &str| {
        html! {
            a href=(href) aria-current=[(nav == target).then_some("page")] { (text) }
        }
    };
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · host" }
                link rel="stylesheet" href=(super::APP_CSS.path);
                script src=(super::APP_JS.path) defer {}
            }
            body data-events=[events] data-now=(chrono::Utc::now().to_rfc3339()) {
                header.top {
                    a.brand href="/" { "host" }
                    nav {
                        (link(Nav::Pools, "/", "Work Pools"))
                        (link(Nav::Deployments, "/deployments", "Deployments"))
                        (link(Nav::Runs, "/runs", "Flow Runs"))
                        (link(Nav::Plugins, "/plugins", "Plugins"))
                    }
                    span.live #live-indicator hidden title="Receiving live updates" { "● live" }
                    @if LOGGED_IN.try_with(|l| *l).unwrap_or(false) {
                        form.inline.logout method="post" action="/logout" {
                            (csrf_field())
                            button type="submit" { "Log out" }
                        }
                    }
                }
                main { (body) }
            }
        }
    }
}

fn dot(class: &str, word: &str) -> Markup {
    html! { span.status.(class) { span.dot aria-hidden="true" {} (word) } }
}

pub fn pool_status(status: PoolStatus) -> Markup {
    match status {
        PoolStatus::Ready => dot("ok", "READY"),
        PoolStatus::NotReady => dot("bad", "NOT_READY"),
        PoolStatus::Paused => dot("paused", "PAUSED"),
    }
}

pub fn queue_status(status: QueueStatus) -> Markup {
    match status {
        QueueStatus::Ready => dot("ok", "READY"),
        QueueStatus::NotReady => dot("bad", "NOT_READY"),
        QueueStatus::Paused => dot("paused", "PAUSED"),
    }
}

pub fn worker_status(status: WorkerStatus) -> Markup {
    match status {
        WorkerStatus::Online => dot("ok", "ONLINE"),
        WorkerStatus::Offline => dot("bad", "OFFLINE"),
    }
}

pub fn state(state: StateType) -> Markup {
    let class = match state {
        StateType::Completed => "ok",
        StateType::Failed | StateType::Crashed => "bad",
        StateType::Running | StateType::Pending => "busy",
        StateType::Cancelling | StateType::Cancelled => "paused",
        StateType::Scheduled => "waiting",
    };
    html! { span.state.(class) data-state=(state.as_str()) { (state.as_str()) } }
}

/// A run's state: LATE for a SCHEDULED run the server marked past its
/// time (the word as well as the colour), else its type.
pub fn run_state(state: &crate::model::State) -> Markup {
    if state.state_type == StateType::Scheduled && state.name == crate::orchestration::LATE {
        return html! { span.state.bad data-state="LATE" title="SCHEDULED, past its time" { "LATE" } };
    }
    self::state(state.state_type)
}

/// A button that copies `text` to the clipboard (`app.js`).
pub fn copy_button(text: &str, label: &str) -> Markup {
    html! { button.copy type="button" data-copy=(text) { (label) } }
}

/// A time as "3 s ago", kept current by `app.js`; the exact time on hover.
pub fn ago(time: Timestamp) -> Markup {
    let now = chrono::Utc::now();
    html! {
        time datetime=(time.to_rfc3339()) title=(exact(time)) data-ago {
            (relative(now - time))
        }
    }
}

pub fn ago_or_never(time: Option<Timestamp>) -> Markup {
    match time {
        Some(time) => ago(time),
        None => html! { span.muted { "never" } },
    }
}

/// The same words `app.js` writes when it updates the time.
fn relative(delta: chrono::TimeDelta) -> String {
    let seconds = delta.num_seconds();
    let (amount, ahead) = (seconds.unsigned_abs(), seconds < 0);
    let text = match amount {
        0..60 => format!("{amount} s"),
        60..3600 => format!("{} min", amount / 60),
        3600..86_400 => format!("{} h", amount / 3600),
        _ => format!("{} d", amount / 86_400),
    };
    if ahead {
        format!("in {text}")
    } else {
        format!("{text} ago")
    }
}

pub fn exact(time: Timestamp) -> String {
    time.format("%Y-%m-%d %H:%M:%S%.3f UTC").to_string()
}

/// A time as a date and clock time in the reader's time zone: rendered in
/// UTC, rewritten by `app.js` to the browser's zone, UTC on hover.
pub fn local_time(time: Timestamp) -> Markup {
    html! {
        time datetime=(utc(time)) title=(exact(time)) data-local {
            (time.format("%Y-%m-%d %H:%M:%S UTC"))
        }
    }
}

/// RFC 3339 in UTC, to the microsecond: what `datetime` attributes hold.
pub fn utc(time: Timestamp) -> String {
    time.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// A length of time for people: "850 ms", "42 s", "3 min 5 s", "2 h 10 min",
/// "3 d 4 h" (the same words `app.js` writes for a running run).
pub fn duration(length: chrono::TimeDelta) -> String {
    let ms = length.num_milliseconds().max(0);
    let s = ms / 1000;
    match s {
        _ if ms < 1000 => format!("{ms} ms"),
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min {} s", s / 60, s % 60),
        3600..86_400 => format!("{} h {} min", s / 3600, s % 3600 / 60),
        _ => format!("{} d {} h", s / 86_400, s % 86_400 / 3600),
    }
}

/// A message the server wrote (a state's reason): `backticked` names as
/// code, RFC 3339 times as [`local_time`]s, the rest as text.
pub fn message(text: &str) -> Markup {
    static TIME: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        regex::Regex::new(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})")
            .expect("a valid pattern")
    });
    let plain = |part: &str| {
        let mut pieces = Vec::new();
        let mut at = 0;
        for found in TIME.find_iter(part) {
            pieces.push(html! { (&part[at..found.start()]) });
            pieces.push(match chrono::DateTime::parse_from_rfc3339(found.as_str()) {
                Ok(time) => local_time(time.with_timezone(&chrono::Utc)),
                Err(_) => html! { (found.as_str()) },
            });
            at = found.end();
        }
        pieces.push(html! { (&part[at..]) });
        html! { @for piece in pieces { (piece) } }
    };
    // Between backticks (odd parts) is code; an unpaired backtick stays text.
    let parts: Vec<&str> = text.split('`').collect();
    let paired = parts.len() % 2 == 1;
    html! {
        @for (i, part) in parts.iter().enumerate() {
            @if i % 2 == 1 && (paired || i + 1 < parts.len()) {
                code { (part) }
            } @else {
                @if i % 2 == 1 { "`" }
                (plain(part))
            }
        }
    }
}

pub fn json(value: &serde_json::Value) -> Markup {
    let text = serde_json::to_string_pretty(value).unwrap_or_default();
    html! { pre.json { (text) } }
}

pub fn limit(limit: Option<u32>) -> Markup {
    match limit {
        Some(n) => html! { (n) },
        None => html! { span.muted { "unlimited" } },
    }
}

/// A labelled form field with the server's error for it, if any, tied to
/// the input for screen readers.
pub fn field_error_wrap(id: &str, label: &str, error: Option<&str>, input: Markup) -> Markup {
    html! {
        div.field.invalid[error.is_some()] {
            label for=(id) { (label) }
            (input)
            @if let Some(error) = error {
                p.field-error #{ (id) "-error" } role="alert" data-field=(id) { (error) }
            }
        }
    }
}

/// Percent-encodes a query-string value.
pub fn query_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                out.push(byte as char)
            }
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

/// A path segment of a name the API allows (names have no `/`).
pub fn segment(text: &str) -> String {
    query_escape(text).replace('/', "%2F")
}

tokio::task_local! {
    /// The CSRF token of the request being answered (`ui::with_csrf_token`).
    pub static CSRF_TOKEN: String;
    /// Whether the request being answered came with a live session: its
    /// pages offer to end it.
    pub static LOGGED_IN: bool;
    /// Who the page is for (`ui::auth::require_login`): it offers only the
    /// actions they may take.
    pub static CALLER: crate::server::access::Caller;
}

/// Whether the page's reader may post to the UI route `route` on `pool`
/// (`server::access`'s table says who may). Outside a request, nobody.
pub fn may(route: &str, pool: Option<&str>) -> bool {
    let need = crate::server::access::need("POST", route);
    CALLER
        .try_with(|caller| caller.may(need, pool))
        .unwrap_or(false)
}

/// The hidden field every form posting to this server carries. Outside a
/// request's scope it is empty, and the form will be refused.
pub fn csrf_field() -> Markup {
    let token = CSRF_TOKEN.try_with(String::clone).unwrap_or_default();
    html! { input type="hidden" name="csrf" value=(token); }
}

/// A POST button, with `app.js` asking first when `confirm` is given.
pub fn action(path: &str, label: &str, back: &str, confirm: Option<&str>) -> Markup {
    html! {
        form.inline method="post" action=(path) data-confirm=[confirm] {
            input type="hidden" name="back" value=(back);
            (csrf_field())
            button.danger[confirm.is_some()] type="submit" { (label) }
        }
    }
}
