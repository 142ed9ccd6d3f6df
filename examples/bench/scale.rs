//! `make bench N=100000` (MODE=scale, the mode of any N from 50,000): one operator replica over
//! N identities, against the bare client writing the same N in the same run (each on a fresh
//! control plane of its own); then a restart of the operator over the N valid identities (time
//! to catch up, and nothing re-issued), the renewal spread, and a mass revocation of 20,000
//! against the bare client's. The operator runs
//! with [`OPERATOR_FLAGS`].

use std::collections::HashMap;
use std::time::{Duration, Instant};

use kube::api::ListParams;
use kube::{Api, Client, ResourceExt};
use nhi_operator::api::MachineIdentity;

use crate::{
    UNPOLICED, baseline, baseline_keys, baseline_writer, crl_serials, operator_run, percentile,
    print_spread, proc_stats, propagation, start_operator_at, steady,
};

/// The mass revocation: this many identities deleted at once (fewer when N is small).
const REVOCATIONS: usize = 20_000;

/// The operator's flags in this mode: certificates of 3 h (renewed after about 2 h), so that no
/// renewal falls inside the run and a restart that issues anything is a re-issue; and a
/// per-namespace revocation quota above the mass revocation (all N live in one namespace; the
/// default quota, 5,000, bounds what one tenant may put on the CRL).
const OPERATOR_FLAGS: [&str; 4] = [
    "--default-ttl",
    "3h",
    "--revocation-quota-per-namespace",
    "25000",
];

/// Every identity of `ns`, listed a page at a time (one list of 100,000 is hundreds of MB).
pub async fn list_all(client: &Client, ns: &str) -> Vec<MachineIdentity> {
    let mis: Api<MachineIdentity> = Api::namespaced(client.clone(), ns);
    let mut items = vec![];
    let mut params = ListParams::default().limit(2000);
    loop {
        let page = mis.list(&params).await.expect("list identities");
        items.extend(page.items);
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => params = params.continue_token(&token),
            None => return items,
        }
    }
}

/// Each identity's current serial, by name.
fn serials(identities: &[MachineIdentity]) -> HashMap<String, String> {
    identities
        .iter()
        .filter_map(|mi| Some((mi.name_any(), mi.status.as_ref()?.serial_number.clone()?)))
        .collect()
}

/// The sum of every sample of `metric` (all label sets) in a Prometheus text exposition.
fn metric_sum(exposition: &str, metric: &str) -> Option<f64> {
    let samples: Vec<f64> = exposition
        .lines()
        .filter(|l| {
            l.strip_prefix(metric)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect();
    (!samples.is_empty()).then(|| samples.iter().sum())
}

/// GET http://`addr``path` (the operator's plain HTTP endpoints): the status code and body.
async fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await.ok()?;
    let code = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_string());
    Some((code, body.unwrap_or_default()))
}

/// A restarted operator over `n` valid identities.
struct Restart {
    child: std::process::Child,
    pid: u32,
    /// Where it serves /metrics.
    addr: String,
    /// From its start until /readyz answers and its metrics count all `n` certificates.
    catch_up: Option<f64>,
    /// Certificates it issued by then (`nhi_certificates_issued_total`).
    issued: f64,
    /// Identities whose serial differs from before the restart, once caught up.
    changed: usize,
}

