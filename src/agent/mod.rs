//! `nhi-operator agent`: keeps an identity directory current from the identity's Secret through
//! the Kubernetes API, written the way kubelet writes a Secret volume.

pub mod projection;
pub mod run;
