//! Backups hold checkpoints back. A backup reads the memtables once, at its point, and sled
//! lazily afterwards; a checkpoint that started meanwhile would copy newer values (and deletes)
//! into sled under the backup's feet. So a backup waits for a running checkpoint to end and
//! keeps the next one from starting until it is done; the log meanwhile freezes as usual and the
//! memtable grows. Checkpoints never wait while the store closes: the segments stay and are
//! replayed at the next open.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::sync::{Condvar, Mutex};

#[derive(Default)]
pub(crate) struct Pause {
    state: Mutex<State>,
    changed: Condvar,
}

#[derive(Default)]
struct State {
    holds: usize,
    checkpointing: bool,
}

/// Held by a backup for as long as it reads; checkpoints start again when the last one drops.
pub(crate) struct Hold(Arc<Pause>);

impl Drop for Hold {
    fn drop(&mut self) {
        self.0.state.lock().holds -= 1;
        self.0.changed.notify_all();
    }
}

impl Pause {
    /// Waits for a running checkpoint to end, then holds the next ones back.
    pub fn hold(self: &Arc<Self>) -> Hold {
        let mut state = self.state.lock();
        while state.checkpointing {
            self.changed.wait(&mut state);
        }
        state.holds += 1;
        Hold(self.clone())
    }

    /// Waits until no backup holds checkpoints back and marks one running; `false` when the
    /// store began closing meanwhile.
    pub fn begin_checkpoint(&self, closing: &AtomicBool) -> bool {
        let mut state = self.state.lock();
        while state.holds > 0 {
            if closing.load(Ordering::Acquire) {
                return false;
            }
            self.changed
                .wait_for(&mut state, Duration::from_millis(100));
        }
        state.checkpointing = true;
        true
    }

    pub fn end_checkpoint(&self) {
        self.state.lock().checkpointing = false;
        self.changed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hold_keeps_checkpoints_back_and_waits_for_a_running_one() {
        let pause = Arc::new(Pause::default());
        let closing = AtomicBool::new(false);
        assert!(pause.begin_checkpoint(&closing));
        let waiter = {
            let pause = pause.clone();
            std::thread::spawn(move || pause.hold())
        };
        std::thread::sleep(Duration::from_millis(50));
        assert!(
            !waiter.is_finished(),
            "a hold waits for the running checkpoint"
        );
        pause.end_checkpoint();
        let hold = waiter.join().unwrap();
        let started = {
            let pause = pause.clone();
            std::thread::spawn(move || pause.begin_checkpoint(&AtomicBool::new(false)))
        };
        std::thread::sleep(Duration::from_millis(150));
        assert!(!started.is_finished(), "no checkpoint starts while held");
        drop(hold);
        assert!(started.join().unwrap());
        pause.end_checkpoint();
        let _hold = pause.hold();
        closing.store(true, Ordering::Release);
        assert!(!pause.begin_checkpoint(&closing), "closing does not wait");
    }
}
