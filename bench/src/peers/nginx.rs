//! nginx terminating TLS in front of a plain server (the `tls-nginx`
//! scenario): the Debian package `nginx` with its stream module
//! (`libnginx-mod-stream`, a dynamic module on Debian), run from a
//! configuration and prefix of its own in a temporary directory, in the
//! foreground (`daemon off`) as one process (`master_process off`), on a
//! free loopback port, killed and cleaned up on drop.
//!
//! ```text
//! stream {
//!     server {
//!         listen 127.0.0.1:PORT ssl;
//!         ssl_certificate cert.pem; ssl_certificate_key key.pem;
//!         proxy_pass 127.0.0.1:BACKEND;
//!     }
//! }
//! ```

use std::io::Read as _;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};

use crate::sys;

const INSTALL: &str = "apt-get install -y nginx libnginx-mod-stream";

/// An nginx binary able to terminate TLS in its stream module.
#[derive(Debug, Clone)]
pub struct NginxBin {
    /// Where it is.
    pub path: PathBuf,
    /// `nginx/1.22.1`.
    pub version: String,
    /// The stream module to load, when it is a dynamic one.
    pub stream_module: Option<PathBuf>,
}

impl NginxBin {
    /// Finds `nginx` on `PATH` or in the usual sbin directories and checks
    /// that it has the stream module with SSL; fails with what to install
    /// otherwise.
    pub fn find() -> Result<NginxBin> {
        let path_var = std::env::var_os("PATH").unwrap_or_default();
        let dirs = std::env::split_paths(&path_var).chain(
            ["/usr/sbin", "/usr/local/sbin", "/usr/local/nginx/sbin"]
                .iter()
                .map(PathBuf::from),
        );
        let Some(path) = dirs.map(|d| d.join("nginx")).find(|p| p.is_file()) else {
            bail!("nginx not found (PATH, /usr/sbin): {INSTALL}");
        };
        let out = Command::new(&path)
            .arg("-V")
            .output()
            .with_context(|| format!("running {} -V", path.display()))?;
        // nginx -V writes to stderr.
        let text = String::from_utf8_lossy(&out.stderr).into_owned()
            + &String::from_utf8_lossy(&out.stdout);
        Self::from_version_output(path, &text, |p| p.is_file())
    }

    /// Reads what `nginx -V` printed: its version and configure arguments.
    /// `exists` tells whether a module file is there.
    pub fn from_version_output(
        path: PathBuf,
        text: &str,
        exists: impl Fn(&Path) -> bool,
    ) -> Result<NginxBin> {
        let version = text
            .lines()
            .find_map(|l| l.strip_prefix("nginx version: "))
            .unwrap_or("nginx, version unknown")
            .trim()
            .to_string();
        let args: Vec<&str> = text
            .lines()
            .find_map(|l| l.strip_prefix("configure arguments:"))
            .unwrap_or_default()
            .split_whitespace()
            .collect();
        let has = |a: &str| args.contains(&a);
        if !has("--with-stream_ssl_module") {
            bail!(
                "{} ({version}) was built without the stream SSL module (--with-stream_ssl_module): {INSTALL}",
                path.display()
            );
        }
        let stream_module = if has("--with-stream") {
            None
        } else if has("--with-stream=dynamic") {
            let dir = args
                .iter()
                .find_map(|a| a.strip_prefix("--modules-path="))
                .unwrap_or("/usr/lib/nginx/modules");
            let module = Path::new(dir).join("ngx_stream_module.so");
            if !exists(&module) {
                bail!(
                    "{} ({version}) has the stream module as a dynamic module, but {} is missing: {INSTALL}",
                    path.display(),
                    module.display()
                );
            }
            Some(module)
        } else {
            bail!(
                "{} ({version}) was built without the stream module (--with-stream): {INSTALL}",
                path.display()
            );
        };
        Ok(NginxBin {
            path,
            version,
            stream_module,
        })
    }
}

/// nginx's configuration: one TLS stream server on `port` proxying to
/// `backend`, everything it writes under `dir`.
pub fn config(
    bin: &NginxBin,
    dir: &Path,
    cert: &Path,
    key: &Path,
    port: u16,
    backend: u16,
) -> String {
    let load = bin
        .stream_module
        .as_ref()
        .map(|m| format!("load_module {};\n", m.display()))
        .unwrap_or_default();
    let d = dir.display();
    format!(
        "{load}daemon off;
master_process off;
worker_processes 1;
worker_rlimit_nofile 20000;
pid {d}/nginx.pid;
error_log {d}/error.log error;
events {{
    worker_connections 20000;
}}
stream {{
    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_protocols TLSv1.2 TLSv1.3;
        proxy_pass 127.0.0.1:{backend};
    }}
}}
",
        cert = cert.display(),
        key = key.display(),
    )
}

/// A running nginx, killed (and its directory removed) on drop.
pub struct Nginx {
    child: std::process::Child,
    port: u16,
    dir: PathBuf,
}

