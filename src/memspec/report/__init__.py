"""Reports: a format-free report model, rendered to Markdown, LaTeX and JSON."""
