//! Where a running server leaves its pid file, control socket and (as a
//! daemon) its log: a directory only its user can enter.

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The run directory of one server instance and the files in it.
#[derive(Debug, Clone)]
pub(crate) struct RunDir {
    dir: PathBuf,
    instance: String,
}

/// The run directory when `--run-dir` is not given: `$XDG_RUNTIME_DIR/lubdub`
/// if that variable names a directory, else `/tmp/lubdub-UID`.
pub fn default_run_dir() -> PathBuf {
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(d) if !d.is_empty() && Path::new(&d).is_dir() => Path::new(&d).join("lubdub"),
        _ => std::env::temp_dir().join(format!("lubdub-{}", rustix::process::getuid().as_raw())),
    }
}

impl RunDir {
    pub fn new(dir: PathBuf, instance: &str) -> Self {
        RunDir {
            dir,
            instance: instance.to_owned(),
        }
    }

    pub fn instance(&self) -> &str {
        &self.instance
    }

    pub fn pid_file(&self) -> PathBuf {
        self.dir.join(format!("{}.pid", self.instance))
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.join(format!("{}.sock", self.instance))
    }

    /// Where a new process binds its control socket before it renames it
    /// over [`socket`](Self::socket).
    pub fn next_socket(&self) -> PathBuf {
        self.dir
            .join(format!("{}.{}.sock", self.instance, std::process::id()))
    }

    pub fn log_file(&self) -> PathBuf {
        self.dir.join(format!("{}.log", self.instance))
    }

    /// Creates the directory (mode 0700) if it is missing; refuses one that
    /// another user owns or others may write to (someone could plant a
    /// socket or a pid file there).
    pub fn prepare(&self) -> io::Result<()> {
        match fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
        {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(with_path(e, &self.dir)),
        }
        let meta = fs::symlink_metadata(&self.dir).map_err(|e| with_path(e, &self.dir))?;
        let me = rustix::process::getuid().as_raw();
        if !meta.is_dir() || meta.uid() != me || meta.permissions().mode() & 0o022 != 0 {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!(
                    "run directory {}: must be a directory of user {me} that no one else may \
                     write to (give another with --run-dir)",
                    self.dir.display()
                ),
            ));
        }
        Ok(())
    }

    /// The pid in the pid file, if there is one and it parses.
    pub fn read_pid(&self) -> Option<u32> {
        fs::read_to_string(self.pid_file())
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Writes this process's pid: to a temporary file renamed over the pid
    /// file, so a reader never sees half of it.
    pub fn write_pid(&self) -> io::Result<()> {
        let tmp = self
            .dir
            .join(format!("{}.{}.pid", self.instance, std::process::id()));
        fs::write(&tmp, format!("{}\n", std::process::id())).map_err(|e| with_path(e, &tmp))?;
        fs::rename(&tmp, self.pid_file()).map_err(|e| with_path(e, &self.pid_file()))
    }

    /// Removes the pid file and control socket if they are this process's
    /// (after a reload they are the new process's: left alone).
    pub fn remove_if_mine(&self) {
        if self.read_pid() == Some(std::process::id()) {
            let _ = fs::remove_file(self.socket());
            let _ = fs::remove_file(self.pid_file());
        }
    }

    /// Removes a pid file and socket that no live process answers for.
    pub fn remove_stale(&self) {
        let _ = fs::remove_file(self.socket());
        let _ = fs::remove_file(self.pid_file());
    }
}

/// Whether a process with this pid exists (and may be signalled by us).
pub fn process_alive(pid: u32) -> bool {
    let Some(pid) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    else {
        return false;
    };
    match rustix::process::test_kill_process(pid) {
        Ok(()) => true,
        Err(e) => e == rustix::io::Errno::PERM,
    }
}

fn with_path(e: io::Error, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("lubdub-rundir-{}-{name}", std::process::id()))
    }

    #[test]
    fn a_directory_others_may_write_to_is_refused() {
        let dir = scratch("open");
        let run = RunDir::new(dir.clone(), "app");
        run.prepare().unwrap();
        assert_eq!(
            fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
            0o700
        );
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o777)).unwrap();
        let err = run.prepare().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::PermissionDenied);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_pid_file_is_written_whole_and_removed_only_by_its_process() {
        let dir = scratch("pid");
        let run = RunDir::new(dir.clone(), "app");
        run.prepare().unwrap();
        assert_eq!(run.read_pid(), None);
        run.write_pid().unwrap();
        assert_eq!(run.read_pid(), Some(std::process::id()));
        assert!(process_alive(std::process::id()));
        fs::write(run.pid_file(), "1\n").unwrap();
        run.remove_if_mine();
        assert_eq!(run.read_pid(), Some(1), "another process's file stays");
        run.remove_stale();
        assert_eq!(run.read_pid(), None);
        fs::remove_dir_all(&dir).unwrap();
    }
}
