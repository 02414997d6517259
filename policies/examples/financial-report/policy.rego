# Financial report pattern: the report keys may be decrypted only by named
# roles, through named networks, during business hours. Every other request
# (Encrypt, GetKeyMetadata, other keys) is allowed.
package keygate

import rego.v1

# External key ids that protect financial reports.
report_keys := {"financial-reports", "financial-reports-archive"}

# Roles allowed to decrypt reports: the role ARN itself, or any session of it.
reader_roles := {
	"arn:aws:iam::111122223333:role/FinanceAnalyst": "arn:aws:sts::111122223333:assumed-role/FinanceAnalyst/",
	"arn:aws:iam::111122223333:role/FinanceController": "arn:aws:sts::111122223333:assumed-role/FinanceController/",
}

# Networks the request must come from (the address that connects to keygate).
finance_networks := ["10.20.0.0/16", "192.0.2.0/24"]

# Business hours: Monday to Friday, 08:00 to 18:00 New York time.
business_days := {"Monday", "Tuesday", "Wednesday", "Thursday", "Friday"}

business_zone := "America/New_York"

default allow := false

allow if not report_decrypt

allow if {
	report_decrypt
	reader
	finance_network
	business_hours
}

report_decrypt if {
	input.operation == "Decrypt"
	input.key_id in report_keys
}

reader if reader_roles[input.request_metadata.awsPrincipalArn]

reader if {
	some session_prefix in reader_roles
	startswith(input.request_metadata.awsPrincipalArn, session_prefix)
}

finance_network if {
	some cidr in finance_networks
	net.cidr_contains(cidr, input.source_ip)
}

business_hours if {
	at := [time.parse_rfc3339_ns(input.time), business_zone]
	[hour, _, _] := time.clock(at)
	hour >= 8
	hour < 18
	time.weekday(at) in business_days
}

deny contains msg if {
	report_decrypt
	not reader
	msg := sprintf("principal %s may not decrypt financial reports", [object.get(input.request_metadata, "awsPrincipalArn", "(none)")])
}

deny contains msg if {
	report_decrypt
	not finance_network
	msg := sprintf("financial reports may not be decrypted from %s", [input.source_ip])
}

deny contains "financial reports may be decrypted only Monday to Friday, 08:00-18:00 New York time" if {
	report_decrypt
	not business_hours
}
