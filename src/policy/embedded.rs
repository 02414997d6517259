//! The policies compiled into the binary: the default policy and the example library under
//! `policies/examples/`, each with its tests (so `keygate policy test` needs no files on disk).

use super::set::PolicyFile;

/// A named group of embedded policy files forming one policy set.
#[derive(Debug, Clone, Copy)]
pub struct EmbeddedSet {
    /// `default`, or the example's directory name.
    pub name: &'static str,
    /// (file name, contents).
    pub files: &'static [(&'static str, &'static str)],
}

impl EmbeddedSet {
    /// The files as owned policy files.
    pub fn to_files(&self) -> Vec<PolicyFile> {
        self.files
            .iter()
            .map(|(name, text)| PolicyFile {
                name: (*name).to_owned(),
                text: (*text).to_owned(),
            })
            .collect()
    }
}

/// The default policy: allow every authenticated request (so every request is logged).
pub const DEFAULT: EmbeddedSet = EmbeddedSet {
    name: "default",
    files: &[
        ("default.rego", include_str!("../../policies/default.rego")),
        (
            "default_test.rego",
            include_str!("../../policies/default_test.rego"),
        ),
    ],
};

/// The example library.
pub const EXAMPLES: &[EmbeddedSet] = &[
    EmbeddedSet {
        name: "principal-allowlist",
        files: &[
            (
                "policy.rego",
                include_str!("../../policies/examples/principal-allowlist/policy.rego"),
            ),
            (
                "policy_test.rego",
                include_str!("../../policies/examples/principal-allowlist/policy_test.rego"),
            ),
        ],
    },
    EmbeddedSet {
        name: "aws-services",
        files: &[
            (
                "policy.rego",
                include_str!("../../policies/examples/aws-services/policy.rego"),
            ),
            (
                "policy_test.rego",
                include_str!("../../policies/examples/aws-services/policy_test.rego"),
            ),
        ],
    },
    EmbeddedSet {
        name: "via-service",
        files: &[
            (
                "policy.rego",
                include_str!("../../policies/examples/via-service/policy.rego"),
            ),
            (
                "policy_test.rego",
                include_str!("../../policies/examples/via-service/policy_test.rego"),
            ),
        ],
    },
    EmbeddedSet {
        name: "vpc-endpoint",
        files: &[
            (
                "policy.rego",
                include_str!("../../policies/examples/vpc-endpoint/policy.rego"),
            ),
            (
                "policy_test.rego",
                include_str!("../../policies/examples/vpc-endpoint/policy_test.rego"),
            ),
        ],
    },
    EmbeddedSet {
        name: "kms-operations",
        files: &[
            (
                "policy.rego",
                include_str!("../../policies/examples/kms-operations/policy.rego"),
            ),
            (
                "policy_test.rego",
                include_str!("../../policies/examples/kms-operations/policy_test.rego"),
            ),
        ],
    },
    EmbeddedSet {
        name: "time-window",
        files: &[
            (
                "policy.rego",
                include_str!("../../policies/examples/time-window/policy.rego"),
            ),
            (
                "policy_test.rego",
                include_str!("../../policies/examples/time-window/policy_test.rego"),
            ),
        ],
    },
    EmbeddedSet {
        name: "financial-report",
        files: &[
            (
                "policy.rego",
                include_str!("../../policies/examples/financial-report/policy.rego"),
            ),
            (
                "policy_test.rego",
                include_str!("../../policies/examples/financial-report/policy_test.rego"),
            ),
        ],
    },
    EmbeddedSet {
        name: "kubernetes",
        files: &[
            (
                "policy.rego",
                include_str!("../../policies/examples/kubernetes/policy.rego"),
            ),
            (
                "policy_test.rego",
                include_str!("../../policies/examples/kubernetes/policy_test.rego"),
            ),
        ],
    },
    EmbeddedSet {
        name: "legacy-v0",
        files: &[
            (
                "policy.rego",
                include_str!("../../policies/examples/legacy-v0/policy.rego"),
            ),
            (
                "policy_test.rego",
                include_str!("../../policies/examples/legacy-v0/policy_test.rego"),
            ),
        ],
    },
];

/// The default policy's files.
pub fn default_files() -> Vec<PolicyFile> {
    DEFAULT.to_files()
}

/// The default set followed by every example.
pub fn all() -> impl Iterator<Item = &'static EmbeddedSet> {
    std::iter::once(&DEFAULT).chain(EXAMPLES.iter())
}
