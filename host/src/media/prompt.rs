//! What the caller hears: a greeting, then the beep that says "speak now".
//!
//! There is no speech synthesis in the gateway, so the built-in greeting is
//! a short two-note chime (a doorbell "ding-dong") that sounds deliberate
//! rather than broken. Mailboxes can have their own greeting as a WAV file.

use std::f64::consts::TAU;
use std::path::Path;

use crate::media::wav::{self, WavError, SAMPLE_RATE};

/// The beep: 1 kHz for 0.4 s at about -12 dBFS, the classic record tone.
pub fn beep() -> Vec<i16> {
    const MS: usize = 400;
    // -12 dBFS: 10^(-12/20) of full scale.
    let amplitude = 32767.0 * 10f64.powf(-12.0 / 20.0);
    let len = SAMPLE_RATE as usize * MS / 1000;
    // 5 ms ramps at both ends avoid clicks.
    let ramp = SAMPLE_RATE as usize / 200;
    (0..len)
        .map(|i| {
            let edge = i.min(len - 1 - i);
            let gain = (edge as f64 / ramp as f64).min(1.0);
            let t = i as f64 / f64::from(SAMPLE_RATE);
            (amplitude * gain * (TAU * 1000.0 * t).sin()) as i16
        })
        .collect()
}

/// The built-in greeting: a 1.5 s chime, A5 then E5, each note struck and
/// decaying like a bell, with a soft octave overtone.
pub fn chime() -> Vec<i16> {
    let len = SAMPLE_RATE as usize * 3 / 2;
    // (frequency Hz, start s, peak amplitude)
    let notes = [(880.0, 0.0, 0.30), (659.25, 0.55, 0.34)];
    (0..len)
        .map(|i| {
            let t = i as f64 / f64::from(SAMPLE_RATE);
            let mut v = 0.0;
            for (freq, start, peak) in notes {
                let local = t - start;
                if local < 0.0 {
                    continue;
                }
                let attack = (local / 0.01).min(1.0);
                let envelope = peak * attack * (-local * 3.5).exp();
                v += envelope
                    * ((TAU * freq * local).sin() + 0.3 * (TAU * 2.0 * freq * local).sin());
            }
            // Fade the last 50 ms so the beep follows a clean end.
            let tail = ((len - i) as f64 / 400.0).min(1.0);
            (v * tail * 32767.0).clamp(-32767.0, 32767.0) as i16
        })
        .collect()
}

/// Loads a greeting from a WAV file (see [`wav::read_wav`] for the
/// accepted formats); one without audio is an error. Blocking: the gateway
/// loads every greeting once, at start.
pub fn load_greeting(path: &Path) -> Result<Vec<i16>, WavError> {
    let samples = wav::read_wav(path)?;
    if samples.is_empty() {
        return Err(WavError::Invalid {
            path: path.to_owned(),
            reason: "no audio in the data chunk".into(),
        });
    }
    Ok(samples)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rms(s: &[i16]) -> f64 {
        (s.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>() / s.len() as f64).sqrt()
    }

    #[test]
    fn beep_is_one_khz_at_minus_12_dbfs() {
        let b = beep();
        assert_eq!(b.len(), 3200);
        let peak = b.iter().map(|x| x.unsigned_abs()).max().unwrap();
        assert!((8100..=8300).contains(&peak), "{peak}");
        // 1 kHz at 8 kHz: the waveform repeats every 8 samples.
        for i in 100..3000 {
            assert!((i32::from(b[i]) - i32::from(b[i + 8])).abs() <= 2);
        }
        assert_eq!((b[0], *b.last().unwrap()), (0, 0));
    }

    #[test]
    fn chime_is_audible_and_ends_quietly() {
        let c = chime();
        assert_eq!(c.len(), 12_000);
        assert!(rms(&c) > 1500.0);
        assert!(c.iter().all(|&x| x > i16::MIN));
        assert!(c[c.len() - 1].abs() < 200);
    }

    #[test]
    fn greeting_from_file() {
        let path = crate::media::wav::tests::temp_path("greeting.wav");
        let ulaw = crate::media::wav::tests::wav_bytes(7, 1, 8000, 8, &[0xFF, 0x80]);
        std::fs::write(&path, ulaw).unwrap();
        assert_eq!(load_greeting(&path).unwrap(), [0, 32124]);
        let empty = crate::media::wav::tests::temp_path("empty.wav");
        std::fs::write(
            &empty,
            crate::media::wav::tests::wav_bytes(1, 1, 8000, 16, &[]),
        )
        .unwrap();
        let err = load_greeting(&empty).unwrap_err().to_string();
        assert!(
            err.contains("empty.wav") && err.contains("no audio"),
            "{err}"
        );
    }
}
