//! A relying service: an mTLS HTTPS server on 127.0.0.1 that authorizes every request by the
//! grant its route table names, from the client certificate alone (no call to the cluster).
//!
//! ```text
//! cargo run --example relying_service -- --identity-dir ./payments-api \
//!     --route /payments=payments.process --route /reports=reports.read \
//!     [--trusted-namespace shop ...] [--accept-tasks] (--crl crl.pem | --no-revocation-check)
//! ```
//!
//! `--accept-tasks` also accepts task certificates (children an identity delegated): each is
//! authorized as itself, by the grants it carries, never as its parent, and refused once any
//! certificate that delegated it is on the CRL. Without it, a task certificate is refused.
//!
//! A grant is asserted by whoever may create Entitlements in the caller's namespace: with
//! `--trusted-namespace` only callers from those namespaces are authorized.
//!
//! `--crl` names the CRL file (the `crl.pem` of the namespace's `nhi-trust` ConfigMap, mounted):
//! it is read again whenever it changes, and one that cannot be read refuses every caller.
//! It is required: only `--no-revocation-check`, written out, runs without it.
//!
//! The identity directory holds the service's own `tls.crt`, `tls.key` and `ca.crt`, as the
//! operator writes them into the identity Secret. The server prints `listening on <address>`
//! once it accepts connections.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use nhi_identity::verify::{
    Purpose, Revocation, RevocationList, TrustBundle, VerifiedIdentity, VerifyError,
    certificates_from_pem, verify_identity, verify_identity_or_task,
};
use rustls::RootCertStore;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use rustls::server::WebPkiClientVerifier;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

struct Options {
    listen: SocketAddr,
    identity_dir: PathBuf,
    crl: Option<PathBuf>,
    /// Path prefix -> required grant.
    routes: BTreeMap<String, String>,
    /// Namespaces trusted to grant access (all when empty).
    trusted_namespaces: Vec<String>,
    /// Whether task certificates are accepted (as themselves).
    accept_tasks: bool,
}

fn options() -> Result<Options, String> {
    let mut listen: SocketAddr = "127.0.0.1:0".parse().map_err(|e| format!("{e}"))?;
    let (mut identity_dir, mut crl, mut routes) = (None, None, BTreeMap::new());
    let mut trusted_namespaces = vec![];
    let mut no_revocation_check = false;
    let mut accept_tasks = false;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--listen" => listen = value()?.parse().map_err(|e| format!("--listen: {e}"))?,
            "--identity-dir" => identity_dir = Some(PathBuf::from(value()?)),
            "--crl" => crl = Some(PathBuf::from(value()?)),
            "--no-revocation-check" => no_revocation_check = true,
            "--trusted-namespace" => trusted_namespaces.push(value()?),
            "--accept-tasks" => accept_tasks = true,
            "--route" => {
                let v = value()?;
                let (path, grant) = v
                    .split_once('=')
                    .ok_or(format!("--route {v:?}: expected /path=grant.name"))?;
                routes.insert(path.to_string(), grant.to_string());
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if !listen.ip().is_loopback() {
        return Err("--listen must be a loopback address".into());
    }
    // Fail closed: revocation is checked unless the caller says, in so many words, not to.
    if crl.is_none() && !no_revocation_check {
        return Err(
            "--crl FILE is required (the crl.pem of the namespace's nhi-trust ConfigMap); pass --no-revocation-check to run without".into(),
        );
    }
    Ok(Options {
        listen,
        identity_dir: identity_dir.ok_or("--identity-dir is required")?,
        crl,
        routes,
        trusted_namespaces,
        accept_tasks,
    })
}

fn read(dir: &std::path::Path, file: &str) -> Result<String, String> {
    std::fs::read_to_string(dir.join(file))
        .map_err(|e| format!("{}: {e}", dir.join(file).display()))
}

/// The server's TLS configuration: its own identity, and client certificates required and
/// chained to the identity bundle's roots.
fn tls_config(dir: &std::path::Path) -> Result<rustls::ServerConfig, String> {
    let chain: Vec<CertificateDer<'static>> =
        certificates_from_pem(&read(dir, "tls.crt")?).map_err(|e| e.to_string())?;
    let key = PrivateKeyDer::from_pem_slice(read(dir, "tls.key")?.as_bytes())
        .map_err(|e| format!("tls.key: {e}"))?;
    let mut roots = RootCertStore::empty();
    for ca in certificates_from_pem(&read(dir, "ca.crt")?).map_err(|e| e.to_string())? {
        roots.add(ca).map_err(|e| format!("ca.crt: {e}"))?;
    }
    let verifier = WebPkiClientVerifier::builder(Arc::new(roots))
        .build()
        .map_err(|e| e.to_string())?;
    rustls::ServerConfig::builder()
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| e.to_string())
}

/// The CRL file (`--crl`), read again whenever it changes (its modification time or size), as
/// the operator's `nhi-trust` ConfigMap is updated and kubelet swaps the mounted file.
struct CrlFile {
    path: PathBuf,
    seen: Option<(std::time::SystemTime, u64)>,
    list: Result<Arc<RevocationList>, String>,
}

