//! The inference worker: one thread that owns the models.
//!
//! - Jobs arrive on a bounded channel ([`Worker::submit`] fails fast with
//!   [`SubmitError::Busy`] when it is full, never blocking the UI).
//! - Every event carries its job id; the UI keeps the id of the job it still wants and
//!   drops the rest ([`Worker::poll`] returns everything).
//! - [`Worker::cancel`] sets the job's flag; the pipeline checks it between batches and
//!   the job ends with [`JobEvent::Cancelled`]. Queued jobs that were cancelled never run.
//! - Models are created on first use by a factory (so libtorch is not touched at start-up)
//!   and kept for later jobs. A model that returns an error, or panics, ends its job with
//!   [`JobEvent::Failed`]; after a panic the model is dropped and rebuilt next time. The
//!   worker thread itself never dies from a model.
//! - After each event the `wake` callback runs (the UI passes `request_repaint`).

use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender, TrySendError, bounded, unbounded};

use super::{InferError, Proposal, RunContext, SegmentInput, Segmenter, Task};
use crate::volume::{CtVolume, LabelVolume};

pub type JobId = u64;

/// Builds the segmenter for a task (called on the worker thread).
pub type Factory = Box<dyn FnMut(Task) -> Result<Box<dyn Segmenter>, InferError> + Send>;

/// What to segment.
pub struct Job {
    pub task: Task,
    pub ct: Arc<CtVolume>,
    /// Lung labels for lesion jobs; without them the worker runs the lung model first.
    pub lungs: Option<Arc<LabelVolume>>,
}

/// What the worker reports.
#[derive(Debug)]
pub enum JobEvent {
    Started { model: String },
    Progress { done: usize, total: usize },
    Done(Box<Proposal>),
    Failed(String),
    Cancelled,
}

impl JobEvent {
    /// Whether this is the job's last event.
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            JobEvent::Done(_) | JobEvent::Failed(_) | JobEvent::Cancelled
        )
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SubmitError {
    #[error("the AI worker is busy ({0} jobs queued); try again when one finishes")]
    Busy(usize),
    #[error("the AI worker has stopped")]
    Stopped,
}

struct Queued {
    id: JobId,
    job: Job,
    cancel: Arc<AtomicBool>,
}

/// Handle to the worker thread; dropping it stops the thread after the current job.
pub struct Worker {
    jobs: Option<Sender<Queued>>,
    events: Receiver<(JobId, JobEvent)>,
    cancels: HashMap<JobId, Arc<AtomicBool>>,
    next_id: JobId,
    capacity: usize,
    thread: Option<JoinHandle<()>>,
}

impl Worker {
    /// Starts the worker with room for `capacity` queued jobs.
    pub fn spawn(factory: Factory, wake: Arc<dyn Fn() + Send + Sync>, capacity: usize) -> Worker {
        let (job_tx, job_rx) = bounded::<Queued>(capacity.max(1));
        let (ev_tx, ev_rx) = unbounded();
        let thread = std::thread::Builder::new()
            .name("pulmo-infer".into())
            .spawn(move || run(factory, job_rx, ev_tx, wake))
            .expect("spawn the inference thread");
        Worker {
            jobs: Some(job_tx),
            events: ev_rx,
            cancels: HashMap::new(),
            next_id: 1,
            capacity: capacity.max(1),
            thread: Some(thread),
        }
    }

    /// Queues a job and returns its id.
    pub fn submit(&mut self, job: Job) -> Result<JobId, SubmitError> {
        let id = self.next_id;
        let cancel = Arc::new(AtomicBool::new(false));
        let tx = self.jobs.as_ref().ok_or(SubmitError::Stopped)?;
        match tx.try_send(Queued {
            id,
            job,
            cancel: cancel.clone(),
        }) {
            Ok(()) => {
                self.next_id += 1;
                self.cancels.insert(id, cancel);
                Ok(id)
            }
            Err(TrySendError::Full(_)) => Err(SubmitError::Busy(self.capacity)),
            Err(TrySendError::Disconnected(_)) => Err(SubmitError::Stopped),
        }
    }

    /// Asks job `id` to stop (no effect on finished jobs).
    pub fn cancel(&mut self, id: JobId) {
        if let Some(c) = self.cancels.get(&id) {
            c.store(true, Ordering::Relaxed);
        }
    }

    /// Cancels every queued or running job.
    pub fn cancel_all(&mut self) {
        for c in self.cancels.values() {
            c.store(true, Ordering::Relaxed);
        }
    }

