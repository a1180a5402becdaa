//! G.711 (ITU-T G.711, 1988): the two 8-bit log-PCM codecs every SIP phone
//! speaks, μ-law (PCMU, payload type 0) and A-law (PCMA, payload type 8).
//!
//! Encoding works on 16-bit linear samples: μ-law keeps 14 bits of
//! magnitude, A-law 13; the low bits are dropped. Decoding goes through two
//! 256-entry tables computed at compile time, so the recording hot path is a
//! table lookup per byte.

/// Added before μ-law segment search so every segment has the same shape.
const ULAW_BIAS: i32 = 0x84;
/// Largest magnitude μ-law can represent once the bias is added.
const ULAW_CLIP: i32 = 32_635;

/// Encodes one linear sample as μ-law.
pub fn ulaw_encode(sample: i16) -> u8 {
    let mut magnitude = i32::from(sample);
    let sign = if magnitude < 0 {
        magnitude = -magnitude;
        0x80
    } else {
        0
    };
    magnitude = magnitude.min(ULAW_CLIP) + ULAW_BIAS;
    // magnitude is in 0x84..=0x7FFF, so magnitude >> 7 is in 1..=255 and the
    // exponent (its highest set bit) is in 0..=7.
    let exponent = 7 - ((magnitude >> 7) as u8).leading_zeros() as i32;
    let mantissa = (magnitude >> (exponent + 3)) & 0x0F;
    !(sign | (exponent << 4) | mantissa) as u8
}

/// Decodes one μ-law byte (0xFF and 0x7F are the two zeros).
pub fn ulaw_decode(byte: u8) -> i16 {
    ULAW_TABLE[usize::from(byte)]
}

/// Segment ends of the 13-bit A-law magnitude.
const ALAW_SEGMENT_END: [i32; 8] = [0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF];

/// Encodes one linear sample as A-law (even bits inverted, 0x55 mask).
pub fn alaw_encode(sample: i16) -> u8 {
    let mut magnitude = i32::from(sample) >> 3;
    let mask: u8 = if magnitude >= 0 {
        0xD5
    } else {
        magnitude = -magnitude - 1;
        0x55
    };
    let Some(segment) = ALAW_SEGMENT_END.iter().position(|&end| magnitude <= end) else {
        return 0x7F ^ mask;
    };
    let shift = if segment < 2 { 1 } else { segment };
    let value = ((segment as i32) << 4) | ((magnitude >> shift) & 0x0F);
    (value as u8) ^ mask
}

/// Decodes one A-law byte.
pub fn alaw_decode(byte: u8) -> i16 {
    ALAW_TABLE[usize::from(byte)]
}

/// Decodes a whole payload into `out` (its first `payload.len()` samples);
/// returns how many samples were written. `out` must be at least as long.
pub fn decode_into(law: Law, payload: &[u8], out: &mut [i16]) -> usize {
    let table = match law {
        Law::Ulaw => &ULAW_TABLE,
        Law::Alaw => &ALAW_TABLE,
    };
    let n = payload.len().min(out.len());
    for (dst, &byte) in out[..n].iter_mut().zip(payload) {
        *dst = table[usize::from(byte)];
    }
    n
}

/// Encodes `samples` into `out`; returns how many bytes were written.
pub fn encode_into(law: Law, samples: &[i16], out: &mut [u8]) -> usize {
    let encode = match law {
        Law::Ulaw => ulaw_encode,
        Law::Alaw => alaw_encode,
    };
    let n = samples.len().min(out.len());
    for (dst, &sample) in out[..n].iter_mut().zip(samples) {
        *dst = encode(sample);
    }
    n
}

/// Which of the two G.711 companding laws.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Law {
    /// μ-law: North America and Japan; PCMU.
    Ulaw,
    /// A-law: the rest of the world; PCMA.
    Alaw,
}

/// μ-law decode table, built at compile time.
static ULAW_TABLE: [i16; 256] = build_ulaw_table();
/// A-law decode table, built at compile time.
static ALAW_TABLE: [i16; 256] = build_alaw_table();

