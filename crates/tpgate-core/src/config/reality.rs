//! `reality-opts` of vless, vmess and trojan proxies (mihomo's keys): the server's X25519
//! `public-key` (unpadded base64url, as `xray x25519` prints it) and the `short-id` the
//! server knows this client by (hex, at most 8 bytes). An empty `public-key` leaves
//! REALITY off, as in mihomo.

use base64::Engine as _;

use super::decode::{check, entries, is_section, unknown_key};
use super::proxies::Fields;
use super::{value, Diags, Reality};

const KEYS: &[&str] = &["public-key", "short-id", "support-x25519mlkem768"];

/// `reality-opts`, when the proxy has it and its `public-key` is set.
pub(super) fn reality_opts(f: &Fields<'_>, d: &mut Diags) -> Option<Reality> {
    let node = f.node("reality-opts")?;
    let path = f.path("reality-opts");
    if !is_section(node, &path, d) {
        return None;
    }
    let mut public_key = None;
    let mut short_id = [0u8; 8];
    for e in entries(node, &path, d) {
        let at = format!("{path}.{}", e.key);
        match e.key {
            "public-key" => {
                public_key = check(d, e.value, &at, value::text(e.value).and_then(|t| key(&t)));
            }
            "short-id" => {
                if let Some(id) = check(
                    d,
                    e.value,
                    &at,
                    value::text(e.value).and_then(|t| parse_short_id(&t)),
                ) {
                    short_id = id;
                }
            }
            "support-x25519mlkem768" => d.warn(
                e.key_pos,
                &at,
                "not used by tpgate: it offers X25519, which every REALITY server takes; ignored",
            ),
            _ => unknown_key(d, &e, &path, KEYS),
        }
    }
    let public_key = public_key??;
    Some(Reality {
        public_key,
        short_id,
    })
}

/// The server's public key; `None` for an empty one (REALITY off).
fn key(text: &str) -> Result<Option<[u8; 32]>, String> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    let bad = |why: &str| {
        format!(
            "expected the server's X25519 public key as 43 characters of unpadded base64url \
             (what `xray x25519` prints as the public key), found `{text}`: {why}"
        )
    };
    // Like Go's RawURLEncoding, which mihomo and Xray use: the last character's spare bits
    // need not be zero.
    let engine = base64::engine::GeneralPurpose::new(
        &base64::alphabet::URL_SAFE,
        base64::engine::GeneralPurposeConfig::new()
            .with_encode_padding(false)
            .with_decode_allow_trailing_bits(true)
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
    );
    let bytes = engine.decode(text).map_err(|e| bad(&e.to_string()))?;
    let key: [u8; 32] = bytes
        .try_into()
        .map_err(|b: Vec<u8>| bad(&format!("{} bytes, not 32", b.len())))?;
    Ok(Some(key))
}

/// `short-id`: up to 16 hex digits, an even number of them; the rest of the 8 bytes are
/// zero (as the server pads its list).
pub(crate) fn parse_short_id(text: &str) -> Result<[u8; 8], String> {
    let hex = text.trim();
    let bad = |why: &str| {
        format!("expected a REALITY short id (up to 16 hex digits), found `{hex}`: {why}")
    };
    if hex.len() > 16 {
        return Err(bad("longer than 8 bytes"));
    }
    if hex.len() % 2 == 1 {
        return Err(bad("an odd number of digits"));
    }
    let mut out = [0u8; 8];
    for (i, b) in out.iter_mut().take(hex.len() / 2).enumerate() {
        *b = hex
            .get(2 * i..2 * i + 2)
            .and_then(|h| u8::from_str_radix(h, 16).ok())
            .ok_or_else(|| bad("not hex"))?;
    }
    Ok(out)
}
