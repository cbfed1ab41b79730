//! A headless Chromium for the browser tests, driven through chromedriver: a fresh profile each,
//! and the whole process group killed when the test ends.

use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder};
use serde_json::json;

/// chromedriver in a process group of its own, with the Chromium it starts: dropping it (when
/// the test ends, passed or panicked) kills the whole group, so no browser outlives its test.
pub struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let group = format!("-{}", self.0.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts chromedriver and a headless Chromium session with a fresh profile.
pub async fn browser() -> (Driver, Client, tempfile::TempDir) {
    browser_with(&[]).await
}

/// As [`browser`], with more Chromium arguments.
pub async fn browser_with(extra: &[String]) -> (Driver, Client, tempfile::TempDir) {
    let port = super::free_port();
    let driver = Driver(
        Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect(
                "chromedriver (apt-get install chromium chromium-driver; scripts/setup.sh does)",
            ),
    );
    let profile = tempfile::tempdir().unwrap();
    let mut args: Vec<String> = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--window-size=1280,800",
    ]
    .map(String::from)
    .to_vec();
    args.push(format!("--user-data-dir={}", profile.path().display()));
    args.extend_from_slice(extra);
    let caps = json!({
        "goog:chromeOptions": {"binary": "/usr/bin/chromium", "args": args}
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let client = loop {
        let attempt = ClientBuilder::native()
            .capabilities(caps.as_object().unwrap().clone())
            .connect(&format!("http://127.0.0.1:{port}"))
            .await;
        match attempt {
            Ok(c) => break c,
            // chromedriver is still starting: its port is not open yet.
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("no WebDriver session: {e}"),
        }
    };
    (driver, client, profile)
}

/// The rendered text of the first element matching `css` (None while there is none), read in one
/// script: the page re-renders its rows every second, and an element handle found a moment
/// earlier may be stale by the time its text is asked for.
pub async fn text_of(c: &Client, css: &str) -> Option<String> {
    let v = c
        .execute(
            "const e = document.querySelector(arguments[0]); return e ? e.innerText : null;",
            vec![json!(css)],
        )
        .await
        .unwrap();
    v.as_str().map(str::to_string)
}
