# Kubernetes KMS v2: only the kube-apiserver's operating-system user may use the KMS v2 plugin,
# and only with the cluster's key-encryption keys. The identity comes from the Unix socket
# (SO_PEERCRED), which the caller cannot forge. XKS requests (input.interface == "xks") are
# allowed here; combine with the XKS examples for those.
package keygate

import rego.v1

# The user ids the kube-apiserver runs as on the control-plane nodes (0 in kubeadm's static
# pod; a rootless apiserver has its own).
apiserver_uids := {0}

# Keys the plugin may use: the current one and those old ciphertexts still name.
cluster_keys := {"k8s-kek", "k8s-kek-2025"}

default allow := false

allow if input.interface == "xks"

allow if {
	input.interface == "kms_v2"
	input.peer.uid in apiserver_uids
	input.key_id in cluster_keys
}

deny contains msg if {
	input.interface == "kms_v2"
	input.peer == null
	msg := "the caller's identity is unknown (no peer credentials)"
}

deny contains msg if {
	input.interface == "kms_v2"
	not input.peer.uid in apiserver_uids
	msg := sprintf("only the kube-apiserver's user may %s, not uid %d (pid %v)", [lower(input.operation), input.peer.uid, input.peer.pid])
}

deny contains msg if {
	input.interface == "kms_v2"
	not input.key_id in cluster_keys
	msg := sprintf("key %s is not a cluster key", [input.key_id])
}
