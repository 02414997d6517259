//! Software backend: key file handling and AES-GCM behaviour.

use std::os::unix::fs::PermissionsExt;

use super::*;
use crate::keys::{KeyAdmin, KeyUsage};

fn setup() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys.json");
    let mut admin = SoftwareAdmin::open(&path).unwrap();
    admin.create("foo", KeyUsage::BOTH).unwrap();
    admin.create("enc", KeyUsage::ENCRYPT_ONLY).unwrap();
    admin.create("dec", KeyUsage::DECRYPT_ONLY).unwrap();
    (dir, path)
}

fn sealed_ref(s: &Sealed) -> SealedRef<'_> {
    SealedRef {
        iv: &s.iv,
        ciphertext: &s.ciphertext,
        tag: &s.tag,
    }
}

#[test]
fn key_file_is_private_and_round_trips() {
    let (_d, path) = setup();
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let b = SoftwareBackend::open(&path).unwrap();
    let s = b.encrypt_now("foo", 1, b"hello", b"aad").unwrap();
    assert_eq!(s.ciphertext.len(), 5);
    assert_eq!(
        &b.decrypt_now("foo", 1, sealed_ref(&s), b"aad").unwrap()[..],
        b"hello"
    );
    assert_eq!(
        b.decrypt_now("foo", 1, sealed_ref(&s), b"aaX"),
        Err(KeyError::Authentication)
    );
    let s2 = b.encrypt_now("foo", 1, b"hello", b"aad").unwrap();
    assert_ne!(s.iv, s2.iv, "every encryption gets a fresh IV");
}

#[test]
fn usage_and_status_are_enforced() {
    let (_d, path) = setup();
    let b = SoftwareBackend::open(&path).unwrap();
    assert_eq!(
        b.encrypt_now("dec", 1, b"x", b"").err(),
        Some(KeyError::UsageNotPermitted(KeyOp::Encrypt))
    );
    let s = b.encrypt_now("enc", 1, b"x", b"").unwrap();
    assert_eq!(
        b.decrypt_now("enc", 1, sealed_ref(&s), b"").err(),
        Some(KeyError::UsageNotPermitted(KeyOp::Decrypt))
    );
    assert_eq!(
        b.encrypt_now("nope", 1, b"x", b"").err(),
        Some(KeyError::NotFound)
    );
    SoftwareAdmin::open(&path)
        .unwrap()
        .set_enabled("foo", false)
        .unwrap();
    b.reload().unwrap();
    assert_eq!(
        b.encrypt_now("foo", 1, b"x", b"").err(),
        Some(KeyError::Disabled)
    );
}

#[test]
fn rotation_keeps_old_versions_decryptable() {
    let (_d, path) = setup();
    let b = SoftwareBackend::open(&path).unwrap();
    let old = b.encrypt_now("foo", 1, b"v1", b"").unwrap();
    let listing = SoftwareAdmin::open(&path).unwrap().rotate("foo").unwrap();
    assert_eq!(listing.versions, 2);
    b.reload().unwrap();
    let info = futures_lite_block(b.key_info("foo")).unwrap();
    assert_eq!(info.current_version, 2);
    assert_eq!(
        &b.decrypt_now("foo", 1, sealed_ref(&old), b"").unwrap()[..],
        b"v1"
    );
    assert!(matches!(
        b.decrypt_now("foo", 3, sealed_ref(&old), b""),
        Err(KeyError::InvalidCiphertext(_))
    ));
}

#[test]
fn a_bad_key_file_is_refused_whole() {
    let (_d, path) = setup();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let e = SoftwareBackend::open(&path).unwrap_err();
    assert!(e.contains("chmod 600"), "{e}");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let b = SoftwareBackend::open(&path).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, &text[..text.len() / 2]).unwrap();
    let e = b.reload().unwrap_err();
    assert!(e.contains("corrupt"), "{e}");
    assert!(
        !e.contains(&text[100..140]),
        "errors must not quote the file"
    );
    b.encrypt_now("foo", 1, b"still serving", b"").unwrap();
    assert!(SoftwareBackend::open(&path).is_err());
}

#[test]
fn duplicate_and_invalid_ids_are_refused() {
    let (_d, path) = setup();
    let mut admin = SoftwareAdmin::open(&path).unwrap();
    assert!(admin.create("foo", KeyUsage::BOTH).is_err());
    assert!(admin.create("bad/id", KeyUsage::BOTH).is_err());
    assert_eq!(admin.list().unwrap().len(), 3);
}

/// Runs a ready future to completion (the software backend never awaits).
fn futures_lite_block<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(f)
}

/// Every key reports when its current version was created; a rotation moves it forward.
#[test]
fn current_version_creation_times_follow_rotation() {
    let (_d, path) = setup();
    let before = std::time::SystemTime::now() - std::time::Duration::from_secs(2);
    let b = SoftwareBackend::open(&path).unwrap();
    let mut times = b.current_versions_created();
    times.sort();
    let ids: Vec<_> = times.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids, ["dec", "enc", "foo"]);
    assert!(times.iter().all(|(_, at)| *at >= before), "{times:?}");
    let mut file: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    for key in file["keys"].as_array_mut().unwrap() {
        key["versions"][0]["created"] = "2020-01-01T00:00:00Z".into();
    }
    std::fs::write(&path, file.to_string()).unwrap();
    b.reload().unwrap();
    let old = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_577_836_800);
    assert!(
        b.current_versions_created()
            .iter()
            .all(|(_, at)| *at == old)
    );
    SoftwareAdmin::open(&path).unwrap().rotate("foo").unwrap();
    b.reload().unwrap();
    let foo = b
        .current_versions_created()
        .into_iter()
        .find(|(id, _)| id == "foo");
    assert!(foo.unwrap().1 >= before);
}
