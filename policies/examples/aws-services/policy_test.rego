package keygate_test

import rego.v1

req(principal, operation) := {
	"operation": operation,
	"keystore": "main",
	"key_id": "k1",
	"request_metadata": {"awsPrincipalArn": principal, "kmsOperation": operation, "kmsRequestId": "r-1"},
}

test_account_role_allowed if {
	data.keygate.allow with input as req("arn:aws:iam::111122223333:role/App", "Encrypt")
}

test_account_session_allowed if {
	data.keygate.allow with input as req("arn:aws:sts::111122223333:assumed-role/App/s", "Decrypt")
}

test_listed_service_principal_allowed if {
	data.keygate.allow with input as req("ec2.amazonaws.com", "Decrypt")
}

test_unlisted_service_principal_denied if {
	not data.keygate.allow with input as req("lambda.amazonaws.com", "Decrypt")
	data.keygate.deny == {"AWS service principal lambda.amazonaws.com is not allowed"} with input as req("lambda.amazonaws.com", "Decrypt")
}

test_aws_internal_metadata_allowed if {
	data.keygate.allow with input as req("AWS Internal", "GetKeyMetadata")
}

test_aws_internal_decrypt_denied if {
	not data.keygate.allow with input as req("AWS Internal", "Decrypt")
	data.keygate.deny == {"AWS Internal may not call Decrypt"} with input as req("AWS Internal", "Decrypt")
}

test_other_account_denied if {
	not data.keygate.allow with input as req("arn:aws:iam::999999999999:role/App", "Encrypt")
}

test_lookalike_service_name_denied if {
	not data.keygate.allow with input as req("evil.example.com", "Encrypt")
}
