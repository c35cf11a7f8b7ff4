//! The web UI with named tokens: each role's pages offer only what it may
//! do, an action posted anyway is refused, a revoked token's session ends.

use super::{BOOT, Fixture};
use serde_json::{Value, json};

/// A UI session of `token`: the cookie (`name=value`).
async fn login(web: &reqwest::Client, url: &str, token: &str) -> String {
    let page = web
        .get(format!("{url}/login"))
        .send()
        .await
        .expect("login page");
    let csrf = csrf_of(&page.text().await.expect("page"));
    let answer = web
        .post(format!("{url}/login"))
        .form(&[("token", token), ("next", "/"), ("csrf", &csrf)])
        .send()
        .await
        .expect("login");
    assert_eq!(answer.status(), 303, "logged in");
    let cookie = answer.headers()["set-cookie"].to_str().expect("cookie");
    cookie.split(';').next().expect("pair").to_string()
}

fn csrf_of(html: &str) -> String {
    let marker = r#"name="csrf" value=""#;
    let at = html
        .find(marker)
        .unwrap_or_else(|| panic!("no csrf in {html}"))
        + marker.len();
    html[at..at + html[at..].find('"').expect("quote")].to_string()
}

async fn page(web: &reqwest::Client, url: &str, path: &str, cookie: &str) -> (u16, String) {
    let answer = web
        .get(format!("{url}{path}"))
        .header("cookie", cookie)
        .send()
        .await
        .expect("page");
    (answer.status().as_u16(), answer.text().await.expect("body"))
}

#[tokio::test]
async fn the_ui_shows_each_role_only_what_it_may_do() {
    let fixture = Fixture::new().await;
    let url = &fixture.server.url;
    let web = crate::common::web_builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let run = fixture
        .admin("POST", "/api/deployments/f/d/runs", json!({}))
        .await;
    let run_page = format!("/runs/{}", run["id"].as_str().expect("id"));
    let sessions = [
        ("bootstrap", login(&web, url, BOOT).await),
        ("dep", login(&web, url, fixture.secret("dep")).await),
        ("view", login(&web, url, fixture.secret("view")).await),
    ];
    // What each page offers: (path, the action's mark, who sees it).
    let offers = [
        ("/", r#"action="/ui/pools""#, &["bootstrap"][..]),
        ("/", "/pause", &["bootstrap"][..]),
        ("/pools/p1", "/pause", &["bootstrap"][..]),
        ("/deployments/f/d", "/run\"", &["bootstrap", "dep"][..]),
        ("/deployments/f/d2", "/run\"", &["bootstrap"][..]),
        (run_page.as_str(), "/cancel", &["bootstrap", "dep"][..]),
    ];
    for (path, mark, shown_to) in offers {
        for (who, cookie) in &sessions {
            let (status, html) = page(&web, url, path, cookie).await;
            assert_eq!(status, 200, "{who} {path}");
            assert_eq!(
                html.contains(mark),
                shown_to.contains(who),
                "{who} {path} {mark}"
            );
        }
    }
    // A viewer's session posting an action anyway (a form it made itself).
    let (_, home) = page(&web, url, "/", &sessions[2].1).await;
    let csrf = csrf_of(&home);
    let answer = web
        .post(format!("{url}/ui/pools/p1/pause"))
        .header("cookie", &sessions[2].1)
        .form(&[("csrf", csrf.as_str()), ("back", "/")])
        .send()
        .await
        .expect("post");
    assert_eq!(answer.status(), 403);
    let pool = fixture
        .admin("GET", "/api/work-pools/p1", Value::Null)
        .await;
    assert_eq!(pool["paused"], false, "nothing changed");
    // Its token revoked, the session ends with it.
    let (status, _) = fixture
        .call("DELETE", "/api/tokens/view", None, Some(BOOT))
        .await;
    assert_eq!(status, 204);
    let (status, _) = page(&web, url, "/", &sessions[2].1).await;
    assert_eq!(status, 303, "back to the login form");
}
