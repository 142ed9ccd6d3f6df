//! An mTLS echo server and client that keep their identities current with the reload library
//! (`nhi_identity::reload`): each loads an identity directory (a mounted identity Secret, or one
//! `nhi-operator agent` writes), and every new handshake uses the identity swapped in last.
//!
//! ```text
//! cargo run --example mtls_echo -- serve --identity-dir ./server --addr 127.0.0.1:8443
//! cargo run --example mtls_echo -- call --identity-dir ./client --addr 127.0.0.1:8443 \
//!     --server-name echo.shop.svc --duration 60s [--interval 100ms] [--stop-file PATH] \
//!     [--report-every 30s]
//! cargo run --example mtls_echo -- stats --identity-dir ./client --addr 127.0.0.1:8443 \
//!     --server-name echo.shop.svc
//! ```
//!
//! Every mode checks the peer's revocation against `crl.pem` (the `nhi-trust` ConfigMap's) and
//! refuses every peer while it has no usable one: from the identity directory by default, from
//! `--crl-dir DIR` (a mounted `nhi-trust`) when given; `--no-revocation-check` turns that off.
//!
//! The server requires an unrevoked client certificate chaining to its `ca.crt` and logs one
//! line per handshake with the serials on both sides. `call` sends a request every `--interval`, each on a
//! new connection (a new handshake) and on one long-lived connection (the first, retried for up to
//! a minute while the server is not up yet), until `--duration` passes
//! or `--stop-file` exists; it prints one line per failure, one per new serial on either side, a
//! progress line every `--report-every` (counts so far) and a summary, and exits non-zero if
//! anything failed. `stats` prints the server's reload counters.
//!
//! Protocol, one line each way: `ping N` is answered `pong N <server serial> <client serial>`,
//! `stats` with `stats serial=<serial> reloads=<n> refused=<n>`.

use std::collections::BTreeSet;
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nhi_identity::reload::{ClientAuth, ReloadOptions, ReloadingIdentity, RevocationCheck};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};
use x509_parser::prelude::{FromDer, X509Certificate};

type Error = Box<dyn std::error::Error + Send + Sync>;

struct Args {
    mode: String,
    identity_dir: PathBuf,
    addr: SocketAddr,
    server_name: String,
    duration: Duration,
    interval: Duration,
    stop_file: Option<PathBuf>,
    report_every: Option<Duration>,
    revocation: RevocationCheck,
}

fn usage() -> ! {
    eprintln!(
        "usage: mtls_echo serve|call|stats --identity-dir DIR --addr ADDR [--server-name NAME] \
         [--duration 60s] [--interval 100ms] [--stop-file PATH] [--report-every 30s] \
         [--crl-dir DIR | --no-revocation-check]"
    );
    std::process::exit(2)
}

/// A duration such as `240s`, `100ms`, `5m` or `1h`.
fn duration(s: &str) -> Duration {
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let n: u64 = number.parse().unwrap_or_else(|_| usage());
    match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n * 60),
        "h" => Duration::from_secs(n * 3600),
        _ => {
            eprintln!("invalid duration {s:?}: use a whole number of ms, s, m or h");
            usage()
        }
    }
}

fn args() -> Args {
    let mut it = std::env::args().skip(1);
    let mode = it.next().unwrap_or_else(|| usage());
    let mut a = Args {
        mode,
        identity_dir: PathBuf::new(),
        addr: "127.0.0.1:8443".parse().unwrap(),
        server_name: "localhost".into(),
        duration: Duration::from_secs(60),
        interval: Duration::from_millis(100),
        stop_file: None,
        report_every: None,
        revocation: RevocationCheck::CrlInIdentityDir,
    };
    while let Some(flag) = it.next() {
        if flag == "--no-revocation-check" {
            a.revocation = RevocationCheck::Disabled;
            continue;
        }
        let value = it.next().unwrap_or_else(|| usage());
        match flag.as_str() {
            "--identity-dir" => a.identity_dir = value.into(),
            "--addr" => a.addr = value.parse().unwrap_or_else(|_| usage()),
            "--server-name" => a.server_name = value,
            "--duration" => a.duration = duration(&value),
            "--interval" => a.interval = duration(&value),
            "--stop-file" => a.stop_file = Some(value.into()),
            "--report-every" => a.report_every = Some(duration(&value)),
            "--crl-dir" => a.revocation = RevocationCheck::CrlInDir(value.into()),
            _ => usage(),
        }
    }
    a
}

