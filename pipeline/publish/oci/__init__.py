"""OCI artifacts: the registry client, the artifact layout (push) and pull."""
