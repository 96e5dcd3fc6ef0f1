//! The processes fixtures start: finding a binary, a free port, and a child process that dies
//! with its fixture and can be paused, resumed or killed on command.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

/// The first executable called `name` on the `PATH` or in one of `extra_dirs`.
pub(crate) fn find_binary(name: &str, extra_dirs: &[PathBuf]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(extra_dirs.iter().cloned())
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// The lowest port [`free_port`] hands out.
const FIRST_PORT: u32 = 10_000;
/// How many ports it chooses from: all of them, and the ports 10,000 above them, lie below
/// Linux's ephemeral range (32768 up).
const PORT_SPAN: u32 = 12_000;

/// A TCP port that was free a moment ago, as was the port 10,000 above it (a Redis Cluster
/// node's bus port). Ports are chosen below the ephemeral range, so an outgoing connection of a
/// test cannot take one between this check and the server's bind, and from a starting point of
/// this process's own, so two test processes rarely try the same ones.
pub(crate) fn free_port() -> std::io::Result<u16> {
    static START: OnceLock<u32> = OnceLock::new();
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let start = *START.get_or_init(|| {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.subsec_nanos());
        std::process::id().wrapping_mul(7_919).wrapping_add(nanos)
    });
    let bindable = |port: u32| {
        u16::try_from(port)
            .is_ok_and(|port| std::net::TcpListener::bind(("127.0.0.1", port)).is_ok())
    };
    for _ in 0..PORT_SPAN {
        let port =
            FIRST_PORT + start.wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed)) % PORT_SPAN;
        if bindable(port) && bindable(port + 10_000) {
            return u16::try_from(port).map_err(std::io::Error::other);
        }
    }
    Err(std::io::Error::other(
        "no free port pair between 10000 and 32000",
    ))
}

/// A server process owned by a fixture; killed (and reaped) on drop, also during a panic.
#[derive(Debug)]
pub(crate) struct OwnedProcess {
    child: Mutex<Option<Child>>,
    command: Vec<String>,
}

impl OwnedProcess {
    /// Starts `program` with `args`, its output discarded.
    pub(crate) fn spawn(program: &str, args: &[String]) -> std::io::Result<Self> {
        let mut command = vec![program.to_owned()];
        command.extend(args.iter().cloned());
        let child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        Ok(Self {
            child: Mutex::new(Some(child)),
            command,
        })
    }

    /// Starts `program` under a shell watchdog that kills it within half a second of this test
    /// process exiting: for servers shared by a whole test binary, kept in statics that are
    /// never dropped.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))] // only the Redis fixtures use it
    pub(crate) fn spawn_supervised(program: &str, args: &[String]) -> std::io::Result<Self> {
        const WATCHDOG: &str = r#"parent=$1; shift
"$@" & child=$!
trap 'kill $child 2>/dev/null; exit 0' TERM INT
while kill -0 "$parent" 2>/dev/null && kill -0 "$child" 2>/dev/null; do sleep 0.5; done
kill $child 2>/dev/null"#;
        let mut wrapped = vec!["-c".to_owned(), WATCHDOG.to_owned(), "sh".to_owned()];
        wrapped.push(std::process::id().to_string());
        wrapped.push(program.to_owned());
        wrapped.extend(args.iter().cloned());
        Self::spawn("sh", &wrapped)
    }

    fn child(&self) -> MutexGuard<'_, Option<Child>> {
        self.child.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The running process's id.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))] // only the Redis fixtures use it
    pub(crate) fn pid(&self) -> Option<u32> {
        self.child().as_ref().map(Child::id)
    }

    /// Whether the process is still running (it has not exited, been killed or failed to start).
    #[cfg_attr(not(feature = "redis"), allow(dead_code))] // only the Redis fixtures use it
    pub(crate) fn is_running(&self) -> bool {
        self.child()
            .as_mut()
            .is_some_and(|child| matches!(child.try_wait(), Ok(None)))
    }

    /// Sends a signal by name (`STOP`, `CONT`, `KILL`, `TERM`) with the `kill` command.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))] // only the Redis fixtures use it
    pub(crate) fn signal(&self, signal: &str) -> std::io::Result<()> {
        match self.pid() {
            Some(pid) => signal_pid(pid, signal),
            None => Ok(()),
        }
    }

    /// Kills the process and waits for it to be gone.
    pub(crate) fn kill(&self) {
        if let Some(mut child) = self.child().take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the same command again (after [`OwnedProcess::kill`]).
    pub(crate) fn respawn(&self) -> std::io::Result<()> {
        self.kill();
        let Some((program, args)) = self.command.split_first() else {
            return Err(std::io::Error::other("no command to respawn"));
        };
        let fresh = Self::spawn(program, args)?;
        // Take the child so that `fresh`'s drop has nothing to kill.
        *self.child() = fresh.child().take();
        Ok(())
    }
}

impl Drop for OwnedProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Sends a signal by name (`STOP`, `CONT`, ...) to the process `pid` with the `kill` command.
#[cfg_attr(not(feature = "redis"), allow(dead_code))] // only the Redis fixtures use it
pub(crate) fn signal_pid(pid: u32, signal: &str) -> std::io::Result<()> {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()?;
    if status.success() {
        Ok(())
    } else {
        Err(std::io::Error::other(format!(
            "kill -{signal} {pid} failed"
        )))
    }
}
