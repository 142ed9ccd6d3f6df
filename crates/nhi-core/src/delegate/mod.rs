//! Delegated task identities (pure): whether a parent may delegate a task and what the child
//! certificate holds ([`decide`]).

pub mod decide;
