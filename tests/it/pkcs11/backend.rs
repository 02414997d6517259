//! The PKCS#11 backend in this process against a real SoftHSMv2 token. SoftHSMv2 reads
//! `SOFTHSM2_CONF` at `C_Initialize`, and a module may be initialised once per process: each
//! test gets a fresh token and runs in a process of its own (`softhsm::in_process`). Another
//! process changing the token meanwhile is `keygate keys` or OpenSC's pkcs11-tool, as an
//! operator would run them.

use std::time::Duration;

use keygate::keys::pkcs11::{IvMode, Pkcs11Toml};
use keygate::keys::{
    HealthStatus, KeyAdmin, KeyBackend, KeyError, KeyOp, KeyUsage, SealedRef, USE_FRESHNESS,
};

use crate::support::eventually;
use crate::support::softhsm::{LABEL, in_process, sealed_ref};

const USAGES: [(&str, KeyUsage); 4] = [
    ("foo", KeyUsage::BOTH),
    ("encrypt_only_key", KeyUsage::ENCRYPT_ONLY),
    ("decrypt_only_key", KeyUsage::DECRYPT_ONLY),
    ("impotent_key", KeyUsage::NONE),
];

/// Creates the key set with keygate's own admin and checks every usage combination as HSM
/// attributes (CKR_KEY_FUNCTION_NOT_PERMITTED row).
#[test]
fn usages_are_hsm_attributes() {
    in_process(|env| {
        env.with_admin(|admin| {
            for (id, usage) in USAGES {
                let l = admin.create(id, usage).unwrap();
                assert_eq!((l.usage, l.enabled, l.versions), (usage, true, 1), "{id}");
                assert!(
                    l.protection.contains("sensitive, non-extractable"),
                    "{}",
                    l.protection
                );
            }
            admin.create_health_key("keygate-health").unwrap();
            assert!(
                admin
                    .create("foo", KeyUsage::BOTH)
                    .unwrap_err()
                    .contains("already exists")
            );
            assert!(admin.create("bad id", KeyUsage::BOTH).is_err());
            // A rotation is a key of its own, labelled foo/v2, with the same usage.
            let rotated = admin.rotate("foo").unwrap();
            assert_eq!((rotated.versions, rotated.usage), (2, KeyUsage::BOTH));
            assert!(admin.rotate("no-such-key").is_err());
            let ids: Vec<_> = admin.list().unwrap().into_iter().map(|l| l.id).collect();
            assert!(!ids.iter().any(|i| i.contains('/')), "{ids:?}");
            for id in [
                "foo",
                "encrypt_only_key",
                "decrypt_only_key",
                "impotent_key",
                "keygate-health",
            ] {
                assert!(ids.iter().any(|i| i == id), "{id} not in {ids:?}");
            }
        });
        let b = env.backend(|_| {});
        env.block_on(async {
            for (id, usage) in USAGES {
                let info = b.key_info(id).await.unwrap();
                assert_eq!(
                    (info.key_spec, info.usage, info.enabled),
                    ("AES_256", usage, true)
                );
                assert!(info.extra_usage.is_empty(), "{id}: {:?}", info.extra_usage);
            }
            let s = b.encrypt("foo", 1, b"secret", b"aad").await.unwrap();
            let pt = b.decrypt("foo", 1, sealed_ref(&s), b"aad").await.unwrap();
            assert_eq!(pt.as_slice(), b"secret");
            assert_eq!(b.key_info("foo").await.unwrap().current_version, 2);
            let s2 = b.encrypt("foo", 2, b"newer", b"aad").await.unwrap();
            let pt = b.decrypt("foo", 2, sealed_ref(&s2), b"aad").await.unwrap();
            assert_eq!(pt.as_slice(), b"newer");
            // Each version is its own key: a ciphertext does not open under another version.
            let e = b
                .decrypt("foo", 1, sealed_ref(&s2), b"aad")
                .await
                .unwrap_err();
            assert_eq!(e, KeyError::Authentication);
            let s = b.encrypt("encrypt_only_key", 1, b"x", b"").await.unwrap();
            let e = b
                .decrypt("encrypt_only_key", 1, sealed_ref(&s), b"")
                .await
                .unwrap_err();
            assert_eq!(e, KeyError::UsageNotPermitted(KeyOp::Decrypt));
            for id in ["decrypt_only_key", "impotent_key"] {
                let e = b.encrypt(id, 1, b"x", b"").await.unwrap_err();
                assert_eq!(e, KeyError::UsageNotPermitted(KeyOp::Encrypt), "{id}");
            }
            let e = b
                .decrypt("impotent_key", 1, sealed_ref(&s), b"")
                .await
                .unwrap_err();
            assert_eq!(e, KeyError::UsageNotPermitted(KeyOp::Decrypt));
        });
        env.close(b);
    });
}

