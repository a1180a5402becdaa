//! Banned sources dropped in the kernel: a classic BPF socket filter on the
//! gateway's UDP sockets, rebuilt whenever the set of such sources changes.
//!
//! The ban list ([`crate::guard`]) drops a banned source's packets after
//! reading them: one system call per batch, one hash lookup per packet. A
//! source that keeps sending after its ban (a flood) is moved here once its
//! ban has dropped `bans.kernel_drop_after` packets. From then on the kernel
//! discards its datagrams before they are queued: the gateway never wakes for
//! them, and a good phone's REGISTER does not wait behind them in the queue.
//! The kernel counts them in the socket's drop counter, which the gateway
//! reads into `udp_kernel_drops`.
//!
//! The filter is a binary search over the sorted source keys (an IPv4
//! address, or the banned IPv6 prefix's words), so a good packet runs about
//! two instructions per level: ~20 for 500 bans. It is unprivileged
//! (`SO_ATTACH_FILTER`), and replacing it is atomic. The kernel caps a
//! program at [`libc::BPF_MAXINSNS`] instructions; the sources that do not fit
//! stay with the ban list, which still drops them.

use std::net::{IpAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use libc::sock_filter;

use crate::guard::Guard;
use crate::stats::Stats;

/// Sources a filter holds at most, of each address family. The program of
/// 512 IPv6 /64 prefixes is ~3,100 instructions, under the kernel's 4,096.
pub const MAX_SOURCES: usize = 512;

/// How often the filter's thread looks at the stop flag and refreshes the
/// kernel drop counter, when nothing wakes it sooner.
const POLL: Duration = Duration::from_millis(200);

/// Keys compared in one leaf of the search tree.
const LEAF: usize = 4;

const ACCEPT: u32 = u32::MAX;
const DROP: u32 = 0;

/// Where a source's words are, and which of their bits a key compares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Layout {
    /// The IP version the filter expects (4 or 6); other packets pass.
    version: u8,
    /// Offset of the source address in the IP header.
    source_offset: u32,
    /// Masks of the compared words (a prefix may end inside one).
    masks: [u32; 4],
    words: usize,
}

impl Layout {
    fn ipv4() -> Layout {
        Layout {
            version: 4,
            source_offset: 12,
            masks: [u32::MAX, 0, 0, 0],
            words: 1,
        }
    }

    /// IPv6 sources compared on their first `prefix_len` bits.
    fn ipv6(prefix_len: u8) -> Layout {
        let bits = u32::from(prefix_len.clamp(1, 128));
        let words = bits.div_ceil(32) as usize;
        let mut masks = [0u32; 4];
        for (i, mask) in masks.iter_mut().enumerate().take(words) {
            let in_word = (bits - 32 * i as u32).min(32);
            *mask = u32::MAX << (32 - in_word);
        }
        Layout {
            version: 6,
            source_offset: 8,
            masks,
            words,
        }
    }

    /// The compared words of `ip`, or None when it is of the other family.
    fn key(&self, ip: IpAddr) -> Option<Vec<u32>> {
        let words: Vec<u32> = match (self.version, ip) {
            (4, IpAddr::V4(v4)) => vec![u32::from(v4)],
            (6, IpAddr::V6(v6)) => v6
                .octets()
                .chunks_exact(4)
                .map(|w| u32::from_be_bytes([w[0], w[1], w[2], w[3]]))
                .collect(),
            _ => return None,
        };
        Some(
            words
                .iter()
                .zip(self.masks)
                .take(self.words)
                .map(|(w, m)| w & m)
                .collect(),
        )
    }
}

/// A jump target while the program is assembled.
#[derive(Clone, Copy, Debug)]
enum To {
    Next,
    Label(usize),
}

#[derive(Debug)]
struct Insn {
    code: u16,
    jt: To,
    jf: To,
    k: u32,
    /// For `ja`: the label its `k` is resolved to.
    ja: Option<usize>,
}

/// A tiny assembler: conditional jumps carry 8-bit offsets, so the tree keeps
/// them local and crosses subtrees with `ja`, whose offset is 32 bits.
#[derive(Default)]
struct Asm {
    code: Vec<Insn>,
    labels: Vec<Option<usize>>,
}

