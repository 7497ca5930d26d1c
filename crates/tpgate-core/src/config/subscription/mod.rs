//! The content of a proxy provider (a "subscription"): Clash YAML with a `proxies:` list,
//! or a list of share links (`ss://`, `trojan://`, `vmess://`...), one per line, plain or
//! base64-encoded, as mihomo reads them. Each link becomes the same mapping a `proxies:`
//! entry would be (`uri`), so one decoder validates both and skips what tpgate cannot use
//! with the same warnings. Also the `subscription-userinfo` header. Pure: bytes in.

mod uri;

use base64::Engine as _;

use super::yaml::{self, Node, Pos, Value};

pub use uri::{parse_uri, Field};

/// Why a subscription could not be read at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Unreadable {
    pub(crate) pos: Pos,
    pub(crate) message: String,
}

/// The proxy mappings of a subscription, in order, with the position each came from.
/// Lines that are not share links tpgate knows are returned as `skipped` (line, scheme).
#[derive(Debug, Default)]
pub(crate) struct Entries {
    pub(crate) proxies: Vec<Node>,
    /// `(line, what)` of share links that were dropped, for one warning each.
    pub(crate) skipped: Vec<(Pos, String)>,
}

/// Reads a subscription body: YAML with `proxies:` first, else a (base64) link list.
pub(crate) fn entries(body: &[u8]) -> Result<Entries, Unreadable> {
    let text = String::from_utf8_lossy(body);
    let text = text.trim_start_matches('\u{feff}');
    match yaml::parse_document(text) {
        Ok(doc) => {
            if let Some(Node {
                value: Value::Map(map),
                pos,
            }) = &doc.root
            {
                let proxies = map
                    .iter()
                    .find(|(k, _)| k.value == Value::Str("proxies".into()))
                    .map(|(_, v)| v);
                return match proxies.map(|v| &v.value) {
                    Some(Value::Seq(items)) => Ok(Entries {
                        proxies: items.clone(),
                        skipped: Vec::new(),
                    }),
                    Some(Value::Null) => Ok(Entries::default()),
                    Some(other) => Err(Unreadable {
                        pos: proxies.map_or(*pos, |p| p.pos),
                        message: format!("`proxies` is a list, found {}", other.describe()),
                    }),
                    None => Err(Unreadable {
                        pos: *pos,
                        message: "a mapping without `proxies:`; expected Clash YAML with a \
                                  `proxies` list or a list of share links"
                            .to_owned(),
                    }),
                };
            }
            links(text)
        }
        // Share links are seldom valid YAML documents; they are read as links below.
        Err(_) => links(text),
    }
}

/// A plain or base64 list of share links.
fn links(text: &str) -> Result<Entries, Unreadable> {
    let decoded = decode_base64(text.trim());
    let list = decoded.as_deref().unwrap_or(text);
    let mut out = Entries::default();
    let mut names = Names::default();
    let mut seen_link = false;
    for (i, line) in list.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with("//") {
            continue;
        }
        let pos = Pos {
            line: i + 1,
            col: 1,
        };
        let Some((scheme, _)) = line.split_once("://") else {
            continue;
        };
        seen_link = true;
        match parse_uri(line) {
            Ok(mut fields) => {
                let name = fields
                    .iter()
                    .find(|(k, _)| *k == "name")
                    .and_then(|(_, v)| v.as_str().map(str::to_owned))
                    .unwrap_or_default();
                let unique = names.unique(&name);
                for (k, v) in &mut fields {
                    if *k == "name" {
                        *v = Field::Str(unique.clone());
                    }
                }
                out.proxies.push(uri::to_node(&fields, pos));
            }
            Err(why) => out.skipped.push((
                pos,
                format!("{}:// link: {why}", scheme.to_ascii_lowercase()),
            )),
        }
    }
    if !seen_link {
        return Err(Unreadable {
            pos: Pos { line: 1, col: 1 },
            message: "neither Clash YAML with `proxies:` nor a list of share links (ss://, \
                      trojan://, vmess://...), plain or base64"
                .to_owned(),
        });
    }
    Ok(out)
}

/// The text `text` encodes when it is base64 (standard or URL alphabet, padded or not,
/// line breaks allowed) of UTF-8; `None` otherwise.
pub(crate) fn decode_base64(text: &str) -> Option<String> {
    let compact: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    if compact.is_empty() || compact.contains("://") {
        return None;
    }
    let bytes = base64_any(&compact)?;
    String::from_utf8(bytes).ok()
}

/// Base64 in any of the alphabets and paddings share links use.
pub(crate) fn base64_any(text: &str) -> Option<Vec<u8>> {
    use base64::engine::general_purpose::{GeneralPurpose, STANDARD, STANDARD_NO_PAD};
    use base64::engine::general_purpose::{URL_SAFE, URL_SAFE_NO_PAD};
    let engines: [&GeneralPurpose; 4] = [&STANDARD, &STANDARD_NO_PAD, &URL_SAFE, &URL_SAFE_NO_PAD];
    engines.iter().find_map(|e| e.decode(text.trim()).ok())
}

/// mihomo's `uniqueName`: a name seen before gets `-01`, `-02`...
#[derive(Default)]
struct Names(std::collections::HashMap<String, u32>);

impl Names {
    fn unique(&mut self, name: &str) -> String {
        match self.0.get_mut(name) {
            Some(n) => {
                *n += 1;
                format!("{name}-{:02}", *n)
            }
            None => {
                self.0.insert(name.to_owned(), 0);
                name.to_owned()
            }
        }
    }
}

/// The `subscription-userinfo` header of a provider's download: traffic used and left,
/// and when the subscription expires (what dashboards show).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SubscriptionInfo {
    pub upload: i64,
    pub download: i64,
    pub total: i64,
    /// Unix seconds; 0 when not given.
    pub expire: i64,
}

impl SubscriptionInfo {
    /// `upload=1; download=2; total=3; expire=4`, mihomo's way: case and spaces ignored,
    /// floats truncated, unknown or unreadable fields skipped.
    pub fn parse(header: &str) -> Self {
        let text: String = header
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect::<String>()
            .to_ascii_lowercase();
        let mut out = Self::default();
        for field in text.split(';') {
            let Some((name, value)) = field.split_once('=') else {
                continue;
            };
            let v = value.parse::<i64>().ok().or_else(|| {
                value
                    .parse::<f64>()
                    .ok()
                    .filter(|f| f.is_finite())
                    .map(|f| f as i64)
            });
            let Some(v) = v else { continue };
            match name {
                "upload" => out.upload = v,
                "download" => out.download = v,
                "total" => out.total = v,
                "expire" => out.expire = v,
                _ => {}
            }
        }
        out
    }
}

#[cfg(test)]
mod tests;
