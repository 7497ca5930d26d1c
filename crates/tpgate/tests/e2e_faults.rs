//! Faults around the daemon, in the namespace lab. A nameserver that times out, answers
//! SERVFAIL, garbage, truncated, cut-short or reflected messages, or answers another
//! question, forever: clients get SERVFAIL (at once where the server answered at all,
//! within the upstream timeout where it said nothing; at once again on a retry), nothing it
//! sent is cached or handed on, and the daemon keeps serving; once the nameserver is sound
//! again every name resolves properly. A read-only state directory: the daemon starts,
//! runs and stops, saying what it could not save, and never uses a damaged or half-written
//! state file.

mod lab;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{RData, RecordType};
use lab::{
    dns_tcp, dns_udp, poll, state_dir, tcp_echo, Api, DnsExchange, FakeDns, Family, Fault, Lab,
    TcpEchoServer, Tpgate, Unprivileged, NOBODY, VICTIM_ADDR,
};

/// How long tpgate waits for a nameserver (dns/upstream.rs), plus slack for a busy machine.
const SILENT_LIMIT: Duration = Duration::from_secs(7);
/// A server that answered at all, however badly, gives SERVFAIL this fast: well before the
/// 4 s upstream timeout (milliseconds in practice; the margin is for a loaded machine).
const ANSWERED_LIMIT: Duration = Duration::from_secs(3);
/// A retry within the failure TTL is answered from memory (milliseconds in practice).
const RETRY_LIMIT: Duration = Duration::from_millis(1500);
const WAIT: Duration = Duration::from_secs(10);

fn addrs(m: &Message) -> Vec<IpAddr> {
    m.answers()
        .iter()
        .filter_map(|r| match r.data() {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            RData::AAAA(a) => Some(IpAddr::V6(a.0)),
            _ => None,
        })
        .collect()
}

/// The reply's code, panicking (with the log) on silence or on the victim's address.
fn code(x: &DnsExchange, what: &str, tp: &Tpgate<'_>) -> ResponseCode {
    let Some(m) = &x.reply else {
        panic!("{what}: no reply at all in {:?}\n{}", x.took, tp.log_text());
    };
    assert!(
        !addrs(m).contains(&IpAddr::V4(VICTIM_ADDR)),
        "{what}: the answer to another question reached the client: {m:?}"
    );
    m.response_code()
}

#[test]
fn dns_upstream_faults_give_servfail_quickly_and_poison_nothing() {
    let Some(lab) = Lab::new("dnsfault") else {
        return;
    };
    let v4 = Family::V4.addrs();
    let up = FakeDns::start(&lab.server, SocketAddr::new(v4.server, 53), Fault::Silent);
    let text = format!(
        "state-file: {}\n{}hosts:\n  router.lan: 192.0.2.1\n\
         dns:\n  enable: true\n  listen: 0.0.0.0:53\n  enhanced-mode: redir-host\n  \
         nameserver: ['udp://{}']\n",
        lab.dir.join("state.json").display(),
        lab.config_text(),
        up.addr
    );
    let config = lab.write_file("tpgate.yaml", &text);
    let mut tp = Tpgate::start(&lab, &config);
    let dns = SocketAddr::new(v4.gw_lan, 53);

    let faults = [
        (Fault::Silent, "silent"),
        (Fault::ServFail, "servfail"),
        (Fault::Garbage, "garbage"),
        (Fault::Truncated, "truncated"),
        (Fault::CutShort, "cutshort"),
        (Fault::Reflect, "reflect"),
        (Fault::OtherQuestion, "otherq"),
    ];
    let mut names = Vec::new();
    for (fault, tag) in faults {
        up.set(fault);
        let limit = if fault == Fault::Silent {
            SILENT_LIMIT
        } else {
            ANSWERED_LIMIT
        };
        for over_tcp in [false, true] {
            let name = format!("{tag}-{}.example", if over_tcp { "tcp" } else { "udp" });
            let ask = |name: &str| {
                if over_tcp {
                    dns_tcp(&lab.client, dns, name, RecordType::A, WAIT)
                } else {
                    dns_udp(&lab.client, dns, name, RecordType::A, WAIT)
                }
            };
            let asked_before = up.queries();
            let x = ask(&name);
            assert_eq!(code(&x, &name, &tp), ResponseCode::ServFail, "{name}");
            assert!(x.took <= limit, "{name}: SERVFAIL took {:?}", x.took);
            assert!(
                up.queries() > asked_before,
                "{name}: the nameserver was asked"
            );
            // The retry a client makes: from memory, the nameserver is not asked again.
            let asked = up.queries();
            let again = ask(&name);
            assert_eq!(code(&again, &name, &tp), ResponseCode::ServFail);
            assert!(
                again.took <= RETRY_LIMIT,
                "{name}: retry took {:?}",
                again.took
            );
            assert_eq!(
                up.queries(),
                asked,
                "{name}: asked again within the failure TTL"
            );
            names.push(name);
        }
        // Meanwhile what needs no nameserver is answered as ever.
        let local = dns_udp(&lab.client, dns, "router.lan", RecordType::A, WAIT);
        let m = local.reply.expect("hosts answer");
        assert_eq!(addrs(&m), ["192.0.2.1".parse::<IpAddr>().unwrap()]);
    }

    // The nameserver is sound again: once the failures are forgotten, every name gets the
    // real answer (nothing a fault sent was kept), and so does the victim's name.
    up.set(Fault::Good(v4.server));
    names.push("victim.example".to_owned());
    for name in &names {
        let good = poll(WAIT, || {
            let x = dns_udp(&lab.client, dns, name, RecordType::A, WAIT);
            x.reply
                .filter(|m| m.response_code() == ResponseCode::NoError)
        })
        .unwrap_or_else(|| panic!("{name}: no good answer once the server recovered"));
        assert_eq!(addrs(&good), [v4.server], "{name}: {good:?}");
    }

    // And the daemon still relays.
    let server = TcpEchoServer::start(&lab.server, SocketAddr::new(v4.server, 80));
    let x = tcp_echo(&lab.client, server.addr, b"still here").expect("relay after faults");
    assert_eq!(x.echoed, b"still here");
    assert!(
        tp.try_status().is_none(),
        "tpgate exited:\n{}",
        tp.log_text()
    );
    assert!(tp.terminate().success());
}

