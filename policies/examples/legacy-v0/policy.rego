# The same kind of policy in the older Rego v0 syntax, which keygate still loads: rule bodies
# without `if`, partial sets as `deny[msg] { ... }`. Every future keyword used (`in`, `if`) must be
# imported; keygate refuses a v0 file that uses one without importing it, because regorus would
# read it as an identifier and `allow if { ... }` could then allow everything.
#
# Do not write `deny[msg] if { ... }`: regorus reads that head as a partial object, not a set, and
# keygate then refuses the policy (or, alone, fails every evaluation closed). Use `deny[msg] { ... }`
# in v0 or `deny contains msg if { ... }` in v1.
package keygate

import future.keywords.if
import future.keywords.in

blocked_keystores := {"retired"}

disabled_keys := {"compromised-2025"}

default allow = false

allow {
	count(deny) == 0
}

deny[msg] {
	input.keystore in blocked_keystores
	msg := sprintf("key store %s is retired", [input.keystore])
}

deny[msg] {
	input.operation != "GetKeyMetadata"
	input.key_id in disabled_keys
	msg := sprintf("key %s is disabled by policy", [input.key_id])
}
