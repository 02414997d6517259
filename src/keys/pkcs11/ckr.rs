//! The one table that says what a failed PKCS#11 call (`CKR_*`) means for keygate.

use cryptoki::context::Function;
use cryptoki::error::RvError;

use crate::keys::{KeyError, KeyOp};

/// What to do about a failed call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The key refuses the operation (`InvalidKeyUsageException`).
    UsageNotPermitted,
    /// The GCM tag did not verify (`InvalidCiphertextException`).
    Authentication,
    /// The input cannot be a ciphertext of this key (`InvalidCiphertextException`).
    InvalidCiphertext,
    /// The cached object handle is stale: forget it and look the key up again (once).
    StaleHandle,
    /// The session is unusable: drop it and open another (once).
    BrokenSession,
    /// The HSM is out of sessions or memory right now (`ThrottlingException`).
    Busy,
    /// The token, device or library is unusable: re-initialise the module.
    DeviceDown,
    /// Anything else: the request fails (`InternalException`), sessions stay.
    Failure,
}

/// Classifies `rv` returned by `function`. Decryption tag failures come back as different
/// codes on different HSMs (SoftHSMv2: GENERAL_ERROR; nShield: FUNCTION_FAILED).
pub fn classify(rv: RvError, function: Function) -> Verdict {
    let decrypting = matches!(function, Function::Decrypt);
    match rv {
        RvError::KeyFunctionNotPermitted => Verdict::UsageNotPermitted,
        RvError::EncryptedDataInvalid | RvError::EncryptedDataLenRange if decrypting => {
            Verdict::Authentication
        }
        RvError::GeneralError | RvError::FunctionFailed if decrypting => Verdict::Authentication,
        RvError::EncryptedDataInvalid | RvError::EncryptedDataLenRange => {
            Verdict::InvalidCiphertext
        }
        RvError::MechanismParamInvalid | RvError::DataLenRange | RvError::DataInvalid => {
            Verdict::InvalidCiphertext
        }
        RvError::ObjectHandleInvalid | RvError::KeyHandleInvalid => Verdict::StaleHandle,
        RvError::SessionHandleInvalid
        | RvError::SessionClosed
        | RvError::OperationActive
        | RvError::OperationNotInitialized => Verdict::BrokenSession,
        RvError::SessionCount | RvError::DeviceMemory | RvError::HostMemory => Verdict::Busy,
        RvError::DeviceError
        | RvError::DeviceRemoved
        | RvError::TokenNotPresent
        | RvError::TokenNotRecognized
        | RvError::SlotIdInvalid
        | RvError::CryptokiNotInitialized
        | RvError::UserNotLoggedIn
        | RvError::GeneralError
        | RvError::FunctionFailed => Verdict::DeviceDown,
        _ => Verdict::Failure,
    }
}

/// The `KeyError` a verdict ends in once retries are used up.
pub fn key_error(verdict: Verdict, rv: RvError, function: Function, op: KeyOp) -> KeyError {
    let what = format!("{function:?} returned {}", ckr_name(rv));
    match verdict {
        Verdict::UsageNotPermitted => KeyError::UsageNotPermitted(op),
        Verdict::Authentication => KeyError::Authentication,
        Verdict::InvalidCiphertext => KeyError::InvalidCiphertext(what),
        Verdict::StaleHandle => KeyError::NotFound,
        Verdict::Busy => KeyError::Busy(what),
        Verdict::BrokenSession | Verdict::DeviceDown | Verdict::Failure => {
            KeyError::Unavailable(what)
        }
    }
}