    /// Every event reported since the last call, oldest first.
    pub fn poll(&mut self) -> Vec<(JobId, JobEvent)> {
        let events: Vec<_> = self.events.try_iter().collect();
        for (id, e) in &events {
            if e.is_final() {
                self.cancels.remove(id);
            }
        }
        events
    }

    /// Waits up to `timeout` for the next event (tests and the CLI).
    pub fn wait(&mut self, timeout: std::time::Duration) -> Option<(JobId, JobEvent)> {
        let ev = self.events.recv_timeout(timeout).ok()?;
        if ev.1.is_final() {
            self.cancels.remove(&ev.0);
        }
        Some(ev)
    }

    /// Submits `job` and waits (up to an hour) for its proposal, showing `on_event` every
    /// event of that job on the way (the CLI prints progress): one-off runs, such as a
    /// CLI command or the follow-up job's proposals.
    pub fn run_to_end(
        &mut self,
        job: Job,
        mut on_event: impl FnMut(&JobEvent),
    ) -> Result<Proposal, String> {
        let id = self.submit(job).map_err(|e| e.to_string())?;
        loop {
            let Some((got, ev)) = self.wait(std::time::Duration::from_secs(3600)) else {
                return Err("no answer from the inference worker within an hour".into());
            };
            if got != id {
                continue;
            }
            on_event(&ev);
            match ev {
                JobEvent::Done(p) => return Ok(*p),
                JobEvent::Failed(m) => return Err(m),
                JobEvent::Cancelled => return Err("cancelled".into()),
                JobEvent::Started { .. } | JobEvent::Progress { .. } => {}
            }
        }
    }

    /// Jobs queued or running.
    pub fn pending(&self) -> usize {
        self.cancels.len()
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.cancel_all();
        self.jobs = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The message a panic carried (for error reports).
pub(crate) fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".to_string()
    }
}

fn run(
    mut factory: Factory,
    jobs: Receiver<Queued>,
    events: Sender<(JobId, JobEvent)>,
    wake: Arc<dyn Fn() + Send + Sync>,
) {
    let mut models: HashMap<Task, Box<dyn Segmenter>> = HashMap::new();
    let send = |id: JobId, e: JobEvent| {
        let _ = events.send((id, e));
        wake();
    };
    for Queued { id, job, cancel } in jobs.iter() {
        if cancel.load(Ordering::Relaxed) {
            send(id, JobEvent::Cancelled);
            continue;
        }
        let outcome = run_job(&mut factory, &mut models, id, &job, &cancel, &send);
        send(
            id,
            match outcome {
                Ok(p) => JobEvent::Done(Box::new(p)),
                Err(InferError::Cancelled) => JobEvent::Cancelled,
                Err(e) => JobEvent::Failed(e.to_string()),
            },
        );
    }
}

fn model_for<'m>(
    factory: &mut Factory,
    models: &'m mut HashMap<Task, Box<dyn Segmenter>>,
    task: Task,
) -> Result<&'m mut Box<dyn Segmenter>, InferError> {
    use std::collections::hash_map::Entry;
    match models.entry(task) {
        Entry::Occupied(e) => Ok(e.into_mut()),
        Entry::Vacant(e) => {
            let built = catch_unwind(AssertUnwindSafe(|| factory(task))).map_err(|p| {
                InferError::Model {
                    model: task.name().into(),
                    message: format!("loading panicked: {}", panic_message(&*p)),
                }
            })??;
            Ok(e.insert(built))
        }
    }
}