/// Exits at once on SIGTERM or SIGINT: as a container's PID 1 it has no default handler, and
/// would otherwise wait out the pod's grace period.
fn exit_on_termination() {
    tokio::spawn(async {
        let Ok(mut term) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        else {
            return;
        };
        tokio::select! {
            _ = term.recv() => {},
            _ = tokio::signal::ctrl_c() => {},
        }
        println!("terminated");
        std::process::exit(0);
    });
}

/// The serial (lowercase hex) of a DER certificate.
fn serial_of(der: &[u8]) -> String {
    X509Certificate::from_der(der)
        .map(|(_, c)| hex::encode(c.raw_serial()))
        .unwrap_or_else(|_| "unparseable".into())
}

#[tokio::main]
async fn main() {
    // Colours only on a terminal: `kubectl logs` shows them as escape codes.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    exit_on_termination();
    let args = args();
    let options = ReloadOptions {
        revocation: args.revocation.clone(),
        ..ReloadOptions::default()
    };
    let identity = match ReloadingIdentity::load(&args.identity_dir, options) {
        Ok(i) => i,
        Err(e) => {
            eprintln!("cannot load {}: {e}", args.identity_dir.display());
            std::process::exit(1);
        }
    };
    let result = match args.mode.as_str() {
        "serve" => serve(identity, &args).await,
        "call" => call(identity, &args).await,
        "stats" => stats(identity, &args).await,
        _ => usage(),
    };
    if let Err(e) = result {
        eprintln!("{e}");
        std::process::exit(1);
    }
}

async fn serve(identity: ReloadingIdentity, args: &Args) -> Result<(), Error> {
    identity.on_change(|info| {
        println!(
            "identity serial={} not_after={}",
            info.serial_hex, info.not_after
        )
    });
    let _watch = identity.spawn_watch();
    let acceptor = TlsAcceptor::from(Arc::new(identity.server_config_with(ClientAuth::Required)?));
    let listener = TcpListener::bind(args.addr).await?;
    println!(
        "listening on {} serial={}",
        listener.local_addr()?,
        identity.current().serial_hex
    );
    loop {
        let (tcp, _) = listener.accept().await?;
        let (acceptor, identity) = (acceptor.clone(), identity.clone());
        tokio::spawn(async move {
            let tls = match acceptor.accept(tcp).await {
                Ok(t) => t,
                Err(e) => {
                    println!("handshake failed: {e}");
                    return;
                }
            };
            let (_, session) = tls.get_ref();
            let peer = session
                .peer_certificates()
                .and_then(|c| c.first())
                .map(|c| serial_of(c))
                .unwrap_or_default();
            // The identity current right after the handshake (the client's log names the
            // certificate it was actually presented).
            let own = identity.current().serial_hex;
            println!("handshake server={own} client={peer}");
            let (read, mut write) = tokio::io::split(tls);
            let mut lines = BufReader::new(read).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let reply = match line.split_whitespace().collect::<Vec<_>>().as_slice() {
                    ["ping", n] => format!("pong {n} {own} {peer}\n"),
                    ["stats"] => format!(
                        "stats serial={} reloads={} refused={}\n",
                        identity.current().serial_hex,
                        identity.reloads(),
                        identity.refused_reloads()
                    ),
                    _ => "error unknown request\n".to_string(),
                };
                if write.write_all(reply.as_bytes()).await.is_err() {
                    break;
                }
            }
        });
    }
}

/// One connection: the TLS stream, split into lines in and bytes out, and the server's serial.
struct Connection {
    lines: tokio::io::Lines<
        BufReader<tokio::io::ReadHalf<tokio_rustls::client::TlsStream<TcpStream>>>,
    >,
    write: tokio::io::WriteHalf<tokio_rustls::client::TlsStream<TcpStream>>,
    server_serial: String,
}

async fn connect(connector: &TlsConnector, args: &Args) -> Result<Connection, Error> {
    let tcp = TcpStream::connect(args.addr).await?;
    let name = ServerName::try_from(args.server_name.clone())?;
    let tls = connector.connect(name, tcp).await?;
    let server_serial = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c: &CertificateDer<'_>| serial_of(c))
        .unwrap_or_default();
    let (read, write) = tokio::io::split(tls);
    Ok(Connection {
        lines: BufReader::new(read).lines(),
        write,
        server_serial,
    })
}

