//! Locked, non-dumpable memory for card digits.
//!
//! Every [`Digits`](super::Digits) buffer lives in a slot of one process-wide region, mapped
//! once (at start-up by [`prepare`], else at the first digit): `mlock`ed so the kernel never
//! writes it to swap, `MADV_DONTDUMP` so no core file carries it, `MADV_WIPEONFORK` so no child
//! inherits it, and never moved or grown — a digit stays in the slot it was keyed into until
//! the slot is wiped, when its buffer drops. When every slot is taken, or the kernel refuses
//! the mapping, a buffer falls back to ordinary heap memory (still wiped on drop) and is
//! counted ([`stats`]), so capture never stops for it.
//!
//! Hand-written over libc rather than a crate: `memsec`/`region` lock and advise pages but
//! neither hands out fixed slots from one locked region, which is the point here; the unsafe
//! surface is one mapping and slot pointers into it.

use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::OnceLock;

use zeroize::Zeroize;

/// Bytes in one slot: room for the longest card field (19 digits).
pub const SLOT_BYTES: usize = 32;
/// Slots in the process-wide region (2 MiB): far more card fields than `relay.max_calls`
/// calls hold at once.
pub const SLOTS: usize = 65_536;

type SlotBytes = [u8; SLOT_BYTES];

/// The process-wide region, or `None` where the kernel refused to map it.
static REGION: OnceLock<Option<Region>> = OnceLock::new();
/// Buffers that went to the heap because the region was full or missing.
static HEAP_FALLBACKS: AtomicU64 = AtomicU64::new(0);

/// What the card memory is and holds now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CardMemoryStats {
    /// Size of the region in bytes (0: none could be mapped).
    pub bytes: usize,
    /// Whether the region is locked in RAM (`mlock`); false when `RLIMIT_MEMLOCK` is too low.
    pub locked: bool,
    /// Whether core dumps exclude it (`MADV_DONTDUMP`).
    pub excluded_from_dumps: bool,
    /// Slots holding a buffer now.
    pub in_use: usize,
    /// Buffers that had to use ordinary heap memory since start.
    pub heap_fallbacks: u64,
}

/// Maps (and locks) the region now, so a refusal shows at start-up rather than at the first
/// key; returns what was achieved.
pub fn prepare() -> CardMemoryStats {
    stats()
}

/// The region's state and use.
pub fn stats() -> CardMemoryStats {
    let heap_fallbacks = HEAP_FALLBACKS.load(Ordering::Relaxed);
    match region() {
        Some(r) => CardMemoryStats {
            bytes: r.slots * SLOT_BYTES,
            locked: r.locked,
            excluded_from_dumps: r.no_dump,
            in_use: r.in_use.load(Ordering::Relaxed),
            heap_fallbacks,
        },
        None => CardMemoryStats {
            bytes: 0,
            locked: false,
            excluded_from_dumps: false,
            in_use: 0,
            heap_fallbacks,
        },
    }
}

fn region() -> Option<&'static Region> {
    REGION.get_or_init(|| Region::map(SLOTS)).as_ref()
}

/// One mapping cut into fixed slots, handed out through an atomic bitmap (no lock).
struct Region {
    base: NonNull<SlotBytes>,
    slots: usize,
    /// One bit per slot: set while a buffer owns it.
    taken: Box<[AtomicU64]>,
    /// Where the last search found room (searches start there).
    hint: AtomicUsize,
    in_use: AtomicUsize,
    locked: bool,
    no_dump: bool,
}

// SAFETY: the mapping lives for the whole process and each slot is reached only through the
// one `DigitBytes` that owns it (claimed by an atomic compare-exchange on `taken`).
unsafe impl Send for Region {}
// SAFETY: as above; the shared parts are atomics.
unsafe impl Sync for Region {}

