package keygate_test

import rego.v1

req(operation, kms_operation) := {
	"operation": operation,
	"keystore": "main",
	"key_id": "k1",
	"request_metadata": {"awsPrincipalArn": "arn:aws:iam::111122223333:role/App", "kmsOperation": kms_operation, "kmsRequestId": "r-4"},
}

test_generate_data_key_allowed if {
	data.keygate.allow with input as req("Encrypt", "GenerateDataKey")
}

test_decrypt_allowed if {
	data.keygate.allow with input as req("Decrypt", "Decrypt")
}

test_create_key_metadata_allowed if {
	data.keygate.allow with input as req("GetKeyMetadata", "CreateKey")
}

test_reencrypt_encrypt_denied if {
	not data.keygate.allow with input as req("Encrypt", "ReEncrypt")
	data.keygate.deny == {"kmsOperation ReEncrypt may not lead to Encrypt"} with input as req("Encrypt", "ReEncrypt")
}

test_reencrypt_decrypt_denied if {
	not data.keygate.allow with input as req("Decrypt", "ReEncrypt")
}

test_unknown_kms_operation_denied if {
	not data.keygate.allow with input as req("Decrypt", "SomeFutureOperation")
}

test_missing_kms_operation_denied if {
	not data.keygate.allow with input as json.remove(req("Decrypt", "x"), ["request_metadata/kmsOperation"])
}
