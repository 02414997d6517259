# Time windows: key stores usable only at certain times (here the "batch" key store only at night,
# UTC, and not at weekends), and keys embargoed until a date (decryption of "results-2027" only
# from its publication time). Times come from input.time (RFC 3339, UTC), never the wall clock, so
# decisions are reproducible from the decision log.
package keygate

import rego.v1

keystore_windows := {"batch": {"days": {"Monday", "Tuesday", "Wednesday", "Thursday", "Friday"}, "from_hour": 0, "to_hour": 6, "zone": "UTC"}}

decrypt_not_before := {"results-2027": "2027-01-15T14:00:00Z"}

default allow := false

allow if count(deny) == 0

now := time.parse_rfc3339_ns(input.time)

in_window(w) if {
	time.weekday([now, w.zone]) in w.days
	[hour, _, _] := time.clock([now, w.zone])
	hour >= w.from_hour
	hour < w.to_hour
}

deny contains msg if {
	w := keystore_windows[input.keystore]
	not in_window(w)
	msg := sprintf("key store %s is usable only %s-%s %02d:00-%02d:00 %s", [input.keystore, "Monday", "Friday", w.from_hour, w.to_hour, w.zone])
}

deny contains msg if {
	input.operation == "Decrypt"
	not_before := decrypt_not_before[input.key_id]
	now < time.parse_rfc3339_ns(not_before)
	msg := sprintf("key %s may not decrypt before %s", [input.key_id, not_before])
}