impl Asm {
    fn label(&mut self) -> usize {
        self.labels.push(None);
        self.labels.len() - 1
    }

    fn bind(&mut self, label: usize) {
        self.labels[label] = Some(self.code.len());
    }

    fn push(&mut self, code: u32, k: u32) {
        self.code.push(Insn {
            code: code as u16,
            jt: To::Next,
            jf: To::Next,
            k,
            ja: None,
        });
    }

    fn jump_if(&mut self, op: u32, k: u32, jt: To, jf: To) {
        self.code.push(Insn {
            code: (libc::BPF_JMP | op | libc::BPF_K) as u16,
            jt,
            jf,
            k,
            ja: None,
        });
    }

    fn ja(&mut self, label: usize) {
        self.code.push(Insn {
            code: (libc::BPF_JMP | libc::BPF_JA) as u16,
            jt: To::Next,
            jf: To::Next,
            k: 0,
            ja: Some(label),
        });
    }

    /// Loads word `j` of the source into A, masked.
    fn load(&mut self, layout: &Layout, j: usize) {
        let offset = layout.source_offset + 4 * j as u32;
        self.push(
            libc::BPF_LD | libc::BPF_W | libc::BPF_ABS,
            (libc::SKF_NET_OFF as u32).wrapping_add(offset),
        );
        if layout.masks[j] != u32::MAX {
            self.push(libc::BPF_ALU | libc::BPF_AND | libc::BPF_K, layout.masks[j]);
        }
    }

    fn finish(self) -> Vec<sock_filter> {
        let at = |label: usize| self.labels[label].expect("every label is bound");
        let offset = |i: usize, to: To| -> u8 {
            match to {
                To::Next => 0,
                To::Label(l) => u8::try_from(at(l) - (i + 1))
                    .expect("conditional jumps stay within a tree node"),
            }
        };
        self.code
            .iter()
            .enumerate()
            .map(|(i, insn)| sock_filter {
                code: insn.code,
                jt: offset(i, insn.jt),
                jf: offset(i, insn.jf),
                k: insn.ja.map_or(insn.k, |l| (at(l) - (i + 1)) as u32),
            })
            .collect()
    }
}

/// The filter program dropping `keys` (sorted, deduplicated), or None when
/// there is nothing to drop.
fn program(layout: &Layout, keys: &[Vec<u32>]) -> Option<Vec<sock_filter>> {
    if keys.is_empty() {
        return None;
    }
    let mut asm = Asm::default();
    let (accept, drop) = (asm.label(), asm.label());
    // Another IP version (an IPv4-mapped packet on a dual-stack socket)
    // passes: its words would not be a source address.
    asm.push(
        libc::BPF_LD | libc::BPF_B | libc::BPF_ABS,
        libc::SKF_NET_OFF as u32,
    );
    asm.push(libc::BPF_ALU | libc::BPF_RSH | libc::BPF_K, 4);
    let start = asm.label();
    asm.jump_if(
        libc::BPF_JEQ,
        u32::from(layout.version),
        To::Label(start),
        To::Next,
    );
    asm.push(libc::BPF_RET | libc::BPF_K, ACCEPT);
    asm.bind(start);
    // One word (IPv4): loaded once, A keeps it through the whole search.
    let preloaded = layout.words == 1 && layout.masks[0] == u32::MAX;
    if preloaded {
        asm.load(layout, 0);
    }
    search(&mut asm, layout, keys, preloaded, accept);
    asm.bind(accept);
    asm.push(libc::BPF_RET | libc::BPF_K, ACCEPT);
    asm.bind(drop);
    asm.push(libc::BPF_RET | libc::BPF_K, DROP);
    Some(asm.finish())
}