impl Region {
    /// Maps `slots` slots, then asks for locking and dump exclusion (each may be refused).
    fn map(slots: usize) -> Option<Region> {
        let len = slots * SLOT_BYTES;
        // SAFETY: an anonymous private mapping with no address hint; checked for failure.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return None;
        }
        // SAFETY: `base..base+len` is the mapping just made.
        let (locked, no_dump) = unsafe {
            let no_dump = advise_no_dump(base, len);
            (libc::mlock(base, len) == 0, no_dump)
        };
        Some(Region {
            base: NonNull::new(base.cast::<SlotBytes>())?,
            slots,
            taken: (0..slots.div_ceil(64)).map(|_| AtomicU64::new(0)).collect(),
            hint: AtomicUsize::new(0),
            in_use: AtomicUsize::new(0),
            locked,
            no_dump,
        })
    }

    /// Claims a free slot; `None` when all are taken.
    fn claim(&self) -> Option<usize> {
        let words = self.taken.len();
        let start = self.hint.load(Ordering::Relaxed);
        for k in 0..words {
            let w = (start + k) % words;
            let mut cur = self.taken[w].load(Ordering::Relaxed);
            loop {
                let free = !cur;
                let bit = free.trailing_zeros() as usize;
                if free == 0 || w * 64 + bit >= self.slots {
                    break;
                }
                // Acquire: the previous owner's wipe happens before our writes.
                match self.taken[w].compare_exchange_weak(
                    cur,
                    cur | 1 << bit,
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => {
                        self.hint.store(w, Ordering::Relaxed);
                        self.in_use.fetch_add(1, Ordering::Relaxed);
                        return Some(w * 64 + bit);
                    }
                    Err(now) => cur = now,
                }
            }
        }
        None
    }

    /// Gives a (wiped) slot back.
    fn release(&self, index: usize) {
        self.taken[index / 64].fetch_and(!(1u64 << (index % 64)), Ordering::Release);
        self.in_use.fetch_sub(1, Ordering::Relaxed);
    }

    fn slot_ptr(&self, index: usize) -> NonNull<SlotBytes> {
        // SAFETY: index < slots, so the pointer stays inside the mapping.
        unsafe { NonNull::new_unchecked(self.base.as_ptr().add(index)) }
    }
}

#[cfg(target_os = "linux")]
unsafe fn advise_no_dump(base: *mut libc::c_void, len: usize) -> bool {
    // Without children, WIPEONFORK is belt and braces; refused on kernels before 4.14.
    libc::madvise(base, len, libc::MADV_WIPEONFORK);
    libc::madvise(base, len, libc::MADV_DONTDUMP) == 0
}

#[cfg(not(target_os = "linux"))]
unsafe fn advise_no_dump(_base: *mut libc::c_void, _len: usize) -> bool {
    false
}

/// One buffer's bytes: a slot of the region, or heap memory when none was free. Wiped and
/// given back on drop.
pub(super) struct DigitBytes {
    ptr: NonNull<SlotBytes>,
    home: Home,
}

enum Home {
    Region(&'static Region, usize),
    Heap,
}

// SAFETY: a `DigitBytes` owns its bytes exclusively (see `Region`); shared references give only
// shared access to them.
unsafe impl Send for DigitBytes {}
// SAFETY: as above.
unsafe impl Sync for DigitBytes {}

impl DigitBytes {
    /// A zeroed slot from the process-wide region (or the heap).
    pub(super) fn new() -> DigitBytes {
        Self::from_region(region())
    }

    fn from_region(region: Option<&'static Region>) -> DigitBytes {
        if let Some((r, i)) = region.and_then(|r| r.claim().map(|i| (r, i))) {
            return DigitBytes {
                ptr: r.slot_ptr(i),
                home: Home::Region(r, i),
            };
        }
        HEAP_FALLBACKS.fetch_add(1, Ordering::Relaxed);
        DigitBytes {
            ptr: NonNull::from(Box::leak(Box::new([0u8; SLOT_BYTES]))),
            home: Home::Heap,
        }
    }

    /// The bytes.
    pub(super) fn bytes(&self) -> &SlotBytes {
        // SAFETY: the slot is ours alone and stays mapped (or allocated) until drop.
        unsafe { self.ptr.as_ref() }
    }

    /// The bytes, to write.
    pub(super) fn bytes_mut(&mut self) -> &mut SlotBytes {
        // SAFETY: as in `bytes`, and `&mut self` is the only way in.
        unsafe { self.ptr.as_mut() }
    }

