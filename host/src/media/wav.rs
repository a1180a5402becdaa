//! WAV files: the recordings we write and the greetings we read.
//!
//! Recordings are RIFF/WAVE, 8 kHz mono 16-bit PCM: every player opens them
//! and no codec is needed. They are written to `<name>.part` and renamed on
//! finish, so whoever watches the mailbox folder never sees half a file
//! under its final name. Greetings may be 16-bit PCM or G.711 (what phone
//! systems usually ship), at 8 kHz mono; anything else is refused with the
//! file and the reason named, rather than played too fast or as noise.

use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::media::g711;

/// The only sample rate of the media engine (G.711's).
pub const SAMPLE_RATE: u32 = 8000;
/// Size of the canonical 44-byte header we write.
pub const HEADER_LEN: usize = 44;
/// Greeting files above this size are refused (about 10 minutes of PCM).
pub const MAX_GREETING_BYTES: u64 = 10 * 1024 * 1024;

const FORMAT_PCM: u16 = 1;
const FORMAT_ALAW: u16 = 6;
const FORMAT_ULAW: u16 = 7;
const FORMAT_EXTENSIBLE: u16 = 0xFFFE;

/// A WAV file could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum WavError {
    /// The file system refused (open, write, rename, read).
    #[error("{path}: {source}")]
    Io {
        /// The file concerned.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The file is not a WAV file we can play; `reason` says why.
    #[error("{path}: {reason}")]
    Invalid {
        /// The file concerned.
        path: PathBuf,
        /// What is wrong, for the operator.
        reason: String,
    },
    /// More samples than a WAV data chunk (4 GiB) can hold.
    #[error("{path}: recording too long for WAV")]
    TooLong {
        /// The file concerned.
        path: PathBuf,
    },
}

/// The `.part` name a file is written under until it is complete.
pub fn part_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".part");
    PathBuf::from(name)
}

/// Streams 8 kHz mono 16-bit PCM into `<path>.part`; [`WavWriter::finish`]
/// fixes the sizes in the header and renames it to `path`. Dropped
/// unfinished, it removes the `.part` file.
#[derive(Debug)]
pub struct WavWriter {
    file: Option<BufWriter<File>>,
    path: PathBuf,
    part: PathBuf,
    /// Data bytes written so far, for the header.
    data_bytes: u64,
}

impl WavWriter {
    /// Creates (truncates) `<path>.part` and writes a placeholder header.
    pub fn create(path: &Path) -> Result<Self, WavError> {
        let part = part_path(path);
        let file = File::create(&part).map_err(|source| WavError::Io {
            path: part.clone(),
            source,
        })?;
        let mut writer = Self {
            file: Some(BufWriter::new(file)),
            path: path.to_owned(),
            part,
            data_bytes: 0,
        };
        writer.io(|f| f.write_all(&header(0)))?;
        Ok(writer)
    }

    /// Appends samples (little-endian, as WAV wants).
    pub fn write_samples(&mut self, samples: &[i16]) -> Result<(), WavError> {
        let added = 2 * samples.len() as u64;
        if self.data_bytes + added > u64::from(u32::MAX) - HEADER_LEN as u64 {
            return Err(WavError::TooLong {
                path: self.path.clone(),
            });
        }
        self.io(|f| {
            for s in samples {
                f.write_all(&s.to_le_bytes())?;
            }
            Ok(())
        })?;
        self.data_bytes += added;
        Ok(())
    }

    /// Writes the real sizes, syncs and renames `.part` to the final name.
    pub fn finish(mut self) -> Result<PathBuf, WavError> {
        // data_bytes is checked against u32::MAX in write_samples.
        let data_bytes = self.data_bytes as u32;
        self.io(|f| {
            f.flush()?;
            f.seek(SeekFrom::Start(0))?;
            f.write_all(&header(data_bytes))?;
            f.flush()?;
            f.get_ref().sync_data()
        })?;
        self.file = None;
        std::fs::rename(&self.part, &self.path).map_err(|source| WavError::Io {
            path: self.path.clone(),
            source,
        })?;
        Ok(self.path.clone())
    }

