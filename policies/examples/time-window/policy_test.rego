package keygate_test

import rego.v1

req(keystore, key_id, at) := {
	"operation": "Decrypt",
	"keystore": keystore,
	"key_id": key_id,
	"time": at,
	"request_metadata": {"awsPrincipalArn": "arn:aws:iam::111122223333:role/Batch", "kmsOperation": "Decrypt", "kmsRequestId": "r-5"},
}

# 2026-11-18 is a Wednesday, 2026-11-21 a Saturday.
test_batch_at_night_allowed if {
	data.keygate.allow with input as req("batch", "k1", "2026-11-18T02:30:00Z")
}

test_batch_in_daytime_denied if {
	not data.keygate.allow with input as req("batch", "k1", "2026-11-18T12:00:00Z")
	data.keygate.deny == {"key store batch is usable only Monday-Friday 00:00-06:00 UTC"} with input as req("batch", "k1", "2026-11-18T12:00:00Z")
}

test_batch_window_end_is_exclusive if {
	not data.keygate.allow with input as req("batch", "k1", "2026-11-18T06:00:00Z")
}

test_batch_at_weekend_denied if {
	not data.keygate.allow with input as req("batch", "k1", "2026-11-21T02:30:00Z")
}

test_other_keystore_any_time if {
	data.keygate.allow with input as req("main", "k1", "2026-11-21T12:00:00Z")
}

test_embargoed_key_denied_before if {
	not data.keygate.allow with input as req("main", "results-2027", "2027-01-15T13:59:59Z")
	data.keygate.deny == {"key results-2027 may not decrypt before 2027-01-15T14:00:00Z"} with input as req("main", "results-2027", "2027-01-15T13:59:59Z")
}

test_embargoed_key_allowed_after if {
	data.keygate.allow with input as req("main", "results-2027", "2027-01-15T14:00:00Z")
}

test_embargo_does_not_block_encrypt if {
	data.keygate.allow with input as object.union(req("main", "results-2027", "2026-01-01T00:00:00Z"), {"operation": "Encrypt"})
}
