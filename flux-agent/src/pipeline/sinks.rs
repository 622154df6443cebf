//! The sinks the agent subscribes to the bus today: the events file (`--events`, JSON lines or
//! readable lines) and the readable log. Each is a [`Sink`] on its own thread
//! ([`crate::pipeline::bus`]), so neither can stall the capture.
//!
//! Every event prints once: verdicts, blocks, guards and alerts go to the log; the readable
//! events format (stdout by default) carries only the `dns` lines beside it. The JSON events
//! file is the machine contract and carries everything.
//!
//! The events file holds every DNS answer of the host: [`EventsFile`] opens it without
//! following a symbolic link (`O_NOFOLLOW`), creates it mode 0600 (and narrows an existing
//! file to 0600), and bounds it: past `--events-max-size` it is rotated, to `PATH.1` (the
//! older ones shifted to `PATH.2` .. `PATH.N`, `--events-keep N`, default 1), so the disk holds
//! at most N+1 times the bound, and for a moment up to two files more: the file that leaves is
//! freed on a thread of its own (`Freer`), so that freeing it does not stall the sink (unless
//! one is still waiting to be freed: then the sink frees it, as it always did).
//! Rotation rather than stopping, because the newest events are the ones an operator looks for
//! after an incident, and `tail -F` follows a rotated file.
//! SIGHUP reopens it ([`EventsControl`]), for logrotate's move-then-signal.

use std::{
    fs::{File, OpenOptions},
    io::{self, BufWriter, Write},
    os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        mpsc::{self, SyncSender, TrySendError},
    },
};

use crate::pipeline::{
    bus::Sink,
    dns_json,
    events::{Event, EventKind},
};

/// How `--events` is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventFormat {
    /// One JSON object per line, every event (`docs/events.md`).
    Json,
    /// One readable line per DNS response; the decisions are in the log.
    Human,
}

impl EventFormat {
    /// The events this format carries.
    pub fn kinds(self) -> &'static [EventKind] {
        match self {
            EventFormat::Json => &EventKind::ALL,
            EventFormat::Human => &[EventKind::Dns],
        }
    }
}

/// The events file or stdout.
pub struct EventsWriter<W> {
    out: W,
    format: EventFormat,
    /// The line being written, kept between events.
    line: Vec<u8>,
}

impl<W: Write + Send + 'static> EventsWriter<W> {
    pub fn new(out: W, format: EventFormat) -> Self {
        Self {
            out,
            format,
            line: Vec::with_capacity(LINE_CAPACITY),
        }
    }
}

impl<W: Write + Send + 'static> Sink for EventsWriter<W> {
    fn write(&mut self, e: &Event) -> io::Result<()> {
        write_event_with(&mut self.line, &mut self.out, self.format, e)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// The default bound of the events file (`--events-max-size`): 100 MiB.
pub const DEFAULT_EVENTS_MAX: u64 = 100 << 20;

/// Why the events file cannot be opened.
#[derive(Debug, thiserror::Error)]
pub enum EventsFileError {
    #[error(
        "refusing to open events file {0}: it is a symbolic link (give the real path; a link \
         another user planted could make root write where it should not)"
    )]
    Symlink(PathBuf),
    #[error("cannot open events file {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Opens `path` for appending: no symbolic link followed, created 0600, narrowed to 0600.
fn open_events(path: &Path) -> Result<File, EventsFileError> {
    let f = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|source| {
            if source.raw_os_error() == Some(libc::ELOOP) {
                EventsFileError::Symlink(path.to_owned())
            } else {
                EventsFileError::Open {
                    path: path.to_owned(),
                    source,
                }
            }
        })?;
    let open_err = |source| EventsFileError::Open {
        path: path.to_owned(),
        source,
    };
    let meta = f.metadata().map_err(open_err)?;
    if meta.is_file() && meta.permissions().mode() & 0o077 != 0 {
        log::info!("events file {}: narrowed to mode 0600", path.display());
        f.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(open_err)?;
    }
    Ok(f)
}

