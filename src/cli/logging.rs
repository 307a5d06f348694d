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

/// A log file that can be reopened under its name.
#[derive(Clone)]
pub(crate) struct LogFile {
    inner: Arc<Mutex<(PathBuf, File)>>,
}

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
            inner: Arc::new(Mutex::new((path.to_owned(), file))),
        })
    }

    /// Opens the file's name again: after a rotation, a new file.
    pub fn reopen(&self) -> io::Result<()> {
        let mut g = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let file = open_append(&g.0)?;
        g.1 = file;
        Ok(())
    }
}

impl Write for LogFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .1
            .write(buf)
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        // One record, one write: lines of two threads never interleave.
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .1
            .write_all(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
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
