//! Real, independent upstream proxy servers run as processes on the lab's [`WanHost`]s:
//! microsocks (SOCKS5, TCP only, optional username/password), dante (`danted`: SOCKS5 with
//! UDP ASSOCIATE) and tinyproxy (HTTP CONNECT). Each writes its log to the lab's scratch
//! directory; tests can stop one (SIGKILL of the pid this test started, plus anything left
//! in its host's namespace) and start it again on the same address. microsocks and
//! tinyproxy can also run behind a [`DelayFront`] that adds latency.
//!
//! Deliberately not here: the in-process Shadowsocks and Trojan servers, which need extra
//! crates (`tests/lab/ss_server.rs`, `tests/lab/trojan_server.rs`).

use std::fs::File;
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::{poll, wait_timeout, DelayFront, Family, Lab, WanHost};

/// How long an upstream may take to accept connections after it was started.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// Which program, and how it is configured.
#[derive(Debug, Clone)]
pub(crate) enum ProcKind {
    /// `microsocks`, with `-u/-P` when `auth` is set.
    Microsocks { auth: Option<(String, String)> },
    /// `danted`, no authentication, CONNECT and UDP ASSOCIATE allowed.
    Dante,
    /// `tinyproxy`, CONNECT to any port.
    Tinyproxy,
}

impl ProcKind {
    const fn program(&self) -> &'static str {
        match self {
            Self::Microsocks { .. } => "microsocks",
            Self::Dante => "danted",
            Self::Tinyproxy => "tinyproxy",
        }
    }

    /// The port each program listens on in the lab.
    pub(crate) const fn port(&self) -> u16 {
        match self {
            Self::Microsocks { .. } | Self::Dante => 1080,
            Self::Tinyproxy => 8888,
        }
    }
}

/// Whether `prog` is on the PATH (the tests need the Debian packages from `.ci/run`).
pub(crate) fn have_program(prog: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths).any(|dir| dir.join(prog).is_file())
            || ["/usr/sbin", "/sbin"]
                .iter()
                .any(|d| std::path::Path::new(d).join(prog).is_file())
    })
}

/// An upstream proxy process on one of the lab's WAN hosts; killed on drop.
pub(crate) struct ProcUpstream<'lab> {
    pub(crate) host: &'lab WanHost,
    pub(crate) kind: ProcKind,
    /// Config file (dante, tinyproxy).
    conf: Option<PathBuf>,
    /// Latency added in front of the program (which then listens on loopback only).
    delay: Option<Duration>,
    front: Option<DelayFront>,
    /// Where the process's stdout and stderr go.
    log: PathBuf,
    child: Option<Child>,
}

impl<'lab> ProcUpstream<'lab> {
    /// Starts `kind` on `lab.hosts[host]` and waits until it accepts connections.
    pub(crate) fn start(lab: &'lab Lab, host: usize, kind: ProcKind) -> Self {
        Self::start_inner(lab, host, kind, None)
    }

    /// Like [`Self::start`], behind a [`DelayFront`] adding `delay` in each direction
    /// (TCP only: dante's UDP ASSOCIATE does not work behind it). [`Self::set_delay`]
    /// changes the delay later; [`Self::front_peers`] tells who connected.
    pub(crate) fn start_delayed(
        lab: &'lab Lab,
        host: usize,
        kind: ProcKind,
        delay: Duration,
    ) -> Self {
        Self::start_inner(lab, host, kind, Some(delay))
    }

    fn start_inner(lab: &'lab Lab, host: usize, kind: ProcKind, delay: Option<Duration>) -> Self {
        let h = &lab.hosts[host];
        let prog = kind.program();
        assert!(
            have_program(prog),
            "`{prog}` is not installed (apt-get install microsocks dante-server tinyproxy)"
        );
        let conf = match &kind {
            ProcKind::Microsocks { .. } => None,
            ProcKind::Dante => Some(lab.write_file(
                &format!("danted-h{host}.conf"),
                &dante_conf(delay.is_some()),
            )),
            ProcKind::Tinyproxy => Some(lab.write_file(
                &format!("tinyproxy-h{host}.conf"),
                &tinyproxy_conf(kind.port(), delay.is_some()),
            )),
        };
        let mut up = Self {
            host: h,
            kind,
            conf,
            delay,
            front: None,
            log: lab.dir.join(format!("{prog}-h{host}.log")),
            child: None,
        };
        up.restart();
        up
    }

