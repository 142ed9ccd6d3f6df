//! What a parent's `status.delegation` keeps: counts and the most recent children, gathered in
//! batches between writes (the audit log keeps every delegation).

use nhi_api::{DelegationRecord, DelegationStatus};

/// How many recent children the status lists.
pub const RECENT: usize = 16;

/// Delegations answered since the last write, for one identity.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Batch {
    pub signed: i64,
    pub refused: i64,
    /// Newest first, at most [`RECENT`].
    pub recent: Vec<DelegationRecord>,
}

impl Batch {
    pub fn add_signed(&mut self, record: DelegationRecord) {
        self.signed += 1;
        self.recent.insert(0, record);
        self.recent.truncate(RECENT);
    }

    pub fn add_refused(&mut self) {
        self.refused += 1;
    }
}

/// The status after `batch`: the counts added up, its children ahead of the earlier ones.
pub fn with_batch(current: Option<&DelegationStatus>, batch: &Batch) -> DelegationStatus {
    let current = current.cloned().unwrap_or_default();
    let mut recent = batch.recent.clone();
    recent.extend(current.recent);
    recent.truncate(RECENT);
    DelegationStatus {
        delegated: current.delegated.saturating_add(batch.signed),
        refused: current.refused.saturating_add(batch.refused),
        last_delegated_at: batch
            .recent
            .first()
            .map(|r| r.delegated_at.clone())
            .or(current.last_delegated_at),
        recent,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(n: usize) -> DelegationRecord {
        DelegationRecord {
            serial_number: format!("{n:02x}"),
            task_id: format!("T-{n}"),
            delegated_at: format!("2026-12-05T10:00:{n:02}Z"),
            ..Default::default()
        }
    }

    #[test]
    fn counts_add_up_and_the_newest_children_come_first_within_the_bound() {
        let mut batch = Batch::default();
        for n in 0..20 {
            batch.add_signed(record(n));
        }
        batch.add_refused();
        assert_eq!(batch.recent.len(), RECENT);
        assert_eq!(batch.recent[0].task_id, "T-19");
        let before = DelegationStatus {
            delegated: 5,
            refused: 2,
            last_delegated_at: Some("2026-12-05T09:00:00Z".into()),
            recent: vec![record(99)],
        };
        let after = with_batch(Some(&before), &batch);
        assert_eq!((after.delegated, after.refused), (25, 3));
        assert_eq!(after.recent.len(), RECENT);
        assert_eq!(after.recent[0].task_id, "T-19");
        assert_eq!(
            after.last_delegated_at.as_deref(),
            Some("2026-12-05T10:00:19Z")
        );

        let mut small = Batch::default();
        small.add_signed(record(1));
        let after = with_batch(Some(&before), &small);
        assert_eq!(
            after
                .recent
                .iter()
                .map(|r| r.task_id.as_str())
                .collect::<Vec<_>>(),
            ["T-1", "T-99"],
            "earlier children stay behind the new"
        );
        let refused_only = Batch {
            refused: 1,
            ..Batch::default()
        };
        let after = with_batch(Some(&before), &refused_only);
        assert_eq!(after.last_delegated_at, before.last_delegated_at);
        assert_eq!(after.refused, 3);
    }
}
