//! Entitlements, pure: grant syntax, label selection, effective-grant resolution and the
//! certificate extension that carries grants and attributes.

pub mod rbac;
pub mod resolve;
pub mod selector;
