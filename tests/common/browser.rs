//! Headless Chromium through chromedriver for the dashboard's tests and its load bench.
//! Without the two binaries the caller skips, unless STEPKTO_REQUIRE_BROWSER=1 (set by
//! scripts/test.sh), under which it fails.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder};
use serde_json::json;

use super::bin::free_port;
use super::tiny;

fn find(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

pub struct Browser {
    driver: Child,
    pub client: Client,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

pub async fn browser() -> Option<Browser> {
    let (Some(driver), Some(chromium)) = (find("chromedriver"), find("chromium")) else {
        if std::env::var("STEPKTO_REQUIRE_BROWSER").as_deref() == Ok("1") {
            panic!(
                "chromium and chromedriver are needed (apt-get install chromium chromium-driver)"
            );
        }
        eprintln!(
            "note: chromium/chromedriver not found; the browser test is skipped (scripts/test.sh installs them)"
        );
        return None;
    };
    let port = free_port();
    let child = Command::new(driver)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "chromedriver did not start"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let profile = tiny::temp_dir("chromium-profile");
    // no network but loopback: without these flags Chromium keeps calling Google's hosts
    let caps = json!({"goog:chromeOptions": {"binary": chromium, "args": [
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--no-first-run", "--disable-extensions", "--window-size=1400,1000",
        format!("--user-data-dir={}", profile.display())]}});
    let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps.as_object().unwrap().clone())
        .connect(&format!("http://127.0.0.1:{port}"))
        .await
        .expect("connect to chromedriver");
    Some(Browser {
        driver: child,
        client,
    })
}
