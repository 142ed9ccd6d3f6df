//! Which grants an identity holds now: the union of the grants of every active Entitlement that
//! selects it, and when that answer next changes (pure).

use std::collections::{BTreeMap, BTreeSet};

use time::format_description::well_known::Rfc3339;
use time::{Duration, OffsetDateTime};

use super::selector::selector_matches;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use nhi_api::Entitlement;

/// An Entitlement as plain data, with its times parsed.
#[derive(Clone, Debug, PartialEq)]
pub struct EntitlementFacts {
    pub name: String,
    pub names: BTreeSet<String>,
    /// The uid each named subject is pinned to (empty when the pins are of an older spec
    /// generation: the current identities of those names are then bound, and pinned).
    pub pins: BTreeMap<String, String>,
    pub selector: Option<LabelSelector>,
    pub grants: BTreeSet<String>,
    pub not_before: Option<OffsetDateTime>,
    pub expires_at: Option<OffsetDateTime>,
    /// How long before `expiresAt` the grants leave certificates: a tenth of the active window,
    /// at most [`MAX_EXPIRY_LEAD`]. Certificates are replaced by ones without the grants that much
    /// before the capped ones end, so workloads switch before their certificate expires.
    pub expiry_lead: Duration,
}

/// The longest [`EntitlementFacts::expiry_lead`].
pub const MAX_EXPIRY_LEAD: Duration = Duration::seconds(60);

/// The expiry lead of a window from `start` to `end`.
pub fn expiry_lead(start: Option<OffsetDateTime>, end: Option<OffsetDateTime>) -> Duration {
    match (start, end) {
        (Some(s), Some(e)) if e > s => ((e - s) / 10_i32).min(MAX_EXPIRY_LEAD),
        (None, Some(_)) => MAX_EXPIRY_LEAD,
        _ => Duration::ZERO,
    }
}

/// Where an Entitlement stands at a given moment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// `notBefore` lies ahead.
    Pending,
    /// Its grants apply.
    Active,
    /// `expiresAt` has passed.
    Expired,
}

impl EntitlementFacts {
    /// Reads an Entitlement; a timestamp that does not parse is an error for its status.
    pub fn from_resource(ent: &Entitlement) -> Result<Self, String> {
        // Certificates carry whole seconds: so do the times they are compared with.
        let parse = |field: &str, v: &Option<String>| -> Result<Option<OffsetDateTime>, String> {
            v.as_deref()
                .map(|s| {
                    OffsetDateTime::parse(s, &Rfc3339)
                        .map(|t| t.replace_nanosecond(0).unwrap_or(t))
                        .map_err(|e| {
                            format!("spec.{field} {s:?} is not an RFC 3339 timestamp: {e}")
                        })
                })
                .transpose()
        };
        let not_before = parse("notBefore", &ent.spec.not_before)?;
        let expires_at = parse("expiresAt", &ent.spec.expires_at)?;
        // The active window starts at notBefore, or when the Entitlement was created.
        let created = ent
            .metadata
            .creation_timestamp
            .as_ref()
            .and_then(|t| OffsetDateTime::from_unix_timestamp(t.0.as_second()).ok());
        let status = ent.status.as_ref();
        let pins = status
            .filter(|s| {
                s.pinned_generation.is_some() && s.pinned_generation == ent.metadata.generation
            })
            .map(|s| {
                s.pinned_subjects
                    .iter()
                    .map(|p| (p.name.clone(), p.uid.clone()))
                    .collect()
            })
            .unwrap_or_default();
        Ok(EntitlementFacts {
            name: ent.metadata.name.clone().unwrap_or_default(),
            names: ent.spec.subjects.names.iter().cloned().collect(),
            pins,
            selector: ent.spec.subjects.selector.clone(),
            grants: ent.spec.grants.iter().cloned().collect(),
            not_before,
            expires_at,
            expiry_lead: expiry_lead(not_before.or(created), expires_at),
        })
    }

    /// The moment its grants leave certificates: `expiresAt` less the expiry lead.
    pub fn ends_at(&self) -> Option<OffsetDateTime> {
        self.expires_at.map(|t| t - self.expiry_lead)
    }