/// Every file in `dir` with its bytes.
fn contents(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .expect("read dir")
        .flatten()
        .map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            (name, std::fs::read(e.path()).expect("read file"))
        })
        .collect()
}

#[test]
fn read_only_state_dir_keeps_the_daemon_running_and_damaged_state_unused() {
    let Some(lab) = Lab::new("rostate") else {
        return;
    };
    let v4 = Family::V4.addrs();
    let dir = state_dir(&lab);
    let state = dir.join("state.json");
    // A state file cut short (as a non-atomic writer dying would leave it), temporaries
    // from a crash (this version's name and the earlier one) that would select REJECT if
    // anything read them, and a sound fake-ip table from the last run.
    std::fs::write(&state, br#"{"selected": {"Proxy": "REJ"#).unwrap();
    std::fs::write(
        dir.join(".state.json.tmp"),
        br#"{"selected":{"Proxy":"REJECT"}}"#,
    )
    .unwrap();
    std::fs::write(dir.join("state.tmp"), br#"{"selected":{"Proxy":"REJECT"}}"#).unwrap();
    std::fs::write(
        dir.join("state.json.fakeip.json"),
        br#"[["kept.example","198.18.0.7"]]"#,
    )
    .unwrap();
    for f in contents(&dir).keys() {
        std::os::unix::fs::chown(dir.join(f), Some(NOBODY), Some(NOBODY)).unwrap();
    }
    let before = contents(&dir);

    let text =
        lab.proxy_config_text(
            &[],
            &["{name: Proxy, type: select, proxies: [DIRECT, REJECT]}".to_owned()],
            &["MATCH,Proxy"],
        )
        .replace(
            &lab.state_file().display().to_string(),
            &state.display().to_string(),
        ) + "dns:\n  enable: true\n  listen: 0.0.0.0:53\n  enhanced-mode: fake-ip\n  \
           fake-ip-range: 198.18.0.1/16\n  nameserver: ['udp://192.0.2.53:53']\n";
    let config = lab.write_file("tpgate.yaml", &text);
    let wrapper = Unprivileged::unit().read_only(&dir).wrapper();
    let mut tp = Tpgate::start_wrapped(&lab, &config, &wrapper);

    // The damaged file is reported and unused; the temporaries are never read.
    tp.wait_for_line(WAIT, |l| {
        l.contains("state file unreadable, starting fresh")
    })
    .unwrap_or_else(|| {
        panic!(
            "the damaged state file went unmentioned:\n{}",
            tp.log_text()
        )
    });
    let api = Api::new(&lab, None);
    assert_eq!(
        api.now("Proxy"),
        "DIRECT",
        "the group starts on its first member"
    );
    let server = TcpEchoServer::start(&lab.server, SocketAddr::new(v4.server, 80));
    let echoes =
        |data: &[u8]| tcp_echo(&lab.client, server.addr, data).is_ok_and(|x| x.echoed == data);
    assert!(echoes(b"a"), "DIRECT relays");

    // The sound fake-ip table was restored.
    let dns = SocketAddr::new(v4.gw_lan, 53);
    let kept = dns_udp(&lab.client, dns, "kept.example", RecordType::A, WAIT);
    let kept = kept.reply.expect("an answer for kept.example");
    assert_eq!(addrs(&kept), ["198.18.0.7".parse::<IpAddr>().unwrap()]);
    let fresh = dns_udp(&lab.client, dns, "fresh.example", RecordType::A, WAIT);
    assert_eq!(
        fresh.reply.map(|m| addrs(&m).len()),
        Some(1),
        "a new fake name"
    );

    // A choice that cannot be saved: said, and it holds while tpgate runs.
    assert_eq!(api.select("Proxy", "REJECT").status, 204);
    let line = tp
        .wait_for_line(WAIT, |l| {
            l.contains("cannot save the selection Proxy = REJECT")
        })
        .unwrap_or_else(|| panic!("the failed save went unmentioned:\n{}", tp.log_text()));
    assert!(line.contains("Read-only file system"), "{line}");
    assert!(!echoes(b"b"), "REJECT holds in memory");
    assert_eq!(api.select("Proxy", "DIRECT").status, 204);
    assert!(echoes(b"c"), "still serving");

    // At shutdown the fake-ip table cannot be saved either: said, and the exit is clean.
    let status = tp.terminate();
    assert!(status.success(), "{status:?}\n{}", tp.log_text());
    let line = tp
        .wait_for_line(WAIT, |l| l.contains("cannot save the fake-ip table"))
        .unwrap_or_else(|| panic!("the failed save went unmentioned:\n{}", tp.log_text()));
    assert!(line.contains("Read-only file system"), "{line}");
    assert_eq!(
        contents(&dir),
        before,
        "nothing in the state directory changed"
    );
}

/// A 64 KiB tmpfs mounted on `dir` while this lives (unmounted on drop, also when the
/// test fails): a state directory that can be filled up.
struct SmallDisk(std::path::PathBuf);

impl SmallDisk {
    fn mount(dir: &Path) -> Self {
        std::fs::create_dir_all(dir).expect("create mount point");
        let out = lab::run(
            "mount",
            &[
                "-t",
                "tmpfs",
                "-o",
                "size=64k",
                "tpgate-test",
                &dir.display().to_string(),
            ],
        );
        assert!(out.success(), "mount tmpfs: {}", out.stderr);
        Self(dir.to_owned())
    }

    /// Fills the disk with `dir/filler` until the kernel says it is full.
    fn fill(&self) {
        use std::io::Write as _;
        let mut f = std::fs::File::create(self.0.join("filler")).expect("filler");
        let block = [0u8; 1024];
        for _ in 0..1024 {
            if f.write_all(&block).and_then(|()| f.sync_all()).is_err() {
                return;
            }
        }
        panic!("a 64 KiB disk took 1 MiB");
    }

    fn free(&self) {
        std::fs::remove_file(self.0.join("filler")).expect("remove filler");
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = lab::run("umount", &["-l", &self.0.display().to_string()]);
    }
}

/// A full state directory: a choice that cannot be saved is said and holds in memory, the
/// saved state is left whole (never truncated, no temporary left behind), and once there is
/// room again the next save works.
#[test]
fn full_state_dir_keeps_the_daemon_running_and_the_saved_state_whole() {
    let Some(lab) = Lab::new("fullstate") else {
        return;
    };
    let v4 = Family::V4.addrs();
    let dir = lab.dir.join("full-state");
    let disk = SmallDisk::mount(&dir);
    let state = dir.join("state.json");
    let text = lab
        .proxy_config_text(
            &[],
            &["{name: Proxy, type: select, proxies: [DIRECT, REJECT]}".to_owned()],
            &["MATCH,Proxy"],
        )
        .replace(
            &lab.state_file().display().to_string(),
            &state.display().to_string(),
        );
    let config = lab.write_file("tpgate.yaml", &text);
    let tp = Tpgate::start(&lab, &config);
    let api = Api::new(&lab, None);
    let server = TcpEchoServer::start(&lab.server, SocketAddr::new(v4.server, 80));
    let echoes =
        |data: &[u8]| tcp_echo(&lab.client, server.addr, data).is_ok_and(|x| x.echoed == data);

    // A saved choice (DIRECT, made explicit), then the disk fills up.
    assert_eq!(api.select("Proxy", "DIRECT").status, 204);
    assert!(
        poll(WAIT, || Some(())
            .filter(
                |()| std::fs::read_to_string(&state).is_ok_and(|s| s.contains("DIRECT"))
            ))
        .is_some(),
        "the choice was saved"
    );
    let saved = std::fs::read(&state).unwrap();
    disk.fill();

    assert_eq!(api.select("Proxy", "REJECT").status, 204);
    let line = tp
        .wait_for_line(WAIT, |l| {
            l.contains("cannot save the selection Proxy = REJECT")
        })
        .unwrap_or_else(|| panic!("the failed save went unmentioned:\n{}", tp.log_text()));
    assert!(line.contains("No space left on device"), "{line}");
    assert!(!echoes(b"a"), "REJECT holds in memory");
    assert_eq!(
        std::fs::read(&state).unwrap(),
        saved,
        "the saved state is whole"
    );
    let names: Vec<String> = contents(&dir).into_keys().collect();
    assert_eq!(names, ["filler", "state.json"], "no temporary left behind");

    // Room again: the next choice is saved.
    disk.free();
    assert_eq!(api.select("Proxy", "DIRECT").status, 204);
    assert!(echoes(b"b"), "DIRECT relays");
    assert_eq!(api.select("Proxy", "REJECT").status, 204);
    assert!(
        poll(WAIT, || Some(())
            .filter(
                |()| std::fs::read_to_string(&state).is_ok_and(|s| s.contains("REJECT"))
            ))
        .is_some(),
        "saved once there is room: {:?}",
        std::fs::read_to_string(&state)
    );
    drop(tp);
}
