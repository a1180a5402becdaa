//! A reorder buffer for recording: RTP packets arrive out of order, twice
//! or never; the WAV file wants one continuous sample stream.
//!
//! This is not a playout buffer: there is no clock, a packet waits until
//! every earlier one arrived or the window is full, which is fine for a file
//! and keeps the logic small. Losses become silence, sized by the RTP
//! timestamps (RFC 3550 section 5.1) so the recording keeps its real length.
//!
//! The slots are a ring of reused sample vectors: after warm-up, pushing a
//! packet allocates nothing.

/// Tuning of the reorder buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JitterConfig {
    /// How many packets (by sequence number) may be pending. A missing packet
    /// is declared lost once a packet this far ahead arrives: 50 is 1 s at
    /// 20 ms packets.
    pub window_packets: usize,
    /// The most silence one gap may insert: a sender whose timestamp jumps
    /// must not make us write minutes of nothing.
    pub max_gap_samples: u32,
    /// A sequence jump larger than this (either way) is a restarted stream,
    /// not a loss.
    pub restart_jump: u64,
}

impl Default for JitterConfig {
    fn default() -> Self {
        Self {
            window_packets: 50,
            max_gap_samples: 2 * 8000,
            restart_jump: 1000,
        }
    }
}

/// What happened to the packets pushed; reported with each recording.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JitterStats {
    /// Every packet pushed, including duplicates and late ones.
    pub received: u64,
    /// Packets that arrived after a packet with a higher sequence number.
    pub reordered: u64,
    /// Sequence numbers never received before their slot was released.
    pub lost: u64,
    /// Packets received twice (the second copy is dropped).
    pub duplicates: u64,
    /// Packets that arrived after their slot was released (dropped).
    pub late: u64,
    /// Stream restarts: SSRC changes and huge sequence jumps.
    pub restarts: u64,
    /// Silence samples inserted for gaps.
    pub filled_samples: u64,
}

/// What a ring slot holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SlotState {
    /// Never used, or released as lost.
    Empty,
    /// Received and waiting for its turn.
    Pending,
    /// Written out; kept to recognise a duplicate arriving later.
    Released,
}

/// One ring entry; `samples` keeps its capacity between packets.
#[derive(Debug)]
struct Slot {
    /// The extended sequence number the slot last held.
    seq: u64,
    timestamp: u32,
    samples: Vec<i16>,
    state: SlotState,
}

/// The current stream's position.
#[derive(Debug, Clone, Copy)]
struct Stream {
    ssrc: u32,
    /// Next extended sequence number to release.
    next: u64,
    /// Highest extended sequence number received.
    highest: u64,
    /// Timestamp right after the last released sample; None at a stream start.
    next_timestamp: Option<u32>,
}

/// Releases pushed packets in sequence order into a sample vector.
#[derive(Debug)]
pub struct ReorderBuffer {
    config: JitterConfig,
    slots: Vec<Slot>,
    stream: Option<Stream>,
    stats: JitterStats,
}

impl ReorderBuffer {
    /// An empty buffer; a window of 0 is treated as 1.
    pub fn new(config: JitterConfig) -> Self {
        let window = config.window_packets.max(1);
        let slots = (0..window)
            .map(|_| Slot {
                seq: u64::MAX,
                timestamp: 0,
                samples: Vec::new(),
                state: SlotState::Empty,
            })
            .collect();
        Self {
            config: JitterConfig {
                window_packets: window,
                ..config
            },
            slots,
            stream: None,
            stats: JitterStats::default(),
        }
    }

    /// The counters so far.
    pub fn stats(&self) -> JitterStats {
        self.stats
    }

    /// Takes one packet's decoded samples; appends to `out` whatever can be
    /// released in order now (gap silence included).
    pub fn push(
        &mut self,
        ssrc: u32,
        seq: u16,
        timestamp: u32,
        samples: &[i16],
        out: &mut Vec<i16>,
    ) {
        self.stats.received += 1;
        let ext = match self.stream {
            Some(s) if s.ssrc == ssrc => {
                // The extended number closest to the highest one seen.
                let delta = i64::from(seq.wrapping_sub(s.highest as u16) as i16);
                let ext = s.highest as i64 + delta;
                if ext < 0 || ext.unsigned_abs().abs_diff(s.highest) > self.config.restart_jump {
                    self.restart(ssrc, seq, out)
                } else {
                    ext as u64
                }
            }
            Some(_) => self.restart(ssrc, seq, out),
            None => self.start(ssrc, seq),
        };
        let Some(mut stream) = self.stream else {
            return; // start() or restart() always set it
        };
        let window = self.slots.len() as u64;
        let idx = (ext % window) as usize;
        if ext < stream.next {
            let slot = &self.slots[idx];
            if slot.seq == ext && slot.state == SlotState::Released {
                self.stats.duplicates += 1;
            } else {
                self.stats.late += 1;
            }
            return;
        }
        if self.slots[idx].seq == ext && self.slots[idx].state == SlotState::Pending {
            self.stats.duplicates += 1;
            return;
        }
        // Make room: everything a full window behind this packet goes out now.
        while ext >= stream.next + window {
            self.release(&mut stream, out);
        }
        if ext < stream.highest {
            self.stats.reordered += 1;
        }
        stream.highest = stream.highest.max(ext);
        let slot = &mut self.slots[idx];
        slot.seq = ext;
        slot.timestamp = timestamp;
        slot.samples.clear();
        slot.samples.extend_from_slice(samples);
        slot.state = SlotState::Pending;
        while stream.next <= stream.highest {
            let next = &self.slots[(stream.next % window) as usize];
            if next.seq != stream.next || next.state != SlotState::Pending {
                break;
            }
            self.release(&mut stream, out);
        }
        self.stream = Some(stream);
    }

