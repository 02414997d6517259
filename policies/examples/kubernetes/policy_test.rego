package keygate_test

import rego.v1

call(operation, uid, key) := {
	"interface": "kms_v2",
	"operation": operation,
	"keystore": "kubernetes",
	"uri_prefix": "",
	"key_id": key,
	"request_metadata": {},
	"access_key_id": null,
	"source_ip": null,
	"client_subject": null,
	"time": "2026-11-18T15:00:00Z",
	"aad_length": 0,
	"request_uid": "5c2a8f62-9f4e-4d0b-8a51-0d1e4b7f3a10",
	"peer": {"uid": uid, "gid": uid, "pid": 4242},
}

test_apiserver_encrypts_and_decrypts if {
	data.keygate.allow with input as call("Encrypt", 0, "k8s-kek")
	data.keygate.allow with input as call("Decrypt", 0, "k8s-kek")
	count(data.keygate.deny) == 0 with input as call("Decrypt", 0, "k8s-kek")
}

test_old_ciphertexts_still_decrypt if {
	data.keygate.allow with input as call("Decrypt", 0, "k8s-kek-2025")
}

test_another_user_may_not_decrypt if {
	not data.keygate.allow with input as call("Decrypt", 1000, "k8s-kek")
	data.keygate.deny == {"only the kube-apiserver's user may decrypt, not uid 1000 (pid 4242)"} with input as call("Decrypt", 1000, "k8s-kek")
}

test_other_keys_are_refused if {
	not data.keygate.allow with input as call("Decrypt", 0, "payments")
	data.keygate.deny == {"key payments is not a cluster key"} with input as call("Decrypt", 0, "payments")
}

test_no_peer_credentials_is_refused if {
	no_peer := object.union(call("Encrypt", 0, "k8s-kek"), {"peer": null})
	not data.keygate.allow with input as no_peer
	"the caller's identity is unknown (no peer credentials)" in data.keygate.deny with input as no_peer
}

test_xks_requests_pass_through if {
	data.keygate.allow with input as {"interface": "xks", "operation": "Decrypt", "key_id": "foo", "peer": null}
}
