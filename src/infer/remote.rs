//! Models run in a child process: `pulmo-ai serve`, the only binary that links libtorch.
//!
//! Why a process and not a thread:
//! - The viewer's process never loads libtorch: its dynamic loading and static
//!   initialisation cost about 0.25 s before `main` (measured), paid on every start even
//!   when no model runs. `tests/architecture.rs` checks that `pulmo` does not link it.
//! - A crash inside libtorch (abort, segfault, the OOM killer) ends the child, not the
//!   viewer: the job fails with the exit status and the child's last messages, and the
//!   next job starts a fresh child. User work in the viewer is untouched.
//! - Cancelling a job kills the child at once (no need to wait for a batch to end).
//!
//! [`ChildSegmenter`] is a [`Segmenter`] like any other, so the worker thread, the review
//! UI, `pulmo segment` and `pulmo eval` do not know where the model runs. Segmenters of
//! one [`AiProcess`] share the child, which keeps its loaded models between jobs.
//!
//! Wire format (stdin/stdout of the child, native byte order: both ends are the same
//! build on the same machine): each frame is the magic `PLMO`, a u32 frame kind, a u64
//! header length and a JSON header, a u32 payload count, then per payload a u64 length
//! and the bytes. Requests carry the CT (i16 voxels) and optionally the lung labels;
//! replies are progress, the proposal (labels and confidence as payloads) or an error.

use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::AsRawFd;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};
use nalgebra::{Matrix3, Vector3};
use serde::{Deserialize, Serialize};

use super::manifest::Manifest;
use super::{
    DeviceChoice, InferError, ModelInfo, Proposal, RunContext, SegmentInput, Segmenter, Task,
};
use crate::volume::{CtVolume, Geometry, LabelVolume, Volume};

/// File name of the AI helper binary (next to `pulmo`).
pub const PROGRAM: &str = "pulmo-ai";

const MAGIC: [u8; 4] = *b"PLMO";
const KIND_REQUEST: u32 = 1;
const KIND_REPLY: u32 = 2;
/// Headers are small JSON; anything larger is not a pulmo frame.
const MAX_HEADER: u64 = 1 << 20;
const MAX_PAYLOADS: u32 = 4;

/// A grid on the wire (direction column-major, as nalgebra stores it).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct GridWire {
    dims: [usize; 3],
    spacing_mm: [f64; 3],
    origin_mm: [f64; 3],
    direction: [f64; 9],
}

impl From<&Geometry> for GridWire {
    fn from(g: &Geometry) -> Self {
        let mut direction = [0.0; 9];
        direction.copy_from_slice(g.direction.as_slice());
        GridWire {
            dims: g.dims,
            spacing_mm: g.spacing_mm.into(),
            origin_mm: g.origin_mm.into(),
            direction,
        }
    }
}

impl GridWire {
    fn geometry(&self) -> Result<Geometry, String> {
        let g = Geometry {
            dims: self.dims,
            spacing_mm: Vector3::from(self.spacing_mm),
            origin_mm: Vector3::from(self.origin_mm),
            direction: Matrix3::from_column_slice(&self.direction),
        };
        g.validate().map_err(|e| e.to_string())?;
        Ok(g)
    }
}

/// What the viewer asks of the child.
#[derive(Debug, Serialize, Deserialize)]
pub struct Request {
    pub task: Task,
    /// The model manifest (absolute, or relative to the child's working folder, which is
    /// the parent's).
    pub manifest: PathBuf,
    pub device: DeviceChoice,
    grid: GridWire,
    /// CRC-32 of the CT's voxel bytes; with the grid, names the CT the child keeps.
    ct_key: u32,
    /// Whether the CT's voxels follow (otherwise the child uses the CT it kept, which
    /// must have this key and grid: the parent knows what it sent to this child).
    ct_sent: bool,
    /// Whether a lung label payload follows (after the CT, if sent).
    lungs: bool,
}

/// What the child answers (one at a time, decoded and dropped: its size does not matter).
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "lowercase")]
enum Reply {
    Progress {
        done: usize,
        total: usize,
    },
    Done {
        task: Task,
        model: ModelInfo,
        model_seconds: f64,
        total_seconds: f64,
        detail: String,
        grid: GridWire,
    },
    Failed {
        message: String,
    },
}

fn io_err(message: impl Into<String>) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, message.into())
}

fn write_frame(
    w: &mut impl Write,
    kind: u32,
    header: &impl Serialize,
    payloads: &[&[u8]],
) -> std::io::Result<()> {
    let header = serde_json::to_vec(header).map_err(|e| io_err(e.to_string()))?;
    w.write_all(&MAGIC)?;
    w.write_all(&kind.to_ne_bytes())?;
    w.write_all(&(header.len() as u64).to_ne_bytes())?;
    w.write_all(&header)?;
    w.write_all(&(payloads.len() as u32).to_ne_bytes())?;
    for p in payloads {
        w.write_all(&(p.len() as u64).to_ne_bytes())?;
        w.write_all(p)?;
    }
    w.flush()
}