/// The `--events` file: appended to, bounded by rotation (see the module comment), reopened
/// on request ([`EventsControl`], SIGHUP). The sink thread writes through it and the run loop
/// reopens it; both take the same lock, once per line, so neither a rotation nor a reopen ever
/// splits a line or loses one.
pub struct EventsFile {
    inner: Arc<Mutex<EventsInner>>,
}

/// Reopens the events file from another thread than the one writing it (`run` on SIGHUP).
#[derive(Clone)]
pub struct EventsControl {
    inner: Arc<Mutex<EventsInner>>,
}

struct EventsInner {
    path: PathBuf,
    out: BufWriter<File>,
    size: u64,
    /// 0: no bound.
    max: u64,
    /// Rotated files kept: PATH.1 (newest) .. PATH.keep; 0 keeps none.
    keep: u32,
    rotations: u64,
    /// Frees a rotated-out file ([`Freer`]; tests keep the files to look at them).
    free: Box<dyn FnMut(File) + Send>,
}

/// How many rotated events files `--events-keep` keeps by default: one, `PATH.1`, so the disk
/// holds at most twice `--events-max-size`.
pub const DEFAULT_EVENTS_KEEP: u32 = 1;

/// The most rotated files `--events-keep` accepts: a bound on the renames one rotation makes
/// (each a metadata write) while the sink holds its lock.
pub const MAX_EVENTS_KEEP: u32 = 100;

fn lock(m: &Mutex<EventsInner>) -> std::sync::MutexGuard<'_, EventsInner> {
    // A writer that panicked mid-line leaves a file still fit to append to.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl EventsFile {
    /// Opens `path` for appending, rotated past `max` bytes (0: never) keeping `keep` files.
    pub fn open(path: &Path, max: u64, keep: u32) -> Result<Self, EventsFileError> {
        let f = open_events(path)?;
        let size = f.metadata().map(|m| m.len()).unwrap_or(0);
        let inner = EventsInner {
            path: path.to_owned(),
            out: BufWriter::new(f),
            size,
            max,
            keep: keep.min(MAX_EVENTS_KEEP),
            rotations: 0,
            free: {
                let mut freer = Freer::default();
                Box::new(move |f| freer.free(f))
            },
        };
        Ok(Self {
            inner: Arc::new(Mutex::new(inner)),
        })
    }

    /// A handle that reopens this file.
    pub fn control(&self) -> EventsControl {
        EventsControl {
            inner: Arc::clone(&self.inner),
        }
    }

    /// Rotations since the file was opened.
    pub fn rotations(&self) -> u64 {
        lock(&self.inner).rotations
    }
}

impl EventsControl {
    /// Writes out what is buffered, closes the file and opens `PATH` again, created if it was
    /// moved away (logrotate's move, then SIGHUP), with new bounds. On error the old file is
    /// kept open, and written to.
    pub fn reopen(&self, max: u64, keep: u32) -> Result<(), EventsFileError> {
        let mut inner = lock(&self.inner);
        let path = inner.path.clone();
        let flushed = inner.out.flush();
        let f = open_events(&path)?;
        inner.size = f.metadata().map(|m| m.len()).unwrap_or(0);
        inner.out = BufWriter::new(f);
        inner.max = max;
        inner.keep = keep.min(MAX_EVENTS_KEEP);
        flushed.map_err(|source| EventsFileError::Open { path, source })
    }

    pub fn path(&self) -> PathBuf {
        lock(&self.inner).path.clone()
    }
}

/// `PATH.n`.
fn numbered(path: &Path, n: u32) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(format!(".{n}"));
    PathBuf::from(p)
}

