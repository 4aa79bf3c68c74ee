"""Request plumbing: auth, CSRF, sessions, security headers, rate limits, request input rules,
htmx helpers, the public URL; and the response caching (page cache, cached catalog, cart badge,
static files)."""
