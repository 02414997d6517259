//! Pure XKS envelope pieces: the key-manager AAD framing, keygate's ciphertext metadata
//! (key version + framing scheme), and the Ciphertext Data Integrity Value (CDIV).

use sha2::{Digest, Sha256};

/// Longest `ciphertextMetadata` the spec allows, in bytes.
pub const MAX_METADATA_LEN: usize = 20;
/// Longest AAD the framing can carry (its length is a u16).
pub const MAX_FRAMED_AAD_LEN: usize = u16::MAX as usize;

/// First byte of keygate's ciphertext metadata.
const METADATA_MAGIC: u8 = b'k';

/// How the AAD given to AES-GCM was built. Recorded in every ciphertext's metadata so the
/// scheme can change later without breaking old ciphertexts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FramingScheme {
    /// The spec's layout: `u16_be(len(AAD)) || AAD || u8(len(metadata)) || metadata`.
    SpecV1 = 1,
}

/// keygate's `ciphertextMetadata`: `'k' || scheme (u8) || key version (u32 big-endian)`, 6 bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CiphertextMetadata {
    pub scheme: FramingScheme,
    pub key_version: u32,
}

impl CiphertextMetadata {
    pub const LEN: usize = 6;

    pub fn new(key_version: u32) -> Self {
        CiphertextMetadata {
            scheme: FramingScheme::SpecV1,
            key_version,
        }
    }

    pub fn encode(&self) -> [u8; Self::LEN] {
        let v = self.key_version.to_be_bytes();
        [METADATA_MAGIC, self.scheme as u8, v[0], v[1], v[2], v[3]]
    }

    /// Reads metadata written by [`CiphertextMetadata::encode`]; `None` for anything else.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        match bytes {
            [METADATA_MAGIC, 1, a, b, c, d] => Some(CiphertextMetadata {
                scheme: FramingScheme::SpecV1,
                key_version: u32::from_be_bytes([*a, *b, *c, *d]),
            }),
            _ => None,
        }
    }
}

/// Why an AAD cannot be framed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FramingError {
    #[error("additionalAuthenticatedData is {0} bytes; at most 65535 can be bound")]
    AadTooLong(usize),
    #[error("ciphertextMetadata is {0} bytes; at most 20 are allowed")]
    MetadataTooLong(usize),
}

/// The spec's key-manager AAD: `u16_be(len(AAD)) || AAD || u8(len(metadata)) || metadata`.
/// A missing AAD and an empty AAD frame identically.
pub fn frame_aad(aad: &[u8], metadata: &[u8]) -> Result<Vec<u8>, FramingError> {
    let aad_len = u16::try_from(aad.len()).map_err(|_| FramingError::AadTooLong(aad.len()))?;
    let meta_len = u8::try_from(metadata.len())
        .ok()
        .filter(|l| usize::from(*l) <= MAX_METADATA_LEN)
        .ok_or(FramingError::MetadataTooLong(metadata.len()))?;
    let mut out = Vec::with_capacity(3 + aad.len() + metadata.len());
    out.extend_from_slice(&aad_len.to_be_bytes());
    out.extend_from_slice(aad);
    out.push(meta_len);
    out.extend_from_slice(metadata);
    Ok(out)
}