/// One frame read back: its JSON header and payloads. `Ok(None)` at a clean end of input.
struct Frame {
    header: Vec<u8>,
    payloads: Vec<Vec<u8>>,
}

fn read_frame(r: &mut impl Read, kind: u32) -> std::io::Result<Option<Frame>> {
    let mut magic = [0u8; 4];
    match r.read_exact(&mut magic) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    if magic != MAGIC {
        return Err(io_err(format!(
            "not a pulmo frame (starts with {magic:?}): did something print to the protocol stream?"
        )));
    }
    let mut b4 = [0u8; 4];
    let mut b8 = [0u8; 8];
    r.read_exact(&mut b4)?;
    if u32::from_ne_bytes(b4) != kind {
        return Err(io_err(format!(
            "frame kind {} where {kind} was expected",
            u32::from_ne_bytes(b4)
        )));
    }
    r.read_exact(&mut b8)?;
    let n = u64::from_ne_bytes(b8);
    if n > MAX_HEADER {
        return Err(io_err(format!("frame header of {n} bytes")));
    }
    let mut header = vec![0u8; n as usize];
    r.read_exact(&mut header)?;
    r.read_exact(&mut b4)?;
    let count = u32::from_ne_bytes(b4);
    if count > MAX_PAYLOADS {
        return Err(io_err(format!("{count} payloads in one frame")));
    }
    let mut payloads = Vec::with_capacity(count as usize);
    for _ in 0..count {
        r.read_exact(&mut b8)?;
        let len = u64::from_ne_bytes(b8);
        // Voxel payloads of a 2048^3 volume at most; larger is a corrupt frame.
        if len > (1 << 34) {
            return Err(io_err(format!("payload of {len} bytes")));
        }
        let mut p = Vec::new();
        p.try_reserve_exact(len as usize)
            .map_err(|_| io_err(format!("cannot allocate a payload of {len} bytes")))?;
        r.take(len).read_to_end(&mut p)?;
        if p.len() as u64 != len {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        payloads.push(p);
    }
    Ok(Some(Frame { header, payloads }))
}

/// Zero runs shorter than this stay inside a literal (a record costs 16 bytes).
const MIN_ZERO_RUN: usize = 32;

/// Label-like u8 volumes (labels, confidence, lungs) travel zero-run encoded: records of
/// (u64 zeros, u64 n, n literal bytes). They are mostly zero, so a 512 x 512 x 300 lung
/// proposal shrinks from 79 MB to about a sixth, which the other process need not copy
/// through the pipe nor fault into fresh pages.
fn zero_runs_encode(v: &[u8]) -> Vec<u8> {
    let n = v.len();
    let mut out = Vec::new();
    let mut i = 0;
    while i < n {
        let zeros_from = i;
        while i + 8 <= n && v[i..i + 8] == [0; 8] {
            i += 8;
        }
        while i < n && v[i] == 0 {
            i += 1;
        }
        let zeros = i - zeros_from;
        let literal_from = i;
        let mut run = 0;
        while i < n && run < MIN_ZERO_RUN {
            run = if v[i] == 0 { run + 1 } else { 0 };
            i += 1;
        }
        // A literal ends before a long zero run (which the next record skips).
        let literal_to = if run == MIN_ZERO_RUN { i - run } else { i };
        i = literal_to;
        out.extend_from_slice(&(zeros as u64).to_ne_bytes());
        out.extend_from_slice(&((literal_to - literal_from) as u64).to_ne_bytes());
        out.extend_from_slice(&v[literal_from..literal_to]);
    }
    out
}

/// Decodes [`zero_runs_encode`] into `n` voxels of `grid` (`what` names it in errors).
fn zero_runs_decode(bytes: &[u8], grid: &Geometry, what: &str) -> Result<Vec<u8>, String> {
    let n = grid.voxel_count();
    let bad = |why: &str| format!("{what}: zero-run data {why}");
    let mut out = vec![0u8; n];
    let (mut pos, mut i) = (0usize, 0usize);
    while i < bytes.len() {
        let word = |at: usize| {
            bytes
                .get(at..at + 8)
                .map(|b| u64::from_ne_bytes(b.try_into().expect("8 bytes")) as usize)
                .ok_or_else(|| bad("cut short"))
        };
        let zeros = word(i)?;
        let len = word(i + 8)?;
        i += 16;
        pos = pos
            .checked_add(zeros)
            .filter(|&p| p.checked_add(len).is_some_and(|end| end <= n))
            .ok_or_else(|| bad(&format!("run past {n} voxels")))?;
        let literal = bytes.get(i..i + len).ok_or_else(|| bad("cut short"))?;
        out[pos..pos + len].copy_from_slice(literal);
        pos += len;
        i += len;
    }
    if pos != n {
        return Err(bad(&format!("covers {pos} of {n} voxels")));
    }
    Ok(out)
}

fn voxels_from<T: bytemuck::Pod + Default>(
    bytes: &[u8],
    grid: &Geometry,
    what: &str,
) -> Result<Vec<T>, String> {
    let n = grid.voxel_count();
    if bytes.len() != n * std::mem::size_of::<T>() {
        return Err(format!(
            "{what}: {} bytes for {n} voxels of {} bytes",
            bytes.len(),
            std::mem::size_of::<T>()
        ));
    }
    let mut v = vec![T::default(); n];
    bytemuck::cast_slice_mut::<T, u8>(&mut v).copy_from_slice(bytes);
    Ok(v)
}

// ---------------------------------------------------------------------------------------
// The child's side

/// Builds a segmenter in the child (the `pulmo-ai` binary passes libtorch's loader).
pub type ServeFactory<'a> =
    dyn FnMut(Task, &Path, DeviceChoice) -> Result<Box<dyn Segmenter>, InferError> + 'a;

/// Serves requests from `input` until it ends, answering on `output`. Models are loaded
/// on first use and kept; a model that fails or panics answers with an error (a panicking
/// one is dropped and rebuilt next time). Returns when `input` ends or `output` breaks.
pub fn serve(
    factory: &mut ServeFactory<'_>,
    input: &mut impl Read,
    output: impl Write + Send,
) -> std::io::Result<()> {
    let output = Mutex::new(output);
    let reply = |r: &Reply, payloads: &[&[u8]]| -> std::io::Result<()> {
        let mut w = output.lock().unwrap_or_else(|p| p.into_inner());
        write_frame(&mut *w, KIND_REPLY, r, payloads)
    };
    let mut models: HashMap<(Task, PathBuf, DeviceChoice), Box<dyn Segmenter>> = HashMap::new();
    let mut kept: Option<(u32, CtVolume)> = None;
    while let Some(frame) = read_frame(input, KIND_REQUEST)? {
        let req: Request =
            serde_json::from_slice(&frame.header).map_err(|e| io_err(e.to_string()))?;
        let outcome = serve_one(
            factory,
            &mut models,
            &mut kept,
            &req,
            frame,
            &|done, total| {
                // A broken pipe shows up at the final reply; progress is best effort.
                let _ = reply(&Reply::Progress { done, total }, &[]);
            },
        );
        match outcome {
            Ok(p) => reply(
                &Reply::Done {
                    task: p.task,
                    model: p.model.clone(),
                    model_seconds: p.model_seconds,
                    total_seconds: p.total_seconds,
                    detail: p.detail.clone(),
                    grid: GridWire::from(&p.labels.geometry),
                },
                &[
                    &zero_runs_encode(&p.labels.voxels),
                    &zero_runs_encode(&p.confidence.voxels),
                ],
            )?,
            Err(message) => reply(&Reply::Failed { message }, &[])?,
        }
    }
    Ok(())
}

fn serve_one(
    factory: &mut ServeFactory<'_>,
    models: &mut HashMap<(Task, PathBuf, DeviceChoice), Box<dyn Segmenter>>,
    kept: &mut Option<(u32, CtVolume)>,
    req: &Request,
    frame: Frame,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Result<Proposal, String> {
    let grid = req.grid.geometry()?;
    let want = usize::from(req.ct_sent) + usize::from(req.lungs);
    if frame.payloads.len() != want {
        return Err(format!(
            "request with {} payloads, expected {want}",
            frame.payloads.len()
        ));
    }
    let mut payloads = frame.payloads.into_iter();
    if req.ct_sent {
        let bytes = payloads.next().expect("counted above");
        let ct = CtVolume::new(grid.clone(), voxels_from(&bytes, &grid, "CT")?)
            .map_err(|e| e.to_string())?;
        *kept = Some((req.ct_key, ct));
    }
    let ct = match kept.as_ref() {
        Some((key, ct)) if *key == req.ct_key && ct.geometry == grid => ct,
        _ => return Err("the CT was not sent and is not the one kept here".into()),
    };
    let lungs = match payloads.next() {
        Some(bytes) => Some(
            LabelVolume::new(grid.clone(), zero_runs_decode(&bytes, &grid, "lungs")?)
                .map_err(|e| e.to_string())?,
        ),
        None => None,
    };
    let key = (req.task, req.manifest.clone(), req.device);
    if !models.contains_key(&key) {
        let built = catch_unwind(AssertUnwindSafe(|| {
            factory(req.task, &req.manifest, req.device)
        }))
        .map_err(|p| {
            format!(
                "loading the model panicked: {}",
                super::worker::panic_message(&*p)
            )
        })?
        .map_err(|e| e.to_string())?;
        models.insert(key.clone(), built);
    }
    let model = models.get_mut(&key).expect("inserted above");
    let cancel = std::sync::atomic::AtomicBool::new(false);
    let mut ctx = RunContext {
        cancel: &cancel,
        progress,
    };
    let result = catch_unwind(AssertUnwindSafe(|| {
        model.segment(
            ct,
            SegmentInput {
                lungs: lungs.as_ref(),
            },
            &mut ctx,
        )
    }));
    match result {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(p) => {
            let name = model.info().name;
            models.remove(&key);
            Err(format!(
                "model '{name}' panicked: {}",
                super::worker::panic_message(&*p)
            ))
        }
    }
}

// ---------------------------------------------------------------------------------------
// The viewer's side

/// Where `pulmo-ai` is: `$PULMO_AI_BIN`, else next to the running executable, else one
/// folder up (test binaries live in `target/<profile>/deps`).
pub fn program() -> Result<PathBuf, InferError> {
    if let Some(p) = std::env::var_os("PULMO_AI_BIN") {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe().map_err(|e| InferError::Io {
        path: PathBuf::from("/proc/self/exe"),
        source: e,
    })?;
    let dir = exe.parent().unwrap_or(Path::new("."));
    let candidates = [dir.join(PROGRAM), dir.join("..").join(PROGRAM)];
    candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .ok_or_else(|| InferError::NoModel {
            task: "AI",
            message: format!(
                "the AI helper `{PROGRAM}` is not next to {} (it is built with libtorch: \
                 `cargo build --release --bins`, or set PULMO_AI_BIN)",
                exe.display()
            ),
        })
}

struct Running {
    child: Child,
    stdin: ChildStdin,
    replies: Receiver<std::io::Result<Frame>>,
    stderr_tail: Arc<Mutex<VecDeque<String>>>,
    /// Closed when the child's stderr ends (its last lines are in `stderr_tail`).
    stderr_done: Receiver<()>,
    started: Instant,
    /// Key and grid of the CT this child keeps (the last one sent).
    ct_kept: Option<(u32, Geometry)>,
}

/// One `pulmo-ai serve` child, started on first use and restarted after it dies or a
/// job is cancelled. Shared (behind a mutex) by the segmenters of one worker.
pub struct AiProcess {
    program: Result<PathBuf, String>,
    running: Option<Running>,
}

impl AiProcess {
    /// A process handle for [`program`] (not started yet).
    pub fn new() -> AiProcess {
        AiProcess::with_program(program().map_err(|e| e.to_string()))
    }

    /// A process handle for a given executable (tests use stand-ins).
    pub fn with_program(program: Result<PathBuf, String>) -> AiProcess {
        AiProcess {
            program,
            running: None,
        }
    }

    pub fn shared() -> Arc<Mutex<AiProcess>> {
        Arc::new(Mutex::new(AiProcess::new()))
    }

    fn start(&mut self) -> Result<&mut Running, InferError> {
        // A child that ended between jobs (crash, OOM kill) is replaced, not reported:
        // no job was lost with it.
        if let Some(r) = self.running.as_mut()
            && !matches!(r.child.try_wait(), Ok(None))
        {
            let how = self.stop(false);
            eprintln!("pulmo: the AI process {how} between jobs; starting a new one");
        }
        if self.running.is_none() {
            let t = Instant::now();
            let program = self.program.clone().map_err(|m| InferError::NoModel {
                task: "AI",
                message: m,
            })?;
            let mut command = Command::new(&program);
            // SAFETY: prctl is async-signal-safe; it only marks the child so the kernel
            // ends it when the thread that started it ends (the viewer killed, say),
            // instead of leaving an orphan holding GPU memory. (Linux only.)
            #[cfg(target_os = "linux")]
            unsafe {
                use std::os::unix::process::CommandExt;
                command.pre_exec(|| {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                    Ok(())
                });
            }
            let mut child = command
                .arg("serve")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .map_err(|e| InferError::Io {
                    path: program.clone(),
                    source: e,
                })?;
            let stdin = child.stdin.take().expect("piped");
            let mut stdout = child.stdout.take().expect("piped");
            // 1 MiB pipes (Linux's default ceiling) instead of 64 KiB: 16x fewer
            // hand-overs between the processes for a 157 MB CT.
            #[cfg(target_os = "linux")]
            for fd in [stdin.as_raw_fd(), stdout.as_raw_fd()] {
                // SAFETY: fcntl on descriptors this process owns; failure is harmless.
                unsafe { libc::fcntl(fd, libc::F_SETPIPE_SZ, 1 << 20) };
            }
            let stderr = child.stderr.take().expect("piped");
            let (tx, rx) = crossbeam_channel::unbounded();
            std::thread::Builder::new()
                .name("pulmo-ai-replies".into())
                .spawn(move || {
                    let mut r = std::io::BufReader::with_capacity(1 << 20, &mut stdout);
                    loop {
                        match read_frame(&mut r, KIND_REPLY) {
                            Ok(Some(f)) => {
                                if tx.send(Ok(f)).is_err() {
                                    break;
                                }
                            }
                            Ok(None) => break,
                            Err(e) => {
                                let _ = tx.send(Err(e));
                                break;
                            }
                        }
                    }
                })
                .map_err(|e| InferError::Io {
                    path: program.clone(),
                    source: e,
                })?;
            let tail = Arc::new(Mutex::new(VecDeque::new()));
            let tail2 = tail.clone();
            let (done_tx, done_rx) = crossbeam_channel::bounded::<()>(0);
            let _ = std::thread::Builder::new()
                .name("pulmo-ai-stderr".into())
                .spawn(move || {
                    let _done = done_tx;
                    for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                        eprintln!("pulmo-ai: {line}");
                        let mut t = tail2.lock().unwrap_or_else(|p| p.into_inner());
                        if t.len() == 8 {
                            t.pop_front();
                        }
                        t.push_back(line);
                    }
                });
            self.running = Some(Running {
                child,
                stdin,
                replies: rx,
                stderr_tail: tail,
                stderr_done: done_rx,
                started: t,
                ct_kept: None,
            });
        }
        Ok(self.running.as_mut().expect("started above"))
    }

    /// Ends the child (killed: it holds nothing worth keeping) and says how it ended.
    fn stop(&mut self, kill: bool) -> String {
        let Some(mut r) = self.running.take() else {
            return "not running".into();
        };
        if kill {
            let _ = r.child.kill();
        }
        drop(r.stdin);
        let status = r.child.wait();
        // The stderr thread ends at the child's end (unless a grandchild holds the pipe).
        let _ = r.stderr_done.recv_timeout(Duration::from_millis(500));
        let tail: Vec<String> = r
            .stderr_tail
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect();
        let how = match status {
            Ok(s) => describe_exit(s),
            Err(e) => format!("could not be waited for ({e})"),
        };
        let alive = r.started.elapsed().as_secs_f64();
        if tail.is_empty() {
            format!("{how} after {alive:.1} s")
        } else {
            format!(
                "{how} after {alive:.1} s; its last messages: {}",
                tail.join(" | ")
            )
        }
    }

    /// Runs one request; progress and cancellation through `ctx`.
    fn run(
        &mut self,
        req: &mut Request,
        ct: &CtVolume,
        lungs: Option<&LabelVolume>,
        ctx: &mut RunContext<'_>,
    ) -> Result<Proposal, InferError> {
        ctx.check()?;
        let t = Instant::now();
        let ct_bytes: &[u8] = bytemuck::cast_slice(&ct.voxels);
        req.ct_key = crc32fast::hash(ct_bytes);
        let fresh = self.running.is_none();
        let running = self.start()?;
        let kept = running
            .ct_kept
            .as_ref()
            .is_some_and(|(key, g)| *key == req.ct_key && *g == ct.geometry);
        req.ct_sent = !kept;
        let lungs = lungs.map(|l| zero_runs_encode(&l.voxels));
        let mut payloads: Vec<&[u8]> = Vec::new();
        if req.ct_sent {
            payloads.push(ct_bytes);
        }
        if let Some(l) = &lungs {
            payloads.push(l);
        }
        let sent = write_frame(&mut running.stdin, KIND_REQUEST, &*req, &payloads);
        running.ct_kept = Some((req.ct_key, ct.geometry.clone()));
        let send_s = t.elapsed().as_secs_f64();
        // A child whose pipes closed has ended (or is ending): killing it cannot change
        // how it ended, and never leaves `wait` hanging on one that lingers.
        if let Err(e) = sent {
            let how = self.stop(true);
            return Err(self.died(format!("could not take the job ({e}); it {how}")));
        }
        loop {
            let running = self.running.as_mut().expect("started");
            match running.replies.recv_timeout(Duration::from_millis(50)) {
                Err(RecvTimeoutError::Timeout) => {
                    if ctx.check().is_err() {
                        self.stop(true);
                        return Err(InferError::Cancelled);
                    }
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let how = self.stop(true);
                    return Err(self.died(format!("ended during the job: it {how}")));
                }
                Ok(Err(e)) => {
                    let how = self.stop(true);
                    return Err(self.died(format!("sent a broken reply ({e}); it {how}")));
                }
                Ok(Ok(frame)) => {
                    let reply: Reply = match serde_json::from_slice(&frame.header) {
                        Ok(r) => r,
                        Err(e) => {
                            let how = self.stop(true);
                            return Err(
                                self.died(format!("sent an unreadable reply ({e}); it {how}"))
                            );
                        }
                    };
                    match reply {
                        Reply::Progress { done, total } => {
                            ctx.report(done, total);
                            if ctx.check().is_err() {
                                self.stop(true);
                                return Err(InferError::Cancelled);
                            }
                        }
                        Reply::Failed { message } => return Err(InferError::Remote(message)),
                        Reply::Done {
                            task,
                            model,
                            model_seconds,
                            total_seconds,
                            detail,
                            grid,
                        } => {
                            let proposal = proposal_from(
                                task,
                                model,
                                &grid,
                                frame.payloads,
                                (model_seconds, total_seconds, detail),
                            )
                            .map_err(|m| self.died(format!("sent a bad proposal: {m}")))?;
                            let mut p = proposal;
                            let elapsed = t.elapsed().as_secs_f64();
                            p.detail.push_str(&format!(
                                "; AI process{}: {:.2} s {}, {:.2} s around the segmentation \
                                 in all",
                                if fresh { " (started for this job)" } else { "" },
                                send_s,
                                if req.ct_sent {
                                    "sending the CT"
                                } else {
                                    "sending the job (CT kept there)"
                                },
                                (elapsed - p.total_seconds).max(0.0)
                            ));
                            p.total_seconds = elapsed;
                            return Ok(p);
                        }
                    }
                }
            }
        }
    }

    fn died(&self, what: String) -> InferError {
        let program = self
            .program
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| PROGRAM.into());
        InferError::Remote(format!("the AI process ({program}) {what}"))
    }
}

impl Default for AiProcess {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for AiProcess {
    fn drop(&mut self) {
        self.stop(true);
    }
}

fn describe_exit(s: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    if let Some(sig) = s.signal() {
        let name = match sig {
            libc::SIGSEGV => " (SIGSEGV, a crash)",
            libc::SIGABRT => " (SIGABRT, an abort)",
            libc::SIGKILL => " (SIGKILL: killed, e.g. by the out-of-memory killer)",
            libc::SIGBUS => " (SIGBUS)",
            libc::SIGILL => " (SIGILL)",
            _ => "",
        };
        format!("was killed by signal {sig}{name}")
    } else {
        match s.code() {
            Some(c) => format!("exited with status {c}"),
            None => "ended".into(),
        }
    }
}

fn proposal_from(
    task: Task,
    model: ModelInfo,
    grid: &GridWire,
    payloads: Vec<Vec<u8>>,
    (model_seconds, total_seconds, detail): (f64, f64, String),
) -> Result<Proposal, String> {
    let g = grid.geometry()?;
    let [labels, confidence]: [Vec<u8>; 2] = payloads
        .try_into()
        .map_err(|p: Vec<Vec<u8>>| format!("{} payloads, expected 2", p.len()))?;
    let labels = zero_runs_decode(&labels, &g, "labels")?;
    let confidence = zero_runs_decode(&confidence, &g, "confidence")?;
    Ok(Proposal {
        task,
        labels: Volume::new(g.clone(), labels).map_err(|e| e.to_string())?,
        confidence: Volume::new(g, confidence).map_err(|e| e.to_string())?,
        model,
        model_seconds,
        total_seconds,
        detail,
    })
}

/// A segmenter whose model runs in the AI process.
pub struct ChildSegmenter {
    task: Task,
    manifest: PathBuf,
    device: DeviceChoice,
    process: Arc<Mutex<AiProcess>>,
    info: ModelInfo,
}

impl ChildSegmenter {
    /// The model of `manifest` in `process`. Reads the manifest here, so a missing or
    /// unreadable one is reported before any process starts.
    pub fn new(
        task: Task,
        manifest: &Path,
        device: DeviceChoice,
        process: Arc<Mutex<AiProcess>>,
    ) -> Result<ChildSegmenter, InferError> {
        let m = Manifest::read(manifest)?;
        if m.task != task {
            return Err(InferError::Manifest {
                path: manifest.to_path_buf(),
                message: format!("a {} model, not a {} model", m.task.name(), task.name()),
            });
        }
        let manifest = std::path::absolute(manifest).unwrap_or_else(|_| manifest.to_path_buf());
        Ok(ChildSegmenter {
            task,
            manifest,
            device,
            process,
            info: ModelInfo {
                name: m.name,
                version: m.version,
                device: format!("{device:?}").to_lowercase(),
            },
        })
    }
}

impl Segmenter for ChildSegmenter {
    fn task(&self) -> Task {
        self.task
    }

    fn info(&self) -> ModelInfo {
        self.info.clone()
    }

    fn segment(
        &mut self,
        ct: &CtVolume,
        input: SegmentInput<'_>,
        ctx: &mut RunContext<'_>,
    ) -> Result<Proposal, InferError> {
        let lungs = input.lungs.filter(|l| l.geometry.dims == ct.geometry.dims);
        let mut req = Request {
            task: self.task,
            manifest: self.manifest.clone(),
            device: self.device,
            grid: GridWire::from(&ct.geometry),
            ct_key: 0,
            ct_sent: true,
            lungs: lungs.is_some(),
        };
        let mut process = self.process.lock().unwrap_or_else(|p| p.into_inner());
        let p = process.run(&mut req, ct, lungs, ctx)?;
        self.info = p.model.clone();
        Ok(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::infer::classic::ThresholdLungs;

    fn ct() -> CtVolume {
        let g = Geometry::axis_aligned([24, 20, 6], [1.5, 1.5, 3.0], [-10.0, 5.0, 2.0]);
        let n = g.voxel_count();
        let vox = (0..n)
            .map(|i| {
                let x = i % 24;
                if (5..19).contains(&x) { -850 } else { 40 }
            })
            .collect();
        CtVolume::new(g, vox).unwrap()
    }

    fn request(ct: &CtVolume, lungs: bool) -> Request {
        Request {
            task: Task::Lung,
            manifest: PathBuf::from("threshold"),
            device: DeviceChoice::Cpu,
            grid: GridWire::from(&ct.geometry),
            ct_key: crc32fast::hash(bytemuck::cast_slice(&ct.voxels)),
            ct_sent: true,
            lungs,
        }
    }

    #[test]
    fn a_frame_round_trips_and_garbage_is_an_error() {
        let ct = ct();
        let mut buf = Vec::new();
        let req = request(&ct, false);
        write_frame(
            &mut buf,
            KIND_REQUEST,
            &req,
            &[bytemuck::cast_slice(&ct.voxels)],
        )
        .unwrap();
        let f = read_frame(&mut buf.as_slice(), KIND_REQUEST)
            .unwrap()
            .unwrap();
        let back: Request = serde_json::from_slice(&f.header).unwrap();
        let g = back.grid.geometry().unwrap();
        assert_eq!(g, ct.geometry);
        assert_eq!(
            voxels_from::<i16>(&f.payloads[0], &g, "CT").unwrap(),
            ct.voxels
        );
        // Wrong kind, wrong magic, a truncated payload, a clean end.
        assert!(read_frame(&mut buf.as_slice(), KIND_REPLY).is_err());
        let mut bad = buf.clone();
        bad[0] = b'X';
        let e = read_frame(&mut bad.as_slice(), KIND_REQUEST).err().unwrap();
        assert!(e.to_string().contains("not a pulmo frame"), "{e}");
        let cut = &buf[..buf.len() - 10];
        assert!(read_frame(&mut &cut[..], KIND_REQUEST).is_err());
        assert!(read_frame(&mut &[][..], KIND_REQUEST).unwrap().is_none());
        // A payload of the wrong size for the grid.
        assert!(voxels_from::<i16>(&f.payloads[0][2..], &g, "CT").is_err());
    }

    proptest::proptest! {
        /// Zero-run coding round-trips any u8 volume: sparse, dense, all zero, short
        /// zero gaps and long ones, and ends in zeros or not.
        #[test]
        fn zero_runs_round_trip(
            runs in proptest::collection::vec((0usize..200, 0usize..40, 1u8..=255), 0..40),
            tail in 0usize..70,
        ) {
            let mut v = Vec::new();
            for (zeros, ones, value) in runs {
                v.extend(std::iter::repeat_n(0u8, zeros));
                v.extend((0..ones).map(|i| if i % 7 == 3 { 0 } else { value }));
            }
            v.extend(std::iter::repeat_n(0u8, tail));
            v.push(1);
            let g = Geometry::axis_aligned([v.len(), 1, 1], [1.0; 3], [0.0; 3]);
            let coded = zero_runs_encode(&v);
            proptest::prop_assert_eq!(zero_runs_decode(&coded, &g, "t").unwrap(), v);
        }
    }

    #[test]
    fn zero_runs_are_small_for_labels_and_corrupt_data_is_an_error() {
        let mut v = vec![0u8; 100_000];
        v[40_000..50_000].fill(2);
        let coded = zero_runs_encode(&v);
        assert!(coded.len() < 10_100, "{}", coded.len());
        let g = Geometry::axis_aligned([100_000, 1, 1], [1.0; 3], [0.0; 3]);
        assert_eq!(zero_runs_decode(&coded, &g, "t").unwrap(), v);
        let short = Geometry::axis_aligned([99_999, 1, 1], [1.0; 3], [0.0; 3]);
        let long = Geometry::axis_aligned([100_001, 1, 1], [1.0; 3], [0.0; 3]);
        assert!(zero_runs_decode(&coded, &short, "t").is_err());
        let e = zero_runs_decode(&coded, &long, "labels").unwrap_err();
        assert!(e.contains("labels") && e.contains("covers"), "{e}");
        assert!(zero_runs_decode(&coded[..coded.len() - 3], &g, "t").is_err());
        let mut huge = coded.clone();
        huge[..8].copy_from_slice(&u64::MAX.to_ne_bytes());
        assert!(zero_runs_decode(&huge, &g, "t").is_err());
        assert_eq!(
            zero_runs_decode(
                &[],
                &Geometry::axis_aligned([1, 1, 1], [1.0; 3], [0.0; 3]),
                "t"
            )
            .unwrap_err(),
            "t: zero-run data covers 0 of 1 voxels"
        );
    }

    /// The serving loop answers like the segmenter it wraps, with progress first, and
    /// turns a failing or panicking model into an error reply.
    #[test]
    fn serve_answers_as_the_model_would() {
        let ct = ct();
        let direct = RunContext::detached(|c| {
            ThresholdLungs::pipeline().segment(&ct, SegmentInput::default(), c)
        })
        .unwrap();
        let mut input = Vec::new();
        for manifest in ["threshold", "fails", "panics"] {
            let mut req = request(&ct, false);
            req.manifest = PathBuf::from(manifest);
            write_frame(
                &mut input,
                KIND_REQUEST,
                &req,
                &[bytemuck::cast_slice(&ct.voxels)],
            )
            .unwrap();
        }
        // The CT kept from the last request: once with its key (answers as before), once
        // with another key (refused: never a proposal for the wrong CT).
        let mut kept = request(&ct, false);
        kept.ct_sent = false;
        write_frame(&mut input, KIND_REQUEST, &kept, &[]).unwrap();
        kept.ct_key ^= 1;
        write_frame(&mut input, KIND_REQUEST, &kept, &[]).unwrap();
        let mut factory = |_t: Task, m: &Path, _d: DeviceChoice| match m.to_str() {
            Some("threshold") => Ok(Box::new(ThresholdLungs::pipeline()) as Box<dyn Segmenter>),
            Some("fails") => Err(InferError::Input("no such model here".into())),
            _ => panic!("model constructor blew up"),
        };
        let mut out = Vec::new();
        serve(&mut factory, &mut input.as_slice(), &mut out).unwrap();
        let mut r = out.as_slice();
        let mut replies = Vec::new();
        while let Some(f) = read_frame(&mut r, KIND_REPLY).unwrap() {
            let reply: Reply = serde_json::from_slice(&f.header).unwrap();
            replies.push((reply, f.payloads));
        }
        assert!(matches!(replies[0].0, Reply::Progress { .. }));
        let done: Vec<_> = replies
            .iter()
            .filter(|(r, _)| matches!(r, Reply::Done { .. }))
            .collect();
        assert_eq!(done.len(), 2, "the first request and the kept CT's");
        for (reply, payloads) in done {
            let Reply::Done { grid, .. } = reply else {
                unreachable!()
            };
            let g = grid.geometry().unwrap();
            assert_eq!(g, ct.geometry);
            let decode = |b: &[u8]| zero_runs_decode(b, &g, "test").unwrap();
            assert_eq!(decode(&payloads[0]), direct.labels.voxels);
            assert_eq!(decode(&payloads[1]), direct.confidence.voxels);
        }
        let failed: Vec<&String> = replies
            .iter()
            .filter_map(|(r, _)| match r {
                Reply::Failed { message } => Some(message),
                _ => None,
            })
            .collect();
        assert_eq!(failed.len(), 3, "{failed:?}");
        assert!(failed[0].contains("no such model here"));
        assert!(failed[1].contains("panicked") && failed[1].contains("blew up"));
        assert!(failed[2].contains("not the one kept"), "{}", failed[2]);
    }

    /// A child that dies mid-job (here: a shell that kills itself with SIGSEGV) fails
    /// the job with the signal and its last words; the next job starts a new child.
    #[test]
    fn a_crashing_child_is_a_job_error_not_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("fake-ai");
        std::fs::write(
            &script,
            "#!/bin/sh\necho 'about to crash' >&2\nhead -c 10 >/dev/null\nkill -SEGV $$\n",
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let mut p = AiProcess::with_program(Ok(script));
        let ct = ct();
        for _ in 0..2 {
            let e = RunContext::detached(|c| p.run(&mut request(&ct, false), &ct, None, c))
                .err()
                .unwrap()
                .to_string();
            assert!(e.contains("signal 11") && e.contains("SIGSEGV"), "{e}");
            assert!(e.contains("about to crash"), "{e}");
            assert!(p.running.is_none());
        }
        let mut missing = AiProcess::with_program(Err("no helper here".into()));
        let e = RunContext::detached(|c| missing.run(&mut request(&ct, false), &ct, None, c))
            .err()
            .unwrap();
        assert!(e.to_string().contains("no helper here"), "{e}");
    }

    /// A child that ended while idle is replaced at the next job, which then runs.
    #[test]
    fn a_child_that_died_between_jobs_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("fake-ai");
        // Answers nothing: the job fails when its input ends, so each job sees how the
        // child ended. The first child is killed while idle.
        std::fs::write(&script, "#!/bin/sh\nexec cat >/dev/null\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let mut p = AiProcess::with_program(Ok(script));
        let ct = ct();
        p.start().unwrap();
        let first = p.running.as_ref().unwrap().child.id();
        unsafe { libc::kill(first as i32, libc::SIGKILL) };
        std::thread::sleep(Duration::from_millis(100));
        p.start().unwrap();
        let second = p.running.as_ref().unwrap().child.id();
        assert_ne!(first, second, "a new child replaces the dead one");
        // The new child is alive and takes a request (it ends when stdin closes).
        let running = p.running.as_mut().unwrap();
        write_frame(
            &mut running.stdin,
            KIND_REQUEST,
            &request(&ct, false),
            &[bytemuck::cast_slice(&ct.voxels)],
        )
        .unwrap();
        assert!(p.stop(false).contains("exited with status 0"));
    }

    /// Cancelling kills a child that is still working and reports `Cancelled` promptly.
    #[test]
    fn cancel_kills_a_busy_child() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("slow-ai");
        std::fs::write(&script, "#!/bin/sh\ncat >/dev/null &\nexec sleep 30\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let mut p = AiProcess::with_program(Ok(script));
        let ct = ct();
        let cancel = std::sync::atomic::AtomicBool::new(false);
        let t = Instant::now();
        let e = std::thread::scope(|s| {
            s.spawn(|| {
                std::thread::sleep(Duration::from_millis(300));
                cancel.store(true, std::sync::atomic::Ordering::Relaxed);
            });
            let progress = |_: usize, _: usize| {};
            let mut ctx = RunContext {
                cancel: &cancel,
                progress: &progress,
            };
            p.run(&mut request(&ct, false), &ct, None, &mut ctx)
        });
        assert!(matches!(e, Err(InferError::Cancelled)), "{e:?}");
        assert!(t.elapsed() < Duration::from_secs(10));
        assert!(p.running.is_none());
    }
}
