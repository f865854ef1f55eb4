package engine

// WithoutInline makes a session dialled with c offer no CapInlineData, as
// a client before it did: small reads then come on data connections.
func WithoutInline(c *Config) { c.noInline = true }
