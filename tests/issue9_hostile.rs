//! Issue 9, class 7, over HTTP against the real binary: hostile inputs (binomials and
//! products past the bit budget, a 200 kB step of repeated claims, a solution of thousands of
//! steps) are each answered within twice their time budget, the server's peak memory (its
//! VmHWM, read from /proc) stays below 300 MB, and the server is still up afterwards.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{get, post, sqlite_url};
use serde_json::json;

/// `stepkto serve` on a random port with an embedded cache; its address from the log.
fn serve(time_ms: u64) -> (Child, SocketAddr) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_stepkto"))
        .args(["serve", "--addr", "127.0.0.1:0", "--database-url"])
        .arg(sqlite_url())
        .env("STEPKTO_LOG", "info")
        .env("NO_COLOR", "1")
        .env("STEPKTO_CHECK_TIME_MS", time_ms.to_string())
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("start stepkto serve");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let deadline = Instant::now() + Duration::from_secs(60);
    let addr = loop {
        assert!(Instant::now() < deadline, "the server did not start");
        let line = lines.next().expect("server exited").unwrap();
        if let Some(k) = line.find("addr=") {
            let rest = &line[k + 5..];
            let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
            // Strip any colour codes around the value.
            let v: String = rest[..end]
                .chars()
                .filter(|c| c.is_ascii_digit() || *c == '.' || *c == ':')
                .collect();
            break v.parse().unwrap();
        }
    };
    // Keep draining the log so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    (child, addr)
}

/// Peak resident memory of a process, in MB (Linux).
fn peak_mb(pid: u32) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

#[tokio::test]
async fn class_7_hostile_inputs_hold_time_and_memory_budgets() {
    if !cfg!(target_os = "linux") {
        if std::env::var("STEPKTO_REQUIRE_LINUX").as_deref() == Ok("1") {
            panic!("this test reads /proc and needs Linux");
        }
        eprintln!("SKIPPED: peak memory is read from /proc, which this OS does not have");
        return;
    }
    const TIME_MS: u64 = 1_000;
    let (mut child, addr) = serve(TIME_MS);
    let verify = [
        ("\\binom{10^{100}}{2000}", "1"),
        ("\\binom{10^{6000}}{100}", "1"),
        ("(10^{9999})^{9999}", "(10^{9999})^{9998}"),
        (
            "10^{9000} \\cdot 10^{9000} \\cdot 10^{9000} \\cdot 10^{9000}",
            "1",
        ),
        ("2^{2^{2^{2^{2}}}}", "2^{65536}+1"),
        ("\\log_{10}(5 \\cdot 100^{20000})", "40000.69897"),
    ];
    let claims = "$1=1$ ".repeat(33_000);
    let plain = "so 2 * 3 = 6 and ".repeat(11_500);
    let many: Vec<String> = (0..500)
        .map(|k| format!("Then ${k} \\cdot 2 = {}$.", 2 * k))
        .collect();
    let judge = [
        json!({"items": [{"problem": "p", "steps": [claims]}]}),
        json!({"items": [{"problem": "p", "steps": [plain]}]}),
        json!({"items": [{"problem": "p", "steps": many}]}),
    ];
    assert!(judge[0].to_string().len() > 190_000 && judge[1].to_string().len() > 190_000);
    let mut report = Vec::new();
    for (r, c) in verify {
        let t = Instant::now();
        let resp = post(addr, "/v1/verify", json!({"reference": r, "candidate": c})).await;
        let took = t.elapsed();
        assert_eq!(
            resp.status,
            200,
            "{r}: {}",
            String::from_utf8_lossy(&resp.body)
        );
        assert_eq!(resp.json()["equivalent"], false, "{r} vs {c}");
        report.push(format!("verify {r}: {took:?}"));
        assert!(
            took < Duration::from_millis(2 * TIME_MS),
            "{r} vs {c} took {took:?}"
        );
    }
    for body in &judge {
        let t = Instant::now();
        let resp = post(addr, "/v1/judge", body.clone()).await;
        let took = t.elapsed();
        assert_eq!(resp.status, 200, "{}", String::from_utf8_lossy(&resp.body));
        let steps = resp.json()["items"][0]["steps"].as_array().unwrap().len();
        report.push(format!(
            "judge {steps} steps, {} bytes: {took:?}",
            body.to_string().len()
        ));
        assert!(
            took < Duration::from_millis(2 * TIME_MS),
            "judge took {took:?}"
        );
    }
    assert_eq!(
        get(addr, "/health").await.status,
        200,
        "the server is still up"
    );
    let peak = peak_mb(child.id()).expect("VmHWM");
    eprintln!("{}\nserver peak memory: {peak:.0} MB", report.join("\n"));
    let _ = child.kill();
    let _ = child.wait();
    assert!(peak < 300.0, "server peak memory {peak:.0} MB");
}
