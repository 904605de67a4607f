//! How the process hands freed memory back to the kernel.
//!
//! glibc's malloc serves blocks above its mmap threshold (adaptive, at most 32 MB) with a fresh
//! mapping that it unmaps on free, and trims the top of the heap once 128 KB lie free there. A
//! training step allocates and frees the same large activations and gradients every time, so
//! every step faulted its whole working set back in: `exc_page_fault` was a quarter of a line
//! model step in `perf`. Keeping freed memory makes the next step reuse it; the price is that
//! the resident size stays near its peak instead of shrinking between steps.

/// Keeps freed memory in the process for reuse instead of returning it to the kernel. Call it
/// first thing in `main`; a no-op off glibc.
pub fn retain_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets two allocator parameters, before the program allocates much.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 30);
        libc::mallopt(libc::M_TRIM_THRESHOLD, -1);
    }
}
