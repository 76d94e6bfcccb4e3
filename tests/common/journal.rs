//! A real systemd-journald for one test: started on a private /run (the test's mount
//! namespace, see `browser::isolated`), and daemons whose stderr is a journal stream, as
//! systemd starts a service.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;

use super::{Proc, artifacts_dir, daemon_args};

/// journald, started for this test on a private /run (the test's mount namespace).
pub struct Journald(std::process::Child);

impl Journald {
    pub fn start() -> Journald {
        let run = |args: &[&str]| {
            let ok = std::process::Command::new(args[0])
                .args(&args[1..])
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "{args:?}");
        };
        run(&["mount", "-t", "tmpfs", "tmpfs", "/run"]);
        run(&["mkdir", "-p", "/run/systemd/journal", "/run/log/journal"]);
        let child = std::process::Command::new("/lib/systemd/systemd-journald")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("systemd-journald (Debian package systemd)");
        let socket = Path::new("/run/systemd/journal/stdout");
        for _ in 0..100 {
            if socket.exists() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(socket.exists(), "journald did not start");
        Journald(child)
    }

    /// A stream into the journal, as systemd gives a service's stderr, and the
    /// `JOURNAL_STREAM` value that names it.
    fn stream(&self, identifier: &str) -> (std::os::unix::net::UnixStream, String) {
        use std::io::Write;
        let mut stream =
            std::os::unix::net::UnixStream::connect("/run/systemd/journal/stdout").expect("stdout");
        // identifier, unit, priority, level prefix, to syslog, to kmsg, to console
        write!(stream, "{identifier}\n\n6\n1\n0\n0\n0\n").expect("header");
        let fd = std::os::fd::AsRawFd::as_raw_fd(&stream);
        // SAFETY: fstat on a descriptor we own, into a zeroed, correctly sized buffer.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        assert_eq!(unsafe { libc::fstat(fd, &mut st) }, 0, "fstat");
        (stream, format!("{}:{}", st.st_dev, st.st_ino))
    }

    /// Every entry in the journal, as `journalctl -o json` shows it.
    pub fn entries(&self) -> Vec<Value> {
        let out = std::process::Command::new("journalctl")
            .args(["-D", "/run/log/journal", "-o", "json", "--no-pager"])
            .output()
            .expect("journalctl");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}

impl Drop for Journald {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Journald {
    /// `webrtcd run` (see [`daemon_args`]) with stderr a journal stream and `JOURNAL_STREAM`
    /// naming it, as under systemd; `RUST_LOG` is `rust_log`.
    pub fn daemon(&self, id: &str, profile: &Path, extra: &[&str], rust_log: &str) -> Proc {
        let (stream, name) = self.stream("webrtcd");
        let args = daemon_args(id, profile, extra);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let stderr = Stdio::from(std::os::fd::OwnedFd::from(stream));
        let log = artifacts_dir().join(format!("{id}.log"));
        Proc::spawn_with(
            id,
            &args,
            &[("JOURNAL_STREAM", &name), ("RUST_LOG", rust_log)],
            stderr,
            log,
        )
    }

    /// The entries `webrtcd` wrote.
    pub fn ours(&self) -> Vec<Value> {
        self.entries()
            .into_iter()
            .filter(|e| e["SYSLOG_IDENTIFIER"] == "webrtcd")
            .collect()
    }
}
