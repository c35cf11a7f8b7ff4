//! The installed infrastructure types.

use super::Page;
use super::view::{self, Nav};
use crate::server::AppState;
use axum::Router;
use axum::extract::State;
use axum::routing::get;
use maud::html;

pub fn routes() -> Router<AppState> {
    Router::new().route("/plugins", get(list))
}

async fn list(State(s): State<AppState>) -> Page {
    let catalog = s.control.catalog();
    let body = html! {
        h1 { "Plugins" }
        p.muted { "Each infrastructure type is a WebAssembly component; add one with "
            code { "host plugin new" } " and " code { "--plugin-dir" } "." }
        @for (name, plugin) in &catalog.plugins {
            section.card.plugin #{ "plugin-" (name) } {
                h2 { (name) " " span.muted { (plugin.version) } }
                p { (plugin.description) }
                dl.details {
                    dt { "Contract" } dd { (plugin.contract_version) }
                    dt { "Capabilities" } dd {
                        @if plugin.capabilities.is_empty() { span.muted { "none (pure computation)" } }
                        @for (i, c) in plugin.capabilities.iter().enumerate() {
                            @if i > 0 { ", " } code { (c) }
                        }
                    }
                    dt { "Source" } dd { (plugin.source) }
                }
                @if let Some(template) = catalog.templates.get(name) {
                    h3 { "Job variables" }
                    (super::form::variables_table(&template["variables"]))
                    details {
                        summary { "Default base job template (JSON)" }
                        (view::json(template))
                    }
                }
            }
        }
    };
    Ok(view::page("Plugins", Nav::Plugins, None, body))
}
