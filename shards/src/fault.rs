//! Crash points for the tests that kill a run at every write and rename of the commit.
//!
//! With the cargo feature `fault-injection` (enabled only by the test builds of the crates
//! that run these tests) and `FASTDP_CRASH_AT=N` in the environment, the N-th crash point a
//! process reaches kills it with SIGKILL, as `kill -9` would: no destructor, no flush, no
//! clean-up runs. `FASTDP_CRASH_HOW=pause` stops there instead (for the test to kill it when it
//! chooses), and `FASTDP_CRASH_PROCESS=P` arms only process P of a multi-process run (see
//! [`set_process`]). Without the feature, [`point`] is an empty inline function.

/// The environment variable that arms a crash point (a 1-based count of points reached).
pub const CRASH_AT: &str = "FASTDP_CRASH_AT";

#[cfg(feature = "fault-injection")]
static PROCESS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Tells the crash points which process of the run this is (0 unless set).
pub fn set_process(process: usize) {
    #[cfg(feature = "fault-injection")]
    PROCESS.store(process, std::sync::atomic::Ordering::SeqCst);
    #[cfg(not(feature = "fault-injection"))]
    let _ = process;
}

/// Marks a crash point: the step of the commit named `what` is about to happen (or has).
#[cfg(feature = "fault-injection")]
pub fn point(what: &str) {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU64, Ordering};
    static ARMED: OnceLock<Option<u64>> = OnceLock::new();
    static REACHED: AtomicU64 = AtomicU64::new(0);
    let armed = ARMED.get_or_init(|| {
        let process = std::env::var("FASTDP_CRASH_PROCESS")
            .ok()
            .and_then(|v| v.parse::<usize>().ok());
        if process.is_some_and(|p| p != PROCESS.load(Ordering::SeqCst)) {
            return None;
        }
        std::env::var(CRASH_AT).ok().and_then(|v| v.parse().ok())
    });
    let n = REACHED.fetch_add(1, Ordering::SeqCst) + 1;
    if *armed == Some(n) {
        if std::env::var("FASTDP_CRASH_HOW").as_deref() == Ok("pause") {
            eprintln!("fault: paused at crash point {n}: {what}");
        } else {
            eprintln!("fault: killed at crash point {n}: {what}");
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &std::process::id().to_string()])
                .status();
        }
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