/// Starts the operator again over the identities of `ns` (their serials `before`) and times its
/// catch-up.
async fn restart(
    client: &Client,
    operator: &str,
    ns: &str,
    before: &HashMap<String, String>,
    concurrency: usize,
) -> Restart {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let addr = format!("127.0.0.1:{port}");
    let start = Instant::now();
    let child = start_operator_at(client, operator, ns, concurrency, &OPERATOR_FLAGS, &addr).await;
    let pid = child.id();
    let deadline = start + Duration::from_secs(900);
    let mut catch_up = None;
    let mut issued = f64::NAN;
    while Instant::now() < deadline {
        let ready = matches!(http_get(&addr, "/readyz").await, Some((200, _)));
        if let Some((200, metrics)) = http_get(&addr, "/metrics").await {
            issued = metric_sum(&metrics, "nhi_certificates_issued_total").unwrap_or(0.0);
            let current = metric_sum(&metrics, "nhi_identities_with_certificate").unwrap_or(0.0);
            if ready && current as usize >= before.len() {
                catch_up = Some(start.elapsed().as_secs_f64());
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let after = serials(&list_all(client, ns).await);
    let changed = before
        .iter()
        .filter(|(name, serial)| after.get(*name) != Some(serial))
        .count();
    Restart {
        child,
        pid,
        addr,
        catch_up,
        issued,
        changed,
    }
}

/// What the bare client measured, carried from its own control plane to the operator's (one
/// line: rate, then the revocation latencies).
struct Baseline {
    rate: f64,
    revocations: Vec<f64>,
}

impl Baseline {
    fn write(&self, path: &str) {
        let latencies: Vec<String> = self.revocations.iter().map(|l| l.to_string()).collect();
        let text = format!("{} {}\n", self.rate, latencies.join(" "));
        std::fs::write(path, text).unwrap_or_else(|e| panic!("cannot write {path}: {e}"));
    }

    fn read(path: &str) -> Baseline {
        let text =
            std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"));
        let mut numbers = text
            .split_whitespace()
            .map(|v| v.parse::<f64>().expect("a number"));
        Baseline {
            rate: numbers.next().expect("the baseline rate"),
            revocations: numbers.collect(),
        }
    }
}

/// How many identities the mass revocation deletes at once.
fn revocations_of(n: usize) -> usize {
    REVOCATIONS.min(n / 5).max(1)
}

/// The bare client's part, on a control plane of its own (e2e/bench.sh starts a fresh one for
/// each part: 2 N identities and their Secrets on one would take the apiserver past 18 GiB):
/// N identities written as the operator would, then the mass revocation; written to `out`.
pub async fn scale_baseline(client: &Client, n: usize, concurrency: usize, out: &str) {
    eprintln!("== baseline: bare client, {n} identities, concurrency {concurrency}");
    let (rate, ns) = baseline(client, n, concurrency).await;
    println!("baseline rate (bare client): {rate:.1} identities/s");
    let r = revocations_of(n);
    // The bare client's serials are short (16 hex digits): 20,000 of the operator's 40-digit
    // ones would not fit its one ConfigMap.
    let names: Vec<(String, String)> = (0..r)
        .map(|i| (format!("b{i}"), format!("{i:016x}")))
        .collect();
    let sink = baseline_writer(client.clone(), ns.clone()).await;
    let revocations = propagation(
        client,
        &ns,
        &names,
        concurrency,
        "baseline-crl",
        baseline_keys,
        Some(sink),
    )
    .await;
    println!(
        "baseline revocation of {r}: {} written, p50/p99 {:.2} / {:.2} s",
        revocations.len(),
        percentile(&revocations, 0.50),
        percentile(&revocations, 0.99)
    );
    Baseline { rate, revocations }.write(out);
}

/// The operator's part, on a fresh control plane, against the bare client's figures in
/// `baseline`; each result is printed as soon as it is measured. Fails when an identity is not
/// Ready, the restart re-issues anything or does not catch up, the peak RSS reaches 400 MiB,
/// the renewal spread exceeds 3, or a revocation is not published.
pub async fn scale_mode(
    client: &Client,
    operator: &str,
    n: usize,
    concurrency: usize,
    baseline: &str,
) {
    let base = Baseline::read(baseline);
    let mut failures = vec![];
    let mib = |kib: u64| kib as f64 / 1024.0;

    eprintln!("== operator: applying {n} identities at once");
    let mut run = operator_run(client, operator, n, concurrency, UNPOLICED, &OPERATOR_FLAGS).await;
    println!(
        "identities:                 {n} ({} Ready)",
        run.ready.len()
    );
    println!(
        "operator rate:              {:.1} identities/s to Ready",
        run.rate
    );
    println!("baseline rate (bare client): {:.1} identities/s", base.rate);
    println!("ratio operator/baseline:    {:.2}", run.rate / base.rate);
    println!(
        "apply-to-Ready p50/p99:     {:.1} / {:.1} s (queueing: all applied at once)",
        percentile(&run.latencies, 0.50),
        percentile(&run.latencies, 0.99)
    );
    println!(
        "operator peak RSS:          {:.1} MiB in the burst ({:.1} MiB before the first identity: {:.0} bytes per identity); CPU {:.1} s",
        mib(run.peak_rss),
        mib(run.idle_rss),
        run.peak_rss.saturating_sub(run.idle_rss) as f64 * 1024.0 / n as f64,
        run.cpu
    );
    if run.ready.len() < n {
        failures.push(format!(
            "only {} of {n} identities became Ready",
            run.ready.len()
        ));
    }
    let spread = steady::renewal_spread(client, &run.ns, "o").await;
    print_spread(spread.as_ref());
    if spread
        .as_ref()
        .is_none_or(|s| s.busiest as f64 > 3.0 * s.mean)
    {
        failures.push("the busiest second of renewals must be at most 3 x the mean".to_string());
    }

    eprintln!("== restart: the operator killed and started again over {n} valid identities");
    run.stop();
    let before = serials(&list_all(client, &run.ns).await);
    let mut again = restart(client, operator, &run.ns, &before, concurrency).await;
    let (rss_caught_up, _) = proc_stats(again.pid);
    println!(
        "restart over {} valid identities: caught up (/readyz, every certificate counted) in {}; {} issued by then, {} serials changed; peak RSS {:.1} MiB by then",
        before.len(),
        again
            .catch_up
            .map_or("never (15 min)".into(), |s| format!("{s:.1} s")),
        again.issued,
        again.changed,
        mib(rss_caught_up),
    );
    if again.catch_up.is_none() || again.issued != 0.0 || again.changed != 0 {
        failures.push("the restart must catch up without re-issuing anything".to_string());
    }

    let r = revocations_of(n);
    eprintln!("== revocation: deleting {r} identities at once, timing each serial into the CRL");
    let victims: Vec<(String, String)> = before
        .iter()
        .take(r)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let revocations = propagation(
        client,
        &run.ns,
        &victims,
        concurrency,
        "nhi-trust",
        crl_serials,
        None,
    )
    .await;
    println!(
        "revocation of {r} at once:  {} published, to CRL p50/p99/max {:.2} / {:.2} / {:.2} s (baseline {} written, p50/p99 {:.2} / {:.2} s; ratio p99 {:.2})",
        revocations.len(),
        percentile(&revocations, 0.50),
        percentile(&revocations, 0.99),
        revocations.last().copied().unwrap_or(f64::NAN),
        base.revocations.len(),
        percentile(&base.revocations, 0.50),
        percentile(&base.revocations, 0.99),
        percentile(&revocations, 0.99) / percentile(&base.revocations, 0.99),
    );
    if revocations.len() < r {
        failures.push(format!(
            "only {} of {r} revocations published",
            revocations.len()
        ));
    }
    // Nothing issued after the catch-up either (the victims are revoked, not re-issued).
    let issued_at_end = match http_get(&again.addr, "/metrics").await {
        Some((200, metrics)) => {
            metric_sum(&metrics, "nhi_certificates_issued_total").unwrap_or(0.0)
        }
        _ => f64::NAN,
    };
    let (rss_after_restart, _) = proc_stats(again.pid);
    let _ = again.child.kill();
    let _ = again.child.wait();
    println!(
        "the restarted operator:     {issued_at_end} issued by the end; peak RSS {:.1} MiB (catch-up, revocations)",
        mib(rss_after_restart)
    );
    if issued_at_end != 0.0 {
        failures.push("the restarted operator issued certificates".to_string());
    }
    if mib(run.peak_rss.max(rss_after_restart)) >= 400.0 {
        failures.push("peak RSS must stay under 400 MiB".to_string());
    }
    if !failures.is_empty() {
        eprintln!("bench: {}", failures.join("; "));
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_baseline_crosses_control_planes_whole() {
        let file = std::env::temp_dir().join(format!("bench-baseline-{}", std::process::id()));
        let path = file.to_str().unwrap();
        let base = Baseline {
            rate: 159.25,
            revocations: vec![0.25, 1.5, 2.0],
        };
        base.write(path);
        let read = Baseline::read(path);
        let _ = std::fs::remove_file(&file);
        assert_eq!(
            (read.rate, read.revocations),
            (159.25, vec![0.25, 1.5, 2.0])
        );
    }

    #[test]
    fn sums_a_metric_over_its_label_sets_only() {
        let text = "# HELP nhi_certificates_issued Certificates issued\n\
                    nhi_certificates_issued_total{reason=\"Initial\"} 3\n\
                    nhi_certificates_issued_total{reason=\"Renewal\"} 2\n\
                    nhi_certificates_issued_totalish 7\n\
                    nhi_identities_with_certificate 100000\n";
        assert_eq!(metric_sum(text, "nhi_certificates_issued_total"), Some(5.0));
        assert_eq!(
            metric_sum(text, "nhi_identities_with_certificate"),
            Some(100000.0)
        );
        assert_eq!(metric_sum(text, "nhi_failures_total"), None);
    }
}