/// Emits the search of `keys`: a leaf compares each key; a node sends the
/// packet to the right half when its source is above the left half's last
/// key, else to the left half.
fn search(asm: &mut Asm, layout: &Layout, keys: &[Vec<u32>], preloaded: bool, accept: usize) {
    if keys.len() <= LEAF {
        let found = asm.label();
        for key in keys {
            let next = asm.label();
            for (j, word) in key.iter().enumerate() {
                if !preloaded {
                    asm.load(layout, j);
                }
                let last = j + 1 == key.len();
                let jt = if last { To::Label(found) } else { To::Next };
                asm.jump_if(libc::BPF_JEQ, *word, jt, To::Label(next));
            }
            asm.bind(next);
        }
        asm.ja(accept);
        asm.bind(found);
        asm.push(libc::BPF_RET | libc::BPF_K, DROP);
        return;
    }
    let middle = keys.len() / 2;
    let pivot = &keys[middle - 1];
    let (go_right, left, right) = (asm.label(), asm.label(), asm.label());
    for (j, word) in pivot.iter().enumerate() {
        if !preloaded {
            asm.load(layout, j);
        }
        let last = j + 1 == pivot.len();
        let jf = if last { To::Label(left) } else { To::Next };
        asm.jump_if(libc::BPF_JGT, *word, To::Label(go_right), jf);
        if !last {
            // Equal so far: the next word decides; below: left.
            asm.jump_if(libc::BPF_JEQ, *word, To::Next, To::Label(left));
        }
    }
    asm.bind(go_right);
    asm.ja(right);
    asm.bind(left);
    search(asm, layout, &keys[..middle], preloaded, accept);
    asm.bind(right);
    search(asm, layout, &keys[middle..], preloaded, accept);
}

/// The program for one socket's family dropping those of `sources` of that
/// family; fewer sources (the first ones kept) if they would not fit.
fn program_for(layout: &Layout, sources: &[IpAddr]) -> (Option<Vec<sock_filter>>, usize) {
    let mut keys: Vec<Vec<u32>> = sources.iter().filter_map(|ip| layout.key(*ip)).collect();
    keys.truncate(MAX_SOURCES);
    loop {
        let mut sorted = keys.clone();
        sorted.sort_unstable();
        sorted.dedup();
        let program = program(layout, &sorted);
        let fits = program
            .as_ref()
            .is_none_or(|p| p.len() <= libc::BPF_MAXINSNS as usize);
        if fits {
            return (program, sorted.len());
        }
        keys.truncate(keys.len() / 2);
    }
}

/// One UDP socket the filter guards, and the layout of its family.
struct Guarded {
    socket: Arc<UdpSocket>,
    layout: Layout,
}

/// Installs on `socket` the filter dropping `sources` of its family (the
/// first ones, when not all fit); removes it when there are none. Returns
/// how many sources the kernel now drops.
fn install(guarded: &Guarded, sources: &[IpAddr]) -> std::io::Result<usize> {
    let socket = socket2::SockRef::from(&*guarded.socket);
    match program_for(&guarded.layout, sources) {
        (Some(program), n) => socket.attach_filter(&program).map(|()| n),
        (None, _) => match socket.detach_filter() {
            // ENOENT: there was none.
            Err(e) if e.raw_os_error() != Some(libc::ENOENT) => Err(e),
            _ => Ok(0),
        },
    }
}

/// Starts the thread that keeps `sockets`' filters in step with the sources
/// `guard` hands to the kernel, until `stop` is set.
pub fn spawn(
    guard: Arc<Guard>,
    sockets: Vec<Arc<UdpSocket>>,
    ipv6_prefix_len: u8,
    stats: Arc<Stats>,
    stop: Arc<AtomicBool>,
) -> std::io::Result<JoinHandle<()>> {
    let guarded: Vec<Guarded> = sockets
        .into_iter()
        .map(|socket| {
            let layout = match socket.local_addr() {
                Ok(addr) if addr.is_ipv6() => Layout::ipv6(ipv6_prefix_len),
                _ => Layout::ipv4(),
            };
            Guarded { socket, layout }
        })
        .collect();
    guard.kernel_filter_started();
    std::thread::Builder::new()
        .name("sipfence-banfilter".into())
        .spawn(move || keep_in_step(&guard, &guarded, &stats, &stop))
}

