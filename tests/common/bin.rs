//! The real `stepkto` binary as a server for tests: started on a free port with the
//! arguments a test gives, waited for until `/health` answers, killed with SIGKILL.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use super::get;

pub struct Server {
    pub child: Child,
    pub addr: SocketAddr,
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `stepkto serve` on `port` with `args`, its log appended to `log`.
pub async fn start(log: &Path, port: u16, args: &[String]) -> Server {
    start_bin(Path::new(env!("CARGO_BIN_EXE_stepkto")), log, port, args).await
}

/// `start` with another build of the binary (a bench comparing two commits in one run).
#[allow(clippy::zombie_processes)] // every Server is killed and waited for by `kill`
pub async fn start_bin(bin: &Path, log: &Path, port: u16, args: &[String]) -> Server {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    let child = Command::new(bin)
        .args(["serve", "--addr", &format!("127.0.0.1:{port}")])
        .args(args)
        .stderr(log)
        .spawn()
        .unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let t0 = Instant::now();
    loop {
        if tokio::net::TcpStream::connect(addr).await.is_ok()
            && get(addr, "/health").await.status == 200
        {
            return Server { child, addr };
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "the server did not start"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// SIGKILL, then reap.
pub fn kill(s: &mut Server) {
    s.child.kill().unwrap();
    s.child.wait().unwrap();
}