    fn io(
        &mut self,
        op: impl FnOnce(&mut BufWriter<File>) -> std::io::Result<()>,
    ) -> Result<(), WavError> {
        let Some(file) = self.file.as_mut() else {
            return Ok(()); // only after finish, which consumes self
        };
        op(file).map_err(|source| WavError::Io {
            path: self.part.clone(),
            source,
        })
    }
}

impl Drop for WavWriter {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            // Unfinished: never leave a stray partial file behind.
            let _ = std::fs::remove_file(&self.part);
        }
    }
}

/// Writes a whole recording: `.part`, then renamed. Blocking; call it from
/// `spawn_blocking` in async code.
pub fn write_wav(path: &Path, samples: &[i16]) -> Result<PathBuf, WavError> {
    let mut writer = WavWriter::create(path)?;
    writer.write_samples(samples)?;
    writer.finish()
}

/// The 44-byte RIFF header for `data_bytes` of 8 kHz mono 16-bit PCM.
fn header(data_bytes: u32) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[0..4].copy_from_slice(b"RIFF");
    h[4..8].copy_from_slice(&(36 + data_bytes).to_le_bytes());
    h[8..12].copy_from_slice(b"WAVE");
    h[12..16].copy_from_slice(b"fmt ");
    h[16..20].copy_from_slice(&16u32.to_le_bytes());
    h[20..22].copy_from_slice(&FORMAT_PCM.to_le_bytes());
    h[22..24].copy_from_slice(&1u16.to_le_bytes()); // channels
    h[24..28].copy_from_slice(&SAMPLE_RATE.to_le_bytes());
    h[28..32].copy_from_slice(&(SAMPLE_RATE * 2).to_le_bytes()); // bytes per second
    h[32..34].copy_from_slice(&2u16.to_le_bytes()); // block align
    h[34..36].copy_from_slice(&16u16.to_le_bytes()); // bits per sample
    h[36..40].copy_from_slice(b"data");
    h[40..44].copy_from_slice(&data_bytes.to_le_bytes());
    h
}

/// Reads a greeting: 8 kHz mono, 16-bit PCM, A-law or μ-law. Blocking.
pub fn read_wav(path: &Path) -> Result<Vec<i16>, WavError> {
    let io_err = |source| WavError::Io {
        path: path.to_owned(),
        source,
    };
    let len = std::fs::metadata(path).map_err(io_err)?.len();
    if len > MAX_GREETING_BYTES {
        return Err(WavError::Invalid {
            path: path.to_owned(),
            reason: format!("{len} bytes, more than the {MAX_GREETING_BYTES} allowed"),
        });
    }
    let bytes = std::fs::read(path).map_err(io_err)?;
    parse_wav(&bytes).map_err(|reason| WavError::Invalid {
        path: path.to_owned(),
        reason,
    })
}

/// Decodes WAV bytes to samples; the error is the reason, for [`read_wav`].
fn parse_wav(bytes: &[u8]) -> Result<Vec<i16>, String> {
    if bytes.len() < 12 || &bytes[0..4] != b"RIFF" || &bytes[8..12] != b"WAVE" {
        return Err("not a RIFF/WAVE file".into());
    }
    let mut format = None;
    let mut rest = &bytes[12..];
    while rest.len() >= 8 {
        let id = &rest[0..4];
        let size = u32::from_le_bytes([rest[4], rest[5], rest[6], rest[7]]) as usize;
        let body = &rest[8..];
        let chunk_name = String::from_utf8_lossy(id);
        if size > body.len() {
            return Err(format!(
                "truncated: chunk '{chunk_name}' announces {size} bytes, {} present",
                body.len()
            ));
        }
        let chunk = &body[..size];
        match id {
            b"fmt " => format = Some(parse_fmt(chunk)?),
            b"data" => {
                let Some(tag) = format else {
                    return Err("'data' chunk before 'fmt ' chunk".into());
                };
                return decode(tag, chunk);
            }
            _ => {}
        }
        // Chunks are padded to an even length.
        let next = (size + 1) & !1;
        rest = body.get(next..).unwrap_or(&[]);
    }
    Err(if format.is_none() {
        "no 'fmt ' chunk".into()
    } else {
        "no 'data' chunk".into()
    })
}