impl Nginx {
    /// Starts nginx terminating TLS with `cert`/`key` on a free loopback
    /// port and proxying to 127.0.0.1:`backend`, pinned to `cpu` if
    /// given; returns once it accepts connections.
    pub fn start(
        bin: &NginxBin,
        cert: &Path,
        key: &Path,
        backend: u16,
        cpu: Option<usize>,
    ) -> Result<Nginx> {
        static SEQ: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "lubdub-bench-nginx-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(dir.join("logs"))?;
        let mut last = None;
        // The port is free when chosen, but another process may take it
        // before nginx binds it: then try another.
        for _ in 0..3 {
            let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
            let conf = dir.join("nginx.conf");
            std::fs::write(&conf, config(bin, &dir, cert, key, port, backend))?;
            let mut cmd = Command::new(&bin.path);
            cmd.arg("-p")
                .arg(&dir)
                .arg("-c")
                .arg(&conf)
                .arg("-e")
                .arg(dir.join("error.log"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped());
            // SAFETY: between fork and exec only async-signal-safe calls:
            // prctl and sched_setaffinity on a stack-local set.
            unsafe {
                cmd.pre_exec(move || {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                    match cpu {
                        Some(cpu) => sys::pin_current_thread(cpu),
                        None => Ok(()),
                    }
                });
            }
            let child = cmd
                .spawn()
                .with_context(|| format!("starting {}", bin.path.display()))?;
            let mut nginx = Nginx {
                child,
                port,
                dir: dir.clone(),
            };
            match nginx.wait_ready(Duration::from_secs(10)) {
                Ok(()) => return Ok(nginx),
                Err(e) => {
                    // Keep the directory for the next attempt.
                    nginx.dir = PathBuf::new();
                    last = Some(e);
                }
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
        Err(last.expect("three attempts"))
    }

    /// Waits until nginx accepts a connection; fails with its error log
    /// if it exits first.
    fn wait_ready(&mut self, limit: Duration) -> Result<()> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait()? {
                let mut stderr = String::new();
                if let Some(mut e) = self.child.stderr.take() {
                    let _ = e.read_to_string(&mut stderr);
                }
                let log = std::fs::read_to_string(self.dir.join("error.log")).unwrap_or_default();
                bail!(
                    "nginx exited at start ({status}): {}{}",
                    stderr.trim(),
                    log.trim()
                );
            }
            if TcpStream::connect_timeout(&self.addr(), Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!("nginx did not accept connections within {limit:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Where it listens (TLS).
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if !self.dir.as_os_str().is_empty() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEBIAN: &str = "nginx version: nginx/1.22.1
built with OpenSSL 3.0.11 19 Sep 2023
TLS SNI support enabled
configure arguments: --with-cc-opt='-g -O2' --prefix=/usr/share/nginx --modules-path=/usr/lib/nginx/modules --with-stream=dynamic --with-stream_ssl_module --with-stream_ssl_preread_module";

    #[test]
    fn version_output_finds_the_dynamic_stream_module_or_says_what_to_install() {
        let bin =
            NginxBin::from_version_output("/usr/sbin/nginx".into(), DEBIAN, |_| true).unwrap();
        assert_eq!(bin.version, "nginx/1.22.1");
        assert_eq!(
            bin.stream_module.as_deref(),
            Some(Path::new("/usr/lib/nginx/modules/ngx_stream_module.so"))
        );
        let e = NginxBin::from_version_output("/usr/sbin/nginx".into(), DEBIAN, |_| false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("libnginx-mod-stream"), "{e}");

        let static_stream = DEBIAN.replace("--with-stream=dynamic", "--with-stream");
        let bin = NginxBin::from_version_output("nginx".into(), &static_stream, |_| false).unwrap();
        assert_eq!(bin.stream_module, None);

        let no_stream = DEBIAN.replace("--with-stream=dynamic", "");
        assert!(NginxBin::from_version_output("nginx".into(), &no_stream, |_| true).is_err());
        let no_ssl = DEBIAN.replace("--with-stream_ssl_module", "");
        assert!(NginxBin::from_version_output("nginx".into(), &no_ssl, |_| true).is_err());
    }

    #[test]
    fn config_loads_the_module_and_proxies_tls_to_the_backend() {
        let bin =
            NginxBin::from_version_output("/usr/sbin/nginx".into(), DEBIAN, |_| true).unwrap();
        let c = config(
            &bin,
            Path::new("/tmp/x"),
            Path::new("/tmp/c.pem"),
            Path::new("/tmp/k.pem"),
            4433,
            9000,
        );
        assert!(c.starts_with("load_module /usr/lib/nginx/modules/ngx_stream_module.so;\n"));
        assert!(c.contains("daemon off;"));
        assert!(c.contains("listen 127.0.0.1:4433 ssl;"));
        assert!(c.contains("ssl_certificate /tmp/c.pem;"));
        assert!(c.contains("ssl_certificate_key /tmp/k.pem;"));
        assert!(c.contains("proxy_pass 127.0.0.1:9000;"));
        assert!(c.contains("error_log /tmp/x/error.log"));
    }
}
