# keygate's embedded default policy: every request that passed SigV4 authentication is allowed.
# Each decision is still written to the decision log, so the default gives a complete audit trail.
# Replace it with a policy directory (`[policy] dir` or `keygate serve --policy-dir DIR`).
package keygate

import rego.v1

default allow := true
