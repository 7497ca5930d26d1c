//! The decision about one intercepted flow, sans I/O: a state machine in the style of
//! quinn-proto. The listener says what it knows (network, client, original destination);
//! the [`Decider`] either decides at once or says what it needs next ([`Need`]: the owning
//! process, the client's first bytes until a deadline, the real address of a fake-ip name)
//! and is fed the answers. TCP and UDP drive the same decider; in-memory tables (local
//! addresses, the fake-ip table, the DNS mapping, GeoIP) are read through [`Tables`].
//!
//! One rule-engine pass per flow, plus one more only when a name (sniffed) or a real
//! address (of a fake-ip name) arrives that can change the verdict. What the rules answer is
//! a [`Verdict`]; the daemon turns it into a concrete route through groups.
//!
//! Deliberately not here: sockets, timers, sniffing bytes (the `sniff` module), resolving.

pub mod caps;
#[cfg(test)]
mod tests;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use crate::config::Sniffer;
use crate::net::{ClientAddr, Destination, Network, OrigDst, Origin};
use crate::rules::{Ask, Decision, Evaluation, FlowMeta, Geo, ProcessInfo, RuleEngine};

/// What the rules answer for a flow.
pub use crate::rules::Verdict;

/// What the fake-ip table says about a destination address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FakeIp {
    /// Not in a fake range (or no fake-ip mode).
    NotFake,
    /// A fake address standing for this name.
    Name(String),
    /// In a fake range, but no name holds it (forgotten, or never handed out).
    Unknown,
}

/// In-memory answers the decider reads synchronously: tables the daemon keeps, no I/O.
pub trait Tables {
    /// Whether `ip` is one of this machine's own addresses (loopback included).
    fn is_local(&self, ip: IpAddr) -> bool;
    /// The fake-ip table's word on `ip`.
    fn fake_ip(&self, ip: IpAddr) -> FakeIp;
    /// The name `ip` was recently answered for by the DNS server (redir-host mapping).
    fn mapped_name(&self, ip: IpAddr) -> Option<String>;
    /// The ISO country of `ip`, when a database is loaded.
    /// What the GeoIP database says of `ip`: its country, or (`geodata-mode`) each category
    /// holding it; upper case.
    fn geo_codes(&self, ip: IpAddr) -> Vec<String>;
}

/// The rule engine as the decider uses it: one [`Rules::evaluate`] call is one pass.
pub trait Rules {
    fn evaluate(&self, flow: &FlowMeta<'_>, ask: Ask) -> Evaluation;
    /// Whether a rule looks at the owning process.
    fn needs_process(&self) -> bool;
    /// Whether a rule needs GeoIP countries.
    fn needs_geoip(&self) -> bool;
    /// The rule text of a decision for logs (`SUB-RULE,... > DOMAIN,...`; `(none)`).
    fn describe(&self, d: &Decision) -> String;
}

impl Rules for RuleEngine {
    fn evaluate(&self, flow: &FlowMeta<'_>, ask: Ask) -> Evaluation {
        Self::evaluate(self, flow, ask)
    }

    fn needs_process(&self) -> bool {
        Self::needs_process(self)
    }

    fn needs_geoip(&self) -> bool {
        Self::needs_geoip(self)
    }

    fn describe(&self, d: &Decision) -> String {
        let mut rule = d
            .rule
            .and_then(|i| self.rule(i))
            .map_or_else(|| "(none)".to_string(), |r| r.text.clone());
        if let Some(r) = d.inner.and_then(|(l, i)| self.sub_rule(l, i)) {
            rule = format!("{rule} > {}", r.text);
        }
        rule
    }
}

/// The settings the decision depends on besides the rules.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The listener's port: a flow aimed at it on this machine would loop.
    pub tproxy_port: u16,
    pub sniffer: Sniffer,
}

impl Settings {
    /// Whether a flow's first bytes are read for a name (TLS/HTTP ports for TCP, QUIC for
    /// UDP).
    pub fn sniffs(&self, network: Network, port: u16) -> bool {
        let s = &self.sniffer;
        let on = |ports: &[crate::rules::PortRange]| ports.iter().any(|r| r.contains(port));
        let listed = match network {
            Network::Tcp => on(&s.tls_ports) || on(&s.http_ports),
            Network::Udp => on(&s.quic_ports),
        };
        s.enable && s.parse_pure_ip && listed
    }
}

