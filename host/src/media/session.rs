//! One voicemail media session: play the greeting and the beep, record
//! what the caller says, write the WAV file.
//!
//! The SIP side answers the call, binds the RTP socket (see
//! [`crate::media::ports`]) and hands it here with the negotiated codec;
//! it fires the stop signal on BYE or CANCEL. Symmetric RTP (RFC 4961):
//! we send to the SDP address until the caller's first valid RTP packet,
//! then to that packet's source, because a phone behind NAT announces an
//! address nobody can reach. After latching, packets from other sources are
//! ignored so nobody can inject audio into the recording.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior};

use crate::media::g711::{self, Law};
use crate::media::jitter::{JitterConfig, JitterStats, ReorderBuffer};
use crate::media::rtp::{self, RtpHeader, TelephoneEvent, EVENT_HASH};
use crate::media::sdp::{Codec, Negotiated};
use crate::media::{prompt, wav};

/// Samples per 20 ms packet at 8 kHz.
const FRAME: usize = 160;
/// Packet interval of what we send.
const FRAME_TIME: Duration = Duration::from_millis(20);
/// Below this mean absolute amplitude a packet counts as silence (about
/// -44 dBFS: line noise, comfort noise, nobody talking).
const SILENCE_LEVEL: u64 = 200;
/// Receive buffer: one Ethernet MTU with room to spare.
const RECV_BUF: usize = 2048;

/// The negotiated media, as the session needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MediaParams {
    /// Where the SDP says to send RTP, until symmetric RTP latches. None:
    /// send nothing until the caller's first packet names the address (the
    /// caller decides; see `crate::voicemail`).
    pub remote: Option<SocketAddr>,
    /// The G.711 law we send and record.
    pub codec: Codec,
    /// The codec's payload type in this call.
    pub payload_type: u8,
    /// The telephone-event payload type, when DTMF was negotiated.
    pub telephone_event: Option<u8>,
}

impl From<&Negotiated> for MediaParams {
    fn from(n: &Negotiated) -> Self {
        Self {
            remote: Some(n.remote),
            codec: n.codec,
            payload_type: n.payload_type,
            telephone_event: n.telephone_event,
        }
    }
}

/// When a recording ends on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordLimits {
    /// The longest message (default 120 s, about 1.9 MB in memory).
    pub max_length: Duration,
    /// End after this much continuous silence or no packets (default 10 s).
    pub silence_timeout: Duration,
    /// Shorter recordings are discarded: a hang-up at the beep is not a
    /// message (default 1 s).
    pub min_length: Duration,
}

impl Default for RecordLimits {
    fn default() -> Self {
        Self {
            max_length: Duration::from_secs(120),
            silence_timeout: Duration::from_secs(10),
            min_length: Duration::from_secs(1),
        }
    }
}

/// Why the session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// The stop signal fired (BYE, CANCEL) or its sender went away.
    Hangup,
    /// The recording reached [`RecordLimits::max_length`].
    MaxLength,
    /// [`RecordLimits::silence_timeout`] of silence or no packets.
    Silence,
    /// The caller pressed `#` after the beep.
    Dtmf,
}

/// The outcome of one session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recording {
    /// The WAV file, or None when the recording was shorter than the minimum.
    pub path: Option<PathBuf>,
    /// Length of the recorded audio (also when no file was written).
    pub duration: Duration,
    /// Why it ended.
    pub ended: EndReason,
    /// Reordering, loss and duplicates of the recorded stream.
    pub stats: JitterStats,
    /// RTP packets we sent (greeting and beep).
    pub packets_sent: u64,
    /// Packets dropped: not RTP, malformed, or from a source other than
    /// the latched one.
    pub packets_ignored: u64,
    /// The caller's RTP source we latched onto, if any packet came.
    pub remote_latched: Option<SocketAddr>,
}

