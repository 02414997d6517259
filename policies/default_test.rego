package keygate_test

import rego.v1

test_allows_encrypt if {
	data.keygate.allow with input as {"operation": "Encrypt", "key_id": "k", "request_metadata": {"awsPrincipalArn": "arn:aws:iam::111122223333:role/Any", "kmsOperation": "Encrypt", "kmsRequestId": "r"}}
}

test_allows_decrypt if {
	data.keygate.allow with input as {"operation": "Decrypt", "key_id": "k", "request_metadata": {"awsPrincipalArn": "AWS Internal", "kmsOperation": "Decrypt", "kmsRequestId": "r"}}
}

test_allows_metadata_without_reasons if {
	data.keygate.allow with input as {"operation": "GetKeyMetadata"}
	count(object.get(data.keygate, "deny", set())) == 0
}