/// What the listener knows when a flow arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowStart {
    pub network: Network,
    pub client: ClientAddr,
    pub dst: OrigDst,
}

/// What the decider needs before it can go on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Need {
    /// The local process that owns the flow ([`Decider::on_process`]).
    Process,
    /// The client's first bytes (TCP) or datagrams (UDP), read for a name for at most
    /// `timeout` ([`Decider::on_sniffed`]).
    FirstBytes { timeout: Duration },
    /// The real address of the fake-ip name `name`, for address rules
    /// ([`Decider::on_real_addr`]).
    RealAddr { name: String },
}

/// Why a flow is refused before any rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Aimed at tpgate's own listener: relaying it would loop forever.
    OwnListener,
    /// A fake-ip address that stands for no name: it leads nowhere.
    UnknownFakeIp,
}

impl Refusal {
    /// For the log line.
    pub fn reason(self) -> &'static str {
        match self {
            Self::OwnListener => "that is tpgate's own listener",
            Self::UnknownFakeIp => "a fake-ip address that stands for no name",
        }
    }
}

/// What the decider says next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Need(Need),
    Decided(Decided),
    Refused(Refusal),
}

/// Where a flow's name came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostFrom {
    /// Sniffed from the client's first bytes (TLS SNI, HTTP Host, QUIC).
    Sniffed,
    /// The destination is a fake-ip address handed out for this name.
    FakeIp,
    /// The DNS server recently answered this name with the destination (redir-host).
    DnsMapping,
}

/// How DIRECT reaches the destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DirectTo {
    /// The original address.
    Addr(SocketAddr),
    /// A fake-ip flow: resolve the name through the DNS server's upstreams (the system
    /// resolver may be tpgate itself and answer with the fake address again).
    FakeName(String, u16),
    /// `override-destination`: connect to the sniffed name.
    Name(String, u16),
}

/// A decided flow: the verdict, why, and everything the route, the relay, the log and the
/// registry need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decided {
    pub network: Network,
    pub client: ClientAddr,
    pub dst: OrigDst,
    pub origin: Origin,
    pub verdict: Verdict,
    /// The deciding rule as written, for logs (`(none)`: no rule matched, or the mode).
    pub rule: String,
    /// The name the flow is routed by, when one is known.
    pub host: Option<String>,
    pub host_from: Option<HostFrom>,
    pub process: Option<ProcessInfo>,
    /// The address the rules saw: the real one of a fake-ip name when resolved for them.
    pub rules_dst: SocketAddr,
    /// TCP: the name cannot change the verdict, so connect at once and read the client's
    /// first bytes only while connecting, for the log (see [`Decided::note_sniffed`]).
    pub sniff_while_connecting: bool,
    /// `override-destination`: DIRECT connects to the sniffed name.
    override_destination: bool,
}

impl Decided {
    /// Whether the destination is a fake-ip address.
    pub fn fake(&self) -> bool {
        self.host_from == Some(HostFrom::FakeIp)
    }

    /// What an upstream is asked to connect to: the name when one is known (it resolves
    /// it itself), else the address.
    pub fn destination(&self) -> Destination {
        match &self.host {
            Some(h) => Destination::Domain(h.clone(), self.dst.0.port()),
            None => Destination::Addr(self.dst.0),
        }
    }

    /// How DIRECT (a DIRECT rule, or a group that chose DIRECT) reaches the destination.
    pub fn direct_to(&self) -> DirectTo {
        let port = self.dst.0.port();
        match (&self.host, self.host_from) {
            (Some(name), Some(HostFrom::FakeIp)) => DirectTo::FakeName(name.clone(), port),
            (Some(name), Some(HostFrom::Sniffed)) if self.override_destination => {
                DirectTo::Name(name.clone(), port)
            }
            _ => DirectTo::Addr(self.dst.0),
        }
    }

    /// For a [`Decided::sniff_while_connecting`] flow: the name read meanwhile, for the log
    /// and the registry only (a `skip-domain` name is dropped, as [`Decider::on_sniffed`]
    /// drops it).
    pub fn note_sniffed(&mut self, name: Option<String>, settings: &Settings) {
        if let Some(n) = name.filter(|n| settings.sniffer.accepts(n)) {
            self.host = Some(n);
            self.host_from = Some(HostFrom::Sniffed);
        }
    }
}

