//! Makes the HTTP requests its job configuration lists, through the SDK's
//! client over `wasi:http`, and answers `start` with what each one got:
//!
//! `{"requests": [{"method", "url", "headers": [[name, value]], "body",
//! "follow_redirects": n, "attempts": n}]}` gives the handle
//! `{"results": [{"status", "headers", "body", "error", "redirects": [url]}]}`, bodies cut
//! to 512 bytes. Following a redirect is the guest's own new request, which
//! the grant judges like any other. `{flow_run_id}` in a URL, header value or
//! body becomes the job's run id (a plugin tagging what it makes).
use host_plugin_sdk::http::{self, Client, Request};
use host_plugin_sdk::{Exit, Info, Job, Plugin, Result, Status, export_plugin};
use serde::{Deserialize, Serialize};
use std::time::Duration;

#[derive(Deserialize)]
pub struct Config {
    #[serde(default)]
    requests: Vec<Wanted>,
    /// All sent before any response is read (no redirects, no retries).
    #[serde(default)]
    concurrent: bool,
}

#[derive(Deserialize)]
pub struct Wanted {
    #[serde(default = "get")]
    method: String,
    url: String,
    #[serde(default)]
    headers: Vec<(String, String)>,
    #[serde(default)]
    body: String,
    #[serde(default)]
    follow_redirects: u32,
    /// Through a `Client` with this many attempts (retries on 429/5xx).
    attempts: Option<u32>,
}

fn get() -> String {
    "GET".into()
}

/// The handle: an object, as the SDK's handle envelope wants.
#[derive(Serialize, Deserialize)]
pub struct Results {
    results: Vec<Got>,
}

#[derive(Serialize, Deserialize, Default)]
pub struct Got {
    status: Option<u16>,
    headers: Vec<(String, String)>,
    body: String,
    error: Option<String>,
    redirects: Vec<String>,
}

fn one(wanted: &Wanted, run: &str) -> Got {
    let tagged = |text: &str| text.replace("{flow_run_id}", run);
    let mut got = Got::default();
    let mut url = tagged(&wanted.url);
    let mut hops = 0;
    loop {
        let mut request = Request::new(&wanted.method, &url).body(tagged(&wanted.body).as_bytes());
        request.headers = wanted
            .headers
            .iter()
            .map(|(name, value)| (name.clone(), tagged(value)))
            .collect();
        let outcome = match wanted.attempts {
            Some(attempts) => {
                let mut client = Client::new(&url);
                client.max_attempts = attempts;
                client.backoff = Duration::from_millis(50);
                client.send(&request)
            }
            None => http::send(&request),
        };
        match outcome {
            Ok(response) => {
                let location = response.header("location").map(String::from);
                if (300..400).contains(&response.status) && hops < wanted.follow_redirects {
                    if let Some(location) = location {
                        hops += 1;
                        got.redirects.push(location.clone());
                        url = location;
                        continue;
                    }
                }
                let mut body = response.text();
                body.truncate(body.floor_char_boundary(512));
                got.status = Some(response.status);
                got.headers = response.headers;
                got.body = body;
            }
            Err(error) => got.error = Some(error.to_string()),
        }
        return got;
    }
}

fn all_at_once(wanted: &[Wanted]) -> Vec<Got> {
    let sent: Vec<_> = wanted
        .iter()
        .map(|w| http::start(&Request::new(&w.method, &w.url).body(w.body.as_bytes())))
        .collect();
    sent.into_iter()
        .map(|sent| {
            let mut got = Got::default();
            match sent.and_then(http::InFlight::finish) {
                Ok(response) => {
                    got.status = Some(response.status);
                    got.body = response.text();
                }
                Err(error) => got.error = Some(error.to_string()),
            }
            got
        })
        .collect()
}

pub struct HttpClient;

impl Plugin for HttpClient {
    type Config = Config;
    type Handle = Results;

    fn info() -> Info {
        use host_plugin_sdk::template::Template;
        let mut info = guest_common::info("http-client", &["http"]);
        // `requests` is a variable so `host plugin test --variables` can give
        // the example run some.
        info.default_base_job_template = Template::new()
            .variable(
                "requests",
                serde_json::json!({"type": "array", "description": "The requests start makes", "default": []}),
            )
            .build();
        info
    }

    fn start(job: Job<Config>) -> Result<Results> {
        if job.config.concurrent {
            return Ok(Results {
                results: all_at_once(&job.config.requests),
            });
        }
        Ok(Results {
            results: job
                .config
                .requests
                .iter()
                .map(|wanted| one(wanted, &job.flow_run_id))
                .collect(),
        })
    }

    fn wait(_handle: Results) -> Result<Exit> {
        Ok(Exit::code(0))
    }

    fn inspect(_handle: Results) -> Result<Status> {
        Ok(Status::Exited(Exit::code(0)))
    }

    fn stop(_handle: Results, _grace: u32) -> Result<()> {
        Ok(())
    }

    fn destroy(_handle: Results) -> Result<()> {
        Ok(())
    }
}

export_plugin!(HttpClient);
