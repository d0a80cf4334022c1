//! systemd service notification (`Type=notify`, `WatchdogSec=`): `READY=1` once the model is
//! loaded and the source open, `WATCHDOG=1` only while frames flow, `STOPPING=1` on the way out.
//!
//! The protocol is one datagram per message to the socket named by `$NOTIFY_SOCKET` (a path,
//! or `@name` for the abstract namespace); `$WATCHDOG_USEC` gives the watchdog period. Outside
//! systemd neither is set and every call does nothing. Written here (a dozen lines) rather than
//! pulled in as a crate, to keep the dependency tree small for cross builds.

use std::os::unix::net::UnixDatagram;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::stats::Health;
use crate::stop::StopFlag;

/// A connection to systemd's notification socket, if there is one.
pub struct Notifier {
    socket: Option<UnixDatagram>,
    watchdog: Option<Duration>,
}

impl Notifier {
    /// From `$NOTIFY_SOCKET` and `$WATCHDOG_USEC`; inert when they are absent or unusable.
    pub fn from_env() -> Notifier {
        let socket = std::env::var_os("NOTIFY_SOCKET").and_then(|path| {
            let sock = UnixDatagram::unbound().ok()?;
            let path = path.to_string_lossy().into_owned();
            let connected = match path.strip_prefix('@') {
                Some(name) => {
                    use std::os::linux::net::SocketAddrExt;
                    std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())
                        .and_then(|addr| sock.connect_addr(&addr))
                }
                None => sock.connect(&path),
            };
            match connected {
                Ok(()) => Some(sock),
                Err(e) => {
                    log::warn!("NOTIFY_SOCKET {path}: {e}; not notifying systemd");
                    None
                }
            }
        });
        let watchdog = std::env::var("WATCHDOG_USEC")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .filter(|&us| us > 0)
            .map(Duration::from_micros);
        Notifier { socket, watchdog }
    }

    /// Send one message (`KEY=value` lines); failures are logged, never fatal.
    pub fn send(&self, message: &str) {
        if let Some(s) = &self.socket
            && let Err(e) = s.send(message.as_bytes())
        {
            log::warn!("systemd notify `{message}`: {e}");
        }
    }

    /// Ping the watchdog from a thread, every half period, but only while `health.frames`
    /// advances: a daemon whose frames have stopped (camera gone for good, pipeline wedged)
    /// lets systemd restart it. Returns when `stop` is raised.
    pub fn watch_frames(self: Arc<Self>, health: Arc<Health>, stop: StopFlag) -> Option<std::thread::JoinHandle<()>> {
        let period = self.watchdog?;
        self.socket.as_ref()?;
        let handle = std::thread::Builder::new()
            .name("sd-watchdog".into())
            .spawn(move || {
                let mut seen = health.frames.load(Ordering::Relaxed);
                let tick = Duration::from_millis(50);
                let mut waited = Duration::ZERO;
                while !stop.is_stopped() {
                    std::thread::sleep(tick);
                    waited += tick;
                    if waited < period / 2 {
                        continue;
                    }
                    waited = Duration::ZERO;
                    let now = health.frames.load(Ordering::Relaxed);
                    if now != seen {
                        self.send("WATCHDOG=1");
                        seen = now;
                    }
                }
            })
            .expect("spawn watchdog thread");
        Some(handle)
    }
}
