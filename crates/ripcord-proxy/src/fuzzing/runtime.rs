//! The runtime the targets run on: one single-threaded runtime per thread,
//! made on first use and kept (a fuzzer runs thousands of inputs a second).

use std::future::Future;

thread_local! {
    static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a single-threaded tokio runtime");
}

/// Runs `f` to completion on this thread's runtime.
pub(super) fn block_on<F: Future>(f: F) -> F::Output {
    RUNTIME.with(|rt| rt.block_on(f))
}
