//! Lifecycle governance decisions: when an identity's review or workload lapses, and what follows.

pub mod certificates;
pub mod review;
pub mod verdict;
pub mod workload;
