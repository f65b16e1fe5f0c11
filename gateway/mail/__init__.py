"""Mail as bytes and as a parsed view: parsing, the MIME scanner, rewrites, addresses."""