/// Checks the `fmt ` chunk; returns the format tag we will decode.
fn parse_fmt(chunk: &[u8]) -> Result<u16, String> {
    if chunk.len() < 16 {
        return Err(format!(
            "'fmt ' chunk of {} bytes, expected at least 16",
            chunk.len()
        ));
    }
    let u16_at = |i: usize| u16::from_le_bytes([chunk[i], chunk[i + 1]]);
    let mut tag = u16_at(0);
    if tag == FORMAT_EXTENSIBLE && chunk.len() >= 26 {
        // WAVE_FORMAT_EXTENSIBLE: the real tag opens the sub-format GUID.
        tag = u16_at(24);
    }
    let channels = u16_at(2);
    let rate = u32::from_le_bytes([chunk[4], chunk[5], chunk[6], chunk[7]]);
    let bits = u16_at(14);
    let expected_bits = match tag {
        FORMAT_PCM => 16,
        FORMAT_ALAW | FORMAT_ULAW => 8,
        other => {
            return Err(format!(
                "format tag {other}; only PCM (1), A-law (6) and μ-law (7) are supported"
            ))
        }
    };
    if channels != 1 {
        return Err(format!("{channels} channels; greetings must be mono"));
    }
    if rate != SAMPLE_RATE {
        return Err(format!("{rate} Hz; greetings must be {SAMPLE_RATE} Hz"));
    }
    if bits != expected_bits {
        return Err(format!(
            "{bits} bits per sample; format {tag} must be {expected_bits}-bit"
        ));
    }
    Ok(tag)
}