    /// Its phase at `now`: active from `notBefore` (inclusive) until [`Self::ends_at`]
    /// (exclusive).
    pub fn phase(&self, now: OffsetDateTime) -> Phase {
        if self.ends_at().is_some_and(|t| now >= t) {
            Phase::Expired
        } else if self.not_before.is_some_and(|t| now < t) {
            Phase::Pending
        } else {
            Phase::Active
        }
    }

    /// Whether it selects the identity `name` with `labels` (by name, or by its selector). A
    /// named subject is selected only when its `uid` is the one pinned for the name, if one is
    /// (None: whatever the pin, for callers that only need who may be affected). A selector that
    /// cannot be evaluated is an error for every identity, named ones included: an Entitlement
    /// reported invalid grants nothing.
    pub fn selects(
        &self,
        name: &str,
        uid: Option<&str>,
        labels: &BTreeMap<String, String>,
    ) -> Result<bool, String> {
        let by_selector = match &self.selector {
            Some(sel) => selector_matches(sel, labels)?,
            None => false,
        };
        Ok(by_selector || self.names.contains(name) && !self.replaced(name, uid))
    }

    /// Whether the identity `name` with `uid` is not the one the name is pinned to (it was
    /// re-created since it was bound).
    pub fn replaced(&self, name: &str, uid: Option<&str>) -> bool {
        match (self.pins.get(name), uid) {
            (Some(pinned), Some(uid)) => pinned != uid,
            _ => false,
        }
    }

    /// The next moment after `now` its phase changes, if any.
    pub fn next_transition(&self, now: OffsetDateTime) -> Option<OffsetDateTime> {
        [self.not_before, self.ends_at()]
            .into_iter()
            .flatten()
            .filter(|t| *t > now)
            .min()
    }
}

/// An identity's effective grants at a moment.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EffectiveGrants {
    /// The union of the grants of the active Entitlements selecting the identity.
    pub grants: BTreeSet<String>,
    /// When each grant that ends ends: the latest expiry among its givers (a grant some giver
    /// gives for good is not here).
    pub grant_ends: BTreeMap<String, OffsetDateTime>,
    /// The latest moment a certificate carrying `grants` may be valid: for each grant, the
    /// latest expiry among the Entitlements giving it (none if one never expires), and the
    /// earliest of those over all grants.
    pub not_after_cap: Option<OffsetDateTime>,
    /// The next moment the answer changes (an Entitlement selecting the identity starts or ends).
    pub next_change: Option<OffsetDateTime>,
    /// Every Entitlement that selects the identity, whatever its phase (sorted).
    pub selected_by: Vec<String>,
}