/// CKR_GENERAL_ERROR from C_Decrypt (SoftHSMv2's tag failure) is an authentication error,
/// and the session stays usable.
#[test]
fn tag_failures_are_authentication_errors() {
    in_process(|env| {
        env.create_test_keys();
        let b = env.backend(|_| {});
        env.block_on(async {
            let s = b.encrypt("foo", 1, b"plaintext", b"aad").await.unwrap();
            let mut tag = s.tag;
            tag[0] ^= 1;
            let mut ct = s.ciphertext.clone();
            ct[0] ^= 1;
            let mut iv = s.iv;
            iv[11] ^= 1;
            let cases = [
                (
                    SealedRef {
                        tag: &tag,
                        ..sealed_ref(&s)
                    },
                    &b"aad"[..],
                    "foo",
                ),
                (
                    SealedRef {
                        ciphertext: &ct,
                        ..sealed_ref(&s)
                    },
                    b"aad",
                    "foo",
                ),
                (
                    SealedRef {
                        iv: &iv,
                        ..sealed_ref(&s)
                    },
                    b"aad",
                    "foo",
                ),
                (sealed_ref(&s), b"aaD", "foo"),
                (sealed_ref(&s), b"", "foo"),
                (sealed_ref(&s), b"aad", "keygate-health"),
            ];
            for (i, (sealed, aad, key)) in cases.into_iter().enumerate() {
                let e = b.decrypt(key, 1, sealed, aad).await.unwrap_err();
                assert_eq!(e, KeyError::Authentication, "case {i}");
            }
            let pt = b.decrypt("foo", 1, sealed_ref(&s), b"aad").await.unwrap();
            assert_eq!(pt.as_slice(), b"plaintext");
        });
        env.close(b);
    });
}

/// SoftHSMv2 accepts 0- and 8-byte IVs; keygate does not.
#[test]
fn iv_tag_and_version_are_checked() {
    in_process(|env| {
        env.create_test_keys();
        let b = env.backend(|_| {});
        env.block_on(async {
            let s = b.encrypt("foo", 1, b"p", b"").await.unwrap();
            let long = [0u8; 16];
            for iv in [&s.iv[..0], &s.iv[..8], &long[..]] {
                let e = b
                    .decrypt(
                        "foo",
                        1,
                        SealedRef {
                            iv,
                            ..sealed_ref(&s)
                        },
                        b"",
                    )
                    .await;
                assert!(
                    matches!(e, Err(KeyError::InvalidCiphertext(_))),
                    "{} bytes: {e:?}",
                    iv.len()
                );
            }
            let e = b
                .decrypt(
                    "foo",
                    1,
                    SealedRef {
                        tag: &s.tag[..12],
                        ..sealed_ref(&s)
                    },
                    b"",
                )
                .await;
            assert!(matches!(e, Err(KeyError::InvalidCiphertext(_))), "{e:?}");
            let e = b.decrypt("foo", 2, sealed_ref(&s), b"").await;
            assert!(matches!(e, Err(KeyError::InvalidCiphertext(_))), "{e:?}");
            assert!(matches!(
                b.encrypt("foo", 2, b"p", b"").await,
                Err(KeyError::Unsupported(_))
            ));
            let empty = b.encrypt("foo", 1, b"", b"").await.unwrap();
            assert!(empty.ciphertext.is_empty());
            assert!(
                b.decrypt("foo", 1, sealed_ref(&empty), b"")
                    .await
                    .unwrap()
                    .is_empty()
            );
        });
        env.close(b);
    });
}