/// Runs one session: greeting, beep, recording until hang-up, `#`, the
/// maximum length or silence; then writes `path` (via `<path>.part`) unless
/// the recording is shorter than `limits.min_length`. Errors are socket
/// receive failures and file writing failures.
pub async fn record(
    socket: &UdpSocket,
    media: &MediaParams,
    greeting: &[i16],
    limits: &RecordLimits,
    path: &Path,
    mut stop: watch::Receiver<bool>,
) -> io::Result<Recording> {
    let mut rx = Receiver {
        socket,
        media,
        buf: [0; RECV_BUF],
        decoded: [0; RECV_BUF],
        latched: None,
        ignored: 0,
        last_hash: None,
    };
    let mut tx = Sender::new(media);
    let beep = prompt::beep();

    // Phase 1: greeting then beep, paced at 20 ms. Caller audio is ignored;
    // `#` skips to the beep.
    let mut ticker = tokio::time::interval(FRAME_TIME);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let mut source = greeting;
    let mut in_greeting = true;
    let mut hung_up = false;
    loop {
        if source.is_empty() && in_greeting {
            source = &beep;
            in_greeting = false;
        }
        if source.is_empty() {
            break;
        }
        tokio::select! {
            biased;
            () = stopped(&mut stop) => {
                hung_up = true;
                break;
            }
            _ = ticker.tick() => {
                let n = source.len().min(FRAME);
                if let Some(to) = rx.target() {
                    tx.send(socket, to, &source[..n]).await;
                }
                source = &source[n..];
            }
            event = rx.recv() => {
                if let Incoming::Hash = event? {
                    if in_greeting {
                        tracing::debug!("# during the greeting: skipping to the beep");
                        source = &[];
                    }
                }
            }
        }
    }

    // Phase 2: record.
    let sample_rate = u64::from(wav::SAMPLE_RATE);
    let max_samples = usize::try_from(limits.max_length.as_millis() as u64 * sample_rate / 1000)
        .unwrap_or(usize::MAX);
    let mut jitter = ReorderBuffer::new(JitterConfig::default());
    let mut samples: Vec<i16> = Vec::with_capacity(max_samples.min(wav::SAMPLE_RATE as usize * 10));
    let start = Instant::now();
    let max_deadline = start + limits.max_length;
    let mut silence_deadline = start + limits.silence_timeout;
    let timer = tokio::time::sleep_until(silence_deadline.min(max_deadline));
    tokio::pin!(timer);
    let ended = if hung_up {
        EndReason::Hangup
    } else {
        loop {
            let deadline = silence_deadline.min(max_deadline);
            if timer.deadline() != deadline {
                timer.as_mut().reset(deadline);
            }
            tokio::select! {
                biased;
                () = stopped(&mut stop) => break EndReason::Hangup,
                () = &mut timer => {
                    break if max_deadline <= silence_deadline {
                        EndReason::MaxLength
                    } else {
                        EndReason::Silence
                    };
                }
                event = rx.recv() => match event? {
                    Incoming::Hash => break EndReason::Dtmf,
                    Incoming::Audio { ssrc, sequence, timestamp, samples: n } => {
                        let frame = &rx.decoded[..n];
                        if !is_silence(frame) {
                            silence_deadline = Instant::now() + limits.silence_timeout;
                        }
                        jitter.push(ssrc, sequence, timestamp, frame, &mut samples);
                        if samples.len() >= max_samples {
                            break EndReason::MaxLength;
                        }
                    }
                    Incoming::Other => {}
                },
            }
        }
    };
    jitter.finish(&mut samples);
    samples.truncate(max_samples);

    let duration = Duration::from_micros(samples.len() as u64 * 1_000_000 / sample_rate);
    let path = if duration < limits.min_length || samples.is_empty() {
        tracing::debug!(?duration, "recording too short, discarded");
        None
    } else {
        let target = path.to_owned();
        let written = tokio::task::spawn_blocking(move || wav::write_wav(&target, &samples))
            .await
            .map_err(io::Error::other)?
            .map_err(io::Error::other)?;
        Some(written)
    };
    tracing::info!(?ended, ?duration, file = ?path, "voicemail recording finished");
    Ok(Recording {
        path,
        duration,
        ended,
        stats: jitter.stats(),
        packets_sent: tx.sent,
        packets_ignored: rx.ignored,
        remote_latched: rx.latched,
    })
}

