//! Asks the operator's delegation endpoint for a child certificate, authenticating with the
//! parent's identity directory (`tls.crt`, `tls.key`, `ca.crt`: the TLS handshake is the proof of
//! possession), over one kept-alive connection.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{CONTENT_TYPE, HOST, RETRY_AFTER};
use hyper::{Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject};
use sha2::{Digest, Sha256};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::child_key::{ChildKey, write_file};
use super::wire::{ChildBody, MAX_BODY, PATH, RefusalBody, TaskRequestBody};
use crate::pem_chain::{pem_certificates, root_store};

/// How long connecting (TCP and TLS) may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one request may wait for its answer.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// A task to delegate.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Task {
    pub id: String,
    pub purpose: String,
    /// SHA-256 of the task's input.
    pub input_sha256: Option<[u8; 32]>,
    pub grants: Vec<String>,
    /// The lifetime asked for (None: the longest allowed).
    pub ttl: Option<Duration>,
}

impl Task {
    pub fn new(id: &str, purpose: &str) -> Self {
        Task {
            id: id.into(),
            purpose: purpose.into(),
            ..Task::default()
        }
    }

    /// Asks for `grant` too.
    pub fn grant(mut self, grant: &str) -> Self {
        self.grants.push(grant.into());
        self
    }

    /// Records the digest of the task's input.
    pub fn input(mut self, input: &[u8]) -> Self {
        self.input_sha256 = Some(Sha256::digest(input).into());
        self
    }

    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }
}

/// A child certificate, as the endpoint answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Child {
    pub spiffe_id: String,
    pub serial_hex: String,
    pub not_after: String,
    pub grants: Vec<String>,
    /// Leaf and CA chain, PEM.
    pub chain_pem: String,
    /// The trust bundle, PEM.
    pub ca_pem: String,
}

/// Why no child certificate was obtained.
#[derive(Debug, thiserror::Error)]
pub enum DelegateError {
    #[error("the parent's identity directory cannot be used: {0}")]
    Identity(String),
    #[error("the endpoint {0:?} is not an https:// URL with a host")]
    Endpoint(String),
    #[error("cannot reach the delegation endpoint: {0}")]
    Transport(String),
    #[error("refused ({reason}): {message}")]
    Refused {
        status: u16,
        reason: String,
        message: String,
    },
    #[error("rate limited: try again in {retry_after_seconds}s ({message})")]
    RateLimited {
        retry_after_seconds: u64,
        message: String,
    },
    #[error("the endpoint answered something unexpected: {0}")]
    Protocol(String),
    #[error("cannot write the child's identity directory: {0}")]
    Write(String),
}

impl DelegateError {
    /// The stable reason of a refusal (None for other failures).
    pub fn reason(&self) -> Option<&str> {
        match self {
            DelegateError::Refused { reason, .. } => Some(reason),
            DelegateError::RateLimited { .. } => Some("RateLimited"),
            _ => None,
        }
    }
}

/// A connection to the endpoint as a parent.
pub struct Delegator {
    sender: SendRequest<Full<Bytes>>,
    authority: String,
    /// The connection's task: how it ended says why a request failed (a TLS alert such as
    /// `CertificateExpired` arrives after the handshake, with TLS 1.3).
    connection: tokio::task::JoinHandle<Result<(), hyper::Error>>,
}

fn read(dir: &Path, file: &str) -> Result<String, DelegateError> {
    std::fs::read_to_string(dir.join(file))
        .map_err(|e| DelegateError::Identity(format!("{}: {e}", dir.join(file).display())))
}

/// A client config for the identity directory `parent_dir` (an identity's or a task's, the same
/// layout): its certificate and key, servers checked against its `ca.crt`.
pub fn client_config(parent_dir: &Path) -> Result<rustls::ClientConfig, DelegateError> {
    let bad =
        |what: &str, e: &dyn std::fmt::Display| DelegateError::Identity(format!("{what}: {e}"));
    let chain: Vec<CertificateDer<'static>> = pem_certificates(&read(parent_dir, "tls.crt")?)
        .map_err(|e| bad("tls.crt", &e))?
        .into_iter()
        .map(CertificateDer::from)
        .collect();
    // The key's own parse error could quote it: say only that it is unusable.
    let key = PrivateKeyDer::from_pem_slice(read(parent_dir, "tls.key")?.as_bytes())
        .map_err(|_| DelegateError::Identity("tls.key holds no usable private key".into()))?;
    let roots = root_store(&read(parent_dir, "ca.crt")?).map_err(|e| bad("ca.crt", &e))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad("TLS", &e))?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(|e| bad("tls.crt and tls.key", &e))
}