    /// The address tpgate (or a test client) connects to: the host's IPv4 address.
    pub(crate) fn addr(&self) -> SocketAddr {
        SocketAddr::new(self.host.v4, self.kind.port())
    }

    /// The host's address of `family`: what a destination sees for traffic through it.
    pub(crate) fn egress(&self, family: Family) -> std::net::IpAddr {
        self.host.addr(family)
    }

    /// (Re)starts the process after [`Self::stop`] (or the first time) and waits until it
    /// accepts TCP connections.
    pub(crate) fn restart(&mut self) {
        self.stop();
        let log = File::options()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open upstream log");
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.host.ns.name, self.kind.program()]);
        let port = self.kind.port().to_string();
        let inner = inner_port(self.kind.port()).to_string();
        match &self.kind {
            ProcKind::Microsocks { auth } => {
                if self.delay.is_some() {
                    cmd.args(["-i", "127.0.0.1", "-p", &inner]);
                } else {
                    cmd.args(["-i", "::", "-p", &port]);
                }
                if let Some((user, pass)) = auth {
                    cmd.args(["-u", user, "-P", pass]);
                }
            }
            ProcKind::Dante => {
                let conf = self.conf.as_ref().expect("dante config");
                cmd.arg("-f").arg(conf);
            }
            ProcKind::Tinyproxy => {
                let conf = self.conf.as_ref().expect("tinyproxy config");
                cmd.arg("-d").arg("-c").arg(conf);
            }
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", self.kind.program()));
        self.child = Some(child);
        if let Some(delay) = self.delay {
            let inner = SocketAddr::from(([127, 0, 0, 1], inner_port(self.kind.port())));
            let listen = SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, self.kind.port()));
            self.wait_accepting(inner);
            self.front = Some(DelayFront::start(&self.host.ns, listen, inner, delay));
        }
        self.wait_accepting(self.addr());
    }

    /// Peers that connected to a [`Self::start_delayed`] upstream (since its last start).
    pub(crate) fn front_peers(&self) -> Vec<SocketAddr> {
        self.front
            .as_ref()
            .map(DelayFront::peers)
            .unwrap_or_default()
    }

    /// Changes the latency of a [`Self::start_delayed`] upstream.
    pub(crate) fn set_delay(&mut self, delay: Duration) {
        assert!(self.delay.is_some(), "not started with start_delayed");
        self.delay = Some(delay);
        if let Some(front) = &self.front {
            front.set_delay(delay);
        }
    }

    /// Waits until `addr` accepts TCP connections from inside the host, failing early when
    /// the program exits.
    fn wait_accepting(&mut self, addr: SocketAddr) {
        let ready = poll(START_TIMEOUT, || {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!(
                    "{} exited at start ({status}); log:\n{}",
                    self.kind.program(),
                    self.log_text()
                );
            }
            self.host
                .ns
                .enter(|| TcpStream::connect_timeout(&addr, Duration::from_millis(200)))
                .ok()
        });
        assert!(
            ready.is_some(),
            "{} on {addr} did not accept connections within {START_TIMEOUT:?}; log:\n{}",
            self.kind.program(),
            self.log_text()
        );
    }

    /// Freezes the process (SIGSTOP to the pid this test started) or thaws it (SIGCONT).
    /// Frozen, its kernel still accepts connections and takes in data, but the program
    /// answers nothing: an upstream that accepts TCP and never answers the handshake.
    pub(crate) fn freeze(&self, frozen: bool) {
        let child = self.child.as_ref().expect("the upstream is running");
        let pid = Pid::from_raw(i32::try_from(child.id()).expect("pid fits i32"));
        let sig = if frozen {
            Signal::SIGSTOP
        } else {
            Signal::SIGCONT
        };
        kill(pid, sig).unwrap_or_else(|e| panic!("{sig} to {}: {e}", self.kind.program()));
    }

    /// Stops the process (SIGTERM so dante takes its children along, SIGKILL after 2 s),
    /// then SIGKILLs anything still running in the host's namespace.
    pub(crate) fn stop(&mut self) {
        self.front = None;
        if let Some(mut child) = self.child.take() {
            if let Ok(pid) = i32::try_from(child.id()) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
            }
            if wait_timeout(&mut child, Duration::from_secs(2)).is_none() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        let leftover = poll(Duration::from_secs(2), || {
            let pids = self.host.pids();
            for pid in &pids {
                let _ = kill(*pid, Signal::SIGKILL);
            }
            pids.is_empty().then_some(())
        });
        assert!(
            leftover.is_some(),
            "processes left in {}: {:?}",
            self.host.ns.name,
            self.host.pids()
        );
    }

    /// The proxy entry for tpgate's config: `socks5` (with `udp: true` for dante, and the
    /// credentials when microsocks wants them) or `http`.
    pub(crate) fn proxy_yaml(&self, name: &str) -> String {
        let (server, port) = (self.host.v4, self.kind.port());
        match &self.kind {
            ProcKind::Microsocks { auth: None } => {
                format!("{{name: {name}, type: socks5, server: {server}, port: {port}}}")
            }
            ProcKind::Microsocks {
                auth: Some((user, pass)),
            } => format!(
                "{{name: {name}, type: socks5, server: {server}, port: {port}, \
                 username: \"{user}\", password: \"{pass}\"}}"
            ),
            ProcKind::Dante => {
                format!("{{name: {name}, type: socks5, server: {server}, port: {port}, udp: true}}")
            }
            ProcKind::Tinyproxy => {
                format!("{{name: {name}, type: http, server: {server}, port: {port}}}")
            }
        }
    }

    /// What the process logged so far.
    pub(crate) fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for ProcUpstream<'_> {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        for pid in self.host.pids() {
            let _ = kill(pid, Signal::SIGKILL);
        }
    }
}

