package keygate_test

import future.keywords.if

req(keystore, key_id, operation) = {
	"operation": operation,
	"keystore": keystore,
	"key_id": key_id,
	"request_metadata": {"awsPrincipalArn": "arn:aws:iam::111122223333:role/App", "kmsOperation": operation, "kmsRequestId": "r-7"},
}

test_ordinary_request_allowed {
	data.keygate.allow with input as req("main", "k1", "Encrypt")
}

test_retired_keystore_denied {
	not data.keygate.allow with input as req("retired", "k1", "Encrypt")
	data.keygate.deny == {"key store retired is retired"} with input as req("retired", "k1", "Encrypt")
}

test_disabled_key_denied if {
	not data.keygate.allow with input as req("main", "compromised-2025", "Decrypt")
}

test_disabled_key_metadata_allowed {
	data.keygate.allow with input as req("main", "compromised-2025", "GetKeyMetadata")
}