/// Resolves the effective grants of identity `name` (with `uid` and `labels`) among the
/// Entitlements of its namespace. An Entitlement whose selector cannot be evaluated selects
/// nothing (its own status says why).
pub fn effective_grants(
    name: &str,
    uid: &str,
    labels: &BTreeMap<String, String>,
    entitlements: &[EntitlementFacts],
    now: OffsetDateTime,
) -> EffectiveGrants {
    let mut out = EffectiveGrants::default();
    // grant -> latest expiry among active givers (None: one of them never expires).
    let mut expiry: BTreeMap<&str, Option<OffsetDateTime>> = BTreeMap::new();
    for ent in entitlements {
        if !ent.selects(name, Some(uid), labels).unwrap_or(false) {
            continue;
        }
        out.selected_by.push(ent.name.clone());
        out.next_change = match (out.next_change, ent.next_transition(now)) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if ent.phase(now) != Phase::Active {
            continue;
        }
        for grant in &ent.grants {
            let latest = expiry.entry(grant).or_insert(ent.expires_at);
            *latest = match (*latest, ent.expires_at) {
                (Some(a), Some(b)) => Some(a.max(b)),
                _ => None,
            };
        }
    }
    out.not_after_cap = expiry.values().flatten().min().copied();
    out.grants = expiry.keys().map(|g| g.to_string()).collect();
    out.grant_ends = expiry
        .iter()
        .filter_map(|(g, end)| end.map(|end| (g.to_string(), end)))
        .collect();
    out.selected_by.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t0() -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap()
    }

    fn ent(name: &str, names: &[&str], grants: &[&str]) -> EntitlementFacts {
        EntitlementFacts {
            name: name.into(),
            names: names.iter().map(|s| s.to_string()).collect(),
            pins: BTreeMap::new(),
            selector: None,
            grants: grants.iter().map(|s| s.to_string()).collect(),
            not_before: None,
            expires_at: None,
            expiry_lead: Duration::ZERO,
        }
    }

    fn no_labels() -> BTreeMap<String, String> {
        BTreeMap::new()
    }

    fn set(items: &[&str]) -> BTreeSet<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    fn effective_grants_of(
        name: &str,
        labels: &BTreeMap<String, String>,
        entitlements: &[EntitlementFacts],
        now: OffsetDateTime,
    ) -> EffectiveGrants {
        effective_grants(name, "uid-1", labels, entitlements, now)
    }

    #[test]
    fn a_named_subject_re_created_under_its_name_is_not_selected() {
        let mut e = ent("pinned", &["checkout"], &["payments.process"]);
        e.pins = [("checkout".to_string(), "uid-1".to_string())].into();
        let at = |e: &EntitlementFacts, uid| {
            effective_grants("checkout", uid, &no_labels(), std::slice::from_ref(e), t0())
        };
        assert_eq!(at(&e, "uid-1").grants, set(&["payments.process"]));
        assert!(
            at(&e, "uid-2").grants.is_empty(),
            "a re-created identity inherits nothing"
        );
        assert!(
            e.selects("checkout", None, &no_labels()).unwrap(),
            "who may be affected"
        );
        // Not pinned yet (a new name, or a new spec generation): selected, then pinned.
        e.pins.clear();
        assert_eq!(at(&e, "uid-2").grants, set(&["payments.process"]));
    }

    #[test]
    fn union_of_the_active_entitlements_that_select_the_identity() {
        let ents = [
            ent("a", &["api"], &["payments.process"]),
            ent("b", &["api", "web"], &["payments.read", "payments.process"]),
            ent("c", &["web"], &["admin"]),
        ];
        let e = effective_grants_of("api", &no_labels(), &ents, t0());
        assert_eq!(e.grants, set(&["payments.process", "payments.read"]));
        assert_eq!(e.not_after_cap, None);
        assert_eq!(e.next_change, None);
        assert_eq!(e.selected_by, vec!["a", "b"]);
        assert!(
            effective_grants_of("other", &no_labels(), &ents, t0())
                .grants
                .is_empty()
        );
    }

    #[test]
    fn selects_by_label() {
        let mut e = ent("sel", &[], &["reports.read"]);
        e.selector = Some(LabelSelector {
            match_labels: Some([("team".to_string(), "pay".to_string())].into()),
            match_expressions: None,
        });
        let pay = [("team".to_string(), "pay".to_string())].into();
        assert_eq!(
            effective_grants_of("x", &pay, std::slice::from_ref(&e), t0()).grants,
            set(&["reports.read"])
        );
        assert!(
            effective_grants_of("x", &no_labels(), &[e], t0())
                .grants
                .is_empty()
        );
    }

    #[test]
    fn time_bound_grants_start_and_end_and_cap_the_certificate() {
        let mut jit = ent("jit", &["api"], &["db.admin"]);
        jit.not_before = Some(t0() + Duration::minutes(10));
        jit.expires_at = Some(t0() + Duration::minutes(40));
        let ents = [jit, ent("base", &["api"], &["db.read"])];
        // Before: not carried, and the start is the next change.
        let before = effective_grants_of("api", &no_labels(), &ents, t0());
        assert_eq!(before.grants, set(&["db.read"]));
        assert_eq!(before.not_after_cap, None);
        assert_eq!(before.next_change, Some(t0() + Duration::minutes(10)));
        // During: carried, capping the certificate; the end is the next change.
        let during = effective_grants_of("api", &no_labels(), &ents, t0() + Duration::minutes(10));
        assert_eq!(during.grants, set(&["db.admin", "db.read"]));
        assert_eq!(during.not_after_cap, Some(t0() + Duration::minutes(40)));
        assert_eq!(during.next_change, Some(t0() + Duration::minutes(40)));
        // At expiresAt: gone.
        let after = effective_grants_of("api", &no_labels(), &ents, t0() + Duration::minutes(40));
        assert_eq!(after.grants, set(&["db.read"]));
        assert_eq!(after.not_after_cap, None);
        assert_eq!(after.next_change, None);
    }

    #[test]
    fn overlapping_grants_last_as_long_as_their_longest_giver() {
        let mut short = ent("short", &["api"], &["db.read", "db.write"]);
        short.expires_at = Some(t0() + Duration::minutes(5));
        let mut long = ent("long", &["api"], &["db.read"]);
        long.expires_at = Some(t0() + Duration::minutes(50));
        let forever = ent("forever", &["api"], &["db.read"]);
        // db.write ends at 5 min (only `short` gives it), so that is the cap.
        let e = effective_grants_of("api", &no_labels(), &[short.clone(), long.clone()], t0());
        assert_eq!(e.not_after_cap, Some(t0() + Duration::minutes(5)));
        // Each grant's own end: a task carrying db.read only lasts until 50 min.
        assert_eq!(
            e.grant_ends,
            [
                ("db.read".to_string(), t0() + Duration::minutes(50)),
                ("db.write".to_string(), t0() + Duration::minutes(5)),
            ]
            .into()
        );
        // Without db.write, db.read lasts until the longest giver ends...
        let mut short_read = short.clone();
        short_read.grants = set(&["db.read"]);
        let e = effective_grants_of("api", &no_labels(), &[short_read.clone(), long], t0());
        assert_eq!(e.not_after_cap, Some(t0() + Duration::minutes(50)));
        assert_eq!(e.next_change, Some(t0() + Duration::minutes(5)));
        // ...and is not capped at all when one giver never expires.
        let e = effective_grants_of("api", &no_labels(), &[short_read, forever], t0());
        assert_eq!(e.not_after_cap, None);
        assert!(e.grant_ends.is_empty());
    }

    #[test]
    fn grants_leave_certificates_a_tenth_of_the_window_before_they_expire() {
        assert_eq!(
            expiry_lead(Some(t0()), Some(t0() + Duration::seconds(25))),
            Duration::milliseconds(2500)
        );
        assert_eq!(
            expiry_lead(Some(t0()), Some(t0() + Duration::hours(8))),
            MAX_EXPIRY_LEAD
        );
        assert_eq!(expiry_lead(Some(t0()), None), Duration::ZERO);
        let mut jit = ent("jit", &["api"], &["db.admin"]);
        jit.expires_at = Some(t0() + Duration::minutes(40));
        jit.expiry_lead = Duration::seconds(30);
        let ents = [jit];
        let at = |t| effective_grants_of("api", &no_labels(), &ents, t);
        let before = at(t0() + Duration::minutes(39));
        assert_eq!(before.grants, set(&["db.admin"]));
        // The certificate is still capped at expiresAt itself...
        assert_eq!(before.not_after_cap, Some(t0() + Duration::minutes(40)));
        // ...and the grant leaves 30 s before it, which is the next change.
        assert_eq!(
            before.next_change,
            Some(t0() + Duration::minutes(40) - Duration::seconds(30))
        );
        assert!(
            at(t0() + Duration::minutes(40) - Duration::seconds(30))
                .grants
                .is_empty()
        );
    }

    #[test]
    fn an_unusable_selector_selects_nothing_not_even_named_subjects() {
        let mut e = ent("bad", &["x"], &["x.read"]);
        e.selector = Some(LabelSelector {
            match_labels: None,
            match_expressions: Some(vec![
                k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement {
                    key: "a".into(),
                    operator: "Sometimes".into(),
                    values: None,
                },
            ]),
        });
        assert!(
            effective_grants_of("x", &no_labels(), &[e], t0())
                .grants
                .is_empty()
        );
    }
}
