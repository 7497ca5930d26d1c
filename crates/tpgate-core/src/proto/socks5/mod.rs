//! SOCKS5 client messages (RFC 1928) with username/password authentication (RFC 1929), and
//! the header of SOCKS5 UDP datagrams. A dial goes: `encode_greeting` ->
//! `parse_method_selection` -> (if `Method::UsernamePassword`) `encode_auth_request` ->
//! `parse_auth_reply` -> `encode_request` -> `parse_reply`. No server side, no GSSAPI, no BIND,
//! no UDP fragment reassembly.

use thiserror::Error;

use super::addr::{self, AddrEncodeError, AddrParseError};
use crate::net::Destination;

/// Protocol version byte of every SOCKS5 message but the RFC 1929 sub-negotiation.
pub const VERSION: u8 = 0x05;
/// Version byte of the RFC 1929 username/password sub-negotiation.
pub const AUTH_VERSION: u8 = 0x01;
const METHOD_NO_AUTH: u8 = 0x00;
const METHOD_PASSWORD: u8 = 0x02;
const METHOD_NONE_ACCEPTABLE: u8 = 0xFF;

/// The authentication method the server chose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// No authentication: send the request next.
    NoAuth,
    /// RFC 1929: send `encode_auth_request` next.
    UsernamePassword,
}

/// What the client asks the server to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Open a TCP connection to the destination.
    Connect,
    /// Relay UDP datagrams; the destination is where the client will send from (often
    /// `0.0.0.0:0`), and the reply carries the relay address to send datagrams to.
    UdpAssociate,
}

impl Command {
    const fn code(self) -> u8 {
        match self {
            Self::Connect => 0x01,
            Self::UdpAssociate => 0x03,
        }
    }
}