impl EventsInner {
    /// PATH.(keep-1) -> PATH.keep, ..., PATH -> PATH.1, and a new PATH. With `keep` 0 the full
    /// file is removed.
    ///
    /// The file that leaves (PATH.keep, or PATH with `keep` 0) is unlinked here but freed on
    /// another thread ([`Freer`]) when it can be: the last handle to it goes there, so the
    /// unlink only removes the name and the close, which frees the blocks, happens on that
    /// thread. PATH.keep is held open (`O_PATH`) across its unlink; with `keep` 0 the last
    /// handle is the writer's own, handed over once the new file is open. Why: freeing a full
    /// events file is slow, and the sink thread holds the lock while it rotates. On this host's
    /// ext4 (mounted `discard`) a rename over a 256 MiB file took 175-260 ms. At 250,000
    /// responses a second that is 40,000-65,000 events, past the sink's queue of 16,384: an
    /// agent writing a JSON events file bounded at 256 MiB dropped 13% of its events under
    /// `ringbuf-load`'s agent-alone step at 250,000/s. The space comes back a moment after the
    /// unlink (see [`FREE_QUEUE`] for how many files may be waiting).
    fn rotate(&mut self) -> io::Result<()> {
        self.out.flush()?;
        if self.keep == 0 {
            // Gone already (removed by hand): nothing to free but the writer's handle.
            unless_missing(std::fs::remove_file(&self.path))?;
        } else {
            let leaving = numbered(&self.path, self.keep);
            let held = hold(&leaving);
            // Gone already (none rotated that far yet, or removed by hand): nothing to free.
            unless_missing(std::fs::remove_file(&leaving))?;
            if let Some(f) = held {
                (self.free)(f);
            }
            for n in (1..self.keep).rev() {
                unless_missing(std::fs::rename(
                    numbered(&self.path, n),
                    numbered(&self.path, n + 1),
                ))?;
            }
            std::fs::rename(&self.path, numbered(&self.path, 1))?;
        }
        let f = open_events(&self.path).map_err(io::Error::other)?;
        let old = std::mem::replace(&mut self.out, BufWriter::new(f));
        // With `keep` 0 the old writer holds the removed file's last handle (flushed above, so
        // nothing is written here); otherwise it is PATH.1 now, kept, and closing it frees
        // nothing.
        if self.keep == 0
            && let Ok(file) = old.into_inner()
        {
            (self.free)(file);
        }
        self.size = 0;
        self.rotations += 1;
        Ok(())
    }
}

/// `r`, except that a file already missing is no error: a rotation's files may not exist yet,
/// or may have been removed by hand.
fn unless_missing(r: io::Result<()>) -> io::Result<()> {
    match r {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        r => r,
    }
}

/// `path` held open without reading it or following a link (`O_PATH | O_NOFOLLOW`: a FIFO
/// planted there does not block the open, a symbolic link is held as the link), so that it
/// stays allocated after its unlink until the handle closes; `None` if it cannot be opened
/// (missing, say), and it is then freed by the unlink as before.
fn hold(path: &Path) -> Option<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_NOFOLLOW)
        .open(path)
        .ok()
}

/// Closes the events files rotations drop, already unlinked, on one thread of its own (started
/// at the first): that last close frees a file's blocks (see [`EventsInner::rotate`]). Generic
/// over what it drops only so that a test can see which thread dropped it.
struct Freer<T = File> {
    tx: Option<SyncSender<T>>,
}

impl<T> Default for Freer<T> {
    fn default() -> Self {
        Self { tx: None }
    }
}

/// Dropped files waiting for the freeing thread before the sink frees one itself. Each holds up
/// to the bound's worth of disk until it is freed, so with one waiting and one being freed a
/// slow disk holds at most two files more than the N+1 of the bound, for a moment; and a bound
/// so small that the sink rotates faster than the disk frees (`--events-max-size 4K` at
/// 200,000 responses/s) waits for the disk, as every rotation did.
const FREE_QUEUE: usize = 1;

/// The freeing thread's name.
const FREER_THREAD: &str = "events free";

