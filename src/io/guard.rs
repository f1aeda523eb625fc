//! What a file may make pulmo do: the one place that decides how much memory a size
//! taken from a header may claim, which files may be opened for reading, how deep a
//! DICOM data set may nest, and how a third-party decoder's panic becomes an error.
//!
//! Readers call these before they allocate or block, so that a hostile or broken file
//! gets an error naming it instead of an allocation abort, a hang or a crash:
//! - [`check_alloc`] / [`try_filled_vec`]: every buffer whose size comes from a header is
//!   checked against the [`memory_budget_bytes`] and allocated fallibly;
//! - [`open_regular_file`] / [`ensure_regular_file`]: FIFOs, devices and sockets are
//!   refused before they are read (a named pipe blocks forever, `/dev/zero` never ends);
//! - [`catch_panic`]: a panic inside a codec (dicom-rs' RLE decoder panics on some
//!   corrupt fragments) is caught and returned as the codec's error, without the default
//!   panic message on stderr;
//! - [`MAX_NESTING_DEPTH`], [`DEFLATE_MAX_RATIO`], [`MAX_RESAMPLE_GROWTH`]: the limits the
//!   readers apply.

use std::cell::{Cell, RefCell};
use std::fs::File;
use std::io;
use std::path::Path;
use std::sync::Once;

/// Deepest nesting of DICOM sequences accepted (the deepest real objects, structured
/// reports, nest about 20 levels; 10,000 levels overflow the parser's stack).
pub const MAX_NESTING_DEPTH: usize = 64;

/// The most bytes one byte of a deflate (gzip, zlib) stream can decompress to; a
/// compressed stream claiming more is corrupt or hostile.
pub const DEFLATE_MAX_RATIO: u64 = 1032;

/// Resampling an irregular stack (missing slices, uneven spacing, gantry tilt) may grow
/// the voxel count by at most this factor; more means a stray position or spacing.
pub const MAX_RESAMPLE_GROWTH: usize = 8;

/// Environment variable overriding the memory budget, in MiB.
pub const MEMORY_LIMIT_ENV: &str = "PULMO_MEMORY_LIMIT_MB";

/// A size that may not be allocated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    #[error(
        "{what} would need {}, more than the memory budget of {} (3/4 of the memory available; set {MEMORY_LIMIT_ENV} to change it)",
        human_bytes(*bytes),
        human_bytes(*budget)
    )]
    OverBudget {
        what: String,
        bytes: u64,
        budget: u64,
    },
    #[error("{what}: the size overflows")]
    Overflow { what: String },
    #[error("{what} would need {}, which the system refused to allocate", human_bytes(*bytes))]
    AllocationFailed { what: String, bytes: u64 },
}

/// "1.5 GiB", "40 KiB", "12 bytes".
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} bytes");
    }
    let mut v = bytes as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

static BUDGET_OVERRIDE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Sets the memory budget for this process (`None`: back to the environment's); for
/// tests and fuzzing, which must not depend on the machine's memory.
pub fn override_memory_budget(bytes: Option<u64>) {
    BUDGET_OVERRIDE.store(bytes.unwrap_or(0), std::sync::atomic::Ordering::Relaxed);
}

/// The most bytes one buffer whose size comes from a file may take: the environment's
/// [`MEMORY_LIMIT_ENV`] (MiB) if set, else 3/4 of the smaller of the physical memory and
/// the process' address-space limit.
pub fn memory_budget_bytes() -> u64 {
    let forced = BUDGET_OVERRIDE.load(std::sync::atomic::Ordering::Relaxed);
    if forced != 0 {
        return forced;
    }
    if let Some(mb) = std::env::var(MEMORY_LIMIT_ENV)
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
    {
        return mb.saturating_mul(1 << 20);
    }
    let mut available = physical_memory_bytes().unwrap_or(8 << 30);
    if let Some(limit) = address_space_limit_bytes() {
        available = available.min(limit);
    }
    available / 4 * 3
}

#[cfg(unix)]
fn physical_memory_bytes() -> Option<u64> {
    // SAFETY: sysconf has no preconditions.
    let (pages, page) = unsafe {
        (
            libc::sysconf(libc::_SC_PHYS_PAGES),
            libc::sysconf(libc::_SC_PAGESIZE),
        )
    };
    (pages > 0 && page > 0).then(|| pages as u64 * page as u64)
}

#[cfg(not(unix))]
fn physical_memory_bytes() -> Option<u64> {
    None
}

#[cfg(unix)]
fn address_space_limit_bytes() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass.
    let ok = unsafe { libc::getrlimit(libc::RLIMIT_AS, &mut limit) } == 0;
    (ok && limit.rlim_cur != libc::RLIM_INFINITY).then_some(limit.rlim_cur)
}

