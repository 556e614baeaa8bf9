//! Relay port allocation: even RTP ports (RTCP on the odd port above) from a configured range.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};

/// Sockets bound for one leg.
pub struct LegSockets {
    /// RTP (and RTCP with rtcp-mux).
    pub rtp: std::net::UdpSocket,
    /// RTCP, unless rtcp-mux.
    pub rtcp: Option<std::net::UdpSocket>,
}

/// Hands out port pairs from `min..=max`, skipping ports in use by anyone.
pub struct PortAllocator {
    min: u16,
    max: u16,
    next: u16,
    taken: HashSet<(IpAddr, u16)>,
}

impl PortAllocator {
    /// An allocator for the range (`min` rounded up to even).
    pub fn new(min: u16, max: u16) -> Self {
        let min = min + (min & 1);
        PortAllocator {
            min,
            max,
            next: min,
            taken: HashSet::new(),
        }
    }

    /// Binds an RTP port (and RTCP port + 1 unless `mux`) on `ip`; fails when every pair in
    /// the range is taken, or the process may open no more files.
    pub fn bind(&mut self, ip: IpAddr, mux: bool) -> Result<LegSockets, &'static str> {
        let pairs = (self.max - self.min).div_ceil(2);
        for _ in 0..pairs {
            let port = self.next;
            self.next = if self.next + 2 > self.max - 1 {
                self.min
            } else {
                self.next + 2
            };
            if self.taken.contains(&(ip, port)) {
                continue;
            }
            let rtp = match std::net::UdpSocket::bind(SocketAddr::new(ip, port)) {
                Ok(s) => s,
                Err(e) if out_of_files(&e) => return Err(OUT_OF_FILES),
                Err(_) => continue,
            };
            let rtcp = if mux {
                None
            } else {
                match std::net::UdpSocket::bind(SocketAddr::new(ip, port + 1)) {
                    Ok(s) => Some(s),
                    Err(e) if out_of_files(&e) => return Err(OUT_OF_FILES),
                    Err(_) => continue,
                }
            };
            self.taken.insert((ip, port));
            enlarge_receive_buffer(&rtp);
            return Ok(LegSockets { rtp, rtcp });
        }
        Err("relay ports exhausted")
    }

    /// Returns a leg's port pair to the pool.
    pub fn release(&mut self, ip: IpAddr, port: u16) {
        self.taken.remove(&(ip, port));
    }

    /// Pairs currently handed out.
    pub fn in_use(&self) -> usize {
        self.taken.len()
    }

    /// Pairs the range holds on one address.
    pub fn capacity(&self) -> usize {
        usize::from(self.max.saturating_sub(self.min).div_ceil(2))
    }

    /// Pairs handed out on the busiest address: the range runs out there first.
    pub fn in_use_busiest(&self) -> usize {
        let mut per_ip: Vec<(IpAddr, usize)> = Vec::new();
        for (ip, _) in &self.taken {
            match per_ip.iter_mut().find(|(i, _)| i == ip) {
                Some((_, n)) => *n += 1,
                None => per_ip.push((*ip, 1)),
            }
        }
        per_ip.into_iter().map(|(_, n)| n).max().unwrap_or(0)
    }
}

const OUT_OF_FILES: &str =
    "open-file limit reached: raise it (ulimit -n, or LimitNOFILE= under systemd)";

fn out_of_files(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
}

/// Raises this process's soft open-file limit to its hard limit (each call holds up to four
/// sockets, and shells often start services with a soft limit of 1,024). Returns the limit.
#[allow(unsafe_code)] // a libc call on a value it fills, nothing kept
pub fn raise_open_file_limit() -> std::io::Result<u64> {
    let mut l = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write the rlimit we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        if l.rlim_cur < l.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: l.rlim_max,
                rlim_max: l.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                l = raised;
            }
        }
    }
    #[allow(clippy::unnecessary_cast)] // rlim_t is not u64 on every target
    Ok(l.rlim_cur as u64)
}

/// The process's open-file limit (soft).
#[allow(unsafe_code)] // a libc call on a value it fills, nothing kept
pub fn open_file_limit() -> std::io::Result<u64> {
    let mut l = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the rlimit we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    #[allow(clippy::unnecessary_cast)] // rlim_t is not u64 on every target
    Ok(l.rlim_cur as u64)
}

/// Asks for a 1 MiB receive buffer, so a burst survives a moment when the call's task is not
/// scheduled. The kernel may grant less (net.core.rmem_max); that is fine.
#[allow(unsafe_code)] // a libc call on a value it fills, nothing kept
fn enlarge_receive_buffer(s: &std::net::UdpSocket) {
    use std::os::fd::AsRawFd;
    let size: libc::c_int = 1 << 20;
    // SAFETY: setsockopt with a valid fd and a pointer to a c_int of the stated size.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            &size as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}