impl<T: Send + 'static> Freer<T> {
    fn free(&mut self, f: T) {
        if self.tx.is_none() {
            let (tx, rx) = mpsc::sync_channel::<T>(FREE_QUEUE);
            let spawned = std::thread::Builder::new()
                .name(FREER_THREAD.into())
                .spawn(move || rx.into_iter().for_each(drop));
            match spawned {
                Ok(_) => self.tx = Some(tx),
                Err(e) => log::debug!("events file rotation: no thread to free old files ({e})"),
            }
        }
        let Some(tx) = &self.tx else {
            // No thread: freed here, only slower.
            return drop(f);
        };
        match tx.try_send(f) {
            Ok(()) => {}
            Err(TrySendError::Full(f)) => drop(f),
            Err(TrySendError::Disconnected(f)) => {
                self.tx = None;
                drop(f);
            }
        }
    }
}

impl Write for EventsFile {
    /// Takes `buf` whole: the events sink hands over one line at a time, so a rotation never
    /// splits a line.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut inner = lock(&self.inner);
        let len = buf.len() as u64;
        if inner.max > 0 && inner.size > 0 && inner.size.saturating_add(len) > inner.max {
            inner.rotate()?;
        }
        inner.out.write_all(buf)?;
        inner.size += len;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        lock(&self.inner).out.flush()
    }
}

/// A size such as `100MiB`, `512k`, `1G` or `4096` (bytes); K, M and G are powers of 1024.
/// Hand-written: four suffixes do not need a crate.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(digits);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("'{s}' is not a size (e.g. 100MiB, 512K, 4096)"))?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        _ => return Err(format!("'{s}': unknown unit (use K, M or G)")),
    };
    n.checked_mul(1 << shift)
        .ok_or_else(|| format!("'{s}' is too large"))
}

/// One event as one line in `format`.
pub fn write_event(w: &mut impl Write, format: EventFormat, e: &Event) -> io::Result<()> {
    write_event_with(&mut Vec::with_capacity(LINE_CAPACITY), w, format, e)
}

/// Room for a typical line: a `dns` event of a few addresses is 600-800 bytes of JSON.
const LINE_CAPACITY: usize = 1024;

/// [`write_event`] through `line`, a buffer the caller keeps (emptied first): the events sink
/// writes one line per DNS response and reuses its buffer.
fn write_event_with(
    line: &mut Vec<u8>,
    w: &mut impl Write,
    format: EventFormat,
    e: &Event,
) -> io::Result<()> {
    // One line, one write: a bounded file rotates between lines, never inside one.
    line.clear();
    match (format, e) {
        // The events file's hot path: byte for byte serde_json's line, written by hand.
        (EventFormat::Json, Event::Dns(o)) => {
            dns_json::write_dns(line, o);
            line.push(b'\n');
        }
        (EventFormat::Json, _) => {
            serde_json::to_writer(&mut *line, e)?;
            line.push(b'\n');
        }
        (EventFormat::Human, _) => writeln!(line, "{e}")?,
    }
    let written = w.write_all(line);
    // A response of thousands of records makes a line of hundreds of KiB: not kept for the
    // lines after it.
    if line.capacity() > LINE_KEPT_MAX {
        line.clear();
        line.shrink_to(LINE_CAPACITY);
    }
    written
}

/// The most a kept line buffer may hold on to between events.
const LINE_KEPT_MAX: usize = 64 * 1024;

/// The readable log line of every decision (verdicts, blocks, guards, alerts, feed matches).
pub struct LogSink;

impl LogSink {
    pub const KINDS: [EventKind; 5] = EventKind::DECISIONS;
}

