//! Pure certificate logic: inputs, keys, leaf signing, renewal timing and assessment.

pub mod assess;
pub mod inputs;
pub mod keys;
pub mod kube_client;
pub mod leaf;
pub mod renewal;
