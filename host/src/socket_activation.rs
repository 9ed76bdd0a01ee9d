//! Listening sockets handed to `sluice serve` by whoever started it, as systemd's socket
//! activation does (`sd_listen_fds(3)`): `LISTEN_PID` names the process they are for,
//! `LISTEN_FDS` how many there are from descriptor 3 on, and `LISTEN_FDNAMES` their names,
//! separated by colons (`http`, `smtp_in`).
//!
//! Why: a supervisor that holds the sockets can restart Sluice without refusing a single
//! connection (they queue in the kernel meanwhile), Sluice can listen on privileged ports
//! without privileges, and a test harness can bind port 0, keep the socket, and hand it
//! over, so no other process can take the port between choosing and binding it. A socket
//! named in the environment overrides the pipeline's address for that listener.
//!
//! Variables meant for another process (a `LISTEN_PID` that is not ours) are ignored, as
//! `sd_listen_fds` does. The descriptors taken are marked close-on-exec, so the compile
//! workers Sluice starts do not inherit them. A leaf: it imports nothing from the crate.

use std::collections::HashMap;
use std::net::TcpListener;
use std::os::fd::{FromRawFd, RawFd};

/// The first descriptor passed (`SD_LISTEN_FDS_START`).
const FIRST_FD: RawFd = 3;

/// At most this many descriptors are taken: Sluice has two listeners, and a huge
/// `LISTEN_FDS` must not make it adopt descriptors it never got.
const MAX_FDS: usize = 16;

/// What is wrong with the sockets handed over; each names the variable or descriptor.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ActivationError {
    #[error("LISTEN_FDS={0:?} is not a number of descriptors from 1 to {MAX_FDS}")]
    BadCount(String),
    #[error("LISTEN_FDNAMES names {names} descriptors but LISTEN_FDS is {fds}")]
    NamesDoNotMatch { names: usize, fds: usize },
    #[error("descriptor {fd} (LISTEN_FDNAMES {name:?}) is not a listening TCP socket")]
    NotAListener { fd: RawFd, name: String },
    #[error("LISTEN_FDNAMES names {0:?} twice")]
    DuplicateName(String),
    #[error("descriptor {fd} is named {name:?}; Sluice listens as \"http\" and \"smtp_in\"")]
    UnknownName { fd: RawFd, name: String },
}

/// The names Sluice's listeners answer to.
pub const NAMES: [&str; 2] = ["http", "smtp_in"];

/// The sockets handed over, by name; empty when none were.
#[derive(Debug, Default)]
pub struct Inherited {
    by_name: HashMap<String, TcpListener>,
}

impl Inherited {
    /// Takes the sockets the environment says were passed to this process.
    pub fn from_env() -> Result<Inherited, ActivationError> {
        let var = |name: &str| std::env::var(name).ok();
        Inherited::from_vars(
            std::process::id(),
            var("LISTEN_PID").as_deref(),
            var("LISTEN_FDS").as_deref(),
            var("LISTEN_FDNAMES").as_deref(),
        )
    }

    fn from_vars(
        pid: u32,
        listen_pid: Option<&str>,
        listen_fds: Option<&str>,
        names: Option<&str>,
    ) -> Result<Inherited, ActivationError> {
        let (Some(listen_pid), Some(listen_fds)) = (listen_pid, listen_fds) else {
            return Ok(Inherited::default());
        };
        if listen_pid.trim().parse::<u32>().ok() != Some(pid) {
            return Ok(Inherited::default());
        }
        let count = listen_fds
            .trim()
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_FDS).contains(n))
            .ok_or_else(|| ActivationError::BadCount(listen_fds.chars().take(32).collect()))?;
        // Unnamed sockets are taken in the order of NAMES.
        let names: Vec<String> = match names {
            Some(n) => n.split(':').map(str::to_owned).collect(),
            None => NAMES.iter().take(count).map(|s| (*s).to_owned()).collect(),
        };
        if names.len() != count {
            return Err(ActivationError::NamesDoNotMatch {
                names: names.len(),
                fds: count,
            });
        }
        let mut by_name = HashMap::new();
        for (i, name) in names.into_iter().enumerate() {
            let fd = FIRST_FD + i as RawFd;
            if !NAMES.contains(&name.as_str()) {
                return Err(ActivationError::UnknownName { fd, name });
            }
            if !is_listening_tcp(fd) {
                return Err(ActivationError::NotAListener { fd, name });
            }
            if by_name.contains_key(&name) {
                return Err(ActivationError::DuplicateName(name));
            }
            // SAFETY: `fd` was handed to this process (LISTEN_PID is ours), is open and is
            // a listening TCP socket (checked above), and is adopted once: names are unique
            // and each index is visited once.
            let listener = unsafe { TcpListener::from_raw_fd(fd) };
            set_cloexec(fd);
            by_name.insert(name, listener);
        }
        Ok(Inherited { by_name })
    }

    /// The socket handed over under `name`, if any (each is given out once).
    pub fn take(&mut self, name: &str) -> Option<TcpListener> {
        self.by_name.remove(name)
    }

    /// Whether any socket was handed over.
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }
}

/// Whether `fd` is an open socket that listens, of the TCP kind.
fn is_listening_tcp(fd: RawFd) -> bool {
    let get = |level, option| {
        let mut value: libc::c_int = 0;
        let mut len = size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: getsockopt writes at most `len` bytes into `value`; a bad descriptor
        // is an error return, not undefined behaviour.
        let rc = unsafe {
            libc::getsockopt(
                fd,
                level,
                option,
                (&mut value as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        (rc == 0).then_some(value)
    };
    get(libc::SOL_SOCKET, libc::SO_ACCEPTCONN) == Some(1)
        && get(libc::SOL_SOCKET, libc::SO_TYPE) == Some(libc::SOCK_STREAM)
}

fn set_cloexec(fd: RawFd) {
    // SAFETY: fcntl on a descriptor this process owns; failure leaves it as it was.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFD);
        if flags >= 0 {
            libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_is_taken_without_the_variables_or_for_another_process() {
        let me = std::process::id();
        for (pid, fds) in [
            (None, None),
            (Some(me.to_string()), None),
            (None, Some("1".to_owned())),
            (Some((me + 1).to_string()), Some("1".to_owned())),
            (Some("not a pid".to_owned()), Some("1".to_owned())),
        ] {
            let got = Inherited::from_vars(me, pid.as_deref(), fds.as_deref(), None).unwrap();
            assert!(got.is_empty(), "{pid:?} {fds:?}");
        }
    }

    #[test]
    fn a_bad_count_or_names_are_refused_with_the_reason() {
        let me = std::process::id();
        let pid = me.to_string();
        let err = |fds: &str, names: Option<&str>| {
            Inherited::from_vars(me, Some(&pid), Some(fds), names).unwrap_err()
        };
        assert_eq!(err("0", None), ActivationError::BadCount("0".into()));
        assert_eq!(err("999", None), ActivationError::BadCount("999".into()));
        assert_eq!(
            err("2", Some("http")),
            ActivationError::NamesDoNotMatch { names: 1, fds: 2 }
        );
        assert_eq!(
            err("1", Some("ftp")),
            ActivationError::UnknownName {
                fd: 3,
                name: "ftp".into()
            }
        );
    }
}
