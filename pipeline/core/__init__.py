"""What every pipeline step shares: errors, the tool runner, logging, files, secrets, the
vocabulary and the artifact contract."""
