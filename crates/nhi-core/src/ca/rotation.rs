//! CA rotation decisions, as plain functions: the phase a rotation is in, the next step, when each
//! identity re-issues, and when the retiring root may leave the trust bundles.
//!
//! A rotation never breaks a handshake: the next root is published next to the current one and
//! reaches every bundle before it signs anything; the retiring root stays trusted until every
//! certificate it signed has expired.

use time::{Duration, OffsetDateTime};

/// Where a rotation stands, as recorded on the CA Secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Phase {
    /// No rotation in progress.
    Idle,
    /// The next root is published next to the current one; the current CA still signs.
    /// `distributed_at`: when every identity Secret and trust ConfigMap was first seen carrying
    /// both roots.
    Publishing {
        started_at: OffsetDateTime,
        distributed_at: Option<OffsetDateTime>,
    },
    /// The new CA signs and identities re-issue; the retiring root stays trusted until
    /// `retire_after`, when no certificate it signed is unexpired.
    Reissuing {
        switched_at: OffsetDateTime,
        retire_after: OffsetDateTime,
    },
}

impl Phase {
    /// The phase's name, as written in the `nhi.dev/ca-rotation-phase` annotation.
    pub fn name(&self) -> &'static str {
        match self {
            Phase::Idle => "Idle",
            Phase::Publishing { .. } => PUBLISHING,
            Phase::Reissuing { .. } => REISSUING,
        }
    }

    /// The phase as the `nhi_ca_rotation_phase` metric shows it.
    pub fn number(&self) -> i64 {
        match self {
            Phase::Idle => 0,
            Phase::Publishing { .. } => 1,
            Phase::Reissuing { .. } => 2,
        }
    }
}

/// The annotation value of the publishing phase.
pub const PUBLISHING: &str = "Publishing";
/// The annotation value of the re-issuing phase.
pub const REISSUING: &str = "Reissuing";

/// Why a rotation starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Trigger {
    /// `nhi.dev/rotate-ca` on the CA Secret carries a value not answered yet.
    Requested(String),
    /// The CA ends within `--ca-renew-before`.
    Expiring,
}

/// The operator's rotation settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RotationPolicy {
    /// Start a rotation when the CA ends within this.
    pub renew_before: Duration,
    /// After the bundles carry both roots, wait this long before signing with the new CA (the
    /// time kubelet takes to update a mounted Secret or ConfigMap).
    pub propagation: Duration,
    /// Re-issues after the switch are spread over this long.
    pub spread: Duration,
    /// The longest certificate lifetime the operator issues: no certificate of the retiring CA
    /// outlives the switch by more.
    pub max_ttl: Duration,
}

/// What the rotation controller knows at one moment.
#[derive(Clone, Debug)]
pub struct RotationFacts<'a> {
    pub phase: Phase,
    pub now: OffsetDateTime,
    /// End of the signing CA's validity.
    pub ca_not_after: OffsetDateTime,
    /// Whether the operator made the CA (a self-signed root) and may make its successor.
    pub self_managed: bool,
    /// The value of `nhi.dev/rotate-ca`, if set.
    pub requested: Option<&'a str>,
    /// The request value last answered.
    pub answered: Option<&'a str>,
    /// Whether every identity Secret and trust ConfigMap carries the current bundle.
    pub distributed: bool,
    /// Whether the revocation record fits in a trust ConfigMap twice: once in the retiring CA's
    /// CRL and once in the new CA's, as from the switch on. False while it is not known.
    pub revocation_room: bool,
}

/// The next step of a rotation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Nothing to do now.
    Wait,
    /// Make the next root and publish it next to the current one.
    Start(Trigger),
    /// A rotation is wanted but the CA was provided: the operator cannot make its successor.
    Unsupported(Trigger),
    /// Every bundle carries both roots: record when, the propagation wait starts.
    Distributed,
    /// Sign with the new CA.
    Switch,
    /// The switch is due, but the revocation record is too large to be listed by two CRLs:
    /// wait until entries expire (meanwhile revocations are admitted only as far as two CRLs
    /// hold them, so the record shrinks within the longest certificate lifetime).
    AwaitRevocationRoom,
    /// No certificate of the retiring root is unexpired: drop it from the bundles.
    Drop,
}

