//! Test helpers for live handshakes: an in-process mTLS server answering with the client's
//! serial, client connections that report the server's serial, and waiting for a condition.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls_pki_types::ServerName;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::ReloadingIdentity;

/// Polls `condition` every 10 ms, failing after `timeout`.
pub async fn wait_until(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

pub const WAIT: Duration = Duration::from_secs(10);

/// Serves mutual TLS: answers every line with the serial of the client's certificate.
pub async fn serve(listener: TcpListener, acceptor: tokio_rustls::TlsAcceptor) {
    loop {
        let (tcp, _) = listener.accept().await.unwrap();
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            let client_serial = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .map(|leaf| serial_of(leaf.as_ref()))
                .unwrap_or_default();
            let (read, mut write) = tokio::io::split(tls);
            let mut lines = BufReader::new(read).lines();
            while let Ok(Some(_)) = lines.next_line().await {
                let reply = format!("{client_serial}\n");
                if write.write_all(reply.as_bytes()).await.is_err() {
                    return;
                }
            }
        });
    }
}

pub fn serial_of(der: &[u8]) -> String {
    let (_, cert) = X509Certificate::from_der(der).unwrap();
    hex::encode(cert.raw_serial())
}

/// A connection from the client to the server: the server's serial as seen at the handshake.
pub struct Connection {
    pub server_serial: String,
    lines: tokio::io::Lines<
        BufReader<tokio::io::ReadHalf<tokio_rustls::client::TlsStream<TcpStream>>>,
    >,
    write: tokio::io::WriteHalf<tokio_rustls::client::TlsStream<TcpStream>>,
}

impl Connection {
    pub async fn open(connector: &tokio_rustls::TlsConnector, addr: std::net::SocketAddr) -> Self {
        Self::try_open(connector, addr).await.unwrap()
    }

    pub async fn try_open(
        connector: &tokio_rustls::TlsConnector,
        addr: std::net::SocketAddr,
    ) -> std::io::Result<Self> {
        let tcp = TcpStream::connect(addr).await?;
        let name = ServerName::try_from("localhost").unwrap();
        let tls = connector.connect(name, tcp).await?;
        let server_serial = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|chain| chain.first())
            .map(|leaf| serial_of(leaf.as_ref()))
            .unwrap();
        let (read, write) = tokio::io::split(tls);
        Ok(Connection {
            server_serial,
            lines: BufReader::new(read).lines(),
            write,
        })
    }

    /// Sends a request and returns the client serial the server saw.
    pub async fn request(&mut self) -> String {
        self.try_request().await.unwrap().unwrap()
    }

    /// Sends a request; `None` when the server closed the connection.
    pub async fn try_request(&mut self) -> std::io::Result<Option<String>> {
        self.write.write_all(b"ping\n").await?;
        self.lines.next_line().await
    }
}

/// A server on 127.0.0.1 with `server`'s server config (mutual TLS), and a connector with
/// `client`'s client config. Abort the task to stop the server.
pub async fn start_pair(
    server: &ReloadingIdentity,
    client: &ReloadingIdentity,
) -> (SocketAddr, tokio_rustls::TlsConnector, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server.server_config().unwrap()));
    let task = tokio::spawn(serve(listener, acceptor));
    (addr, connector(client), task)
}

/// A connector with `client`'s client config.
pub fn connector(client: &ReloadingIdentity) -> tokio_rustls::TlsConnector {
    tokio_rustls::TlsConnector::from(Arc::new(client.client_config().unwrap()))
}

/// Whether a new connection is served: the handshake succeeds on both sides and a request is
/// answered.
pub async fn served(connector: &tokio_rustls::TlsConnector, addr: SocketAddr) -> bool {
    refusal(connector, addr).await.is_none()
}

/// Why a new connection is not served, as the client sees it: its own verdict on the server
/// (`InvalidCertificate`), or the server's alert (`AlertReceived`: in TLS 1.3 a server refusing
/// the client's certificate says so after the client finished its handshake). `None` when a
/// request is answered.
pub async fn refusal(
    connector: &tokio_rustls::TlsConnector,
    addr: SocketAddr,
) -> Option<rustls::Error> {
    match Connection::try_open(connector, addr).await {
        Err(error) => Some(tls_error(error)),
        Ok(mut connection) => match connection.try_request().await {
            Ok(Some(_)) => None,
            Ok(None) => Some(rustls::Error::General("closed without an answer".into())),
            Err(error) => Some(tls_error(error)),
        },
    }
}

fn tls_error(error: std::io::Error) -> rustls::Error {
    error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .cloned()
        .unwrap_or_else(|| rustls::Error::General(error.to_string()))
}
