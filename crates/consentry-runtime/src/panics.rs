//! Panics without PHI. Rust's default hook prints a panic's message, and a
//! message can quote the input it choked on (`byte index 3 is not a char
//! boundary; it is inside 'é' of "+0é:00"`). The hook installed here logs
//! only the thread and the code location, and remembers the location per
//! thread, so the runner can quarantine the record that caused it and say
//! where the code gave up.

use std::cell::RefCell;
use std::sync::Once;

thread_local! {
    static LAST: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Replaces the process's panic hook (once): thread and location only.
pub fn install_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // This crate's own unit tests keep the default report too: their
        // panics are assertion failures someone must read.
        let default = cfg!(test).then(std::panic::take_hook);
        std::panic::set_hook(Box::new(move |info| {
            let at = info
                .location()
                .map(|l| format!("{}:{}", l.file(), l.line()))
                .unwrap_or_else(|| "unknown".into());
            let thread = std::thread::current();
            tracing::error!(
                thread = thread.name().unwrap_or("unnamed"),
                at = %at,
                "panic (message withheld: it may quote input)"
            );
            LAST.with(|l| *l.borrow_mut() = Some(at));
            if let Some(d) = &default {
                d(info);
            }
        }));
    });
}

/// Where this thread last panicked (`file:line`), once; `None` if the hook
/// is not installed or nothing panicked since the last call.
pub fn last_location() -> Option<String> {
    LAST.with(|l| l.borrow_mut().take())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_caught_panic_leaves_its_location_and_not_its_message() {
        install_hook();
        let secret = "PHI-LIKE-VALUE";
        let r = std::panic::catch_unwind(|| {
            let s = format!("+0é:{secret}");
            // The panic the hook must not repeat: it quotes `s`.
            let _ = &s[3..4];
        });
        assert!(r.is_err());
        let at = last_location().expect("location recorded");
        assert!(at.contains("panics.rs:"), "{at}");
        assert!(!at.contains(secret));
        assert_eq!(last_location(), None, "taken once");
    }
}
