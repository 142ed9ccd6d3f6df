//! Delegated task identities (pure): whether a parent may delegate a task and what the child
//! certificate holds ([`decide`]), and that certificate signed for the child's own key ([`sign`]).

pub mod decide;
pub mod parent;
pub mod record;
pub mod sign;
