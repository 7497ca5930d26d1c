//! Handing freed heap memory back to the kernel. glibc keeps what a burst of connections
//! freed for reuse, so a gateway that once held many connections keeps their memory
//! resident; `malloc_trim` returns the free pages.

/// Returns free heap pages to the kernel (glibc `malloc_trim(0)`; a no-op with other C
/// libraries). Walks every arena, so call it now and then, not per connection.
pub fn release_free_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim takes no pointers and is thread-safe in glibc: it locks each
    // arena while trimming it. Its only effect is madvise/sbrk on free memory.
    unsafe {
        libc::malloc_trim(0);
    }
}
