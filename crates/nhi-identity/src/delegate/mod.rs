//! Delegated task identities from the workload's side (feature `delegate`): the wire format of
//! the operator's delegation endpoint ([`wire`]), the child's own key and PKCS#10 request
//! ([`child_key`]), and a client that asks for a child certificate with the parent's identity
//! ([`client`]).
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use nhi_identity::delegate::{child_key::ChildKey, client::{Delegator, Task}};
//! // In the child (the tool runner): a key that never leaves it, and its request.
//! let key = ChildKey::generate()?;
//! // In the parent (the agent): ask for the child's certificate with the parent's identity.
//! let mut delegator = Delegator::connect(
//!     "https://nhi-operator-delegation.nhi-system.svc:8443",
//!     std::path::Path::new("/var/run/secrets/nhi.dev/identity"),
//! ).await?;
//! let task = Task::new("T-1", "refund order 1042").grant("payments.refund");
//! let child = delegator.request(&task, key.csr_pem()).await?;
//! // Back in the child: its key and the certificate, as an identity directory.
//! child.write_dir(std::path::Path::new("/run/task"), Some(&key))?;
//! # Ok(()) }
//! ```

pub mod child_key;
pub mod client;
pub mod wire;
