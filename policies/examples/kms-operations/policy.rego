# kmsOperation allow-lists: which KMS API calls may lead to each XKS operation. ReEncrypt is left
# out, so ciphertexts cannot be re-encrypted under another key through this key store. Unknown
# kmsOperation values are accepted by keygate itself (the XKS spec requires it) and decided here.
package keygate

import rego.v1

allowed_kms_operations := {
	"Encrypt": {"Encrypt", "GenerateDataKey", "GenerateDataKeyWithoutPlaintext"},
	"Decrypt": {"Decrypt"},
	"GetKeyMetadata": {"CreateKey", "DescribeKey"},
}

default allow := false

allow if count(deny) == 0

kms_operation := object.get(input.request_metadata, "kmsOperation", "(none)")

deny contains msg if {
	not kms_operation in object.get(allowed_kms_operations, input.operation, set())
	msg := sprintf("kmsOperation %v may not lead to %s", [kms_operation, input.operation])
}
