"""Step 6, the smoke test: plan, guest program, payloads, boot and report."""
