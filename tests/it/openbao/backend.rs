//! The OpenBao backend in this process against a real `bao server -dev`: faults (paused,
//! killed, revoked token, exhausted pool), health, token renewal and AppRole re-login.

use std::time::{Duration, Instant};

use keygate::keys::openbao::{AuthMethod, OpenBaoBackend, OpenBaoSettings, SecretSource};
use keygate::keys::{HealthStatus, KeyBackend, KeyError, KeyUsage};
use serde_json::json;

use crate::support::bao::{self, Bao, MOUNT};
use crate::support::{PATIENCE, eventually, fixtures::HEALTH_KEY, wait_for};

const AAD: &[u8] = b"framed aad";

/// A backend on `bao` with `token` in a file of `dir`, `tweak`ed.
fn backend(
    bao: &Bao,
    dir: &std::path::Path,
    token: &str,
    tweak: impl FnOnce(&mut OpenBaoSettings),
) -> OpenBaoBackend {
    let file = dir.join("bao.token");
    bao::write_private(&file, token);
    let mut s = OpenBaoSettings::new(
        &bao.url(),
        MOUNT,
        AuthMethod::Token(SecretSource::File(file)),
    );
    tweak(&mut s);
    OpenBaoBackend::open(&s).unwrap()
}

async fn round_trip(b: &OpenBaoBackend, key: &str) -> Result<(), KeyError> {
    let v = b.key_info_for_use(key).await?.current_version;
    let s = b.encrypt(key, v, b"pt", AAD).await?;
    let back = b
        .decrypt(key, v, crate::support::softhsm::sealed_ref(&s), AAD)
        .await?;
    assert_eq!(back.as_slice(), b"pt");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_status_and_health_come_from_the_server() {
    let bao = Bao::start();
    let token = bao.fixture("1h");
    let dir = tempfile::tempdir().unwrap();
    let b = backend(&bao, dir.path(), &token, |_| {});
    for (key, usage, enabled) in crate::support::fixtures::KEYS {
        let info = b.key_info(key).await.unwrap();
        assert_eq!(
            (info.usage, info.enabled, info.current_version),
            (usage, enabled, 1),
            "{key}"
        );
    }
    assert_eq!(b.key_info("nope").await, Err(KeyError::NotFound));
    let fleet = b.health(HEALTH_KEY).await;
    assert_eq!(fleet.len(), 1);
    assert_eq!(
        fleet[0].status,
        HealthStatus::Active,
        "{:?}",
        fleet[0].detail
    );
    assert_eq!(fleet[0].id, bao.addr.to_string());
    assert!(
        fleet[0].model.starts_with("OpenBao 2."),
        "{}",
        fleet[0].model
    );
    assert!(b.ekm_vendor().starts_with("OpenBao"), "{}", b.ekm_vendor());
    // A key of another type is refused with the reason.
    bao.root(
        "POST",
        &format!("{MOUNT}/keys/chacha"),
        Some(json!({"type": "chacha20-poly1305"})),
    );
    let policy = bao::grant("chacha", true, true);
    let (_, old) = bao.api(
        "GET",
        &format!("sys/policies/acl/{}", bao::POLICY),
        Some(bao.root_token()),
        None,
    );
    let text = format!("{}{policy}", old["data"]["policy"].as_str().unwrap());
    bao.root(
        "PUT",
        &format!("sys/policies/acl/{}", bao::POLICY),
        Some(json!({"policy": text})),
    );
    match b.key_info("chacha").await {
        Err(KeyError::Unsupported(why)) => assert!(why.contains("aes256-gcm96"), "{why}"),
        other => panic!("{other:?}"),
    }
    // Wrong AAD and a version the key does not have.
    let s = b.encrypt("foo", 1, b"x", AAD).await.unwrap();
    let sref = crate::support::softhsm::sealed_ref(&s);
    assert_eq!(
        b.decrypt("foo", 1, sref, b"other").await,
        Err(KeyError::Authentication)
    );
    assert!(matches!(
        b.decrypt("foo", 7, sref, AAD).await,
        Err(KeyError::InvalidCiphertext(_))
    ));
}

/// SIGSTOP: calls time out within the request timeout, health is not ACTIVE; SIGCONT: the
/// backend recovers by itself. Then a full pool refuses at once instead of queueing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_server_times_out_and_recovers_and_a_full_pool_is_busy() {
    let bao = Bao::start();
    let token = bao.fixture("1h");
    let dir = tempfile::tempdir().unwrap();
    // A stuck request holds its connection for the whole timeout: 2 s leaves a loaded
    // machine ample time between seeing both stuck and sending the third request.
    let timeout = Duration::from_secs(2);
    let b = std::sync::Arc::new(backend(&bao, dir.path(), &token, |s| {
        s.request_timeout = timeout;
        s.pool_size = 2;
        s.queue_wait = Duration::from_millis(20);
    }));
    round_trip(&b, "foo").await.unwrap();
    bao.pause();
    // The error names the configured timeout; how soon it comes is measured, not asserted
    // here. PATIENCE only turns a hang into a failure.
    let call = tokio::time::timeout(PATIENCE, b.encrypt("foo", 1, b"x", AAD)).await;
    assert_eq!(
        call.expect("a call to a paused server hangs").unwrap_err(),
        KeyError::Timeout(timeout)
    );
    assert_ne!(b.health(HEALTH_KEY).await[0].status, HealthStatus::Active);
    // The calls above gave up their connections: nothing is in flight at the server.
    wait_for(PATIENCE, "earlier requests to be dropped", || {
        bao.unread_requests() == 0
    })
    .await;
    // Both connections are stuck on the paused server; the third request is refused.
    let stuck: Vec<_> = (0..2)
        .map(|_| {
            let b = b.clone();
            tokio::spawn(async move { b.encrypt("foo", 1, b"x", AAD).await })
        })
        .collect();
    wait_for(PATIENCE, "both requests stuck on the paused server", || {
        bao.unread_requests() == 2
    })
    .await;
    // Busy, not Timeout: had the request queued for a connection it would have got one
    // when a stuck request timed out, and then timed out itself.
    assert!(matches!(
        b.encrypt("foo", 1, b"x", AAD).await,
        Err(KeyError::Busy(_))
    ));
    for s in stuck {
        assert_eq!(s.await.unwrap().unwrap_err(), KeyError::Timeout(timeout));
    }
    bao.resume();
    eventually(PATIENCE, "recovery after SIGCONT", async || {
        round_trip(&b, "foo").await.ok()
    })
    .await;
    assert_eq!(b.health(HEALTH_KEY).await[0].status, HealthStatus::Active);
}

