"""What a reader sees: the Markdown report and tables (markdown) and the HTML report (html)."""