impl CrlFile {
    fn new(path: PathBuf) -> Self {
        CrlFile {
            path,
            seen: None,
            list: Err("not read yet".into()),
        }
    }

    /// The CRL as the file holds it now, or why it cannot be used.
    fn current(&mut self) -> Result<Arc<RevocationList>, String> {
        let stamp = std::fs::metadata(&self.path)
            .and_then(|m| Ok((m.modified()?, m.len())))
            .map_err(|e| format!("{}: {e}", self.path.display()));
        match stamp {
            Err(e) => self.list = Err(e),
            Ok(stamp) if self.seen != Some(stamp) => {
                self.seen = Some(stamp);
                self.list = std::fs::read_to_string(&self.path)
                    .map_err(|e| e.to_string())
                    .and_then(|text| RevocationList::from_pem(&text).map_err(|e| e.to_string()))
                    .map(Arc::new);
                eprintln!("CRL read from {}", self.path.display());
            }
            Ok(_) => {}
        }
        self.list.clone()
    }
}

/// Decides one request: the route's grant must be in the caller's certificate.
fn authorize(
    opts: &Options,
    path: &str,
    caller: &Result<VerifiedIdentity, String>,
) -> (StatusCode, String) {
    let routes = &opts.routes;
    let Some((_, grant)) = routes
        .iter()
        .rev()
        .find(|(prefix, _)| path.starts_with(prefix.as_str()))
    else {
        return (StatusCode::NOT_FOUND, format!("no route for {path}\n"));
    };
    match caller {
        Err(e) => (StatusCode::UNAUTHORIZED, format!("identity refused: {e}\n")),
        Ok(id)
            if !opts.trusted_namespaces.is_empty()
                && !opts.trusted_namespaces.contains(&id.identity.namespace) =>
        {
            (
                StatusCode::FORBIDDEN,
                format!(
                    "namespace {} is not trusted to grant {grant}\n",
                    id.identity.namespace
                ),
            )
        }
        Ok(id) if id.has_grant(grant) => (
            StatusCode::OK,
            format!("{} may {grant}\n", id.identity.spiffe_id),
        ),
        Ok(id) => (
            StatusCode::FORBIDDEN,
            format!("{} lacks {grant}\n", id.identity.spiffe_id),
        ),
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), String> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let opts = options()?;
    let trust = Arc::new(
        TrustBundle::from_pem(&read(&opts.identity_dir, "ca.crt")?).map_err(|e| e.to_string())?,
    );
    let mut crl_file = opts.crl.clone().map(CrlFile::new);
    if let Some(file) = crl_file.as_mut() {
        // Refuse to start on a CRL that cannot be read; later failures refuse callers instead.
        file.current()?;
    }
    let acceptor = TlsAcceptor::from(Arc::new(tls_config(&opts.identity_dir)?));
    let listener = TcpListener::bind(opts.listen)
        .await
        .map_err(|e| e.to_string())?;
    println!(
        "listening on {}",
        listener.local_addr().map_err(|e| e.to_string())?
    );
    let opts = Arc::new(opts);
    loop {
        let (tcp, _) = listener.accept().await.map_err(|e| e.to_string())?;
        // The CRL as the file holds it now (read again whenever the file changed).
        let crl = crl_file.as_mut().map(CrlFile::current);
        let (acceptor, opts, trust) = (acceptor.clone(), opts.clone(), trust.clone());
        tokio::spawn(async move {
            let tls = match acceptor.accept(tcp).await {
                Ok(tls) => tls,
                Err(e) => {
                    eprintln!("handshake refused: {e}");
                    return;
                }
            };
            let peer: Vec<CertificateDer<'static>> = tls
                .get_ref()
                .1
                .peer_certificates()
                .map(|c| c.iter().map(|d| d.clone().into_owned()).collect())
                .unwrap_or_default();
            // Verified once per connection, offline: chain, validity, CRL, SPIFFE ID, grants.
            let now = time::OffsetDateTime::now_utc();
            let verify = match opts.accept_tasks {
                true => verify_identity_or_task,
                false => verify_identity,
            };
            let caller = match &crl {
                // --no-revocation-check: not checked, as asked.
                None => verify(&peer, &trust, Revocation::NotChecked, Purpose::Client, now),
                Some(Ok(list)) => {
                    verify(&peer, &trust, Revocation::Check(list), Purpose::Client, now)
                }
                // A CRL that cannot be read refuses every caller (fail closed).
                Some(Err(e)) => Err(VerifyError::BadCrl(e.clone())),
            }
            .map_err(|e| e.to_string());
            let service = service_fn(move |req: Request<Incoming>| {
                let (status, body) = authorize(&opts, req.uri().path(), &caller);
                let who = caller
                    .as_ref()
                    .map(|c| c.serial_hex.clone())
                    .unwrap_or_default();
                eprintln!(
                    "{} {} serial={who} -> {}",
                    req.method(),
                    req.uri().path(),
                    status.as_u16()
                );
                let mut response = Response::new(body);
                *response.status_mut() = status;
                async move { Ok::<_, std::convert::Infallible>(response) }
            });
            if let Err(e) = http1::Builder::new()
                .serve_connection(TokioIo::new(tls), service)
                .await
            {
                eprintln!("connection error: {e}");
            }
        });
    }
}