    /// Where the bytes are (tests look the address up in /proc/self/smaps).
    #[cfg(test)]
    pub(super) fn address(&self) -> usize {
        self.ptr.as_ptr() as usize
    }
}

impl Drop for DigitBytes {
    fn drop(&mut self) {
        self.bytes_mut().zeroize();
        match self.home {
            Home::Region(r, i) => r.release(i),
            // SAFETY: made by Box::leak in `from_region` and not freed before.
            Home::Heap => drop(unsafe { Box::from_raw(self.ptr.as_ptr()) }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The VmFlags of the mapping holding `addr`, from /proc/self/smaps.
    fn vm_flags(addr: usize) -> String {
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let mut inside = false;
        for line in smaps.lines() {
            let first = line.split_whitespace().next().unwrap_or("");
            if let Some((a, b)) = first.split_once('-') {
                if let (Ok(a), Ok(b)) = (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16))
                {
                    inside = (a..b).contains(&addr);
                    continue;
                }
            }
            if inside {
                if let Some(flags) = line.strip_prefix("VmFlags:") {
                    return flags.trim().to_string();
                }
            }
        }
        panic!("no mapping holds {addr:#x}");
    }

    /// Whether this process may lock the whole region: root, or a memlock limit that fits it.
    fn may_lock() -> bool {
        let mut l = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes the rlimit we pass; geteuid takes nothing.
        unsafe {
            libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut l);
            libc::geteuid() == 0 || l.rlim_cur >= (SLOTS * SLOT_BYTES) as libc::rlim_t
        }
    }

    #[test]
    fn digits_live_in_memory_excluded_from_dumps_and_locked_where_allowed() {
        let mut d = super::super::Digits::new();
        assert!(d.push(4));
        let addr = d.storage_address().expect("a pushed digit has storage");
        let flags = vm_flags(addr);
        let s = stats();
        assert!(s.excluded_from_dumps, "{s:?}");
        assert!(
            flags.split(' ').any(|f| f == "dd"),
            "no dd in VmFlags: {flags}"
        );
        if may_lock() {
            assert!(s.locked, "{s:?}");
            assert!(flags.split(' ').any(|f| f == "lo"), "not locked: {flags}");
        } else {
            eprintln!("SKIPPED the lock check: RLIMIT_MEMLOCK is below the region's size here");
        }
        assert!(s.in_use >= 1);
    }

    #[test]
    fn a_dropped_buffer_is_wiped_in_place_and_its_slot_reused() {
        let region: &'static Region = Box::leak(Box::new(Region::map(64).unwrap()));
        let mut slot = DigitBytes::from_region(Some(region));
        slot.bytes_mut()[..4].copy_from_slice(&[4, 2, 4, 2]);
        let ptr = slot.ptr;
        drop(slot);
        // The region is never unmapped, so the old slot can still be read.
        // SAFETY: the pointer is inside the leaked region's mapping.
        assert_eq!(unsafe { ptr.as_ref() }, &[0u8; SLOT_BYTES]);
        assert_eq!(region.in_use.load(Ordering::Relaxed), 0);
        let again = DigitBytes::from_region(Some(region));
        assert_eq!(again.ptr, ptr, "the freed slot is handed out again");
    }

    #[test]
    fn a_full_region_falls_back_to_the_heap_and_counts_it() {
        let region: &'static Region = Box::leak(Box::new(Region::map(100).unwrap()));
        let held: Vec<DigitBytes> = (0..100)
            .map(|_| DigitBytes::from_region(Some(region)))
            .collect();
        let mut addrs: Vec<usize> = held.iter().map(|s| s.ptr.as_ptr() as usize).collect();
        addrs.sort_unstable();
        addrs.dedup();
        assert_eq!(addrs.len(), 100, "each slot handed out once");
        let before = HEAP_FALLBACKS.load(Ordering::Relaxed);
        let mut extra = DigitBytes::from_region(Some(region));
        assert!(matches!(extra.home, Home::Heap));
        assert!(HEAP_FALLBACKS.load(Ordering::Relaxed) > before);
        extra.bytes_mut()[0] = 7;
        assert_eq!(extra.bytes()[0], 7);
        drop(held);
        assert_eq!(region.in_use.load(Ordering::Relaxed), 0);
        assert!(matches!(
            DigitBytes::from_region(Some(region)).home,
            Home::Region(..)
        ));
    }

    #[test]
    fn slots_claimed_from_many_threads_are_never_shared() {
        let region: &'static Region = Box::leak(Box::new(Region::map(4096).unwrap()));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                std::thread::spawn(move || {
                    (0..1000)
                        .map(|_| DigitBytes::from_region(Some(region)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let slots: Vec<DigitBytes> = threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect();
        let mut addrs: Vec<usize> = slots.iter().map(|s| s.ptr.as_ptr() as usize).collect();
        addrs.sort_unstable();
        addrs.dedup();
        assert_eq!(addrs.len(), 4000);
        assert_eq!(region.in_use.load(Ordering::Relaxed), 4000);
    }
}