/// CDIV = SHA-256(AAD || ciphertextMetadata || IV || ciphertext || tag), raw bytes, no lengths.
pub fn cdiv(aad: &[u8], metadata: &[u8], iv: &[u8], ciphertext: &[u8], tag: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    for part in [aad, metadata, iv, ciphertext, tag] {
        h.update(part);
    }
    h.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::{Engine, engine::general_purpose::STANDARD};
    use proptest::prelude::*;

    fn vectors() -> serde_json::Value {
        serde_json::from_str(include_str!("../../xks-spec/test-vectors.json")).unwrap()
    }

    fn b64(v: &serde_json::Value, k: &str) -> Vec<u8> {
        STANDARD.decode(v[k].as_str().unwrap()).unwrap()
    }

    #[test]
    fn aad_framing_matches_spec_vectors() {
        for v in vectors()["aad_framing"].as_array().unwrap() {
            let framed = frame_aad(&b64(v, "aad_b64"), &b64(v, "ciphertext_metadata_b64")).unwrap();
            assert_eq!(
                hex::encode(framed),
                v["framed_hex"].as_str().unwrap(),
                "{}",
                v["name"]
            );
        }
    }

    #[test]
    fn cdiv_matches_spec_vector() {
        for v in vectors()["cdiv"].as_array().unwrap() {
            let d = cdiv(
                &b64(v, "aad_b64"),
                &b64(v, "ciphertext_metadata_b64"),
                &b64(v, "initialization_vector_b64"),
                &b64(v, "ciphertext_b64"),
                &b64(v, "authentication_tag_b64"),
            );
            assert_eq!(STANDARD.encode(d), v["cdiv_b64"].as_str().unwrap());
        }
    }

    #[test]
    fn framing_limits() {
        assert!(frame_aad(&vec![0; 65535], &[]).is_ok());
        assert_eq!(
            frame_aad(&vec![0; 65536], &[]),
            Err(FramingError::AadTooLong(65536))
        );
        assert_eq!(
            frame_aad(&[], &[0; 21]),
            Err(FramingError::MetadataTooLong(21))
        );
        assert_eq!(
            frame_aad(&[], &[0; 300]),
            Err(FramingError::MetadataTooLong(300))
        );
    }

    #[test]
    fn metadata_round_trips_and_rejects_foreign_bytes() {
        let m = CiphertextMetadata::new(7);
        assert_eq!(CiphertextMetadata::decode(&m.encode()), Some(m));
        assert!(m.encode().len() <= MAX_METADATA_LEN);
        assert_eq!(CiphertextMetadata::decode(b"key_version=1"), None);
        assert_eq!(CiphertextMetadata::decode(&[b'k', 2, 0, 0, 0, 1]), None);
        assert_eq!(CiphertextMetadata::decode(&[]), None);
    }

    proptest! {
        /// The lengths make the framing injective: moving bytes between AAD and metadata
        /// always changes the framed value.
        #[test]
        fn framing_is_injective(a in proptest::collection::vec(any::<u8>(), 0..64),
                                m in proptest::collection::vec(any::<u8>(), 0..=20),
                                b in proptest::collection::vec(any::<u8>(), 0..64),
                                n in proptest::collection::vec(any::<u8>(), 0..=20)) {
            let x = frame_aad(&a, &m).unwrap();
            let y = frame_aad(&b, &n).unwrap();
            prop_assert_eq!(x == y, a == b && m == n);
        }

        #[test]
        fn framed_length_is_exact(a in proptest::collection::vec(any::<u8>(), 0..512),
                                  m in proptest::collection::vec(any::<u8>(), 0..=20)) {
            prop_assert_eq!(frame_aad(&a, &m).unwrap().len(), 3 + a.len() + m.len());
        }

        /// The framing reads back: the length prefix gives the AAD, the length byte the metadata.
        #[test]
        fn framing_reads_back(a in proptest::collection::vec(any::<u8>(), 0..600),
                              m in proptest::collection::vec(any::<u8>(), 0..=20)) {
            let f = frame_aad(&a, &m).unwrap();
            let n = usize::from(u16::from_be_bytes([f[0], f[1]]));
            prop_assert_eq!(&f[2..2 + n], a.as_slice());
            prop_assert_eq!(usize::from(f[2 + n]), m.len());
            prop_assert_eq!(&f[3 + n..], m.as_slice());
        }

        /// CDIV is SHA-256 over the plain concatenation, in the spec's order.
        #[test]
        fn cdiv_is_the_hash_of_the_concatenation(parts in proptest::collection::vec(
            proptest::collection::vec(any::<u8>(), 0..64), 5)) {
            let joined: Vec<u8> = parts.concat();
            let expected: [u8; 32] = Sha256::digest(&joined).into();
            prop_assert_eq!(cdiv(&parts[0], &parts[1], &parts[2], &parts[3], &parts[4]), expected);
        }

        /// Metadata of any version round-trips and fits the spec's 20 bytes.
        #[test]
        fn metadata_round_trips(v in any::<u32>()) {
            let m = CiphertextMetadata::new(v);
            prop_assert_eq!(CiphertextMetadata::decode(&m.encode()), Some(m));
        }

        #[test]
        fn metadata_decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..32)) {
            let _ = CiphertextMetadata::decode(&bytes);
        }
    }
}