fn keep_in_step(guard: &Guard, guarded: &[Guarded], stats: &Stats, stop: &AtomicBool) {
    let mut installed: Vec<IpAddr> = Vec::new();
    // The generation and first ban end the installed set was made for: the
    // set is recomputed (a walk over every ban) only when one has moved on.
    let mut made_for: Option<(u64, Option<u64>)> = None;
    // After a failure to install, the kernel gets no sources any more (and
    // no ban is shown as `in_kernel`): the ban list drops them all.
    let mut failed = false;
    while !stop.load(Ordering::Relaxed) {
        let now = crate::now_ms();
        let due = made_for.is_none_or(|(generation, end)| {
            guard.kernel_generation() != generation || end.is_some_and(|end| now >= end)
        });
        if due {
            let set = guard.kernel_set(now, if failed { 0 } else { MAX_SOURCES });
            if set.sources != installed {
                let mut held = 0;
                let mut error = None;
                for g in guarded {
                    match install(g, &set.sources) {
                        Ok(n) => held = held.max(n),
                        Err(e) => error = Some(e),
                    }
                }
                if let Some(error) = error.filter(|_| !failed) {
                    failed = true;
                    made_for = None;
                    tracing::warn!(%error, "cannot install the kernel ban filter; banned sources are dropped after reading");
                    continue;
                }
                tracing::info!(
                    sources = set.sources.len(),
                    held,
                    "kernel ban filter updated"
                );
                // One last read of the counter after the filter emptied.
                stats
                    .udp_kernel_drops
                    .store(kernel_drops(guarded), Ordering::Relaxed);
            }
            guard.kernel_applied(set.generation);
            made_for = Some((set.generation, set.next_end_ms));
            installed = set.sources;
        }
        // The counter moves only while the filter holds sources (or the
        // buffer overflows, a flood itself): an idle gateway skips the read.
        if !installed.is_empty() {
            stats
                .udp_kernel_drops
                .store(kernel_drops(guarded), Ordering::Relaxed);
        }
        let (generation, end) = made_for.unwrap_or_default();
        let wait = end.map_or(POLL, |end| {
            Duration::from_millis(end.saturating_sub(now)).min(POLL)
        });
        guard.kernel_wait(generation, wait);
    }
}

