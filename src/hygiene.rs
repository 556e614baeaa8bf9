//! Process hygiene for card data: no core dumps, no debugger reads of a running gateway.
//!
//! Card digits live in memory between the keypad and the PSP call; a core file or a `ptrace`
//! of the process would carry them to disk or to another user. `serve` calls
//! [`forbid_core_dumps`] before anything else.

/// Sets the core-file limit to 0 (soft and hard) and marks the process not dumpable, which
/// also stops other processes of the same user from attaching a debugger or reading its
/// memory through /proc.
pub fn forbid_core_dumps() -> std::io::Result<()> {
    let none = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: setrlimit reads the rlimit we pass; prctl(PR_SET_DUMPABLE) takes plain integers.
    unsafe {
        if libc::setrlimit(libc::RLIMIT_CORE, &none) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        if libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Whether this process may leave a core file (false after [`forbid_core_dumps`]).
pub fn core_dumps_possible() -> bool {
    let mut l = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the rlimit we pass; prctl(PR_GET_DUMPABLE) takes no pointer.
    unsafe {
        libc::getrlimit(libc::RLIMIT_CORE, &mut l);
        l.rlim_cur > 0 && libc::prctl(libc::PR_GET_DUMPABLE, 0, 0, 0, 0) != 0
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn after_forbidding_there_is_no_core_and_the_process_is_not_dumpable() {
        // (This test binary only: it may leave no core file either.)
        super::forbid_core_dumps().unwrap();
        assert!(!super::core_dumps_possible());
        // SAFETY: PR_GET_DUMPABLE takes no pointer.
        assert_eq!(unsafe { libc::prctl(libc::PR_GET_DUMPABLE, 0, 0, 0, 0) }, 0);
        let mut l = libc::rlimit {
            rlim_cur: 1,
            rlim_max: 1,
        };
        // SAFETY: getrlimit writes the rlimit we pass.
        unsafe { libc::getrlimit(libc::RLIMIT_CORE, &mut l) };
        assert_eq!((l.rlim_cur, l.rlim_max), (0, 0));
    }
}