fn run_job(
    factory: &mut Factory,
    models: &mut HashMap<Task, Box<dyn Segmenter>>,
    id: JobId,
    job: &Job,
    cancel: &AtomicBool,
    send: &(dyn Fn(JobId, JobEvent) + Sync),
) -> Result<Proposal, InferError> {
    let nz = job.ct.geometry.dims[2];
    // Lesion jobs without lungs run the lung model first (the first half of progress).
    let mut own_lungs = None;
    let mut first_step = String::new();
    let steps = if job.task == Task::Lesion && job.lungs.is_none() {
        2
    } else {
        1
    };
    for step in 0..steps {
        let task = if step + 1 < steps {
            Task::Lung
        } else {
            job.task
        };
        let model = model_for(factory, models, task)?;
        send(
            id,
            JobEvent::Started {
                model: model.info().name,
            },
        );
        let progress = |done: usize, total: usize| {
            let total = total.max(1);
            send(
                id,
                JobEvent::Progress {
                    done: (step * nz + done * nz / total).min(steps * nz),
                    total: steps * nz,
                },
            )
        };
        let mut ctx = RunContext {
            cancel,
            progress: &progress,
        };
        let lungs = job.lungs.as_deref().or(own_lungs.as_ref());
        let result = catch_unwind(AssertUnwindSafe(|| {
            model.segment(&job.ct, SegmentInput { lungs }, &mut ctx)
        }));
        match result {
            Ok(Ok(p)) if step + 1 < steps => {
                first_step = format!(
                    "{} first: {:.2} s ({}); ",
                    p.model.name, p.total_seconds, p.detail
                );
                own_lungs = Some(p.labels)
            }
            Ok(Ok(mut p)) => {
                p.detail.insert_str(0, &first_step);
                return Ok(p);
            }
            Ok(Err(e)) => return Err(e),
            Err(p) => {
                let name = model.info().name;
                models.remove(&task);
                return Err(InferError::Model {
                    model: name,
                    message: format!("panicked: {}", panic_message(&*p)),
                });
            }
        }
    }
    unreachable!("the last step returns")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::infer::{ModelInfo, Proposal};
    use crate::volume::{Geometry, Volume};
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    /// A segmenter that takes `delay` per slice and can be told to fail or panic.
    struct Slow {
        task: Task,
        delay: Duration,
        mode: Arc<AtomicUsize>, // 0 ok, 1 error, 2 panic
    }

    impl Segmenter for Slow {
        fn task(&self) -> Task {
            self.task
        }
        fn info(&self) -> ModelInfo {
            ModelInfo {
                name: format!("slow-{}", self.task.name()),
                version: "0".into(),
                device: "cpu".into(),
            }
        }
        fn segment(
            &mut self,
            ct: &CtVolume,
            input: SegmentInput<'_>,
            ctx: &mut RunContext<'_>,
        ) -> Result<Proposal, InferError> {
            match self.mode.load(Ordering::SeqCst) {
                1 => {
                    return Err(InferError::Model {
                        model: "slow".into(),
                        message: "out of memory".into(),
                    });
                }
                2 => panic!("shape mismatch in layer 3"),
                _ => {}
            }
            let nz = ct.geometry.dims[2];
            for k in 0..nz {
                ctx.check()?;
                std::thread::sleep(self.delay);
                ctx.report(k + 1, nz);
            }
            let value = match self.task {
                Task::Lung => 1,
                // Lesions mark where the lungs were given.
                Task::Lesion => {
                    if input.lungs.is_some() {
                        3
                    } else {
                        4
                    }
                }
            };
            let labels = ct.map(|_| value);
            Ok(Proposal {
                task: self.task,
                confidence: ct.map(|_| 200),
                labels,
                model: self.info(),
                model_seconds: 0.0,
                total_seconds: 0.0,
                detail: String::new(),
            })
        }
    }

    fn ct(nz: usize) -> Arc<CtVolume> {
        Arc::new(
            Volume::filled(Geometry::axis_aligned([4, 4, nz], [1.0; 3], [0.0; 3]), 0i16).unwrap(),
        )
    }

    fn worker(
        delay_ms: u64,
        mode: Arc<AtomicUsize>,
        wakes: Arc<AtomicUsize>,
        builds: Arc<AtomicUsize>,
    ) -> Worker {
        Worker::spawn(
            Box::new(move |task| {
                builds.fetch_add(1, Ordering::SeqCst);
                Ok(Box::new(Slow {
                    task,
                    delay: Duration::from_millis(delay_ms),
                    mode: mode.clone(),
                }) as Box<dyn Segmenter>)
            }),
            Arc::new(move || {
                wakes.fetch_add(1, Ordering::SeqCst);
            }),
            2,
        )
    }

    fn until_final(w: &mut Worker, id: JobId) -> (Vec<JobEvent>, JobEvent) {
        let mut seen = Vec::new();
        loop {
            let (got, e) = w
                .wait(Duration::from_secs(20))
                .expect("an event within 20 s");
            assert_eq!(got, id, "events of other jobs must not appear here");
            if e.is_final() {
                return (seen, e);
            }
            seen.push(e);
        }
    }

    #[test]
    fn reports_progress_and_result_and_wakes_the_ui() {
        let wakes = Arc::new(AtomicUsize::new(0));
        let mut w = worker(0, Arc::default(), wakes.clone(), Arc::default());
        let id = w
            .submit(Job {
                task: Task::Lung,
                ct: ct(5),
                lungs: None,
            })
            .unwrap();
        let (events, last) = until_final(&mut w, id);
        let progress: Vec<(usize, usize)> = events
            .iter()
            .filter_map(|e| match e {
                JobEvent::Progress { done, total } => Some((*done, *total)),
                _ => None,
            })
            .collect();
        assert_eq!(progress, (1..=5).map(|d| (d, 5)).collect::<Vec<_>>());
        let JobEvent::Done(p) = last else {
            panic!("expected a result, got {last:?}")
        };
        assert_eq!(p.labels.voxels[0], 1);
        assert_eq!(wakes.load(Ordering::SeqCst), events.len() + 1);
        assert_eq!(w.pending(), 0);
    }

    #[test]
    fn lesion_jobs_without_lungs_run_the_lung_model_first() {
        let builds = Arc::new(AtomicUsize::new(0));
        let mut w = worker(0, Arc::default(), Arc::default(), builds.clone());
        let id = w
            .submit(Job {
                task: Task::Lesion,
                ct: ct(3),
                lungs: None,
            })
            .unwrap();
        let (events, last) = until_final(&mut w, id);
        let JobEvent::Done(p) = last else {
            panic!("{last:?}")
        };
        assert_eq!(p.labels.voxels[0], 3, "lesion model saw the lungs");
        assert_eq!(builds.load(Ordering::SeqCst), 2);
        let last_progress = events.iter().rev().find_map(|e| match e {
            JobEvent::Progress { done, total } => Some((*done, *total)),
            _ => None,
        });
        assert_eq!(last_progress, Some((6, 6)));
    }

    #[test]
    fn cancel_stops_a_running_job_and_skips_a_queued_one() {
        let mut w = worker(20, Arc::default(), Arc::default(), Arc::default());
        let a = w
            .submit(Job {
                task: Task::Lung,
                ct: ct(500),
                lungs: None,
            })
            .unwrap();
        let b = w
            .submit(Job {
                task: Task::Lung,
                ct: ct(500),
                lungs: None,
            })
            .unwrap();
        // The queue holds 2: a third is refused, not blocked on.
        let c = w.submit(Job {
            task: Task::Lung,
            ct: ct(1),
            lungs: None,
        });
        // `a` may already have left the queue; then `c` fits.
        if let Err(e) = &c {
            assert_eq!(*e, SubmitError::Busy(2));
        }
        // Wait for a's first progress, then cancel both.
        loop {
            let (id, e) = w.wait(Duration::from_secs(20)).unwrap();
            if id == a && matches!(e, JobEvent::Progress { .. }) {
                break;
            }
        }
        w.cancel(a);
        w.cancel(b);
        let mut finals = HashMap::new();
        let start = std::time::Instant::now();
        while finals.len() < 2 {
            let (id, e) = w.wait(Duration::from_secs(20)).unwrap();
            if e.is_final() {
                finals.insert(id, format!("{e:?}"));
            }
        }
        assert_eq!(finals[&a], "Cancelled");
        assert_eq!(finals[&b], "Cancelled");
        // 500 slices x 20 ms would be 10 s; cancellation ends it within a few slices.
        assert!(start.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn failing_and_panicking_models_are_errors_and_the_worker_goes_on() {
        let mode = Arc::new(AtomicUsize::new(1));
        let builds = Arc::new(AtomicUsize::new(0));
        let mut w = worker(0, mode.clone(), Arc::default(), builds.clone());
        let id = w
            .submit(Job {
                task: Task::Lung,
                ct: ct(2),
                lungs: None,
            })
            .unwrap();
        let (_, last) = until_final(&mut w, id);
        assert!(
            matches!(&last, JobEvent::Failed(m) if m.contains("out of memory")),
            "{last:?}"
        );

        mode.store(2, Ordering::SeqCst);
        let id = w
            .submit(Job {
                task: Task::Lung,
                ct: ct(2),
                lungs: None,
            })
            .unwrap();
        let (_, last) = until_final(&mut w, id);
        assert!(
            matches!(&last, JobEvent::Failed(m) if m.contains("panicked") && m.contains("shape mismatch")),
            "{last:?}"
        );

        mode.store(0, Ordering::SeqCst);
        let id = w
            .submit(Job {
                task: Task::Lung,
                ct: ct(2),
                lungs: None,
            })
            .unwrap();
        let (_, last) = until_final(&mut w, id);
        assert!(matches!(last, JobEvent::Done(_)));
        // Built once, dropped after the panic, rebuilt.
        assert_eq!(builds.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn a_failing_factory_is_an_error_event() {
        let mut w = Worker::spawn(
            Box::new(|_| {
                Err(InferError::NoModel {
                    task: "lung",
                    message: "weights/lung.json not found".into(),
                })
            }),
            Arc::new(|| {}),
            1,
        );
        let id = w
            .submit(Job {
                task: Task::Lung,
                ct: ct(1),
                lungs: None,
            })
            .unwrap();
        let (_, last) = until_final(&mut w, id);
        assert!(
            matches!(&last, JobEvent::Failed(m) if m.contains("lung.json")),
            "{last:?}"
        );
    }
}