/// random draws IVs from the token's RNG; the two HSM-side modes do not fit SoftHSMv2 and
/// say so instead of producing a bad ciphertext.
#[test]
fn iv_modes_on_softhsm() {
    in_process(|env| {
        env.create_test_keys();
        let b = env.backend(|_| {});
        env.block_on(async {
            let mut ivs = std::collections::HashSet::new();
            for _ in 0..200 {
                ivs.insert(b.encrypt("foo", 1, b"p", b"").await.unwrap().iv);
            }
            assert_eq!(ivs.len(), 200);
        });
        env.close(b);
        for (mode, needle) in [
            (IvMode::ZeroBuffer, "zero_buffer"),
            (IvMode::HsmGenerated, "iv_mode"),
        ] {
            let b = env.backend(|s| s.iv_mode = mode);
            let e = env.block_on(b.encrypt("foo", 1, b"p", b"")).unwrap_err();
            assert!(
                matches!(&e, KeyError::Unavailable(m) if m.contains(needle)),
                "{mode:?}: {e}"
            );
            env.close(b);
        }
    });
}

#[test]
fn missing_and_ambiguous_labels() {
    in_process(|env| {
        env.create_test_keys();
        env.pkcs11_tool(&[
            "--keygen",
            "--key-type",
            "AES:32",
            "--label",
            "twin",
            "--sensitive",
        ]);
        env.pkcs11_tool(&[
            "--keygen",
            "--key-type",
            "AES:32",
            "--label",
            "twin",
            "--sensitive",
        ]);
        let b = env.backend(|_| {});
        env.block_on(async {
            assert_eq!(
                b.key_info("non_existing_key").await,
                Err(KeyError::NotFound)
            );
            assert_eq!(
                b.encrypt("non_existing_key", 1, b"p", b"")
                    .await
                    .unwrap_err(),
                KeyError::NotFound
            );
            let e = b.key_info("twin").await.unwrap_err();
            assert!(
                matches!(&e, KeyError::Unavailable(m) if m.contains("exactly one")),
                "{e}"
            );
        });
        env.close(b);
    });
}

/// Choice: refuse. Extractable, non-sensitive or non-AES-256 keys report DISABLED and are
/// never used; `keys list` says why.
#[test]
fn extractable_and_weak_keys_are_refused() {
    in_process(|env| {
        env.create_test_keys();
        env.pkcs11_tool(&[
            "--keygen",
            "--key-type",
            "AES:32",
            "--label",
            "leaky",
            "--sensitive",
            "--extractable",
        ]);
        env.pkcs11_tool(&["--keygen", "--key-type", "AES:32", "--label", "plain"]);
        env.pkcs11_tool(&[
            "--keygen",
            "--key-type",
            "AES:16",
            "--label",
            "short",
            "--sensitive",
        ]);
        let b = env.backend(|_| {});
        env.block_on(async {
            for (id, spec) in [
                ("leaky", "AES_256"),
                ("plain", "AES_256"),
                ("short", "AES_128"),
            ] {
                let info = b.key_info(id).await.unwrap();
                assert_eq!((info.key_spec, info.enabled), (spec, false), "{id}");
                assert_eq!(
                    b.encrypt(id, 1, b"p", b"").await.unwrap_err(),
                    KeyError::Disabled,
                    "{id}"
                );
            }
            // pkcs11-tool sets WRAP/UNWRAP/SIGN/VERIFY on AES keys: reported as extra usage.
            let extra = b.key_info("leaky").await.unwrap().extra_usage;
            assert!(
                extra.contains(&"WRAP") && extra.contains(&"UNWRAP"),
                "{extra:?}"
            );
        });
        env.close(b);
        let listed = env.keys(&["list"]);
        for id in ["leaky", "plain", "short"] {
            let line = listed
                .lines()
                .find(|l| l.starts_with(&format!("{id} ")))
                .unwrap();
            assert!(line.contains("REFUSED"), "{line}");
        }
    });
}

/// `keygate keys disable` in another process is seen by GetKeyMetadata at once (fresh attribute
/// read) and then by encrypt.
#[test]
fn disable_and_enable_while_running() {
    in_process(|env| {
        env.create_test_keys();
        let b = env.backend(|_| {});
        env.block_on(async {
            b.encrypt("foo", 1, b"p", b"").await.unwrap();
            env.keys(&["disable", "foo"]);
            assert!(!b.key_info("foo").await.unwrap().enabled);
            assert_eq!(
                b.encrypt("foo", 1, b"p", b"").await.unwrap_err(),
                KeyError::Disabled
            );
            let listed = env.keys(&["list"]);
            assert!(
                listed
                    .lines()
                    .any(|l| l.starts_with("foo ") && l.contains("DISABLED")),
                "{listed}"
            );
            env.keys(&["enable", "foo"]);
            assert!(b.key_info("foo").await.unwrap().enabled);
            b.encrypt("foo", 1, b"p", b"").await.unwrap();
        });
        env.close(b);
    });
}

