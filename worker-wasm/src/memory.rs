//! Wasm memory made ready for the panels a compute thread will keep.

/// What [`fault_in`] touches for the page's `memory_bytes`: none for what is not a positive
/// number (an older page sends none), and never more than [`FAULT_IN_MAX`].
fn fault_in_len(bytes: f64) -> usize {
    if bytes.is_finite() && bytes > 0.0 {
        bytes.min(FAULT_IN_MAX) as usize
    } else {
        0
    }
}

/// Most memory [`fault_in`] touches: a few jobs' worth of panels, whatever the cache.
const FAULT_IN_MAX: f64 = (64 << 20) as f64;

/// Grows this thread's wasm memory by `bytes` (at most [`FAULT_IN_MAX`]) and writes every
/// page of it once, then frees it for the panels to come. A panel is copied into wasm memory
/// as it arrives; into fresh memory, each page of the copy first took a page fault, and the
/// copies were a third slower (the "handing over" of docs/benchmarks.md, #17). Freed memory
/// stays with the allocator, so the panels reuse these pages. The page passes its panel
/// cache's budget, so no more is touched than the volunteer allowed the cache.
pub fn fault_in(bytes: f64) {
    let len = fault_in_len(bytes);
    if len == 0 {
        return;
    }
    let mut memory: Vec<u8> = Vec::new();
    // Memory the browser refuses leaves the panels to fault their pages in, as before.
    if memory.try_reserve_exact(len).is_ok() {
        // Not zeros: fresh wasm memory reads as zeros already, and zeroing it may be skipped.
        memory.resize(len, 1);
        std::hint::black_box(&memory);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn touches_what_the_page_allows_up_to_a_bound_and_nothing_for_nonsense() {
        assert_eq!(fault_in_len(32.0 * 1024.0 * 1024.0), 32 << 20);
        assert_eq!(fault_in_len(1e12), 64 << 20);
        for nonsense in [f64::NAN, f64::INFINITY, -1.0, 0.0] {
            assert_eq!(fault_in_len(nonsense), 0, "{nonsense}");
        }
        // And touching is harmless natively too.
        fault_in(1024.0 * 1024.0);
    }
}
