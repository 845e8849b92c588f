"""Source templates for `trellis new-plugin` (string.Template, ${...} placeholders), one set per role."""
