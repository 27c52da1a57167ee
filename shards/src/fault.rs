//! Crash points for the tests that kill a run at every write and rename of the commit.
//!
//! With the cargo feature `fault-injection` (enabled only by the test builds of the crates
//! that run these tests) and `FASTDP_CRASH_AT=N` in the environment, the N-th crash point a
//! process reaches kills it with SIGKILL, as `kill -9` would: no destructor, no flush, no
//! clean-up runs. Without the feature, [`point`] is an empty inline function.

/// The environment variable that arms a crash point (a 1-based count of points reached).
pub const CRASH_AT: &str = "FASTDP_CRASH_AT";

/// Marks a crash point: the step of the commit named `what` is about to happen (or has).
#[cfg(feature = "fault-injection")]
pub fn point(what: &str) {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU64, Ordering};
    static ARMED: OnceLock<Option<u64>> = OnceLock::new();
    static REACHED: AtomicU64 = AtomicU64::new(0);
    let armed = ARMED.get_or_init(|| std::env::var(CRASH_AT).ok().and_then(|v| v.parse().ok()));
    let n = REACHED.fetch_add(1, Ordering::SeqCst) + 1;
    if *armed == Some(n) {
        eprintln!("fault: killed at crash point {n}: {what}");
        let _ = std::process::Command::new("kill")
            .args(["-KILL", &std::process::id().to_string()])
            .status();
        loop {
            std::thread::sleep(std::time::Duration::from_secs(1));
        }
    }
}

/// Marks a crash point (a no-op: this build has no fault injection).
#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub fn point(_what: &str) {}

/// Whether to publish as on a file system that cannot exchange two directories (set
/// `FASTDP_NO_EXCHANGE=1`), so tests reach the move-aside path on any file system.
#[cfg(feature = "fault-injection")]
pub fn no_exchange() -> bool {
    std::env::var_os("FASTDP_NO_EXCHANGE").is_some()
}

/// Whether to publish as without exchange (never, in this build).
#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub fn no_exchange() -> bool {
    false
}