/// Where the decider is.
#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Start,
    /// Asked for the process.
    Process,
    /// Process known (or not needed): first pass next.
    Ready,
    /// Asked for the first bytes; `first` is the pass made without the name.
    Sniffing {
        first: Evaluation,
    },
    /// Asked for the real address of the fake name; `first` is the pass with the fake one.
    Resolving {
        first: Evaluation,
    },
    /// Decided: polled again, the same outcome.
    Done(Box<Decided>),
}

/// The decision state machine of one flow (see the module docs). It owns what it learned
/// and borrows the rules and tables only during a call, so a flow keeps one snapshot of
/// the rules for its whole decision while the caller may hold it across awaits.
#[derive(Debug, Clone)]
pub struct Decider {
    start: FlowStart,
    origin: Origin,
    state: State,
    process: Option<ProcessInfo>,
    /// The fake-ip name of the destination.
    fake: Option<String>,
    /// The DNS mapping's name of the (real) destination.
    mapped: Option<String>,
    sniffed: Option<String>,
    real: Option<IpAddr>,
    /// Countries (dst, src) when the rules want them, looked up once.
    geo: Option<Geo>,
}

impl Decider {
    pub fn new(start: FlowStart) -> Self {
        Self {
            start,
            origin: Origin::Forwarded,
            state: State::Start,
            process: None,
            fake: None,
            mapped: None,
            sniffed: None,
            real: None,
            geo: None,
        }
    }

    pub fn start(&self) -> FlowStart {
        self.start
    }

    /// Whether the flow came from this machine (known once [`Decider::poll`] ran).
    pub fn origin(&self) -> Origin {
        self.origin
    }

    /// Goes as far as it can without I/O: the next [`Need`], or the outcome. Call again
    /// after feeding each answer.
    pub fn poll(
        &mut self,
        rules: &(impl Rules + ?Sized),
        tables: &(impl Tables + ?Sized),
        settings: &Settings,
    ) -> Step {
        loop {
            let taken = std::mem::replace(&mut self.state, State::Ready);
            match taken {
                State::Start => {
                    let (src, dst) = (self.start.client.0, self.start.dst.0);
                    if dst.port() == settings.tproxy_port && tables.is_local(dst.ip()) {
                        return Step::Refused(Refusal::OwnListener);
                    }
                    if tables.is_local(src.ip()) {
                        self.origin = Origin::Local;
                    }
                    match tables.fake_ip(dst.ip()) {
                        FakeIp::Unknown => return Step::Refused(Refusal::UnknownFakeIp),
                        FakeIp::Name(n) => self.fake = Some(n),
                        FakeIp::NotFake => self.mapped = tables.mapped_name(dst.ip()),
                    }
                    if rules.needs_geoip() {
                        self.geo = Some(Geo {
                            dst: tables.geo_codes(dst.ip()),
                            src: tables.geo_codes(src.ip()),
                        });
                    }
                    if self.origin == Origin::Local && rules.needs_process() {
                        self.state = State::Process;
                        return Step::Need(Need::Process);
                    }
                    self.state = State::Ready;
                }
                State::Process => {
                    // Polled again without an answer: go on without the process.
                    self.state = State::Ready;
                }
                State::Ready => return self.first_pass(rules, settings),
                State::Sniffing { first } => {
                    let host = self.sniffed.clone().or_else(|| self.mapped.clone());
                    return match &host {
                        Some(h) if first.name_matters => {
                            let again = self.pass(rules, self.start.dst.0, Some(h), Ask::Nothing);
                            self.decided(rules, again.decision, settings, false)
                        }
                        _ => self.decided(rules, first.decision, settings, false),
                    };
                }
                State::Resolving { first } => {
                    return match self.real {
                        Some(ip) => {
                            let real = SocketAddr::new(ip, self.start.dst.0.port());
                            if let Some(g) = &mut self.geo {
                                g.dst = tables.geo_codes(ip);
                            }
                            let host = self.fake.clone();
                            let again = self.pass(rules, real, host.as_deref(), Ask::Nothing);
                            self.decided(rules, again.decision, settings, false)
                        }
                        None => self.decided(rules, first.decision, settings, false),
                    };
                }
                State::Done(d) => {
                    let step = Step::Decided((*d).clone());
                    self.state = State::Done(d);
                    return step;
                }
            }
        }
    }

