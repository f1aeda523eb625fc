//! Background jobs of the session: one piece of work on a named thread, its result on a
//! channel, a cancel flag and progress counters shared with whoever shows it, a panic
//! turned into [`JobFailure::Crashed`] instead of taking the viewer down, and a wake-up
//! callback when it ends. GUI-free: the UI passes its repaint as the [`Waker`].
//!
//! The study loader and the Compare / Quantification computations run as jobs; the AI
//! worker (`infer::worker`) has its own long-lived thread and protocol.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use crossbeam_channel::{Receiver, TryRecvError};

/// Called when a job ends (or wants its progress shown).
pub type Waker = Arc<dyn Fn() + Send + Sync>;

/// What a job shares with its owner: cancel, progress (a stage number and done/total
/// counters) and the waker, which may be set after the job started (a load that begins
/// before the window exists).
#[derive(Clone, Default)]
pub struct JobControl {
    cancel: Arc<AtomicBool>,
    stage: Arc<AtomicUsize>,
    done: Arc<AtomicUsize>,
    total: Arc<AtomicUsize>,
    waker: Arc<OnceLock<Waker>>,
}

/// A snapshot of a job's progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Progress {
    pub stage: usize,
    pub done: usize,
    pub total: usize,
}

impl JobControl {
    /// Asks the work to stop (it checks [`Self::cancel_flag`]).
    pub fn cancel(&self) {
        self.cancel.store(true, Ordering::Relaxed);
    }

    pub fn is_cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }

    /// The flag itself, for readers that take an `&AtomicBool` (`io::dicom::LoadOptions`).
    pub fn cancel_flag(&self) -> &AtomicBool {
        &self.cancel
    }

    /// Records progress without waking anyone (the owner polls it at its own pace).
    pub fn set_progress(&self, stage: usize, done: usize, total: usize) {
        self.stage.store(stage, Ordering::Relaxed);
        self.done.store(done, Ordering::Relaxed);
        self.total.store(total, Ordering::Relaxed);
    }

    pub fn progress(&self) -> Progress {
        Progress {
            stage: self.stage.load(Ordering::Relaxed),
            done: self.done.load(Ordering::Relaxed),
            total: self.total.load(Ordering::Relaxed),
        }
    }

    /// Sets the waker once (later calls keep the first).
    pub fn set_waker(&self, waker: Waker) {
        let _ = self.waker.set(waker);
    }

    /// Calls the waker, if one is set.
    pub fn wake(&self) {
        if let Some(w) = self.waker.get() {
            w();
        }
    }
}

/// Why a job gave no result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobFailure {
    /// The work panicked (an internal error; the panic was contained).
    Crashed,
    /// The thread could not be started.
    NotStarted(String),
    /// The job ended without sending a result.
    Stopped,
}

impl JobFailure {
    /// The failure as the user reads it, naming the job (`who`: "the loader").
    pub fn message(&self, who: &str) -> String {
        match self {
            JobFailure::Crashed => format!("{who} crashed (internal error)"),
            JobFailure::NotStarted(e) => format!("cannot start {who}: {e}"),
            JobFailure::Stopped => format!("{who} stopped unexpectedly"),
        }
    }
}

/// A job in flight: its description, result channel and control.
pub struct Job<T> {
    pub what: String,
    rx: Receiver<Result<T, JobFailure>>,
    control: JobControl,
}

impl<T> Clone for Job<T> {
    fn clone(&self) -> Self {
        Job {
            what: self.what.clone(),
            rx: self.rx.clone(),
            control: self.control.clone(),
        }
    }
}

impl<T: Send + 'static> Job<T> {
    /// Runs `work` on a thread named `thread`; `what` describes it to the user.
    pub fn spawn(
        thread: &str,
        what: impl Into<String>,
        control: JobControl,
        work: impl FnOnce(&JobControl) -> T + Send + 'static,
    ) -> Job<T> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        let ctl = control.clone();
        let tx_spawn = tx.clone();
        let spawned = std::thread::Builder::new()
            .name(thread.into())
            .spawn(move || {
                let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(&ctl)))
                    .map_err(|_| JobFailure::Crashed);
                let _ = tx.send(out);
                ctl.wake();
            });
        if let Err(e) = spawned {
            let _ = tx_spawn.send(Err(JobFailure::NotStarted(e.to_string())));
        }
        Job {
            what: what.into(),
            rx,
            control,
        }
    }
}

impl<T> Job<T> {
    pub fn control(&self) -> &JobControl {
        &self.control
    }

    /// The result once the job has ended (`None` while it runs).
    pub fn try_take(&self) -> Option<Result<T, JobFailure>> {
        match self.rx.try_recv() {
            Ok(r) => Some(r),
            Err(TryRecvError::Empty) => None,
            Err(TryRecvError::Disconnected) => Some(Err(JobFailure::Stopped)),
        }
    }

    /// Blocks until the job ends.
    pub fn wait(&self) -> Result<T, JobFailure> {
        self.rx.recv().unwrap_or(Err(JobFailure::Stopped))
    }
}

/// Takes the result of the job in `slot` once it has ended, emptying the slot.
pub fn take_finished<T>(slot: &mut Option<Job<T>>) -> Option<Result<T, JobFailure>> {
    let out = slot.as_ref()?.try_take()?;
    *slot = None;
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn result_progress_cancel_and_wake() {
        let woken = Arc::new(AtomicUsize::new(0));
        let ctl = JobControl::default();
        let w = woken.clone();
        ctl.set_waker(Arc::new(move || {
            w.fetch_add(1, Ordering::SeqCst);
        }));
        let (go_tx, go_rx) = crossbeam_channel::bounded::<()>(0);
        let mut slot = Some(Job::spawn("test-job", "adding", ctl, move |c| {
            c.set_progress(2, 1, 3);
            let _ = go_rx.recv();
            if c.is_cancelled() { -1 } else { 42 }
        }));
        assert_eq!(take_finished(&mut slot), None, "still running");
        slot.as_ref().unwrap().control().cancel();
        go_tx.send(()).unwrap();
        let job = slot.clone().unwrap();
        assert_eq!(job.wait(), Ok(-1));
        assert_eq!(
            job.control().progress(),
            Progress {
                stage: 2,
                done: 1,
                total: 3
            }
        );
        // The job sends its result, then wakes the UI (so that a wake-up always finds
        // the result): `wait` can return a moment before the waker has run.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while woken.load(Ordering::SeqCst) == 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert_eq!(woken.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_panic_becomes_a_failure() {
        let panicking = || {
            Job::spawn("test-panic", "panicking", JobControl::default(), |_| {
                if std::hint::black_box(true) {
                    panic!("boom (expected by the test)");
                }
                1
            })
        };
        assert_eq!(panicking().wait(), Err(JobFailure::Crashed));
        let mut slot = Some(panicking());
        let result = loop {
            if let Some(r) = take_finished(&mut slot) {
                break r;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        };
        assert_eq!(result, Err(JobFailure::Crashed));
        assert!(slot.is_none(), "the slot is emptied");
    }
}
