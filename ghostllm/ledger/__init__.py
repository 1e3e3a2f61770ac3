"""The usage ledger: every settled request's record written to `usage_logs`, in
batches off the request path (`writer`), never lost while the store is away (`spool`)."""