/// The first connection, retried for up to a minute: a client started beside its server (two
/// Deployments applied together) may come up first. Failures from then on count.
async fn first_connection(connector: &TlsConnector, args: &Args) -> Result<Connection, Error> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match connect(connector, args).await {
            Ok(conn) => return Ok(conn),
            Err(e) if Instant::now() < deadline => {
                println!("waiting for the server at {}: {e}", args.addr);
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

async fn request(conn: &mut Connection, line: &str) -> Result<String, Error> {
    conn.write.write_all(format!("{line}\n").as_bytes()).await?;
    let reply = tokio::time::timeout(Duration::from_secs(5), conn.lines.next_line())
        .await
        .map_err(|_| "no reply within 5s")??
        .ok_or("the connection closed")?;
    Ok(reply)
}

async fn ping(conn: &mut Connection, n: u64) -> Result<(), Error> {
    let reply = request(conn, &format!("ping {n}")).await?;
    match reply.split_whitespace().collect::<Vec<_>>().as_slice() {
        ["pong", m, _, _] if *m == n.to_string() => Ok(()),
        _ => Err(format!("unexpected reply {reply:?}").into()),
    }
}

async fn call(identity: ReloadingIdentity, args: &Args) -> Result<(), Error> {
    identity.on_change(|info| println!("identity serial={}", info.serial_hex));
    let _watch = identity.spawn_watch();
    let connector = TlsConnector::from(Arc::new(identity.client_config()?));
    let started = Instant::now();
    let mut long_lived = first_connection(&connector, args).await?;
    let (mut requests, mut handshakes) = (0u64, 1u64);
    let (mut failed_handshakes, mut failed_requests) = (0u64, 0u64);
    let mut server_serials = BTreeSet::from([long_lived.server_serial.clone()]);
    let mut client_serials = BTreeSet::new();
    let mut n = 0u64;
    println!(
        "calling {} as serial={}: server serial={}",
        args.addr,
        identity.current().serial_hex,
        long_lived.server_serial
    );
    let mut reported = Instant::now();
    while started.elapsed() < args.duration && !args.stop_file.as_ref().is_some_and(|f| f.exists())
    {
        n += 1;
        client_serials.insert(identity.current().serial_hex);
        // A new connection: a handshake with the identities current on both sides.
        handshakes += 1;
        match connect(&connector, args).await {
            Ok(mut fresh) => {
                if server_serials.insert(fresh.server_serial.clone()) {
                    println!("server serial={} (new)", fresh.server_serial);
                }
                requests += 1;
                if let Err(e) = ping(&mut fresh, n).await {
                    failed_requests += 1;
                    println!("FAIL request {n} on a new connection: {e}");
                }
            }
            Err(e) => {
                failed_handshakes += 1;
                println!("FAIL handshake {n}: {e}");
            }
        }
        // The long-lived connection, opened at the start, keeps working across rotations.
        requests += 1;
        if let Err(e) = ping(&mut long_lived, n).await {
            failed_requests += 1;
            println!("FAIL request {n} on the long-lived connection: {e}");
        }
        if args
            .report_every
            .is_some_and(|every| reported.elapsed() >= every)
        {
            reported = Instant::now();
            println!(
                "progress requests={requests} handshakes={handshakes} \
                 failed_requests={failed_requests} failed_handshakes={failed_handshakes} \
                 server_serials={} client_serials={}",
                server_serials.len(),
                client_serials.len()
            );
        }
        tokio::time::sleep(args.interval).await;
    }
    println!(
        "summary requests={requests} handshakes={handshakes} failed_requests={failed_requests} \
         failed_handshakes={failed_handshakes} server_serials={} client_serials={}",
        server_serials.into_iter().collect::<Vec<_>>().join(","),
        client_serials.into_iter().collect::<Vec<_>>().join(","),
    );
    if failed_requests + failed_handshakes > 0 {
        return Err("some requests failed".into());
    }
    Ok(())
}

async fn stats(identity: ReloadingIdentity, args: &Args) -> Result<(), Error> {
    let connector = TlsConnector::from(Arc::new(identity.client_config()?));
    let mut conn = connect(&connector, args).await?;
    let reply = request(&mut conn, "stats").await?;
    println!("{reply} presented={}", conn.server_serial);
    Ok(())
}
