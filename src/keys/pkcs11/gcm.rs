//! AES-256-GCM as single-part C_Encrypt/C_Decrypt, with the three IV modes.

use cryptoki::mechanism::Mechanism;
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::object::ObjectHandle;
use cryptoki::session::Session;
use zeroize::Zeroizing;

use super::engine::Fault;
use super::settings::IvMode;
use crate::keys::{IV_LEN, KeyError, Sealed, SealedRef, TAG_LEN};

const TAG_BITS: u64 = (TAG_LEN as u64) * 8;

pub fn encrypt(
    session: &Session,
    key: ObjectHandle,
    mode: IvMode,
    plaintext: &[u8],
    aad: &[u8],
) -> Result<Sealed, Fault> {
    let mut iv = [0u8; IV_LEN];
    if mode == IvMode::Random {
        session.generate_random_slice(&mut iv)?;
    }
    let out = {
        let params = GcmParams::new(&mut iv, aad, TAG_BITS.into())?;
        session.encrypt(&Mechanism::AesGcm(params), key, plaintext)?
    };
    split_output(mode, iv, out, plaintext.len()).map_err(Fault::Key)
}

pub fn decrypt(
    session: &Session,
    key: ObjectHandle,
    sealed: SealedRef<'_>,
    aad: &[u8],
) -> Result<Zeroizing<Vec<u8>>, Fault> {
    let mut iv: [u8; IV_LEN] = sealed.iv.try_into().map_err(|_| {
        Fault::Key(KeyError::InvalidCiphertext(format!(
            "the IV is {} bytes, keygate uses {IV_LEN}",
            sealed.iv.len()
        )))
    })?;
    if sealed.tag.len() != TAG_LEN {
        return Err(Fault::Key(KeyError::InvalidCiphertext(format!(
            "the tag is {} bytes, expected {TAG_LEN}",
            sealed.tag.len()
        ))));
    }
    let input = [sealed.ciphertext, sealed.tag].concat();
    let params = GcmParams::new(&mut iv, aad, TAG_BITS.into())?;
    let plaintext = session.decrypt(&Mechanism::AesGcm(params), key, &input)?;
    Ok(Zeroizing::new(plaintext))
}

/// Splits what C_Encrypt returned into ciphertext, tag and IV according to the IV mode:
/// `ct || tag` (random, zero_buffer: IV in the buffer) or `ct || tag || iv` (hsm_generated).
pub fn split_output(
    mode: IvMode,
    iv: [u8; IV_LEN],
    mut out: Vec<u8>,
    plaintext_len: usize,
) -> Result<Sealed, KeyError> {
    let trailer = match mode {
        IvMode::HsmGenerated => TAG_LEN + IV_LEN,
        IvMode::Random | IvMode::ZeroBuffer => TAG_LEN,
    };
    if out.len() != plaintext_len + trailer {
        return Err(KeyError::Unavailable(format!(
            "the HSM returned {} bytes for {plaintext_len} bytes of plaintext; expected {} \
             (check iv_mode)",
            out.len(),
            plaintext_len + trailer
        )));
    }
    let tail = out.split_off(plaintext_len);
    let (tag, hsm_iv) = tail.split_at(TAG_LEN);
    let iv = match mode {
        IvMode::HsmGenerated => hsm_iv.try_into().unwrap_or(iv),
        IvMode::Random | IvMode::ZeroBuffer => iv,
    };
    if mode == IvMode::ZeroBuffer && iv == [0u8; IV_LEN] {
        return Err(KeyError::Unavailable(
            "the HSM left the zero IV buffer unchanged; iv_mode = \"zero_buffer\" does not fit \
             this HSM (use \"random\")"
                .to_owned(),
        ));
    }
    let tag: [u8; TAG_LEN] = tag
        .try_into()
        .map_err(|_| KeyError::Unavailable("the HSM returned a short tag".to_owned()))?;
    Ok(Sealed {
        iv,
        ciphertext: out,
        tag,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn out(pt: usize, trailer: &[u8]) -> Vec<u8> {
        let mut v = vec![7u8; pt];
        v.extend_from_slice(trailer);
        v
    }

    #[test]
    fn random_mode_splits_ct_and_tag() {
        let s = split_output(IvMode::Random, [1; 12], out(5, &[9; 16]), 5).unwrap();
        assert_eq!((s.iv, s.ciphertext, s.tag), ([1; 12], vec![7; 5], [9; 16]));
    }

    #[test]
    fn hsm_generated_takes_the_iv_after_the_tag() {
        let trailer = [[9u8; 16].as_slice(), [3u8; 12].as_slice()].concat();
        let s = split_output(IvMode::HsmGenerated, [0; 12], out(4, &trailer), 4).unwrap();
        assert_eq!((s.iv, s.ciphertext, s.tag), ([3; 12], vec![7; 4], [9; 16]));
    }

    #[test]
    fn zero_buffer_needs_the_hsm_to_write_the_iv() {
        let s = split_output(IvMode::ZeroBuffer, [4; 12], out(0, &[9; 16]), 0).unwrap();
        assert_eq!(s.iv, [4; 12]);
        let e = split_output(IvMode::ZeroBuffer, [0; 12], out(0, &[9; 16]), 0).unwrap_err();
        assert!(e.to_string().contains("zero_buffer"), "{e}");
    }

    #[test]
    fn wrong_output_length_is_an_error_not_a_panic() {
        for mode in [IvMode::Random, IvMode::HsmGenerated, IvMode::ZeroBuffer] {
            assert!(split_output(mode, [1; 12], vec![0; 3], 8).is_err());
            assert!(split_output(mode, [1; 12], vec![], 0).is_err());
        }
    }
}
