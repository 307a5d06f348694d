//! The logs of a command-line server, through `fern`: to stderr in the
//! foreground, to a file for a daemon, reopened on SIGUSR1 or `reload-logs`
//! (logrotate moves the file, the server writes a new one). Every message
//! is escaped: a string a peer chose cannot start a log line of its own.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

/// A log file that can be reopened under its name. What is written goes
/// out a whole line per `write(2)` (O_APPEND): during a reload two
/// processes log to the same file, and a record `fern` writes in pieces
/// would otherwise interleave with the other process's.
#[derive(Clone)]
pub(crate) struct LogFile {
    inner: Arc<Mutex<Sink>>,
}

struct Sink {
    path: PathBuf,
    file: File,
    /// The end of a line not written yet.
    pending: Vec<u8>,
}

/// A line longer than this goes out in pieces.
const MAX_PENDING: usize = 64 * 1024;

/// Opens `path` to append, creating it (mode 0640).
pub(crate) fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(path)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))
}

impl LogFile {
    pub fn open(path: &Path) -> io::Result<Self> {
        let file = open_append(path)?;
        Ok(LogFile {
            inner: Arc::new(Mutex::new(Sink {
                path: path.to_owned(),
                file,
                pending: Vec::new(),
            })),
        })
    }

    fn sink(&self) -> std::sync::MutexGuard<'_, Sink> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The file's name.
    pub fn path(&self) -> PathBuf {
        self.sink().path.clone()
    }

    /// Opens the file's name again: after a rotation, a new file.
    pub fn reopen(&self) -> io::Result<()> {
        let mut g = self.sink();
        let file = open_append(&g.path)?;
        g.file = file;
        Ok(())
    }
}

impl Write for LogFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut g = self.sink();
        let Sink { file, pending, .. } = &mut *g;
        pending.extend_from_slice(buf);
        let upto = match pending.iter().rposition(|&b| b == b'\n') {
            Some(end) => end + 1,
            None if pending.len() >= MAX_PENDING => pending.len(),
            None => return Ok(buf.len()),
        };
        let written = file.write_all(&pending[..upto]);
        pending.drain(..upto);
        written.map(|()| buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        let mut g = self.sink();
        let Sink { file, pending, .. } = &mut *g;
        let written = file.write_all(pending);
        pending.clear();
        written
    }
}

/// A message with every control character escaped (`\n` as `\n`, ESC as
/// `\u{1b}`).
struct Escaped<'a>(&'a fmt::Arguments<'a>);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = self.0.to_string();
        for ch in text.chars() {
            if ch.is_control() || matches!(ch, '\u{2028}' | '\u{2029}') {
                write!(f, "{}", ch.escape_default())?;
            } else {
                fmt::Write::write_char(f, ch)?;
            }
        }
        Ok(())
    }
}

/// Installs the process's logger: `level` and above, one line per record
/// with a UTC timestamp, to `file` if given, else stderr. An application
/// that installed its own logger keeps it.
pub(crate) fn init(level: log::LevelFilter, file: Option<LogFile>) {
    let dispatch = fern::Dispatch::new()
        .format(|out, msg, rec| {
            out.finish(format_args!(
                "{} {:<5} {}: {}",
                humantime::format_rfc3339_millis(SystemTime::now()),
                rec.level(),
                rec.target(),
                Escaped(msg)
            ))
        })
        .level(level);
    let dispatch = match file {
        Some(f) => dispatch.chain(Box::new(f) as Box<dyn Write + Send>),
        None => dispatch.chain(io::stderr()),
    };
    let _ = dispatch.apply();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_cannot_forge_a_line() {
        let shown = format!("{}", Escaped(&format_args!("a\nfake line\r\u{1b}[31m")));
        assert_eq!(shown, "a\\nfake line\\r\\u{1b}[31m");
    }

    #[test]
    fn lines_written_in_pieces_by_two_writers_do_not_interleave() {
        let dir = std::env::temp_dir().join(format!("lubdub-log2-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("app.log");
        // Two processes' loggers, as during a reload.
        let (mut old, mut new) = (LogFile::open(&path).unwrap(), LogFile::open(&path).unwrap());
        old.write_all(b"old ").unwrap();
        new.write_all(b"new ").unwrap();
        old.write_all(b"stops\nold ").unwrap();
        new.write_all(b"starts\n").unwrap();
        old.write_all(b"exits").unwrap();
        old.flush().unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "old stops\nnew starts\nold exits"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_reopened_file_is_a_new_file_under_the_name() {
        let dir = std::env::temp_dir().join(format!("lubdub-log-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("app.log");
        let mut log = LogFile::open(&path).unwrap();
        log.write_all(b"one\n").unwrap();
        std::fs::rename(&path, dir.join("app.log.1")).unwrap();
        log.write_all(b"two\n").unwrap();
        log.reopen().unwrap();
        log.write_all(b"three\n").unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.join("app.log.1")).unwrap(),
            "one\ntwo\n"
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "three\n");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
