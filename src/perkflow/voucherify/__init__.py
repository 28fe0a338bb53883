"""A Voucherify-compatible API under /v1, so the voucherify SDK and Braze snippets work against Perkflow."""