    /// The first rule pass: for a fake-ip flow with its name (and whether a rule wants the
    /// real address); for a sniffed port without a name (and whether the name matters);
    /// otherwise with the DNS mapping's name, final.
    fn first_pass(&mut self, rules: &(impl Rules + ?Sized), settings: &Settings) -> Step {
        let dst = self.start.dst.0;
        if let Some(name) = self.fake.clone() {
            let first = self.pass(rules, dst, Some(&name), Ask::RealDst);
            if first.needs_real_dst {
                self.state = State::Resolving { first };
                return Step::Need(Need::RealAddr { name });
            }
            return self.decided(rules, first.decision, settings, false);
        }
        let network = self.start.network;
        if !settings.sniffs(network, dst.port()) {
            let mapped = self.mapped.clone();
            let e = self.pass(rules, dst, mapped.as_deref(), Ask::Nothing);
            return self.decided(rules, e.decision, settings, false);
        }
        let first = self.pass(rules, dst, None, Ask::NameMatters);
        let wait = first.name_matters
            || match first.decision.verdict {
                // Upstreams are given the name; override-destination connects to it.
                Verdict::Proxy(_) => true,
                Verdict::Direct => settings.sniffer.override_destination,
                Verdict::Reject | Verdict::RejectDrop => false,
            };
        match first.decision.verdict {
            _ if wait => {
                self.state = State::Sniffing { first };
                Step::Need(Need::FirstBytes {
                    timeout: settings.sniffer.timeout,
                })
            }
            // A UDP client's first datagram is already here: reading it costs nothing, so
            // the name is read for the log as before the decision.
            Verdict::Direct if network == Network::Udp => {
                self.state = State::Sniffing { first };
                Step::Need(Need::FirstBytes {
                    timeout: settings.sniffer.timeout,
                })
            }
            // DIRECT by address whatever the name: connect at once, read for the log.
            Verdict::Direct => self.decided(rules, first.decision, settings, true),
            _ => self.decided(rules, first.decision, settings, false),
        }
    }

    /// One rule-engine pass with what is known now.
    fn pass(
        &self,
        rules: &(impl Rules + ?Sized),
        dst: SocketAddr,
        host: Option<&str>,
        ask: Ask,
    ) -> Evaluation {
        rules.evaluate(
            &FlowMeta {
                network: self.start.network,
                src: self.start.client.0,
                dst,
                origin: self.origin,
                host,
                process: self.process.as_ref(),
                geo: self.geo.as_ref(),
            },
            ask,
        )
    }

    fn decided(
        &mut self,
        rules: &(impl Rules + ?Sized),
        d: Decision,
        settings: &Settings,
        sniff_while_connecting: bool,
    ) -> Step {
        let (host, host_from) = if let Some(f) = &self.fake {
            (Some(f.clone()), Some(HostFrom::FakeIp))
        } else if let Some(s) = &self.sniffed {
            (Some(s.clone()), Some(HostFrom::Sniffed))
        } else if let Some(m) = &self.mapped {
            (Some(m.clone()), Some(HostFrom::DnsMapping))
        } else {
            (None, None)
        };
        let rules_dst = match self.real {
            Some(ip) => SocketAddr::new(ip, self.start.dst.0.port()),
            None => self.start.dst.0,
        };
        let decided = Decided {
            network: self.start.network,
            client: self.start.client,
            dst: self.start.dst,
            origin: self.origin,
            verdict: d.verdict,
            rule: rules.describe(&d),
            host,
            host_from,
            process: self.process.clone(),
            rules_dst,
            sniff_while_connecting,
            override_destination: settings.sniffer.override_destination,
        };
        self.state = State::Done(Box::new(decided.clone()));
        Step::Decided(decided)
    }

    /// The answer to [`Need::Process`] (`None`: not found; process rules then do not match).
    pub fn on_process(&mut self, process: Option<ProcessInfo>) {
        if self.state == State::Process {
            self.process = process;
            self.state = State::Ready;
        }
    }

    /// The answer to [`Need::FirstBytes`]: the name found (`None`: none, or the wait ended).
    /// Names the sniffer's `skip-domain` refuses are dropped here.
    pub fn on_sniffed(&mut self, name: Option<String>, settings: &Settings) {
        if matches!(self.state, State::Sniffing { .. }) {
            self.sniffed = name.filter(|n| settings.sniffer.accepts(n));
        }
    }

    /// The answer to [`Need::RealAddr`] (`None`: not resolved; rules see the fake address).
    pub fn on_real_addr(&mut self, ip: Option<IpAddr>) {
        if matches!(self.state, State::Resolving { .. }) {
            self.real = ip;
        }
    }
}
