//! A long-lived libnftables context. Tables created through it with `flags owner` belong to
//! its netlink socket: the kernel removes them when the context is freed or the process
//! dies, however it dies. The `nft` binary in a subprocess cannot do this (its socket closes
//! when it exits), which is why tpgate links libnftables.

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::ptr::NonNull;

#[link(name = "nftables")]
extern "C" {
    fn nft_ctx_new(flags: u32) -> *mut c_void;
    fn nft_ctx_free(ctx: *mut c_void);
    fn nft_ctx_buffer_output(ctx: *mut c_void) -> c_int;
    fn nft_ctx_get_output_buffer(ctx: *mut c_void) -> *const c_char;
    fn nft_ctx_buffer_error(ctx: *mut c_void) -> c_int;
    fn nft_ctx_get_error_buffer(ctx: *mut c_void) -> *const c_char;
    fn nft_run_cmd_from_buffer(ctx: *mut c_void, buf: *const c_char) -> c_int;
}

#[derive(Debug, thiserror::Error)]
pub enum NftError {
    /// libnftables could not allocate a context.
    #[error("libnftables: cannot create a context")]
    Context,
    /// The script contained a NUL byte.
    #[error("nftables script contains a NUL byte")]
    Nul,
    /// The kernel said EPERM: an `owner` table of another live process, or no
    /// CAP_NET_ADMIN. The text (here and below) is nft's own message.
    #[error("nftables: {0}")]
    NotPermitted(String),
    /// The kernel said EBUSY: the object is in use.
    #[error("nftables: {0}")]
    Busy(String),
    /// The kernel said EEXIST: the object already exists.
    #[error("nftables: {0}")]
    Exists(String),
    /// The kernel said ENOENT: no such table, chain or set.
    #[error("nftables: {0}")]
    NotFound(String),
    /// Any other refusal, by the kernel or by nft's parser.
    #[error("nftables: {0}")]
    Other(String),
}

impl NftError {
    /// Sorts nft's error message by the errno it reports. libnftables hands back text only;
    /// the kernel's refusals end in `strerror(errno)`, so this is the one place that reads
    /// it, and callers match on the variant.
    fn refused(message: &str) -> Self {
        let message = message.trim().to_string();
        let says = |strerror: &str| message.contains(strerror);
        if says("Operation not permitted") {
            Self::NotPermitted(message)
        } else if says("Device or resource busy") {
            Self::Busy(message)
        } else if says("File exists") {
            Self::Exists(message)
        } else if says("No such file or directory") {
            Self::NotFound(message)
        } else {
            Self::Other(message)
        }
    }
}

/// An nftables context whose netlink socket lives as long as this value.
#[derive(Debug)]
pub struct Nft {
    ctx: NonNull<c_void>,
}

// SAFETY: the context is only used through `&mut self`, so never from two threads at once;
// libnftables keeps no thread-local state tied to the creating thread.
unsafe impl Send for Nft {}

impl Nft {
    pub fn new() -> Result<Self, NftError> {
        // SAFETY: nft_ctx_new has no preconditions; NFT_CTX_DEFAULT is 0.
        let raw = unsafe { nft_ctx_new(0) };
        let ctx = NonNull::new(raw).ok_or(NftError::Context)?;
        // SAFETY: ctx is a valid, live context; these only switch output to memory buffers.
        unsafe {
            nft_ctx_buffer_output(ctx.as_ptr());
            nft_ctx_buffer_error(ctx.as_ptr());
        }
        Ok(Self { ctx })
    }

    /// Runs a script (one transaction) and returns what nft printed.
    pub fn run(&mut self, script: &str) -> Result<String, NftError> {
        let c = CString::new(script).map_err(|_| NftError::Nul)?;
        // SAFETY: ctx is live and exclusively borrowed; c is a valid NUL-terminated string
        // that outlives the call.
        let rc = unsafe { nft_run_cmd_from_buffer(self.ctx.as_ptr(), c.as_ptr()) };
        let out = self.take(nft_ctx_get_output_buffer);
        let err = self.take(nft_ctx_get_error_buffer);
        if rc == 0 {
            Ok(out)
        } else {
            Err(NftError::refused(&err))
        }
    }

    fn take(&mut self, get: unsafe extern "C" fn(*mut c_void) -> *const c_char) -> String {
        // SAFETY: ctx is live; libnftables returns a NUL-terminated buffer it owns (or
        // NULL), valid until the next call on this context; it is copied out at once.
        unsafe {
            let p = get(self.ctx.as_ptr());
            if p.is_null() {
                String::new()
            } else {
                CStr::from_ptr(p).to_string_lossy().into_owned()
            }
        }
    }
}

impl Drop for Nft {
    fn drop(&mut self) {
        // SAFETY: ctx came from nft_ctx_new and is freed exactly once, here.
        unsafe { nft_ctx_free(self.ctx.as_ptr()) }
    }
}

#[cfg(test)]
mod tests {
    use super::NftError;

    #[test]
    fn refusals_are_sorted_by_the_errno_nft_reports() {
        let busy = "Error: Could not process rule: Device or resource busy\ndelete table inet tpgate\n^^^^^^^^^^^^^^^^^^^^^^^^^^\n";
        assert!(
            matches!(NftError::refused(busy), NftError::Busy(m) if m.starts_with("Error:") && m.ends_with('^'))
        );
        let eperm =
            "Error: Could not process rule: Operation not permitted\ndelete table inet tpgate";
        assert!(matches!(
            NftError::refused(eperm),
            NftError::NotPermitted(_)
        ));
        let missing =
            "Error: No such file or directory\nlist table inet tpgate\n                ^^^^^^";
        assert!(matches!(NftError::refused(missing), NftError::NotFound(_)));
        let exists = "Error: Could not process rule: File exists\nadd table inet x";
        assert!(matches!(NftError::refused(exists), NftError::Exists(_)));
        let syntax = "Error: syntax error, unexpected newline\nadd tabel inet x\n^^^^^";
        assert!(matches!(NftError::refused(syntax), NftError::Other(_)));
        assert_eq!(
            NftError::refused(" Error: x: File exists \n").to_string(),
            "nftables: Error: x: File exists"
        );
    }
}
