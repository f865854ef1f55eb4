package engine

// WithoutInline makes a session dialled with c offer no CapInlineData, as
// a client before it did: small reads then come on data connections.
func WithoutInline(c *Config) { c.noInline = true }

// WithoutInlineLarge makes a session dialled with c offer CapInlineData but
// not CapInlineLarge, as a client before it did: a lone read over 32 KiB
// then comes on a data connection.
func WithoutInlineLarge(c *Config) { c.noInlineLarge = true }