/// The next step from `facts`.
pub fn next_step(facts: &RotationFacts<'_>, policy: &RotationPolicy) -> Step {
    match &facts.phase {
        Phase::Idle => {
            let trigger = match (facts.requested, facts.answered) {
                (Some(r), answered) if !r.is_empty() && answered != Some(r) => {
                    Some(Trigger::Requested(r.to_string()))
                }
                _ if facts.ca_not_after - facts.now <= policy.renew_before => {
                    Some(Trigger::Expiring)
                }
                _ => None,
            };
            match trigger {
                Some(t) if facts.self_managed => Step::Start(t),
                Some(t) => Step::Unsupported(t),
                None => Step::Wait,
            }
        }
        Phase::Publishing {
            distributed_at: None,
            ..
        } if facts.distributed => Step::Distributed,
        Phase::Publishing {
            distributed_at: Some(at),
            ..
        } if facts.now >= *at + policy.propagation => {
            if facts.revocation_room {
                Step::Switch
            } else {
                Step::AwaitRevocationRoom
            }
        }
        Phase::Reissuing { retire_after, .. } if facts.now >= *retire_after => Step::Drop,
        _ => Step::Wait,
    }
}

/// How long until the facts may call for a step without anything else changing: the rotation
/// controller looks again then (and at every change of the CA Secret).
pub fn recheck_in(facts: &RotationFacts<'_>, policy: &RotationPolicy) -> Duration {
    const WHILE_DISTRIBUTING: Duration = Duration::seconds(2);
    const AT_MOST: Duration = Duration::minutes(10);
    let until = |at: OffsetDateTime| (at - facts.now).clamp(Duration::seconds(1), AT_MOST);
    match &facts.phase {
        Phase::Idle => until(facts.ca_not_after - policy.renew_before),
        Phase::Publishing {
            distributed_at: None,
            ..
        } => WHILE_DISTRIBUTING,
        Phase::Publishing {
            distributed_at: Some(at),
            ..
        } => until(*at + policy.propagation),
        Phase::Reissuing { retire_after, .. } => until(*retire_after),
    }
}

/// Allowance for peers whose clocks run behind, and for a signature made with the retiring CA
/// just as the switch was written: the retiring root stays this much longer.
pub const RETIRE_SKEW: Duration = Duration::seconds(30);

/// When the retiring root may leave the bundles: once every certificate it can have signed has
/// expired. It signed nothing after `switched_at`, and nothing it signed lives longer than
/// `max_ttl` (nor past the root itself). A bound, not a tally of what was issued: it holds after
/// restarts, failovers and lost status writes alike.
pub fn retire_after(
    switched_at: OffsetDateTime,
    max_ttl: Duration,
    retiring_not_after: OffsetDateTime,
) -> OffsetDateTime {
    (switched_at + max_ttl + RETIRE_SKEW).min(retiring_not_after)
}

/// When identity `uid` re-issues after the switch: a point within `spread` of `switched_at`, the
/// same for the same identity on every replica and restart, spread evenly across identities.
pub fn reissue_slot(uid: &str, switched_at: OffsetDateTime, spread: Duration) -> OffsetDateTime {
    let fraction = (crate::issue::renewal::jitter_unit(uid) + 1.0) / 2.0;
    switched_at + spread * fraction
}