#[cfg(not(unix))]
fn address_space_limit_bytes() -> Option<u64> {
    None
}

/// Checks that `count` elements of `elem_bytes` each fit the memory budget; returns the
/// byte count. `what` names the buffer for the message ("512 x 512 x 300 voxels").
pub fn check_alloc(
    what: impl FnOnce() -> String,
    count: u64,
    elem_bytes: u64,
) -> Result<u64, LimitError> {
    let Some(bytes) = count.checked_mul(elem_bytes) else {
        return Err(LimitError::Overflow { what: what() });
    };
    let budget = memory_budget_bytes();
    if bytes > budget {
        return Err(LimitError::OverBudget {
            what: what(),
            bytes,
            budget,
        });
    }
    Ok(bytes)
}

/// Checks the element count of a grid (the product of `dims`) against the memory budget
/// for `elem_bytes` per voxel; returns the voxel count.
pub fn check_grid(dims: [usize; 3], elem_bytes: usize) -> Result<usize, LimitError> {
    let what = || format!("a {} x {} x {} grid", dims[0], dims[1], dims[2]);
    let count = dims
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d as u64))
        .ok_or_else(|| LimitError::Overflow { what: what() })?;
    check_alloc(what, count, elem_bytes as u64)?;
    usize::try_from(count).map_err(|_| LimitError::Overflow { what: what() })
}

/// A vector of `len` copies of `value`, after checking the budget; the allocation is
/// fallible (an error, not an abort, when the system refuses it).
pub fn try_filled_vec<T: Clone>(
    len: usize,
    value: T,
    what: impl FnOnce() -> String,
) -> Result<Vec<T>, LimitError> {
    let elem = std::mem::size_of::<T>().max(1) as u64;
    let mut what = Some(what);
    let mut name = || what.take().map(|f| f()).unwrap_or_default();
    let bytes = check_alloc(&mut name, len as u64, elem)?;
    let mut v = Vec::new();
    v.try_reserve_exact(len)
        .map_err(|_| LimitError::AllocationFailed {
            what: name(),
            bytes,
        })?;
    v.resize(len, value);
    Ok(v)
}

/// The kind of a non-regular file, in words, or `None` for a regular file.
fn special_kind(meta: &std::fs::Metadata) -> Option<&'static str> {
    let t = meta.file_type();
    if t.is_file() {
        return None;
    }
    if t.is_dir() {
        return Some("a folder");
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if t.is_fifo() {
            return Some("a named pipe (FIFO)");
        }
        if t.is_char_device() {
            return Some("a character device");
        }
        if t.is_block_device() {
            return Some("a block device");
        }
        if t.is_socket() {
            return Some("a socket");
        }
    }
    Some("not a regular file")
}

fn not_regular(kind: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("{kind}, not a regular file: refused (reading it could block or never end)"),
    )
}

/// Checks (following symbolic links) that `path` is a regular file, for readers that
/// open the file themselves.
pub fn ensure_regular_file(path: &Path) -> io::Result<std::fs::Metadata> {
    let meta = std::fs::metadata(path)?;
    match special_kind(&meta) {
        None => Ok(meta),
        Some(kind) => Err(not_regular(kind)),
    }
}

/// Opens `path` for reading if it is a regular file. The file is opened without
/// blocking (a FIFO with no writer would block in `open`) and its type checked on the
/// open descriptor, so nothing can swap it in between.
pub fn open_regular_file(path: &Path) -> io::Result<File> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc::O_NONBLOCK);
    }
    let file = options.open(path)?;
    let meta = file.metadata()?;
    if let Some(kind) = special_kind(&meta) {
        return Err(not_regular(kind));
    }
    #[cfg(unix)]
    {
        use std::os::fd::AsRawFd;
        // Regular files ignore O_NONBLOCK, but clear it so the descriptor is ordinary.
        // SAFETY: fcntl on a descriptor we own.
        unsafe {
            let fd = file.as_raw_fd();
            let flags = libc::fcntl(fd, libc::F_GETFL);
            if flags >= 0 {
                libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK);
            }
        }
    }
    Ok(file)
}

/// Reads a whole regular file (refusing FIFOs and devices, and files larger than the
/// memory budget).
pub fn read_regular_file(path: &Path) -> io::Result<Vec<u8>> {
    let mut file = open_regular_file(path)?;
    let len = file.metadata()?.len();
    let budget = memory_budget_bytes();
    if len > budget {
        return Err(io::Error::new(
            io::ErrorKind::OutOfMemory,
            format!(
                "the file is {}, more than the memory budget of {}",
                human_bytes(len),
                human_bytes(budget)
            ),
        ));
    }
    let mut bytes = Vec::new();
    bytes
        .try_reserve_exact(len as usize)
        .map_err(|_| io::Error::new(io::ErrorKind::OutOfMemory, "cannot allocate"))?;
    io::Read::read_to_end(&mut file, &mut bytes)?;
    Ok(bytes)
}

