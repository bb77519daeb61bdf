//! How the process allocator returns large blocks, so that the memory
//! watermark describes the resident set.
//!
//! glibc's malloc serves blocks of 128 KiB and more with `mmap` and returns
//! them on `free` — until the first such free, after which it raises that
//! threshold (up to 32 MiB) and serves large message bodies from its arenas,
//! one per thread, which keep what was freed. A node that passes a gigabyte
//! of 256 KiB messages through a 64 MiB watermark then holds twice the
//! watermark in freed blocks (measured in t67: peak RSS 150–200 MiB with
//! the adaptive threshold, 120–130 MiB with a fixed one). Fixing the
//! threshold keeps large bodies in their own mappings, released when the
//! last queue lets go of them; small allocations, the hot path's, are not
//! affected. `MALLOC_MMAP_THRESHOLD_` in the environment still wins.

/// The size from which blocks are mapped and unmapped on their own.
const MMAP_THRESHOLD: i32 = 128 * 1024;

/// Fixes the mmap threshold (glibc only; elsewhere nothing to do).
pub fn return_large_blocks() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_none() {
        // SAFETY: mallopt only changes a malloc tunable; it is called once,
        // at start, before any thread other than main exists.
        #[allow(unsafe_code)]
        let ok = unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) };
        if ok != 1 {
            tracing::warn!("could not fix malloc's mmap threshold");
        }
    }
}
