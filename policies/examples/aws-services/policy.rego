# AWS service principals and "AWS Internal". When an AWS service calls KMS with its own
# credentials, awsPrincipalArn is a service principal such as "ec2.amazonaws.com"; when KMS calls
# for itself it is the literal "AWS Internal". This policy admits principals of the owning
# account, a short list of service principals, and "AWS Internal" for key metadata only.
package keygate

import rego.v1

account := "111122223333"

# Service principals that may use the keys directly.
allowed_service_principals := {"ec2.amazonaws.com", "s3.amazonaws.com"}

# XKS operations KMS may perform for itself ("AWS Internal"); add Encrypt/Decrypt if you use
# KMS features that need them.
aws_internal_operations := {"GetKeyMetadata"}

default allow := false

allow if count(deny) == 0

principal := object.get(input.request_metadata, "awsPrincipalArn", "")

is_service_principal if endswith(principal, ".amazonaws.com")

is_account_principal if startswith(principal, sprintf("arn:aws:iam::%s:", [account]))

is_account_principal if startswith(principal, sprintf("arn:aws:sts::%s:", [account]))

deny contains msg if {
	is_service_principal
	not principal in allowed_service_principals
	msg := sprintf("AWS service principal %s is not allowed", [principal])
}

deny contains msg if {
	principal == "AWS Internal"
	not input.operation in aws_internal_operations
	msg := sprintf("AWS Internal may not call %s", [input.operation])
}

deny contains msg if {
	not is_service_principal
	principal != "AWS Internal"
	not is_account_principal
	msg := sprintf("principal %s is not from account %s", [principal, account])
}