/// When a certificate signed by the retiring CA is re-issued: at its slot, or its own renewal if
/// that comes first. None: now.
pub fn deferred_until(
    slot: OffsetDateTime,
    renew_at: OffsetDateTime,
    now: OffsetDateTime,
) -> Option<OffsetDateTime> {
    let at = slot.min(renew_at);
    (at > now).then_some(at)
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2026-11-23 12:00 UTC);

    fn policy() -> RotationPolicy {
        RotationPolicy {
            renew_before: Duration::days(30),
            propagation: Duration::minutes(2),
            spread: Duration::minutes(10),
            max_ttl: Duration::hours(24),
        }
    }

    fn facts(phase: Phase) -> RotationFacts<'static> {
        RotationFacts {
            phase,
            now: NOW,
            ca_not_after: NOW + Duration::days(300),
            self_managed: true,
            requested: None,
            answered: None,
            distributed: false,
            revocation_room: true,
        }
    }

    #[test]
    fn an_idle_ca_far_from_expiry_waits() {
        let f = facts(Phase::Idle);
        assert_eq!(next_step(&f, &policy()), Step::Wait);
        assert_eq!(recheck_in(&f, &policy()), Duration::minutes(10));
    }

    #[test]
    fn a_new_request_starts_a_rotation_and_an_answered_one_does_not() {
        let mut f = facts(Phase::Idle);
        f.requested = Some("2026-11-23T12:00:00Z");
        assert_eq!(
            next_step(&f, &policy()),
            Step::Start(Trigger::Requested("2026-11-23T12:00:00Z".into()))
        );
        f.answered = Some("2026-11-23T12:00:00Z");
        assert_eq!(next_step(&f, &policy()), Step::Wait);
        f.requested = Some("");
        f.answered = None;
        assert_eq!(next_step(&f, &policy()), Step::Wait);
    }

    #[test]
    fn a_ca_within_renew_before_of_its_end_rotates() {
        let mut f = facts(Phase::Idle);
        f.ca_not_after = NOW + Duration::days(30);
        assert_eq!(next_step(&f, &policy()), Step::Start(Trigger::Expiring));
        f.ca_not_after = NOW + Duration::days(31);
        assert_eq!(next_step(&f, &policy()), Step::Wait);
        assert_eq!(recheck_in(&f, &policy()), Duration::minutes(10));
    }

    #[test]
    fn a_provided_ca_is_never_replaced() {
        let mut f = facts(Phase::Idle);
        f.self_managed = false;
        f.requested = Some("now");
        assert_eq!(
            next_step(&f, &policy()),
            Step::Unsupported(Trigger::Requested("now".into()))
        );
    }

    #[test]
    fn publishing_switches_only_after_distribution_and_propagation() {
        let started = Phase::Publishing {
            started_at: NOW,
            distributed_at: None,
        };
        let mut f = facts(started.clone());
        assert_eq!(next_step(&f, &policy()), Step::Wait);
        assert_eq!(recheck_in(&f, &policy()), Duration::seconds(2));
        f.distributed = true;
        assert_eq!(next_step(&f, &policy()), Step::Distributed);
        // A request meanwhile waits for the rotation under way.
        f.requested = Some("again");
        f.phase = Phase::Publishing {
            started_at: NOW,
            distributed_at: Some(NOW - Duration::seconds(90)),
        };
        assert_eq!(next_step(&f, &policy()), Step::Wait);
        assert_eq!(recheck_in(&f, &policy()), Duration::seconds(30));
        f.phase = Phase::Publishing {
            started_at: NOW,
            distributed_at: Some(NOW - Duration::minutes(2)),
        };
        assert_eq!(next_step(&f, &policy()), Step::Switch);
    }

    #[test]
    fn the_switch_waits_for_a_record_that_two_crls_can_list() {
        let mut f = facts(Phase::Publishing {
            started_at: NOW,
            distributed_at: Some(NOW - Duration::minutes(2)),
        });
        f.revocation_room = false;
        assert_eq!(next_step(&f, &policy()), Step::AwaitRevocationRoom);
        // Before the propagation wait is over, there is nothing to wait for yet.
        f.phase = Phase::Publishing {
            started_at: NOW,
            distributed_at: Some(NOW - Duration::seconds(30)),
        };
        assert_eq!(next_step(&f, &policy()), Step::Wait);
        f.phase = Phase::Publishing {
            started_at: NOW,
            distributed_at: Some(NOW - Duration::minutes(5)),
        };
        f.revocation_room = true;
        assert_eq!(next_step(&f, &policy()), Step::Switch);
    }

    #[test]
    fn the_retiring_root_is_dropped_once_its_certificates_expired() {
        let mut f = facts(Phase::Reissuing {
            switched_at: NOW - Duration::minutes(30),
            retire_after: NOW + Duration::minutes(31),
        });
        assert_eq!(next_step(&f, &policy()), Step::Wait);
        assert_eq!(recheck_in(&f, &policy()), Duration::minutes(10));
        f.now = NOW + Duration::minutes(31);
        assert_eq!(next_step(&f, &policy()), Step::Drop);
    }

    #[test]
    fn retire_after_is_the_longest_lifetime_plus_skew_capped_by_the_root() {
        let root_end = NOW + Duration::days(10);
        assert_eq!(
            retire_after(NOW, Duration::hours(1), root_end),
            NOW + Duration::hours(1) + RETIRE_SKEW
        );
        assert_eq!(retire_after(NOW, Duration::days(20), root_end), root_end);
    }

    #[test]
    fn slots_are_stable_within_the_spread_and_spread_out() {
        let spread = Duration::minutes(10);
        let slots: Vec<OffsetDateTime> = (0..200)
            .map(|i| reissue_slot(&format!("uid-{i}"), NOW, spread))
            .collect();
        assert!(slots.iter().all(|s| *s >= NOW && *s <= NOW + spread));
        assert_eq!(slots[7], reissue_slot("uid-7", NOW, spread));
        let early = slots
            .iter()
            .filter(|s| **s < NOW + Duration::minutes(5))
            .count();
        assert!(
            (60..140).contains(&early),
            "{early} of 200 in the first half"
        );
        assert_eq!(reissue_slot("x", NOW, Duration::ZERO), NOW);
    }

    #[test]
    fn a_deferred_reissue_waits_for_its_slot_or_its_renewal() {
        let slot = NOW + Duration::minutes(4);
        assert_eq!(
            deferred_until(slot, NOW + Duration::minutes(20), NOW),
            Some(slot)
        );
        assert_eq!(
            deferred_until(slot, NOW + Duration::minutes(1), NOW),
            Some(NOW + Duration::minutes(1))
        );
        assert_eq!(
            deferred_until(slot, NOW + Duration::minutes(20), slot),
            None
        );
        assert_eq!(deferred_until(NOW - Duration::minutes(1), NOW, NOW), None);
    }
}