/// Encrypt and Decrypt may use key facts from the cache (no HSM call), but never older than
/// USE_FRESHNESS: a key disabled by another process is refused once that has passed.
#[test]
fn facts_for_use_are_at_most_use_freshness_old() {
    in_process(|env| {
        env.create_test_keys();
        let b = env.backend(|s| s.key_cache_ttl = Duration::from_secs(3600));
        env.block_on(async {
            assert!(b.key_info_for_use("foo").await.unwrap().enabled);
            env.keys(&["disable", "foo"]);
            // Deliberate: letting USE_FRESHNESS pass is what this checks.
            tokio::time::sleep(USE_FRESHNESS + Duration::from_millis(100)).await;
            assert!(!b.key_info_for_use("foo").await.unwrap().enabled);
            assert_eq!(
                b.encrypt("foo", 1, b"p", b"").await.unwrap_err(),
                KeyError::Disabled
            );
            env.keys(&["enable", "foo"]);
            // Deliberate, as above.
            tokio::time::sleep(USE_FRESHNESS + Duration::from_millis(100)).await;
            assert!(b.key_info_for_use("foo").await.unwrap().enabled);
            b.encrypt("foo", 1, b"p", b"").await.unwrap();
        });
        env.close(b);
    });
}

/// A cached handle that goes stale (CKR_OBJECT_HANDLE_INVALID) is dropped and the label
/// looked up again: a deleted key is NotFound, a re-created one is used.
#[test]
fn deleted_and_recreated_keys_are_noticed() {
    in_process(|env| {
        env.create_test_keys();
        env.keys(&["create", "phoenix", "--usage", "encrypt,decrypt"]);
        let b = env.backend(|s| s.key_cache_ttl = Duration::from_secs(3600));
        env.block_on(async {
            let old = b.encrypt("phoenix", 1, b"p", b"").await.unwrap();
            env.pkcs11_tool(&["--delete-object", "--type", "secrkey", "--label", "phoenix"]);
            assert_eq!(
                b.encrypt("phoenix", 1, b"p", b"").await.unwrap_err(),
                KeyError::NotFound
            );
            env.keys(&["create", "phoenix", "--usage", "encrypt,decrypt"]);
            let new = b.encrypt("phoenix", 1, b"p", b"").await.unwrap();
            let e = b
                .decrypt("phoenix", 1, sealed_ref(&old), b"")
                .await
                .unwrap_err();
            assert_eq!(e, KeyError::Authentication);
            assert_eq!(
                b.decrypt("phoenix", 1, sealed_ref(&new), b"")
                    .await
                    .unwrap()
                    .as_slice(),
                b"p"
            );
        });
        env.close(b);
    });
}

/// A slow call ends in Timeout; its HSM work still holds the only session, so the next
/// request is answered Busy at once instead of queueing.
#[test]
fn timeout_and_busy() {
    in_process(|env| {
        env.create_test_keys();
        let big = vec![0x5a; 64 << 20];
        let b = env.backend(|s| {
            s.session_pool_size = 1;
            s.queue_wait = Duration::ZERO;
            s.operation_timeout = Duration::from_millis(1);
        });
        env.block_on(async {
            let e = b.encrypt("foo", 1, &big, b"").await.unwrap_err();
            assert_eq!(e, KeyError::Timeout(Duration::from_millis(1)));
            let e = b.encrypt("foo", 1, b"p", b"").await.unwrap_err();
            assert!(matches!(e, KeyError::Busy(_)), "{e:?}");
        });
        env.close(b);
    });
}

#[test]
fn concurrent_requests_wait_briefly() {
    in_process(|env| {
        env.create_test_keys();
        let b = std::sync::Arc::new(env.backend(|s| s.queue_wait = Duration::from_secs(5)));
        env.block_on(async {
            let tasks: Vec<_> = (0..64u8)
                .map(|i| {
                    let b = b.clone();
                    tokio::spawn(async move {
                        let s = b.encrypt("foo", 1, &[i; 32], &[i]).await?;
                        b.decrypt("foo", 1, sealed_ref(&s), &[i])
                            .await
                            .map(|p| p.to_vec())
                    })
                })
                .collect();
            for (i, t) in tasks.into_iter().enumerate() {
                assert_eq!(t.await.unwrap().unwrap(), vec![i as u8; 32]);
            }
        });
        env.close(std::sync::Arc::into_inner(b).unwrap());
    });
}