thread_local! {
    /// Set while this thread runs inside [`catch_panic`]: the panic hook stays quiet and
    /// leaves the message here.
    static INSIDE: Cell<bool> = const { Cell::new(false) };
    static MESSAGE: RefCell<Option<String>> = const { RefCell::new(None) };
}

static HOOK: Once = Once::new();

fn install_quiet_hook() {
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if INSIDE.get() {
                let location = info
                    .location()
                    .map(|l| format!(" (at {}:{})", l.file(), l.line()))
                    .unwrap_or_default();
                MESSAGE.set(Some(format!("{}{location}", payload_text(info.payload()))));
            } else {
                previous(info);
            }
        }));
    });
}

fn payload_text(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic without a message".to_string()
    }
}

/// Runs `f` (third-party parsing or decoding of untrusted bytes); a panic inside it
/// becomes `Err("<what> panicked: <message>")` and prints nothing.
pub fn catch_panic<R>(what: &str, f: impl FnOnce() -> R) -> Result<R, String> {
    install_quiet_hook();
    let was_inside = INSIDE.replace(true);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    INSIDE.set(was_inside);
    result.map_err(|payload| {
        let message = MESSAGE
            .take()
            .unwrap_or_else(|| payload_text(payload.as_ref()));
        format!("{what} failed on malformed data (it panicked: {message})")
    })
}

/// The message of an error and its causes, each once: "a: b: c" (a cause whose text the
/// message already contains is not repeated).
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(s) = source {
        let more = s.to_string();
        if !more.is_empty() && !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_refuses_what_cannot_fit_and_overflow() {
        let e = check_alloc(|| "a huge grid".into(), u64::MAX / 2, 4).unwrap_err();
        assert!(matches!(e, LimitError::Overflow { .. }), "{e}");
        let e = check_alloc(|| "a huge grid".into(), 1 << 50, 2).unwrap_err();
        assert!(
            e.to_string().contains("a huge grid would need 2.0 PiB"),
            "{e}"
        );
        assert_eq!(check_alloc(|| unreachable!(), 1000, 2), Ok(2000));
        let e = check_grid([65535, 65535, 1 << 20], 2).unwrap_err();
        assert!(
            e.to_string().starts_with("a 65535 x 65535 x 1048576 grid"),
            "{e}"
        );
        assert_eq!(check_grid([4, 5, 6], 2), Ok(120));
        let v = try_filled_vec(10, 7i16, || unreachable!()).unwrap();
        assert_eq!(v, vec![7; 10]);
        assert!(try_filled_vec(usize::MAX / 2, 0i16, || "x".into()).is_err());
    }

    #[test]
    fn human_bytes_reads_well() {
        assert_eq!(human_bytes(12), "12 bytes");
        assert_eq!(human_bytes(40 * 1024), "40.0 KiB");
        assert_eq!(human_bytes(3 << 30), "3.0 GiB");
    }

    #[cfg(unix)]
    #[test]
    fn fifos_and_devices_are_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("pipe");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: mkfifo with a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let e = open_regular_file(&fifo).unwrap_err();
        assert!(e.to_string().contains("named pipe"), "{e}");
        assert!(ensure_regular_file(&fifo).is_err());
        let e = read_regular_file(Path::new("/dev/zero")).unwrap_err();
        assert!(e.to_string().contains("character device"), "{e}");
        let file = dir.path().join("f");
        std::fs::write(&file, b"abc").unwrap();
        assert_eq!(read_regular_file(&file).unwrap(), b"abc");
    }

    #[test]
    fn a_panic_becomes_an_error_with_its_message() {
        let r: Result<(), String> = catch_panic("the RLE decoder", || {
            let v: Vec<u8> = Vec::new();
            let i = v.len() + 3;
            let _ = v[i];
        });
        let e = r.unwrap_err();
        assert!(
            e.starts_with("the RLE decoder failed on malformed data"),
            "{e}"
        );
        assert!(e.contains("index out of bounds"), "{e}");
        assert_eq!(catch_panic("x", || 5), Ok(5));
    }

    #[test]
    fn error_chain_prints_each_cause_once() {
        #[derive(Debug, thiserror::Error)]
        #[error("corrupt gzip stream: {0}")]
        struct Repeats(#[source] io::Error);
        let e = Repeats(io::Error::other("invalid deflate data"));
        assert_eq!(error_chain(&e), "corrupt gzip stream: invalid deflate data");
        #[derive(Debug, thiserror::Error)]
        #[error("cannot read")]
        struct Wraps(#[source] io::Error);
        let e = Wraps(io::Error::other("Is a directory"));
        assert_eq!(error_chain(&e), "cannot read: Is a directory");
    }
}