/// Datagrams the kernel dropped on these sockets (filtered, or the receive
/// buffer full), from `/proc/net/udp{,6}`'s `drops` column.
fn kernel_drops(guarded: &[Guarded]) -> u64 {
    let inodes: Vec<u64> = guarded
        .iter()
        .filter_map(|g| {
            let link = format!("/proc/self/fd/{}", g.socket.as_raw_fd());
            let target = std::fs::read_link(link).ok()?;
            // "socket:[12345]"
            let text = target.to_str()?;
            text.strip_prefix("socket:[")?
                .strip_suffix(']')?
                .parse()
                .ok()
        })
        .collect();
    ["/proc/net/udp", "/proc/net/udp6"]
        .iter()
        .filter_map(|path| std::fs::read_to_string(path).ok())
        .flat_map(|table| {
            table
                .lines()
                .skip(1)
                .filter_map(|line| {
                    let fields: Vec<&str> = line.split_whitespace().collect();
                    let inode: u64 = fields.get(9)?.parse().ok()?;
                    let drops: u64 = fields.last()?.parse().ok()?;
                    inodes.contains(&inode).then_some(drops)
                })
                .collect::<Vec<_>>()
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

    fn guarded(addr: &str) -> Guarded {
        let socket = UdpSocket::bind(addr).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let layout = if socket.local_addr().unwrap().is_ipv6() {
            Layout::ipv6(64)
        } else {
            Layout::ipv4()
        };
        Guarded {
            socket: Arc::new(socket),
            layout,
        }
    }

    /// Sends one datagram from each source, then a last one from `marker`,
    /// and returns the sources whose datagram arrived (loopback keeps order).
    /// In rounds of 64, so the receive buffer never fills.
    fn arrivals(to: &Guarded, sources: &[IpAddr], marker: IpAddr) -> Vec<IpAddr> {
        let target = to.socket.local_addr().unwrap();
        let mut arrived = Vec::new();
        let mut buf = [0u8; 16];
        for round in sources.chunks(64) {
            for ip in round.iter().chain([&marker]) {
                let from = UdpSocket::bind(SocketAddr::new(*ip, 0)).unwrap();
                from.send_to(b"x", target).unwrap();
            }
            loop {
                let (_, from) = to.socket.recv_from(&mut buf).expect("the marker arrives");
                if from.ip() == marker {
                    break;
                }
                arrived.push(from.ip());
            }
        }
        arrived
    }

    fn v4(n: u32) -> IpAddr {
        // 127.0.x.y: all loopback, so the test sends nowhere else.
        IpAddr::V4(Ipv4Addr::from(0x7f00_0000 | n))
    }

    #[test]
    fn the_kernel_drops_exactly_the_banned_ipv4_sources() {
        let socket = guarded("127.0.0.1:0");
        // 300 banned of 600 sources, interleaved so every leaf and both
        // sides of every node are exercised; the tree has ~75 leaves.
        let sources: Vec<IpAddr> = (2..602).map(v4).collect();
        let banned: Vec<IpAddr> = sources.iter().copied().step_by(2).collect();
        assert_eq!(install(&socket, &banned).unwrap(), 300);
        let arrived = arrivals(&socket, &sources, v4(1));
        let expected: Vec<IpAddr> = sources.iter().copied().skip(1).step_by(2).collect();
        assert_eq!(arrived, expected);
        // Removing the filter lets everyone in again, at once.
        assert_eq!(install(&socket, &[]).unwrap(), 0);
        assert_eq!(arrivals(&socket, &banned[..10], v4(1)), banned[..10]);
    }

    #[test]
    fn an_ipv6_prefix_is_dropped_and_other_prefixes_are_not() {
        let socket = guarded("[::1]:0");
        let loopback = IpAddr::V6(Ipv6Addr::LOCALHOST);
        // Many other /64s around ::1's (::/64), none of them it.
        let others: Vec<IpAddr> = (1..200u128)
            .map(|n| IpAddr::V6(Ipv6Addr::from(n << 64 | 1)))
            .collect();
        install(&socket, &others).unwrap();
        let target = socket.socket.local_addr().unwrap();
        let mut buf = [0u8; 4];
        socket.socket.send_to(b"x", target).unwrap();
        let (_, from) = socket.socket.recv_from(&mut buf).expect("::1 passes");
        assert_eq!(from.ip(), loopback);
        // Now ban ::1's /64 (::/64) too.
        let mut with_loopback = others.clone();
        with_loopback.push(IpAddr::V6(Ipv6Addr::UNSPECIFIED));
        install(&socket, &with_loopback).unwrap();
        socket.socket.send_to(b"x", target).unwrap();
        let got = socket.socket.recv_from(&mut buf);
        assert!(got.is_err(), "::1 is in the banned ::/64: {got:?}");
    }

    #[test]
    fn a_program_fits_the_kernel_limit_with_the_most_sources() {
        for layout in [
            Layout::ipv4(),
            Layout::ipv6(64),
            Layout::ipv6(128),
            Layout::ipv6(60),
        ] {
            let sources: Vec<IpAddr> = (0..MAX_SOURCES as u32 * 2)
                .map(|n| match layout.version {
                    4 => v4(n),
                    _ => IpAddr::V6(Ipv6Addr::from(u128::from(n) << 80 | u128::from(n))),
                })
                .collect();
            let (program, held) = program_for(&layout, &sources);
            let program = program.unwrap();
            assert!(program.len() <= libc::BPF_MAXINSNS as usize, "{layout:?}");
            assert!(held >= MAX_SOURCES / 2, "{layout:?} holds {held}");
        }
    }

    #[test]
    fn ipv6_layouts_mask_the_prefix() {
        let l = Layout::ipv6(60);
        assert_eq!(l.words, 2);
        assert_eq!(l.masks, [u32::MAX, 0xffff_fff0, 0, 0]);
        let ip: IpAddr = "2001:db8:aaaa:bbbb:1::1".parse().unwrap();
        assert_eq!(l.key(ip), Some(vec![0x2001_0db8, 0xaaaa_bbb0]));
        assert_eq!(Layout::ipv4().key(ip), None);
        assert_eq!(Layout::ipv6(128).words, 4);
    }
}
