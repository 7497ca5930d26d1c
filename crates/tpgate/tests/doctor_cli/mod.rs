//! Helpers of `e2e_doctor`: the Clash TPROXY guide applied by hand in the gateway, and
//! `tpgate doctor` run there with its JSON findings parsed.

use crate::lab::{tpgate_oneshot, CmdOutput, Lab};

/// The guide's commands, one per line; each scenario drops or changes one of them.
pub(crate) const GUIDE: &str = "\
ip rule add fwmark 1 table 100
ip route add local 0.0.0.0/0 dev lo table 100
iptables -t mangle -N CLASH
iptables -t mangle -A CLASH -d 127.0.0.0/8 -j RETURN
iptables -t mangle -A CLASH -d 192.0.2.0/24 -j RETURN
iptables -t mangle -A CLASH -m conntrack --ctdir REPLY -j RETURN
iptables -t mangle -A CLASH -p tcp -j TPROXY --on-port 7893 --tproxy-mark 1
iptables -t mangle -A CLASH -p udp -j TPROXY --on-port 7893 --tproxy-mark 1
iptables -t mangle -A PREROUTING -j CLASH
iptables -t mangle -N CLASH_SELF
iptables -t mangle -A CLASH_SELF -d 127.0.0.0/8 -j RETURN
iptables -t mangle -A CLASH_SELF -d 192.0.2.0/24 -j RETURN
iptables -t mangle -A CLASH_SELF -m mark --mark 0xff -j RETURN
iptables -t mangle -A CLASH_SELF -p tcp -j MARK --set-mark 1
iptables -t mangle -A CLASH_SELF -p udp -j MARK --set-mark 1
iptables -t mangle -A OUTPUT -j CLASH_SELF
";

/// Runs the guide in the gateway with `edit` applied to its lines.
pub(crate) fn apply_guide(lab: &Lab, edit: impl Fn(&str) -> Option<String>) {
    let script: Vec<String> = GUIDE.lines().filter_map(edit).collect();
    let script = format!("set -e\n{}\n", script.join("\n"));
    lab.gw.sh("sh", &["-c", &script]);
}

/// One finding of `doctor --json`.
#[derive(Debug)]
pub(crate) struct Found {
    pub(crate) id: String,
    pub(crate) severity: String,
    pub(crate) title: String,
    pub(crate) fix: String,
}

pub(crate) fn doctor(lab: &Lab, args: &[&str]) -> CmdOutput {
    let mut all = vec!["doctor"];
    all.extend_from_slice(args);
    tpgate_oneshot(&lab.gw, &all)
}

/// `doctor --json [args]`: exit code and findings.
pub(crate) fn doctor_json(lab: &Lab, args: &[&str]) -> (Option<i32>, Vec<Found>) {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let out = doctor(lab, &all);
    let doc: serde_json::Value = serde_json::from_str(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "doctor --json is not JSON ({e}): {}\n{}",
            out.stdout, out.stderr
        )
    });
    let found = doc["findings"]
        .as_array()
        .expect("findings array")
        .iter()
        .map(|f| Found {
            id: f["id"].as_str().expect("id").to_owned(),
            severity: f["severity"].as_str().expect("severity").to_owned(),
            title: f["title"].as_str().expect("title").to_owned(),
            fix: f["fix"].as_str().expect("fix").to_owned(),
        })
        .collect();
    (out.code, found)
}

/// The findings with `id` and `severity`; panics (showing all) when there is none.
pub(crate) fn expect_finding<'a>(fs: &'a [Found], id: &str, severity: &str) -> &'a Found {
    fs.iter()
        .find(|f| f.id == id && f.severity == severity)
        .unwrap_or_else(|| panic!("no {severity} finding {id} in {fs:#?}"))
}
