//! The dashboard at the top of the home page (Prefect's Dashboard): flow
//! runs of the last 24 hours by state, a bar per hour drawn as SVG by the
//! server; the Late runs and the deployments with Late or failing runs; and
//! each pool's health.

use super::view;
use crate::control::PoolView;
use crate::control::dashboard::{DashboardView, HOURS};
use crate::error::ApiError;
use crate::model::StateType;
use crate::server::AppState;
use maud::{Markup, html};

/// The chart's groups of states, bottom to top: (class, label, states).
const GROUPS: [(&str, &str, &[StateType]); 4] = [
    ("completed", "Completed", &[StateType::Completed]),
    (
        "failed",
        "Failed or crashed",
        &[StateType::Failed, StateType::Crashed],
    ),
    (
        "running",
        "Pending or running",
        &[
            StateType::Pending,
            StateType::Running,
            StateType::Cancelling,
        ],
    ),
    ("other", "Cancelled", &[StateType::Cancelled]),
];

pub fn section(s: &AppState, pools: &[PoolView]) -> Result<Markup, ApiError> {
    let dashboard = s.control.dashboard()?;
    Ok(html! {
        div.dashboard #dashboard {
            section.card #runs-by-state {
                h2 { "Flow runs, last 24 h" }
                (chart(&dashboard))
                ul.legend {
                    @for (class, label, _) in GROUPS {
                        li { i.(class) style=(legend_colour(class)) {} (label) }
                    }
                }
                p.counts {
                    @for state in StateType::ALL {
                        @let total = dashboard.counts.total(state);
                        @if total > 0 {
                            span data-count=(state.as_str()) { (view::state(state)) " " (total) } " "
                        }
                    }
                    @if StateType::ALL.iter().all(|s| dashboard.counts.total(*s) == 0) {
                        span.muted { "No flow runs in the last 24 h." }
                    }
                }
                @if dashboard.counts.truncated { p.muted { "Counts cut short: more runs than one page reads." } }
            }
            section.card #late-runs {
                h2 { "Late runs" }
                p.big data-late=(dashboard.late) { (dashboard.late) }
                @if dashboard.troubled.is_empty() {
                    p.muted { "No deployment has Late runs or failed in the last 24 h." }
                } @else {
                    table #troubled {
                        thead { tr { th { "Deployment" } th { "Late" } th { "Failed (24 h)" } } }
                        tbody {
                            @for (deployment, trouble) in &dashboard.troubled {
                                tr data-deployment=(deployment) {
                                    td { a href={ "/deployments/" (deployment_path(deployment)) } { (deployment) } }
                                    td.late { (trouble.late) }
                                    td.failed { (trouble.failed) }
                                }
                            }
                        }
                    }
                }
            }
            section.card #pool-health {
                h2 { "Pool health" }
                @if pools.is_empty() {
                    p.muted { "No work pools." }
                } @else {
                    table {
                        thead { tr { th { "Pool" } th { "Status" } th { "Workers online" } } }
                        tbody {
                            @for p in pools {
                                tr data-pool=(p.pool.name) {
                                    td { a href={ "/pools/" (view::segment(&p.pool.name)) } { (p.pool.name) } }
                                    td { (view::pool_status(p.status)) }
                                    td.online { (p.workers_online) }
                                }
                            }
                        }
                    }
                }
            }
        }
    })
}

fn legend_colour(class: &str) -> &'static str {
    match class {
        "completed" => "background: var(--ok)",
        "failed" => "background: var(--bad)",
        "running" => "background: var(--busy)",
        _ => "background: #c9ced8",
    }
}

/// `flow/name` as a path, each part escaped.
fn deployment_path(full_name: &str) -> String {
    full_name
        .split('/')
        .map(view::segment)
        .collect::<Vec<_>>()
        .join("/")
}

/// One stacked bar per hour, scaled to the busiest hour; each bar's title
/// says its hour and counts (the browser shows it on hover).
fn chart(dashboard: &DashboardView) -> Markup {
    let per_group = |group: &[StateType], hour: usize| -> u64 {
        dashboard
            .counts
            .buckets
            .iter()
            .filter(|(state, _)| group.contains(state))
            .map(|(_, counts)| counts.get(hour).copied().unwrap_or(0))
            .sum()
    };
    let totals: Vec<u64> = (0..HOURS)
        .map(|h| GROUPS.iter().map(|(_, _, g)| per_group(g, h)).sum())
        .collect();
    let busiest = totals.iter().copied().max().unwrap_or(0).max(1) as f64;
    let (width, height, gap) = (10.0, 60.0, 2.0);
    html! {
        svg.hours viewBox={ "0 0 " (HOURS as f64 * (width + gap)) " " (height) }
            preserveAspectRatio="none" role="img" aria-label="Flow runs per hour, last 24 hours" {
            @for hour in 0..HOURS {
                @let x = hour as f64 * (width + gap);
                @let start = dashboard.since + chrono::Duration::hours(hour as i64);
                g data-hour=(hour) data-total=(totals[hour]) {
                    title { (start.format("%H:00 UTC")) ": " (totals[hour]) " runs" }
                    rect.other x=(x) y="0" width=(width) height=(height) fill-opacity="0.15" {}
                    @let mut top = height;
                    @for (class, _, group) in GROUPS {
                        @let count = per_group(group, hour);
                        @if count > 0 {
                            @let h = count as f64 / busiest * height;
                            @let y = { top -= h; top };
                            rect.(class) x=(x) y=(format!("{y:.2}")) width=(width) height=(format!("{h:.2}")) {}
                        }
                    }
                }
            }
        }
    }
}
