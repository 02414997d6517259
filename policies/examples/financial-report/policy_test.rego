package keygate_test

import rego.v1

# 2026-11-18 is a Wednesday; 15:00 UTC is 10:00 in New York.
allowed := {
	"operation": "Decrypt",
	"keystore": "finance",
	"key_id": "financial-reports",
	"source_ip": "10.20.3.4",
	"time": "2026-11-18T15:00:00Z",
	"request_metadata": {
		"awsPrincipalArn": "arn:aws:sts::111122223333:assumed-role/FinanceAnalyst/alice",
		"kmsOperation": "Decrypt",
		"kmsRequestId": "r-6",
	},
}

test_analyst_session_in_hours_from_network_allowed if {
	data.keygate.allow with input as allowed
	count(data.keygate.deny) == 0 with input as allowed
}

test_controller_role_allowed if {
	data.keygate.allow with input as object.union(allowed, {"request_metadata": {"awsPrincipalArn": "arn:aws:iam::111122223333:role/FinanceController"}})
}

test_other_role_denied if {
	other := object.union(allowed, {"request_metadata": {"awsPrincipalArn": "arn:aws:iam::111122223333:role/Intern"}})
	not data.keygate.allow with input as other
	data.keygate.deny == {"principal arn:aws:iam::111122223333:role/Intern may not decrypt financial reports"} with input as other
}

test_role_name_prefix_is_not_enough if {
	not data.keygate.allow with input as object.union(allowed, {"request_metadata": {"awsPrincipalArn": "arn:aws:sts::111122223333:assumed-role/FinanceAnalystX/eve"}})
}

test_outside_network_denied if {
	outside := object.union(allowed, {"source_ip": "203.0.113.9"})
	not data.keygate.allow with input as outside
	data.keygate.deny == {"financial reports may not be decrypted from 203.0.113.9"} with input as outside
}

test_second_network_allowed if {
	data.keygate.allow with input as object.union(allowed, {"source_ip": "192.0.2.77"})
}

test_evening_denied if {
	# 23:30 UTC is 18:30 in New York.
	not data.keygate.allow with input as object.union(allowed, {"time": "2026-11-18T23:30:00Z"})
}

test_weekend_denied if {
	not data.keygate.allow with input as object.union(allowed, {"time": "2026-11-21T15:00:00Z"})
}

test_early_morning_utc_is_previous_evening_in_new_york if {
	# Thursday 01:00 UTC is Wednesday 20:00 in New York.
	not data.keygate.allow with input as object.union(allowed, {"time": "2026-11-19T01:00:00Z"})
}

test_everything_wrong_gives_every_reason if {
	bad := object.union(allowed, {
		"source_ip": "203.0.113.9",
		"time": "2026-11-22T03:00:00Z",
		"request_metadata": {"awsPrincipalArn": "arn:aws:iam::111122223333:role/Intern"},
	})
	count(data.keygate.deny) == 3 with input as bad
}

test_encrypt_of_reports_allowed if {
	data.keygate.allow with input as object.union(allowed, {"operation": "Encrypt", "source_ip": "203.0.113.9"})
}

test_other_keys_unrestricted if {
	data.keygate.allow with input as object.union(allowed, {"key_id": "app-data", "source_ip": "203.0.113.9"})
}

test_ipv6_source_outside_networks_denied if {
	not data.keygate.allow with input as object.union(allowed, {"source_ip": "2001:db8::1"})
}