const fn build_ulaw_table() -> [i16; 256] {
    let mut table = [0i16; 256];
    let mut i = 0;
    while i < 256 {
        let byte = !(i as u8);
        let exponent = ((byte >> 4) & 0x07) as i32;
        let mantissa = (byte & 0x0F) as i32;
        let magnitude = (((mantissa << 3) + ULAW_BIAS) << exponent) - ULAW_BIAS;
        table[i] = if byte & 0x80 != 0 {
            -magnitude as i16
        } else {
            magnitude as i16
        };
        i += 1;
    }
    table
}

const fn build_alaw_table() -> [i16; 256] {
    let mut table = [0i16; 256];
    let mut i = 0;
    while i < 256 {
        let byte = (i as u8) ^ 0x55;
        let segment = ((byte & 0x70) >> 4) as i32;
        let mut magnitude = ((byte & 0x0F) as i32) << 4;
        magnitude += if segment == 0 { 8 } else { 0x108 };
        if segment > 1 {
            magnitude <<= segment - 1;
        }
        table[i] = if byte & 0x80 != 0 {
            magnitude as i16
        } else {
            -magnitude as i16
        };
        i += 1;
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ulaw_known_values() {
        assert_eq!(ulaw_decode(0xFF), 0);
        assert_eq!(ulaw_decode(0x7F), 0);
        assert_eq!(ulaw_decode(0x00), -32124);
        assert_eq!(ulaw_decode(0x80), 32124);
        assert_eq!(ulaw_encode(0), 0xFF);
        assert_eq!(ulaw_encode(i16::MAX), 0x80);
        assert_eq!(ulaw_encode(i16::MIN), 0x00);
        assert_eq!(ulaw_encode(-1), 0x7F);
    }

    #[test]
    fn alaw_known_values() {
        assert_eq!(alaw_decode(0xD5), 8);
        assert_eq!(alaw_decode(0x55), -8);
        assert_eq!(alaw_decode(0xAA), 32256);
        assert_eq!(alaw_decode(0x2A), -32256);
        assert_eq!(alaw_encode(0), 0xD5);
        assert_eq!(alaw_encode(-1), 0x55);
        assert_eq!(alaw_encode(i16::MAX), 0xAA);
        assert_eq!(alaw_encode(i16::MIN), 0x2A);
    }

    #[test]
    fn every_code_survives_decode_then_encode() {
        for byte in 0..=255u8 {
            assert_eq!(alaw_encode(alaw_decode(byte)), byte, "alaw {byte:#04x}");
            // 0x7F is μ-law's negative zero; it encodes back as 0xFF.
            if byte != 0x7F {
                assert_eq!(ulaw_encode(ulaw_decode(byte)), byte, "ulaw {byte:#04x}");
            }
        }
    }

    #[test]
    fn quantization_error_is_bounded_and_sign_is_kept() {
        for x in -32_000i16..=32_000 {
            let bound = i32::from(x).abs() / 16 + 16;
            for (name, y) in [
                ("ulaw", ulaw_decode(ulaw_encode(x))),
                ("alaw", alaw_decode(alaw_encode(x))),
            ] {
                let err = (i32::from(y) - i32::from(x)).abs();
                assert!(err <= bound, "{name} {x} -> {y}");
                assert!(
                    i32::from(x) * i32::from(y) >= 0 || x.abs() < 16,
                    "{name} sign {x}"
                );
            }
        }
    }

    #[test]
    fn decoders_are_monotonic() {
        let mut ulaw: Vec<i16> = (0..=255).map(ulaw_decode).collect();
        let mut alaw: Vec<i16> = (0..=255).map(alaw_decode).collect();
        ulaw.sort_unstable();
        alaw.sort_unstable();
        ulaw.dedup();
        alaw.dedup();
        assert_eq!(ulaw.len(), 255);
        assert_eq!(alaw.len(), 256);
    }

    #[test]
    fn slice_helpers() {
        let samples = [0i16, 1000, -1000, 32000];
        let mut bytes = [0u8; 4];
        let mut back = [0i16; 4];
        for law in [Law::Ulaw, Law::Alaw] {
            assert_eq!(encode_into(law, &samples, &mut bytes), 4);
            assert_eq!(decode_into(law, &bytes, &mut back), 4);
            for (a, b) in samples.iter().zip(back) {
                assert!((i32::from(*a) - i32::from(b)).abs() <= 2000);
            }
        }
    }
}