impl Sink for LogSink {
    fn write(&mut self, e: &Event) -> io::Result<()> {
        log::log!(e.log_level(), "{e}");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;
    use crate::enforce::policy::{Action, ActionKind, Outcome};

    #[test]
    fn json_and_human_lines() {
        let e = Event::from(Action {
            kind: ActionKind::Block,
            ts: SystemTime::UNIX_EPOCH,
            domain: "flux.example".into(),
            action: Outcome::Blocked,
            target_kind: None,
            target: None,
            reason: "fast flux".into(),
        });
        let mut out = Vec::new();
        write_event(&mut out, EventFormat::Json, &e).unwrap();
        write_event(&mut out, EventFormat::Human, &e).unwrap();
        let text = String::from_utf8(out).unwrap();
        let mut lines = text.lines();
        assert_eq!(
            lines.next().unwrap(),
            r#"{"type":"block","ts":"1970-01-01T00:00:00.000000Z","domain":"flux.example","action":"blocked","reason":"fast flux"}"#
        );
        assert!(lines.next().unwrap().contains("block  blocked"));
        assert_eq!(EventFormat::Human.kinds(), &[EventKind::Dns]);
    }

    fn scratch(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("flux-events-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn events_file_refuses_a_symlink_and_is_created_0600() {
        let d = scratch("open");
        let target = d.join("root-only");
        std::fs::write(&target, "secret\n").unwrap();
        let link = d.join("events.json");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let e = EventsFile::open(&link, 0, 1)
            .err()
            .expect("symlink accepted");
        assert!(matches!(e, EventsFileError::Symlink(_)), "{e}");
        assert!(e.to_string().contains("symbolic link"), "{e}");
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "secret\n");

        let p = d.join("new.json");
        EventsFile::open(&p, 0, 1).unwrap();
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // An existing file left wider by an older version is narrowed.
        let old = d.join("old.json");
        std::fs::write(&old, "").unwrap();
        std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o644)).unwrap();
        EventsFile::open(&old, 0, 1).unwrap();
        let mode = std::fs::metadata(&old).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let _ = std::fs::remove_dir_all(d);
    }

    #[test]
    fn events_file_is_bounded_by_one_rotation() {
        let d = scratch("rotate");
        let p = d.join("events.json");
        let mut f = EventsFile::open(&p, 1000, 1).unwrap();
        let line = format!("{}\n", "x".repeat(99));
        for _ in 0..35 {
            f.write_all(line.as_bytes()).unwrap();
        }
        f.flush().unwrap();
        let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        let rotated = d.join("events.json.1");
        assert!(size(&p) <= 1000, "{}", size(&p));
        assert_eq!(size(&rotated), 1000);
        assert_eq!(f.rotations(), 3);
        // 35 lines: 3 files of 10 written, the last full one kept as .1, 5 in the current one.
        assert_eq!(size(&p), 500);
        // Whole lines in both.
        for q in [&p, &rotated] {
            let text = std::fs::read_to_string(q).unwrap();
            assert!(text.lines().all(|l| l.len() == 99), "{q:?}");
        }
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "the new file after a rotation");
        let _ = std::fs::remove_dir_all(d);
    }

    #[test]
    fn events_rotation_keeps_n_files_of_whole_lines() {
        let d = scratch("keep");
        let p = d.join("events.json");
        let mut f = EventsFile::open(&p, 1000, 3).unwrap();
        // Lines numbered, so the order across files shows nothing was lost or reordered.
        for i in 0..55 {
            f.write_all(format!("{i:098}\n").as_bytes()).unwrap();
        }
        f.flush().unwrap();
        assert_eq!(f.rotations(), 5);
        let lines = |n: u32| -> Vec<u64> {
            let q = if n == 0 { p.clone() } else { numbered(&p, n) };
            std::fs::read_to_string(q)
                .unwrap()
                .lines()
                .map(|l| {
                    assert_eq!(l.len(), 98, "a whole line");
                    l.parse().unwrap()
                })
                .collect()
        };
        // Oldest first: .3, .2, .1, then the current file; 20 lines older than .3 are gone.
        let all: Vec<u64> = [3, 2, 1, 0].into_iter().flat_map(lines).collect();
        assert_eq!(all, (20..55).collect::<Vec<_>>());
        assert!(!numbered(&p, 4).exists());

        // keep 0: a full file is started again, nothing kept.
        let q = d.join("nokeep.json");
        let mut g = EventsFile::open(&q, 1000, 0).unwrap();
        for i in 0..15 {
            g.write_all(format!("{i:098}\n").as_bytes()).unwrap();
        }
        g.flush().unwrap();
        assert!(!numbered(&q, 1).exists());
        assert_eq!(std::fs::read_to_string(&q).unwrap().lines().count(), 5);
        let _ = std::fs::remove_dir_all(d);
    }

    thread_local! {
        /// The files a test's rotations handed over to be freed, kept open.
        static HANDED: std::cell::RefCell<Vec<File>> = const { std::cell::RefCell::new(Vec::new()) };
    }

    /// The process's open file descriptors, as their `/proc/self/fd` entries.
    fn open_fds() -> impl Iterator<Item = std::fs::DirEntry> {
        std::fs::read_dir("/proc/self/fd")
            .unwrap()
            .filter_map(|e| e.ok())
    }

    /// Keeps a handed file, after checking that it is the last handle to it in the process:
    /// if another were left (the sink's writer, say), that one's close would free the blocks,
    /// wherever it happens.
    fn keep_handed(f: File) {
        use std::os::{fd::AsRawFd as _, unix::fs::MetadataExt as _};
        let m = f.metadata().unwrap();
        if m.is_file() {
            let others: Vec<PathBuf> = open_fds()
                .filter(|e| e.file_name().to_str() != Some(&f.as_raw_fd().to_string()))
                .filter(|e| {
                    std::fs::metadata(e.path())
                        .is_ok_and(|o| (o.dev(), o.ino()) == (m.dev(), m.ino()))
                })
                .map(|e| e.path())
                .collect();
            assert!(
                others.is_empty(),
                "other handles to a handed file: {others:?}"
            );
        }
        HANDED.with(|h| h.borrow_mut().push(f));
    }

    /// (size, links) of each file handed over so far on this thread.
    fn handed() -> Vec<(u64, u64)> {
        use std::os::unix::fs::MetadataExt as _;
        HANDED.with(|h| {
            h.borrow()
                .iter()
                .map(|f| {
                    let m = f.metadata().unwrap();
                    (m.len(), m.nlink())
                })
                .collect()
        })
    }

    /// A rotation unlinks the file that leaves but does not free it: it hands the file, still
    /// open, to `free` (another thread, in the agent), so the sink never waits for the blocks
    /// to be released (`EventsInner::rotate`). Rotating over the old file again, or removing
    /// it, would free it here and hand nothing over.
    #[test]
    fn a_rotation_hands_the_leaving_file_over_to_be_freed() {
        let d = scratch("free");
        let line = format!("{}\n", "x".repeat(99));
        for keep in [0, 1, 2] {
            HANDED.with(|h| h.borrow_mut().clear());
            let p = d.join(format!("events-{keep}.json"));
            let mut f = EventsFile::open(&p, 1000, keep).unwrap();
            lock(&f.inner).free = Box::new(keep_handed);
            // Three rotations; from the (keep+1)th on, each drops a full file of ten lines.
            for _ in 0..35 {
                f.write_all(line.as_bytes()).unwrap();
            }
            f.flush().unwrap();
            assert_eq!(f.rotations(), 3);
            let dropped = 3 - keep as usize;
            assert_eq!(handed(), vec![(1000, 0); dropped], "keep {keep}");
            // What stays is as before: the current file and `keep` full ones.
            assert_eq!(std::fs::metadata(&p).unwrap().len(), 500);
            for n in 1..=keep {
                assert_eq!(std::fs::metadata(numbered(&p, n)).unwrap().len(), 1000);
            }
            assert!(!numbered(&p, keep + 1).exists());
        }
        // A link planted where the dropped file goes is removed (the link, never its target),
        // as a rename over it did.
        let target = d.join("target");
        std::fs::write(&target, "keep me\n").unwrap();
        let p = d.join("events-link.json");
        std::os::unix::fs::symlink(&target, numbered(&p, 1)).unwrap();
        let mut f = EventsFile::open(&p, 1000, 1).unwrap();
        lock(&f.inner).free = Box::new(keep_handed);
        for _ in 0..15 {
            f.write_all(line.as_bytes()).unwrap();
        }
        f.flush().unwrap();
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep me\n");
        assert_eq!(std::fs::metadata(numbered(&p, 1)).unwrap().len(), 1000);
        HANDED.with(|h| h.borrow_mut().clear());
        let _ = std::fs::remove_dir_all(d);
    }

    /// The freer closes every file it is given, on its thread or (queue full) at once: none of
    /// them stays open in the process.
    #[test]
    fn the_freer_closes_every_dropped_file() {
        let d = scratch("freer");
        let mut freer = Freer::default();
        for i in 0..10 {
            let p = d.join(format!("old-{i}"));
            std::fs::write(&p, vec![b'x'; 4096]).unwrap();
            let held = hold(&p).unwrap();
            std::fs::remove_file(&p).unwrap();
            freer.free(held);
        }
        assert!(freer.tx.is_some(), "the freeing thread started");
        // The files still open in this process: /proc/self/fd links to "PATH (deleted)".
        let open_here = || {
            open_fds()
                .filter_map(|e| std::fs::read_link(e.path()).ok())
                .filter(|l| l.starts_with(&d))
                .count()
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while open_here() > 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert_eq!(open_here(), 0);
        let _ = std::fs::remove_dir_all(d);
    }

    /// The sink does not wait for a dropped file's close: it is closed on the freeing thread
    /// (unless one already waits there, and then by the sink, still closed).
    #[test]
    fn dropped_files_are_closed_on_the_freeing_thread() {
        /// Says which thread dropped it.
        struct Tell(mpsc::Sender<Option<String>>);
        impl Drop for Tell {
            fn drop(&mut self) {
                let _ = self
                    .0
                    .send(std::thread::current().name().map(str::to_owned));
            }
        }
        let (tx, rx) = mpsc::channel();
        let mut freer = Freer::default();
        for _ in 0..5 {
            freer.free(Tell(tx.clone()));
            // One at a time: none waits when the next comes, so each goes to the thread.
            let by = rx.recv_timeout(std::time::Duration::from_secs(10)).unwrap();
            assert_eq!(by.as_deref(), Some(FREER_THREAD));
        }
        // Many at once: every one is dropped, by one thread or the other.
        for _ in 0..50 {
            freer.free(Tell(tx.clone()));
        }
        drop(freer);
        drop(tx);
        assert_eq!(rx.iter().count(), 50);
    }

    #[test]
    fn events_file_is_reopened_after_a_move() {
        let d = scratch("reopen");
        let p = d.join("events.json");
        let mut f = EventsFile::open(&p, 0, 1).unwrap();
        let ctl = f.control();
        f.write_all(b"first\n").unwrap();
        let moved = d.join("events.json.old");
        std::fs::rename(&p, &moved).unwrap();
        // Before the reopen, lines still go to the moved file (logrotate's window).
        f.write_all(b"second\n").unwrap();
        ctl.reopen(0, 1).unwrap();
        f.write_all(b"third\n").unwrap();
        f.flush().unwrap();
        assert_eq!(std::fs::read_to_string(&moved).unwrap(), "first\nsecond\n");
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "third\n");
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // New bounds apply at once: the next line rotates.
        ctl.reopen(10, 1).unwrap();
        f.write_all(b"fourth\n").unwrap();
        f.flush().unwrap();
        assert_eq!(std::fs::read_to_string(numbered(&p, 1)).unwrap(), "third\n");
        assert_eq!(ctl.path(), p);
        let _ = std::fs::remove_dir_all(d);
    }

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("100MiB"), Ok(100 << 20));
        assert_eq!(parse_size("512k"), Ok(512 << 10));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("0"), Ok(0));
        assert!(parse_size("10X").is_err());
        assert!(parse_size("MiB").is_err());
        assert!(parse_size("99999999999999G").is_err());
    }
}
