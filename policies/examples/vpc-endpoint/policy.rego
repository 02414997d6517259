# VPC endpoint pinning: Encrypt and Decrypt must come from callers that reached KMS through one of
# our VPC endpoints (requestMetadata.awsSourceVpce, sent by KMS when the call came through a VPC
# endpoint and the caller owns the KMS key). GetKeyMetadata (key creation) is not pinned.
package keygate

import rego.v1

allowed_vpc_endpoints := {"vpce-0a1b2c3d4e5f60718", "vpce-0fedcba9876543210"}

pinned_operations := {"Encrypt", "Decrypt"}

default allow := false

allow if count(deny) == 0

deny contains msg if {
	input.operation in pinned_operations
	not input.request_metadata.awsSourceVpce
	msg := sprintf("%s must arrive through an allowed VPC endpoint", [input.operation])
}

deny contains msg if {
	input.operation in pinned_operations
	vpce := input.request_metadata.awsSourceVpce
	not vpce in allowed_vpc_endpoints
	msg := sprintf("VPC endpoint %s is not allowed", [vpce])
}
