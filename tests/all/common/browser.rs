//! A real headless Chromium, driven over WebDriver by Debian's
//! `chromedriver`, or a printed reason to skip (never a silent pass).

use fantoccini::{Client, ClientBuilder, Locator};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

pub struct Browser {
    pub client: Client,
    driver: Child,
    /// One browser at a time: several on two cores make every page slow.
    _turn: tokio::sync::MutexGuard<'static, ()>,
}

// Tests run on their own runtimes; tokio's mutex serves them all.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

impl Browser {
    /// A fresh browser (own profile: no cookies from other tests), or `None`
    /// with the reason printed.
    pub async fn start(test: &str) -> Option<Browser> {
        Self::start_in_zone(test, None).await
    }

    /// A fresh browser whose time zone is `zone` (an IANA name such as
    /// `Asia/Kolkata`; `None`: the machine's).
    pub async fn start_in_zone(test: &str, zone: Option<&str>) -> Option<Browser> {
        for path in [CHROMIUM, CHROMEDRIVER] {
            if !std::path::Path::new(path).exists() {
                eprintln!(
                    "SKIPPED {test}: no {path}; .ci/run installs Debian's chromium and chromium-driver"
                );
                return None;
            }
        }
        let turn = ONE_AT_A_TIME.lock().await;
        let port = free_port();
        // Its own process group: the browsers it starts go with it.
        let mut driver = Command::new(CHROMEDRIVER);
        if let Some(zone) = zone {
            // Chromium takes its zone from the environment it inherits.
            driver.env("TZ", zone);
        }
        let driver = driver
            .arg(format!("--port={port}"))
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({
                "binary": CHROMIUM,
                "args": ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                         "--disable-gpu", "--window-size=1280,1000"]
            }),
        );
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let connector = hyper_util::client::legacy::connect::HttpConnector::new();
            match ClientBuilder::new(connector)
                .capabilities(capabilities.clone())
                .connect(&url)
                .await
            {
                Ok(client) => {
                    return Some(Browser {
                        client,
                        driver,
                        _turn: turn,
                    });
                }
                Err(e) if Instant::now() > deadline => panic!("chromedriver did not start: {e}"),
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    pub async fn goto(&self, url: &str) {
        self.client.goto(url).await.expect("goto");
    }

    /// The text of the first element matching `css`, once there is one.
    pub async fn text(&self, css: &str) -> String {
        self.wait_text(css, Duration::from_secs(30), |_| true).await
    }

    /// Waits until the text of `css` satisfies `check` (the page may
    /// update it live); panics with what it last saw after `timeout`.
    pub async fn wait_text(
        &self,
        css: &str,
        timeout: Duration,
        check: impl Fn(&str) -> bool,
    ) -> String {
        let deadline = Instant::now() + timeout;
        let mut last = String::new();
        loop {
            if let Ok(element) = self.client.find(Locator::Css(css)).await
                && let Ok(text) = element.text().await
            {
                if check(&text) {
                    return text;
                }
                last = text;
            }
            if Instant::now() > deadline {
                panic!("{css} never matched; last text: {last:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn fill(&self, css: &str, value: &str) {
        let input = self.client.find(Locator::Css(css)).await.expect(css);
        input.clear().await.expect("clear");
        input.send_keys(value).await.expect("type");
    }

    pub async fn click(&self, css: &str) {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no {css}: {e}"))
            .click()
            .await
            .expect("click");
    }

    /// Marks the current document, to tell later whether it was reloaded.
    pub async fn mark_document(&self) {
        self.client
            .execute("window.__notReloaded = true;", vec![])
            .await
            .expect("mark");
    }

    pub async fn document_is_marked(&self) -> bool {
        self.client
            .execute("return window.__notReloaded === true;", vec![])
            .await
            .expect("read mark")
            .as_bool()
            .unwrap_or(false)
    }

    /// The whole page, not only the window.
    pub async fn screenshot(&self, path: &std::path::Path) {
        let height = self
            .client
            .execute("return document.documentElement.scrollHeight;", vec![])
            .await
            .ok()
            .and_then(|h| h.as_u64())
            .unwrap_or(1000)
            .clamp(600, 4000) as u32;
        self.client
            .set_window_size(1280, height)
            .await
            .expect("resize");
        let png = self.client.screenshot().await.expect("screenshot");
        std::fs::write(path, png).expect("write screenshot");
    }
}

impl Drop for Browser {
    #[allow(unsafe_code)]
    fn drop(&mut self) {
        // SAFETY: kill(2) on the process group of our own child.
        unsafe {
            libc::kill(-(self.driver.id() as i32), libc::SIGKILL);
        }
        let _ = self.driver.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}