/// Resolves when the stop signal is true or its sender is gone (the call
/// is over either way).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|&s| s).await;
}

/// A packet's mean absolute amplitude is under [`SILENCE_LEVEL`].
fn is_silence(frame: &[i16]) -> bool {
    if frame.is_empty() {
        return true;
    }
    let sum: u64 = frame.iter().map(|s| u64::from(s.unsigned_abs())).sum();
    sum / (frame.len() as u64) < SILENCE_LEVEL
}

/// What one received datagram meant to the session.
enum Incoming {
    /// Audio of the negotiated codec, decoded into the first `samples` of
    /// [`Receiver::decoded`].
    Audio {
        ssrc: u32,
        sequence: u16,
        timestamp: u32,
        samples: usize,
    },
    /// A new `#` key release (telephone-event end, de-duplicated).
    Hash,
    /// Anything else: dropped.
    Other,
}

/// The receiving side: one reused buffer, latching, DTMF de-duplication.
struct Receiver<'a> {
    socket: &'a UdpSocket,
    media: &'a MediaParams,
    buf: [u8; RECV_BUF],
    /// The last audio payload, decoded.
    decoded: [i16; RECV_BUF],
    /// The caller's RTP source once seen.
    latched: Option<SocketAddr>,
    /// Datagrams dropped (see [`Recording::packets_ignored`]).
    ignored: u64,
    /// RTP timestamp of the last `#` acted on: the end packet is sent three
    /// times (RFC 4733 section 2.5.1.4).
    last_hash: Option<u32>,
}

impl Receiver<'_> {
    /// Where our RTP goes now, if anywhere yet.
    fn target(&self) -> Option<SocketAddr> {
        self.latched.or(self.media.remote)
    }

    /// Receives one datagram. ICMP-induced errors (an unreachable caller)
    /// are not fatal: the caller may come back, the timers end the session.
    async fn recv(&mut self) -> io::Result<Incoming> {
        let (len, from) = match self.socket.recv_from(&mut self.buf).await {
            Ok(got) => got,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionReset
                ) =>
            {
                tracing::debug!(error = %e, "RTP receive error ignored");
                return Ok(Incoming::Other);
            }
            Err(e) => return Err(e),
        };
        let packet = match rtp::parse(&self.buf[..len]) {
            Ok(p) => p,
            Err(error) => {
                self.ignored += 1;
                tracing::debug!(%from, %error, "non-RTP datagram dropped");
                return Ok(Incoming::Other);
            }
        };
        match self.latched {
            Some(addr) if addr != from => {
                self.ignored += 1;
                return Ok(Incoming::Other);
            }
            Some(_) => {}
            None => {
                tracing::info!(%from, sdp = ?self.media.remote, "symmetric RTP latched");
                self.latched = Some(from);
            }
        }
        if packet.payload_type == self.media.payload_type {
            let samples =
                g711::decode_into(self.media.codec.law(), packet.payload, &mut self.decoded);
            return Ok(Incoming::Audio {
                ssrc: packet.ssrc,
                sequence: packet.sequence,
                timestamp: packet.timestamp,
                samples,
            });
        }
        if Some(packet.payload_type) == self.media.telephone_event {
            if let Ok(event) = TelephoneEvent::parse(packet.payload) {
                if event.event == EVENT_HASH
                    && event.end
                    && self.last_hash != Some(packet.timestamp)
                {
                    self.last_hash = Some(packet.timestamp);
                    return Ok(Incoming::Hash);
                }
            }
        }
        Ok(Incoming::Other)
    }
}

/// The sending side: our RTP stream's header state and one packet buffer.
struct Sender {
    header: RtpHeader,
    law: Law,
    packet: [u8; rtp::HEADER_LEN + FRAME],
    payload: [u8; FRAME],
    /// Packets handed to the socket.
    sent: u64,
}

