//! `make bench MODE=steady`: with N identities in place, new ones applied at a steady rate (open
//! loop) and each timed from its create to Ready, against the burst's latency measured in the
//! same run; and the renewal spread of identities created together.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kube::api::PostParams;
use kube::{Api, Client, ResourceExt};
use nhi_operator::api::MachineIdentity;
use time::OffsetDateTime;

use crate::{served_identity, watch_ready};

/// Applies `count` identities to `ns` at `rate` per second, each when it is due (a late create
/// does not delay the next), and returns each one's create-to-Ready latency in seconds, sorted.
pub async fn steady_phase(client: &Client, ns: &str, rate: f64, count: usize) -> Vec<f64> {
    let mis: Api<MachineIdentity> = Api::namespaced(client.clone(), ns);
    let applied: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let (ready, watch) = watch_ready(mis.clone());
    // Let the watch list what exists before the first create.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let start = tokio::time::Instant::now();
    let mut creates = vec![];
    for i in 0..count {
        tokio::time::sleep_until(start + Duration::from_secs_f64(i as f64 / rate)).await;
        let (mis, applied, ns) = (mis.clone(), applied.clone(), ns.to_string());
        creates.push(tokio::spawn(async move {
            let name = format!("s{i}");
            applied.lock().unwrap().insert(name.clone(), Instant::now());
            mis.create(&PostParams::default(), &served_identity(&name, &ns))
                .await
                .expect("create an identity");
        }));
    }
    for c in creates {
        c.await.expect("a create");
    }
    let applied = applied.lock().unwrap().clone();
    let steady_ready = |ready: &HashMap<String, (Instant, String)>| {
        applied.keys().filter(|k| ready.contains_key(*k)).count()
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    while steady_ready(&ready.lock().unwrap()) < count && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    watch.abort();
    let ready = ready.lock().unwrap().clone();
    let mut latencies: Vec<f64> = applied
        .iter()
        .filter_map(|(k, a)| {
            ready
                .get(k)
                .map(|(r, _)| r.duration_since(*a).as_secs_f64())
        })
        .collect();
    latencies.sort_by(|a, b| a.partial_cmp(b).unwrap());
    latencies
}

/// When the identities of a namespace renew, per second over the window they span.
pub struct Spread {
    pub identities: usize,
    pub window_seconds: usize,
    pub busiest: usize,
    pub mean: f64,
    /// The window in ten equal parts: renewals in each.
    pub tenths: Vec<usize>,
}

/// The renewal spread of the identities in `ns` whose names start with `prefix` (from each
/// one's `status.renewalTime`).
pub async fn renewal_spread(client: &Client, ns: &str, prefix: &str) -> Option<Spread> {
    let times: Vec<i64> = crate::scale::list_all(client, ns)
        .await
        .iter()
        .filter(|mi| mi.name_any().starts_with(prefix))
        .filter_map(|mi| mi.status.as_ref()?.renewal_time.clone())
        .filter_map(|t| {
            OffsetDateTime::parse(&t, &time::format_description::well_known::Rfc3339).ok()
        })
        .map(|t| t.unix_timestamp())
        .collect();
    let (first, last) = (*times.iter().min()?, *times.iter().max()?);
    let window = (last - first + 1) as usize;
    let mut per_second = vec![0usize; window];
    for t in &times {
        per_second[(t - first) as usize] += 1;
    }
    let mut tenths = vec![0usize; 10];
    for (second, count) in per_second.iter().enumerate() {
        tenths[(second * 10 / window).min(9)] += count;
    }
    Some(Spread {
        identities: times.len(),
        window_seconds: window,
        busiest: per_second.iter().copied().max().unwrap_or(0),
        mean: times.len() as f64 / window as f64,
        tenths,
    })
}
