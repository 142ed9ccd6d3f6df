//! glibc malloc settings for a long-running operator with large, short-lived buffers.
//!
//! List pages, the revocation record and the CRL are buffers of up to a few MiB, made and
//! dropped again and again. glibc raises its mmap threshold to the size of each mapped buffer
//! freed, so that afterwards such buffers come from the heap, between objects that live on, and
//! the pages they leave are seldom given back. A fixed threshold keeps them mapped (returned to
//! the system when dropped) and turns that adjustment off; a fixed trim threshold gives back the
//! top of the heap at the same size.

/// Buffers from this size on are mapped on their own (glibc's initial threshold, kept fixed).
#[cfg(target_env = "gnu")]
const MMAP_THRESHOLD: libc::c_int = 128 * 1024;

/// Applies the settings (once, at start, before other threads allocate). Elsewhere than glibc
/// (the static musl build) there is nothing to set.
pub fn tune() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only sets allocator parameters; it is called before the runtime's threads
    // start.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
        libc::mallopt(libc::M_TRIM_THRESHOLD, MMAP_THRESHOLD);
    }
}