/// dante: no authentication, anyone may CONNECT or UDP ASSOCIATE anywhere, over IPv4 and
/// IPv6, leaving from the host's own addresses; listening on loopback behind a front.
fn dante_conf(behind_front: bool) -> String {
    let internal = if behind_front {
        format!("internal: 127.0.0.1 port = {}\n", inner_port(1080))
    } else {
        "internal: eth0 port = 1080\n".to_owned()
    };
    internal
        + "logoutput: stderr\n\
     external: eth0\n\
     clientmethod: none\n\
     socksmethod: none\n\
     user.privileged: root\n\
     user.unprivileged: nobody\n\
     client pass {\n  from: 0/0 to: 0/0\n  log: error\n}\n\
     socks pass {\n  from: 0/0 to: 0/0\n  command: connect udpassociate udpreply\n  log: error\n}\n"
}

/// Where a delayed program listens (on the host's loopback), behind its front.
const fn inner_port(port: u16) -> u16 {
    port + 1
}

/// tinyproxy in the foreground: every client allowed (no `Allow` lines) and CONNECT to any
/// port (no `ConnectPort` lines: tinyproxy then allows all ports).
fn tinyproxy_conf(port: u16, behind_front: bool) -> String {
    let (port, listen) = if behind_front {
        (inner_port(port), "Listen 127.0.0.1\n")
    } else {
        (port, "")
    };
    format!(
        "User nobody\n\
         Group nogroup\n\
         Port {port}\n\
         {listen}\
         Timeout 60\n\
         LogLevel Info\n\
         MaxClients 100\n\
         DisableViaHeader Yes\n"
    )
}
