//! Decision-log digests signed in a SoftHSMv2 token by a sensitive, non-extractable key: made
//! with `keygate audit keygen --config`, used by the real server, verified by `keygate audit
//! verify` and by openssl; keys keygate must not sign with are refused at start.

use std::path::Path;
use std::time::Duration;

use crate::audit::digest::{digests, openssl, verify};
use crate::support::process::{QUIET, run_bounded};
use crate::support::softhsm::{Token, in_process};
use crate::support::*;

const LABEL: &str = "keygate-digest";

fn digest_config(label: &str) -> String {
    config(&format!(
        "\n[decision_log]\npath = \"decisions.log\"\n[decision_log.digest]\ndir = \"digests\"\n\
         pkcs11_key_label = \"{label}\"\ninterval_secs = 1\n"
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn digests_are_signed_in_the_token_by_a_non_extractable_key() {
    let dir = tempfile::tempdir().unwrap();
    let token = Token::init(dir.path());
    let config_path = token.write_config(&digest_config(LABEL));
    token.create_test_keys(&config_path);
    let config = config_path.to_str().unwrap();
    let public = dir.path().join("digest-pub.pem");
    token.cli(&[
        "audit",
        "keygen",
        "--config",
        config,
        "--public-out",
        public.to_str().unwrap(),
    ]);
    let listed = token.pkcs11_tool(&["--list-objects", "--type", "privkey", "--label", LABEL]);
    assert!(
        listed.contains("sensitive") && listed.contains("never extractable"),
        "{listed}"
    );
    let shown = token.cli(&["audit", "public-key", "--config", config]);
    assert!(
        shown.starts_with(&std::fs::read_to_string(&public).unwrap()),
        "{shown}"
    );

    let root = token.dir.clone();
    let conf = token.conf.clone();
    let mut server = KeygateProcess::serve(dir, &config_path, QUIET, &[("SOFTHSM2_CONF", &conf)]);
    let mut client = Client::connect(server.addr).await;
    for _ in 0..3 {
        client
            .post(&path("encrypt", "foo"), &encrypt_body(b"x", None, false))
            .await
            .expect_ok();
    }
    wait_until(PATIENCE, "a heartbeat digest", || digests(&root).len() >= 2);
    let _kept = std::mem::replace(&mut server.dir, tempfile::tempdir().unwrap());
    assert!(server.stop().status.success());

    let (ok, out) = verify(&root, &["decisions.log"], "digest-pub.pem");
    assert!(ok && out.starts_with("OK: 3 lines"), "{out}");
    let newest = digests(&root).pop().unwrap();
    let text = std::fs::read_to_string(&newest).unwrap();
    assert!(
        text.contains("\"algorithm\":\"ecdsa-p256-sha256\"") && text.contains("\"shutdown\""),
        "{text}"
    );
    // openssl checks the ECDSA signature (DER) over the line without its signature member.
    let body = text
        .trim_end()
        .rsplit_once(",\"signature\":\"")
        .map(|(head, _)| format!("{head}}}"))
        .unwrap();
    let signature = text.trim_end().rsplit_once(",\"signature\":\"").unwrap().1;
    let signature = signature.strip_suffix("\"}").unwrap();
    std::fs::write(root.join("digest.body"), body).unwrap();
    std::fs::write(
        root.join("digest.sig"),
        unb64(&serde_json::json!(signature)),
    )
    .unwrap();
    let said = openssl(
        &root,
        &[
            "dgst",
            "-sha256",
            "-verify",
            "digest-pub.pem",
            "-signature",
            "digest.sig",
            "digest.body",
        ],
    );
    assert!(said.contains("Verified OK"), "{said}");
}

#[test]
fn an_extractable_or_missing_signing_key_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let token = Token::init(dir.path());
    let config_path = token.write_config(&digest_config("loose"));
    token.create_test_keys(&config_path);
    token.pkcs11_tool(&[
        "--keypairgen",
        "--key-type",
        "EC:prime256v1",
        "--label",
        "loose",
        "--extractable",
    ]);
    let conf = token.conf.to_str().unwrap();
    let config = config_path.to_str().unwrap();
    let run = run_bounded(
        &["serve", "--config", config],
        &[("SOFTHSM2_CONF", conf), ("RUST_LOG", "warn")],
        Duration::from_secs(20),
    );
    assert!(run.code.is_some_and(|c| c != 0), "{run:?}");
    assert!(run.stderr.contains("extractable"), "{}", run.stderr);

    std::fs::write(
        &config_path,
        std::fs::read_to_string(&config_path)
            .unwrap()
            .replace("\"loose\"", "\"absent\""),
    )
    .unwrap();
    let run = run_bounded(
        &["serve", "--config", config],
        &[("SOFTHSM2_CONF", conf), ("RUST_LOG", "warn")],
        Duration::from_secs(20),
    );
    assert!(run.code.is_some_and(|c| c != 0), "{run:?}");
    assert!(
        run.stderr.contains("labelled") && run.stderr.contains("absent"),
        "{}",
        run.stderr
    );
}

#[test]
fn an_ed25519_token_key_signs_what_openssl_verifies() {
    in_process(|env| {
        env.with_admin(|admin| {
            admin
                .create_signing_key(LABEL, keygate::signing::Algorithm::Ed25519)
                .unwrap();
        });
        let backend = env.backend(|_| {});
        let signer = backend.digest_signer(LABEL).unwrap();
        use keygate::signing::DigestSigner;
        let public = signer.public_key().clone();
        assert_eq!(public.algorithm(), keygate::signing::Algorithm::Ed25519);
        let signature = signer.sign(b"a digest").unwrap();
        assert!(public.verify(b"a digest", &signature));
        let dir: &Path = &env.dir;
        std::fs::write(dir.join("pub.pem"), public.to_pem()).unwrap();
        std::fs::write(dir.join("msg"), b"a digest").unwrap();
        std::fs::write(dir.join("sig"), &signature).unwrap();
        let said = openssl(
            dir,
            &[
                "pkeyutl", "-verify", "-pubin", "-inkey", "pub.pem", "-rawin", "-in", "msg",
                "-sigfile", "sig",
            ],
        );
        assert!(said.contains("Signature Verified Successfully"), "{said}");
        env.close(backend);
    });
}
