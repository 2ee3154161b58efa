//! SIGTERM and SIGINT set a flag; stage loops check it between batches, so
//! an open transaction is finished (committed or aborted) before exit.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

/// Registers SIGTERM and SIGINT handlers that set the returned flag.
pub fn install() -> anyhow::Result<Arc<AtomicBool>> {
    let flag = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, Arc::clone(&flag))?;
    }
    Ok(flag)
}
