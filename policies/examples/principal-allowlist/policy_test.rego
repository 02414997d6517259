package keygate_test

import rego.v1

base := {
	"operation": "Decrypt",
	"keystore": "payments",
	"key_id": "orders",
	"request_metadata": {
		"awsPrincipalArn": "arn:aws:sts::111122223333:assumed-role/PaymentsApi/i-0abc",
		"kmsOperation": "Decrypt",
		"kmsRequestId": "4112f4d6-db54-4af4-ae30-c55a22a8dfae",
	},
}

with_principal(arn) := object.union(base, {"request_metadata": {"awsPrincipalArn": arn}})

test_role_session_allowed if {
	data.keygate.allow with input as base
}

test_role_itself_allowed if {
	data.keygate.allow with input as with_principal("arn:aws:iam::111122223333:role/PaymentsBatch")
}

test_other_role_denied if {
	not data.keygate.allow with input as with_principal("arn:aws:iam::111122223333:role/Marketing")
	data.keygate.deny == {"principal arn:aws:iam::111122223333:role/Marketing may not use key store payments"} with input as with_principal("arn:aws:iam::111122223333:role/Marketing")
}

test_other_account_denied if {
	not data.keygate.allow with input as with_principal("arn:aws:iam::999999999999:role/PaymentsApi")
}

test_unknown_keystore_denied if {
	not data.keygate.allow with input as object.union(base, {"keystore": "unknown"})
}

test_missing_principal_denied if {
	not data.keygate.allow with input as object.union(base, {"request_metadata": {"awsPrincipalArn": null}})
}

test_restricted_key_needs_key_list if {
	not data.keygate.allow with input as object.union(base, {"key_id": "card-vault"})
	data.keygate.deny == {"principal arn:aws:sts::111122223333:assumed-role/PaymentsApi/i-0abc may not use key card-vault"} with input as object.union(base, {"key_id": "card-vault"})
}

test_restricted_key_allows_its_role if {
	data.keygate.allow with input as object.union(
		with_principal("arn:aws:sts::111122223333:assumed-role/PaymentsVault/batch"),
		{"key_id": "card-vault"},
	)
}

test_analytics_any_role_of_its_account if {
	data.keygate.allow with input as object.union(
		with_principal("arn:aws:iam::444455556666:role/team/Reader"),
		{"keystore": "analytics"},
	)
}
