# kmsViaService restrictions: when an AWS service uses KMS on the caller's behalf, KMS names it in
# requestMetadata.kmsViaService. Only EBS and S3 may do so here, and some keys may be used only
# through one of them (never by direct calls).
package keygate

import rego.v1

allowed_via_services := {"ebs", "s3"}

# Keys that must always be used through an allowed service.
service_only_keys := {"ebs-volumes", "s3-buckets"}

default allow := false

allow if count(deny) == 0

deny contains msg if {
	via := input.request_metadata.kmsViaService
	not via in allowed_via_services
	msg := sprintf("requests through %v are not allowed (only ebs and s3)", [via])
}

deny contains msg if {
	input.operation != "GetKeyMetadata"
	input.key_id in service_only_keys
	not input.request_metadata.kmsViaService
	msg := sprintf("key %s may be used only through ebs or s3", [input.key_id])
}
