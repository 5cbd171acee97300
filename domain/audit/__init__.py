"""What auditors (审计局, 纪委) need: the trail of who did and read what, one case as one
story, replay of workflow histories against the current code, the cross-check of
ledger, payment workflows and budget system, and exported bundles they can verify."""
