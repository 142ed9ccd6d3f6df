//! An example agent that hands one task to a tool runner with a task identity of its own: it
//! spawns the tool runner (this program, `tool`), which makes its key and certificate request in
//! its own directory; the agent asks the operator's delegation endpoint for the runner's
//! certificate with the agent's identity; the runner then calls a relying service with it.
//!
//! ```text
//! cargo run --features delegate --example task_agent -- run \
//!     --identity-dir ./support-agent --endpoint https://localhost:8443 \
//!     --service https://refunds-api.shop.svc:8443 --connect 127.0.0.1:9443 \
//!     --task T-1 --purpose "refund order 1042" --grant payments.refund --path /refunds/1042
//! ```
//!
//! The agent prints the task's SPIFFE ID, then the tool runner's `HTTP <status> <body>`; it exits
//! with the runner's code (0 on a 2xx answer).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::Request;
use hyper_util::rt::TokioIo;
use nhi_identity::delegate::child_key::ChildKey;
use nhi_identity::delegate::client::{Delegator, Task, client_config};
use rustls::pki_types::ServerName;

/// The flags after the command, as `--name value` pairs.
fn flags() -> Result<(String, Vec<(String, String)>), String> {
    let mut args = std::env::args().skip(1);
    let command = args
        .next()
        .ok_or("usage: task_agent run|tool --flag value ...")?;
    let mut pairs = vec![];
    while let Some(flag) = args.next() {
        let value = args.next().ok_or(format!("{flag} needs a value"))?;
        pairs.push((flag.trim_start_matches("--").to_string(), value));
    }
    Ok((command, pairs))
}

fn flag<'a>(pairs: &'a [(String, String)], name: &str) -> Result<&'a str, String> {
    pairs
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .ok_or(format!("--{name} is required"))
}

/// The tool runner: its key and request in `dir`, then (once the agent has written its
/// certificate) one GET to the service with that identity.
async fn tool(pairs: &[(String, String)]) -> Result<bool, String> {
    let dir = PathBuf::from(flag(pairs, "dir")?);
    let key = ChildKey::generate().map_err(|e| e.to_string())?;
    key.write_private_key(&dir).map_err(|e| e.to_string())?;
    std::fs::write(dir.join("request.csr"), key.csr_pem()).map_err(|e| e.to_string())?;
    let started = Instant::now();
    while !dir.join("tls.crt").exists() {
        if started.elapsed() > Duration::from_secs(30) {
            return Err("no certificate from the agent within 30 s".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let status = call(pairs, &dir).await?;
    Ok((200..300).contains(&status))
}

/// GET `--path` from `--service` (dialled at `--connect`), as the identity in `dir`.
async fn call(pairs: &[(String, String)], dir: &Path) -> Result<u16, String> {
    let service: hyper::Uri = flag(pairs, "service")?
        .parse()
        .map_err(|e| format!("--service: {e}"))?;
    let host = service.host().ok_or("--service needs a host")?.to_string();
    let connect = flag(pairs, "connect")
        .map(str::to_string)
        .unwrap_or_else(|_| format!("{host}:{}", service.port_u16().unwrap_or(443)));
    let config = client_config(dir).map_err(|e| e.to_string())?;
    let tcp = tokio::net::TcpStream::connect(&connect)
        .await
        .map_err(|e| format!("{connect}: {e}"))?;
    let name = ServerName::try_from(host.clone()).map_err(|e| e.to_string())?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS: {e}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let request = Request::get(flag(pairs, "path")?)
        .header(hyper::header::HOST, host)
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    println!("HTTP {status} {}", String::from_utf8_lossy(&body).trim());
    Ok(status)
}

/// The agent: spawns the tool runner, gets its certificate, waits for its answer.
async fn run(pairs: &[(String, String)]) -> Result<bool, String> {
    let work = std::env::temp_dir().join(format!("task-{:08x}", std::process::id()));
    let mut runner = Command::new(std::env::current_exe().map_err(|e| e.to_string())?);
    runner.arg("tool").arg("--dir").arg(&work);
    for name in ["service", "connect", "path"] {
        if let Ok(v) = flag(pairs, name) {
            runner.arg(format!("--{name}")).arg(v);
        }
    }
    let mut runner = runner
        .stdout(Stdio::inherit())
        .spawn()
        .map_err(|e| e.to_string())?;
    let csr = work.join("request.csr");
    let started = Instant::now();
    while !csr.exists() {
        if started.elapsed() > Duration::from_secs(10) {
            let _ = runner.kill();
            return Err("the tool runner made no request".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let csr_pem = std::fs::read_to_string(&csr).map_err(|e| e.to_string())?;
    let mut task = Task::new(flag(pairs, "task")?, flag(pairs, "purpose").unwrap_or(""));
    task.grants = pairs
        .iter()
        .filter(|(k, _)| k == "grant")
        .map(|(_, v)| v.clone())
        .collect();
    let parent = PathBuf::from(flag(pairs, "identity-dir")?);
    let mut delegator = Delegator::connect(flag(pairs, "endpoint")?, &parent)
        .await
        .map_err(|e| e.to_string())?;
    let child = match delegator.request(&task, &csr_pem).await {
        Ok(child) => child,
        Err(e) => {
            let _ = runner.kill();
            return Err(e.to_string());
        }
    };
    println!("task identity {}", child.spiffe_id);
    child.write_dir(&work, None).map_err(|e| e.to_string())?;
    let ok = runner.wait().map_err(|e| e.to_string())?.success();
    let _ = std::fs::remove_dir_all(&work);
    Ok(ok)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let outcome = match flags() {
        Ok((command, pairs)) => match command.as_str() {
            "run" => run(&pairs).await,
            "tool" => tool(&pairs).await,
            other => Err(format!("unknown command {other:?}: run or tool")),
        },
        Err(e) => Err(e),
    };
    match outcome {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::from(2),
        Err(e) => {
            eprintln!("task_agent: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
