use clap::Parser;

fn main() -> anyhow::Result<()> {
    keep_freed_memory();
    trainer::cli::run(trainer::cli::Cli::parse())
}

/// glibc's malloc serves large blocks (every activation tensor) with fresh `mmap`s and hands
/// them back on free, so each training step page-faults its whole working set in again: about a
/// quarter of a CPU step (BENCHMARKS.md). Serve them from the heap and never trim it instead.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn keep_freed_memory() {
    // SAFETY: mallopt only sets allocator parameters; it is called before any other thread
    // exists. A refused setting (return 0) leaves glibc's default, which is only slower.
    unsafe {
        libc::mallopt(libc::M_MMAP_MAX, 0);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn keep_freed_memory() {}
