# Principal allow-lists: which AWS principals (requestMetadata.awsPrincipalArn) may use which key
# store, and which of them may use particular keys. Patterns are globs: `*` matches any run of
# characters (including `/`), `?` one character.
#
# Cost note: regorus compiles a glob for every glob.match call (tens of microseconds each), so keep
# these lists short, or use exact ARNs and startswith() where the request rate is high.
package keygate

import rego.v1

# Principals allowed per key store (the key store's name in keygate's configuration).
keystore_principals := {
	"payments": [
		"arn:aws:iam::111122223333:role/Payments*",
		"arn:aws:sts::111122223333:assumed-role/Payments*/*",
	],
	"analytics": ["arn:aws:iam::444455556666:role/*"],
}

# Narrower lists for single keys: key store, then external key id. A principal must match the
# key store's list and, for a key listed here, the key's list too.
key_principals := {"payments": {"card-vault": ["arn:aws:sts::111122223333:assumed-role/PaymentsVault/*"]}}

default allow := false

allow if {
	keystore_allowed
	key_allowed
}

principal := p if {
	p := input.request_metadata.awsPrincipalArn
	is_string(p)
} else := ""

keystore_allowed if {
	some pattern in keystore_principals[input.keystore]
	glob.match(pattern, null, principal)
}

key_restricted if key_principals[input.keystore][input.key_id]

key_allowed if not key_restricted

key_allowed if {
	some pattern in key_principals[input.keystore][input.key_id]
	glob.match(pattern, null, principal)
}

deny contains msg if {
	not keystore_allowed
	msg := sprintf("principal %s may not use key store %s", [principal, input.keystore])
}

deny contains msg if {
	keystore_allowed
	not key_allowed
	msg := sprintf("principal %s may not use key %s", [principal, input.key_id])
}