    /// Releases everything still pending (the call is over); missing packets
    /// between them count as lost.
    pub fn finish(&mut self, out: &mut Vec<i16>) {
        if let Some(mut stream) = self.stream {
            while stream.next <= stream.highest {
                self.release(&mut stream, out);
            }
            self.stream = Some(stream);
        }
    }

    /// Begins a stream at `seq`. The extended numbers start one cycle up so
    /// a packet slightly older than the first one does not go negative.
    fn start(&mut self, ssrc: u32, seq: u16) -> u64 {
        let ext = (1 << 16) + u64::from(seq);
        self.stream = Some(Stream {
            ssrc,
            next: ext,
            highest: ext,
            next_timestamp: None,
        });
        for slot in &mut self.slots {
            slot.seq = u64::MAX;
            slot.state = SlotState::Empty;
        }
        ext
    }

    /// Flushes the old stream and starts a new one: no gap fill across it.
    fn restart(&mut self, ssrc: u32, seq: u16, out: &mut Vec<i16>) -> u64 {
        tracing::debug!(ssrc, seq, "RTP stream restarted");
        self.stats.restarts += 1;
        self.finish(out);
        self.start(ssrc, seq)
    }

    /// Releases `stream.next`: its samples after any gap silence, or counts
    /// it lost.
    fn release(&mut self, stream: &mut Stream, out: &mut Vec<i16>) {
        let window = self.slots.len() as u64;
        let slot = &mut self.slots[(stream.next % window) as usize];
        if slot.seq == stream.next && slot.state == SlotState::Pending {
            if let Some(expected) = stream.next_timestamp {
                // Gap = timestamp difference minus what was already written;
                // negative (overlap) writes no silence.
                let gap = slot.timestamp.wrapping_sub(expected) as i32;
                if gap > 0 {
                    let fill = gap.unsigned_abs().min(self.config.max_gap_samples);
                    out.resize(out.len() + fill as usize, 0);
                    self.stats.filled_samples += u64::from(fill);
                }
            }
            out.extend_from_slice(&slot.samples);
            stream.next_timestamp = Some(slot.timestamp.wrapping_add(slot.samples.len() as u32));
            slot.state = SlotState::Released;
        } else {
            self.stats.lost += 1;
            slot.seq = stream.next;
            slot.state = SlotState::Empty;
        }
        stream.next += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const N: usize = 160;

    /// A packet whose samples all equal `value`, so order is visible in the output.
    fn frame(value: i16) -> [i16; N] {
        [value; N]
    }

    /// The per-packet values in `out`, one per 160 samples.
    fn values(out: &[i16]) -> Vec<i16> {
        out.chunks(N).map(|c| c[0]).collect()
    }

    fn buffer(window: usize) -> ReorderBuffer {
        ReorderBuffer::new(JitterConfig {
            window_packets: window,
            ..JitterConfig::default()
        })
    }

    /// Pushes packets as (seq, value) with timestamp seq * 160 from `ts0`.
    fn push_all(buf: &mut ReorderBuffer, seq0: u16, ts0: u32, order: &[u16], out: &mut Vec<i16>) {
        for &k in order {
            let seq = seq0.wrapping_add(k);
            let ts = ts0.wrapping_add(u32::from(k) * N as u32);
            buf.push(7, seq, ts, &frame(k as i16 + 1), out);
        }
    }

    #[test]
    fn in_order_passes_straight_through() {
        let mut buf = buffer(50);
        let mut out = Vec::new();
        push_all(&mut buf, 100, 5000, &[0, 1, 2, 3], &mut out);
        assert_eq!(values(&out), [1, 2, 3, 4]);
        buf.finish(&mut out);
        assert_eq!(out.len(), 4 * N);
        let s = buf.stats();
        assert_eq!(
            (s.received, s.lost, s.reordered, s.late, s.duplicates),
            (4, 0, 0, 0, 0)
        );
    }

    #[test]
    fn reordered_packets_come_out_in_order() {
        let mut buf = buffer(50);
        let mut out = Vec::new();
        push_all(&mut buf, 10, 0, &[0, 2, 1, 4, 3, 5], &mut out);
        assert_eq!(values(&out), [1, 2, 3, 4, 5, 6]);
        assert_eq!(buf.stats().reordered, 2);
        assert_eq!(buf.stats().filled_samples, 0);
    }

    #[test]
    fn lost_packet_becomes_silence_of_its_length() {
        let mut buf = buffer(50);
        let mut out = Vec::new();
        push_all(&mut buf, 0, 0, &[0, 1, 3, 4], &mut out);
        assert_eq!(values(&out), [1, 2], "3 waits for 2");
        buf.finish(&mut out);
        assert_eq!(values(&out), [1, 2, 0, 4, 5]);
        let s = buf.stats();
        assert_eq!((s.lost, s.filled_samples), (1, N as u64));
    }

    #[test]
    fn full_window_declares_loss_then_late_arrival_is_dropped() {
        let mut buf = buffer(4);
        let mut out = Vec::new();
        push_all(&mut buf, 0, 0, &[0, 2, 3, 4], &mut out);
        assert_eq!(values(&out), [1]);
        push_all(&mut buf, 0, 0, &[5], &mut out); // 1 is now a window behind
        assert_eq!(values(&out), [1, 0, 3, 4, 5, 6]);
        push_all(&mut buf, 0, 0, &[1], &mut out);
        let s = buf.stats();
        assert_eq!((s.lost, s.late, s.duplicates), (1, 1, 0));
        assert_eq!(out.len(), 6 * N);
    }

    #[test]
    fn duplicates_are_dropped_pending_or_released() {
        let mut buf = buffer(50);
        let mut out = Vec::new();
        push_all(&mut buf, 0, 0, &[0, 0, 2, 2, 1], &mut out);
        assert_eq!(values(&out), [1, 2, 3]);
        assert_eq!(buf.stats().duplicates, 2);
        assert_eq!(buf.stats().late, 0);
    }

    #[test]
    fn sequence_wraparound() {
        let mut buf = buffer(50);
        let mut out = Vec::new();
        // seqs 65534, 0, 65535, 1, 2: the wrap with a swap across it.
        push_all(&mut buf, 65534, 0, &[0, 2, 1, 3, 4], &mut out);
        assert_eq!(values(&out), [1, 2, 3, 4, 5]);
        let s = buf.stats();
        assert_eq!((s.reordered, s.lost, s.late, s.restarts), (1, 0, 0, 0));
    }

    #[test]
    fn timestamp_wraparound_with_a_loss_across_it() {
        let mut buf = buffer(50);
        let mut out = Vec::new();
        let ts0 = u32::MAX - 200;
        push_all(&mut buf, 500, ts0, &[0, 1, 3], &mut out);
        buf.finish(&mut out);
        assert_eq!(values(&out), [1, 2, 0, 4]);
        assert_eq!(buf.stats().filled_samples, N as u64);
    }

    #[test]
    fn timestamp_jump_is_capped() {
        let mut buf = ReorderBuffer::new(JitterConfig {
            max_gap_samples: 1000,
            ..JitterConfig::default()
        });
        let mut out = Vec::new();
        buf.push(1, 0, 0, &frame(1), &mut out);
        buf.push(1, 1, 10_000_000, &frame(2), &mut out);
        assert_eq!(out.len(), 2 * N + 1000);
    }

    #[test]
    fn silence_suppression_gap_is_filled_without_a_loss() {
        let mut buf = buffer(50);
        let mut out = Vec::new();
        buf.push(1, 0, 0, &frame(1), &mut out);
        buf.push(1, 1, 8000, &frame(2), &mut out);
        assert_eq!(out.len(), 8000 + N);
        assert_eq!(buf.stats().lost, 0);
    }

    #[test]
    fn ssrc_change_or_huge_jump_restarts_without_fill() {
        let mut buf = buffer(50);
        let mut out = Vec::new();
        push_all(&mut buf, 0, 0, &[0, 2], &mut out);
        // New SSRC, unrelated numbers: the old stream is flushed (1 lost and
        // filled), the new one starts without any fill.
        buf.push(99, 40_000, 123_456_789, &frame(9), &mut out);
        assert_eq!(values(&out), [1, 0, 3, 9]);
        buf.push(99, 45_000, 123_456_949, &frame(8), &mut out);
        assert_eq!(values(&out), [1, 0, 3, 9, 8]);
        let s = buf.stats();
        assert_eq!((s.restarts, s.lost), (2, 1));
        assert_eq!(s.filled_samples, N as u64);
    }
}
