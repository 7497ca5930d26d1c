//! Shadowsocks `cipher` and `password`: which ciphers tpgate speaks, and the SIP022 rule
//! that a 2022 cipher's password is a base64 key of the cipher's length. Decoding the key
//! for use is the codec's job; this only checks it.

use super::Cipher;

const SUPPORTED: [Cipher; 6] = [
    Cipher::Aes128Gcm,
    Cipher::Aes256Gcm,
    Cipher::Chacha20IetfPoly1305,
    Cipher::Blake3Aes128Gcm2022,
    Cipher::Blake3Aes256Gcm2022,
    Cipher::Blake3Chacha20Poly1305_2022,
];

/// The cipher named `name` (case-insensitive), or `None` when tpgate does not support it.
pub(super) fn cipher(name: &str) -> Option<Cipher> {
    SUPPORTED
        .into_iter()
        .find(|c| c.name().eq_ignore_ascii_case(name.trim()))
}

/// The names of the supported ciphers, for messages.
pub(super) fn supported_names() -> String {
    SUPPORTED.map(Cipher::name).join(", ")
}

/// Checks a password against its cipher: any non-empty text for the AEAD ciphers; for the
/// 2022 ciphers base64 of exactly the key length, or several such keys joined by `:`
/// (mihomo's multi-user `iPSK:uPSK` form).
pub(super) fn check_password(cipher: Cipher, password: &str) -> Result<(), String> {
    if password.is_empty() {
        return Err("the password is empty".to_owned());
    }
    if !is_2022(cipher) {
        return Ok(());
    }
    let want = cipher.key_len();
    for part in password.split(':') {
        match base64_len(part) {
            Some(len) if len == want => {}
            Some(len) => {
                return Err(format!(
                    "{} needs a base64 key of {want} bytes, this one has {len} (make one with \
                     `openssl rand -base64 {want}`)",
                    cipher.name()
                ))
            }
            None => {
                return Err(format!(
                    "{} needs a base64 key of {want} bytes (make one with `openssl rand \
                     -base64 {want}`); `{part}` is not base64",
                    cipher.name()
                ))
            }
        }
    }
    Ok(())
}

const fn is_2022(cipher: Cipher) -> bool {
    matches!(
        cipher,
        Cipher::Blake3Aes128Gcm2022
            | Cipher::Blake3Aes256Gcm2022
            | Cipher::Blake3Chacha20Poly1305_2022
    )
}

/// The decoded length of standard, padded base64 (what mihomo's `StdEncoding` takes);
/// `None` when `text` is not that.
fn base64_len(text: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    if bytes.is_empty() || bytes.len() % 4 != 0 {
        return None;
    }
    let padding = bytes.iter().rev().take_while(|b| **b == b'=').count();
    if padding > 2 {
        return None;
    }
    let body = &bytes[..bytes.len() - padding];
    let alphabet = |b: &u8| b.is_ascii_alphanumeric() || *b == b'+' || *b == b'/';
    if !body.iter().all(alphabet) {
        return None;
    }
    Some(bytes.len() / 4 * 3 - padding)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(cipher("aes-128-gcm"), Some(Cipher::Aes128Gcm));
        assert_eq!(cipher("AES-256-GCM"), Some(Cipher::Aes256Gcm));
        assert_eq!(
            cipher("2022-blake3-chacha20-poly1305"),
            Some(Cipher::Blake3Chacha20Poly1305_2022)
        );
        for other in [
            "aes-256-cfb",
            "none",
            "rc4-md5",
            "2022-blake3-chacha8-poly1305",
            "",
        ] {
            assert_eq!(cipher(other), None, "{other}");
        }
        assert!(supported_names().starts_with("aes-128-gcm, aes-256-gcm"));
    }

    #[test]
    fn base64_lengths() {
        assert_eq!(base64_len("AAAA"), Some(3));
        assert_eq!(base64_len("AAA="), Some(2));
        assert_eq!(base64_len("AA=="), Some(1));
        assert_eq!(base64_len("A==="), None);
        assert_eq!(base64_len("AAA"), None);
        assert_eq!(base64_len("AA=A"), None);
        assert_eq!(base64_len("AA-_"), None);
        assert_eq!(base64_len(""), None);
    }

    #[test]
    fn passwords() {
        let k16 = "AAAAAAAAAAAAAAAAAAAAAA==";
        let k32 = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
        assert_eq!(check_password(Cipher::Aes128Gcm, "x"), Ok(()));
        assert!(check_password(Cipher::Aes128Gcm, "").is_err());
        assert_eq!(check_password(Cipher::Blake3Aes128Gcm2022, k16), Ok(()));
        assert_eq!(check_password(Cipher::Blake3Aes256Gcm2022, k32), Ok(()));
        assert_eq!(
            check_password(Cipher::Blake3Chacha20Poly1305_2022, k32),
            Ok(())
        );
        let multi = format!("{k16}:{k16}");
        assert_eq!(check_password(Cipher::Blake3Aes128Gcm2022, &multi), Ok(()));
        let e = check_password(Cipher::Blake3Aes256Gcm2022, k16).unwrap_err();
        assert!(e.contains("32 bytes, this one has 16"), "{e}");
        let e = check_password(Cipher::Blake3Aes128Gcm2022, "hunter2").unwrap_err();
        assert!(e.contains("not base64"), "{e}");
        let mixed = format!("{k16}:{k32}");
        assert!(check_password(Cipher::Blake3Aes128Gcm2022, &mixed).is_err());
        assert!(check_password(Cipher::Blake3Aes128Gcm2022, &format!("{k16}:")).is_err());
    }
}