/// Why a SOCKS5 exchange cannot go on.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Socks5Error {
    /// The server answered with a version byte other than the one expected.
    #[error("server speaks SOCKS version {0:#04x}, not 5")]
    BadVersion(u8),
    /// The server accepted none of the offered authentication methods.
    #[error("no acceptable authentication method")]
    NoAcceptableMethod,
    /// The server chose a method the client did not offer.
    #[error("server chose authentication method {0:#04x}, which was not offered")]
    MethodNotOffered(u8),
    /// A username or password too long for its one-byte length.
    #[error("SOCKS5 {field} is {len} bytes long, more than 255")]
    CredentialTooLong {
        /// `"username"` or `"password"`.
        field: &'static str,
        /// Its length in bytes.
        len: usize,
    },
    /// The username/password reply had a version byte other than 1 (or 5, which some
    /// servers send).
    #[error("bad authentication reply version {0:#04x}")]
    BadAuthVersion(u8),
    /// The server rejected the username or password (RFC 1929 status != 0).
    #[error("SOCKS5 authentication failed (status {0:#04x})")]
    AuthFailed(u8),
    /// REP 0x01.
    #[error("SOCKS5 server: general failure")]
    GeneralFailure,
    /// REP 0x02.
    #[error("SOCKS5 server: connection not allowed by ruleset")]
    NotAllowed,
    /// REP 0x03.
    #[error("SOCKS5 server: network unreachable")]
    NetworkUnreachable,
    /// REP 0x04.
    #[error("SOCKS5 server: host unreachable")]
    HostUnreachable,
    /// REP 0x05.
    #[error("SOCKS5 server: connection refused")]
    ConnectionRefused,
    /// REP 0x06.
    #[error("SOCKS5 server: TTL expired")]
    TtlExpired,
    /// REP 0x07.
    #[error("SOCKS5 server: command not supported")]
    CommandNotSupported,
    /// REP 0x08.
    #[error("SOCKS5 server: address type not supported")]
    AddressTypeNotSupported,
    /// A REP code RFC 1928 does not define.
    #[error("SOCKS5 server: unknown reply code {0:#04x}")]
    UnknownReply(u8),
    /// A UDP datagram with FRAG != 0; fragments are not reassembled.
    #[error("fragmented SOCKS5 UDP datagram (FRAG {0}) is not supported")]
    Fragmented(u8),
    /// A UDP datagram that ends before its header does.
    #[error("SOCKS5 UDP datagram is shorter than its header")]
    TruncatedDatagram,
    /// The destination cannot be written as a SOCKS address.
    #[error("cannot encode destination")]
    Encode(#[from] AddrEncodeError),
    /// The address in a reply or datagram is malformed.
    #[error("bad address")]
    Addr(#[from] AddrParseError),
}

/// Appends the greeting: offers no authentication, plus username/password when
/// `offer_password` (the caller has credentials), so a server that needs none still accepts.
pub fn encode_greeting(offer_password: bool, out: &mut Vec<u8>) {
    if offer_password {
        out.extend_from_slice(&[VERSION, 2, METHOD_NO_AUTH, METHOD_PASSWORD]);
    } else {
        out.extend_from_slice(&[VERSION, 1, METHOD_NO_AUTH]);
    }
}

/// Reads the server's method selection (2 bytes). `password_offered` must match what the
/// greeting offered, so a server picking an unoffered method is caught here.
pub fn parse_method_selection(
    buf: &[u8],
    password_offered: bool,
) -> Result<Option<(Method, usize)>, Socks5Error> {
    let &[version, method, ..] = buf else {
        return Ok(None);
    };
    if version != VERSION {
        return Err(Socks5Error::BadVersion(version));
    }
    let method = match method {
        METHOD_NO_AUTH => Method::NoAuth,
        METHOD_PASSWORD if password_offered => Method::UsernamePassword,
        METHOD_NONE_ACCEPTABLE => return Err(Socks5Error::NoAcceptableMethod),
        other => return Err(Socks5Error::MethodNotOffered(other)),
    };
    Ok(Some((method, 2)))
}

/// Appends the RFC 1929 username/password request. Each must fit its one-byte length; an
/// empty one is sent as is (RFC 1929 asks for at least 1 byte, but some servers use it).
pub fn encode_auth_request(
    username: &str,
    password: &str,
    out: &mut Vec<u8>,
) -> Result<(), Socks5Error> {
    let field_len = |field, value: &str| {
        u8::try_from(value.len()).map_err(|_| Socks5Error::CredentialTooLong {
            field,
            len: value.len(),
        })
    };
    let ulen = field_len("username", username)?;
    let plen = field_len("password", password)?;
    out.extend_from_slice(&[AUTH_VERSION, ulen]);
    out.extend_from_slice(username.as_bytes());
    out.push(plen);
    out.extend_from_slice(password.as_bytes());
    Ok(())
}

/// Reads the RFC 1929 reply (2 bytes): `Ok(Some(2))` when the credentials were accepted.
pub fn parse_auth_reply(buf: &[u8]) -> Result<Option<usize>, Socks5Error> {
    let &[version, status, ..] = buf else {
        return Ok(None);
    };
    if version != AUTH_VERSION && version != VERSION {
        return Err(Socks5Error::BadAuthVersion(version));
    }
    if status != 0 {
        return Err(Socks5Error::AuthFailed(status));
    }
    Ok(Some(2))
}

/// Appends a request for `cmd` to `dst`. The buffer is untouched on error.
pub fn encode_request(
    cmd: Command,
    dst: &Destination,
    out: &mut Vec<u8>,
) -> Result<(), Socks5Error> {
    let start = out.len();
    out.extend_from_slice(&[VERSION, cmd.code(), 0x00]);
    addr::encode(dst, out).inspect_err(|_| out.truncate(start))?;
    Ok(())
}

/// Reads the server's reply to a request. On success it yields the bound address (for UDP
/// ASSOCIATE, where to send datagrams); a failure code is an error as soon as it is read.
pub fn parse_reply(buf: &[u8]) -> Result<Option<(Destination, usize)>, Socks5Error> {
    let &[version, rep, ..] = buf else {
        return Ok(None);
    };
    if version != VERSION {
        return Err(Socks5Error::BadVersion(version));
    }
    match rep {
        0x00 => {}
        0x01 => return Err(Socks5Error::GeneralFailure),
        0x02 => return Err(Socks5Error::NotAllowed),
        0x03 => return Err(Socks5Error::NetworkUnreachable),
        0x04 => return Err(Socks5Error::HostUnreachable),
        0x05 => return Err(Socks5Error::ConnectionRefused),
        0x06 => return Err(Socks5Error::TtlExpired),
        0x07 => return Err(Socks5Error::CommandNotSupported),
        0x08 => return Err(Socks5Error::AddressTypeNotSupported),
        other => return Err(Socks5Error::UnknownReply(other)),
    }
    // RSV (buf[2]) is not checked: servers in the wild send junk there.
    let Some(rest) = buf.get(3..) else {
        return Ok(None);
    };
    Ok(addr::parse(rest)?.map(|(bound, used)| (bound, 3 + used)))
}

/// Appends a whole UDP datagram for the relay: `RSV(2)=0 | FRAG=0 | address | payload`.
/// The buffer is untouched on error.
pub fn encode_udp_datagram(
    dst: &Destination,
    payload: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), Socks5Error> {
    let start = out.len();
    out.extend_from_slice(&[0, 0, 0]);
    addr::encode(dst, out).inspect_err(|_| out.truncate(start))?;
    out.extend_from_slice(payload);
    Ok(())
}

/// Reads the header of a whole UDP datagram from the relay: the peer address and the offset
/// of its payload. A datagram arrives whole, so a short one is an error, not `None`. RSV is
/// not checked, as in replies.
pub fn parse_udp_datagram(buf: &[u8]) -> Result<(Destination, usize), Socks5Error> {
    let &[_, _, frag, ref rest @ ..] = buf else {
        return Err(Socks5Error::TruncatedDatagram);
    };
    if frag != 0 {
        return Err(Socks5Error::Fragmented(frag));
    }
    match addr::parse(rest)? {
        Some((dst, used)) => Ok((dst, 3 + used)),
        None => Err(Socks5Error::TruncatedDatagram),
    }
}

#[cfg(test)]
mod tests;