fn decode(tag: u16, data: &[u8]) -> Result<Vec<i16>, String> {
    match tag {
        FORMAT_PCM => {
            if !data.len().is_multiple_of(2) {
                return Err("truncated: odd number of bytes of 16-bit PCM".into());
            }
            Ok(data
                .chunks_exact(2)
                .map(|b| i16::from_le_bytes([b[0], b[1]]))
                .collect())
        }
        FORMAT_ALAW => Ok(data.iter().map(|&b| g711::alaw_decode(b)).collect()),
        _ => Ok(data.iter().map(|&b| g711::ulaw_decode(b)).collect()),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A fresh path in the system temp folder, unique per test.
    pub(crate) fn temp_path(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("sipfence-media-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join(name)
    }

    /// A WAV file with an arbitrary fmt chunk and data.
    pub(crate) fn wav_bytes(tag: u16, channels: u16, rate: u32, bits: u16, data: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(b"RIFF");
        v.extend_from_slice(&(4 + 8 + 16 + 8 + data.len() as u32).to_le_bytes());
        v.extend_from_slice(b"WAVE");
        v.extend_from_slice(b"LIST");
        v.extend_from_slice(&3u32.to_le_bytes());
        v.extend_from_slice(b"abc\0"); // odd chunk plus its pad byte
        v.extend_from_slice(b"fmt ");
        v.extend_from_slice(&16u32.to_le_bytes());
        v.extend_from_slice(&tag.to_le_bytes());
        v.extend_from_slice(&channels.to_le_bytes());
        v.extend_from_slice(&rate.to_le_bytes());
        let block = channels * bits / 8;
        v.extend_from_slice(&(rate * u32::from(block)).to_le_bytes());
        v.extend_from_slice(&block.to_le_bytes());
        v.extend_from_slice(&bits.to_le_bytes());
        v.extend_from_slice(b"data");
        v.extend_from_slice(&(data.len() as u32).to_le_bytes());
        v.extend_from_slice(data);
        v
    }

    #[test]
    fn header_fields_are_right() {
        let path = temp_path("header.wav");
        let samples: Vec<i16> = (0..1000).map(|i| (i * 7) as i16).collect();
        assert_eq!(write_wav(&path, &samples).unwrap(), path);
        assert!(!part_path(&path).exists());
        let b = std::fs::read(&path).unwrap();
        let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().unwrap());
        let u16_at = |i: usize| u16::from_le_bytes(b[i..i + 2].try_into().unwrap());
        assert_eq!(b.len(), 44 + 2000);
        assert_eq!(&b[0..4], b"RIFF");
        assert_eq!(u32_at(4), 36 + 2000);
        assert_eq!(&b[8..16], b"WAVEfmt ");
        assert_eq!(u32_at(16), 16);
        assert_eq!((u16_at(20), u16_at(22)), (1, 1));
        assert_eq!((u32_at(24), u32_at(28)), (8000, 16000));
        assert_eq!((u16_at(32), u16_at(34)), (2, 16));
        assert_eq!(&b[36..40], b"data");
        assert_eq!(u32_at(40), 2000);
        assert_eq!(i16::from_le_bytes([b[46], b[47]]), 7);
        assert_eq!(read_wav(&path).unwrap(), samples);
    }

    #[test]
    fn unfinished_writer_leaves_nothing() {
        let path = temp_path("unfinished.wav");
        let mut w = WavWriter::create(&path).unwrap();
        w.write_samples(&[1, 2, 3]).unwrap();
        assert!(part_path(&path).exists());
        assert!(!path.exists(), "never visible under the final name");
        drop(w);
        assert!(!part_path(&path).exists());
        assert!(!path.exists());
    }

    #[test]
    fn reads_g711_greetings() {
        let ulaw = wav_bytes(7, 1, 8000, 8, &[0xFF, 0x00, 0x80]);
        assert_eq!(parse_wav(&ulaw).unwrap(), [0, -32124, 32124]);
        let alaw = wav_bytes(6, 1, 8000, 8, &[0xD5, 0x55]);
        assert_eq!(parse_wav(&alaw).unwrap(), [8, -8]);
        let pcm = wav_bytes(1, 1, 8000, 16, &[0x01, 0x00, 0xFF, 0xFF]);
        assert_eq!(parse_wav(&pcm).unwrap(), [1, -1]);
    }

    #[test]
    fn rejections_name_file_and_reason() {
        let cases: [(Vec<u8>, &str); 8] = [
            (wav_bytes(1, 1, 16000, 16, &[0; 4]), "16000 Hz"),
            (wav_bytes(1, 2, 8000, 16, &[0; 4]), "2 channels"),
            (wav_bytes(3, 1, 8000, 32, &[0; 4]), "format tag 3"),
            (wav_bytes(1, 1, 8000, 8, &[0; 4]), "8 bits"),
            (wav_bytes(1, 1, 8000, 16, &[0; 3]), "odd number"),
            (b"RIFX\0\0\0\0WAVE".to_vec(), "not a RIFF/WAVE"),
            (b"RIFF\0\0\0\0WAVE".to_vec(), "no 'fmt '"),
            (
                {
                    let mut v = wav_bytes(1, 1, 8000, 16, &[0; 100]);
                    v.truncate(v.len() - 10);
                    v
                },
                "truncated",
            ),
        ];
        for (i, (bytes, reason)) in cases.iter().enumerate() {
            let path = temp_path(&format!("bad-{i}.wav"));
            std::fs::write(&path, bytes).unwrap();
            let err = read_wav(&path).unwrap_err().to_string();
            assert!(err.contains(reason), "{err}");
            assert!(err.contains(&format!("bad-{i}.wav")), "{err}");
        }
        let missing = temp_path("missing.wav");
        assert!(matches!(read_wav(&missing), Err(WavError::Io { .. })));
    }
}
