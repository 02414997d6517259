package keygate_test

import rego.v1

base := {
	"operation": "Decrypt",
	"keystore": "main",
	"key_id": "ebs-volumes",
	"request_metadata": {
		"awsPrincipalArn": "arn:aws:iam::111122223333:role/Ops",
		"kmsOperation": "Decrypt",
		"kmsRequestId": "r-2",
		"kmsViaService": "ebs",
	},
}

test_ebs_allowed if {
	data.keygate.allow with input as base
}

test_s3_allowed if {
	data.keygate.allow with input as object.union(base, {"request_metadata": {"kmsViaService": "s3"}})
}

test_rds_denied if {
	not data.keygate.allow with input as object.union(base, {"request_metadata": {"kmsViaService": "rds"}})
	data.keygate.deny == {"requests through rds are not allowed (only ebs and s3)"} with input as object.union(base, {"request_metadata": {"kmsViaService": "rds"}})
}

test_direct_call_to_service_only_key_denied if {
	direct := json.remove(base, ["request_metadata/kmsViaService"])
	not data.keygate.allow with input as direct
	data.keygate.deny == {"key ebs-volumes may be used only through ebs or s3"} with input as direct
}

test_direct_call_to_other_key_allowed if {
	direct := json.remove(object.union(base, {"key_id": "app"}), ["request_metadata/kmsViaService"])
	data.keygate.allow with input as direct
}

test_metadata_of_service_only_key_allowed if {
	meta := json.remove(object.union(base, {"operation": "GetKeyMetadata"}), ["request_metadata/kmsViaService"])
	data.keygate.allow with input as meta
}
