//! The trust documents as HTTP serves them: shared buffers that every response clones for free,
//! built once per signed CRL on the leader, and on a standby read from the published ConfigMaps
//! at most once per [`STANDBY_REFRESH`], whatever the request rate (one read at a time).

use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use axum::body::Bytes;
use tokio::sync::Mutex;

use crate::revoke::Revoker;
use crate::revoke::trust::{CA_KEY, CRL_KEY, TrustDocuments, trust_field_selector, trust_selector};

/// How long a standby serves what it read before reading again.
pub const STANDBY_REFRESH: Duration = Duration::from_secs(10);

/// How long a standby that found nothing published waits before looking again.
pub const STANDBY_RETRY: Duration = Duration::from_secs(1);

/// The documents ready to serve.
#[derive(Clone)]
pub struct Served {
    pub ca: Bytes,
    pub crl: Bytes,
}

impl Served {
    fn of(d: &TrustDocuments) -> Self {
        Served {
            ca: Bytes::from(d.ca_pem.clone()),
            crl: Bytes::from(d.crl_pem.clone()),
        }
    }
}

/// Where a replica without documents of its own (a standby) reads the published ones: any
/// `nhi-trust` ConfigMap in the watched scope (they all hold the same documents).
#[derive(Clone)]
pub struct PublishedTrust {
    pub client: kube::Client,
    pub scope: Option<String>,
}

impl PublishedTrust {
    async fn read(&self) -> Option<TrustDocuments> {
        use k8s_openapi::api::core::v1::ConfigMap;
        let api: kube::Api<ConfigMap> =
            crate::kube_api::scoped_api(self.client.clone(), self.scope.as_deref());
        // From the apiserver's watch cache, not etcd.
        let lp = kube::api::ListParams::default()
            .fields(&trust_field_selector())
            .labels(&trust_selector())
            .match_any()
            .limit(1);
        let cm = api.list(&lp).await.ok()?.items.into_iter().next()?;
        let data = cm.data?;
        Some(TrustDocuments {
            ca_pem: data.get(CA_KEY)?.clone(),
            crl_pem: data.get(CRL_KEY)?.clone(),
            crl_number: 0,
        })
    }
}

/// The cache.
pub struct TrustCache {
    revoker: Revoker,
    published: Option<PublishedTrust>,
    /// The leader's documents the buffers were built from, and the buffers.
    leader: ArcSwapOption<(Arc<TrustDocuments>, Served)>,
    /// What a standby read, and when; the lock makes concurrent requests share one read.
    standby: Mutex<Option<(Instant, Option<Served>)>>,
}

impl TrustCache {
    pub fn new(revoker: Revoker, published: Option<PublishedTrust>) -> Self {
        TrustCache {
            revoker,
            published,
            leader: ArcSwapOption::empty(),
            standby: Mutex::new(None),
        }
    }

    /// The documents to serve: the leader's own, else the published ones, else None (nothing
    /// published yet).
    pub async fn documents(&self) -> Option<Served> {
        if let Some(docs) = self.revoker.documents() {
            if let Some(cached) = self.leader.load_full()
                && Arc::ptr_eq(&cached.0, &docs)
            {
                return Some(cached.1.clone());
            }
            let served = Served::of(&docs);
            self.leader.store(Some(Arc::new((docs, served.clone()))));
            return Some(served);
        }
        let published = self.published.as_ref()?;
        let mut standby = self.standby.lock().await;
        // Nothing published yet is looked for again sooner.
        if let Some((at, served)) = standby.as_ref()
            && at.elapsed()
                < if served.is_some() {
                    STANDBY_REFRESH
                } else {
                    STANDBY_RETRY
                }
        {
            return served.clone();
        }
        let served = published.read().await.as_ref().map(Served::of);
        *standby = Some((Instant::now(), served.clone()));
        served
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_leader_builds_its_buffers_once_per_document() {
        let (revoker, _inbox) = crate::revoke::channel();
        let cache = TrustCache::new(revoker.clone(), None);
        assert!(cache.documents().await.is_none(), "nothing signed yet");
        let docs = TrustDocuments {
            ca_pem: "CA".into(),
            crl_pem: "CRL-1".into(),
            crl_number: 1,
        };
        revoker.publish_for_test(docs.clone());
        let first = cache.documents().await.unwrap();
        let again = cache.documents().await.unwrap();
        assert_eq!(&first.crl[..], b"CRL-1");
        assert_eq!(
            first.crl.as_ptr(),
            again.crl.as_ptr(),
            "the same buffer, not a copy per response"
        );
        revoker.publish_for_test(TrustDocuments {
            crl_pem: "CRL-2".into(),
            crl_number: 2,
            ..docs
        });
        assert_eq!(&cache.documents().await.unwrap().crl[..], b"CRL-2");
    }
}