/// `CKR_FOO_BAR` for `RvError::FooBar`, for messages people can search for.
pub fn ckr_name(rv: RvError) -> String {
    let camel = format!("{rv:?}");
    let mut out = String::from("CKR");
    for c in camel.chars() {
        if c.is_ascii_uppercase() {
            out.push('_');
        }
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_uppercase());
        } else {
            break;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: Function = Function::Decrypt;
    const E: Function = Function::Encrypt;
    const EI: Function = Function::EncryptInit;

    fn row(rv: RvError, f: Function, verdict: Verdict, op: KeyOp, error: KeyError) {
        assert_eq!(classify(rv, f), verdict, "{rv:?} in {f:?}");
        assert_eq!(key_error(verdict, rv, f, op), error, "{rv:?} in {f:?}");
    }

    fn unavailable(f: Function, name: &str) -> KeyError {
        KeyError::Unavailable(format!("{f:?} returned {name}"))
    }

    #[test]
    fn key_function_not_permitted() {
        let op = KeyOp::Decrypt;
        let want = KeyError::UsageNotPermitted(op);
        row(
            RvError::KeyFunctionNotPermitted,
            Function::DecryptInit,
            Verdict::UsageNotPermitted,
            op,
            want,
        );
    }

    #[test]
    fn tag_failures_on_decrypt() {
        for rv in [
            RvError::GeneralError,
            RvError::FunctionFailed,
            RvError::EncryptedDataInvalid,
            RvError::EncryptedDataLenRange,
        ] {
            row(
                rv,
                D,
                Verdict::Authentication,
                KeyOp::Decrypt,
                KeyError::Authentication,
            );
        }
    }

    #[test]
    fn bad_input_outside_decrypt() {
        let err = KeyError::InvalidCiphertext("Encrypt returned CKR_DATA_LEN_RANGE".into());
        row(
            RvError::DataLenRange,
            E,
            Verdict::InvalidCiphertext,
            KeyOp::Encrypt,
            err,
        );
        let err =
            KeyError::InvalidCiphertext("DecryptInit returned CKR_MECHANISM_PARAM_INVALID".into());
        let rv = RvError::MechanismParamInvalid;
        row(
            rv,
            Function::DecryptInit,
            Verdict::InvalidCiphertext,
            KeyOp::Decrypt,
            err,
        );
    }

    #[test]
    fn stale_handles() {
        for rv in [RvError::ObjectHandleInvalid, RvError::KeyHandleInvalid] {
            row(
                rv,
                EI,
                Verdict::StaleHandle,
                KeyOp::Encrypt,
                KeyError::NotFound,
            );
        }
    }

    #[test]
    fn broken_sessions() {
        for (rv, name) in [
            (RvError::SessionHandleInvalid, "CKR_SESSION_HANDLE_INVALID"),
            (RvError::SessionClosed, "CKR_SESSION_CLOSED"),
            (RvError::OperationActive, "CKR_OPERATION_ACTIVE"),
            (
                RvError::OperationNotInitialized,
                "CKR_OPERATION_NOT_INITIALIZED",
            ),
        ] {
            row(
                rv,
                E,
                Verdict::BrokenSession,
                KeyOp::Encrypt,
                unavailable(E, name),
            );
        }
    }

    #[test]
    fn busy() {
        for (rv, name) in [
            (RvError::SessionCount, "CKR_SESSION_COUNT"),
            (RvError::DeviceMemory, "CKR_DEVICE_MEMORY"),
            (RvError::HostMemory, "CKR_HOST_MEMORY"),
        ] {
            let want = KeyError::Busy(format!("Encrypt returned {name}"));
            row(rv, E, Verdict::Busy, KeyOp::Encrypt, want);
        }
    }

    #[test]
    fn device_and_token_errors() {
        for (rv, name) in [
            (RvError::DeviceError, "CKR_DEVICE_ERROR"),
            (RvError::DeviceRemoved, "CKR_DEVICE_REMOVED"),
            (RvError::TokenNotPresent, "CKR_TOKEN_NOT_PRESENT"),
            (RvError::TokenNotRecognized, "CKR_TOKEN_NOT_RECOGNIZED"),
            (RvError::SlotIdInvalid, "CKR_SLOT_ID_INVALID"),
            (
                RvError::CryptokiNotInitialized,
                "CKR_CRYPTOKI_NOT_INITIALIZED",
            ),
            (RvError::UserNotLoggedIn, "CKR_USER_NOT_LOGGED_IN"),
            (RvError::GeneralError, "CKR_GENERAL_ERROR"),
            (RvError::FunctionFailed, "CKR_FUNCTION_FAILED"),
        ] {
            row(
                rv,
                E,
                Verdict::DeviceDown,
                KeyOp::Encrypt,
                unavailable(E, name),
            );
        }
    }

    #[test]
    fn everything_else_fails_the_request() {
        for (rv, name) in [
            (RvError::PinIncorrect, "CKR_PIN_INCORRECT"),
            (RvError::ArgumentsBad, "CKR_ARGUMENTS_BAD"),
            (RvError::MechanismInvalid, "CKR_MECHANISM_INVALID"),
        ] {
            row(
                rv,
                E,
                Verdict::Failure,
                KeyOp::Encrypt,
                unavailable(E, name),
            );
        }
    }
}