/// A killed server: every call fails at once (connection refused), health says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_server_fails_fast() {
    let mut bao = Bao::start();
    let token = bao.fixture("1h");
    let dir = tempfile::tempdir().unwrap();
    let b = backend(&bao, dir.path(), &token, |_| {});
    round_trip(&b, "foo").await.unwrap();
    bao.kill();
    // Refused, not timed out: the error says the server cannot be reached (a wait for the
    // request timeout would end in Timeout). How fast is for benches to measure.
    match b.encrypt("foo", 1, b"x", AAD).await {
        Err(KeyError::Unavailable(why)) => assert!(why.contains("cannot reach"), "{why}"),
        other => panic!("{other:?}"),
    }
    let h = b.health(HEALTH_KEY).await;
    assert_eq!(h[0].status, HealthStatus::Unavailable);
    assert!(
        h[0].detail
            .as_deref()
            .unwrap_or("")
            .contains("cannot reach"),
        "{:?}",
        h[0].detail
    );
}

/// A revoked token: a clear error, and health says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_token_is_a_clear_error_and_health_says_why() {
    let bao = Bao::start();
    let token = bao.fixture("1h");
    let dir = tempfile::tempdir().unwrap();
    let b = backend(&bao, dir.path(), &token, |_| {});
    round_trip(&b, "foo").await.unwrap();
    bao.revoke(&token);
    match b.encrypt("foo", 1, b"x", AAD).await {
        Err(KeyError::Unavailable(why)) => assert!(why.contains("revoked or expired"), "{why}"),
        other => panic!("{other:?}"),
    }
    let detail = eventually(PATIENCE, "health names the token", async || {
        let h = b.health(HEALTH_KEY).await.remove(0);
        (h.status == HealthStatus::Unavailable).then_some(h.detail.unwrap_or_default())
    })
    .await;
    assert!(detail.contains("token"), "{detail}");
    // The operator writes a new token into the file: keygate takes it up by itself.
    bao::write_private(&dir.path().join("bao.token"), &bao.token("1h"));
    eventually(PATIENCE, "a new token file is used", async || {
        round_trip(&b, "foo").await.ok()
    })
    .await;
}

