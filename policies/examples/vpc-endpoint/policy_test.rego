package keygate_test

import rego.v1

base := {
	"operation": "Encrypt",
	"keystore": "main",
	"key_id": "k1",
	"request_metadata": {
		"awsPrincipalArn": "arn:aws:iam::111122223333:role/App",
		"kmsOperation": "GenerateDataKey",
		"kmsRequestId": "r-3",
		"awsSourceVpc": "vpc-0123456789abcdef0",
		"awsSourceVpce": "vpce-0a1b2c3d4e5f60718",
	},
}

test_pinned_endpoint_allowed if {
	data.keygate.allow with input as base
}

test_other_endpoint_denied if {
	other := object.union(base, {"request_metadata": {"awsSourceVpce": "vpce-0999999999999999a"}})
	not data.keygate.allow with input as other
	data.keygate.deny == {"VPC endpoint vpce-0999999999999999a is not allowed"} with input as other
}

test_public_endpoint_denied if {
	public := json.remove(base, ["request_metadata/awsSourceVpce", "request_metadata/awsSourceVpc"])
	not data.keygate.allow with input as public
	data.keygate.deny == {"Encrypt must arrive through an allowed VPC endpoint"} with input as public
}

test_metadata_not_pinned if {
	data.keygate.allow with input as json.remove(object.union(base, {"operation": "GetKeyMetadata"}), ["request_metadata/awsSourceVpce"])
}