#[test]
fn health_reports_token_and_module() {
    in_process(|env| {
        env.create_test_keys();
        let b = env.backend(|_| {});
        assert_eq!((b.kind(), b.hardware_protected()), ("pkcs11", true));
        assert!(
            b.ekm_vendor()
                .starts_with("SoftHSM project (serial number: "),
            "{}",
            b.ekm_vendor()
        );
        env.block_on(async {
            let fleet = b.health("keygate-health").await;
            assert_eq!(fleet.len(), 1);
            let one = &fleet[0];
            assert_eq!(
                (one.id.as_str(), one.status, &one.detail),
                (LABEL, HealthStatus::Active, &None)
            );
            assert!(
                one.model.starts_with("SoftHSM v2 (firmware version: "),
                "{}",
                one.model
            );
            let missing = b.health("no-such-health-key").await;
            assert_eq!(missing[0].status, HealthStatus::Degraded);
        });
        env.close(b);
    });
}

/// The token directory disappears under a running backend: requests fail with Unavailable,
/// health says UNAVAILABLE; once the directory is back the module is re-initialised without a
/// restart and old ciphertexts decrypt again.
#[test]
fn token_loss_and_recovery() {
    in_process(|env| {
        env.create_test_keys();
        let b = env.backend(|s| s.reconnect_backoff = Duration::from_millis(100));
        let tokens = env.dir.join("tokens");
        let away = env.dir.join("tokens.away");
        env.block_on(async {
            let before = b.encrypt("foo", 1, b"survives", b"").await.unwrap();
            assert_eq!(
                b.health("keygate-health").await[0].status,
                HealthStatus::Active
            );
            std::fs::rename(&tokens, &away).unwrap();
            for _ in 0..3 {
                let e = b.encrypt("foo", 1, b"p", b"").await.unwrap_err();
                assert!(matches!(e, KeyError::Unavailable(_)), "{e:?}");
                let e = b
                    .decrypt("foo", 1, sealed_ref(&before), b"")
                    .await
                    .unwrap_err();
                assert!(matches!(e, KeyError::Unavailable(_)), "{e:?}");
                assert!(matches!(
                    b.key_info("foo").await,
                    Err(KeyError::Unavailable(_))
                ));
                let h = b.health("keygate-health").await;
                assert_eq!(h[0].status, HealthStatus::Unavailable, "{:?}", h[0].detail);
                // Deliberate: past the reconnect backoff, so each round tries the token again.
                tokio::time::sleep(Duration::from_millis(150)).await;
            }
            std::fs::rename(&away, &tokens).unwrap();
            eventually(Duration::from_secs(20), "recovery", async || {
                let status = b.health("keygate-health").await[0].status;
                (status == HealthStatus::Active).then_some(())
            })
            .await;
            let pt = b.decrypt("foo", 1, sealed_ref(&before), b"").await.unwrap();
            assert_eq!(pt.as_slice(), b"survives");
        });
        env.close(b);
    });
}

/// A wrong PIN (CKR_PIN_INCORRECT) and a second open of the module in one process
/// (CKR_CRYPTOKI_ALREADY_INITIALIZED) fail with messages that say so, without the PIN.
#[test]
fn open_failures_are_clear() {
    in_process(|env| {
        env.create_test_keys();
        let mut s = env.settings();
        s.pin = keygate::keys::pkcs11::Pin::new("not-the-pin-4711".into());
        let e = keygate::keys::pkcs11::Pkcs11Backend::open(s)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("CKR_PIN_INCORRECT") && !e.contains("4711"),
            "{e}"
        );
        let b = env.backend(|_| {});
        let e = keygate::keys::pkcs11::Pkcs11Backend::open(env.settings())
            .unwrap_err()
            .to_string();
        assert!(e.contains("already initialised"), "{e}");
        env.close(b);
    });
}

/// The `[backend.pkcs11]` table a config file carries (what `serve --dev` writes).
#[test]
fn settings_from_toml_open_the_token() {
    in_process(|env| {
        env.create_test_keys();
        let table: Pkcs11Toml = toml::from_str(&env.token.config_table()).unwrap();
        let settings = table.check(&env.dir).unwrap();
        let b = keygate::keys::pkcs11::Pkcs11Backend::open(settings).unwrap();
        env.block_on(async { b.encrypt("foo", 1, b"p", b"").await.unwrap() });
        env.close(b);
    });
}