impl Delegator {
    /// Connects to `endpoint` (`https://host:port`) as the identity of `parent_dir`.
    pub async fn connect(endpoint: &str, parent_dir: &Path) -> Result<Self, DelegateError> {
        let uri: Uri = endpoint
            .parse()
            .map_err(|_| DelegateError::Endpoint(endpoint.into()))?;
        let (Some("https"), Some(host)) = (uri.scheme_str(), uri.host()) else {
            return Err(DelegateError::Endpoint(endpoint.into()));
        };
        let port = uri.port_u16().unwrap_or(443);
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let server_name = ServerName::try_from(host.clone())
            .map_err(|_| DelegateError::Endpoint(endpoint.into()))?;
        let connector = TlsConnector::from(Arc::new(client_config(parent_dir)?));
        let connect = async {
            let tcp = TcpStream::connect((host.as_str(), port))
                .await
                .map_err(|e| DelegateError::Transport(format!("{host}:{port}: {e}")))?;
            let _ = tcp.set_nodelay(true);
            connector
                .connect(server_name, tcp)
                .await
                .map_err(|e| DelegateError::Transport(format!("TLS: {e}")))
        };
        let tls = tokio::time::timeout(CONNECT_TIMEOUT, connect)
            .await
            .map_err(|_| {
                DelegateError::Transport(format!(
                    "{host}:{port}: no connection within {}s",
                    CONNECT_TIMEOUT.as_secs()
                ))
            })??;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| DelegateError::Transport(format!("HTTP: {e}")))?;
        Ok(Delegator {
            sender,
            authority: format!("{host}:{port}"),
            connection: tokio::spawn(connection),
        })
    }

    /// Asks for a child certificate for `task` and the child's request `csr_pem` (giving up
    /// after [`REQUEST_TIMEOUT`]).
    pub async fn request(&mut self, task: &Task, csr_pem: &str) -> Result<Child, DelegateError> {
        tokio::time::timeout(REQUEST_TIMEOUT, self.request_now(task, csr_pem))
            .await
            .map_err(|_| {
                DelegateError::Transport(format!("no answer within {}s", REQUEST_TIMEOUT.as_secs()))
            })?
    }

    async fn request_now(&mut self, task: &Task, csr_pem: &str) -> Result<Child, DelegateError> {
        let body = TaskRequestBody {
            task_id: task.id.clone(),
            purpose: task.purpose.clone(),
            input_sha256: task.input_sha256.map(hex::encode),
            grants: task.grants.clone(),
            ttl_seconds: task.ttl.map(|t| t.as_secs()),
            csr: csr_pem.to_string(),
        };
        let json = serde_json::to_vec(&body).map_err(|e| DelegateError::Protocol(e.to_string()))?;
        let request = Request::post(PATH)
            .header(HOST, &self.authority)
            .header(CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(json)))
            .map_err(|e| DelegateError::Protocol(e.to_string()))?;
        let sent = match self.sender.ready().await {
            Ok(()) => self.sender.send_request(request).await,
            Err(e) => Err(e),
        };
        let response = match sent {
            Ok(r) => r,
            Err(e) => return Err(DelegateError::Transport(self.why(e).await)),
        };
        let status = response.status();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let bytes = Limited::new(response.into_body(), MAX_BODY * 4)
            .collect()
            .await
            .map_err(|e| DelegateError::Transport(e.to_string()))?
            .to_bytes();
        if status == StatusCode::OK {
            let child: ChildBody = serde_json::from_slice(&bytes)
                .map_err(|e| DelegateError::Protocol(format!("the child: {e}")))?;
            return Ok(Child {
                spiffe_id: child.spiffe_id,
                serial_hex: child.serial_number,
                not_after: child.not_after,
                grants: child.grants,
                chain_pem: child.certificate,
                ca_pem: child.ca_bundle,
            });
        }
        let refusal: RefusalBody = serde_json::from_slice(&bytes).map_err(|_| {
            DelegateError::Protocol(format!(
                "status {status}: {}",
                String::from_utf8_lossy(&bytes[..bytes.len().min(256)])
            ))
        })?;
        match (status, retry_after) {
            (StatusCode::TOO_MANY_REQUESTS, Some(seconds)) => Err(DelegateError::RateLimited {
                retry_after_seconds: seconds,
                message: refusal.message,
            }),
            _ => Err(DelegateError::Refused {
                status: status.as_u16(),
                reason: refusal.reason,
                message: refusal.message,
            }),
        }
    }
}

impl Delegator {
    /// Why the connection failed: its own error (with its causes) when it has ended, else `e`.
    async fn why(&mut self, e: hyper::Error) -> String {
        let ended = tokio::time::timeout(Duration::from_secs(1), &mut self.connection).await;
        let cause = match ended {
            Ok(Ok(Err(conn))) => conn,
            _ => e,
        };
        let mut text = cause.to_string();
        let mut source = std::error::Error::source(&cause);
        while let Some(s) = source {
            text.push_str(": ");
            text.push_str(&s.to_string());
            source = s.source();
        }
        text
    }
}

impl Child {
    /// Writes the child's identity directory: `tls.crt` and `ca.crt`, and `tls.key` when `key`
    /// is given (mode 0600). A directory the child already keeps its key in is written without it.
    pub fn write_dir(&self, dir: &Path, key: Option<&ChildKey>) -> Result<(), DelegateError> {
        let written = |file: &str, r: std::io::Result<()>| {
            r.map_err(|e| DelegateError::Write(format!("{}: {e}", dir.join(file).display())))
        };
        if let Some(key) = key {
            written("tls.key", key.write_private_key(dir))?;
        }
        written("ca.crt", write_file(dir, "ca.crt", &self.ca_pem, 0o644))?;
        written(
            "tls.crt",
            write_file(dir, "tls.crt", &self.chain_pem, 0o644),
        )
    }
}