/// A short-lived renewable token is renewed before it expires.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_renewed_before_they_expire() {
    let bao = Bao::start();
    let token = bao.fixture("3s");
    let dir = tempfile::tempdir().unwrap();
    let b = backend(&bao, dir.path(), &token, |_| {});
    // Deliberate pacing, not synchronisation: a call every 250 ms for 7 s spans two TTLs,
    // so the token must have been renewed for the calls to keep working.
    let until = Instant::now() + Duration::from_secs(7);
    while Instant::now() < until {
        round_trip(&b, "foo").await.unwrap();
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let (status, look) = bao.api("GET", "auth/token/lookup-self", Some(&token), None);
    assert_eq!(status, 200, "{look}");
}

/// AppRole: the token's max TTL ends renewals; keygate logs in again by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approle_logs_in_again_when_renewal_ends() {
    let bao = Bao::start();
    bao.fixture("1h");
    bao.root("POST", "sys/auth/approle", Some(json!({"type": "approle"})));
    bao.root(
        "POST",
        "auth/approle/role/keygate",
        Some(json!({"token_policies": [bao::POLICY], "token_ttl": "3s", "token_max_ttl": "5s"})),
    );
    let role_id = bao.root("GET", "auth/approle/role/keygate/role-id", None)["data"]["role_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let secret_id =
        bao.root("POST", "auth/approle/role/keygate/secret-id", None)["data"]["secret_id"]
            .as_str()
            .unwrap()
            .to_owned();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("secret-id");
    bao::write_private(&file, &secret_id);
    let s = OpenBaoSettings::new(
        &bao.url(),
        MOUNT,
        AuthMethod::AppRole {
            mount: "approle".into(),
            role_id: SecretSource::Inline(role_id),
            secret_id: SecretSource::File(file),
        },
    );
    let b = OpenBaoBackend::open(&s).unwrap();
    // Deliberate pacing, not synchronisation: a call every 250 ms for 11 s outlives the
    // 5 s max TTL twice, so keygate must have logged in again for the calls to keep working.
    let until = Instant::now() + Duration::from_secs(11);
    while Instant::now() < until {
        round_trip(&b, "foo").await.unwrap();
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(
        b.key_info("encrypt_only_key").await.unwrap().usage,
        KeyUsage::ENCRYPT_ONLY
    );
}

/// https with the server's CA bundle, and a namespace: keys, policy and token live in
/// namespace team-a, and keygate reaches them with the X-Vault-Namespace header.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_with_a_ca_bundle_and_a_namespace() {
    let bao = Bao::start_tls();
    bao.tls_root("", "POST", "sys/namespaces/team-a", None);
    let ns = "team-a";
    bao.tls_root(
        ns,
        "POST",
        &format!("sys/mounts/{MOUNT}"),
        Some(json!({"type": "transit"})),
    );
    let mut policy = String::new();
    for key in ["foo", HEALTH_KEY] {
        bao.tls_root(
            ns,
            "POST",
            &format!("{MOUNT}/keys/{key}"),
            Some(json!({"type": "aes256-gcm96"})),
        );
        policy.push_str(&bao::grant(key, true, true));
    }
    bao.tls_root(
        ns,
        "PUT",
        "sys/policies/acl/kg",
        Some(json!({"policy": policy})),
    );
    let token = bao.tls_root(
        ns,
        "POST",
        "auth/token/create",
        Some(json!({"policies": ["kg"]})),
    )["auth"]["client_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let dir = tempfile::tempdir().unwrap();
    let b = backend(&bao, dir.path(), &token, |s| {
        s.ca_file = bao.ca.clone();
        s.namespace = Some(ns.into());
    });
    round_trip(&b, "foo").await.unwrap();
    assert_eq!(b.health(HEALTH_KEY).await[0].status, HealthStatus::Active);
    // Without the namespace the same token finds nothing.
    let other = backend(&bao, dir.path(), &token, |s| s.ca_file = bao.ca.clone());
    assert!(other.key_info("foo").await.is_err());
}