impl Sender {
    /// Random SSRC, sequence and timestamp starts (RFC 3550 section 5.1).
    fn new(media: &MediaParams) -> Self {
        Self {
            header: RtpHeader {
                marker: true,
                payload_type: media.payload_type,
                sequence: rand::random(),
                timestamp: rand::random(),
                ssrc: rand::random(),
            },
            law: media.codec.law(),
            packet: [0; rtp::HEADER_LEN + FRAME],
            payload: [0; FRAME],
            sent: 0,
        }
    }

    /// Sends up to 160 samples as one packet (a short last frame is padded
    /// with silence). Send errors are logged, not fatal.
    async fn send(&mut self, socket: &UdpSocket, to: SocketAddr, samples: &[i16]) {
        let n = g711::encode_into(self.law, samples, &mut self.payload);
        let silence = match self.law {
            Law::Ulaw => g711::ulaw_encode(0),
            Law::Alaw => g711::alaw_encode(0),
        };
        self.payload[n..].fill(silence);
        // The buffer is sized for a full frame: writing cannot fail.
        let Ok(len) = rtp::write_packet(&self.header, &self.payload, &mut self.packet) else {
            return;
        };
        self.header.marker = false;
        self.header.sequence = self.header.sequence.wrapping_add(1);
        self.header.timestamp = self.header.timestamp.wrapping_add(FRAME as u32);
        match socket.send_to(&self.packet[..len], to).await {
            Ok(_) => self.sent += 1,
            Err(error) => tracing::debug!(%to, %error, "RTP send failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::f64::consts::TAU;
    use tokio::task::JoinHandle;

    const TE: u8 = 101;

    /// A running session and the test's view of it.
    struct Harness {
        task: JoinHandle<io::Result<Recording>>,
        gateway: SocketAddr,
        /// The address the "SDP" announces.
        sdp_peer: UdpSocket,
        stop: watch::Sender<bool>,
        path: PathBuf,
    }

    async fn start(name: &str, greeting_frames: usize, limits: RecordLimits) -> Harness {
        start_with(name, greeting_frames, limits, true).await
    }

    /// `trust_sdp`: false starts with no address to send to (the SDP named
    /// someone else than the caller).
    async fn start_with(
        name: &str,
        greeting_frames: usize,
        limits: RecordLimits,
        trust_sdp: bool,
    ) -> Harness {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let gateway = socket.local_addr().unwrap();
        let sdp_peer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let media = MediaParams {
            remote: trust_sdp.then(|| sdp_peer.local_addr().unwrap()),
            codec: Codec::Pcmu,
            payload_type: 0,
            telephone_event: Some(TE),
        };
        let path = wav::tests::temp_path(name);
        let _ = std::fs::remove_file(&path);
        let (stop, stop_rx) = watch::channel(false);
        let greeting = vec![1000i16; greeting_frames * FRAME];
        let out = path.clone();
        let task = tokio::spawn(async move {
            record(&socket, &media, &greeting, &limits, &out, stop_rx).await
        });
        Harness {
            task,
            gateway,
            sdp_peer,
            stop,
            path,
        }
    }

    /// One received RTP packet: (payload type, seq, timestamp, marker).
    async fn recv_rtp(sock: &UdpSocket, wait: Duration) -> Option<(u8, u16, u32, bool)> {
        let mut buf = [0u8; 512];
        let (n, _) = tokio::time::timeout(wait, sock.recv_from(&mut buf))
            .await
            .ok()?
            .ok()?;
        let p = rtp::parse(&buf[..n]).unwrap();
        assert_eq!(p.payload.len(), FRAME);
        Some((p.payload_type, p.sequence, p.timestamp, p.marker))
    }

    /// Receives the whole greeting + beep on `sock`; returns the packet count.
    async fn drain_prompts(sock: &UdpSocket) -> usize {
        let mut count = 0;
        while recv_rtp(sock, Duration::from_millis(300)).await.is_some() {
            count += 1;
        }
        count
    }

    /// A PCMU packet of a 440 Hz tone (amplitude 8000), or of silence.
    fn audio_packet(seq: u16, ts: u32, tone: bool) -> Vec<u8> {
        let samples: Vec<i16> = (0..FRAME)
            .map(|i| {
                let t = f64::from(ts.wrapping_add(i as u32)) / 8000.0;
                if tone {
                    (8000.0 * (TAU * 440.0 * t).sin()) as i16
                } else {
                    0
                }
            })
            .collect();
        let mut payload = [0u8; FRAME];
        g711::encode_into(Law::Ulaw, &samples, &mut payload);
        packet(0, seq, ts, &payload)
    }

    fn packet(pt: u8, seq: u16, ts: u32, payload: &[u8]) -> Vec<u8> {
        let header = RtpHeader {
            marker: false,
            payload_type: pt,
            sequence: seq,
            timestamp: ts,
            ssrc: 0x5EED,
        };
        let mut buf = vec![0u8; 12 + payload.len()];
        rtp::write_packet(&header, payload, &mut buf).unwrap();
        buf
    }

    /// Sends the telephone-event `#` end packet three times, as phones do.
    async fn press_hash(sock: &UdpSocket, to: SocketAddr, seq: u16, ts: u32) {
        sock.send_to(&packet(TE, seq, ts, &[EVENT_HASH, 0x0A, 0, 160]), to)
            .await
            .unwrap();
        for i in 1..=3 {
            let p = packet(TE, seq + i, ts, &[EVENT_HASH, 0x8A, 3, 32]);
            sock.send_to(&p, to).await.unwrap();
        }
    }

    /// Sends `count` tone packets starting at seq/ts 1000, 20 ms apart.
    async fn talk(sock: &UdpSocket, to: SocketAddr, order: &[u16]) {
        let mut tick = tokio::time::interval(FRAME_TIME);
        for &k in order {
            tick.tick().await;
            let p = audio_packet(1000 + k, 160_000 + u32::from(k) * FRAME as u32, true);
            sock.send_to(&p, to).await.unwrap();
        }
    }

    fn rms(s: &[i16]) -> f64 {
        (s.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>() / s.len() as f64).sqrt()
    }

    #[tokio::test]
    async fn greeting_latching_and_recording_with_reorder_and_loss() {
        let h = start("full.wav", 10, RecordLimits::default()).await;
        let expected = 10 + 20; // greeting + 0.4 s beep
        let latch_peer = UdpSocket::bind("127.0.0.1:0").await.unwrap();

        // The first packets go to the SDP address.
        let mut seen = Vec::new(); // (seq, timestamp, at)
        for i in 0..3 {
            let (pt, seq, ts, marker) =
                recv_rtp(&h.sdp_peer, Duration::from_secs(2)).await.unwrap();
            assert_eq!(pt, 0);
            assert_eq!(marker, i == 0, "marker on the first packet only");
            seen.push((seq, ts, std::time::Instant::now()));
        }
        // The caller's RTP comes from elsewhere (NAT): the gateway follows.
        latch_peer
            .send_to(&audio_packet(999, 0, false), h.gateway)
            .await
            .unwrap();
        let mut at_sdp = 3;
        let mut at_latched = 0;
        while seen.len() < expected {
            tokio::select! {
                Some((_, seq, ts, _)) = recv_rtp(&h.sdp_peer, Duration::from_secs(2)) => {
                    at_sdp += 1;
                    seen.push((seq, ts, std::time::Instant::now()));
                }
                Some((_, seq, ts, _)) = recv_rtp(&latch_peer, Duration::from_secs(2)) => {
                    at_latched += 1;
                    seen.push((seq, ts, std::time::Instant::now()));
                }
                else => panic!("prompt packets stopped after {}", seen.len()),
            }
        }
        assert!(at_latched >= 20, "sdp {at_sdp}, latched {at_latched}");
        let first = seen[0].0;
        seen.sort_by_key(|&(seq, ..)| seq.wrapping_sub(first));
        for pair in seen.windows(2) {
            assert_eq!(pair[1].0, pair[0].0.wrapping_add(1), "sequence continuity");
            assert_eq!(pair[1].1, pair[0].1.wrapping_add(160), "timestamp step");
        }
        let span = seen[expected - 1].2 - seen[0].2;
        assert!(
            span > Duration::from_millis(400) && span < Duration::from_millis(1500),
            "{span:?} for {expected} packets at 20 ms"
        );

        // 2 s of tone: 10 and 11 swapped, 50 lost.
        let order: Vec<u16> = (0..100u16)
            .filter(|&k| k != 50)
            .map(|k| match k {
                10 => 11,
                11 => 10,
                k => k,
            })
            .collect();
        talk(&latch_peer, h.gateway, &order).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        h.stop.send(true).unwrap();

        let rec = h.task.await.unwrap().unwrap();
        assert_eq!(rec.ended, EndReason::Hangup);
        assert_eq!(rec.packets_sent, expected as u64);
        assert_eq!(rec.remote_latched, Some(latch_peer.local_addr().unwrap()));
        assert_eq!((rec.stats.lost, rec.stats.reordered), (1, 1));
        assert_eq!(rec.stats.filled_samples, FRAME as u64);
        assert!(rec.duration.abs_diff(Duration::from_secs(2)) <= Duration::from_millis(100));
        assert_eq!(rec.path.as_deref(), Some(h.path.as_path()));
        let samples = wav::read_wav(&h.path).unwrap();
        assert_eq!(samples.len(), 100 * FRAME);
        assert!(rms(&samples) > 3000.0, "rms {}", rms(&samples));
        assert!(
            samples[50 * FRAME..51 * FRAME].iter().all(|&s| s == 0),
            "lost packet is silence"
        );
        assert!(rms(&samples[49 * FRAME..50 * FRAME]) > 3000.0);
        assert!(!wav::part_path(&h.path).exists());
    }

    #[tokio::test]
    async fn hash_ends_the_recording() {
        let h = start("hash.wav", 5, RecordLimits::default()).await;
        assert_eq!(drain_prompts(&h.sdp_peer).await, 25);
        let order: Vec<u16> = (0..60).collect();
        talk(&h.sdp_peer, h.gateway, &order).await;
        press_hash(&h.sdp_peer, h.gateway, 1060, 170_000).await;
        let rec = tokio::time::timeout(Duration::from_secs(2), h.task)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(rec.ended, EndReason::Dtmf);
        assert!(rec.duration.abs_diff(Duration::from_millis(1200)) <= Duration::from_millis(100));
        assert_eq!(wav::read_wav(&h.path).unwrap().len(), 60 * FRAME);
        drop(h.stop);
    }

    #[tokio::test]
    async fn silence_timeout_ends_the_recording() {
        let limits = RecordLimits {
            silence_timeout: Duration::from_millis(400),
            ..RecordLimits::default()
        };
        let h = start("silence.wav", 5, limits).await;
        drain_prompts(&h.sdp_peer).await;
        let order: Vec<u16> = (0..60).collect();
        talk(&h.sdp_peer, h.gateway, &order).await;
        // Then the caller keeps sending, but silence.
        let talked = Instant::now();
        let task = h.task;
        let sender = async {
            for k in 60..200u16 {
                let p = audio_packet(1000 + k, 160_000 + u32::from(k) * 160, false);
                h.sdp_peer.send_to(&p, h.gateway).await.unwrap();
                tokio::time::sleep(FRAME_TIME).await;
            }
        };
        let rec = tokio::select! {
            rec = task => rec.unwrap().unwrap(),
            () = sender => panic!("silence did not end the recording"),
        };
        assert_eq!(rec.ended, EndReason::Silence);
        let waited = talked.elapsed();
        assert!(
            waited >= Duration::from_millis(350) && waited < Duration::from_millis(1000),
            "{waited:?}"
        );
        assert!(
            rec.duration >= Duration::from_millis(1500),
            "{:?}",
            rec.duration
        );
        assert!(h.path.exists());
    }

    #[tokio::test]
    async fn hash_during_greeting_skips_to_beep_and_no_packets_times_out() {
        let limits = RecordLimits {
            silence_timeout: Duration::from_millis(300),
            ..RecordLimits::default()
        };
        let h = start("skip.wav", 100, limits).await; // a 2 s greeting
        for _ in 0..5 {
            recv_rtp(&h.sdp_peer, Duration::from_secs(2)).await.unwrap();
        }
        press_hash(&h.sdp_peer, h.gateway, 1, 800).await;
        let rest = drain_prompts(&h.sdp_peer).await;
        let rec = tokio::time::timeout(Duration::from_secs(2), h.task)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(rec.ended, EndReason::Silence);
        assert!(
            (20..40).contains(&rest),
            "{rest} packets after #: beep only"
        );
        assert_eq!(rec.packets_sent, 5 + rest as u64);
        assert_eq!((rec.path, rec.duration), (None, Duration::ZERO));
        assert!(!h.path.exists());
    }

    #[tokio::test]
    async fn too_short_leaves_no_file() {
        let h = start("short.wav", 5, RecordLimits::default()).await;
        drain_prompts(&h.sdp_peer).await;
        let order: Vec<u16> = (0..15).collect();
        talk(&h.sdp_peer, h.gateway, &order).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        h.stop.send(true).unwrap();
        let rec = h.task.await.unwrap().unwrap();
        assert_eq!((rec.ended, rec.path), (EndReason::Hangup, None));
        assert_eq!(rec.duration, Duration::from_millis(300));
        assert!(!h.path.exists() && !wav::part_path(&h.path).exists());
    }

    #[tokio::test]
    async fn max_length_truncates() {
        let limits = RecordLimits {
            max_length: Duration::from_secs(1),
            min_length: Duration::from_millis(500),
            ..RecordLimits::default()
        };
        let h = start("max.wav", 2, limits).await;
        drain_prompts(&h.sdp_peer).await;
        // Faster than real time: the length counts audio, not wall time.
        for k in 0..75u16 {
            let p = audio_packet(1000 + k, u32::from(k) * 160, true);
            h.sdp_peer.send_to(&p, h.gateway).await.unwrap();
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let rec = tokio::time::timeout(Duration::from_secs(2), h.task)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(rec.ended, EndReason::MaxLength);
        assert_eq!(rec.duration, Duration::from_secs(1));
        assert_eq!(wav::read_wav(&h.path).unwrap().len(), 8000);
    }

    #[tokio::test]
    async fn hangup_during_greeting_and_foreign_packets() {
        let h = start("hangup.wav", 50, RecordLimits::default()).await;
        recv_rtp(&h.sdp_peer, Duration::from_secs(2)).await.unwrap();
        h.sdp_peer
            .send_to(b"not rtp at all", h.gateway)
            .await
            .unwrap();
        h.sdp_peer
            .send_to(&audio_packet(1, 0, true), h.gateway)
            .await
            .unwrap();
        let intruder = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        intruder
            .send_to(&audio_packet(1, 0, true), h.gateway)
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        drop(h.stop); // the SIP side went away: same as a hang-up
        let rec = h.task.await.unwrap().unwrap();
        assert_eq!((rec.ended, rec.path), (EndReason::Hangup, None));
        assert_eq!(rec.packets_ignored, 2);
        assert_eq!(rec.remote_latched, Some(h.sdp_peer.local_addr().unwrap()));
    }

    /// Without a trusted SDP address nothing is sent until the caller's
    /// first packet; then the prompts go to that packet's source.
    #[tokio::test]
    async fn untrusted_sdp_address_waits_for_the_callers_first_packet() {
        let h = start_with("untrusted.wav", 20, RecordLimits::default(), false).await;
        assert_eq!(
            recv_rtp(&h.sdp_peer, Duration::from_millis(200)).await,
            None,
            "nothing may go to the SDP address"
        );
        let caller = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        caller
            .send_to(&audio_packet(1, 160, false), h.gateway)
            .await
            .unwrap();
        assert!(recv_rtp(&caller, Duration::from_millis(500))
            .await
            .is_some());
        assert_eq!(
            recv_rtp(&h.sdp_peer, Duration::from_millis(100)).await,
            None
        );
        h.stop.send_replace(true);
        let recording = h.task.await.unwrap().unwrap();
        assert_eq!(recording.remote_latched, Some(caller.local_addr().unwrap()));
    }
}
